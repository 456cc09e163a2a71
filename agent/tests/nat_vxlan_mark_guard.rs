//! docs/background.md failure 4, reproduced with VXLAN (this kernel has no ipip): kube-proxy <= 1.19
//! marks service traffic 0x4000 and never clears it; the mark survives encapsulation, so the
//! *outer* UDP packet of `vxlan.calico` hits `KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j
//! MASQUERADE` and its conntrack entry is masqueraded to the uplink's transit address.
//!
//! Topology: two hosts (service IPs 10.10.0.11/12 on lo, global transit /31 to one ToR), each
//! with a Calico-style `vxlan.calico` (VNI 4096, port 4789, static neighbour + fdb, the other
//! host's pod block routed via it `onlink`) and a pod. Host 1 has kube-proxy 1.19-style nat
//! rules DNATing VIP 10.96.0.10:80/udp to pod 10.244.2.10:8080 on host 2.

mod natlab;

use natlab::{conntrack, CtEntry, Lab};
use underlay::nft::{MarkGuard, NatMode, NatParams};

const KUBE_PROXY_1_19: &str = "
iptables -t nat -N KUBE-MARK-MASQ
iptables -t nat -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
iptables -t nat -N KUBE-POSTROUTING
iptables -t nat -A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
iptables -t nat -A POSTROUTING -j KUBE-POSTROUTING
iptables -t nat -N KUBE-SERVICES
iptables -t nat -A OUTPUT -j KUBE-SERVICES
iptables -t nat -A PREROUTING -j KUBE-SERVICES
iptables -t nat -N KUBE-SVC-TEST
iptables -t nat -A KUBE-SERVICES -d 10.96.0.10/32 -p udp --dport 80 -j KUBE-SVC-TEST
iptables -t nat -A KUBE-SVC-TEST ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
iptables -t nat -A KUBE-SVC-TEST -p udp -j DNAT --to-destination 10.244.2.10:8080
";

struct Vx {
    lab: Lab,
    h1: String,
    p1: String,
}

fn build() -> Vx {
    let mut lab = Lab::new("vx");
    let tor = lab.ns("t");
    let h1 = lab.ns("h1");
    let h2 = lab.ns("h2");
    let p1 = lab.ns("p1");
    let p2 = lab.ns("p2");
    for (i, h, p) in [(1, &h1, &p1), (2, &h2, &p2)] {
        lab.veth(h, "up1", &tor, &format!("h{i}"));
        lab.sh(
            h,
            &format!(
                "ip addr add 10.10.0.1{i}/32 dev lo
                 ip addr add 10.255.{i}.0/31 dev up1
                 ip route add default via 10.255.{i}.1 dev up1
                 ip link add vxlan.calico type vxlan id 4096 local 10.10.0.1{i} dstport 4789 nolearning
                 ip link set vxlan.calico address 66:00:00:00:00:0{i}
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
    lab.sh(&h1, KUBE_PROXY_1_19);
    for port in [8080, 8081] {
        lab.spawn(
            &p2,
            &format!("socat -T3 UDP-RECVFROM:{port},fork SYSTEM:'echo pong'"),
        );
        lab.wait_udp(&p2, port);
    }
    Vx { lab, h1, p1 }
}

/// Flushes host 1's conntrack, sends one datagram from `ns` to `dst`, returns host 1's outer
/// VXLAN entries (original direction leaving host 1).
fn flow(vx: &Vx, ns: &str, dst: &str) -> (bool, Vec<CtEntry>) {
    vx.lab.sh(&vx.h1, "conntrack -F 2>/dev/null || true");
    let (_, out, _) = vx.lab.try_sh(
        ns,
        &format!("echo ping | timeout 6 socat -t3 -T3 - UDP:{dst}"),
    );
    let outer: Vec<CtEntry> = conntrack(&vx.lab, &vx.h1, "-p udp --dport 4789")
        .into_iter()
        .filter(|e| e.orig.src == "10.10.0.11" && e.orig.dport == "4789")
        .collect();
    eprintln!("flow {ns} -> {dst}: replied={}", out.contains("pong"));
    for e in &outer {
        eprintln!("  outer: {}", e.line);
    }
    (out.contains("pong"), outer)
}

fn masqueraded(e: &CtEntry) -> bool {
    e.reply.dst != e.orig.src
}

#[test]
fn vxlan_outer_packet_masqueraded_without_guard_and_not_with_guard() {
    let vx = build();
    let h1 = vx.h1.clone();
    let p1 = vx.p1.clone();

    // Fix off. A plain pod-to-pod flow: no mark, outer entry not NATed.
    let (ok, outer) = flow(&vx, &p1, "10.244.2.10:8081");
    assert!(ok, "pod-to-pod over vxlan should work");
    assert!(!outer.is_empty(), "expected an outer vxlan conntrack entry");
    assert!(outer.iter().all(|e| !masqueraded(e)), "{outer:#?}");

    // The service flow (host network -> VIP, KUBE-MARK-MASQ, DNAT to the remote pod): the
    // marked outer packet is masqueraded to the transit address 10.255.1.0.
    let (_, outer) = flow(&vx, &h1, "10.96.0.10:80");
    assert!(
        outer
            .iter()
            .any(|e| masqueraded(e) && e.reply.dst == "10.255.1.0"),
        "without the guard the outer entry should be masqueraded to 10.255.1.0: {outer:#?}"
    );

    // Fix on: our table with only the guard chain.
    let params = NatParams {
        mode: NatMode::None,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: vec!["up1".into()],
        pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        guard: Some(MarkGuard::default()),
    };
    assert!(vx.lab.apply_fix(&h1, &params));
    let (ok, outer) = flow(&vx, &h1, "10.96.0.10:80");
    assert!(ok, "service flow should complete");
    assert!(!outer.is_empty(), "expected an outer vxlan conntrack entry");
    assert!(
        outer.iter().all(|e| !masqueraded(e)),
        "with the guard no outer entry may be NATed: {outer:#?}"
    );
    let nat = conntrack(&vx.lab, &h1, "-p udp --dport 4789 --src-nat");
    assert!(
        nat.is_empty(),
        "conntrack --src-nat lists outer entries: {nat:#?}"
    );
    let table = vx.lab.sh(&h1, "nft list chain inet underlay mark_guard");
    eprintln!("{table}");
    let vxlan_rule = table
        .lines()
        .find(|l| l.contains("udp dport 4789"))
        .expect("vxlan rule");
    assert!(
        !vxlan_rule.contains("counter packets 0 "),
        "guard never fired: {vxlan_rule}"
    );
}

/// Evidence for the guard's priority: every postrouting nat chain runs from the NAT core's one
/// hook at srcnat (100), so a filter chain at srcnat + 1 clears the mark after MASQUERADE has
/// already bound the outer entry. Ours sits at srcnat - 1.
#[test]
fn vxlan_guard_at_srcnat_plus_one_is_too_late() {
    let vx = build();
    let h1 = vx.h1.clone();
    vx.lab.sh(
        &h1,
        "nft -f - <<'NFT'
table inet late_guard {
  chain g { type filter hook postrouting priority srcnat + 1; policy accept;
    udp dport 4789 meta mark & 0x4000 == 0x4000 counter meta mark set meta mark & 0xffffbfff
  }
}
NFT",
    );
    let (_, outer) = flow(&vx, &h1, "10.96.0.10:80");
    assert!(
        outer
            .iter()
            .any(|e| masqueraded(e) && e.reply.dst == "10.255.1.0"),
        "a guard after srcnat cannot prevent the masquerade: {outer:#?}"
    );
}
