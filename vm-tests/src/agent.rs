//! Converging a lab host: the host facts file, running `underlay apply` in the
//! host namespace, checking that the agent really configured the host
//! (addresses, rules, sysctls and the host BIRD config it renders), and the
//! readiness gates of `underlay verify --wait`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::plan::{Host, Lab, EXPECTED_RULES, RULE_PROTOCOL};

/// The role profile in the repository, found from this crate's sources.
pub fn default_profile() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    repo.join("profiles/l3-ecmp-calico.toml")
}

/// `UNDERLAY_BIN`, else `underlay` next to this executable, else the
/// workspace's `target/{debug,release}/underlay`.
pub fn find_agent_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("UNDERLAY_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("UNDERLAY_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let mut tried = vec![];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join("underlay"));
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    for base in [ws, PathBuf::from(".")] {
        for profile in ["debug", "release"] {
            tried.push(base.join("target").join(profile).join("underlay"));
        }
    }
    if let Some(p) = tried.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    bail!(
        "the `underlay` agent binary was not found (tried UNDERLAY_BIN, {}); build it with \
         `cargo build --release -p underlay` (or set UNDERLAY_BIN)",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Host facts in the format of profiles/examples/host.toml.
pub fn render_host_facts(h: &Host) -> String {
    let mut s = format!(
        "# written by underlay-lab: host facts of lab host {name}\n\
         version = 1\n\n\
         hostname = \"{name}\"\n\
         zone = \"{zone}\"\n\
         rack = \"{rack}\"\n\
         asn = {asn}\n\n\
         service_ipv4 = \"{sip}/32\"\n",
        name = h.name,
        zone = h.zone,
        rack = h.rack,
        asn = h.asn,
        sip = h.service_ip,
    );
    for u in &h.uplinks {
        let _ = write!(
            s,
            "\n[[uplinks]]\nname = \"{}\"\nnic = {{ name = \"{}\" }}\nipv4 = {{ address = \"{}/31\", peer = \"{}\" }}\npeer_asn = {}\n",
            u.tor.name(),
            u.host_if,
            u.host_addr,
            u.tor_addr,
            u.tor.asn()
        );
    }
    // Only `--join` runs read it (the `join` scenario writes the token file).
    s.push_str(&crate::join::facts_section());
    s
}

/// Writes the host facts (when changed) and makes the host's --root.
pub fn write_facts(lab: &Lab, h: &Host) -> Result<()> {
    crate::bird::write_if_changed(&h.facts_file(lab), &render_host_facts(h))?;
    std::fs::create_dir_all(h.root(lab))?;
    Ok(())
}

/// One run of the agent: exit code, output, and the JSON document it printed
/// (`null` when stdout was not JSON).
pub struct AgentRun {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

impl AgentRun {
    /// stdout and stderr, for error messages and evidence.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout.trim(), self.stderr.trim())
            .trim()
            .to_string()
    }
}

/// The `--profile/--host/--netns/--root` arguments every agent verb gets.
pub fn common_args(lab: &Lab, h: &Host, profile: &Path) -> Vec<String> {
    let facts = h.facts_file(lab);
    let root = h.root(lab);
    [
        "--profile",
        &profile.to_string_lossy(),
        "--host",
        &facts.to_string_lossy(),
        "--netns",
        &h.netns,
        "--root",
        &root.to_string_lossy(),
    ]
    .map(|s| s.to_string())
    .to_vec()
}

/// Runs `underlay <verb> <common args> <extra>` and returns what it said,
/// whatever the exit code.
pub fn run_agent(
    lab: &Lab,
    h: &Host,
    agent: &Path,
    profile: &Path,
    verb: &str,
    extra: &[&str],
) -> Result<AgentRun> {
    let mut args = vec![verb.to_string()];
    args.extend(common_args(lab, h, profile));
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = std::process::Command::new(agent)
        .args(&args)
        .output()
        .with_context(|| format!("cannot run the agent {}", agent.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(AgentRun {
        command: format!("{} {}", agent.display(), args.join(" ")),
        code: out.status.code(),
        json: serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `underlay apply --json` for one host, whatever its outcome (scenarios that
/// expect a failure use this). Writes the host facts first.
pub fn run_apply(lab: &Lab, h: &Host, agent: &Path, profile: &Path) -> Result<AgentRun> {
    write_facts(lab, h)?;
    let run = run_agent(lab, h, agent, profile, "apply", &["--json"])?;
    std::fs::write(h.dir(lab).join("apply.json"), run.stdout.as_bytes())?;
    std::fs::write(h.dir(lab).join("apply.stderr"), run.stderr.as_bytes())?;
    Ok(run)
}

/// Runs `underlay apply` for one host and checks the result on the kernel and
/// that the agent rendered the host BIRD config. Returns the agent's JSON
/// report (or `null` if it printed none).
pub fn apply(lab: &Lab, h: &Host, agent: &Path, profile: &Path) -> Result<serde_json::Value> {
    let run = run_apply(lab, h, agent, profile)?;
    if run.code != Some(0) {
        bail!(
            "`{}` failed (exit {}) for {}: {}{}",
            run.command,
            run.code
                .map(|c| c.to_string())
                .unwrap_or("by signal".into()),
            h.name,
            if run.stderr.trim().is_empty() {
                "(nothing on stderr)"
            } else {
                run.stderr.trim()
            },
            if run.stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", run.stdout.trim())
            }
        );
    }
    let report = run.json;
    let missing = missing_agent_state(h)?;
    if !missing.is_empty() {
        bail!(
            "`underlay apply` exited 0 for {} but the host is not converged; missing: {}.\n  \
             The agent ({}) does not configure this (json output: {}).",
            h.name,
            missing.join("; "),
            agent.display(),
            if report.is_null() { "none" } else { "present" }
        );
    }
    let conf = h.bird_conf(lab);
    if !conf.is_file() {
        bail!(
            "`underlay apply` exited 0 for {} but did not write the host BIRD config {}: the lab \
             has no config of its own for the host BIRD any more. Check the profile's [bgp] \
             section (config_path = \"/etc/bird/bird.conf\") and the agent's output in {}",
            h.name,
            conf.display(),
            h.dir(lab).join("apply.json").display()
        );
    }
    Ok(report)
}

/// One line from the agent's `--json` report: how many resources changed.
pub fn summarize(report: &serde_json::Value) -> String {
    let Some(resources) = report["resources"].as_array() else {
        return "no JSON report".to_string();
    };
    let changed = resources
        .iter()
        .filter(|r| r["action"].as_str().is_some_and(|a| a != "ok"))
        .count();
    format!("{changed} of {} resources changed", resources.len())
}

/// What the agent must have done in the host namespace for the lab to work;
/// each missing item is described so a person sees what the agent lacks.
pub fn missing_agent_state(h: &Host) -> Result<Vec<String>> {
    let mut missing = vec![];
    let addrs = cmd::ip_json(&h.netns, &["addr", "show"])?;
    let has_addr = |dev: &str, addr: &str, plen: u64| {
        addrs.as_array().into_iter().flatten().any(|l| {
            l["ifname"] == dev
                && l["addr_info"].as_array().into_iter().flatten().any(|a| {
                    a["local"].as_str() == Some(addr) && a["prefixlen"].as_u64() == Some(plen)
                })
        })
    };
    let is_up = |dev: &str| {
        addrs.as_array().into_iter().flatten().any(|l| {
            l["ifname"] == dev
                && l["flags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|f| f == "UP")
        })
    };
    if !has_addr("lo", &h.service_ip.to_string(), 32) {
        missing.push(format!("service IP {}/32 on lo", h.service_ip));
    }
    for u in &h.uplinks {
        if !has_addr(&u.host_if, &u.host_addr.to_string(), 31) {
            missing.push(format!(
                "transit address {}/31 on {}",
                u.host_addr, u.host_if
            ));
        }
        if !is_up(&u.host_if) {
            missing.push(format!("uplink {} up", u.host_if));
        }
    }
    let rules = cmd::ip_json(&h.netns, &["rule", "show"])?;
    for (prio, table) in EXPECTED_RULES {
        let found = rules.as_array().into_iter().flatten().any(|r| {
            r["priority"].as_u64() == Some(u64::from(prio))
                && r["table"].as_str() == Some(table)
                && r["protocol"].as_str() == Some(RULE_PROTOCOL.to_string().as_str())
        });
        if !found {
            missing.push(format!(
                "ip rule priority {prio} lookup {table} protocol {RULE_PROTOCOL}"
            ));
        }
    }
    if cmd::read_sysctl(&h.netns, "net.ipv4.ip_forward")? != "1" {
        missing.push("sysctl net.ipv4.ip_forward=1".to_string());
    }
    Ok(missing)
}

/// One readiness gate as `underlay verify --wait --json` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gate {
    pub name: String,
    pub passed: bool,
    #[serde(default)]
    pub evidence: String,
}

/// A host's readiness after `up`: from the agent's gates, or from the lab's
/// own wait when the agent binary has no `verify --wait`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Readiness {
    /// `underlay verify --wait` or `lab` (the lab's own wait).
    pub by: String,
    pub passed: bool,
    /// Time to ready as the agent measured it (`gates.elapsed_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub const READY_BY_AGENT: &str = "underlay verify --wait";
pub const READY_BY_LAB: &str = "lab";

impl Readiness {
    pub fn file(lab: &Lab, h: &Host) -> PathBuf {
        h.dir(lab).join("readiness.json")
    }
    pub fn save(&self, lab: &Lab, h: &Host) -> Result<()> {
        std::fs::write(
            Readiness::file(lab, h),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        Ok(())
    }
    pub fn load(lab: &Lab, h: &Host) -> Option<Readiness> {
        serde_json::from_str(&std::fs::read_to_string(Readiness::file(lab, h)).ok()?).ok()
    }
    /// The failed gates (or the note), for an error message.
    pub fn failures(&self) -> String {
        let failed: Vec<String> = self
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| format!("{}: {}", g.name, g.evidence))
            .collect();
        let mut parts = failed;
        parts.extend(self.note.clone());
        parts.join("; ")
    }
}

/// What one `underlay verify --wait` run came to.
pub enum VerifyWait {
    /// The agent binary does not know `--wait` yet (clap's exit 2,
    /// "unexpected argument"): the caller falls back to its own wait.
    Unsupported(String),
    Done(Readiness),
}

/// Starts `underlay verify --wait --wait-timeout SECS --json` for one host
/// (the hosts converge concurrently, so every host's run starts at once).
pub fn spawn_verify_wait(
    lab: &Lab,
    h: &Host,
    agent: &Path,
    profile: &Path,
    timeout: std::time::Duration,
) -> Result<std::process::Child> {
    let mut args = vec!["verify".to_string()];
    args.extend(common_args(lab, h, profile));
    args.extend(
        [
            "--wait",
            "--wait-timeout",
            &timeout.as_secs().max(1).to_string(),
            "--json",
        ]
        .map(String::from),
    );
    std::process::Command::new(agent)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the agent {}", agent.display()))
}

pub fn finish_verify_wait(lab: &Lab, h: &Host, child: std::process::Child) -> Result<VerifyWait> {
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(h.dir(lab).join("verify.json"), stdout.as_bytes())?;
    std::fs::write(h.dir(lab).join("verify.stderr"), stderr.as_bytes())?;
    Ok(parse_verify_wait(out.status.code(), &stdout, &stderr))
}

/// Interprets `underlay verify --wait --json`: exit 0 ready, 3 a gate (or the
/// host) failed, 2 with "unexpected argument" = no `--wait` in this binary.
pub fn parse_verify_wait(code: Option<i32>, stdout: &str, stderr: &str) -> VerifyWait {
    if code == Some(2) && stderr.contains("unexpected argument") {
        let line = stderr
            .lines()
            .find(|l| l.contains("unexpected argument"))
            .unwrap_or("unexpected argument")
            .trim()
            .to_string();
        return VerifyWait::Unsupported(line);
    }
    let json: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    let g = &json["gates"];
    let gates: Vec<Gate> = g["gates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| serde_json::from_value(x.clone()).ok())
        .collect();
    let passed = code == Some(0) && g["passed"].as_bool().unwrap_or(true);
    let note = if g.is_null() {
        Some(format!(
            "exit {}; no \"gates\" in the JSON output{}",
            code.map(|c| c.to_string()).unwrap_or("by signal".into()),
            json["failure"]["message"]
                .as_str()
                .map(|e| format!(": {e}"))
                .or_else(|| (!stderr.trim().is_empty()).then(|| format!(": {}", stderr.trim())))
                .unwrap_or_default()
        ))
    } else if code != Some(0) && code != Some(3) {
        Some(format!(
            "exit {}: {}",
            code.map(|c| c.to_string()).unwrap_or("by signal".into()),
            json["failure"]["message"].as_str().unwrap_or(stderr.trim())
        ))
    } else {
        None
    };
    VerifyWait::Done(Readiness {
        by: READY_BY_AGENT.to_string(),
        passed,
        elapsed_ms: g["elapsed_ms"].as_u64(),
        gates,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_follow_the_example_format() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", 2).unwrap();
        let f = render_host_facts(&lab.host(2));
        assert!(f.contains("hostname = \"h2\""));
        assert!(f.contains("asn = 65102"));
        assert!(f.contains("service_ipv4 = \"10.10.0.12/32\""));
        assert!(f.contains("nic = { name = \"eth1\" }"));
        assert!(f.contains("ipv4 = { address = \"172.30.5.1/31\", peer = \"172.30.5.0\" }"));
        assert!(f.contains("peer_asn = 65002"));
        assert!(f.contains("rack = \"r02\""));
        assert!(f.contains("\n[join]\napi_servers = [\"10.10.255.1:6443\"]\n"));
        assert!(f.contains("token_file = \"/etc/underlay/secrets/join-token\""));
    }

    #[test]
    fn verify_wait_without_wait_support_is_detected() {
        let err = "error: unexpected argument '--wait' found\n\nUsage: underlay verify";
        match parse_verify_wait(Some(2), "", err) {
            VerifyWait::Unsupported(l) => assert!(l.contains("--wait"), "{l}"),
            VerifyWait::Done(_) => panic!("not detected"),
        }
    }

    #[test]
    fn verify_wait_gates_are_read() {
        let out = r#"{"changed":false,"gates":{"passed":false,"elapsed_ms":60012,"gates":[{"name":"uplinks-up","passed":true,"evidence":"eth0, eth1 up"},{"name":"bgp-established","passed":false,"evidence":"tor_b Active"}]}}"#;
        let VerifyWait::Done(r) = parse_verify_wait(Some(3), out, "") else {
            panic!("unsupported?")
        };
        assert!(!r.passed);
        assert_eq!(r.elapsed_ms, Some(60012));
        assert_eq!(r.gates.len(), 2);
        assert_eq!(r.failures(), "bgp-established: tor_b Active");
        let ok = r#"{"gates":{"passed":true,"elapsed_ms":812,"gates":[]}}"#;
        let VerifyWait::Done(r) = parse_verify_wait(Some(0), ok, "") else {
            panic!("unsupported?")
        };
        assert!(r.passed && r.note.is_none());
    }
}
