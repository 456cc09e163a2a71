//! Planning: `plan(&Target, &Observed) -> Plan`, pure and synchronous. Every
//! resource gets one [`Item`] (ok, create, update or delete) carrying the
//! [`Op`]s that converge it. Applying the ops and planning again must yield a
//! plan with nothing to do; tests prove that against a fake system.

mod addresses;
mod bgp;
mod files;
pub mod inverse;
mod links;
mod nft;
mod rules;
mod sysctls;
pub mod target;

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

use crate::desired::{RuleSpec, SysctlKey};
use crate::observed::{Observed, Scope};
pub use bgp::BIRD_UNIT;
pub use sysctls::normalize as normalize_sysctl;
pub use target::{resolve, BgpInputs, BirdTarget, ResolveError, Target, Template};

/// One change to the system. Recorded by the fake system in tests; never raw
/// netlink bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    SetLink {
        index: u32,
        ifname: String,
        mtu: Option<u32>,
        up: bool,
    },
    AddAddress {
        index: u32,
        ifname: String,
        prefix: IpNet,
        scope: Scope,
        protocol: u8,
    },
    DelAddress {
        index: u32,
        ifname: String,
        prefix: IpNet,
    },
    AddRule {
        rule: RuleSpec,
        protocol: u8,
    },
    DelRule {
        rule: RuleSpec,
        protocol: u8,
    },
    WriteSysctl {
        key: SysctlKey,
        value: String,
    },
    WriteFile {
        path: PathBuf,
        content: String,
    },
    RemoveFile {
        path: PathBuf,
    },
    /// Check with BIRD's own parser, then swap in atomically.
    WriteBirdConfig {
        path: PathBuf,
        /// For a new file; an existing one keeps its owner, group and mode.
        owner: crate::desired::FileOwner,
        #[serde(skip)]
        content: String,
        /// Directories BIRD needs to start (logical), created first: inside
        /// --netns the control socket's and the log file's, which no unit
        /// prepares there.
        dirs: Vec<PathBuf>,
    },
    /// `configure` over the control socket.
    ReloadBird {
        socket: PathBuf,
    },
    /// Start a systemd unit over D-Bus; `wait`: until its job finished
    /// (false when the unit is ordered after the one this run executes in).
    StartUnit {
        unit: String,
        wait: bool,
    },
    /// Create, replace or delete our nftables table in one transaction.
    Nft {
        #[serde(skip)]
        change: crate::nft::NftChange,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Ok,
    /// Nothing done on purpose, with the reason in `after` (always shown).
    Skip,
    Create,
    Update,
    Delete,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Ok => "ok",
            Action::Skip => "skip",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Link,
    Sysctl,
    Address,
    Rule,
    Nft,
    Bgp,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Link => "link",
            Kind::Sysctl => "sysctl",
            Kind::Address => "address",
            Kind::Rule => "rule",
            Kind::Nft => "nft",
            Kind::Bgp => "bgp",
        })
    }
}

/// One resource: what it is, what happens to it, and the ops that do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub kind: Kind,
    pub id: String,
    pub action: Action,
    pub before: Option<String>,
    pub after: Option<String>,
    #[serde(skip)]
    pub ops: Vec<Op>,
}

impl Item {
    fn ok(kind: Kind, id: String, state: String) -> Item {
        Item {
            kind,
            id,
            action: Action::Ok,
            before: Some(state.clone()),
            after: Some(state),
            ops: Vec::new(),
        }
    }

    fn skip(kind: Kind, id: String, reason: String) -> Item {
        Item {
            kind,
            id,
            action: Action::Skip,
            before: None,
            after: Some(reason),
            ops: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    pub fn changes(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(|i| !matches!(i.action, Action::Ok | Action::Skip))
    }

    pub fn is_converged(&self) -> bool {
        self.changes().next().is_none()
    }

    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.items.iter().flat_map(|i| i.ops.iter())
    }
}

/// Compares the target with what is there. Only objects we own (by protocol
/// number, IFA_PROTO or the state file) are ever deleted.
pub fn plan(t: &Target, o: &Observed) -> Plan {
    let mut items = Vec::new();
    items.extend(files::plan_files(t, o));
    items.extend(links::plan_links(t, o));
    items.extend(sysctls::plan_sysctls(t, o));
    items.extend(addresses::plan_addresses(t, o));
    items.extend(rules::plan_rules(t, o));
    items.extend(nft::plan_nft(t, o));
    // Last: BIRD's krt_prefsrc needs the service IP on lo before it loads.
    items.extend(bgp::plan_bgp(t, o));
    Plan { items }
}

#[cfg(test)]
mod tests;
