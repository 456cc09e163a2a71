//! Converging a lab host: the host facts file, running `underlay apply` in the
//! host namespace, and checking that the agent really configured the host.
//! `bootstrap_host_net_until_agent` (behind `up --no-agent`) does the agent's
//! network part from the lab while the agent cannot yet.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, ip};
use crate::plan::{Host, Lab, EXPECTED_RULES, HOST_TABLE, RULE_PROTOCOL};

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
         `cargo build -p underlay`, or run `underlay-lab up --no-agent` to bootstrap hosts from the lab",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
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
    s
}

/// Runs `underlay apply` for one host and checks the result on the kernel.
/// Returns the agent's JSON report (or `null` if it printed none).
pub fn apply(lab: &Lab, h: &Host, agent: &Path, profile: &Path) -> Result<serde_json::Value> {
    let facts = h.facts_file(lab);
    crate::bird::write_if_changed(&facts, &render_host_facts(h))?;
    let root = h.root(lab);
    std::fs::create_dir_all(&root)?;
    let args = [
        "apply",
        "--profile",
        &profile.to_string_lossy(),
        "--host",
        &facts.to_string_lossy(),
        "--netns",
        &h.netns,
        "--root",
        &root.to_string_lossy(),
        "--json",
    ]
    .map(|s| s.to_string());
    let out = std::process::Command::new(agent)
        .args(&args)
        .output()
        .with_context(|| format!("cannot run the agent {}", agent.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::write(h.dir(lab).join("apply.json"), stdout.as_bytes())?;
    std::fs::write(h.dir(lab).join("apply.stderr"), stderr.as_bytes())?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}) for {}: {}{}",
            agent.display(),
            args.join(" "),
            out.status,
            h.name,
            if stderr.trim().is_empty() {
                "(nothing on stderr)"
            } else {
                stderr.trim()
            },
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", stdout.trim())
            }
        );
    }
    let report = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    let missing = missing_agent_state(h)?;
    if !missing.is_empty() {
        bail!(
            "`underlay apply` exited 0 for {} but the host is not converged; missing: {}.\n  \
             The agent ({}) does not configure this yet (json output: {}). \
             Use `underlay-lab up --no-agent` to bootstrap hosts from the lab meanwhile.",
            h.name,
            missing.join("; "),
            agent.display(),
            if report.is_null() { "none" } else { "present" }
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
            r["priority"].as_u64() == Some(u64::from(prio)) && r["table"].as_str() == Some(table)
        });
        if !found {
            missing.push(format!("ip rule priority {prio} lookup {table}"));
        }
    }
    if cmd::read_sysctl(&h.netns, "net.ipv4.ip_forward")? != "1" {
        missing.push("sysctl net.ipv4.ip_forward=1".to_string());
    }
    Ok(missing)
}

/// The agent's network part, done by the lab UNTIL the agent does it (only with
/// `up --no-agent`): service IP, transit addresses (scope link), MTU, uplinks
/// up, the two rules with protocol 211, sysctls. Delete once `underlay apply`
/// converges a lab host on its own.
pub fn bootstrap_host_net_until_agent(h: &Host) -> Result<()> {
    let ns = h.netns.as_str();
    let sysctls = [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ];
    for (k, v) in sysctls {
        cmd::sysctl(ns, k, v)?;
    }
    ip(
        ns,
        &[
            "addr",
            "replace",
            &format!("{}/32", h.service_ip),
            "dev",
            "lo",
        ],
    )?;
    for u in &h.uplinks {
        cmd::sysctl(ns, &format!("net.ipv4.conf.{}.rp_filter", u.host_if), "2")?;
        ip(ns, &["link", "set", "dev", &u.host_if, "mtu", "9000", "up"])?;
        ip(
            ns,
            &[
                "addr",
                "replace",
                &format!("{}/31", u.host_addr),
                "dev",
                &u.host_if,
                "scope",
                "link",
            ],
        )?;
    }
    let proto = RULE_PROTOCOL.to_string();
    let table = HOST_TABLE.to_string();
    let rules: [(&str, Vec<&str>); 2] = [
        (
            "30000",
            vec!["lookup", "main", "suppress_prefixlength", "0"],
        ),
        ("30001", vec!["lookup", &table]),
    ];
    let existing = cmd::ip_json(ns, &["rule", "show"])?;
    for (prio, lookup) in rules {
        let present = existing
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["priority"].as_u64().map(|p| p.to_string()).as_deref() == Some(prio));
        if present {
            continue;
        }
        let mut a = vec!["rule", "add", "priority", prio];
        a.extend(lookup);
        a.extend(["protocol", proto.as_str()]);
        ip(ns, &a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_follow_the_example_format() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", 2, false).unwrap();
        let f = render_host_facts(&lab.host(2));
        assert!(f.contains("hostname = \"h2\""));
        assert!(f.contains("asn = 65102"));
        assert!(f.contains("service_ipv4 = \"10.10.0.12/32\""));
        assert!(f.contains("nic = { name = \"eth1\" }"));
        assert!(f.contains("ipv4 = { address = \"172.30.5.1/31\", peer = \"172.30.5.0\" }"));
        assert!(f.contains("peer_asn = 65002"));
        assert!(f.contains("rack = \"r02\""));
    }
}
