//! What the lab looks like right now, per host, read with the standard tools:
//! `birdc` for sessions, `ip -j route` / `ip -j rule` for the kernel.

use anyhow::Result;
use serde::Serialize;

use crate::agent::{Readiness, READY_BY_AGENT};
use crate::bird::{BgpSession, Bird};
use crate::cmd;
use crate::plan::{Host, Lab, HOST_TABLE};

/// The Calico-role BIRD's session address, as the host BIRD names its peer.
pub const CALICO_SESSION_PEER: &str = "127.0.0.2";

#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub priority: u64,
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress_prefixlength: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub netns: String,
    pub service_ip: String,
    pub sessions: Vec<BgpSession>,
    /// Set when the host BIRD could not be asked (not running, no socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bird_error: Option<String>,
    pub host_table_nexthops: usize,
    pub rules: Vec<RuleStatus>,
    pub pod_block: String,
    /// Every ToR session and the Calico-role session Established, and the
    /// host-table default has 2 next hops.
    pub converged: bool,
    /// Readiness recorded by `up`: the gates of `underlay verify --wait`
    /// (time to ready = their `elapsed_ms`), or the lab's own wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub dir: String,
    pub prefix: String,
    pub hosts: Vec<HostStatus>,
}

impl LabStatus {
    pub fn converged(&self) -> bool {
        self.hosts.iter().all(|h| h.converged)
    }
}

pub fn collect(lab: &Lab) -> LabStatus {
    LabStatus {
        dir: lab.dir.display().to_string(),
        prefix: lab.prefix.clone(),
        hosts: lab.hosts().iter().map(|h| host_status(lab, h)).collect(),
    }
}

pub fn host_status(lab: &Lab, h: &Host) -> HostStatus {
    let (sessions, bird_error) = match Bird::host(lab, h).bgp_sessions() {
        Ok(s) => (s, None),
        Err(e) => (vec![], Some(format!("{e:#}"))),
    };
    let nexthops = host_table_nexthops(&h.netns).unwrap_or(0);
    let rules = our_rules(&h.netns).unwrap_or_default();
    let calico_ok = sessions
        .iter()
        .any(|s| s.peer == CALICO_SESSION_PEER && s.state == "Established");
    let tor_ok = h.tor_peers().iter().all(|p| {
        sessions
            .iter()
            .any(|s| s.peer == p.to_string() && s.state == "Established")
    });
    HostStatus {
        name: h.name.clone(),
        netns: h.netns.clone(),
        service_ip: h.service_ip.to_string(),
        converged: tor_ok && calico_ok && nexthops >= 2,
        sessions,
        bird_error,
        host_table_nexthops: nexthops,
        rules,
        pod_block: h.pod_block_cidr(),
        readiness: Readiness::load(lab, h),
    }
}

/// One line on readiness for `up` and the status table's READY column.
pub fn readiness_line(h: &HostStatus) -> Option<String> {
    let r = h.readiness.as_ref()?;
    let gates = r
        .gates
        .iter()
        .map(|g| format!("{}={}", g.name, if g.passed { "ok" } else { "FAILED" }))
        .collect::<Vec<_>>()
        .join(" ");
    Some(if r.by == READY_BY_AGENT {
        format!(
            "{} after {} per {READY_BY_AGENT} (gates: {gates}){}",
            if r.passed { "ready" } else { "NOT ready" },
            r.elapsed_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or("?".into()),
            r.note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "{} per the lab's own wait ({})",
            if r.passed { "ready" } else { "NOT ready" },
            r.note.as_deref().unwrap_or("")
        )
    })
}

fn ready_cell(h: &HostStatus) -> String {
    match &h.readiness {
        None => "-".into(),
        Some(r) if r.by == READY_BY_AGENT => match (r.passed, r.elapsed_ms) {
            (true, Some(ms)) => format!("{ms}ms"),
            (true, None) => "yes".into(),
            (false, _) => "FAILED".into(),
        },
        Some(r) => if r.passed { "lab-wait" } else { "NO" }.into(),
    }
}

/// Number of next hops of the default route in the host table (0 if none).
pub fn host_table_nexthops(ns: &str) -> Result<usize> {
    let routes = cmd::ip_json(ns, &["route", "show", "table", &HOST_TABLE.to_string()])?;
    Ok(default_nexthops(&routes))
}

pub fn default_nexthops(routes: &serde_json::Value) -> usize {
    let Some(r) = routes
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["dst"] == "default")
    else {
        return 0;
    };
    if let Some(nh) = r["nexthops"].as_array() {
        nh.len()
    } else if r.get("gateway").is_some() || r.get("dev").is_some() {
        1
    } else {
        0
    }
}

/// Rules outside the kernel's defaults (priorities 0, 32766, 32767).
fn our_rules(ns: &str) -> Result<Vec<RuleStatus>> {
    let rules = cmd::ip_json(ns, &["rule", "show"])?;
    Ok(rules
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let priority = r["priority"].as_u64()?;
            if [0, 32766, 32767].contains(&priority) {
                return None;
            }
            Some(RuleStatus {
                priority,
                table: r["table"].as_str().unwrap_or("?").to_string(),
                suppress_prefixlength: r["suppress_prefixlen"].as_u64(),
                protocol: r["protocol"].as_str().map(str::to_string),
            })
        })
        .collect())
}

fn sessions_cell(h: &HostStatus) -> String {
    if let Some(e) = &h.bird_error {
        let short = if e.contains("Unable to connect") || e.contains("No such file") {
            "host BIRD not running"
        } else {
            "birdc failed"
        };
        return short.to_string();
    }
    h.sessions
        .iter()
        .map(|s| format!("{}={}", s.peer, s.state))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rules_cell(h: &HostStatus) -> String {
    if h.rules.is_empty() {
        return "none".to_string();
    }
    h.rules
        .iter()
        .map(|r| match r.suppress_prefixlength {
            Some(s) => format!("{}:{}/sp{}", r.priority, r.table, s),
            None => format!("{}:{}", r.priority, r.table),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The human form: an aligned table, one host per line.
pub fn render_table(st: &LabStatus) -> String {
    let header = [
        "HOST",
        "NETNS",
        "SERVICE_IP",
        "SESSIONS (peer=state)",
        "NEXTHOPS",
        "RULES",
        "POD_BLOCK",
        "READY",
        "OK",
    ];
    let rows: Vec<[String; 9]> = st
        .hosts
        .iter()
        .map(|h| {
            [
                h.name.clone(),
                h.netns.clone(),
                h.service_ip.clone(),
                sessions_cell(h),
                h.host_table_nexthops.to_string(),
                rules_cell(h),
                h.pod_block.clone(),
                ready_cell(h),
                if h.converged { "yes" } else { "NO" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_default_nexthops() {
        let ecmp: serde_json::Value = serde_json::from_str(
            r#"[{"dst":"default","protocol":"bird","metric":32,"flags":[],"nexthops":[{"gateway":"172.30.2.0","dev":"eth0","weight":1,"flags":[]},{"gateway":"172.30.3.0","dev":"eth1","weight":1,"flags":[]}]},{"dst":"192.168.99.0/24"}]"#,
        )
        .unwrap();
        assert_eq!(default_nexthops(&ecmp), 2);
        let single: serde_json::Value =
            serde_json::from_str(r#"[{"dst":"default","gateway":"172.30.3.0","dev":"eth1"}]"#)
                .unwrap();
        assert_eq!(default_nexthops(&single), 1);
        assert_eq!(default_nexthops(&serde_json::json!([])), 0);
    }
}
