//! Rollback from what we observed: before a change, [`record`] keeps the
//! pre-apply value of every object a planned [`Op`] touches (taken from the
//! run's [`Observed`], which already holds the truth of everything we own);
//! [`plan_rollback`] turns those records back into ops against a fresh
//! observation. Both are pure.
//!
//! Restoring to recorded values (rather than replaying inverse ops blindly)
//! makes a rollback idempotent: after a crash part-way through an apply (or
//! part-way through a rollback) the same records, planned against what is
//! there now, change only what still differs. Only objects a planned op
//! names are recorded, so foreign objects are never part of a rollback.
//!
//! [`inverse`] is the op-level view of the same thing (an applied op and the
//! pre-apply observation in, the ops that undo it out).

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::desired::{RuleSpec, SysctlKey};
use crate::nft::{NftChange, TableContent, TABLE_FAMILY, TABLE_NAME};
use crate::observed::{Observed, Scope};
use crate::plan::Op;

/// The pre-apply value of one object a plan touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "object", rename_all = "snake_case")]
pub enum Restore {
    Link {
        index: u32,
        ifname: String,
        mtu: u32,
        up: bool,
    },
    /// `was: None`: the address did not exist.
    Address {
        index: u32,
        ifname: String,
        prefix: IpNet,
        was: Option<WasAddress>,
    },
    Rule {
        rule: RuleSpec,
        protocol: u8,
        present: bool,
    },
    Sysctl {
        key: SysctlKey,
        value: String,
    },
    /// A generated file (`content: None`: absent).
    File {
        path: PathBuf,
        content: Option<String>,
    },
    /// The BIRD config (may hold BGP passwords: checkpoints are 0600).
    BirdConfig {
        path: PathBuf,
        content: Option<String>,
    },
    /// BIRD re-reads its config after a rollback that restored it.
    BirdReload {
        socket: PathBuf,
    },
    Unit {
        unit: String,
        running: bool,
    },
    /// Our nftables table as nft listed it (`None`: absent), as an nft JSON
    /// document that recreates it.
    Nft {
        table: Option<serde_json::Value>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasAddress {
    pub scope: Scope,
    /// IFA_PROTO as observed (`None`: not reported or unset).
    pub protocol: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("the pre-apply nftables table cannot be rebuilt from its listing: {0}")]
    Nft(String),
}

impl Restore {
    /// Which object this is: one record per object, the first wins.
    fn key(&self) -> String {
        match self {
            Restore::Link { index, .. } => format!("link {index}"),
            Restore::Address { index, prefix, .. } => format!("address {index} {prefix}"),
            Restore::Rule { rule, .. } => format!("rule {rule}"),
            Restore::Sysctl { key, .. } => format!("sysctl {key}"),
            Restore::File { path, .. } | Restore::BirdConfig { path, .. } => {
                format!("file {}", path.display())
            }
            Restore::BirdReload { .. } => "bird reload".into(),
            Restore::Unit { unit, .. } => format!("unit {unit}"),
            Restore::Nft { .. } => "nft".into(),
        }
    }

    /// What the object is, for the report.
    pub fn describe(&self) -> String {
        match self {
            Restore::Link {
                ifname, mtu, up, ..
            } => format!(
                "link {ifname} mtu {mtu} {}",
                if *up { "up" } else { "down" }
            ),
            Restore::Address {
                ifname,
                prefix,
                was,
                ..
            } => match was {
                None => format!("address {prefix} dev {ifname} absent"),
                Some(w) => format!("address {prefix} dev {ifname} scope {}", w.scope),
            },
            Restore::Rule { rule, present, .. } => {
                format!(
                    "rule {rule} {}",
                    if *present { "present" } else { "absent" }
                )
            }
            Restore::Sysctl { key, value } => format!("sysctl {key} = {value}"),
            Restore::File { path, content } | Restore::BirdConfig { path, content } => format!(
                "file {} {}",
                path.display(),
                if content.is_some() {
                    "as before"
                } else {
                    "absent"
                }
            ),
            Restore::BirdReload { .. } => "BIRD reloaded".into(),
            Restore::Unit { unit, running } => format!(
                "unit {unit} {}",
                if *running { "running" } else { "stopped" }
            ),
            Restore::Nft { table } => format!(
                "table {TABLE_FAMILY} {TABLE_NAME} {}",
                if table.is_some() {
                    "as before"
                } else {
                    "absent"
                }
            ),
        }
    }
}

/// The pre-apply values of the objects one op touches.
pub fn record_op(op: &Op, pre: &Observed) -> Vec<Restore> {
    match op {
        Op::SetLink { index, ifname, .. } => pre
            .link_by_index(*index)
            .map(|l| Restore::Link {
                index: *index,
                ifname: ifname.clone(),
                mtu: l.mtu,
                up: l.up,
            })
            .into_iter()
            .collect(),
        Op::AddAddress {
            index,
            ifname,
            prefix,
            ..
        }
        | Op::DelAddress {
            index,
            ifname,
            prefix,
        } => vec![Restore::Address {
            index: *index,
            ifname: ifname.clone(),
            prefix: *prefix,
            was: pre
                .addresses
                .iter()
                .find(|a| a.index == *index && a.prefix == *prefix)
                .map(|a| WasAddress {
                    scope: a.scope,
                    protocol: a.protocol,
                }),
        }],
        Op::AddRule { rule, protocol } | Op::DelRule { rule, protocol } => vec![Restore::Rule {
            rule: *rule,
            protocol: *protocol,
            present: pre.rules.contains(rule),
        }],
        // A key this kernel lacks has no value to go back to.
        Op::WriteSysctl { key, .. } => pre
            .sysctls
            .get(key)
            .cloned()
            .flatten()
            .map(|value| Restore::Sysctl {
                key: key.clone(),
                value: crate::plan::normalize_sysctl(&value),
            })
            .into_iter()
            .collect(),
        Op::WriteFile { path, .. } | Op::RemoveFile { path } => vec![Restore::File {
            path: path.clone(),
            content: pre.files.get(path).cloned().flatten(),
        }],
        Op::WriteBirdConfig { path, .. } => vec![Restore::BirdConfig {
            path: path.clone(),
            content: pre.files.get(path).cloned().flatten(),
        }],
        Op::ReloadBird { socket } => vec![Restore::BirdReload {
            socket: socket.clone(),
        }],
        Op::StartUnit { unit } | Op::StopUnit { unit } => vec![Restore::Unit {
            unit: unit.clone(),
            running: pre.bird_running,
        }],
        Op::Nft { .. } => vec![Restore::Nft {
            table: pre
                .nft
                .as_ref()
                .and_then(|n| n.table.as_ref())
                .map(table_document),
        }],
    }
}

/// The pre-apply values of everything `ops` touch, one record per object
/// (the first op on an object sees its pre-apply value), in op order.
pub fn record<'a>(ops: impl IntoIterator<Item = &'a Op>, pre: &Observed) -> Vec<Restore> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for op in ops {
        for r in record_op(op, pre) {
            if seen.insert(r.key()) {
                out.push(r);
            }
        }
    }
    out
}

/// The ops that bring the recorded objects back to their recorded values,
/// given what is there now; objects already at their value are left alone.
/// Reverse order of the apply (BGP first, files last), then a BIRD reload
/// once everything it refers to is back.
pub fn plan_rollback(records: &[Restore], now: &Observed) -> Result<Vec<Op>, RollbackError> {
    Ok(plan_rollback_steps(records, now)?
        .into_iter()
        .flat_map(|s| s.ops)
        .collect())
}

/// One object put back: what it is and the ops that do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub ops: Vec<Op>,
}

/// [`plan_rollback`], grouped per object (objects already as recorded are
/// left out).
pub fn plan_rollback_steps(
    records: &[Restore],
    now: &Observed,
) -> Result<Vec<Step>, RollbackError> {
    let mut steps = Vec::new();
    let mut reload = None;
    for r in records.iter().rev() {
        match r {
            Restore::BirdReload { socket } => reload = Some(socket.clone()),
            other => {
                let ops = restore_ops(other, Some(now))?;
                if !ops.is_empty() {
                    steps.push(Step {
                        what: other.describe(),
                        ops,
                    });
                }
            }
        }
    }
    if let Some(socket) = reload.filter(|_| now.bird_running) {
        steps.push(Step {
            what: "BIRD reloaded its restored config".into(),
            ops: vec![Op::ReloadBird { socket }],
        });
    }
    Ok(steps)
}

/// The ops that undo one applied op, given the pre-apply observation: the
/// inverse of `op` (reverse the order of a list of them to undo a run).
/// A reload is its own inverse: the caller reloads once after restoring.
pub fn inverse(op: &Op, pre: &Observed) -> Result<Vec<Op>, RollbackError> {
    let mut out = Vec::new();
    for r in record_op(op, pre) {
        out.extend(restore_ops(&r, None)?);
    }
    Ok(out)
}

/// Ops that set one object to its recorded value. With `now`, only where it
/// differs; without, unconditionally (the op is assumed to have applied).
fn restore_ops(r: &Restore, now: Option<&Observed>) -> Result<Vec<Op>, RollbackError> {
    Ok(match r {
        Restore::Link {
            index,
            ifname,
            mtu,
            up,
        } => {
            let cur = now.and_then(|n| n.link_by_index(*index));
            match (now, cur) {
                // The link is gone: nothing of ours to restore on it.
                (Some(_), None) => vec![],
                (_, Some(c)) if c.mtu == *mtu && c.up == *up => vec![],
                (_, c) => vec![Op::SetLink {
                    index: *index,
                    ifname: ifname.clone(),
                    mtu: c.map_or(true, |c| c.mtu != *mtu).then_some(*mtu),
                    up: *up,
                }],
            }
        }
        Restore::Address {
            index,
            ifname,
            prefix,
            was,
        } => {
            let cur = now.map(|n| {
                n.addresses
                    .iter()
                    .find(|a| a.index == *index && a.prefix == *prefix)
                    .map(|a| a.scope)
            });
            let del = Op::DelAddress {
                index: *index,
                ifname: ifname.clone(),
                prefix: *prefix,
            };
            match (was, cur) {
                (None, Some(None)) => vec![],
                (None, _) => vec![del],
                (Some(w), Some(Some(scope))) if scope == w.scope => vec![],
                (Some(w), cur) => {
                    let add = Op::AddAddress {
                        index: *index,
                        ifname: ifname.clone(),
                        prefix: *prefix,
                        scope: w.scope,
                        protocol: w.protocol.unwrap_or(0),
                    };
                    match cur {
                        Some(None) => vec![add],
                        // Unconditional: the applied op either added it (with
                        // our scope) or deleted it; delete-if-there then add.
                        None => vec![add],
                        Some(Some(_)) => vec![del, add],
                    }
                }
            }
        }
        Restore::Rule {
            rule,
            protocol,
            present,
        } => {
            let there = now.map(|n| n.rules.contains(rule));
            match (present, there) {
                (true, Some(true)) | (false, Some(false)) => vec![],
                (true, _) => vec![Op::AddRule {
                    rule: *rule,
                    protocol: *protocol,
                }],
                (false, _) => vec![Op::DelRule {
                    rule: *rule,
                    protocol: *protocol,
                }],
            }
        }
        Restore::Sysctl { key, value } => {
            let cur = now.map(|n| {
                n.sysctls
                    .get(key)
                    .cloned()
                    .flatten()
                    .map(|v| crate::plan::normalize_sysctl(&v))
            });
            if cur.as_ref().is_some_and(|c| c.as_deref() == Some(value)) {
                vec![]
            } else {
                vec![Op::WriteSysctl {
                    key: key.clone(),
                    value: value.clone(),
                }]
            }
        }
        Restore::File { path, content } | Restore::BirdConfig { path, content } => {
            let cur = now.map(|n| n.files.get(path).cloned().flatten());
            if cur.as_ref() == Some(content) {
                vec![]
            } else {
                match content {
                    None => vec![Op::RemoveFile { path: path.clone() }],
                    Some(c) if matches!(r, Restore::BirdConfig { .. }) => {
                        vec![Op::WriteBirdConfig {
                            path: path.clone(),
                            content: c.clone(),
                        }]
                    }
                    Some(c) => vec![Op::WriteFile {
                        path: path.clone(),
                        content: c.clone(),
                    }],
                }
            }
        }
        Restore::BirdReload { socket } => vec![Op::ReloadBird {
            socket: socket.clone(),
        }],
        Restore::Unit { unit, running } => {
            let cur = now.map(|n| n.bird_running);
            match (running, cur) {
                (true, Some(true)) | (false, Some(false)) => vec![],
                (true, _) => vec![Op::StartUnit { unit: unit.clone() }],
                (false, _) => vec![Op::StopUnit { unit: unit.clone() }],
            }
        }
        Restore::Nft { table } => {
            let cur = now.map(|n| n.nft.as_ref().and_then(|x| x.table.clone()));
            match table {
                None => match cur {
                    Some(None) => vec![],
                    _ => vec![Op::Nft {
                        change: NftChange::Delete {
                            diff: vec![format!(
                                "- table {TABLE_FAMILY} {TABLE_NAME} (it did not exist before)"
                            )],
                        },
                    }],
                },
                Some(doc) => {
                    let desired: nftables::schema::Nftables<'static> =
                        serde_json::from_value(doc.clone())
                            .map_err(|e| RollbackError::Nft(e.to_string()))?;
                    let want = TableContent::from_doc(&desired);
                    if cur.as_ref().is_some_and(|c| c.as_ref() == Some(&want)) {
                        vec![]
                    } else {
                        vec![Op::Nft {
                            change: NftChange::Replace {
                                desired,
                                diff: vec![format!(
                                    "  table {TABLE_FAMILY} {TABLE_NAME} back to its pre-apply content"
                                )],
                            },
                        }]
                    }
                }
            }
        }
    })
}

/// An nft JSON document that recreates a listed table (handles dropped).
fn table_document(t: &TableContent) -> serde_json::Value {
    let mut objects = vec![serde_json::json!({
        "table": {"family": TABLE_FAMILY, "name": TABLE_NAME}
    })];
    for c in &t.chains {
        objects.push(serde_json::json!({ "chain": c }));
    }
    for r in &t.rules {
        let mut rule = serde_json::json!({
            "family": TABLE_FAMILY, "table": TABLE_NAME, "chain": r.chain, "expr": r.expr,
        });
        if let Some(c) = &r.comment {
            rule["comment"] = serde_json::Value::String(c.clone());
        }
        objects.push(serde_json::json!({ "rule": rule }));
    }
    objects.extend(t.others.iter().cloned());
    serde_json::json!({ "nftables": objects })
}

#[cfg(test)]
mod tests;
