//! The `underlay` command line. Parses flags, enters `--netns`, loads the
//! profile, runs the engine, prints the report, picks the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::gates;
use underlay::plan::Target;
use underlay::profile::{self, ProfileError};
use underlay::report::{self, Context};
use underlay::system::linux::{LinuxSystem, DEFAULT_STATE_PATH};
use underlay::system::{netns, SystemError};

const EXAMPLES: &str = "\
Examples:
  # What would change on this host? (exit 0: nothing, 2: changes pending)
  underlay plan --profile /usr/share/underlay/profiles/l3-ecmp-calico.toml --host /etc/underlay/host.toml

  # Converge, then verify (exit 0: converged, 1: error, 3: verification failed)
  underlay apply --profile profiles/l3-ecmp-calico.toml --host host.toml

  # Try it without touching this machine: inside a namespace, files below a scratch root
  ip netns add try
  ip -n try link add eth0 type veth peer name tor-a0
  ip -n try link add eth1 type veth peer name tor-b0
  underlay apply --netns try --root /tmp/try \\
      --profile profiles/l3-ecmp-calico.toml --host profiles/examples/host.toml
  ip -n try -j addr; ip -n try rule

  # First boot: converge, then hold until BGP is up on both ToRs with two ECMP paths
  underlay apply --wait --profile ... --host ...

  # Something is wrong on a live host: read-only checks with evidence and fixes
  underlay doctor                       # generic checks (0 clean, 1 warnings, 2 failures)
  underlay doctor --profile ... --host ... --json

  # What BIRD and Calico get
  underlay render bird --profile ... --host ...
  underlay render calico --profile ... --host ... | calicoctl apply -f -

  # For Ansible: JSON with changed, per-resource before/after and phase timings
  underlay apply --json ... | jq .changed";

#[derive(Parser)]
#[command(
    name = "underlay",
    version,
    about = "Converge a bare-metal Linux host into a layer-3 ECMP node for Kubernetes",
    long_about = "Converge a bare-metal Linux host into a layer-3 ECMP node for Kubernetes.\n\n\
        underlay reads a role profile (shared by many hosts) and host facts (this host), \
        validates both before changing anything, and converges: the service IP on lo, \
        transit addresses (scope link) on the uplinks, the routing tables and the ip rules \
        that split the host table from main, and kernel sysctls (live and persisted). \
        Every run is idempotent and touches only what underlay created.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what apply would change, without changing anything (exit 0: nothing, 2: changes pending)
    Plan(Common),
    /// Converge the host, then verify (exit 0: converged, 1: error, 3: verification or a gate failed)
    Apply(WithWait),
    /// Check the host matches the profile, changing nothing (exit 0: yes, 3: no, or a gate failed)
    Verify(WithWait),
    /// Show every managed resource and its state, changing nothing (exit 0)
    Status(Common),
    /// Read-only diagnosis of a live host: MASQUERADE sources, tunnel mark leaks, NATed tunnel
    /// conntrack entries, BGP socket and table conflicts, rp_filter, networkd/NetworkManager,
    /// kubelet node-ip, ECMP paths and sessions; each finding with evidence and the fix.
    /// Works without a profile (generic checks), better with one.
    /// Exit 0: clean, 1: warnings, 2: failures
    Doctor(Common),
    /// Print generated configuration: the host BIRD config, or the Calico resources for the cluster
    Render {
        #[arg(value_enum)]
        what: RenderWhat,
        /// Print BGP passwords as they are (by default they show as <redacted>)
        #[arg(long)]
        show_secrets: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RenderWhat {
    /// The host BIRD 2 config this host gets (after NIC matching)
    Bird,
    /// BGPConfiguration, BGPPeer, IPPools and FelixConfiguration for `calicoctl apply -f -`
    Calico,
}

#[derive(Args)]
struct WithWait {
    #[command(flatten)]
    common: Common,
    /// Then wait for the readiness gates: uplinks up, BGP Established to every ToR, the host
    /// table's default with enough ECMP next hops, the service IP exported. Sends READY=1 to
    /// NOTIFY_SOCKET when all pass (STATUS= while waiting); exit 3 when one fails in time
    #[arg(long)]
    wait: bool,
    /// Seconds to wait for the gates [default: the profile's bgp.readiness.timeout_s, else 60]
    #[arg(long, value_name = "SECS", requires = "wait")]
    wait_timeout: Option<u64>,
}

#[derive(Args)]
struct Common {
    /// Role profile (TOML), shared by every host of the role [default: <root>/etc/underlay/profile.toml]
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Host facts (TOML): names, addresses and ASNs of this host [default: <root>/etc/underlay/host.toml]
    #[arg(long, value_name = "FILE")]
    host: Option<PathBuf>,
    /// Operate inside this network namespace (as made by `ip netns add NAME`): netlink and /proc/sys/net
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Prefix for every file underlay reads or writes (/etc, /var/lib): tests use a scratch directory
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// State file recording what underlay created (below --root)
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE_PATH)]
    state: PathBuf,
    /// Print one JSON document (changed, resources with before/after, durations) instead of text
    #[arg(long)]
    json: bool,
    /// Show unchanged resources' values too; repeat for debug logs on stderr
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn under_root(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn fail(c: &Common, command: &str, message: String, problems: Option<&ProfileError>) -> ExitCode {
    if c.json {
        let problems: Vec<_> = problems
            .map(|p| {
                p.problems()
                    .iter()
                    .map(|p| {
                        json!({"file": p.file, "key": p.key, "line": p.line, "column": p.column, "message": p.message})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let doc = json!({"command": command, "changed": false, "error": message, "problems": problems, "exit_code": 1});
        println!("{doc}");
    } else {
        eprintln!("underlay {command}: error: {message}");
        if problems.is_some() {
            eprintln!("nothing was changed.");
        }
    }
    ExitCode::from(1)
}

fn init_logs(verbose: u8) {
    let level = match verbose {
        0 | 1 => "warn",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("UNDERLAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
}

fn load(c: &Common, name: &str) -> Result<Desired, ExitCode> {
    let role = c
        .profile
        .clone()
        .unwrap_or_else(|| under_root(&c.root, "/etc/underlay/profile.toml"));
    let host = c
        .host
        .clone()
        .unwrap_or_else(|| under_root(&c.root, "/etc/underlay/host.toml"));
    profile::load(&role, &host).map_err(|e| fail(c, name, e.to_string(), Some(&e)))
}

/// Enters --netns (after refusing what would leak out of it) and opens the system.
fn open(c: &Common, name: &str, desired: &Desired) -> Result<LinuxSystem, ExitCode> {
    if let Some(ns) = &c.netns {
        engine::check_netns_safe(desired).map_err(|e| fail(c, name, e.to_string(), None))?;
        netns::enter(ns).map_err(|e| fail(c, name, e.to_string(), None))?;
    }
    LinuxSystem::new(&c.root, &c.state, c.netns.is_some())
        .map_err(|e| fail(c, name, e.to_string(), None))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Plan(c) => converge(Mode::Plan, "plan", c, None),
        Command::Apply(w) => converge(Mode::Apply, "apply", &w.common, Some(w)),
        Command::Verify(w) => converge(Mode::Verify, "verify", &w.common, Some(w)),
        Command::Status(c) => converge(Mode::Status, "status", c, None),
        Command::Render {
            what,
            show_secrets,
            common,
        } => render(*what, *show_secrets, common),
        Command::Doctor(c) => doctor(c),
    }
}

fn doctor(c: &Common) -> ExitCode {
    init_logs(c.verbose);
    // A profile makes the checks sharper; without one (none given, none
    // installed) the generic checks still run.
    let installed = under_root(&c.root, "/etc/underlay/profile.toml").exists()
        && under_root(&c.root, "/etc/underlay/host.toml").exists();
    let desired = if c.profile.is_some() || c.host.is_some() || installed {
        match load(c, "doctor") {
            Ok(d) => Some(d),
            Err(code) => return code,
        }
    } else {
        None
    };
    if let Some(ns) = &c.netns {
        if let Err(e) = netns::enter(ns) {
            return fail(c, "doctor", e.to_string(), None);
        }
    }
    let r = underlay::doctor::run(&underlay::doctor::DoctorOptions {
        root: c.root.clone(),
        desired,
        in_netns: c.netns.is_some(),
    });
    if c.json {
        println!("{}", r.json());
    } else if c.verbose > 0 {
        print!("{}", r.human_verbose());
    } else {
        print!("{}", r.human());
    }
    ExitCode::from(r.exit_code() as u8)
}

fn render(what: RenderWhat, show_secrets: bool, c: &Common) -> ExitCode {
    init_logs(c.verbose);
    let desired = match load(c, "render") {
        Ok(d) => d,
        Err(code) => return code,
    };
    match what {
        RenderWhat::Calico => match underlay::render::calico::render(&desired) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(c, "render", e.to_string(), None),
        },
        RenderWhat::Bird => {
            if desired.bgp.is_none() {
                return fail(
                    c,
                    "render",
                    "the role profile has no [bgp] section".into(),
                    None,
                );
            }
            let mut sys = match open(c, "render", &desired) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match engine::observe(&mut sys, &desired, None) {
                Ok((target, _)) => {
                    let text = target.bird.map(|b| b.content).unwrap_or_default();
                    // BGP passwords stay out of terminals and logs unless asked for.
                    print!(
                        "{}",
                        if show_secrets {
                            text
                        } else {
                            underlay::bgp::redact(&text)
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(c, "render", e.to_string(), None),
            }
        }
    }
}

fn converge(mode: Mode, name: &str, c: &Common, wait: Option<&WithWait>) -> ExitCode {
    init_logs(c.verbose);
    let started = Instant::now();
    // Validate everything before the first syscall that could change anything.
    let desired = match load(c, name) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let mut sys = match open(c, name, &desired) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = match engine::run(&mut sys, &desired, mode) {
        Ok(r) => r,
        Err(e) => return fail(c, name, e.to_string(), None),
    };
    let mut code = report.exit_code();
    let mut gates_outcome = None;
    if let Some(w) = wait.filter(|w| w.wait && code == 0) {
        match wait_for_gates(&mut sys, &desired, &report.target, w) {
            Ok(outcome) => {
                if !outcome.passed {
                    code = 3;
                }
                gates_outcome = Some(outcome);
            }
            Err(e) => return fail(c, name, e.to_string(), None),
        }
    } else if mode == Mode::Status {
        // Status shows the gates as they stand now, without waiting.
        let now = Some(Duration::ZERO);
        let spec = gates::spec(&desired, &report.target, now);
        match gates::wait(&mut sys, &spec, |_, _| {}) {
            Ok(outcome) => gates_outcome = Some(outcome),
            Err(e) => return fail(c, name, e.to_string(), None),
        }
    }
    let ctx = Context {
        command: name,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
    };
    if c.json {
        let mut doc = report::json(&report, &ctx);
        if let Some(g) = &gates_outcome {
            doc["gates"] = serde_json::to_value(g).unwrap_or_default();
            doc["exit_code"] = code.into();
        }
        println!("{doc}");
    } else {
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        if let Some(g) = &gates_outcome {
            print!("{}", report::gates_human(g));
        }
    }
    ExitCode::from(code as u8)
}

fn wait_for_gates(
    sys: &mut LinuxSystem,
    desired: &Desired,
    target: &Target,
    w: &WithWait,
) -> Result<gates::Outcome, SystemError> {
    let spec = gates::spec(desired, target, w.wait_timeout.map(Duration::from_secs));
    let tty = std::io::stderr().is_terminal() && !w.common.json;
    let mut last_status = String::new();
    let mut last_extend: Option<Instant> = None;
    let outcome = gates::wait(sys, &spec, |gates, elapsed| {
        // Under systemd (the gates unit): still making progress, so do not
        // let TimeoutStartSec end the wait; the gates' own timeout bounds it.
        if last_extend.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000)]);
            last_extend = Some(Instant::now());
        }
        let passed = gates.iter().filter(|g| g.passed).count();
        let pending = gates.iter().find(|g| !g.passed);
        let status = match pending {
            Some(g) => format!(
                "waiting for {} ({passed}/{} gates passed): {}",
                g.name,
                gates.len(),
                g.evidence
            ),
            None => format!("all {} readiness gates passed", gates.len()),
        };
        if tty {
            eprint!("\r\x1b[K{status} [{:.1} s]", elapsed.as_secs_f64());
        }
        if status != last_status {
            // Without NOTIFY_SOCKET this is a no-op.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    })?;
    if tty {
        eprintln!();
    }
    if outcome.passed {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    Ok(outcome)
}
