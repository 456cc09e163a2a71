//! Output: one line per resource for people, one JSON document for programs
//! (Ansible reads `changed`, the per-resource actions and the durations).

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::{Mode, Report};
use crate::error::ErrorKind;
use crate::gates::Outcome;
use crate::plan::{Action, Item, Plan};
use crate::profile::Problem;
use crate::source::SourceDoc;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub ok: usize,
    pub create: usize,
    pub update: usize,
    pub delete: usize,
}

impl Summary {
    pub fn of(plan: &Plan) -> Summary {
        let mut s = Summary::default();
        for i in &plan.items {
            match i.action {
                // A skip changes nothing; its reason is on its line.
                Action::Ok | Action::Skip => s.ok += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }

    pub fn changes(&self) -> usize {
        self.create + self.update + self.delete
    }
}

/// Who ran, for the headline.
pub struct Context<'a> {
    pub command: &'a str,
    pub host: &'a str,
    pub netns: Option<&'a str>,
    pub total_ms: f64,
}

fn line(out: &mut String, i: &Item, verbose: bool) {
    let _ = write!(
        out,
        "{:<7} {:<8} {}",
        i.action.to_string(),
        i.kind.to_string(),
        i.id
    );
    // A multi-line value (the nft table diff) goes below, indented.
    if let Some(a) = i
        .after
        .as_ref()
        .filter(|a| a.contains('\n') && i.action != Action::Ok)
    {
        out.push('\n');
        for l in a.lines() {
            let _ = writeln!(out, "          {l}");
        }
        return;
    }
    match (i.action, &i.before, &i.after) {
        (Action::Update, Some(b), Some(a)) => {
            let _ = write!(out, "  ({b} -> {a})");
        }
        (Action::Create, _, Some(a)) if verbose || a != &i.id => {
            let _ = write!(out, "  ({a})");
        }
        (Action::Ok, _, Some(a)) if verbose => {
            let _ = write!(out, "  ({a})");
        }
        (Action::Skip, _, Some(a)) => {
            let _ = write!(out, "  ({a})");
        }
        _ => {}
    }
    out.push('\n');
}

pub fn human(r: &Report, ctx: &Context, verbose: bool) -> String {
    let mut out = String::new();
    let ns = ctx
        .netns
        .map(|n| format!(" (netns {n})"))
        .unwrap_or_default();
    let _ = writeln!(out, "underlay {}: host {}{ns}", ctx.command, ctx.host);
    for i in &r.plan.items {
        line(&mut out, i, verbose);
    }
    let s = Summary::of(&r.plan);
    let d = &r.durations;
    let timing = format!(
        "{:.1} ms (observe {:.1}, plan {:.1}, apply {:.1}, verify {:.1})",
        ctx.total_ms, d.observe_ms, d.plan_ms, d.apply_ms, d.verify_ms
    );
    let counts = format!(
        "{} create, {} update, {} delete, {} ok",
        s.create, s.update, s.delete, s.ok
    );
    match r.mode {
        Mode::Plan | Mode::Status | Mode::Verify if s.changes() == 0 => {
            let _ = writeln!(out, "converged: nothing to do ({counts}) in {timing}");
        }
        Mode::Plan | Mode::Status => {
            let _ = writeln!(
                out,
                "{} changes pending ({counts}) in {timing}",
                s.changes()
            );
        }
        Mode::Verify => {
            let _ = writeln!(
                out,
                "NOT converged: {} resources differ ({counts}) in {timing}",
                s.changes()
            );
        }
        Mode::Apply => {
            if r.recovered {
                let _ = writeln!(
                    out,
                    "recovered: a killed earlier run left intents in the state file; what it created is owned now"
                );
            }
            if let Some(f) = &r.failure {
                let _ = writeln!(out, "FAILED at {}: {}", f.resource, f.error);
                if !r.rolled_back.is_empty() {
                    let _ = writeln!(out, "rolled back this run's changes:");
                    for l in &r.rolled_back {
                        let _ = writeln!(out, "  {l}");
                    }
                }
            }
            let remaining: Vec<&Item> = r.remaining.iter().flat_map(|p| p.changes()).collect();
            if r.failure.is_none() && !remaining.is_empty() {
                let _ = writeln!(out, "verification failed: still different after apply:");
                for i in &remaining {
                    out.push_str("  ");
                    line(&mut out, i, true);
                }
            }
            let verdict = if r.converged() {
                "converged"
            } else {
                "not converged"
            };
            let _ = writeln!(
                out,
                "{verdict}: {} changes applied ({counts}) in {timing}",
                r.applied_ops
            );
        }
    }
    if !r.addr_proto_supported {
        let _ = writeln!(
            out,
            "note: this kernel does not report address protocols (IFA_PROTO, Linux >= 6.3); address ownership comes from the state file alone"
        );
    }
    out
}

/// The version of the JSON document every verb prints with `--json`. Bump it
/// only for a change a consumer would notice (a field removed or retyped);
/// adding a field keeps it. `agent/schema/output.schema.json` describes it.
pub const SCHEMA_VERSION: u32 = 1;

/// The one JSON document: success and failure have the same top-level shape,
/// so Ansible and watch mode read `changed`, `failed`, `failure.kind` and
/// `exit_code` without knowing which verb ran.
#[derive(Debug, Clone, Serialize)]
pub struct Document {
    pub schema_version: u32,
    pub command: String,
    pub host: Option<String>,
    pub netns: Option<String>,
    pub changed: bool,
    pub failed: bool,
    /// One line for a person: what happened.
    pub msg: String,
    pub exit_code: i32,
    /// Whether the host matches the profile (null when the run never got to
    /// look: an input error).
    pub converged: Option<bool>,
    pub summary: Summary,
    /// Every managed resource with its action (plan order).
    pub resources: Vec<Item>,
    /// After apply, what verification still found different.
    pub remaining: Vec<Item>,
    pub failure: Option<FailureDoc>,
    /// The readiness gates, when they were evaluated (`--wait`, `status`).
    pub gates: Option<Outcome>,
    pub durations_ms: DurationsDoc,
    /// Whether the kernel reports address protocols (IFA_PROTO).
    pub address_protocol_supported: Option<bool>,
    /// After a part-way failure or a safe apply's rollback, what was undone
    /// (one line per op, `NOT undone ...` for one that could not be).
    pub rolled_back: Vec<String>,
    /// This run settled what a killed earlier run had left half-recorded.
    pub recovered: bool,
    /// A safe apply's rollback, and why: this run's own (exit 4), or the
    /// checkpoint of a safe apply that died in its window (`checkpoint`
    /// names it; the run then converged as asked).
    pub rollback: Option<crate::confirm::RollbackDoc>,
    /// Where the profile and the host facts came from (origin, sha256,
    /// whether the cache stood in for the server); empty when the run
    /// failed before reading them.
    pub sources: Vec<SourceDoc>,
    /// The cluster join (`join`, `apply --join`), when it was considered.
    pub join: Option<crate::join::JoinReport>,
    /// `status`: what the watcher (`underlay watch`) last reported; null
    /// for other verbs or when no watcher ever ran.
    pub watch: Option<crate::watch::status::WatchStatus>,
    /// Inside --netns with [bgp]: the command that starts the host BIRD on
    /// the config and control socket below --root (nothing supervises it there).
    pub bird_command: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailureDoc {
    pub kind: ErrorKind,
    pub message: String,
    /// The resource whose change failed (apply), when there is one.
    pub resource: Option<String>,
    /// Every input problem, located in its file.
    pub problems: Vec<ProblemDoc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemDoc {
    pub file: String,
    pub key: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl From<&Problem> for ProblemDoc {
    fn from(p: &Problem) -> ProblemDoc {
        ProblemDoc {
            file: p.file.display().to_string(),
            key: p.key.clone(),
            line: p.line,
            column: p.column,
            message: p.message.clone(),
        }
    }
}

/// Phase times in milliseconds; `wait` is the readiness wait, reported apart
/// from the converge so a 30 s wait never reads as a slow converge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DurationsDoc {
    pub observe: f64,
    pub plan: f64,
    pub apply: f64,
    pub verify: f64,
    pub wait: Option<f64>,
    pub total: f64,
}

impl Document {
    /// A run that got as far as a report (its gates, if any, were evaluated).
    pub fn of_report(r: &Report, ctx: &Context, gates: Option<&Outcome>, exit_code: i32) -> Self {
        let d = &r.durations;
        let summary = Summary::of(&r.plan);
        let failure = r.failure.as_ref().map(|f| FailureDoc {
            kind: f.kind,
            message: f.error.clone(),
            resource: Some(f.resource.clone()),
            problems: Vec::new(),
        });
        let gates_failed = gates.is_some_and(|g| !g.passed);
        let msg = match (&r.failure, r.mode) {
            (Some(f), _) => format!("failed at {}: {}", f.resource, f.error),
            (None, Mode::Plan) if summary.changes() > 0 => {
                format!("{} changes pending", summary.changes())
            }
            (None, Mode::Apply) if !r.converged() => {
                "verification failed: resources still differ after apply".to_string()
            }
            (None, Mode::Verify) if !r.converged() => {
                format!("not converged: {} resources differ", summary.changes())
            }
            (None, _) if gates_failed => format!(
                "not ready: {} failed",
                gates
                    .map(|g| g
                        .gates
                        .iter()
                        .filter(|x| !x.passed)
                        .map(|x| x.name)
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            (None, Mode::Apply) => format!("converged: {} changes applied", r.applied_ops),
            (None, _) => "converged".to_string(),
        };
        Document {
            schema_version: SCHEMA_VERSION,
            command: ctx.command.to_string(),
            host: Some(ctx.host.to_string()),
            netns: ctx.netns.map(str::to_string),
            changed: r.changed(),
            // Pending changes (plan exit 2) are not a failure.
            failed: matches!(exit_code, 1 | 3 | 4),
            msg,
            exit_code,
            converged: Some(r.converged()),
            summary,
            resources: r.plan.items.clone(),
            remaining: r
                .remaining
                .as_ref()
                .map(|p| p.changes().cloned().collect())
                .unwrap_or_default(),
            failure,
            gates: gates.cloned(),
            durations_ms: DurationsDoc {
                observe: d.observe_ms,
                plan: d.plan_ms,
                apply: d.apply_ms,
                verify: d.verify_ms,
                wait: gates.map(|g| g.elapsed_ms as f64),
                total: ctx.total_ms,
            },
            address_protocol_supported: Some(r.addr_proto_supported),
            rolled_back: r.rolled_back.clone(),
            recovered: r.recovered,
            rollback: None,
            sources: Vec::new(),
            join: None,
            watch: None,
            bird_command: None,
        }
    }

    /// Adds what a rollback did: `recovered` (a dead run's checkpoint, rolled
    /// back before this run converged) or `own` (this safe apply's, exit 4).
    pub fn with_rollback(
        mut self,
        recovered: Option<crate::confirm::RollbackDoc>,
        own: Option<crate::confirm::RollbackDoc>,
    ) -> Self {
        match (&own, &recovered) {
            (Some(rb), _) => self.msg = format!("rolled back: {}", rb.reason),
            (None, Some(rb)) => {
                let pid = rb.checkpoint.as_ref().map_or(0, |c| c.pid);
                self.msg = format!(
                    "{} (after rolling back the checkpoint pid {pid} left)",
                    self.msg
                );
            }
            (None, None) => {}
        }
        for r in recovered.iter().chain(own.iter()) {
            self.changed |= r.ops > 0;
            self.rolled_back.extend(r.lines.iter().cloned());
        }
        self.rollback = own.or(recovered);
        self
    }

    /// A run that failed before it had a report: bad input, a namespace
    /// that does not exist, a host that refused the first read.
    pub fn of_error(
        command: &str,
        netns: Option<&str>,
        kind: ErrorKind,
        message: &str,
        problems: &[Problem],
        total_ms: f64,
    ) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            command: command.to_string(),
            host: None,
            netns: netns.map(str::to_string),
            changed: false,
            failed: true,
            msg: message.lines().next().unwrap_or_default().to_string(),
            exit_code: 1,
            converged: None,
            summary: Summary::default(),
            resources: Vec::new(),
            remaining: Vec::new(),
            failure: Some(FailureDoc {
                kind,
                message: message.to_string(),
                resource: None,
                problems: problems.iter().map(ProblemDoc::from).collect(),
            }),
            gates: None,
            durations_ms: DurationsDoc {
                total: total_ms,
                ..DurationsDoc::default()
            },
            address_protocol_supported: None,
            rolled_back: Vec::new(),
            recovered: false,
            rollback: None,
            sources: Vec::new(),
            join: None,
            watch: None,
            bird_command: None,
        }
    }

    /// `show-sources`: where each item came from, nothing converged.
    pub fn of_sources(
        host: Option<&str>,
        netns: Option<&str>,
        msg: String,
        sources: Vec<SourceDoc>,
        total_ms: f64,
    ) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            command: "show-sources".into(),
            host: host.map(str::to_string),
            netns: netns.map(str::to_string),
            changed: false,
            failed: false,
            msg,
            exit_code: 0,
            converged: None,
            summary: Summary::default(),
            resources: Vec::new(),
            remaining: Vec::new(),
            failure: None,
            gates: None,
            durations_ms: DurationsDoc {
                total: total_ms,
                ..DurationsDoc::default()
            },
            address_protocol_supported: None,
            rolled_back: Vec::new(),
            recovered: false,
            rollback: None,
            sources,
            join: None,
            watch: None,
            bird_command: None,
        }
    }
}

pub fn rollback_human(rb: &crate::confirm::RollbackDoc) -> String {
    let mut out = String::new();
    let head = if rb.checkpoint.is_some() {
        "ROLLED BACK first"
    } else {
        "ROLLED BACK"
    };
    let _ = writeln!(out, "{head} in {:.1} ms: {}", rb.elapsed_ms, rb.reason);
    for l in &rb.lines {
        let _ = writeln!(out, "  {l}");
    }
    if !rb.complete {
        let _ = writeln!(
            out,
            "the checkpoint is kept: the next apply tries the rollback again"
        );
    }
    out
}

/// The ToR sessions and the gates. `waited`: the gates were waited for
/// (`--wait`); otherwise (`status`) they are shown as they stand.
pub fn gates_human(g: &crate::gates::Outcome, waited: bool) -> String {
    let mut out = String::new();
    for s in &g.sessions {
        let ok = s.bgp.starts_with("Established") && s.bfd.as_deref().is_none_or(|b| b == "Up");
        let bfd = s
            .bfd
            .as_deref()
            .map(|b| format!(", BFD {b}"))
            .unwrap_or_default();
        // Uplink name and BIRD protocol name side by side: `birdc show protocols all tor_a`.
        let _ = writeln!(
            out,
            "{:<7} session  {} -> BIRD {} ({} on {}): BGP {}{bfd}",
            if ok { "ok" } else { "down" },
            s.uplink,
            s.protocol,
            s.peer,
            s.ifname,
            s.bgp
        );
    }
    for gate in &g.gates {
        let _ = writeln!(
            out,
            "{:<7} gate     {}  ({})",
            if gate.passed { "ok" } else { "FAILED" },
            gate.name,
            gate.evidence
        );
    }
    let secs = g.elapsed_ms as f64 / 1e3;
    let failed: Vec<&str> = g
        .gates
        .iter()
        .filter(|x| !x.passed)
        .map(|x| x.name)
        .collect();
    let n = g.gates.len();
    let _ = match (g.passed, waited) {
        (true, true) => writeln!(
            out,
            "ready: all {n} readiness gates passed after waiting {secs:.1} s"
        ),
        (true, false) => writeln!(out, "ready: all {n} readiness gates pass"),
        (false, true) => writeln!(
            out,
            "NOT READY after waiting {secs:.1} s: {} failed",
            failed.join(", ")
        ),
        (false, false) => writeln!(out, "NOT READY: {} failed", failed.join(", ")),
    };
    out
}

/// The last line of `apply/verify --wait`: the converge and the readiness
/// wait apart, so a 30 s wait never reads as a slow converge.
pub fn totals_human(converge_ms: f64, wait_ms: u64, total_ms: f64) -> String {
    format!(
        "total {:.1} s: converge {converge_ms:.1} ms, readiness wait {:.1} s\n",
        total_ms / 1e3,
        wait_ms as f64 / 1e3
    )
}
