//! What the system looks like now, as far as a plan needs to know: every link
//! (to resolve NIC matches), addresses, only our rules, the sysctls and files
//! the plan touches, and the state file's record of what we created.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

use crate::desired::{MacAddr, RuleSpec, SysctlKey};
use crate::state::State;

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub links: Vec<ObservedLink>,
    pub addresses: Vec<ObservedAddress>,
    /// Rules carrying our protocol number only.
    pub rules: Vec<RuleSpec>,
    /// Rules that carry our protocol number but also selectors we never set
    /// (`from 192.0.2.1`, `iif`, `fwmark`): someone else's. The kernel treats
    /// one as the same rule as ours at its priority and table: adding ours
    /// fails with EEXIST, and deleting ours may delete it instead.
    pub borrowed_rules: Vec<(RuleSpec, String)>,
    /// `None`: the key does not exist in this kernel (or namespace).
    pub sysctls: BTreeMap<SysctlKey, Option<String>>,
    /// Logical paths (without the --root prefix); `None`: absent.
    pub files: BTreeMap<PathBuf, Option<String>>,
    pub state: State,
    /// Whether the kernel reports IFA_PROTO on addresses (Linux ≥ 6.3).
    pub addr_proto_supported: bool,
    /// Whether a BIRD answers on the profile's control socket.
    pub bird_running: bool,
    /// That control socket (logical path), when the profile has BGP.
    pub bird_socket: Option<PathBuf>,
    /// Whether systemd supervises the daemons here (never inside --netns).
    pub systemd: bool,
    /// Our nftables table, read only when wanted or once created by us.
    pub nft: Option<crate::nft::ObservedNat>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    /// The permanent (burned-in) address, when it differs (bond ports).
    pub perm_mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up (carrier): IF_OPER_UP, or UNKNOWN as on lo.
    pub oper_up: bool,
}

/// One next hop of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHop {
    pub gateway: Option<std::net::IpAddr>,
    pub oif: u32,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Link,
    Host,
    Other(u8),
}

impl Scope {
    pub fn from_kernel(v: u8) -> Scope {
        match v {
            0 => Scope::Global,
            253 => Scope::Link,
            254 => Scope::Host,
            o => Scope::Other(o),
        }
    }

    pub fn to_kernel(self) -> u8 {
        match self {
            Scope::Global => 0,
            Scope::Link => 253,
            Scope::Host => 254,
            Scope::Other(o) => o,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Link => f.write_str("link"),
            Scope::Host => f.write_str("host"),
            Scope::Other(o) => write!(f, "{o}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAddress {
    pub index: u32,
    pub ifname: String,
    pub prefix: IpNet,
    pub scope: Scope,
    /// IFA_PROTO, when the kernel reports it.
    pub protocol: Option<u8>,
}

impl Observed {
    pub fn link_by_index(&self, index: u32) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.index == index)
    }
}
