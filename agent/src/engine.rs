//! The pipeline, in one direction: observe → resolve → plan (pure) → apply →
//! verify (observe again; the plan must be empty). Shared by every verb.

use std::time::{Duration, Instant};

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
    /// After a part-way failure: what the rollback undid, one line per op.
    pub rolled_back: Vec<String>,
    /// This run found and settled the intents of a run that was killed.
    pub recovered: bool,
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
    #[error("refused before any change:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>, crate::error::ErrorKind),
    /// Another run holds what this one needs (a safe apply in its window).
    #[error("{0}")]
    Busy(String),
    #[error("safe-apply checkpoint (checkpoint.json beside the state file): {0}")]
    Checkpoint(String),
}

impl EngineError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            // A NIC the host facts name but the host lacks, a template that
            // does not render, a refused profile: fix the input.
            EngineError::Resolve(_) | EngineError::Refused(_) => crate::error::ErrorKind::Input,
            EngineError::Preflight(_, kind) => *kind,
            EngineError::System(e) => e.kind(),
            EngineError::Busy(_) => crate::error::ErrorKind::Transient,
            EngineError::Checkpoint(_) => crate::error::ErrorKind::System,
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
        bird_unit: target.bird.as_ref().map(|_| plan::BIRD_UNIT.to_string()),
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
                let text = sys.read_secret(f)?.map(crate::system::Secret::into_string).ok_or_else(|| {
                    EngineError::Refused(format!(
                        "uplink '{}': password_file {} does not exist (below --root); create it (mode 0600) or drop password_file",
                        u.name,
                        f.display()
                    ))
                })?;
                // One line; trailing newline from `echo` is not part of the secret.
                let password = text.trim_end_matches(['\n', '\r']).to_string();
                if !crate::bgp::names::quotable(&password) {
                    return Err(EngineError::Refused(format!(
                        "uplink '{}': password_file {} holds an empty password or one with a double quote or a line break, which BIRD's config cannot quote; write one line without '\"'",
                        u.name,
                        f.display()
                    )));
                }
                Some(password)
            }
        });
    }
    let in_netns = sys.in_netns();
    let log = crate::bgp::from_desired::log_target(&bgp.log, in_netns, |p| {
        sys.real_path(p).display().to_string()
    });
    Ok(BgpInputs {
        template,
        passwords,
        log,
        bird_dirs: if in_netns {
            crate::bgp::from_desired::netns_dirs(bgp)
        } else {
            Vec::new()
        },
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

/// How a run behaves beyond its mode.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// How long `apply` waits for another run's lock before failing
    /// (transient).
    pub lock_timeout: Duration,
    /// Undo this run's applied ops when one fails part-way (`--no-rollback`
    /// turns it off for debugging).
    pub rollback: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            lock_timeout: Duration::from_secs(60),
            rollback: true,
        }
    }
}

pub fn run(sys: &mut dyn System, d: &Desired, mode: Mode) -> Result<Report, EngineError> {
    run_with(sys, d, mode, &RunOptions::default())
}

pub fn run_with(
    sys: &mut dyn System,
    d: &Desired,
    mode: Mode,
    opts: &RunOptions,
) -> Result<Report, EngineError> {
    run_hooked(sys, d, mode, opts, None)
}

/// Called once preflight passed and before the first change, with the plan
/// and the observation it came from (the safe apply writes its checkpoint
/// here). Not called when there is nothing to change; an error stops the
/// run with nothing changed.
pub type BeforeApply<'a> =
    &'a mut dyn FnMut(&mut dyn System, &Target, &Plan, &Observed) -> Result<(), EngineError>;

/// [`run_with`], with a hook before the first change (apply only).
pub fn run_hooked(
    sys: &mut dyn System,
    d: &Desired,
    mode: Mode,
    opts: &RunOptions,
    before_apply: Option<BeforeApply>,
) -> Result<Report, EngineError> {
    if mode == Mode::Apply {
        // Held until `sys` is dropped: through verify and the gates.
        sys.lock(opts.lock_timeout)?;
    }
    let t0 = Instant::now();
    let (target, mut observed) = observe(sys, d, None)?;
    // A run killed after recording an intent: adopt what it created.
    let recovered = !observed.state.intents.is_empty();
    if recovered {
        settle_intents(&mut observed);
    }
    let mut durations = Durations {
        observe_ms: ms(t0),
        ..Durations::default()
    };
    let t1 = Instant::now();
    let plan = plan::plan(&target, &observed);
    durations.plan_ms = ms(t1);
    // Bad input the plan can already see (a sysctl this kernel lacks, a
    // value of the wrong type) fails every verb, before any change.
    let problems = preflight_pure(&plan, &observed);
    if !problems.is_empty() {
        return Err(EngineError::Preflight(
            problems,
            crate::error::ErrorKind::Input,
        ));
    }
    let mut report = Report {
        mode,
        remaining: None,
        applied_ops: 0,
        failure: None,
        durations,
        addr_proto_supported: observed.addr_proto_supported,
        plan,
        target: Target::default(),
        rolled_back: Vec::new(),
        recovered,
    };
    if mode != Mode::Apply {
        report.target = target;
        return Ok(report);
    }

    let t2 = Instant::now();
    // Everything the host itself can tell us before the first change (BIRD's
    // parser, paths in the way): a refusal here changes nothing.
    let mut problems = Vec::new();
    let mut kind = crate::error::ErrorKind::Input;
    for op in report.plan.ops() {
        if let Err(e) = sys.preflight(op) {
            // The input's fault unless the host itself failed (no BIRD binary).
            if e.kind() != crate::error::ErrorKind::Input {
                kind = e.kind();
            }
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        return Err(EngineError::Preflight(problems, kind));
    }
    if let Some(hook) = before_apply {
        if !report.plan.is_converged() {
            hook(sys, &target, &report.plan, &observed)?;
        }
    }
    // Write-ahead: what we are about to create is on disk before it exists.
    let intents = intents_of(report.plan.ops());
    let wrote_intents = !intents.is_empty();
    if wrote_intents {
        let mut s = observed.state.clone();
        s.intents = intents;
        sys.save_state(&s)?;
        failpoint("after-intents");
    }
    let mut applied: Vec<Op> = Vec::new();
    'items: for item in report.plan.changes() {
        for op in &item.ops {
            failpoint(&format!("before-op-{}", applied.len()));
            if let Err(e) = sys.apply(op) {
                report.failure = Some(Failure {
                    resource: format!("{} {}", item.kind, item.id),
                    error: e.to_string(),
                    kind: e.kind(),
                });
                break 'items;
            }
            applied.push(op.clone());
            failpoint(&format!("after-op-{}", applied.len() - 1));
        }
    }
    report.applied_ops = applied.len();
    let mut undone: Vec<Op> = Vec::new();
    if report.failure.is_some() && opts.rollback && !applied.is_empty() {
        let (ops, lines) = rollback(sys, &observed, &applied);
        undone = ops;
        report.rolled_back = lines;
    }
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
    let all: Vec<Op> = applied.iter().chain(undone.iter()).cloned().collect();
    let mut new_state = next_state(&observed.state, &all, &target, &after);
    new_state.intents = Default::default();
    if report.failure.is_some() && !report.rolled_back.is_empty() && undone_all(&report) {
        // Fully undone: the host is as before, and so is what we own.
        new_state = State {
            rules: after.rules.iter().copied().collect(),
            intents: Default::default(),
            ..observed.state.clone()
        };
    }
    // The on-disk state may still carry the intents of this run (or of a
    // killed one): always settle it.
    if new_state != observed.state || recovered || wrote_intents {
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

fn undone_all(r: &Report) -> bool {
    !r.rolled_back.iter().any(|l| l.starts_with("NOT undone"))
}

/// Undoes `applied` in reverse from what `before` observed; returns the ops
/// that were applied and one line per op for the report.
fn rollback(sys: &mut dyn System, before: &Observed, applied: &[Op]) -> (Vec<Op>, Vec<String>) {
    let mut done = Vec::new();
    let mut lines = Vec::new();
    for op in applied.iter().rev() {
        match plan::inverse::inverse(op, before) {
            Ok(inv) => {
                let mut ok = true;
                for i in &inv {
                    if let Err(e) = sys.apply(i) {
                        lines.push(format!("NOT undone {}: {e}", describe(op)));
                        ok = false;
                        break;
                    }
                    done.push(i.clone());
                }
                if ok {
                    lines.push(format!("undone {}", describe(op)));
                }
            }
            Err(e) => lines.push(format!("NOT undone {}: {e}", describe(op))),
        }
    }
    (done, lines)
}

/// One op for a person (no content: files may hold secrets).
pub fn describe(op: &Op) -> String {
    match op {
        Op::SetLink {
            ifname, mtu, up, ..
        } => format!(
            "link {ifname} ({}{})",
            if *up { "up" } else { "down" },
            mtu.map(|m| format!(", mtu {m}")).unwrap_or_default()
        ),
        Op::AddAddress { ifname, prefix, .. } => format!("add address {prefix} dev {ifname}"),
        Op::DelAddress { ifname, prefix, .. } => format!("delete address {prefix} dev {ifname}"),
        Op::AddRule { rule, .. } => format!("add rule {rule}"),
        Op::DelRule { rule, .. } => format!("delete rule {rule}"),
        Op::WriteSysctl { key, value } => format!("sysctl {key} = {value}"),
        Op::WriteFile { path, .. } => format!("write {}", path.display()),
        Op::RemoveFile { path } => format!("remove {}", path.display()),
        Op::WriteBirdConfig { path, .. } => format!("write BIRD config {}", path.display()),
        Op::ReloadBird { .. } => "reload BIRD".into(),
        Op::StartUnit { unit, .. } => format!("start {unit}"),
        Op::Nft { .. } => "nft table inet underlay".into(),
    }
}

/// Objects the ops will create, recorded before they exist.
fn intents_of<'a>(ops: impl Iterator<Item = &'a Op>) -> crate::state::Intents {
    let mut i = crate::state::Intents::default();
    for op in ops {
        match op {
            Op::AddAddress { ifname, prefix, .. } => {
                i.addresses.insert(OwnedAddress {
                    ifname: ifname.clone(),
                    prefix: *prefix,
                });
            }
            Op::WriteFile { path, .. } => {
                i.files.insert(path.clone());
            }
            Op::Nft { change } if !matches!(change, crate::nft::NftChange::Delete { .. }) => {
                i.nft_table = true;
            }
            _ => {}
        }
    }
    i
}

/// Adopts the intents a killed run left: each intended object that exists
/// is ours. Its files were read only if the plan wants them, so a file is
/// adopted when observed present.
fn settle_intents(o: &mut Observed) {
    let addresses: Vec<OwnedAddress> = o
        .addresses
        .iter()
        .map(|a| OwnedAddress {
            ifname: a.ifname.clone(),
            prefix: a.prefix,
        })
        .collect();
    let files: std::collections::BTreeSet<std::path::PathBuf> = o
        .files
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|(p, _)| p.clone())
        .collect();
    let nft = o.nft.as_ref().is_some_and(|n| n.table.is_some());
    o.state
        .adopt_intents(|a| addresses.contains(a), |f| files.contains(f), nft);
}

/// What the plan itself shows to be bad input.
fn preflight_pure(plan: &Plan, o: &Observed) -> Vec<String> {
    let mut problems = Vec::new();
    for op in plan.ops() {
        if let Op::AddRule { rule, .. } | Op::DelRule { rule, .. } = op {
            for (b, what) in &o.borrowed_rules {
                if (b.family, b.priority, b.table) == (rule.family, rule.priority, rule.table) {
                    problems.push(format!(
                        "a foreign rule '{what} lookup {} pref {}' carries underlay's protocol number at the priority and table of our rule {rule}: the kernel would refuse ours (EEXIST) or delete that one instead. Give it another protocol or priority, or move routing.rules to a free priority",
                        b.table, b.priority
                    ));
                }
            }
        }
        if let Op::WriteSysctl { key, value } = op {
            match o.sysctls.get(key) {
                Some(None) => problems.push(format!(
                    "sysctl {key} does not exist in this kernel (a misspelt key, or a module not loaded: `sysctl -a | grep {}`); fix the profile's [sysctl] section",
                    key.to_string().rsplit('.').next().unwrap_or_default()
                )),
                Some(Some(cur)) if is_numeric(cur) && !is_numeric(value) => problems.push(format!(
                    "sysctl {key}: found '{}', expected a number like the kernel's current value '{}'",
                    crate::profile::clip(value),
                    cur.trim()
                )),
                _ => {}
            }
        }
    }
    problems
}

fn is_numeric(v: &str) -> bool {
    let mut words = v.split_whitespace().peekable();
    words.peek().is_some() && words.all(|w| w.parse::<i64>().is_ok())
}

/// Test hook: `UNDERLAY_FAILPOINT=<name>` kills the process with SIGKILL at
/// that point of an apply (`after-intents`, `before-op-N`, `after-op-N`), the
/// way a power cut or an OOM kill would. The crash-recovery tests sweep it.
fn failpoint(name: &str) {
    if std::env::var_os("UNDERLAY_FAILPOINT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
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
