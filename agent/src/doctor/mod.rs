//! `underlay doctor`: read-only checks of a live host against the failure
//! modes of docs/background.md, each with a severity, its evidence and the fix.
//!
//! Same shape as the rest of the agent: [`collect`] gathers raw facts into a
//! [`Snapshot`] through the caller's [`System`] (no I/O of its own), [`checks`] turns a snapshot and an
//! optional profile view ([`Expect`]) into [`Finding`]s (pure), [`report`]
//! prints them for a person or a program. Nothing here changes the host.

pub mod checks;
pub mod collect;
pub mod parse;
pub mod report;
pub mod snapshot;
#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::desired::Desired;
use crate::system::System;

pub use checks::run_checks;
pub use snapshot::{Expect, ExpectedUplink, Snapshot, StateFacts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The check ran and found nothing wrong.
    Ok,
    /// The check does not apply here (no tunnel, no kubelet config, no profile).
    Skipped,
    /// A risk: traffic flows now, but a restart, a reconnect or an edge case breaks it.
    Warning,
    /// Breaks traffic now (or intermittently, which is worse).
    Failure,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Skipped => "skipped",
            Severity::Warning => "warning",
            Severity::Failure => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (documented in the report and the README).
    pub check: &'static str,
    pub severity: Severity,
    pub title: String,
    /// What the check saw: rule text, addresses, file lines, session states.
    pub evidence: Vec<String>,
    /// How to fix it; empty for ok and skipped findings.
    pub fix: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub findings: Vec<Finding>,
    /// Whether a profile was used (generic checks only otherwise).
    pub profile: bool,
    /// Facts that could not be collected (a tool missing, a file unreadable):
    /// the affected checks say so in their evidence.
    pub notes: Vec<String>,
}

impl DoctorReport {
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Ok)
    }

    /// 0 clean, 1 warnings, 2 failures.
    pub fn exit_code(&self) -> i32 {
        match self.worst() {
            Severity::Failure => 2,
            Severity::Warning => 1,
            Severity::Ok | Severity::Skipped => 0,
        }
    }

    pub fn human(&self) -> String {
        report::human(self)
    }

    /// Like [`DoctorReport::human`], with the evidence of passing checks too (`-v`).
    pub fn human_verbose(&self) -> String {
        report::human_with(self, true)
    }

    pub fn json(&self) -> serde_json::Value {
        report::json(self)
    }

    /// The finding of one check (tests and callers that care about one id).
    pub fn get(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

/// Collects facts through `sys` (the system the caller opened with `--root`,
/// `--state` and, inside `--netns`, in that namespace), then runs every
/// check. Never fails: what could not be read becomes a note and the
/// affected checks say what they could not see. `desired`, the validated
/// profile when one was given, makes the checks sharper (uplinks by NIC
/// match, service IP, host table, min_paths, BIRD socket).
pub fn run(sys: &mut dyn System, desired: Option<&Desired>) -> DoctorReport {
    let (snap, expect) = collect::collect(sys, desired);
    let findings = run_checks(&snap, expect.as_ref());
    DoctorReport {
        findings,
        profile: desired.is_some(),
        notes: snap.notes.clone(),
    }
}
