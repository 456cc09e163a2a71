//! Output: one line per resource for people, one JSON document for programs
//! (Ansible reads `changed`, the per-resource actions and the durations).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;

use crate::engine::{Mode, Report};
use crate::plan::{Action, Item, Plan};

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
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
            if let Some(f) = &r.failure {
                let _ = writeln!(out, "FAILED at {}: {}", f.resource, f.error);
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

pub fn json(r: &Report, ctx: &Context) -> serde_json::Value {
    let d = &r.durations;
    json!({
        "command": ctx.command,
        "host": ctx.host,
        "netns": ctx.netns,
        "changed": r.changed(),
        "converged": r.converged(),
        "exit_code": r.exit_code(),
        "summary": Summary::of(&r.plan),
        "resources": r.plan.items,
        "remaining": r.remaining.as_ref().map(|p| p.changes().collect::<Vec<_>>()),
        "failure": r.failure,
        "durations_ms": {
            "observe": d.observe_ms,
            "plan": d.plan_ms,
            "apply": d.apply_ms,
            "verify": d.verify_ms,
            "total": ctx.total_ms,
        },
        "address_protocol_supported": r.addr_proto_supported,
    })
}

pub fn gates_human(g: &crate::gates::Outcome) -> String {
    let mut out = String::new();
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
    if g.passed {
        let _ = writeln!(
            out,
            "ready: all {} readiness gates passed in {secs:.1} s",
            g.gates.len()
        );
    } else {
        let failed: Vec<&str> = g
            .gates
            .iter()
            .filter(|x| !x.passed)
            .map(|x| x.name)
            .collect();
        let _ = writeln!(
            out,
            "NOT READY after {secs:.1} s: {} failed",
            failed.join(", ")
        );
    }
    out
}
