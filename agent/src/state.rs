//! The state file: what underlay created, so a later profile that drops an
//! object removes exactly that object, and nothing we did not create is ever
//! removed. Kernel-side ownership marks (rule protocol, IFA_PROTO) say the
//! same; the file covers kernels without IFA_PROTO and files we wrote.
//!
//! The format is versioned and tolerant, so a package upgrade or downgrade
//! never strands a host: unknown fields are kept (and written back), older
//! versions are migrated on read, and a newer version is read for the fields
//! this build knows. Writes are write-ahead: before a run creates anything it
//! records the *intent* durably, so a run killed between creating an object
//! and recording it leaves a successor that adopts the object instead of
//! orphaning it (see [`State::adopt_intents`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::desired::{RuleSpec, SysctlKey};

/// The version this build writes. History: 1 = owned objects only;
/// 2 = adds `intents` (write-ahead).
pub const STATE_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// What a run set out to create and has not yet recorded as owned.
    /// Empty after every run that finished; non-empty only after a crash.
    #[serde(default, skip_serializing_if = "Intents::is_empty")]
    pub intents: Intents,
    /// Fields a newer build wrote: kept as they are and written back.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// Objects about to be created by a run (write-ahead records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intents {
    #[serde(default)]
    pub addresses: BTreeSet<OwnedAddress>,
    #[serde(default)]
    pub files: BTreeSet<PathBuf>,
    #[serde(default)]
    pub nft_table: bool,
}

impl Intents {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.files.is_empty() && !self.nft_table
    }
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
            intents: Intents::default(),
            unknown: BTreeMap::new(),
            joined: None,
        }
    }
}

/// Why a state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a state file ({0}); move it aside to start over (underlay then owns only what carries its protocol number)")]
    Malformed(String),
    #[error("version {0} is not a state version (expected 1 or later)")]
    BadVersion(u64),
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Reads any version this or an earlier build wrote, and a later one for
    /// the fields this build knows (the rest is kept in `unknown`).
    pub fn parse(text: &str) -> Result<State, StateError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StateError::Malformed(e.to_string()))?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| StateError::Malformed("no numeric `version`".into()))?;
        if version == 0 {
            return Err(StateError::BadVersion(version));
        }
        let mut state: State =
            serde_json::from_value(value).map_err(|e| StateError::Malformed(e.to_string()))?;
        // v1 → v2: no intents existed; nothing else changed.
        if state.version < STATE_VERSION {
            state.version = STATE_VERSION;
        }
        Ok(state)
    }

    /// The text written to disk (pretty, newline-terminated).
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("state always serializes");
        s.push('\n');
        s
    }

    pub fn owns_address(&self, ifname: &str, prefix: &IpNet) -> bool {
        self.addresses.contains(&OwnedAddress {
            ifname: ifname.to_string(),
            prefix: *prefix,
        })
    }

    /// After a crash: every intended object that exists now was created by
    /// the killed run and is ours; an intended object that does not exist
    /// was never created. Either way the intents are settled.
    pub fn adopt_intents(
        &mut self,
        address_exists: impl Fn(&OwnedAddress) -> bool,
        file_exists: impl Fn(&PathBuf) -> bool,
        nft_table_exists: bool,
    ) {
        let intents = std::mem::take(&mut self.intents);
        for a in intents.addresses {
            if address_exists(&a) {
                self.addresses.insert(a);
            }
        }
        for f in intents.files {
            if file_exists(&f) {
                self.files.insert(f);
            }
        }
        if intents.nft_table && nft_table_exists {
            self.nft_table = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file written by the build before versioning (v1), captured
    /// from a real converge of the IPIP profile in a namespace.
    const V1: &str = include_str!("state_testdata/v1.json");

    #[test]
    fn a_v1_file_migrates_with_everything_it_owned() {
        let s = State::parse(V1).expect("v1 is readable");
        assert_eq!(s.version, STATE_VERSION);
        assert_eq!(s.addresses.len(), 5);
        assert_eq!(s.rules.len(), 4);
        assert!(s.nft_table, "the IPIP profile's guard table is owned");
        assert!(s.owns_address("lo", &"10.10.0.11/32".parse().unwrap()));
        assert!(s.intents.is_empty());
        // And it round-trips in the new format.
        assert_eq!(State::parse(&s.to_text()).unwrap(), s);
    }

    #[test]
    fn unknown_fields_from_a_newer_build_are_kept() {
        let mut v: serde_json::Value = serde_json::from_str(V1).unwrap();
        v["version"] = 7.into();
        v["routes"] = serde_json::json!([{"table": 1001}]);
        let s = State::parse(&v.to_string()).expect("a newer file is read");
        assert_eq!(s.version, 7, "a newer version is not downgraded");
        let back: serde_json::Value = serde_json::from_str(&s.to_text()).unwrap();
        assert_eq!(
            back["routes"], v["routes"],
            "unknown fields survive a write"
        );
    }

    #[test]
    fn garbage_and_version_zero_are_refused_with_a_fix() {
        let e = State::parse("{not json").unwrap_err();
        assert!(e.to_string().contains("move it aside"), "{e}");
        assert_eq!(
            State::parse(r#"{"version": 0}"#).unwrap_err(),
            StateError::BadVersion(0)
        );
        assert!(State::parse(r#"{"addresses": []}"#).is_err());
    }

    #[test]
    fn intents_are_adopted_only_when_the_object_exists() {
        let mut s = State::new();
        let here = OwnedAddress {
            ifname: "lo".into(),
            prefix: "10.10.0.11/32".parse().unwrap(),
        };
        let gone = OwnedAddress {
            ifname: "eth0".into(),
            prefix: "172.30.0.1/31".parse().unwrap(),
        };
        s.intents.addresses.insert(here.clone());
        s.intents.addresses.insert(gone.clone());
        s.intents.files.insert("/etc/a".into());
        s.intents.nft_table = true;
        s.adopt_intents(|a| *a == here, |f| f.as_os_str() == "/etc/a", false);
        assert!(s.addresses.contains(&here));
        assert!(!s.addresses.contains(&gone));
        assert!(s.files.contains(&PathBuf::from("/etc/a")));
        assert!(!s.nft_table);
        assert!(s.intents.is_empty());
    }
}
