//! The BGP checks: one speaker per socket (docs/background.md failure 1), one BIRD
//! per kernel table (failure 2), sessions and ECMP paths (readiness).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;
use crate::desired::Family;
use crate::doctor::parse;

fn is_bgp_daemon(comm: &str) -> bool {
    comm.starts_with("bird") || comm.ends_with("bgpd") || comm == "calico-node"
}

fn owners_text(l: &crate::doctor::snapshot::Listener) -> String {
    if l.owners.is_empty() {
        return format!("socket {} (owner unknown)", l.inode);
    }
    l.owners
        .iter()
        .map(|(pid, comm)| format!("{comm} (pid {pid})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn bgp_listeners(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let mut ports: BTreeSet<u16> = [179].into_iter().collect();
    ports.extend(e.map(|e| e.bgp_ports.clone()).unwrap_or_default());
    ports.extend(
        s.listeners
            .iter()
            .filter(|l| l.owners.iter().any(|(_, c)| is_bgp_daemon(c)))
            .map(|l| l.port),
    );
    let ls: Vec<&crate::doctor::snapshot::Listener> = s
        .listeners
        .iter()
        .filter(|l| ports.contains(&l.port))
        .collect();
    let same_owner = |a: &crate::doctor::snapshot::Listener,
                      b: &crate::doctor::snapshot::Listener| {
        a.owners
            .iter()
            .any(|(p, _)| b.owners.iter().any(|(q, _)| p == q))
    };
    let mut exact = Vec::new();
    let mut overlap = Vec::new();
    for (i, a) in ls.iter().enumerate() {
        for b in &ls[i + 1..] {
            if a.port != b.port || a.inode == b.inode || same_owner(a, b) {
                continue;
            }
            let same_family = a.addr.is_ipv4() == b.addr.is_ipv4();
            let line = format!(
                "{} held by {} and {} held by {}",
                sock(a.addr, a.port),
                owners_text(a),
                sock(b.addr, b.port),
                owners_text(b)
            );
            if a.addr == b.addr {
                exact.push(line);
            } else if same_family && (a.addr.is_unspecified() || b.addr.is_unspecified()) {
                overlap.push(line);
            }
        }
    }
    let fix = "One BGP speaker per address and port: the host BIRD listens on 179 and peers with the \
               ToRs; Calico's BIRD listens elsewhere (BGPConfiguration listenPort, e.g. 1179, and \
               bindMode: NodeIP on its own address; `underlay render calico`). Stop the extra daemon.";
    if !exact.is_empty() {
        return finding(
            BGP_LISTENERS,
            Severity::Failure,
            "two BGP daemons listen on the same address and port: the ToR's session lands on either",
        )
        .with(exact.into_iter().chain(overlap).collect())
        .fix(fix);
    }
    if !overlap.is_empty() {
        return finding(
            BGP_LISTENERS,
            Severity::Warning,
            "a BGP daemon's wildcard listener overlaps another's on the same port: connections to the specific address go to the other daemon",
        )
        .with(overlap)
        .fix(fix);
    }
    finding(
        BGP_LISTENERS,
        Severity::Ok,
        "no two BGP daemons share a listening address and port",
    )
    .with(
        ls.iter()
            .map(|l| format!("{} {}", sock(l.addr, l.port), owners_text(l)))
            .collect(),
    )
}

fn sock(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn table_name(t: u32) -> String {
    match t {
        254 => "main (254)".into(),
        255 => "local (255)".into(),
        253 => "default (253)".into(),
        other => other.to_string(),
    }
}

pub(super) fn bird_shared_table(s: &Snapshot) -> Finding {
    if s.birds.is_empty() {
        return finding(
            BIRD_SHARED_TABLE,
            Severity::Skipped,
            "no BIRD process in this network namespace",
        );
    }
    // (table, family) -> [(pid, comm, protocol, config)]
    let mut syncs: BTreeMap<(u32, Family), Vec<String>> = BTreeMap::new();
    let mut pids: BTreeMap<(u32, Family), BTreeSet<u32>> = BTreeMap::new();
    let mut evidence = Vec::new();
    for b in &s.birds {
        let Some(conf) = &b.config else {
            evidence.push(format!(
                "{} (pid {}): config {} not readable",
                b.comm,
                b.pid,
                b.config_path.display()
            ));
            continue;
        };
        let binary_family = if b.comm.ends_with('6') {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        for k in parse::bird_kernel_syncs(conf) {
            let fam = k.family.unwrap_or(binary_family);
            let key = (k.table, fam);
            syncs.entry(key).or_default().push(format!(
                "{} (pid {}, {}): protocol {} syncs {} table {}{}",
                b.comm,
                b.pid,
                b.config_path.display(),
                k.name,
                match fam {
                    Family::Ipv4 => "ipv4",
                    Family::Ipv6 => "ipv6",
                },
                table_name(k.table),
                if k.exports {
                    ""
                } else {
                    " (export none, still prunes)"
                }
            ));
            pids.entry(key).or_default().insert(b.pid);
        }
    }
    let shared: Vec<(u32, Family)> = pids
        .iter()
        .filter(|(_, p)| p.len() > 1)
        .map(|(k, _)| *k)
        .collect();
    if shared.is_empty() {
        evidence.extend(syncs.into_values().flatten());
        return finding(
            BIRD_SHARED_TABLE,
            Severity::Ok,
            "each kernel table is synced by at most one BIRD",
        )
        .with(evidence);
    }
    for k in &shared {
        evidence.extend(syncs.get(k).cloned().unwrap_or_default());
    }
    finding(
        BIRD_SHARED_TABLE,
        Severity::Failure,
        "two BIRD processes sync the same kernel table: each deletes the other's routes",
    )
    .with(evidence)
    .fix(
        "Give each BIRD its own kernel table: Calico's BIRD keeps main, the host BIRD syncs the host \
         table (`kernel table 1001;` in its kernel protocol, as underlay renders it) and ip rules \
         consult both. Stop or reconfigure the extra BIRD.",
    )
}

pub(super) fn host_table_paths(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let Some((table, min)) = e.and_then(|e| e.host_table) else {
        return finding(
            HOST_TABLE_PATHS,
            Severity::Skipped,
            "needs a profile with [bgp] (host table and readiness.min_paths)",
        );
    };
    let fix = format!(
        "Each ToR must announce a default route over an Established session (see bgp-sessions) and \
         the host BIRD's kernel protocol needs `merge paths on`; check `ip route show table {table}` \
         and `birdc show route`."
    );
    match &s.host_nexthops {
        None => finding(HOST_TABLE_PATHS, Severity::Skipped, "host table not read"),
        Some(Err(err)) => finding(
            HOST_TABLE_PATHS,
            Severity::Failure,
            format!("could not read table {table}"),
        )
        .with(vec![err.clone()])
        .fix(fix),
        Some(Ok(hops)) => {
            let via: Vec<String> = hops
                .iter()
                .map(|h| match h.gateway {
                    Some(g) => format!("via {g} dev {}", s.link_name(h.oif)),
                    None => format!("dev {}", s.link_name(h.oif)),
                })
                .collect();
            let ev = vec![format!(
                "table {table} default: {} next hop(s), want {min}{}{}",
                hops.len(),
                if via.is_empty() { "" } else { ": " },
                via.join(", ")
            )];
            if hops.len() as u32 >= min {
                finding(
                    HOST_TABLE_PATHS,
                    Severity::Ok,
                    "the host table's default has enough next hops",
                )
                .with(ev)
            } else {
                finding(
                    HOST_TABLE_PATHS,
                    Severity::Failure,
                    "the host table's default has fewer next hops than the profile wants",
                )
                .with(ev)
                .fix(fix)
            }
        }
    }
}

pub(super) fn bgp_sessions(s: &Snapshot, e: Option<&Expect>) -> Finding {
    if s.bird_sessions.is_empty() {
        return finding(
            BGP_SESSIONS,
            Severity::Skipped,
            "no BIRD control socket to read (no BIRD running here and no [bgp] in the profile)",
        );
    }
    let tor: BTreeSet<&str> = e
        .map(|e| e.tor_sessions.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let mut fine = Vec::new();
    for b in &s.bird_sessions {
        let protos = match &b.protocols {
            Err(err) => {
                failures.push(format!(
                    "{} ({}): BIRD not answering: {err}",
                    b.socket.display(),
                    b.owner
                ));
                continue;
            }
            Ok(p) => p,
        };
        let is_profile = b.owner == "profile";
        if is_profile {
            for name in &tor {
                if !protos.iter().any(|p| p.name == *name) {
                    failures.push(format!(
                        "{name}: missing from the host BIRD ({})",
                        b.socket.display()
                    ));
                }
            }
        }
        for p in protos.iter().filter(|p| p.proto == "BGP") {
            let line = format!("{} ({}): {} {} {}", p.name, b.owner, p.state, p.info, "")
                .trim_end()
                .to_string();
            if p.info.starts_with("Established") {
                fine.push(line);
            } else if is_profile && !tor.is_empty() && !tor.contains(p.name.as_str()) {
                warnings.push(format!("{line} (not a ToR session)"));
            } else {
                failures.push(line);
            }
        }
    }
    let fix = "Check the link and the peer: `birdc show protocols all <name>` (last error), \
               the ToR's neighbor address and ASN, and that nothing else holds port 179 \
               (see bgp-listener-conflict).";
    if !failures.is_empty() {
        return finding(
            BGP_SESSIONS,
            Severity::Failure,
            "BGP sessions not Established",
        )
        .with(failures.into_iter().chain(warnings).chain(fine).collect())
        .fix(fix);
    }
    if !warnings.is_empty() {
        return finding(
            BGP_SESSIONS,
            Severity::Warning,
            "ToR sessions Established; another BGP session is not (Calico's?)",
        )
        .with(warnings.into_iter().chain(fine).collect())
        .fix(fix);
    }
    finding(
        BGP_SESSIONS,
        Severity::Ok,
        "every BGP session is Established",
    )
    .with(fine)
}
