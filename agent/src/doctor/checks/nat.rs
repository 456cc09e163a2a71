//! The NAT checks: MASQUERADE and source addresses (docs/background.md failure 3),
//! the tunnel mark leak and its conntrack traces (failure 4).

use std::collections::BTreeSet;

use super::*;
use crate::doctor::parse::{self, Firewall};
use crate::observed::Scope;

/// The address MASQUERADE picks on `index`: its first global IPv4 address.
fn masquerade_source(s: &Snapshot, index: u32) -> Option<&crate::doctor::snapshot::Address> {
    s.addresses
        .iter()
        .find(|a| a.index == index && a.scope == Scope::Global && a.prefix.addr().is_ipv4())
}

fn nft_has_chain(s: &Snapshot, table: &str, chain: &str) -> bool {
    s.nft_ruleset
        .as_ref()
        .and_then(|d| d.get("nftables"))
        .and_then(|v| v.as_array())
        .is_some_and(|objs| {
            objs.iter().any(|o| {
                o.get("chain").is_some_and(|c| {
                    c["table"].as_str() == Some(table) && c["name"].as_str() == Some(chain)
                })
            })
        })
}

/// Neither iptables-save nor nft could be read: rule checks cannot say "ok".
fn firewall_unreadable(s: &Snapshot, check: &'static str) -> Option<Finding> {
    (s.iptables.is_empty() && s.nft_ruleset.is_none()).then(|| {
        finding(
            check,
            Severity::Skipped,
            "firewall rules not readable (iptables-save and nft failed or are missing; see notes)",
        )
    })
}

pub(super) fn masquerade_transit(s: &Snapshot, e: Option<&Expect>, fw: &Firewall) -> Finding {
    let ups = uplinks(s, e);
    if ups.is_empty() {
        return no_uplinks(MASQUERADE_TRANSIT, e);
    }
    if let Some(f) = firewall_unreadable(s, MASQUERADE_TRANSIT) {
        return f;
    }
    let mut evidence = Vec::new();
    for u in &ups {
        let Some(src) = masquerade_source(s, u.index) else {
            continue;
        };
        let is_transit =
            u.transit.iter().any(|t| t.addr() == src.prefix.addr()) || is_transit_len(&src.prefix);
        if !is_transit {
            continue;
        }
        let rules: Vec<&parse::MasqRule> = fw
            .masquerade
            .iter()
            .filter(|r| r.applies_to(&u.ifname))
            .collect();
        if rules.is_empty() {
            continue;
        }
        evidence.push(format!(
            "{}: MASQUERADE picks {} (scope global, the first global IPv4 address): unroutable, replies never come back",
            u.ifname, src.prefix
        ));
        evidence.extend(rules.iter().map(|r| format!("  rule {}", r.text)));
    }
    if evidence.is_empty() {
        return finding(
            MASQUERADE_TRANSIT,
            Severity::Ok,
            "no MASQUERADE rule can leave through an uplink whose source would be a global transit address",
        )
        .with(vec![format!(
            "{} MASQUERADE rule(s); uplinks {}",
            fw.masquerade.len(),
            ups.iter().map(|u| u.ifname.as_str()).collect::<Vec<_>>().join(", ")
        )]);
    }
    let snat = nft_has_chain(s, crate::nft::TABLE_NAME, crate::nft::SNAT_CHAIN);
    let (severity, title) = if snat {
        evidence.push(format!(
            "inet {} {} exists: pod egress and kube-proxy-marked traffic are SNATed to the service IP first",
            crate::nft::TABLE_NAME,
            crate::nft::SNAT_CHAIN
        ));
        (
            Severity::Warning,
            "MASQUERADE would pick a global transit address; underlay's SNAT covers pods and marked traffic only",
        )
    } else {
        (
            Severity::Failure,
            "MASQUERADE picks an unroutable transit address as source on an uplink",
        )
    };
    finding(MASQUERADE_TRANSIT, severity, title).with(evidence).fix(
        "Give transit addresses scope link so MASQUERADE and source selection pick the service IP on lo: \
         `underlay apply` with nat.mode = \"scope-link\" (the default), or by hand \
         `ip addr replace <transit>/31 dev <uplink> scope link`. Where scope link is not possible, \
         use nat.mode = \"snat\" (SNAT to the service IP in `inet underlay`).",
    )
}

pub(super) fn transit_global(s: &Snapshot, e: Option<&Expect>) -> Finding {
    let ups = uplinks(s, e);
    if ups.is_empty() {
        return no_uplinks(TRANSIT_GLOBAL, e);
    }
    let global: Vec<String> = ups
        .iter()
        .flat_map(|u| {
            s.addresses.iter().filter(move |a| {
                a.index == u.index
                    && a.scope == Scope::Global
                    && (u.transit.contains(&a.prefix) || is_transit_len(&a.prefix))
            })
        })
        .map(|a| format!("{} {} scope global", a.ifname, a.prefix))
        .collect();
    if global.is_empty() {
        let transit: Vec<String> = ups
            .iter()
            .flat_map(|u| u.transit.iter().map(move |t| format!("{} {t}", u.ifname)))
            .collect();
        return finding(
            TRANSIT_GLOBAL,
            Severity::Ok,
            "transit addresses are scope link",
        )
        .with(transit);
    }
    if e.is_some_and(|e| e.transit_global_intended) {
        return finding(
            TRANSIT_GLOBAL,
            Severity::Ok,
            "transit addresses are global, as the profile's nat.mode (snat or none) intends",
        )
        .with(global);
    }
    finding(
        TRANSIT_GLOBAL,
        Severity::Warning,
        "transit addresses have global scope: the kernel may pick them as source address",
    )
    .with(global)
    .fix(
        "Re-add them with scope link (`underlay apply` does; by hand \
         `ip addr replace <transit>/31 dev <uplink> scope link`): host traffic and any MASQUERADE \
         then use the service IP on lo.",
    )
}

/// A NAT rule that can bind a tunnel-bound inner flow before kube-proxy's
/// clearing of the masquerade bit runs (docs/background.md failure 4, kube-proxy >= 1.19).
struct Ahead {
    /// Evidence line.
    text: String,
    /// It surely runs first and is written for the tunnel device: a leak, not a risk.
    certain: bool,
}

/// For kube-proxy's clear-then-MASQUERADE steps, the NAT rules that may run
/// before them for a packet leaving `tunnel`: earlier on the same walk, in a
/// chain of lower priority, or in one of equal priority (the chain registered
/// last runs first, so that depends on start-up order).
fn ahead_of_clearing(fw: &Firewall, tunnel: &str) -> (Vec<String>, Vec<Ahead>) {
    let mut kube = Vec::new();
    let mut ahead = Vec::new();
    for k in &fw.nat_chains {
        for (si, step) in k.steps.iter().enumerate() {
            if !(step.masquerade && step.by_mark && step.cleared) {
                continue;
            }
            kube.push(format!(
                "clears the bit before its MASQUERADE: {} (via {}, priority {})",
                step.text,
                step.via(),
                k.prio
            ));
            for x in fw.nat_chains.iter().filter(|x| x.shares_family(k)) {
                let same = std::ptr::eq(x, k);
                if !same && x.prio > k.prio {
                    continue;
                }
                let earlier = if same { &x.steps[..si] } else { &x.steps[..] };
                for a in earlier
                    .iter()
                    .filter(|a| !a.cleared && !a.by_mark && a.applies_to(tunnel))
                {
                    let named = a.out_if.as_ref().is_some_and(|m| m.names(tunnel));
                    let (certain, why) = if same {
                        (named, format!("earlier in {} (via {})", x.name, a.via()))
                    } else if x.prio < k.prio {
                        (
                            named,
                            format!("in {} at priority {} < {}", x.name, x.prio, k.prio),
                        )
                    } else {
                        (
                            false,
                            format!(
                                "in {} at the same priority {} as {}: of equal priorities the chain registered last runs first, so it depends on which component started last",
                                x.name, x.prio, k.name
                            ),
                        )
                    };
                    let reach = if named {
                        format!("binds inner flows leaving {tunnel}")
                    } else {
                        format!("can bind inner flows leaving {tunnel}")
                    };
                    ahead.push(Ahead {
                        text: format!(
                            "runs ahead of the clearing, {why}: {} {reach} with the bit still set",
                            a.text
                        ),
                        certain,
                    });
                }
            }
        }
    }
    (kube, ahead)
}

pub(super) fn tunnel_mark(s: &Snapshot, e: Option<&Expect>, fw: &Firewall) -> Finding {
    let tunnels: Vec<&crate::doctor::snapshot::Link> = s
        .links
        .iter()
        .filter(|l| matches!(l.kind.as_deref(), Some("ipip" | "vxlan")))
        .collect();
    if tunnels.is_empty() {
        return finding(TUNNEL_MARK, Severity::Skipped, "no IPIP or VXLAN device");
    }
    if let Some(f) = firewall_unreadable(s, TUNNEL_MARK) {
        return f;
    }
    let tunnel_text = |l: &crate::doctor::snapshot::Link| match l.vxlan_port {
        Some(p) => format!("{} ({} port {p})", l.name, l.kind.as_deref().unwrap_or("?")),
        None => format!("{} ({})", l.name, l.kind.as_deref().unwrap_or("?")),
    };
    let mut evidence: Vec<String> = tunnels
        .iter()
        .map(|l| format!("tunnel {}", tunnel_text(l)))
        .collect();
    let by_mark: Vec<&parse::MasqRule> = fw.masquerade.iter().filter(|r| r.by_mark).collect();
    if by_mark.is_empty() {
        return finding(
            TUNNEL_MARK,
            Severity::Ok,
            "no MASQUERADE depends on the 0x4000 mark: outer tunnel packets are not masqueraded by mark",
        )
        .with(evidence);
    }
    // Outer packets leave through the uplinks; a guard restricted to some
    // interfaces must cover all of them.
    let ups = uplinks(s, e);
    let guards: Vec<&parse::MarkRule> = fw
        .marks
        .iter()
        .filter(|m| !m.sets && m.before_srcnat)
        .collect();
    let on_every_uplink = |g: &parse::MarkRule| {
        g.out_if
            .as_ref()
            .is_none_or(|m| ups.iter().all(|u| m.matches(&u.ifname)))
    };
    let covered = |l: &crate::doctor::snapshot::Link| {
        guards.iter().any(|g| {
            on_every_uplink(g)
                && (g
                    .matches
                    .iter()
                    .all(|m| m.starts_with("meta oifname") || m.starts_with("meta mark"))
                    || match l.kind.as_deref() {
                        Some("ipip") => g.matches.iter().any(|m| {
                            (m.starts_with("meta l4proto=") || m.starts_with("ip protocol="))
                                && (m.ends_with("=ipencap") || m.ends_with("=4"))
                        }),
                        _ => {
                            let port = l.vxlan_port.unwrap_or(4789);
                            g.matches.iter().any(|m| m == &format!("udp dport={port}"))
                        }
                    })
        })
    };
    let unguarded: Vec<&&crate::doctor::snapshot::Link> =
        tunnels.iter().filter(|l| !covered(l)).collect();
    evidence.extend(by_mark.iter().map(|r| {
        format!(
            "masquerade by mark{}: {}",
            if r.clears_first {
                " (the bit cleared first)"
            } else {
                ""
            },
            r.text
        )
    }));
    evidence.extend(
        fw.marks
            .iter()
            .filter(|m| m.sets)
            .map(|m| format!("sets the mark: {}", m.text)),
    );
    evidence.extend(guards.iter().map(|g| {
        let uplinks_missed = !on_every_uplink(g);
        format!(
            "guard{}: {}",
            if uplinks_missed {
                " (misses an uplink)"
            } else {
                ""
            },
            g.text
        )
    }));
    if unguarded.is_empty() {
        return finding(
            TUNNEL_MARK,
            Severity::Ok,
            "every tunnel's outer packets have the masquerade mark cleared before source NAT",
        )
        .with(evidence);
    }
    let names = unguarded
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let fix = "Clear the masquerade bit on outer tunnel packets before source NAT: the profile's \
               nat.guard (on by default for ipip/vxlan pods) and `underlay apply` add chain \
               `inet underlay mark_guard` at priority srcnat - 1 (it matches only what leaves \
               an uplink, so inner packets keep the bit); then flush the NATed outer entries \
               (see conntrack-tunnel-nat).";

    // kube-proxy <= 1.18.5: MASQUERADE by mark and the bit never cleared.
    let never_cleared: Vec<&&parse::MasqRule> =
        by_mark.iter().filter(|r| !r.clears_first).collect();
    if !never_cleared.is_empty() {
        evidence.push(format!(
            "nothing clears 0x4000 before {} MASQUERADEs by mark, and no rule before srcnat clears it on the outer packets of {names}",
            never_cleared.len()
        ));
        return finding(
            TUNNEL_MARK,
            Severity::Failure,
            "tunnel outer packets can carry the 0x4000 masquerade mark and be masqueraded (no guard)",
        )
        .with(evidence)
        .fix(fix);
    }

    // kube-proxy >= 1.19.0 and the nftables mode clear the bit right before their
    // MASQUERADE: safe unless another NAT rule binds the inner flow first.
    let mut certain = false;
    let mut risks = Vec::new();
    let mut kube = Vec::new();
    for l in &unguarded {
        let (k, ahead) = ahead_of_clearing(fw, &l.name);
        kube = k;
        for a in ahead {
            certain |= a.certain;
            if !risks.contains(&a.text) {
                risks.push(a.text);
            }
        }
    }
    evidence.extend(kube);
    if risks.is_empty() {
        return finding(
            TUNNEL_MARK,
            Severity::Ok,
            "kube-proxy clears the masquerade mark before its MASQUERADE and no NAT rule runs ahead of it for tunnel traffic",
        )
        .with(evidence);
    }
    evidence.extend(risks);
    evidence.push(format!(
        "a connection bound by an earlier rule never reaches kube-proxy's clearing: the bit rides onto the outer packets of {names}, and kube-proxy's MASQUERADE binds those"
    ));
    let fix = format!(
        "{fix} Making kube-proxy's chain run first is not enough: Felix re-inserts \
         cali-POSTROUTING at the top, and equal nft priorities follow start-up order."
    );
    if certain {
        finding(
            TUNNEL_MARK,
            Severity::Failure,
            "a NAT rule binds tunnel-bound inner flows before kube-proxy clears the 0x4000 mark: outer packets are masqueraded (no guard)",
        )
        .with(evidence)
        .fix(fix)
    } else {
        finding(
            TUNNEL_MARK,
            Severity::Warning,
            "a NAT rule may bind inner flows before kube-proxy clears the 0x4000 mark (order or match not certain): outer packets can be masqueraded (no guard)",
        )
        .with(evidence)
        .fix(fix)
    }
}

pub(super) fn conntrack_tunnel_nat(s: &Snapshot) -> Finding {
    let Some(text) = &s.conntrack else {
        return finding(
            CONNTRACK_TUNNEL_NAT,
            Severity::Skipped,
            "conntrack table not readable (conntrack tool missing or no permission; see notes)",
        );
    };
    let mut ports: BTreeSet<u16> = VXLAN_DEFAULT_PORTS.into_iter().collect();
    ports.extend(s.links.iter().filter_map(|l| l.vxlan_port));
    let bad: Vec<parse::CtEntry> = parse::conntrack(text)
        .into_iter()
        .filter(|c| {
            let tunnel = matches!(c.proto, 4 | 41)
                || (c.proto == 17 && c.orig_dport.is_some_and(|p| ports.contains(&p)));
            tunnel && (c.source_natted() || c.source_port_natted())
        })
        .collect();
    if bad.is_empty() {
        return finding(
            CONNTRACK_TUNNEL_NAT,
            Severity::Ok,
            "no outer tunnel conntrack entry is source-NATed",
        )
        .with(vec![format!(
            "checked IPIP, IPv6-in-IPv4 and UDP to ports {} (address or source port rewritten)",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    let port_only = bad.iter().all(parse::CtEntry::source_port_natted);
    let port = |p: Option<u16>| p.map_or(String::new(), |p| format!(":{p}"));
    let mut evidence: Vec<String> = bad
        .iter()
        .take(10)
        .map(|c| {
            if c.source_port_natted() {
                format!(
                    "{} -> reply to {}{} (sent from {}{}): only the source port was rewritten",
                    c.line,
                    c.reply_dst,
                    port(c.reply_dport),
                    c.orig_src,
                    port(c.orig_sport)
                )
            } else {
                format!(
                    "{} -> reply to {} (sent from {})",
                    c.line, c.reply_dst, c.orig_src
                )
            }
        })
        .collect();
    if bad.len() > 10 {
        evidence.push(format!("... and {} more", bad.len() - 10));
    }
    let title = if port_only {
        "outer tunnel packets are source-NATed (source port rewritten, address kept): a MASQUERADE bound the outer flow (with checksum offload on the tunnel such NAT can corrupt outer UDP checksums)"
    } else {
        "outer tunnel packets are source-NATed: every inner flow to that host shares the wrong source"
    };
    finding(CONNTRACK_TUNNEL_NAT, Severity::Failure, title)
        .with(evidence)
        .fix(
            "Fix the cause first (tunnel-mark-unguarded, masquerade-transit-source), then delete the entries \
             so the next outer packet makes a clean one: `conntrack -D -p udp --dport 4789 --src-nat` \
             (VXLAN) or `conntrack -D -p 4 --src-nat` (IPIP).",
        )
}
