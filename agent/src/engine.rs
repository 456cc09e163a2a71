//! The pipeline, in one direction: observe → resolve → plan (pure) → apply →
//! verify (observe again; the plan must be empty). Shared by every verb.

use std::time::Instant;

use serde::Serialize;

use crate::desired::Desired;
use crate::observed::Observed;
use crate::plan::{self, resolve, BgpInputs, Op, Plan, ResolveError, Target, Template};
use crate::state::{OwnedAddress, State};
use crate::system::{Query, System, SystemError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Plan,
    Apply,
    Verify,
    Status,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Durations {
    pub observe_ms: f64,
    pub plan_ms: f64,
    pub apply_ms: f64,
    pub verify_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub resource: String,
    pub error: String,
    pub kind: crate::error::ErrorKind,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    /// The plan as first computed (what apply set out to do).
    pub plan: Plan,
    /// After apply: the changes verification still found (empty when converged).
    pub remaining: Option<Plan>,
    pub applied_ops: usize,
    pub failure: Option<Failure>,
    pub durations: Durations,
    pub addr_proto_supported: bool,
    /// The resolved target of the last observation (the readiness gates
    /// are built from it, so callers never observe again for it).
    pub target: Target,
}

impl Report {
    pub fn changed(&self) -> bool {
        self.applied_ops > 0
    }

    pub fn converged(&self) -> bool {
        match &self.remaining {
            Some(r) => self.failure.is_none() && r.is_converged(),
            None => self.plan.is_converged(),
        }
    }

    /// plan: 0 nothing to do, 2 changes pending; apply: 0 converged, 1 an
    /// op failed, 3 verification failed; verify: 0 or 3; status: 0.
    pub fn exit_code(&self) -> i32 {
        match self.mode {
            Mode::Plan => {
                if self.plan.is_converged() {
                    0
                } else {
                    2
                }
            }
            Mode::Apply if self.failure.is_some() => 1,
            Mode::Apply | Mode::Verify if !self.converged() => 3,
            _ => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("{0}")]
    Refused(String),
    /// Another run holds what this one needs (a safe apply in its window).
    #[error("{0}")]
    Busy(String),
    #[error("safe-apply checkpoint (checkpoint.json beside the state file): {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Rollback(#[from] crate::rollback::RollbackError),
}

impl EngineError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            // A NIC the host facts name but the host lacks, a template that
            // does not render, a refused profile: fix the input.
            EngineError::Resolve(_) | EngineError::Refused(_) => crate::error::ErrorKind::Input,
            EngineError::System(e) => e.kind(),
            EngineError::Busy(_) => crate::error::ErrorKind::Transient,
            EngineError::Checkpoint(_) | EngineError::Rollback(_) => {
                crate::error::ErrorKind::System
            }
        }
    }
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Observes and resolves: the target for this host and what is there now.
pub fn observe(
    sys: &mut dyn System,
    d: &Desired,
    state: Option<State>,
) -> Result<(Target, Observed), EngineError> {
    let links = sys.links()?;
    let inputs = read_bgp_inputs(sys, d)?;
    let target = resolve(d, &links, &inputs)?;
    let state = match state {
        Some(s) => s,
        None => sys.load_state()?,
    };
    let (sysctls, files) = target.observe_scope(&state);
    let q = Query {
        protocol: target.protocol,
        sysctls,
        files,
        bird_socket: target.bird.as_ref().map(|b| b.socket.clone()),
        nft: target.nft.is_some() || state.nft_table,
    };
    let observed = sys.observe(links, state, &q)?;
    Ok((target, observed))
}

/// The BIRD template override (when `<templates_dir>/bird.conf.j2` exists)
/// and the uplinks' BGP passwords (from their password_file).
pub fn read_bgp_inputs(sys: &mut dyn System, d: &Desired) -> Result<BgpInputs, EngineError> {
    let Some(bgp) = &d.bgp else {
        return Ok(BgpInputs::default());
    };
    let path = bgp.templates_dir.join(crate::bgp::render::TEMPLATE_NAME);
    let template = sys.read_file(&path)?.map(|text| Template {
        label: path.display().to_string(),
        text,
    });
    let mut passwords = Vec::new();
    for u in &d.uplinks {
        passwords.push(match &u.password_file {
            None => None,
            Some(f) => {
                let text = sys.read_file(f)?.ok_or_else(|| {
                    EngineError::Refused(format!(
                        "uplink '{}': password_file {} does not exist (below --root); create it (mode 0600) or drop password_file",
                        u.name,
                        f.display()
                    ))
                })?;
                // One line; trailing newline from `echo` is not part of the secret.
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
        });
    }
    Ok(BgpInputs {
        template,
        passwords,
    })
}

/// Refuses sysctls that are not per network namespace when running inside
/// one: writing them would change the machine outside the namespace.
pub fn check_netns_safe(d: &Desired) -> Result<(), EngineError> {
    let global: Vec<String> = d
        .sysctl_global
        .iter()
        .filter(|(k, _)| !k.is_per_netns())
        .map(|(k, _)| k.to_string())
        .collect();
    if global.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Refused(format!(
            "sysctl {} is not per network namespace; with --netns underlay writes only net.* keys, \
             so it would change the whole machine. Remove it from the profile to run in a namespace",
            global.join(", ")
        )))
    }
}

pub fn run(sys: &mut dyn System, d: &Desired, mode: Mode) -> Result<Report, EngineError> {
    run_with(sys, d, mode, None)
}

/// Called between plan and the first change with the plan and the
/// observation it came from (the safe apply records its checkpoint here).
/// Not called when there is nothing to change; an error stops the run
/// before anything changed.
pub type BeforeApply<'a> =
    &'a mut dyn FnMut(&mut dyn System, &Target, &Plan, &Observed) -> Result<(), EngineError>;

/// [`run`], with a hook before the first change (apply only).
pub fn run_with(
    sys: &mut dyn System,
    d: &Desired,
    mode: Mode,
    before_apply: Option<BeforeApply>,
) -> Result<Report, EngineError> {
    let t0 = Instant::now();
    let (target, observed) = observe(sys, d, None)?;
    let mut durations = Durations {
        observe_ms: ms(t0),
        ..Durations::default()
    };
    let t1 = Instant::now();
    let plan = plan::plan(&target, &observed);
    durations.plan_ms = ms(t1);
    let mut report = Report {
        mode,
        remaining: None,
        applied_ops: 0,
        failure: None,
        durations,
        addr_proto_supported: observed.addr_proto_supported,
        plan,
        target: Target::default(),
    };
    if mode != Mode::Apply {
        report.target = target;
        return Ok(report);
    }

    if let Some(hook) = before_apply {
        if !report.plan.is_converged() {
            hook(sys, &target, &report.plan, &observed)?;
        }
    }
    let t2 = Instant::now();
    let mut applied: Vec<Op> = Vec::new();
    'items: for item in report.plan.changes() {
        for op in &item.ops {
            if let Err(e) = sys.apply(op) {
                report.failure = Some(Failure {
                    resource: format!("{} {}", item.kind, item.id),
                    error: e.to_string(),
                    kind: e.kind(),
                });
                break 'items;
            }
            applied.push(op.clone());
        }
    }
    report.applied_ops = applied.len();
    report.durations.apply_ms = ms(t2);

    // Record ownership even after a partial apply, so nothing we created is
    // ever orphaned; then verify against the saved state.
    let t3 = Instant::now();
    let (target, after) = if applied.is_empty() && report.failure.is_none() {
        // Nothing changed: what we observed is still the truth (this keeps a
        // no-op reconcile at one observation).
        (target, observed.clone())
    } else {
        observe(sys, d, Some(observed.state.clone()))?
    };
    let new_state = next_state(&observed.state, &applied, &target, &after);
    if new_state != observed.state {
        sys.save_state(&new_state)?;
    }
    let after = Observed {
        state: new_state,
        ..after
    };
    report.remaining = Some(plan::plan(&target, &after));
    report.durations.verify_ms = ms(t3);
    report.target = target;
    Ok(report)
}

/// What we own after a run: addresses we added (minus those we removed, or
/// that someone removed), our rules as the kernel has them, files we wrote,
/// and the sysctls the profile manages now.
pub fn next_state(old: &State, applied: &[Op], target: &Target, after: &Observed) -> State {
    let mut s = old.clone();
    s.version = crate::state::STATE_VERSION;
    for op in applied {
        match op {
            Op::AddAddress { ifname, prefix, .. } => {
                s.addresses.insert(OwnedAddress {
                    ifname: ifname.clone(),
                    prefix: *prefix,
                });
            }
            Op::DelAddress { ifname, prefix, .. } => {
                s.addresses.remove(&OwnedAddress {
                    ifname: ifname.clone(),
                    prefix: *prefix,
                });
            }
            Op::WriteFile { path, .. } => {
                s.files.insert(path.clone());
            }
            Op::RemoveFile { path } => {
                s.files.remove(path);
            }
            Op::Nft { change } => {
                s.nft_table = !matches!(change, crate::nft::NftChange::Delete { .. })
            }
            _ => {}
        }
    }
    // An owned address gone from a link that still exists was removed by
    // someone else: forget it rather than claim a future one.
    s.addresses.retain(|o| {
        let link_exists = after.links.iter().any(|l| l.name == o.ifname);
        !link_exists
            || after
                .addresses
                .iter()
                .any(|a| a.ifname == o.ifname && a.prefix == o.prefix)
    });
    s.rules = after.rules.iter().copied().collect();
    s.sysctls = target.sysctls.iter().cloned().collect();
    s
}
