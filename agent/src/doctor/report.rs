//! Output for a person (grouped by severity, each problem with its evidence
//! and fix) and for a program (`--json`).

use serde_json::json;

use super::{DoctorReport, Severity};

pub fn human(r: &DoctorReport) -> String {
    human_with(r, false)
}

/// `verbose`: also the evidence of ok and skipped findings.
pub fn human_with(r: &DoctorReport, verbose: bool) -> String {
    let mut out = String::new();
    let mode = if r.profile {
        "with the profile"
    } else {
        "generic checks, no profile"
    };
    out.push_str(&format!("underlay doctor ({mode})\n"));
    for (sev, heading) in [
        (Severity::Failure, "FAILURES (break traffic)"),
        (Severity::Warning, "WARNINGS (risks)"),
    ] {
        let group: Vec<_> = r.findings.iter().filter(|f| f.severity == sev).collect();
        if group.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{heading}\n"));
        for f in group {
            out.push_str(&format!("  [{}] {}\n", f.check, f.title));
            for e in &f.evidence {
                out.push_str(&format!("      saw: {e}\n"));
            }
            if !f.fix.is_empty() {
                out.push_str(&format!("      fix: {}\n", f.fix));
            }
        }
    }
    let ok: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Ok)
        .collect();
    if !ok.is_empty() {
        out.push_str("\nOK\n");
        for f in ok {
            out.push_str(&format!("  [{}] {}\n", f.check, f.title));
            if verbose {
                for e in &f.evidence {
                    out.push_str(&format!("      saw: {e}\n"));
                }
            }
        }
    }
    let skipped: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Skipped)
        .collect();
    if !skipped.is_empty() {
        out.push_str("\nSKIPPED (does not apply here)\n");
        for f in skipped {
            out.push_str(&format!("  [{}] {}\n", f.check, f.title));
        }
    }
    if !r.notes.is_empty() {
        out.push_str("\nNOT COLLECTED\n");
        for n in &r.notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "\n{} failure(s), {} warning(s), {} ok, {} skipped: exit {}\n",
        count(Severity::Failure),
        count(Severity::Warning),
        count(Severity::Ok),
        count(Severity::Skipped),
        r.exit_code()
    ));
    out
}

pub fn json(r: &DoctorReport) -> serde_json::Value {
    let count = |s| r.findings.iter().filter(|f| f.severity == s).count();
    json!({
        "command": "doctor",
        "profile": r.profile,
        "exit_code": r.exit_code(),
        "worst": r.worst(),
        "summary": {
            "failure": count(Severity::Failure),
            "warning": count(Severity::Warning),
            "ok": count(Severity::Ok),
            "skipped": count(Severity::Skipped),
        },
        "findings": r.findings,
        "notes": r.notes,
    })
}
