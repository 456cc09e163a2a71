//! Read-only views of the host that only diagnosis needs (`underlay doctor`):
//! link kinds, other daemons' processes and sockets, the firewall as its own
//! tools print it, conntrack. Behind [`System::inspect`](super::System::inspect)
//! so the doctor reads the host through the same system (the same netlink
//! socket, `--root`, `--state`) as every other verb, and runs on
//! [`FakeSystem`](super::fake::FakeSystem) in unit tests. Raw text comes back
//! as the tools print it: parsing it is the doctor's (pure) business.

use std::path::{Path, PathBuf};

use super::{BirdProtocol, SystemError};
use crate::desired::Family;

/// A link with its rtnetlink kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkKind {
    pub index: u32,
    pub name: String,
    /// `vxlan`, `ipip`, `veth`...; `None` for plain NICs and lo.
    pub kind: Option<String>,
    /// A VXLAN link's destination port, when the kernel reports one.
    pub vxlan_port: Option<u16>,
}

/// A process in the current network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// Its working directory (relative paths in its arguments start there).
    pub cwd: PathBuf,
    /// Inodes of the sockets it holds open.
    pub sockets: Vec<u64>,
}

pub trait Inspect {
    /// Every link with its kind (one netlink dump on the system's socket).
    fn link_kinds(&mut self) -> Result<Vec<LinkKind>, SystemError>;
    /// A value below /proc/sys by relative path (`net/ipv4/conf/eth0/rp_filter`),
    /// trimmed; `None` when absent or unreadable.
    fn proc_sys(&mut self, rel: &str) -> Option<String>;
    /// `(tool, its stdout or why it could not run)` for `iptables-save`,
    /// `ip6tables-save`, and `iptables-legacy-save` when legacy tables exist.
    fn iptables_dumps(&mut self) -> Vec<(String, Result<String, String>)>;
    /// `nft -j list ruleset` as printed.
    fn nft_ruleset(&mut self) -> Result<String, String>;
    /// `conntrack -L [-f ipv6] --src-nat` as printed.
    fn conntrack_snat(&mut self, family: Family) -> Result<String, String>;
    /// /proc/net/tcp or tcp6 of the calling thread's namespace, as printed.
    fn tcp_table(&mut self, family: Family) -> Result<String, String>;
    /// Processes in the calling thread's network namespace, by pid.
    fn processes(&mut self) -> Vec<ProcessInfo>;
    /// A file as process `pid` sees it (`path` absolute): through its root
    /// (its mount namespace), else through ours.
    fn process_file(&mut self, pid: u32, path: &Path) -> Option<String>;
    /// Names of the entries of a directory below --root (logical path),
    /// sorted; empty when it does not exist.
    fn list_dir(&mut self, logical: &Path) -> Vec<String>;
    /// Whether two real paths name the same file (symlinks resolved).
    fn same_file(&mut self, a: &Path, b: &Path) -> bool;
    /// `show protocols` of the BIRD behind a real socket path (another
    /// daemon's, not below --root).
    fn bird_protocols_at(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError>;
    /// The state file (real path) and its text; `None` when there is none.
    fn state_text(&mut self) -> (PathBuf, Result<Option<String>, SystemError>);
}
