//! The `underlay` command line. Parses flags, enters `--netns`, loads the
//! profile, runs the engine, prints the report, picks the exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use underlay::engine::{self, Mode};
use underlay::profile::{self, ProfileError};
use underlay::report::{self, Context};
use underlay::system::linux::{LinuxSystem, DEFAULT_STATE_PATH};
use underlay::system::netns;

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
    /// Converge the host, then verify (exit 0: converged, 1: error, 3: verification failed)
    Apply(Common),
    /// Check the host matches the profile, changing nothing (exit 0: yes, 3: no)
    Verify(Common),
    /// Show every managed resource and its state, changing nothing (exit 0)
    Status(Common),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (mode, name, c) = match &cli.command {
        Command::Plan(c) => (Mode::Plan, "plan", c),
        Command::Apply(c) => (Mode::Apply, "apply", c),
        Command::Verify(c) => (Mode::Verify, "verify", c),
        Command::Status(c) => (Mode::Status, "status", c),
    };
    let level = match c.verbose {
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
    let started = Instant::now();

    // Validate everything before the first syscall that could change anything.
    let role = c
        .profile
        .clone()
        .unwrap_or_else(|| under_root(&c.root, "/etc/underlay/profile.toml"));
    let host = c
        .host
        .clone()
        .unwrap_or_else(|| under_root(&c.root, "/etc/underlay/host.toml"));
    let desired = match profile::load(&role, &host) {
        Ok(d) => d,
        Err(e) => return fail(c, name, e.to_string(), Some(&e)),
    };
    if c.netns.is_some() {
        if let Err(e) = engine::check_netns_safe(&desired) {
            return fail(c, name, e.to_string(), None);
        }
    }
    if let Some(ns) = &c.netns {
        if let Err(e) = netns::enter(ns) {
            return fail(c, name, e.to_string(), None);
        }
    }
    let mut sys = match LinuxSystem::new(&c.root, &c.state) {
        Ok(s) => s,
        Err(e) => return fail(c, name, e.to_string(), None),
    };
    let report = match engine::run(&mut sys, &desired, mode) {
        Ok(r) => r,
        Err(e) => return fail(c, name, e.to_string(), None),
    };
    let ctx = Context {
        command: name,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
    };
    if c.json {
        println!("{}", report::json(&report, &ctx));
    } else {
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
    }
    ExitCode::from(report.exit_code() as u8)
}
