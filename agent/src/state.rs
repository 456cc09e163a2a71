//! The state file: what underlay created, so a later profile that drops an
//! object removes exactly that object, and nothing we did not create is ever
//! removed. Kernel-side ownership marks (rule protocol, IFA_PROTO) say the
//! same; the file covers kernels without IFA_PROTO and files we wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::desired::{RuleSpec, SysctlKey};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    /// Addresses we added, by interface name and prefix.
    #[serde(default)]
    pub addresses: BTreeSet<OwnedAddress>,
    #[serde(default)]
    pub rules: BTreeSet<RuleSpec>,
    /// Logical paths of files we wrote.
    #[serde(default)]
    pub files: BTreeSet<PathBuf>,
    /// Sysctls we manage, with the value we set (the live value is left as
    /// is when a profile drops one: the previous value is unknowable).
    #[serde(default)]
    pub sysctls: BTreeMap<SysctlKey, String>,
    /// Whether the `inet underlay` nftables table is ours to delete.
    #[serde(default)]
    pub nft_table: bool,
    /// Set once underlay joined this node to the cluster: never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<crate::join::JoinRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnedAddress {
    pub ifname: String,
    pub prefix: IpNet,
}

impl Default for State {
    fn default() -> State {
        State {
            version: STATE_VERSION,
            addresses: BTreeSet::new(),
            rules: BTreeSet::new(),
            files: BTreeSet::new(),
            sysctls: BTreeMap::new(),
            nft_table: false,
            joined: None,
        }
    }
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    pub fn owns_address(&self, ifname: &str, prefix: &IpNet) -> bool {
        self.addresses.contains(&OwnedAddress {
            ifname: ifname.to_string(),
            prefix: *prefix,
        })
    }
}
