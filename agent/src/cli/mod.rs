//! The `underlay` command line: flag parsing and dispatch. One verb, one
//! module, each with its human and JSON output; the library never prints.

mod converge;
mod doctor;
mod output;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use underlay::desired::Desired;
use underlay::engine;
use underlay::profile;
use underlay::system::linux::{LinuxSystem, DEFAULT_STATE_PATH};
use underlay::system::netns;

pub use output::Failed;

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

  # Safe apply: keep the change only if the gates (and a TCP probe through the fabric)
  # pass within 60 s; else roll back to the pre-apply state and exit 4
  underlay apply --confirm 60 --probe 10.96.0.1:443 --profile ... --host ...

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
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show what apply would change, without changing anything (exit 0: nothing, 2: changes pending)
    Plan(Common),
    /// Converge the host, then verify (exit 0: converged, 1: error, 3: verification or a gate
    /// failed, 4: a safe apply was rolled back)
    Apply(ApplyArgs),
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
pub enum RenderWhat {
    /// The host BIRD 2 config this host gets (after NIC matching)
    Bird,
    /// BGPConfiguration, BGPPeer, IPPools and FelixConfiguration for `calicoctl apply -f -`
    Calico,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    with_wait: WithWait,
    #[command(flatten)]
    safe: Safe,
}

/// Safe apply: the change is kept only when the host is still on the fabric.
#[derive(Args, Clone)]
pub struct Safe {
    /// Safe apply: record what underlay owns, apply, then wait up to SECS for the readiness
    /// gates (and --probe); if they do not pass, roll every changed object back to its
    /// pre-apply value (BIRD reloads its old config) and exit 4. A run that dies within SECS
    /// leaves a checkpoint beside the state file that the next apply rolls back first.
    /// Implies --wait
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600),
          conflicts_with = "wait_timeout")]
    confirm: Option<u64>,
    /// With --confirm: also require a TCP connection to ADDR:PORT from this host (through the
    /// fabric: the API server, a peer's service IP) before the change is kept
    #[arg(long, value_name = "ADDR:PORT", requires = "confirm")]
    probe: Option<std::net::SocketAddr>,
}

#[derive(Args)]
pub struct WithWait {
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
    /// When a change fails part-way, keep what this run already changed instead of undoing it
    /// (for debugging; by default the applied changes are undone in reverse)
    #[arg(long)]
    no_rollback: bool,
    /// Seconds to wait for another underlay run on the same root to finish (its lock is
    /// <state>.lock); then fail with a transient error
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    lock_timeout: u64,
}

#[derive(Args)]
pub struct Common {
    /// Role profile (TOML), shared by every host of the role [default: <root>/etc/underlay/profile.toml]
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Host facts (TOML): names, addresses and ASNs of this host [default: <root>/etc/underlay/host.toml]
    #[arg(long, value_name = "FILE")]
    host: Option<PathBuf>,
    /// Operate inside this network namespace (as made by `ip netns add NAME`): netlink and /proc/sys/net
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Prefix for every file underlay reads or writes (/etc, /var/lib): tests use a scratch
    /// directory. Required with --netns, whose files must not land in this machine's /etc
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Plan(c) => converge::run(engine::Mode::Plan, "plan", c, None),
        Command::Apply(a) => converge::run_apply(&a.with_wait, &a.safe),
        Command::Verify(w) => converge::run(engine::Mode::Verify, "verify", &w.common, Some(w)),
        Command::Status(c) => converge::run(engine::Mode::Status, "status", c, None),
        Command::Render {
            what,
            show_secrets,
            common,
        } => render::run(*what, *show_secrets, common),
        Command::Doctor(c) => doctor::run(c),
    };
    match result {
        Ok(code) => code,
        Err(failed) => failed.exit(),
    }
}

fn under_root(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
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

impl Common {
    /// Loads and validates the profile and host facts: before anything else
    /// runs, so bad input changes nothing.
    fn load(&self, verb: &'static str) -> Result<Desired, Failed> {
        let role = self
            .profile
            .clone()
            .unwrap_or_else(|| under_root(&self.root, "/etc/underlay/profile.toml"));
        let host = self
            .host
            .clone()
            .unwrap_or_else(|| under_root(&self.root, "/etc/underlay/host.toml"));
        profile::load(&role, &host).map_err(|e| Failed::profile(self, verb, &e))
    }

    /// Enters --netns (after refusing what would leak out of it) and opens the system.
    fn open(&self, verb: &'static str, desired: &Desired) -> Result<LinuxSystem, Failed> {
        if let Some(ns) = &self.netns {
            if self.root == Path::new("/") {
                return Err(Failed::new(
                    self,
                    verb,
                    underlay::error::ErrorKind::Input,
                    format!(
                        "--netns {ns} needs --root DIR: the namespace's sysctl.d, rt_tables.d, state file and BIRD config would land in this machine's /etc and /var (and its sysctls applied to the whole machine at the next boot). Add e.g. --root /var/lib/underlay-netns/{ns}"
                    ),
                ));
            }
            engine::check_netns_safe(desired).map_err(|e| Failed::engine(self, verb, &e))?;
            netns::enter(ns).map_err(|e| Failed::system(self, verb, &e))?;
        }
        LinuxSystem::new(&self.root, &self.state, self.netns.is_some())
            .map_err(|e| Failed::system(self, verb, &e))
    }
}
