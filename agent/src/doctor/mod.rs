//! `underlay doctor`: read-only checks of a live host against the failure
//! modes of docs/background.md, each with a severity, its evidence and the fix.
//!
//! Same shape as the rest of the agent: [`collect`] gathers raw facts into a
//! [`Snapshot`] (the only module with I/O), [`checks`] turns a snapshot and an
//! optional profile view ([`Expect`]) into [`Finding`]s (pure), [`report`]
//! prints them for a person or a program. Nothing here changes the host.

pub mod checks;
pub mod collect;
pub mod parse;
pub mod report;
pub mod snapshot;

use std::path::PathBuf;

use serde::Serialize;

use crate::desired::Desired;

pub use checks::run_checks;
pub use snapshot::{Expect, ExpectedUplink, Snapshot};

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

/// What `main` passes in; it has already entered `--netns`.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// `--root` prefix for files (kubelet, networkd, NetworkManager, the profile's BIRD paths).
    pub root: PathBuf,
    /// The validated profile, when one was given: better checks (uplinks by NIC
    /// match, service IP, host table, min_paths, BIRD socket).
    pub desired: Option<Desired>,
    /// Running inside `--netns`.
    pub in_netns: bool,
}

impl Default for DoctorOptions {
    /// The real host: root `/`, no profile, not in a namespace.
    fn default() -> Self {
        DoctorOptions {
            root: PathBuf::from("/"),
            desired: None,
            in_netns: false,
        }
    }
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

/// Collects facts from the current network namespace and files below
/// `opts.root`, then runs every check. Never fails: what could not be read
/// becomes a note and the affected checks say what they could not see.
pub fn run(opts: &DoctorOptions) -> DoctorReport {
    let (snap, expect) = collect::collect(opts);
    let findings = run_checks(&snap, expect.as_ref());
    DoctorReport {
        findings,
        profile: opts.desired.is_some(),
        notes: snap.notes.clone(),
    }
}
