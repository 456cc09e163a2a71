//! What a scenario returns and the knobs it gets. Its own module so the
//! scenario registry (`scenarios`) and the modules whose scenarios it lists
//! (`tablefight`, `overrides`) both depend on it, and not on each other.

use std::time::Duration;

pub struct Outcome {
    pub pass: bool,
    pub evidence: Vec<String>,
}

impl Outcome {
    pub fn new() -> Outcome {
        Outcome {
            pass: true,
            evidence: vec![],
        }
    }
    pub fn check(&mut self, ok: bool, line: String) {
        self.pass &= ok;
        self.evidence
            .push(format!("{} {line}", if ok { "ok  " } else { "FAIL" }));
    }
    /// A measurement that is evidence but not a pass/fail criterion.
    pub fn info(&mut self, line: String) {
        self.evidence.push(format!("info {line}"));
    }
}

/// Knobs of `underlay-lab test`.
pub struct TestOptions {
    /// Churn duration of `no-table-fight`.
    pub churn: Duration,
    /// Churn duration of `table-fight-shared-main`.
    pub fight: Duration,
}
