//! Safe apply (`underlay apply --confirm SECS`): keep a change only when the
//! host is still on the fabric afterwards.
//!
//! Before the first change the run writes a checkpoint next to the state
//! file: the pre-apply value of every object the plan touches
//! ([`crate::rollback::record`], taken from the run's own observation) and
//! the pre-apply state file. Then it applies, and waits up to SECS for the
//! readiness gates (and an optional TCP probe through the fabric). When they
//! pass, the checkpoint is removed and the change is kept. When they do not,
//! or an op fails, the run rolls its objects back to the checkpoint, BIRD
//! re-reads its old config, and the run exits [`EXIT_ROLLED_BACK`].
//!
//! A run that dies inside that window (kill -9, power cut) leaves the
//! checkpoint behind; the next `apply` (the boot unit runs one) rolls it back
//! first, then converges as asked. Only recorded objects are touched, and
//! only objects a plan touches are recorded: foreign objects never are.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::EngineError;
use crate::observed::Observed;
use crate::plan::{Plan, Target};
use crate::rollback::{self, Restore};
use crate::state::State;
use crate::system::{Query, System};

/// Exit code of a safe apply that rolled back (README, "Exit codes").
pub const EXIT_ROLLED_BACK: i32 = 4;
pub const CHECKPOINT_VERSION: u32 = 1;

/// What a safe apply leaves on disk for the length of its confirm window.
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
    /// The host BIRD's control socket, to reload it after a rollback.
    pub bird_socket: Option<PathBuf>,
    /// The state file before the apply.
    pub state: State,
    /// Pre-apply values, in plan order.
    pub records: Vec<Restore>,
}

/// What a rollback did, for the JSON document (`rollback`) and people.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackDoc {
    /// Why: the failing gates with their evidence, the failed op, or the
    /// run that died in its window.
    pub reason: String,
    /// Set when this run rolled back a checkpoint another run left.
    pub checkpoint: Option<CheckpointInfo>,
    /// Each object that had to be put back, as it is now again.
    pub restored: Vec<String>,
    /// Ops the rollback applied.
    pub ops: usize,
    /// Objects that could not be restored (the checkpoint is then kept, so
    /// the next run tries again).
    pub errors: Vec<String>,
    pub elapsed_ms: f64,
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

/// The checkpoint for a plan about to be applied (pure).
pub fn checkpoint(target: &Target, plan: &Plan, pre: &Observed, confirm_secs: u64) -> Checkpoint {
    Checkpoint {
        version: CHECKPOINT_VERSION,
        pid: std::process::id(),
        created_unix: now_unix(),
        confirm_secs,
        protocol: target.protocol,
        bird_socket: target.bird.as_ref().map(|b| b.socket.clone()),
        state: pre.state.clone(),
        records: rollback::record(plan.ops(), pre),
    }
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

/// Puts every recorded object back to its recorded value (only those that
/// differ now), restores the state file, and removes the checkpoint when
/// every object came back. Best effort: one object that cannot be restored
/// does not stop the others.
pub fn roll_back(
    sys: &mut dyn System,
    cp: &Checkpoint,
    reason: String,
) -> Result<RollbackDoc, EngineError> {
    let t0 = Instant::now();
    let links = sys.links()?;
    let mut q = Query {
        protocol: cp.protocol,
        bird_socket: cp.bird_socket.clone(),
        ..Query::default()
    };
    for r in &cp.records {
        match r {
            Restore::Sysctl { key, .. } => {
                q.sysctls.insert(key.clone());
            }
            Restore::File { path, .. } | Restore::BirdConfig { path, .. } => {
                q.files.insert(path.clone());
            }
            Restore::Nft { .. } => q.nft = true,
            _ => {}
        }
    }
    let now = sys.observe(links, cp.state.clone(), &q)?;
    let steps = rollback::plan_rollback_steps(&cp.records, &now)?;
    let mut doc = RollbackDoc {
        reason,
        checkpoint: None,
        restored: Vec::new(),
        ops: 0,
        errors: Vec::new(),
        elapsed_ms: 0.0,
    };
    for step in steps {
        let mut ok = true;
        for op in &step.ops {
            if let Err(e) = sys.apply(op) {
                doc.errors.push(format!("restoring {}: {e}", step.what));
                ok = false;
                break;
            }
            doc.ops += 1;
        }
        if ok {
            doc.restored.push(step.what);
        }
    }
    sys.save_state(&cp.state)?;
    if doc.errors.is_empty() {
        sys.save_checkpoint(None)?;
    }
    doc.elapsed_ms = (t0.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{self, Mode};
    use crate::profile::load_str;
    use crate::system::fake::FakeSystem;

    const ROLE: &str = include_str!("../../profiles/l3-ecmp-calico.toml");
    const HOST: &str = r#"version = 1
hostname = "h1"
asn = 65101
service_ipv4 = "10.10.0.11/32"
[[uplinks]]
name = "tor-a"
nic = { name = "eth0" }
ipv4 = { address = "172.30.0.1/31", peer = "172.30.0.0" }
peer_asn = 65001
"#;

    fn fake() -> FakeSystem {
        let mut f = FakeSystem::with_nics(&["eth0"]);
        for k in [
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
            "net.ipv4.fib_multipath_hash_policy",
            "net.ipv6.fib_multipath_hash_policy",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.all.arp_ignore",
            "net.ipv4.conf.all.arp_announce",
            "net.ipv4.conf.eth0.rp_filter",
        ] {
            f.sysctls
                .insert(crate::desired::SysctlKey::parse(k).unwrap(), "0".into());
        }
        f
    }

    /// A safe apply that dies after its ops: the checkpoint stays, and
    /// recovery restores the host and the state file, then forgets it.
    #[test]
    fn a_checkpoint_left_by_a_dead_run_is_rolled_back_once() {
        let mut f = fake();
        let before = (f.addresses.clone(), f.rules.clone(), f.files.clone());
        let d = load_str("role.toml", ROLE, "host.toml", HOST).unwrap();
        let mut hook = |sys: &mut dyn System, t: &Target, p: &Plan, o: &Observed| {
            let mut cp = checkpoint(t, p, o, 30);
            cp.pid = 999_999; // the run that will "die"
            save(sys, &cp)
        };
        let r = engine::run_with(&mut f, &d, Mode::Apply, Some(&mut hook)).unwrap();
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert!(r.changed() && f.checkpoint.is_some());
        assert_ne!(f.addresses, before.0);

        // While its run lives, the checkpoint is not ours to roll back.
        f.live_pids.push(999_999);
        assert!(matches!(recover(&mut f), Err(EngineError::Busy(_))));
        f.live_pids.clear();

        let doc = recover(&mut f).unwrap().expect("a rollback");
        assert!(doc.errors.is_empty(), "{:?}", doc.errors);
        assert_eq!(doc.checkpoint.as_ref().unwrap().pid, 999_999);
        assert!(doc.ops > 0);
        assert_eq!(
            (f.addresses.clone(), f.rules.clone(), f.files.clone()),
            before
        );
        assert_eq!(f.state, Some(State::default()));
        assert!(f.checkpoint.is_none());
        assert!(recover(&mut f).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_checkpoint_is_an_error_that_says_what_to_do() {
        let mut f = fake();
        f.checkpoint = Some("{ not json".into());
        let e = recover(&mut f).unwrap_err().to_string();
        assert!(e.contains("remove the file"), "{e}");
    }
}
