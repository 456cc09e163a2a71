//! The system layer: every syscall, netlink message and file write goes
//! through [`System`]. The real implementation is [`linux::LinuxSystem`]; the
//! [`fake::FakeSystem`] applies ops to memory so tests prove convergence
//! without root.

pub mod events;
pub mod fake;
pub mod fake_join;
pub mod files;
pub mod https;
pub mod inspect;
pub mod join;
pub mod linux;
pub mod netns;
pub mod nft;
pub mod process;
pub mod sources;
pub mod sysctl;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::bgp::{BfdSession, BgpDetail};
use crate::desired::{Family, SysctlKey};
use crate::observed::{NextHop, Observed, ObservedLink};
use crate::plan::Op;
use crate::state::State;

/// What to read besides links, addresses and rules.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Rules with this protocol number are ours; others are not observed.
    pub protocol: u8,
    pub sysctls: BTreeSet<SysctlKey>,
    pub files: BTreeSet<PathBuf>,
    /// BIRD control socket to probe (logical path).
    pub bird_socket: Option<PathBuf>,
    /// BIRD's systemd unit, read when BIRD does not answer and units are driven.
    pub bird_unit: Option<String>,
    /// Read our nftables table (only when wanted or once created by us:
    /// spawning nft costs milliseconds).
    pub nft: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {}: {message}", path.display())]
    State { path: PathBuf, message: String },
    #[error("network namespace '{name}': {message}")]
    Netns { name: String, message: String },
    #[error("BIRD rejected the rendered config (nothing was written; the running BIRD keeps its config): {0}")]
    BirdRejected(String),
    #[error("BIRD control socket {}: {message}", socket.display())]
    BirdControl { socket: PathBuf, message: String },
    #[error("nftables: {0}")]
    Nft(#[from] crate::nft::NftError),
    /// A change the host cannot take that was known before it was tried
    /// (a path that is a directory, a user that does not exist).
    #[error("{0}")]
    Refused(String),
    #[error("another underlay run holds the lock {} ({holder}); waited {waited_s} s. Retry when it finishes", path.display())]
    Locked {
        path: PathBuf,
        holder: String,
        waited_s: u64,
    },
    /// A secret file below --root that underlay refuses to read: a symlink,
    /// not a regular file, readable by others, not owned by root.
    #[error("secret file {}: {message}", path.display())]
    Secret { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

impl SystemError {
    /// Whether a retry may help (a daemon not answering yet) or the host
    /// refused; a config BIRD rejects or a missing namespace is the input's.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            SystemError::BirdControl { .. } => ErrorKind::Transient,
            SystemError::Locked { .. } => ErrorKind::Transient,
            SystemError::BirdRejected(_)
            | SystemError::Netns { .. }
            | SystemError::Refused(_)
            | SystemError::Secret { .. } => ErrorKind::Input,
            SystemError::Netlink { .. }
            | SystemError::Io { .. }
            | SystemError::State { .. }
            | SystemError::Nft(_)
            | SystemError::Other(_) => ErrorKind::System,
        }
    }
}

/// A secret read from a file (a BGP password): its `Debug` shows only its
/// length, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// The narrow interface to the host. Synchronous: implementations keep any
/// async runtime to themselves, so the planner and engine stay plain code.
pub trait System {
    /// Every link: NIC matching needs them all, and errors list them.
    fn links(&mut self) -> Result<Vec<ObservedLink>, SystemError>;
    fn load_state(&mut self) -> Result<State, SystemError>;
    /// A file below --root (logical path); `None` when absent.
    fn read_file(&mut self, path: &Path) -> Result<Option<String>, SystemError>;
    /// A secret file below --root (logical path), read the way ssh reads a
    /// private key: no symlink followed on the way, a regular file owned by
    /// root and not accessible to group or others; `None` when absent.
    fn read_secret(&mut self, path: &Path) -> Result<Option<Secret>, SystemError>;
    /// Addresses, our rules, and the queried sysctls and files.
    fn observe(
        &mut self,
        links: Vec<ObservedLink>,
        state: State,
        q: &Query,
    ) -> Result<Observed, SystemError>;
    fn apply(&mut self, op: &Op) -> Result<(), SystemError>;
    fn save_state(&mut self, state: &State) -> Result<(), SystemError>;
    /// Takes the run lock (beside the state file) for the rest of this
    /// system's life, waiting up to `timeout` for another run to finish.
    fn lock(&mut self, _timeout: std::time::Duration) -> Result<(), SystemError> {
        Ok(())
    }
    /// Gives the run lock back: a caller that lives on between runs (the
    /// watcher) must not keep every other run (`apply` by hand, the timer,
    /// Ansible) waiting for it.
    fn unlock(&mut self) {}
    /// Checks what can be known about `op` before any change is made (BIRD's
    /// parser on a config, a path that is a directory), changing nothing.
    fn preflight(&mut self, _op: &Op) -> Result<(), SystemError> {
        Ok(())
    }

    // The safe apply's checkpoint (next to the state file, mode 0600: it may
    // hold the pre-apply BIRD config and so BGP passwords).

    /// The checkpoint's text, `None` when there is none.
    fn load_checkpoint(&mut self) -> Result<Option<String>, SystemError>;
    /// Writes (durably) or, with `None`, removes the checkpoint.
    fn save_checkpoint(&mut self, text: Option<&str>) -> Result<(), SystemError>;
    /// Whether `pid` is a live underlay process (the owner of a checkpoint).
    fn underlay_running(&mut self, pid: u32) -> bool;
    /// A TCP connection to `addr` from this host (the safe apply's probe).
    fn tcp_probe(
        &mut self,
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
    ) -> Result<(), String>;

    // Reads for readiness gates and diagnostics.

    /// Next hops of the default route in `table`.
    fn default_nexthops(&mut self, table: u32, family: Family)
        -> Result<Vec<NextHop>, SystemError>;
    /// Protocols of the BIRD behind `socket` (logical path below --root).
    fn bird_protocols(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError>;
    /// Prefixes BIRD exports to `protocol`.
    fn bird_exported(&mut self, socket: &Path, protocol: &str) -> Result<Vec<IpNet>, SystemError>;
    /// BFD sessions of the BIRD behind `socket` (`show bfd sessions`).
    fn bird_bfd_sessions(&mut self, socket: &Path) -> Result<Vec<BfdSession>, SystemError>;
    /// State and negotiated capabilities of one BGP protocol (`show protocols all`).
    fn bird_bgp_detail(&mut self, socket: &Path, protocol: &str) -> Result<BgpDetail, SystemError>;

    // Where things are, for configs another process reads.

    /// The path a daemon must be given for a logical path (below --root).
    fn real_path(&self, logical: &Path) -> PathBuf;
    /// Running inside --netns: no systemd supervises BIRD there and nothing
    /// prepares its directories.
    fn in_netns(&self) -> bool;

    /// The read-only views only diagnosis needs (`underlay doctor`).
    fn inspect(&mut self) -> &mut dyn inspect::Inspect;
}

/// One line of BIRD's `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BirdProtocol {
    pub name: String,
    pub proto: String,
    pub state: String,
    /// For BGP: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub info: String,
}
