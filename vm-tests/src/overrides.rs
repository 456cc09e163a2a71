//! A broken BIRD template override must change nothing: `underlay apply`
//! renders `<root>/etc/underlay/templates/bird.conf.j2`, checks the result
//! with BIRD's parser before it writes anything, and exits 1 with the error.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::agent;
use crate::bird::Bird;
use crate::outcome::{Outcome, TestOptions};
use crate::plan::{Host, Lab};

/// The keyword BIRD is given in case (a); not a BIRD keyword.
const BAD_KEYWORD_LINE: &str = "frobnicate on;";
/// The variable case (b) names; not in the agent's template context.
const UNDEFINED_VAR: &str = "underlay_lab_no_such_variable";

/// Case (a): the agent's own rendering used as a template (it has no Jinja
/// syntax), with an unknown keyword after `router id`. Returns the template
/// and the 1-based line of the bad keyword.
fn bird_rejects(conf: &str) -> Result<(String, usize)> {
    let mut out = String::new();
    let mut line = None;
    for (i, l) in conf.lines().enumerate() {
        out.push_str(l);
        out.push('\n');
        if line.is_none() && l.starts_with("router id ") {
            out.push_str(BAD_KEYWORD_LINE);
            out.push('\n');
            line = Some(i + 2);
        }
    }
    let line = line.context("the agent's bird.conf has no `router id` line")?;
    Ok((out, line))
}

/// Case (b): the same with an undefined template variable on line 1.
fn undefined_variable(conf: &str) -> String {
    format!("# {{{{ {UNDEFINED_VAR} }}}}\n{conf}")
}

/// The host BIRD as the scenario must find it after every failed apply.
struct Snapshot {
    pid: Option<u32>,
    established: Vec<String>,
    conf: Vec<u8>,
}

fn snapshot(lab: &Lab, h: &Host) -> Result<Snapshot> {
    let hb = Bird::host(lab, h);
    let mut established: Vec<String> = hb
        .bgp_sessions()?
        .into_iter()
        .filter(|s| s.state == "Established")
        .map(|s| s.name)
        .collect();
    established.sort();
    Ok(Snapshot {
        pid: hb.running_pid(),
        established,
        conf: std::fs::read(&hb.conf).with_context(|| format!("read {}", hb.conf.display()))?,
    })
}

/// The error the agent reported: `failure.message` of its JSON,
/// else its output.
fn error_text(run: &agent::AgentRun) -> String {
    run.json["failure"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| run.text())
}

fn first_line(text: &str, needle: &str) -> String {
    let l = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or(text.lines().next().unwrap_or(""))
        .trim();
    let mut l = l.to_string();
    if l.len() > 240 {
        l.truncate(240);
        l.push('…');
    }
    l
}

pub fn bad_template_override(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let bin = agent::find_agent_bin()?;
    let profile = lab.profile.clone().unwrap_or_else(agent::default_profile);
    let h = lab.host(lab.hosts);
    let path = h.bird_template_override(lab);
    if path.exists() {
        bail!(
            "{} exists already; the scenario does not overwrite a template it did not write",
            path.display()
        );
    }
    let before = snapshot(lab, &h)?;
    o.check(
        before.pid.is_some() && before.established.len() >= 3,
        format!(
            "{}: before: host BIRD pid {}, Established: {}",
            h.name,
            before.pid.map(|p| p.to_string()).unwrap_or("none".into()),
            before.established.join(" ")
        ),
    );
    let conf_text = String::from_utf8_lossy(&before.conf).into_owned();
    let (a, bad_line) = bird_rejects(&conf_text)?;
    let cases = [
        ("a: BIRD parser rejects", a, bad_line),
        ("b: undefined variable", undefined_variable(&conf_text), 1),
    ];
    let result = (|| -> Result<()> {
        for (case, template, line) in &cases {
            std::fs::create_dir_all(path.parent().context("override path")?)?;
            std::fs::write(&path, template)?;
            let run = agent::run_apply(lab, &h, &bin, &profile)?;
            let text = run.text();
            o.check(
                run.code == Some(1),
                format!(
                    "{}: case {case}: `underlay apply --json` exit {} (want 1), changed: {}",
                    h.name,
                    run.code.map(|c| c.to_string()).unwrap_or("-".into()),
                    run.json["changed"]
                ),
            );
            let (ok, what) = if case.starts_with('a') {
                (
                    text.contains("syntax error")
                        && (text.contains(&format!("line {line}"))
                            || text.contains(&format!(":{line}:"))),
                    format!("BIRD's message with line {line}"),
                )
            } else {
                (
                    text.contains("bird.conf.j2") && text.contains("undefined"),
                    "the template name and \"undefined\"".to_string(),
                )
            };
            o.check(
                ok,
                format!(
                    "{}: case {case}: output has {what}: {}",
                    h.name,
                    first_line(
                        &error_text(&run),
                        if case.starts_with('a') {
                            "syntax error"
                        } else {
                            "undefined"
                        }
                    )
                ),
            );
            let after = snapshot(lab, &h)?;
            o.check(
                after.pid == before.pid && after.established == before.established,
                format!(
                    "{}: case {case}: host BIRD untouched: pid {} (was {}), Established: {}",
                    h.name,
                    after.pid.map(|p| p.to_string()).unwrap_or("none".into()),
                    before.pid.map(|p| p.to_string()).unwrap_or("none".into()),
                    after.established.join(" ")
                ),
            );
            o.check(
                after.conf == before.conf,
                format!(
                    "{}: case {case}: {} byte-identical ({} bytes)",
                    h.name,
                    h.bird_conf(lab).display(),
                    after.conf.len()
                ),
            );
        }
        Ok(())
    })();
    // Always remove the override, then the agent must find nothing to do.
    let _ = std::fs::remove_file(&path);
    result?;
    std::thread::sleep(Duration::from_millis(100));
    let run = agent::run_apply(lab, &h, &bin, &profile)?;
    o.check(
        run.code == Some(0) && run.json["changed"] == false,
        format!(
            "{}: override removed: `underlay apply` exit {}, changed: {}, {}",
            h.name,
            run.code.map(|c| c.to_string()).unwrap_or("-".into()),
            run.json["changed"],
            agent::summarize(&run.json)
        ),
    );
    let after = snapshot(lab, &h)?;
    o.check(
        after.conf == before.conf && after.pid == before.pid,
        format!(
            "{}: after the override test: bird.conf unchanged, same pid",
            h.name
        ),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_templates() {
        let conf = "# generated\n\nrouter id 10.10.0.12;\n\nprotocol device d {}\n";
        let (a, line) = bird_rejects(conf).unwrap();
        assert_eq!(line, 4);
        assert_eq!(a.lines().nth(line - 1), Some(BAD_KEYWORD_LINE));
        let b = undefined_variable(conf);
        assert!(b.starts_with("# {{ underlay_lab_no_such_variable }}\n"));
        assert!(bird_rejects("no router id here").is_err());
    }
}
