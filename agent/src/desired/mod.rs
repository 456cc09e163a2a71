//! The validated model of what the host should look like. Built only by
//! `profile::load` (the parser builds the model; this module imports nothing
//! from the parser or the kernel-facing layers); every value here has passed
//! validation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub mod join;
mod nat;
pub mod types;

pub use nat::{MarkGuard, NatMode, KUBE_MASQ_MARK, VXLAN_PORT};
pub use types::{Asn, IfName, MacAddr, ProtocolId, RulePriority, TableId, UplinkSysctl};

/// How pods reach each other across hosts (profile: `pods.encapsulation`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    #[default]
    None,
    Ipip,
    Vxlan,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub hostname: String,
    pub zone: Option<String>,
    pub rack: Option<String>,
    pub asn: Asn,
    /// Marks our rules and routes (rtproto) and our addresses (IFA_PROTO).
    pub protocol: ProtocolId,
    pub service_ipv4: Ipv4Net,
    pub service_ipv6: Option<Ipv6Net>,
    pub uplinks: Vec<Uplink>,
    pub tables: Vec<Table>,
    /// Already expanded per address family.
    pub rules: Vec<RuleSpec>,
    pub pods: Pods,
    pub sysctl_global: Vec<(SysctlKey, String)>,
    /// Per-uplink keys, resolved per NIC once its name is known.
    pub sysctl_uplink: Vec<(UplinkSysctl, String)>,
    pub bgp: Option<Bgp>,
    pub nat: Nat,
    /// The cluster join, when the host facts have a `[join]` section.
    pub join: Option<join::Join>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nat {
    pub mode: NatMode,
    /// Clears the masquerade mark on outer tunnel packets before source NAT.
    pub guard: Option<MarkGuard>,
}

/// The host BGP speaker (BIRD 2). Paths are logical (below `--root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub host_table: Table,
    pub config_path: std::path::PathBuf,
    /// Who owns a new BIRD config: Debian's bird.service reads it as
    /// `bird:bird` after dropping privileges (an existing file keeps its
    /// owner, group and mode).
    pub config_owner: FileOwner,
    pub control_socket: std::path::PathBuf,
    pub templates_dir: std::path::PathBuf,
    pub hold_time: u16,
    pub keepalive: u16,
    pub connect_retry: u16,
    pub graceful_restart: bool,
    pub bfd: Option<Bfd>,
    pub calico: Option<CalicoPeer>,
    /// Readiness: next hops the host table's default needs.
    pub min_paths: u32,
    pub timeout_s: u32,
}

/// The owner and group a generated file gets when it is created, by name
/// (resolved on the host when the file is written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOwner {
    pub user: String,
    pub group: String,
    pub mode: u32,
}

impl FileOwner {
    /// BIRD's config as Debian's bird2 package expects it.
    pub fn bird() -> FileOwner {
        FileOwner {
            user: "bird".into(),
            group: "bird".into(),
            mode: 0o640,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bfd {
    pub interval_ms: u32,
    pub multiplier: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalicoPeer {
    pub host_address: IpAddr,
    pub calico_address: IpAddr,
    pub calico_port: u16,
    pub calico_asn: Asn,
    pub export_default: bool,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    /// Logical name ("tor-a"), stable across NIC renames.
    pub name: String,
    pub nic: NicMatch,
    pub mtu: Option<u32>,
    pub ipv4: Option<Transit<Ipv4Net, Ipv4Addr>>,
    pub ipv6: Option<Transit<Ipv6Net, Ipv6Addr>>,
    pub peer_asn: Asn,
    /// Where the BGP session's password is kept (logical path).
    pub password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transit<N, A> {
    pub address: N,
    pub peer: A,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NicMatch {
    Name(IfName),
    Mac(MacAddr),
}

impl fmt::Display for NicMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NicMatch::Name(n) => write!(f, "name {n}"),
            NicMatch::Mac(m) => write!(f, "mac {m}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub id: TableId,
}

#[derive(Debug, Clone, Default)]
pub struct Pods {
    pub cidrs: Vec<IpNet>,
    pub encapsulation: Encapsulation,
    /// Zone name → pod CIDR, each inside one of `cidrs`.
    pub zones: Vec<(String, IpNet)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// An `ip rule` as we model it; also its identity. Rules we find with our
/// protocol number that do not match a spec exactly are ours to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleSpec {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    pub suppress_prefixlength: Option<u8>,
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = match self.family {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
        };
        write!(f, "{fam} pref {} lookup {}", self.priority, self.table)?;
        if let Some(s) = self.suppress_prefixlength {
            write!(f, " suppress_prefixlength {s}")?;
        }
        Ok(())
    }
}

/// A sysctl key as path components below /proc/sys (components may contain
/// dots, e.g. a VLAN interface `eth0.100`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SysctlKey(Vec<String>);

impl SysctlKey {
    /// Parses dotted notation (`net.ipv4.ip_forward`) or slash notation
    /// (`net/ipv4/conf/eth0.100/rp_filter`); both spell the same key. Every
    /// component is a plain name (no empty component, no `.` or `..`, no
    /// whitespace or control characters), so the key stays below /proc/sys.
    pub fn parse(s: &str) -> Result<SysctlKey, String> {
        let slash = s.contains('/');
        let parts: Vec<String> = s
            .split(if slash { '/' } else { '.' })
            .map(str::to_string)
            .collect();
        let component_ok = |p: &String| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '-' || (slash && c == '.')
                })
        };
        let first_ok = parts[0].starts_with(|c: char| c.is_ascii_alphabetic());
        if parts.len() >= 2 && first_ok && parts.iter().all(component_ok) {
            Ok(SysctlKey(parts))
        } else {
            Err(format!(
                "found '{}', which is not a sysctl key; expected names of letters, digits, '_' and '-' joined by dots, \
                 like net.ipv4.ip_forward (or by slashes when a name holds a dot, like net/ipv4/conf/eth0.100/rp_filter)",
                types::shown(s)
            ))
        }
    }

    pub fn from_parts(parts: Vec<String>) -> SysctlKey {
        SysctlKey(parts)
    }

    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// Only `net.*` keys are per network namespace.
    pub fn is_per_netns(&self) -> bool {
        self.0.first().map(String::as_str) == Some("net")
    }

    /// The relative path below /proc/sys.
    pub fn proc_path(&self) -> String {
        self.0.join("/")
    }
}

impl fmt::Display for SysctlKey {
    /// Dotted unless a component has a dot, then the slash form sysctl.d accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().any(|p| p.contains('.')) {
            f.write_str(&self.0.join("/"))
        } else {
            f.write_str(&self.0.join("."))
        }
    }
}

impl From<SysctlKey> for String {
    fn from(k: SysctlKey) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for SysctlKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SysctlKey::parse(&s)
    }
}

impl Desired {
    pub fn service_addresses(&self) -> Vec<IpNet> {
        let mut v = vec![IpNet::V4(self.service_ipv4)];
        if let Some(v6) = self.service_ipv6 {
            v.push(IpNet::V6(v6));
        }
        v
    }
}
