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

/// BFD state of each ToR session's peer, by address and interface.
fn bfd_state(s: &Snapshot, p: &crate::doctor::snapshot::TorPeer) -> Option<String> {
    let sessions = s.bfd_sessions.as_ref()?.as_ref().ok()?;
    Some(
        sessions
            .iter()
            .find(|b| b.address == p.peer && (b.interface.is_empty() || b.interface == p.ifname))
            .map_or_else(|| "no session".to_string(), |b| b.state.clone()),
    )
}

pub(super) fn bfd_sessions(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let Some(e) = e.filter(|e| !e.tor_peers.is_empty()) else {
        return finding(
            BFD_SESSIONS,
            Severity::Skipped,
            "needs a profile with [bgp] (the ToR sessions and whether BFD is wanted)",
        );
    };
    let Some(detect) = e.bfd_detect_ms else {
        return finding(
            BFD_SESSIONS,
            Severity::Skipped,
            "BFD is disabled in the profile (bgp.bfd.enabled = false)",
        );
    };
    match &s.bfd_sessions {
        None => {
            return finding(
                BFD_SESSIONS,
                Severity::Skipped,
                "the host BIRD does not answer (see bgp-sessions)",
            )
        }
        Some(Err(err)) => {
            return finding(
                BFD_SESSIONS,
                Severity::Failure,
                "could not read the host BIRD's BFD sessions",
            )
            .with(vec![err.clone()])
            .fix("Check that the host BIRD's config has `protocol bfd` (underlay renders one when bgp.bfd is on): `birdc show bfd sessions`.")
        }
        Some(Ok(_)) => {}
    }
    // BFD down under a BGP session that is down too is bgp-sessions' finding;
    // this one is about the quiet case: BGP Established, BFD not Up.
    let established = |name: &str| {
        s.bird_sessions
            .iter()
            .filter(|b| b.owner == "profile")
            .filter_map(|b| b.protocols.as_ref().ok())
            .flatten()
            .any(|p| p.name == name && p.info.starts_with("Established"))
    };
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut bgp_down = Vec::new();
    for p in &e.tor_peers {
        let state = bfd_state(s, p).unwrap_or_else(|| "unknown".into());
        let line = format!(
            "{} ({}, {} on {}): BFD {state}",
            p.protocol, p.uplink, p.peer, p.ifname
        );
        if state == "Up" {
            up.push(line);
        } else if established(&p.protocol) {
            down.push(line);
        } else {
            bgp_down.push(format!(
                "{line} (BGP not Established either: see bgp-sessions)"
            ));
        }
    }
    if down.is_empty() {
        return finding(
            BFD_SESSIONS,
            Severity::Ok,
            format!(
                "BFD is Up under every Established ToR session (failure detection in {detect} ms)"
            ),
        )
        .with(up.into_iter().chain(bgp_down).collect());
    }
    let hold = e.hold_time.map_or("the hold time".to_string(), |h| {
        format!("the {h} s hold time")
    });
    finding(
        BFD_SESSIONS,
        Severity::Failure,
        format!(
            "BFD is not Up to every ToR: a silent link failure there is noticed only after {hold}, not in {detect} ms"
        ),
    )
    .with(down.into_iter().chain(up).chain(bgp_down).collect())
    .fix(
        "Enable BFD for this host on the ToR (FRR: `neighbor <host transit address> bfd`; BIRD: \
         `bfd on` in the session and a `protocol bfd`), let UDP 3784 (and 4784) through the \
         filters on both ends, then `birdc show bfd sessions` here should say Up. BGP stays \
         Established without BFD, which is why the readiness gate bfd-up checks it.",
    )
}

pub(super) fn bgp_llgr(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let Some(e) = e.filter(|e| !e.tor_peers.is_empty()) else {
        return finding(
            BGP_LLGR,
            Severity::Skipped,
            "needs a profile with [bgp] (the ToR sessions)",
        );
    };
    if s.bgp_details.is_empty() {
        return finding(
            BGP_LLGR,
            Severity::Skipped,
            "the host BIRD does not answer (see bgp-sessions)",
        );
    }
    let mut negotiated = Vec::new();
    let mut unprotected = false;
    let mut other = Vec::new();
    let mut longest: Option<u32> = None;
    for (name, d) in &s.bgp_details {
        let d = match d {
            Err(err) => {
                other.push(format!("{name}: {err}"));
                continue;
            }
            Ok(d) => d,
        };
        if !d.llgr_negotiated() {
            other.push(if d.state == "Established" {
                format!("{name}: long-lived graceful restart not negotiated")
            } else {
                format!(
                    "{name}: {}, capabilities unknown until Established",
                    d.state
                )
            });
            continue;
        }
        let restart = d
            .neighbor_caps
            .graceful_restart
            .as_ref()
            .and_then(|g| g.time);
        let stale = d
            .neighbor_caps
            .long_lived_graceful_restart
            .as_ref()
            .and_then(|g| g.time);
        let keep = restart.unwrap_or(0) + stale.unwrap_or(0);
        longest = longest.max(Some(keep));
        let peer = e.tor_peers.iter().find(|p| &p.protocol == name);
        let bfd = peer.and_then(|p| bfd_state(s, p));
        let bfd_up = bfd.as_deref() == Some("Up");
        unprotected |= !bfd_up;
        negotiated.push(format!(
            "{name}: LLGR negotiated; the ToR announces restart time {} s, LL stale time {} s; BFD {}",
            restart.map_or("?".into(), |t| t.to_string()),
            stale.map_or("?".into(), |t| t.to_string()),
            match (e.bfd_detect_ms, bfd) {
                (None, _) => "disabled".to_string(),
                (Some(_), Some(b)) => b,
                (Some(_), None) => "unknown".to_string(),
            }
        ));
    }
    if negotiated.is_empty() {
        return finding(
            BGP_LLGR,
            Severity::Ok,
            "no ToR session negotiated long-lived graceful restart: an expired hold timer drops the ToR's routes",
        )
        .with(other);
    }
    let evidence: Vec<String> = negotiated.into_iter().chain(other).collect();
    if e.llgr_intended {
        return finding(
            BGP_LLGR,
            Severity::Ok,
            "long-lived graceful restart negotiated, as the profile asks (bgp.long_lived_graceful_restart = true)",
        )
        .with(evidence);
    }
    let hold = e.hold_time.map_or("the hold time".to_string(), |h| {
        format!("the {h} s hold time")
    });
    let keep = longest.map_or("its restart time".into(), |k| format!("about {k} s"));
    finding(
        BGP_LLGR,
        if unprotected {
            Severity::Failure
        } else {
            Severity::Warning
        },
        format!(
            "long-lived graceful restart is negotiated on ToR sessions: when the hold timer expires BIRD treats it as a restart and keeps a dead ToR's routes for {keep} instead of {hold}{}",
            if unprotected {
                "; BFD is not Up on them, so a silent failure leaves a dead path now"
            } else {
                " (BFD covers it while BFD is Up)"
            }
        ),
    )
    .with(evidence)
    .fix(
        "underlay renders `long lived graceful restart off` on the uplink sessions unless \
         bgp.long_lived_graceful_restart = true: run `underlay apply` if this BIRD config predates \
         that; in a hand-written config add `long lived graceful restart off;` to each ToR session. \
         BIRD re-negotiates when the session restarts.",
    )
}
