//! docs/background.md failure 4, reproduced with VXLAN (this kernel has VXLAN but no `ipip` module, so
//! the IPIP variant belongs to the QEMU tier): kube-proxy marks service traffic 0x4000, the mark
//! survives encapsulation, and the *outer* UDP packet of `vxlan.calico` is masqueraded by
//! kube-proxy's own MASQUERADE, its conntrack entry NATed to the uplink's transit address.
//!
//! - kube-proxy <= 1.18.5 never clears the bit: every marked inner flow leaks.
//! - kube-proxy >= 1.19.0 (and 1.16.x/1.17.9/1.18.6) clears it right before its MASQUERADE,
//!   so alone it does not leak; but Calico Felix's `cali-POSTROUTING`, inserted at the top of
//!   POSTROUTING, masquerades host-sourced flows leaving vxlan.calico first, kube-proxy's
//!   clearing never runs for them, and the outer packet leaks again. In nftables mode the
//!   same happens between two nat chains of equal priority: the one registered last runs
//!   first, so it depends on which component came up last.
//!
//! The rules are the ones kube-proxy and Felix write (`tests/fixtures/firewall/*`, loaded with
//! iptables-restore --noflush / nft -f; this machine's `iptables` is iptables-nft).
//!
//! Topology: two hosts (service IPs 10.10.0.11/12 on lo, global transit /31 to one ToR), each
//! with a Calico-style `vxlan.calico` (VNI 4096, port 4789, local = the service IP on lo; with
//! `dev lo` where Calico binds it to the interface holding that address), static neighbour +
//! fdb, the other host's pod block routed via it `onlink`, and a pod. Host 1 has kube-proxy's
//! Services: 10.96.0.10:80/udp -> 10.244.2.10:8080 and 10.96.0.11:4789/udp -> 10.244.2.10:4789,
//! both endpoints in host 2's pod.

mod natlab;

use std::path::PathBuf;

use natlab::{conntrack, CtEntry, Lab};
use underlay::nft::{MarkGuard, NatMode, NatParams};

const KP_1_18_5: &str = "kube-proxy-1.18.5.iptables-restore";
const KP_1_19: &str = "kube-proxy-1.19.iptables-restore";
const KP_NFT: &str = "kube-proxy-nftables.nft";
const CALICO: &str = "calico-felix.iptables-restore";

/// Loads a fixture's rules the way their component does (ipsets first for Felix).
fn load(lab: &Lab, ns: &str, file: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/firewall")
        .join(file);
    let path = path.display();
    let script = if file.ends_with(".nft") {
        format!("nft -f '{path}'")
    } else if file == CALICO {
        format!(
            "ipset create cali40masq-ipam-pools hash:net family inet
             ipset create cali40all-ipam-pools hash:net family inet
             ipset add cali40masq-ipam-pools 10.244.0.0/16
             ipset add cali40all-ipam-pools 10.244.0.0/16
             iptables-restore --noflush < '{path}'"
        )
    } else {
        format!("iptables-restore --noflush < '{path}'")
    };
    lab.sh(ns, &script);
}

struct Vx {
    lab: Lab,
    h1: String,
    p1: String,
}

/// The two-host lab with host 1's firewall loaded from `rules`, in order.
fn build(rules: &[&str], vxlan_dev_lo: bool) -> Vx {
    let mut lab = Lab::new("vx");
    let tor = lab.ns("t");
    let h1 = lab.ns("h1");
    let h2 = lab.ns("h2");
    let p1 = lab.ns("p1");
    let p2 = lab.ns("p2");
    let dev = if vxlan_dev_lo { " dev lo" } else { "" };
    for (i, h, p) in [(1, &h1, &p1), (2, &h2, &p2)] {
        lab.veth(h, "up1", &tor, &format!("h{i}"));
        lab.sh(
            h,
            &format!(
                "ip addr add 10.10.0.1{i}/32 dev lo
                 ip addr add 10.255.{i}.0/31 dev up1
                 ip route add default via 10.255.{i}.1 dev up1
                 ip link add vxlan.calico type vxlan id 4096 local 10.10.0.1{i}{dev} dstport 4789 nolearning
                 ip link set vxlan.calico mtu 1450 address 66:00:00:00:00:0{i}
                 ip addr add 10.244.{i}.0/32 dev vxlan.calico
                 ip link set vxlan.calico up"
            ),
        );
        lab.sh(
            &tor,
            &format!(
                "ip addr add 10.255.{i}.1/31 dev h{i}
                 ip route add 10.10.0.1{i}/32 via 10.255.{i}.0 dev h{i}"
            ),
        );
        lab.veth(p, "eth0", h, "cali1");
        lab.sh(
            p,
            &format!(
                "ip addr add 10.244.{i}.10/32 dev eth0
                 ip route add 169.254.1.1 dev eth0 scope link
                 ip route add default via 169.254.1.1 dev eth0"
            ),
        );
        lab.sh(
            h,
            &format!(
                "sysctl -qw net.ipv4.conf.cali1.proxy_arp=1 net.ipv4.neigh.cali1.proxy_delay=0
                 ip route add 10.244.{i}.10/32 dev cali1 scope link"
            ),
        );
    }
    for (i, h) in [(1, &h1), (2, &h2)] {
        let j = 3 - i;
        lab.sh(
            h,
            &format!(
                "ip neigh add 10.244.{j}.0 lladdr 66:00:00:00:00:0{j} dev vxlan.calico nud permanent
                 bridge fdb add 66:00:00:00:00:0{j} dev vxlan.calico dst 10.10.0.1{j} self permanent
                 ip route add 10.244.{j}.0/26 via 10.244.{j}.0 dev vxlan.calico onlink"
            ),
        );
    }
    for r in rules {
        load(&lab, &h1, r);
    }
    // The echo servers answer with the source address they saw. The command reads the
    // datagram first: one that exits before socat hands it over kills socat's child with
    // SIGPIPE before it sends the answer (measured: 14 of 36 answers lost on loopback).
    for port in [8080, 8081, 4789] {
        lab.spawn(
            &p2,
            &format!(
                "socat -T3 UDP-RECVFROM:{port},fork SYSTEM:'read -r _; echo from=$SOCAT_PEERADDR'"
            ),
        );
        lab.wait_udp(&p2, port);
    }
    Vx { lab, h1, p1 }
}

/// One datagram from `ns` to `dst` after flushing host 1's conntrack.
struct Flow {
    /// The server's answer (`from=<source it saw>`), empty without one.
    reply: String,
    /// Host 1's conntrack entries of the flow's inner packets (to `dst`).
    inner: Vec<CtEntry>,
    /// Host 1's outer VXLAN entries (10.10.0.11 -> 10.10.0.12:4789).
    outer: Vec<CtEntry>,
}

fn flow(vx: &Vx, ns: &str, dst: &str) -> Flow {
    vx.lab.sh(&vx.h1, "conntrack -F 2>/dev/null || true");
    let (_, out, _) = vx.lab.try_sh(
        ns,
        &format!("echo ping | timeout 6 socat -t3 -T3 - UDP:{dst}"),
    );
    let (ip, port) = dst.split_once(':').unwrap();
    let all = conntrack(&vx.lab, &vx.h1, "-p udp");
    let inner: Vec<CtEntry> = all
        .iter()
        .filter(|e| e.orig.dst == ip && e.orig.dport == port)
        .cloned()
        .collect();
    let outer: Vec<CtEntry> = all
        .into_iter()
        .filter(|e| {
            e.orig.src == "10.10.0.11" && e.orig.dst == "10.10.0.12" && e.orig.dport == "4789"
        })
        .collect();
    let reply = out.trim().to_string();
    eprintln!("flow {ns} -> {dst}: reply {reply:?}");
    for e in &inner {
        eprintln!("  inner: {}", e.line);
    }
    for e in &outer {
        eprintln!("  outer: {}", e.line);
    }
    Flow {
        reply,
        inner,
        outer,
    }
}

/// Source NAT of any kind: another reply address, or the same address and another port
/// (MASQUERADE --random-fully).
fn natted(e: &CtEntry) -> bool {
    e.reply.dst != e.orig.src || e.reply.dport != e.orig.sport
}

fn guard_params() -> NatParams {
    NatParams {
        mode: NatMode::None,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: vec!["up1".into()],
        pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        guard: Some(MarkGuard::default()),
    }
}

/// Packets the guard's VXLAN rule cleared the bit on.
fn guard_hits(vx: &Vx) -> u64 {
    let table = vx.lab.sh(&vx.h1, "nft list chain inet underlay mark_guard");
    eprintln!("{table}");
    let rule = table
        .lines()
        .find(|l| l.contains("udp dport 4789"))
        .expect("the guard's vxlan rule");
    assert!(
        rule.contains("oifname \"up1\""),
        "the guard must match only what leaves the uplink: {rule}"
    );
    rule.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Packet count of the iptables nat rule of `chain` whose text contains `needle`.
fn ipt_hits(vx: &Vx, chain: &str, needle: &str) -> u64 {
    let listing = vx
        .lab
        .sh(&vx.h1, &format!("iptables -t nat -L {chain} -v -x -n"));
    listing
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule with {needle:?} in {chain}:\n{listing}"))
}

#[test]
fn vxlan_outer_packet_masqueraded_without_guard_and_not_with_guard() {
    let vx = build(&[KP_1_18_5], false);
    let h1 = vx.h1.clone();
    let p1 = vx.p1.clone();

    // Fix off. A plain pod-to-pod flow: no mark, outer entry not NATed.
    let f = flow(&vx, &p1, "10.244.2.10:8081");
    assert!(
        f.reply.starts_with("from="),
        "pod-to-pod over vxlan should work"
    );
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(f.outer.iter().all(|e| !natted(e)), "{:#?}", f.outer);

    // The service flow (host network -> VIP, KUBE-MARK-MASQ, DNAT to the remote pod): the
    // marked outer packet is masqueraded to the transit address 10.255.1.0.
    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(
        f.outer.iter().any(|e| e.reply.dst == "10.255.1.0"),
        "without the guard the outer entry should be masqueraded to 10.255.1.0: {:#?}",
        f.outer
    );

    // Fix on: our table with only the guard chain.
    assert!(vx.lab.apply_fix(&h1, &guard_params()));
    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(f.reply.starts_with("from="), "service flow should complete");
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "with the guard no outer entry may be NATed: {:#?}",
        f.outer
    );
    let nat = conntrack(&vx.lab, &h1, "-p udp --dport 4789 --src-nat");
    assert!(
        nat.iter().all(|e| e.orig.src != "10.10.0.11"),
        "conntrack --src-nat lists outer entries: {nat:#?}"
    );
    assert!(guard_hits(&vx) > 0, "guard never fired");
}

/// Issue 10: a Service whose endpoint listens on UDP 4789 (the VXLAN port). Its inner packet
/// carries the bit and must keep it so kube-proxy masquerades it (the endpoint sees
/// vxlan.calico's address); the outer packet of the same flow must still not be NATed. The
/// VXLAN device is bound to lo, as Calico binds it when the node IP lives on lo: the outer
/// packet still leaves through the uplink, where the guard matches it.
#[test]
fn udp_4789_service_is_masqueraded_with_the_guard_and_its_outer_packet_is_not() {
    let vx = build(&[KP_1_18_5], true);
    let h1 = vx.h1.clone();
    assert!(vx.lab.apply_fix(&h1, &guard_params()));

    let f = flow(&vx, &h1, "10.96.0.11:4789");
    assert!(
        f.reply == "from=10.244.1.0",
        "the endpoint must see the masqueraded source (vxlan.calico's 10.244.1.0), not the \
         host's transit address: got {:?}",
        f.reply
    );
    assert!(
        f.inner.iter().any(|e| e.reply.dst == "10.244.1.0"),
        "kube-proxy's MASQUERADE should have bound the inner flow: {:#?}",
        f.inner
    );
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "the outer packet may not be NATed: {:#?}",
        f.outer
    );
    assert!(
        guard_hits(&vx) > 0,
        "the guard should have cleared the outer packet's bit"
    );
}

/// Evidence for the uplink match: the guard as it was (every UDP/4789 packet) clears the
/// inner packet's bit too, so kube-proxy no longer masquerades a UDP/4789 Service and the
/// endpoint sees the host's transit address.
#[test]
fn guard_without_uplink_match_unmasquerades_a_udp_4789_service() {
    let vx = build(&[KP_1_18_5], true);
    let h1 = vx.h1.clone();
    vx.lab.sh(
        &h1,
        "nft -f - <<'NFT'
table inet broad_guard {
  chain g { type filter hook postrouting priority srcnat - 1; policy accept;
    udp dport 4789 meta mark & 0x4000 == 0x4000 counter meta mark set meta mark & 0xffffbfff
  }
}
NFT",
    );
    let f = flow(&vx, &h1, "10.96.0.11:4789");
    assert!(
        f.reply == "from=10.255.1.0",
        "the broad guard should have stripped the inner packet's mark: got {:?}",
        f.reply
    );
    assert!(
        f.inner.iter().all(|e| e.reply.dst == "10.255.1.0"),
        "{:#?}",
        f.inner
    );
}

/// Issue 10: kube-proxy >= 1.19 alone does not leak; behind Calico Felix's cali-POSTROUTING
/// (inserted at the top of POSTROUTING) it does, and the guard stops it.
#[test]
fn kube_proxy_1_19_leaks_behind_calico_postrouting_and_the_guard_stops_it() {
    let vx = build(&[KP_1_19], true);
    let h1 = vx.h1.clone();

    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(f.reply == "from=10.244.1.0", "{:?}", f.reply);
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "kube-proxy 1.19 clears the bit itself: {:#?}",
        f.outer
    );

    load(&vx.lab, &h1, CALICO);
    vx.lab.sh(&h1, "iptables -t nat -Z");
    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(f.reply == "from=10.244.1.0", "{:?}", f.reply);
    assert!(
        f.outer.iter().any(|e| e.reply.dst == "10.255.1.0"),
        "behind cali-POSTROUTING the outer entry should be masqueraded to 10.255.1.0: {:#?}",
        f.outer
    );
    // Evidence of who did what: Felix's tunnel rule bound the inner flow, kube-proxy's
    // MASQUERADE (reached by the still-marked outer packet) bound the outer one.
    assert_eq!(ipt_hits(&vx, "cali-POSTROUTING", "vxlan.calico"), 1);
    assert_eq!(
        ipt_hits(&vx, "KUBE-POSTROUTING", "requiring SNAT"),
        1,
        "only the outer packet reaches kube-proxy's MASQUERADE"
    );

    assert!(vx.lab.apply_fix(&h1, &guard_params()));
    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(f.reply == "from=10.244.1.0", "{:?}", f.reply);
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "with the guard no outer entry may be NATed: {:#?}",
        f.outer
    );
    assert!(guard_hits(&vx) > 0, "guard never fired");
}

/// Evidence for the README's "registration order": kube-proxy's nftables table and Calico's
/// iptables-nft nat table both run at postrouting priority 100. Of two hooks with equal
/// priority the kernel runs the one registered last first (nf_hook_entries_grow inserts a
/// new entry ahead of equal ones): Calico started after kube-proxy leaks, Calico started
/// before it does not; the guard fixes the leaking order.
#[test]
fn nft_nat_chains_of_equal_priority_run_last_registered_first() {
    let leaky = build(&[KP_NFT, CALICO], true);
    let f = flow(&leaky, &leaky.h1.clone(), "10.96.0.10:80");
    assert!(f.reply == "from=10.244.1.0", "{:?}", f.reply);
    assert!(
        f.outer.iter().any(|e| e.reply.dst == "10.255.1.0"),
        "Calico's chain registered last runs first: the outer entry should be masqueraded: {:#?}",
        f.outer
    );

    let clean = build(&[CALICO, KP_NFT], true);
    let f = flow(&clean, &clean.h1.clone(), "10.96.0.10:80");
    assert!(f.reply == "from=10.244.1.0", "{:?}", f.reply);
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "kube-proxy's chain registered last runs first and clears the bit before Calico binds: {:#?}",
        f.outer
    );
    drop(clean);

    assert!(leaky.lab.apply_fix(&leaky.h1, &guard_params()));
    let f = flow(&leaky, &leaky.h1.clone(), "10.96.0.10:80");
    assert!(
        !f.outer.is_empty(),
        "expected an outer vxlan conntrack entry"
    );
    assert!(
        f.outer.iter().all(|e| !natted(e)),
        "with the guard no outer entry may be NATed: {:#?}",
        f.outer
    );
}

/// Evidence for the guard's priority: every postrouting nat chain runs from the NAT core's one
/// hook at srcnat (100), so a filter chain at srcnat + 1 clears the mark after MASQUERADE has
/// already bound the outer entry. Ours sits at srcnat - 1.
#[test]
fn vxlan_guard_at_srcnat_plus_one_is_too_late() {
    let vx = build(&[KP_1_18_5], false);
    let h1 = vx.h1.clone();
    vx.lab.sh(
        &h1,
        "nft -f - <<'NFT'
table inet late_guard {
  chain g { type filter hook postrouting priority srcnat + 1; policy accept;
    oifname \"up1\" udp dport 4789 meta mark & 0x4000 == 0x4000 counter meta mark set meta mark & 0xffffbfff
  }
}
NFT",
    );
    let f = flow(&vx, &h1, "10.96.0.10:80");
    assert!(
        f.outer.iter().any(|e| e.reply.dst == "10.255.1.0"),
        "a guard after srcnat cannot prevent the masquerade: {:#?}",
        f.outer
    );
}
