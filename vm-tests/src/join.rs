//! The `join` scenario: `underlay apply --wait --join` on every host, with
//! `vm-tests/kubeadm-standin` as kubeadm (no kubeadm can be installed here;
//! the stand-in records its argv, environment, config file and, at the moment
//! it was invoked, the host BIRD's `show protocols`, and never contacts a
//! cluster). With one ToR session disabled the gate fails and the stand-in is
//! never invoked; with both Established it is invoked exactly once per host,
//! with node-ip = that host's service IP; a second run does not invoke it
//! again; the token appears in no stream.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::agent;
use crate::bird::Bird;
use crate::plan::{Host, Lab};
use crate::scenarios::{Outcome, TestOptions};

/// The host facts' `join.token_file` (below the host's --root).
pub const TOKEN_FILE: &str = "/etc/underlay/secrets/join-token";
/// The lab has no API server; the stand-in never contacts one.
pub const API_SERVER: &str = "10.10.255.1:6443";
/// Any pin will do for the stand-in; the format is what the agent checks.
pub const CA_HASH: &str = "sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
/// Seconds each `apply --wait --join` may wait for the gates.
const WAIT_S: &str = "30";

/// This host's bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn token(h: &Host) -> String {
    format!("lab{:03}.secret{:010}", h.index, h.index)
}

/// The `[join]` section of a lab host's facts.
pub fn facts_section() -> String {
    format!(
        "\n[join]\napi_servers = [\"{API_SERVER}\"]\nca_cert_hashes = [\"{CA_HASH}\"]\ntoken_file = \"{TOKEN_FILE}\"\n"
    )
}

pub fn standin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubeadm-standin")
}

fn records_dir(lab: &Lab, h: &Host) -> PathBuf {
    h.dir(lab).join("kubeadm-standin")
}

fn invocations(lab: &Lab, h: &Host) -> Vec<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(records_dir(lab, h))
        .map(|d| {
            d.flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Puts the host in the state of one that never joined (the scenario may run
/// again on a lab that is up): the stand-in's kubelet.conf, our marker in the
/// state file and earlier records go, as after a `kubeadm reset`.
fn reset(lab: &Lab, h: &Host) -> Result<()> {
    let root = h.root(lab);
    let _ = std::fs::remove_file(root.join("etc/kubernetes/kubelet.conf"));
    let _ = std::fs::remove_dir_all(records_dir(lab, h));
    let state = root.join("var/lib/underlay/state.json");
    if let Ok(text) = std::fs::read_to_string(&state) {
        let mut v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(o) = v.as_object_mut() {
            if o.remove("joined").is_some() {
                std::fs::write(&state, serde_json::to_string_pretty(&v)? + "\n")?;
            }
        }
    }
    let token_file = root.join(TOKEN_FILE.trim_start_matches('/'));
    std::fs::create_dir_all(token_file.parent().context("token dir")?)?;
    std::fs::write(&token_file, format!("{}\n", token(h)))?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn spawn_apply_join(
    lab: &Lab,
    h: &Host,
    bin: &Path,
    profile: &Path,
    wait_s: &str,
) -> Result<Child> {
    agent::write_facts(lab, h)?;
    let ctl = Bird::host(lab, h).ctl;
    Command::new(bin)
        .args([
            "apply",
            "--wait",
            "--wait-timeout",
            wait_s,
            "--join",
            "--kubeadm",
        ])
        .arg(standin())
        .args(["--json", "-vv"])
        .args(agent::common_args(lab, h, profile))
        .env("KUBEADM_STANDIN_DIR", records_dir(lab, h))
        .env("KUBEADM_STANDIN_ROOT", h.root(lab))
        .env("KUBEADM_STANDIN_EXIT", "0")
        .env(
            "KUBEADM_STANDIN_SNAPSHOT",
            format!("birdc -s {} show protocols", ctl.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run the agent {}", bin.display()))
}

struct Run {
    code: Option<i32>,
    json: serde_json::Value,
    stdout: String,
    stderr: String,
}

fn finish(child: Child) -> Result<Run> {
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(Run {
        code: out.status.code(),
        json: serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn summary(r: &Run) -> String {
    format!(
        "exit {}, join {}: {}",
        r.code.map_or("by signal".into(), |c| c.to_string()),
        r.json["join"]["status"].as_str().unwrap_or("?"),
        r.json["join"]["message"]
            .as_str()
            .or(r.json["failure"]["message"].as_str())
            .unwrap_or(r.stderr.trim())
    )
}

/// BGP protocols of `show protocols` output that are Established.
fn established(snapshot: &str) -> Vec<String> {
    snapshot
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("BGP") && l.contains("Established"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub fn join(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let bin = agent::find_agent_bin()?;
    let profile = lab.profile.clone().unwrap_or_else(agent::default_profile);
    let hosts = lab.hosts();
    for h in &hosts {
        reset(lab, h)?;
    }
    // Everything printed or recorded, for the token grep.
    let mut streams: Vec<(String, String, String)> = Vec::new();

    // A gate fails: one ToR session of the first host disabled.
    let h1 = &hosts[0];
    let hb = Bird::host(lab, h1);
    hb.birdc(&["disable", "tor_b"])?;
    let r = finish(spawn_apply_join(lab, h1, &bin, &profile, "3")?)?;
    hb.birdc(&["enable", "tor_b"])?;
    let gate = r.json["gates"]["gates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == "bgp-established")
        .cloned()
        .unwrap_or_default();
    o.check(
        r.code == Some(3) && gate["passed"] == false && invocations(lab, h1).is_empty(),
        format!(
            "{}: tor_b disabled: {}; bgp-established: {}; stand-in invoked {} times (want 0)",
            h1.name,
            summary(&r),
            gate["evidence"].as_str().unwrap_or("?"),
            invocations(lab, h1).len()
        ),
    );
    streams.push((token(h1), "gate-fail stdout".into(), r.stdout));
    streams.push((token(h1), "gate-fail stderr".into(), r.stderr));

    // Every host at once, as at a fleet's first boot.
    let mut children = Vec::new();
    for h in &hosts {
        children.push(spawn_apply_join(lab, h, &bin, &profile, WAIT_S)?);
    }
    for (h, child) in hosts.iter().zip(children) {
        let r = finish(child)?;
        let inv = invocations(lab, h);
        o.check(
            r.code == Some(0) && r.json["join"]["status"] == "joined" && inv.len() == 1,
            format!(
                "{}: apply --wait --join: {}; stand-in invoked {} time(s) (want 1)",
                h.name,
                summary(&r),
                inv.len()
            ),
        );
        streams.push((token(h), format!("{} stdout", h.name), r.stdout));
        streams.push((token(h), format!("{} stderr", h.name), r.stderr));
        let Some(rec) = inv.first() else { continue };
        let read = |f: &str| std::fs::read_to_string(rec.join(f)).unwrap_or_default();
        let config = read("config");
        let node_ip = format!("- name: \"node-ip\"\n      value: \"{}\"", h.service_ip);
        o.check(
            config.contains(&node_ip),
            format!(
                "{}: the stand-in's config has node-ip = {} (the service IP)",
                h.name, h.service_ip
            ),
        );
        let up = established(&read("snapshot"));
        o.check(
            up.iter().any(|p| p == "tor_a") && up.iter().any(|p| p == "tor_b"),
            format!(
                "{}: Established when kubeadm was invoked (host BIRD): {}",
                h.name,
                up.join(", ")
            ),
        );
        let argv = read("argv");
        let config_path = h.root(lab).join("run/underlay/kubeadm-join.yaml");
        o.check(
            argv == format!("join\n--config\n{}\n", config_path.display())
                && read("config.mode").trim() == "600 0"
                && !config_path.exists(),
            format!(
                "{}: argv {:?}, config mode {}, config removed after the run: {}",
                h.name,
                argv.lines().collect::<Vec<_>>(),
                read("config.mode").trim(),
                !config_path.exists()
            ),
        );
        streams.push((token(h), format!("{} stand-in argv", h.name), argv));
        streams.push((token(h), format!("{} stand-in env", h.name), read("env")));
    }

    // The next run: joined already, never again.
    for h in &hosts {
        let r = finish(spawn_apply_join(lab, h, &bin, &profile, WAIT_S)?)?;
        let n = invocations(lab, h).len();
        o.check(
            r.code == Some(0) && r.json["join"]["status"] == "already-joined" && n == 1,
            format!(
                "{}: second apply --wait --join: {}; stand-in invoked {n} time(s) in all (want 1)",
                h.name,
                summary(&r)
            ),
        );
        let state = std::fs::read_to_string(h.root(lab).join("var/lib/underlay/state.json"))
            .unwrap_or_default();
        streams.push((token(h), format!("{} second stdout", h.name), r.stdout));
        streams.push((token(h), format!("{} second stderr", h.name), r.stderr));
        streams.push((token(h), format!("{} state file", h.name), state));
    }

    let leaks: Vec<String> = streams
        .iter()
        .filter(|(t, _, text)| {
            let secret = t.split_once('.').map_or("", |(_, s)| s);
            text.contains(t.as_str()) || text.contains(secret)
        })
        .map(|(_, what, _)| what.clone())
        .collect();
    o.check(
        leaks.is_empty(),
        format!(
            "token in none of {} captured streams{}",
            streams.len(),
            if leaks.is_empty() {
                String::new()
            } else {
                format!(": found in {}", leaks.join(", "))
            }
        ),
    );
    Ok(o)
}
