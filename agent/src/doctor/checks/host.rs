//! Host configuration around the routing: reverse-path filtering, network
//! managers that remove foreign routes and rules, the kubelet's node IP.

use std::net::IpAddr;

use super::*;
use crate::doctor::parse;
use crate::observed::Scope;

pub(super) fn rp_filter(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let ups = uplinks(s, e);
    if ups.is_empty() {
        return no_uplinks(RP_FILTER, e);
    }
    let get = |k: &str| s.sysctls.get(k).and_then(|v| v.trim().parse::<u8>().ok());
    let all = get("net.ipv4.conf.all.rp_filter");
    let mut strict = Vec::new();
    let mut seen = Vec::new();
    for u in &ups {
        let dev = get(&format!("net.ipv4.conf.{}.rp_filter", u.ifname));
        // The kernel applies the larger of conf.all and conf.<dev>.
        let eff = all.unwrap_or(0).max(dev.unwrap_or(0));
        let line = format!(
            "{}: rp_filter {} (all {}, {} {}) ",
            u.ifname,
            match eff {
                0 => "off",
                1 => "strict",
                _ => "loose",
            },
            all.map_or("?".into(), |v| v.to_string()),
            u.ifname,
            dev.map_or("?".into(), |v| v.to_string())
        );
        if eff == 1 {
            strict.push(line.trim_end().to_string());
        } else {
            seen.push(line.trim_end().to_string());
        }
    }
    if strict.is_empty() {
        return finding(
            RP_FILTER,
            Severity::Ok,
            "no uplink filters reverse paths strictly",
        )
        .with(seen);
    }
    finding(
        RP_FILTER,
        Severity::Warning,
        "strict reverse-path filtering on an uplink: with ECMP a packet may arrive on the other uplink and be dropped",
    )
    .with(strict)
    .fix(
        "Use loose mode on uplinks: `sysctl -w net.ipv4.conf.<uplink>.rp_filter=2` and keep \
         net.ipv4.conf.all.rp_filter at 0 (the kernel uses the larger value), persisted in \
         /etc/sysctl.d (the profile's sysctl.uplink does both).",
    )
}

pub(super) fn networkd(s: &Snapshot, e: Option<&Expect>) -> Finding {
    if s.networkd_links.is_empty() {
        return finding(
            NETWORKD,
            Severity::Skipped,
            "systemd-networkd manages no link here (no /run/systemd/netif/links state files)",
        );
    }
    // networkd.conf, then drop-ins in name order: the last assignment wins.
    let mut texts: Vec<(&std::path::PathBuf, &String)> = s
        .files
        .iter()
        .filter(|(p, _)| {
            p.as_os_str() == NETWORKD_CONF
                || (p.starts_with(NETWORKD_CONF_D) && p.extension().is_some_and(|x| x == "conf"))
        })
        .collect();
    texts.sort_by_key(|(p, _)| (p.as_os_str() != NETWORKD_CONF, (*p).clone()));
    let setting = |key: &str| -> (bool, String) {
        let mut value = (true, format!("{key}=yes (default)"));
        for (p, t) in &texts {
            if let Some(v) = parse::ini_value(t, key) {
                value = (
                    parse::ini_bool(v).unwrap_or(true),
                    format!("{key}={v} ({})", p.display()),
                );
            }
        }
        value
    };
    let (routes, routes_ev) = setting("ManageForeignRoutes");
    let (rules, rules_ev) = setting("ManageForeignRoutingPolicyRules");
    let managed =
        |text: &str| parse::ini_value(text, "ADMIN_STATE").is_some_and(|v| v != "unmanaged");
    let ups = uplinks(s, e);
    let managed_uplinks: Vec<String> = ups
        .iter()
        .filter_map(|u| {
            let t = s.networkd_links.get(&u.index)?;
            managed(t).then(|| {
                format!(
                    "{}: managed by systemd-networkd (ADMIN_STATE={}, NETWORK_FILE={})",
                    u.ifname,
                    parse::ini_value(t, "ADMIN_STATE").unwrap_or("?"),
                    parse::ini_value(t, "NETWORK_FILE").unwrap_or("?")
                )
            })
        })
        .collect();
    let any_managed = s.networkd_links.values().any(|t| managed(t));
    let mut evidence = managed_uplinks.clone();
    let mut risky = false;
    if routes && !managed_uplinks.is_empty() {
        evidence.push(format!(
            "{routes_ev}: removes routes it did not configure on those links"
        ));
        risky = true;
    }
    if rules && any_managed {
        evidence.push(format!(
            "{rules_ev}: removes ip rules it did not configure (underlay's rules included) whenever it configures a link"
        ));
        risky = true;
    }
    if !risky {
        evidence.push(routes_ev);
        evidence.push(rules_ev);
        return finding(
            NETWORKD,
            Severity::Ok,
            "systemd-networkd runs but does not remove foreign routes or rules on the uplinks",
        )
        .with(evidence);
    }
    finding(
        NETWORKD,
        Severity::Warning,
        "systemd-networkd may remove underlay's rules and BIRD's routes when it reconfigures a link",
    )
    .with(evidence)
    .fix(
        "Add /etc/systemd/networkd.conf.d/underlay.conf with `[Network]` \
         `ManageForeignRoutes=no` and `ManageForeignRoutingPolicyRules=no` (or `Unmanaged=yes` in \
         the uplinks' .network files), then `systemctl restart systemd-networkd`. \
         (Detected from networkd's state and config files, not by asking the daemon.)",
    )
}

pub(super) fn network_manager(s: &Snapshot, e: Option<&Expect>) -> Finding {
    if s.nm_devices.is_empty() {
        return finding(
            NETWORK_MANAGER,
            Severity::Skipped,
            "NetworkManager manages no device here (no /run/NetworkManager/devices state files)",
        );
    }
    let ups = uplinks(s, e);
    let mut managed = Vec::new();
    let mut unmanaged = Vec::new();
    for u in &ups {
        match s.nm_devices.get(&u.index) {
            Some(t) if parse::ini_value(t, "managed").and_then(parse::ini_bool) == Some(true) => {
                managed.push(format!(
                    "{}: managed=true in NetworkManager's device state",
                    u.ifname
                ))
            }
            Some(_) => unmanaged.push(format!("{}: known to NetworkManager, unmanaged", u.ifname)),
            None => unmanaged.push(format!("{}: not known to NetworkManager", u.ifname)),
        }
    }
    if managed.is_empty() {
        return finding(
            NETWORK_MANAGER,
            Severity::Ok,
            "NetworkManager manages no uplink",
        )
        .with(unmanaged);
    }
    finding(
        NETWORK_MANAGER,
        Severity::Warning,
        "NetworkManager manages an uplink: on (re)activation it removes addresses and routes it did not configure",
    )
    .with(managed)
    .fix(
        "Leave uplinks to underlay: /etc/NetworkManager/conf.d/underlay.conf with `[keyfile]` \
         `unmanaged-devices=interface-name:<uplink>;...`, then `nmcli general reload`. \
         (Detected from NetworkManager's state files, not by asking the daemon.)",
    )
}

pub(super) fn kubelet_node_ip(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let present: Vec<&str> = KUBELET_FILES
        .iter()
        .copied()
        .filter(|f| s.files.contains_key(std::path::Path::new(f)))
        .collect();
    if present.is_empty() {
        return finding(
            KUBELET_NODE_IP,
            Severity::Skipped,
            "no kubelet configuration on this host (not joined yet)",
        );
    }
    let node_ip = KUBELET_FILES.iter().find_map(|f| {
        let t = s.files.get(std::path::Path::new(f))?;
        parse::kubelet_node_ip(t).map(|ip| (ip, *f))
    });
    let (wanted, source): (Vec<IpAddr>, &str) = match e {
        Some(e) => (
            e.service_ipv4
                .map(IpAddr::V4)
                .into_iter()
                .chain(e.service_ipv6.map(IpAddr::V6))
                .collect(),
            "the profile's service IP",
        ),
        None => (
            s.addresses
                .iter()
                .filter(|a| {
                    a.ifname == "lo"
                        && a.scope == Scope::Global
                        && !a.prefix.addr().is_loopback()
                        && a.prefix.prefix_len() == a.prefix.max_prefix_len()
                })
                .map(|a| a.prefix.addr())
                .collect(),
            "a global host address on lo (service IP)",
        ),
    };
    let wanted_text = wanted
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let fix = format!(
        "Set --node-ip={} for the kubelet (KUBELET_EXTRA_ARGS in /etc/default/kubelet, or kubeadm's \
         nodeRegistration.kubeletExtraArgs) and restart it: the service IP is the only address \
         every host and pod can reach.",
        wanted.first().map_or("<service IP>".to_string(), IpAddr::to_string)
    );
    match node_ip {
        None => finding(
            KUBELET_NODE_IP,
            Severity::Warning,
            "the kubelet has no --node-ip: it picks the default route interface's address, maybe a transit address",
        )
        .with(vec![format!("kubelet files: {}", present.join(", "))])
        .fix(fix),
        Some((ip, file)) => {
            let parsed: Option<IpAddr> = ip.split(',').next().and_then(|x| x.trim().parse().ok());
            let ok = parsed.is_some_and(|p| wanted.contains(&p));
            let ev = vec![format!("{file}: --node-ip={ip}; wanted {source}: {wanted_text}")];
            if ok {
                finding(KUBELET_NODE_IP, Severity::Ok, "kubelet node-ip is the service IP").with(ev)
            } else if wanted.is_empty() && e.is_none() {
                finding(
                    KUBELET_NODE_IP,
                    Severity::Skipped,
                    "no service IP on lo to compare the kubelet's node-ip with",
                )
                .with(ev)
            } else {
                finding(
                    KUBELET_NODE_IP,
                    Severity::Warning,
                    "kubelet node-ip is not the service IP",
                )
                .with(ev)
                .fix(fix)
            }
        }
    }
}

/// The state file `--state` names: unusable, it stops every converge; with
/// intents, a run was killed part-way; with a checkpoint beside it, a safe
/// apply is still in its window (or died in it and the next apply rolls back).
pub(super) fn underlay_state(s: &Snapshot) -> Finding {
    let Some(facts) = &s.state else {
        return finding(
            UNDERLAY_STATE,
            Severity::Skipped,
            "the state file was not read",
        );
    };
    let path = facts.path.display();
    let st = match &facts.state {
        Err(e) => {
            return finding(
                UNDERLAY_STATE,
                Severity::Failure,
                "underlay's state file is unusable: converge, apply and watch refuse to run",
            )
            .with(vec![format!("{path}: {e}")])
            .fix(format!(
                "Move it aside (`mv {path} {path}.bad`): underlay then owns only what carries its protocol number, and the next apply records it anew"
            ))
        }
        Ok(None) => {
            return finding(
                UNDERLAY_STATE,
                Severity::Skipped,
                format!("no state file at {path}: underlay has not converged this host (or --state/--root point elsewhere)"),
            )
        }
        Ok(Some(st)) => st,
    };
    let mut evidence = vec![format!(
        "{path}: underlay owns {} addresses, {} rules, {} files, {} sysctls{}",
        st.addresses.len(),
        st.rules.len(),
        st.files.len(),
        st.sysctls.len(),
        if st.nft_table {
            ", its nftables table"
        } else {
            ""
        }
    )];
    let mut risks = Vec::new();
    if !st.intents.is_empty() {
        let i = &st.intents;
        risks.push("a run was interrupted part-way");
        evidence.push(format!(
            "intents left by it: {} addresses, {} files{}",
            i.addresses.len(),
            i.files.len(),
            if i.nft_table {
                ", the nftables table"
            } else {
                ""
            }
        ));
    }
    if facts.checkpoint {
        risks.push("a safe apply's checkpoint waits beside it");
        evidence.push(format!(
            "{}: the pre-apply state and the undo of that apply",
            facts.path.with_file_name("checkpoint.json").display()
        ));
    }
    if risks.is_empty() {
        return finding(
            UNDERLAY_STATE,
            Severity::Ok,
            "underlay's state file is readable and settled",
        )
        .with(evidence);
    }
    finding(
        UNDERLAY_STATE,
        Severity::Warning,
        format!("underlay's state is not settled: {}", risks.join("; ")),
    )
    .with(evidence)
    .fix(
        "Let the running apply finish its confirmation window; if none runs, the next `underlay apply` \
         rolls the checkpoint back first and adopts what an interrupted run created",
    )
}
