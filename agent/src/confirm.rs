//! Safe apply (`underlay apply --confirm SECS`): keep a change only when the
//! host is still on the fabric afterwards.
//!
//! Before the first change the run writes a checkpoint next to the state
//! file: the inverse of every planned op ([`crate::plan::inverse`], from the
//! run's own observation, which holds the pre-apply truth of everything we
//! own), in the order that undoes the plan, and the pre-apply state file. Then it applies, and waits up to SECS for the
//! readiness gates (and an optional TCP probe through the fabric). When they
//! pass, the checkpoint is removed and the change is kept. When they do not,
//! or an op fails, the run rolls its objects back to the checkpoint, BIRD
//! re-reads its old config, and the run exits [`EXIT_ROLLED_BACK`].
//!
//! A run that dies inside that window (kill -9, power cut) leaves the
//! checkpoint behind; the next `apply` (the boot unit runs one) rolls it back
//! first, then converges as asked. Rolling back applies only the inverse ops
//! whose object is not already back ([`pending`] against a fresh
//! observation), so it is idempotent: it works whether the dead run got
//! through all of its ops, some, or none, and again after a rollback that
//! itself was interrupted. Only objects a plan touches are in a checkpoint:
//! foreign objects never are.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::desired::{FileOwner, RuleSpec, SysctlKey};
use crate::engine::{describe, EngineError};
use crate::nft::{NftChange, TableContent};
use crate::observed::{Observed, ObservedAddress, Scope};
use crate::plan::{inverse, normalize_sysctl, Op, Plan, Target};
use crate::state::State;
use crate::system::{Query, System};

/// Exit code of a safe apply that rolled back (README, "Exit codes").
pub const EXIT_ROLLED_BACK: i32 = 4;
pub const CHECKPOINT_VERSION: u32 = 1;

/// What a safe apply leaves on disk for the length of its confirm window
/// (mode 0600: the pre-apply BIRD config may hold BGP passwords).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// The run that wrote it: while it lives, it owns the window.
    pub pid: u32,
    pub created_unix: u64,
    pub confirm_secs: u64,
    /// Our rule protocol number (rules are observed by it).
    pub protocol: u8,
    /// The host BIRD's control socket (to see whether BIRD runs).
    pub bird_socket: Option<PathBuf>,
    /// The state file before the apply.
    pub state: State,
    /// The inverse of every planned op, in the order that undoes the plan.
    pub undo: Vec<SavedOp>,
}

/// An [`Op`] as the checkpoint stores it: with the content `Op`'s own
/// serialization leaves out (file text, the nft document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SavedOp {
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
    WriteBirdConfig {
        path: PathBuf,
        owner: FileOwner,
        content: String,
        #[serde(default)]
        dirs: Vec<PathBuf>,
    },
    ReloadBird {
        socket: PathBuf,
    },
    StartUnit {
        unit: String,
        #[serde(default)]
        wait: bool,
    },
    /// `table: None` deletes our table; `Some` puts this nft document back.
    Nft {
        table: Option<serde_json::Value>,
    },
}

impl From<&Op> for SavedOp {
    fn from(op: &Op) -> SavedOp {
        match op.clone() {
            Op::SetLink {
                index,
                ifname,
                mtu,
                up,
            } => SavedOp::SetLink {
                index,
                ifname,
                mtu,
                up,
            },
            Op::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            } => SavedOp::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            },
            Op::DelAddress {
                index,
                ifname,
                prefix,
            } => SavedOp::DelAddress {
                index,
                ifname,
                prefix,
            },
            Op::AddRule { rule, protocol } => SavedOp::AddRule { rule, protocol },
            Op::DelRule { rule, protocol } => SavedOp::DelRule { rule, protocol },
            Op::WriteSysctl { key, value } => SavedOp::WriteSysctl { key, value },
            Op::WriteFile { path, content } => SavedOp::WriteFile { path, content },
            Op::RemoveFile { path } => SavedOp::RemoveFile { path },
            Op::WriteBirdConfig {
                path,
                owner,
                content,
                dirs,
            } => SavedOp::WriteBirdConfig {
                path,
                owner,
                content,
                dirs,
            },
            Op::ReloadBird { socket } => SavedOp::ReloadBird { socket },
            Op::StartUnit { unit, wait } => SavedOp::StartUnit { unit, wait },
            Op::Nft { change } => SavedOp::Nft {
                table: match change {
                    NftChange::Create { desired, .. } | NftChange::Replace { desired, .. } => {
                        serde_json::to_value(&desired).ok()
                    }
                    NftChange::Ok | NftChange::Delete { .. } => None,
                },
            },
        }
    }
}

impl SavedOp {
    fn to_op(&self) -> Result<Op, EngineError> {
        Ok(match self.clone() {
            SavedOp::SetLink {
                index,
                ifname,
                mtu,
                up,
            } => Op::SetLink {
                index,
                ifname,
                mtu,
                up,
            },
            SavedOp::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            } => Op::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            },
            SavedOp::DelAddress {
                index,
                ifname,
                prefix,
            } => Op::DelAddress {
                index,
                ifname,
                prefix,
            },
            SavedOp::AddRule { rule, protocol } => Op::AddRule { rule, protocol },
            SavedOp::DelRule { rule, protocol } => Op::DelRule { rule, protocol },
            SavedOp::WriteSysctl { key, value } => Op::WriteSysctl { key, value },
            SavedOp::WriteFile { path, content } => Op::WriteFile { path, content },
            SavedOp::RemoveFile { path } => Op::RemoveFile { path },
            SavedOp::WriteBirdConfig {
                path,
                owner,
                content,
                dirs,
            } => Op::WriteBirdConfig {
                path,
                owner,
                content,
                dirs,
            },
            SavedOp::ReloadBird { socket } => Op::ReloadBird { socket },
            SavedOp::StartUnit { unit, wait } => Op::StartUnit { unit, wait },
            SavedOp::Nft { table: None } => Op::Nft {
                change: NftChange::Delete {
                    diff: vec!["- table inet underlay (it did not exist before)".into()],
                },
            },
            SavedOp::Nft { table: Some(doc) } => Op::Nft {
                change: NftChange::Replace {
                    desired: serde_json::from_value(doc).map_err(|e| {
                        EngineError::Checkpoint(format!("its nftables document: {e}"))
                    })?,
                    diff: vec!["  table inet underlay back to its pre-apply content".into()],
                },
            },
        })
    }
}

/// What a rollback did, for the JSON document (`rollback`) and people.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackDoc {
    /// Why: the failing gates with their evidence, the failed op or
    /// verification, or the run that died in its window.
    pub reason: String,
    /// Set when this run rolled back a checkpoint another run left.
    pub checkpoint: Option<CheckpointInfo>,
    /// Ops the rollback applied (objects already as before are left alone).
    pub ops: usize,
    /// Every op was undone; when not, the checkpoint is kept for the next run.
    pub complete: bool,
    pub elapsed_ms: f64,
    /// One line per op (`undone ...`, `NOT undone ...: why`): the
    /// document's `rolled_back`.
    #[serde(skip)]
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    pub pid: u32,
    pub created_unix: u64,
    pub confirm_secs: u64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The checkpoint for a plan about to be applied (pure): the inverse of
/// every planned op, last op first. An op that cannot be undone exactly
/// refuses the safe apply before anything changed.
pub fn checkpoint(
    target: &Target,
    plan: &Plan,
    pre: &Observed,
    confirm_secs: u64,
) -> Result<Checkpoint, EngineError> {
    let ops: Vec<&Op> = plan.ops().collect();
    let mut undo = Vec::new();
    for op in ops.iter().rev() {
        let inv = inverse::inverse(op, pre).map_err(|e| {
            EngineError::Refused(format!(
                "safe apply cannot undo {}: {e}; nothing was changed (apply without --confirm to go ahead)",
                describe(op)
            ))
        })?;
        undo.extend(inv.iter().map(SavedOp::from));
    }
    // BIRD re-reads its restored config once, after everything it refers to
    // (the service IP, transit addresses) is back.
    let (reloads, mut undo): (Vec<SavedOp>, Vec<SavedOp>) = undo
        .into_iter()
        .partition(|o| matches!(o, SavedOp::ReloadBird { .. }));
    undo.extend(reloads.into_iter().take(1));
    Ok(Checkpoint {
        version: CHECKPOINT_VERSION,
        pid: std::process::id(),
        created_unix: now_unix(),
        confirm_secs,
        protocol: target.protocol,
        bird_socket: target.bird.as_ref().map(|b| b.socket.clone()),
        state: pre.state.clone(),
        undo,
    })
}

pub fn save(sys: &mut dyn System, cp: &Checkpoint) -> Result<(), EngineError> {
    let text = serde_json::to_string_pretty(cp)
        .map_err(|e| EngineError::Checkpoint(format!("serializing: {e}")))?;
    sys.save_checkpoint(Some(&format!("{text}\n")))?;
    Ok(())
}

/// The change is kept: forget the checkpoint.
pub fn confirm(sys: &mut dyn System) -> Result<(), EngineError> {
    sys.save_checkpoint(None)?;
    Ok(())
}

pub fn load(sys: &mut dyn System) -> Result<Option<Checkpoint>, EngineError> {
    let Some(text) = sys.load_checkpoint()? else {
        return Ok(None);
    };
    let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
        EngineError::Checkpoint(format!(
            "unreadable ({e}); it was left by a safe apply that did not finish. Check the host \
             (underlay plan), then remove the file to go on"
        ))
    })?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(EngineError::Checkpoint(format!(
            "version {} is not supported by this build",
            cp.version
        )));
    }
    Ok(Some(cp))
}

/// Rolls back a checkpoint that a run which died in its confirm window left
/// behind; `None` when there is none. Refuses while its run is alive.
pub fn recover(sys: &mut dyn System) -> Result<Option<RollbackDoc>, EngineError> {
    let Some(cp) = load(sys)? else {
        return Ok(None);
    };
    if cp.pid != std::process::id() && sys.underlay_running(cp.pid) {
        return Err(EngineError::Busy(format!(
            "a safe apply (pid {}) is in its {} s confirm window; wait for it to confirm or roll back",
            cp.pid, cp.confirm_secs
        )));
    }
    let reason = format!(
        "a safe apply (pid {}, {} s window) ended before its change was confirmed: \
         rolled back to the state before it",
        cp.pid, cp.confirm_secs
    );
    let mut doc = roll_back(sys, &cp, reason)?;
    doc.checkpoint = Some(CheckpointInfo {
        pid: cp.pid,
        created_unix: cp.created_unix,
        confirm_secs: cp.confirm_secs,
    });
    Ok(Some(doc))
}

/// Applies the checkpoint's undo ops that are still needed (against a fresh
/// observation), restores the state file, and removes the checkpoint when
/// every op went through. Best effort: one op the host refuses does not stop
/// the others.
pub fn roll_back(
    sys: &mut dyn System,
    cp: &Checkpoint,
    reason: String,
) -> Result<RollbackDoc, EngineError> {
    let t0 = Instant::now();
    let undo: Vec<Op> = cp
        .undo
        .iter()
        .map(SavedOp::to_op)
        .collect::<Result<_, _>>()?;
    let links = sys.links()?;
    let mut q = Query {
        protocol: cp.protocol,
        bird_socket: cp.bird_socket.clone(),
        ..Query::default()
    };
    for op in &undo {
        match op {
            Op::WriteSysctl { key, .. } => {
                q.sysctls.insert(key.clone());
            }
            Op::WriteFile { path, .. }
            | Op::RemoveFile { path }
            | Op::WriteBirdConfig { path, .. } => {
                q.files.insert(path.clone());
            }
            Op::Nft { .. } => q.nft = true,
            _ => {}
        }
    }
    let now = sys.observe(links, cp.state.clone(), &q)?;
    let mut doc = RollbackDoc {
        reason,
        checkpoint: None,
        ops: 0,
        complete: true,
        elapsed_ms: 0.0,
        lines: Vec::new(),
    };
    for op in pending(&undo, &now) {
        match sys.apply(&op) {
            Ok(()) => {
                doc.ops += 1;
                doc.lines.push(format!("undone: {}", describe(&op)));
            }
            Err(e) => {
                doc.complete = false;
                doc.lines
                    .push(format!("NOT undone: {}: {e}", describe(&op)));
            }
        }
    }
    sys.save_state(&cp.state)?;
    if doc.complete {
        sys.save_checkpoint(None)?;
    }
    doc.elapsed_ms = (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Ok(doc)
}

/// The undo ops whose object is not already as the op leaves it, judged
/// against `now` as the earlier ops in the list change it (pure). Undoing
/// a run that got through only some of its ops (or none) touches only what
/// it changed.
pub fn pending(undo: &[Op], now: &Observed) -> Vec<Op> {
    let mut sim = now.clone();
    let mut out = Vec::new();
    for op in undo {
        if needed(op, &sim) {
            simulate(op, &mut sim);
            out.push(op.clone());
        }
    }
    out
}

fn has_address(o: &Observed, index: u32, prefix: &IpNet) -> Option<Scope> {
    o.addresses
        .iter()
        .find(|a| a.index == index && a.prefix == *prefix)
        .map(|a| a.scope)
}

fn needed(op: &Op, o: &Observed) -> bool {
    match op {
        Op::SetLink { index, mtu, up, .. } => o
            .link_by_index(*index)
            .is_some_and(|l| l.up != *up || mtu.is_some_and(|m| m != l.mtu)),
        Op::AddAddress {
            index,
            prefix,
            scope,
            ..
        } => has_address(o, *index, prefix) != Some(*scope),
        Op::DelAddress { index, prefix, .. } => has_address(o, *index, prefix).is_some(),
        Op::AddRule { rule, .. } => !o.rules.contains(rule),
        Op::DelRule { rule, .. } => o.rules.contains(rule),
        Op::WriteSysctl { key, value } => {
            o.sysctls
                .get(key)
                .cloned()
                .flatten()
                .map(|v| normalize_sysctl(&v))
                != Some(normalize_sysctl(value))
        }
        Op::WriteFile { path, content } | Op::WriteBirdConfig { path, content, .. } => {
            o.files.get(path).cloned().flatten().as_ref() != Some(content)
        }
        Op::RemoveFile { path } => o.files.get(path).is_some_and(Option::is_some),
        // BIRD re-reads its (restored) config whenever it runs: cheap, and
        // right even when the dead run wrote the file but never reloaded.
        Op::ReloadBird { .. } => o.bird_running,
        Op::StartUnit { .. } => !o.bird_running,
        Op::Nft { change } => {
            let have = o.nft.as_ref().and_then(|n| n.table.as_ref());
            match change {
                NftChange::Ok => false,
                NftChange::Delete { .. } => have.is_some(),
                NftChange::Create { desired, .. } | NftChange::Replace { desired, .. } => {
                    have != Some(&TableContent::from_doc(desired))
                }
            }
        }
    }
}

/// What `op` does to the observation (enough for [`needed`] of later ops).
fn simulate(op: &Op, o: &mut Observed) {
    match op {
        Op::AddAddress {
            index,
            ifname,
            prefix,
            scope,
            protocol,
        } => {
            o.addresses
                .retain(|a| !(a.index == *index && a.prefix == *prefix));
            o.addresses.push(ObservedAddress {
                index: *index,
                ifname: ifname.clone(),
                prefix: *prefix,
                scope: *scope,
                protocol: Some(*protocol),
            });
        }
        Op::DelAddress { index, prefix, .. } => {
            o.addresses
                .retain(|a| !(a.index == *index && a.prefix == *prefix));
        }
        Op::AddRule { rule, .. } => o.rules.push(*rule),
        Op::DelRule { rule, .. } => o.rules.retain(|r| r != rule),
        Op::WriteSysctl { key, value } => {
            o.sysctls.insert(key.clone(), Some(value.clone()));
        }
        Op::WriteFile { path, content } | Op::WriteBirdConfig { path, content, .. } => {
            o.files.insert(path.clone(), Some(content.clone()));
        }
        Op::RemoveFile { path } => {
            o.files.insert(path.clone(), None);
        }
        Op::SetLink { index, mtu, up, .. } => {
            if let Some(l) = o.links.iter_mut().find(|l| l.index == *index) {
                l.up = *up;
                if let Some(m) = mtu {
                    l.mtu = *m;
                }
            }
        }
        Op::Nft { change } => {
            let table = match change {
                NftChange::Create { desired, .. } | NftChange::Replace { desired, .. } => {
                    Some(TableContent::from_doc(desired))
                }
                _ => None,
            };
            o.nft = Some(crate::nft::ObservedNat { table });
        }
        Op::ReloadBird { .. } | Op::StartUnit { .. } => {}
    }
}

#[cfg(test)]
mod tests;
