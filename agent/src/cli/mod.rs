//! The `underlay` command line: flag parsing and dispatch. One verb, one
//! module, each with its human and JSON output; the library never prints.

mod converge;
mod doctor;
mod join;
mod output;
mod render;
mod show_sources;
mod sources;
mod watch;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use underlay::desired::Desired;
use underlay::engine;
use underlay::source::{cloudinit, cmdline, Sha256};
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

  # Then keep it converged: repair drift from netlink events (SIGTERM: exit 0)
  underlay watch --profile ... --host ...

  # Something is wrong on a live host: read-only checks with evidence and fixes
  underlay doctor                       # generic checks (0 clean, 1 warnings, 2 failures)
  underlay doctor --profile ... --host ... --json

  # First boot, all the way: converge, wait for the gates, then join the cluster (once)
  underlay apply --wait --join --profile ... --host ...
  underlay join --profile ... --host ...     # the join alone (gates first; never twice)

  # What BIRD, Calico and kubeadm get
  underlay render bird --profile ... --host ...
  underlay render calico --profile ... --host ... | calicoctl apply -f -
  underlay render join --profile ... --host ...   # the JoinConfiguration, token redacted

  # For Ansible: JSON with changed, per-resource before/after and phase timings
  underlay apply --json ... | jq .changed

  # First boot: sources from the kernel command line or cloud-init (see `underlay show-sources --help`)
  underlay show-sources                 # which source won for the profile and the host facts, and its sha256
  underlay apply --profile https://prov.example/profiles/l3-ecmp-calico.toml \\
      --profile-sha256 $(sha256sum l3-ecmp-calico.toml | cut -d' ' -f1) --host /etc/underlay/host.toml";

const SOURCES_HELP: &str = "\
Where the profile and host facts come from, per item, first declared wins:
  1. --profile / --host (FILE or https:// URL, with --profile-sha256 / --host-sha256)
  2. the kernel command line: underlay.profile=URL underlay.profile.sha256=HEX
                              underlay.host=URL underlay.host.sha256=HEX  (and underlay.ca=/path.pem)
  3. cloud-init user-data (or vendor-data), as cloud-init processed it:
       underlay:
         profile: {url: https://..., sha256: HEX}
         host:
           toml: |
             version = 1
             ...
  4. <root>/etc/underlay/profile.toml and host.toml

A remote source is https only and must be pinned by sha256 (`sha256sum FILE`). URLs may use
${mac} (the boot NIC, from BOOTIF=01-aa-bb-cc-dd-ee-ff), ${mac:eth0}, ${hostname}, ${serial}
and ${uuid} (DMI), so one kernel command line serves a rack. The last good copy of each remote
source is kept in <root>/var/lib/underlay/cache (by apply); when the server cannot be reached,
a cached copy whose sha256 equals the pin is used, and the output says so. A pin mismatch is
refused and changes nothing.

Examples:
  underlay show-sources
  underlay show-sources --json | jq '.sources[] | {item, level, origin, sha256, from_cache}'
  # Try a kernel command line without rebooting:
  echo 'underlay.profile=https://prov/r.toml underlay.profile.sha256=... BOOTIF=01-52-54-00-12-34-56' > /tmp/cmdline
  underlay show-sources --cmdline /tmp/cmdline";

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
    /// Which source won for the role profile and for the host facts (flag, kernel command line,
    /// cloud-init, /etc/underlay), its origin and sha256, and whether it came from the cache.
    /// Fetches remote sources (pinned) but changes nothing, not even the cache.
    /// Exit 0: both found and valid, 1: not
    #[command(after_help = SOURCES_HELP)]
    ShowSources(Common),
    /// Join the Kubernetes cluster with `kubeadm join`, once: only when the host matches the profile
    /// and every readiness gate passes (waiting for them), never on a node that has
    /// /etc/kubernetes/kubelet.conf or that underlay joined before. The bootstrap token goes only
    /// into the config file kubeadm reads (mode 0600, removed after the run).
    /// Exit 0: joined (or already joined), 1: error or kubeadm failed (retried next run), 3: a gate failed
    Join(join::JoinArgs),
    /// Print generated configuration: the host BIRD config, the Calico resources, or the kubeadm
    /// JoinConfiguration
    /// Stay running and keep the host converged: netlink events (our links, addresses, rules,
    /// the host table), changed profile, host facts or generated files, and a periodic resync
    /// each start a normal apply; foreign route churn (Calico) is filtered in the kernel.
    /// Repairs are logged and counted (`underlay status` shows them). Exit 0 on SIGTERM/SIGINT
    /// after the current apply; SIGHUP re-reads the inputs. Exit 1 when the inputs are invalid
    /// at start
    Watch(watch::WatchArgs),
    Render {
        #[arg(value_enum)]
        what: RenderWhat,
        /// Print BGP passwords and the join token as they are (by default they show as <redacted>)
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
    /// BGPConfiguration, IPPools and FelixConfiguration for the cluster, this node's Node and
    /// BGPPeer, for `calicoctl apply -f -`
    Calico,
    /// The kubeadm JoinConfiguration (v1beta4) this host joins with, the token redacted
    Join,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    wait: WithWait,
    #[command(flatten)]
    join: join::JoinFlags,
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
    /// Role profile (TOML), shared by every host of the role: a FILE or an https:// URL
    /// [default: the kernel command line, cloud-init, then <root>/etc/underlay/profile.toml;
    /// see `underlay show-sources --help`]
    #[arg(long, value_name = "FILE|URL")]
    profile: Option<String>,
    /// sha256 the profile must have (required for a URL), as `sha256sum` prints it
    #[arg(long, value_name = "HEX", requires = "profile")]
    profile_sha256: Option<Sha256>,
    /// Host facts (TOML): names, addresses and ASNs of this host; a FILE or an https:// URL
    /// [default: the kernel command line, cloud-init, then <root>/etc/underlay/host.toml]
    #[arg(long, value_name = "FILE|URL")]
    host: Option<String>,
    /// sha256 the host facts must have (required for a URL)
    #[arg(long, value_name = "HEX", requires = "host")]
    host_sha256: Option<Sha256>,
    /// Operate inside this network namespace (as made by `ip netns add NAME`): netlink,
    /// /proc/sys/net, and the fetch of remote sources
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
    /// Logs: `auto` is journald when systemd started underlay (JOURNAL_STREAM), else text on
    /// stderr; `json` is one JSON object per line on stderr. Level: UNDERLAY_LOG (e.g. debug)
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "auto")]
    log_format: LogFormat,
    #[command(flatten)]
    sources: SourceArgs,
    /// Whether this process is already in --netns.
    #[arg(skip)]
    entered: Cell<bool>,
}

#[derive(Args)]
#[command(next_help_heading = "First-boot sources")]
pub struct SourceArgs {
    /// Trust only the CA certificates in this PEM bundle for https sources (a private
    /// provisioning CA) [default: underlay.ca= on the kernel command line, else the OS trust store]
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Kernel command line to read underlay.* and BOOTIF= from (tests and dry runs point it at a file)
    #[arg(long, value_name = "FILE", env = "UNDERLAY_CMDLINE", default_value = cmdline::DEFAULT_PATH)]
    cmdline: PathBuf,
    /// cloud-init's instance directory (cloud-config.txt, vendor-cloud-config.txt, user-data.txt)
    #[arg(long, value_name = "DIR", env = "UNDERLAY_CLOUD_INIT_DIR", default_value = cloudinit::DEFAULT_INSTANCE_DIR)]
    cloud_init_dir: PathBuf,
    /// cloud-init's instance-data.json (v1.local_hostname for ${hostname})
    #[arg(long, value_name = "FILE", env = "UNDERLAY_INSTANCE_DATA", default_value = cloudinit::DEFAULT_INSTANCE_DATA)]
    instance_data: PathBuf,
    /// sysfs, for DMI ${serial} and ${uuid} (class/dmi/id/product_serial, product_uuid)
    #[arg(
        long,
        value_name = "DIR",
        env = "UNDERLAY_SYSFS",
        default_value = "/sys"
    )]
    sysfs: PathBuf,
    /// Seconds per fetch attempt (connect, TLS, headers and body)
    #[arg(long, value_name = "SECS", default_value_t = 15.0, value_parser = positive_secs)]
    fetch_timeout: f64,
    /// Attempts per remote source; waits between them double from 1 s (up to 8 s), with jitter.
    /// A fetch takes at most attempts x timeout + the waits
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
    fetch_attempts: u32,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0 and 3600"
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Plan(c) => converge::run(engine::Mode::Plan, "plan", c, None, None, None),
        Command::Apply(a) => converge::run(
            engine::Mode::Apply,
            "apply",
            &a.wait.common,
            Some(&a.wait),
            Some(&a.join),
            Some(&a.safe),
        ),
        Command::Verify(w) => converge::run(
            engine::Mode::Verify,
            "verify",
            &w.common,
            Some(w),
            None,
            None,
        ),
        Command::Status(c) => converge::run(engine::Mode::Status, "status", c, None, None, None),
        Command::Join(a) => join::run(a),
        Command::Render {
            what,
            show_secrets,
            common,
        } => render::run(*what, *show_secrets, common),
        Command::Doctor(c) => doctor::run(c),
        Command::ShowSources(c) => show_sources::run(c),
        Command::Watch(w) => watch::run(w),
    };
    match result {
        Ok(code) => code,
        Err(failed) => failed.exit(),
    }
}

fn under_root(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// Logs go to stderr (text or JSON lines) or, under systemd, to the journal
/// with fields. No secret is logged anywhere: URLs appear without their query
/// string, fetched files never.
fn init_logs(c: &Common) {
    init_logs_from(c, "warn");
}

/// `quiet`: the level on a terminal without -vv (watch logs every repair at
/// info; the journal always gets info).
fn init_logs_from(c: &Common, quiet: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;

    let format = match c.log_format {
        LogFormat::Auto if under_journald() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    // The journal is where an unattended first boot is read: info there.
    let level = match (c.verbose, format) {
        (0 | 1, LogFormat::Journald) => "info",
        (0 | 1, _) => quiet,
        (2, _) => "debug",
        _ => "trace",
    };
    let filter =
        || EnvFilter::try_from_env("UNDERLAY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer.with_syslog_identifier("underlay".into()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("underlay: cannot log to the journal ({e}); logging to stderr"),
        },
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .with_writer(std::io::stderr)
                .with_env_filter(filter())
                .try_init();
            return;
        }
        _ => {}
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter())
        .try_init();
}

/// systemd sets JOURNAL_STREAM=<dev>:<inode> when stderr is the journal;
/// it must match stderr itself (a child with redirected stderr inherits the
/// variable but not the stream).
fn under_journald() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => {
            dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
        }
        Err(_) => false,
    }
}

impl Common {
    /// Moves this process into --netns, once: the fetch of remote sources
    /// and every netlink socket then use the namespace's network.
    fn enter_netns(&self, verb: &'static str) -> Result<(), Failed> {
        if let (Some(ns), false) = (&self.netns, self.entered.get()) {
            netns::enter(ns).map_err(|e| Failed::system(self, verb, &e))?;
            self.entered.set(true);
        }
        Ok(())
    }

    /// The local files `load` may read (an explicit file, the kernel command
    /// line, cloud-init's, /etc/underlay): watch mode polls them for changes.
    /// A remote source is re-read when one of them changes, or on the resync.
    fn input_files(&self) -> Vec<PathBuf> {
        let local = |flag: &Option<String>, default: &str| match flag {
            Some(f) if !f.contains("://") => PathBuf::from(f),
            _ => under_root(&self.root, default),
        };
        let s = &self.sources;
        vec![
            local(&self.profile, "/etc/underlay/profile.toml"),
            local(&self.host, "/etc/underlay/host.toml"),
            s.cmdline.clone(),
            s.cloud_init_dir.join("cloud-config.txt"),
            s.cloud_init_dir.join("vendor-cloud-config.txt"),
        ]
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
            self.enter_netns(verb)?;
        }
        LinuxSystem::new(&self.root, &self.state, self.netns.is_some())
            .map_err(|e| Failed::system(self, verb, &e))
    }
}
