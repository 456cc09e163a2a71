//! docs/background.md failure 3, reproduced on a real kernel: MASQUERADE picks the egress interface's
//! primary address, a transit /31 the fabric does not route, so replies never come back.
//!
//! Topology (all namespaces created here, removed on drop):
//! ```text
//!  pod 10.244.1.10 ──cali1── host (lo 10.10.0.11/32) ──up1 10.255.1.0/31── tor1 ──┐
//!                                                     ──up2 10.255.2.0/31── tor2 ──┴─ client (lo 10.99.0.10)
//! ```
//! The ToRs route the service IP and the client; the client routes only 10.10.0.0/16 (service
//! IPs) back into the fabric, never transit addresses. The host has the MASQUERADE rule
//! kube-proxy/Calico natOutgoing install:
//! `-t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE`.

mod natlab;

use natlab::{conntrack, Lab};
use underlay::nft::{NatMode, NatParams};

const SERVICE_IP: &str = "10.10.0.11";
const CLIENT: &str = "10.99.0.10";
const TRANSITS: [&str; 2] = ["10.255.1.0", "10.255.2.0"];

struct Masq {
    lab: Lab,
    host: String,
    pod: String,
    client: String,
    dir: tempfile::TempDir,
}

fn build(tag: &str, transit_scope_link: bool) -> Masq {
    let mut lab = Lab::new(tag);
    let host = lab.ns("h");
    let tor1 = lab.ns("t1");
    let tor2 = lab.ns("t2");
    let client = lab.ns("c");
    let pod = lab.ns("pod");
    let scope = if transit_scope_link { "scope link" } else { "" };

    lab.sh(&host, &format!("ip addr add {SERVICE_IP}/32 dev lo"));
    for (i, tor) in [(1, &tor1), (2, &tor2)] {
        lab.veth(&host, &format!("up{i}"), tor, "host");
        lab.sh(
            &host,
            &format!("ip addr add 10.255.{i}.0/31 dev up{i} {scope}"),
        );
        lab.sh(tor, &format!("ip addr add 10.255.{i}.1/31 dev host"));
        lab.veth(&client, &format!("c{i}"), tor, "client");
        lab.sh(&client, &format!("ip addr add 10.254.{i}.1/31 dev c{i}"));
        lab.sh(
            tor,
            &format!(
                "ip addr add 10.254.{i}.0/31 dev client
                 ip route add {SERVICE_IP}/32 via 10.255.{i}.0 dev host
                 ip route add {CLIENT}/32 via 10.254.{i}.1 dev client"
            ),
        );
    }
    lab.sh(
        &client,
        &format!(
            "ip addr add {CLIENT}/32 dev lo
             ip route add 10.10.0.0/16 src {CLIENT} nexthop via 10.254.1.0 dev c1 nexthop via 10.254.2.0 dev c2"
        ),
    );
    lab.sh(
        &host,
        "ip route add default nexthop via 10.255.1.1 dev up1 nexthop via 10.255.2.1 dev up2",
    );
    // Calico-style pod: /32, default via 169.254.1.1 answered by proxy ARP on the host side.
    lab.veth(&pod, "eth0", &host, "cali1");
    lab.sh(
        &pod,
        "ip addr add 10.244.1.10/32 dev eth0
         ip route add 169.254.1.1 dev eth0 scope link
         ip route add default via 169.254.1.1 dev eth0",
    );
    lab.sh(
        &host,
        "sysctl -qw net.ipv4.conf.cali1.proxy_arp=1 net.ipv4.neigh.cali1.proxy_delay=0
         ip route add 10.244.1.10/32 dev cali1 scope link
         iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE",
    );
    Masq {
        lab,
        host,
        pod,
        client,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

#[derive(Debug)]
struct Probe {
    /// SOCAT_PEERADDR the client's listener saw.
    client_saw: Option<String>,
    /// The pod got the client's answer back.
    replied: bool,
    /// Reply-tuple destination of the host's conntrack entry for the flow.
    ct_reply_dst: Option<String>,
    ct_line: String,
}

fn probe(m: &mut Masq, port: u16) -> Probe {
    let file = m.dir.path().join(format!("peer-{port}"));
    let file = file.display().to_string();
    let client = m.client.clone();
    m.lab.spawn(
        &client,
        &format!(
            "socat -T2 UDP-RECVFROM:{port},fork SYSTEM:'read -r _; echo $SOCAT_PEERADDR >> {file}; echo pong'"
        ),
    );
    m.lab.wait_udp(&client, port);
    let (_, out, err) = m.lab.try_sh(
        &m.pod,
        &format!("echo ping | timeout 6 socat -t3 -T3 - UDP:{CLIENT}:{port}"),
    );
    let client_saw = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string));
    let entries = conntrack(&m.lab, &m.host, &format!("-p udp --dport {port}"));
    let entry = entries.iter().find(|e| e.orig.src == "10.244.1.10");
    let p = Probe {
        client_saw,
        replied: out.contains("pong"),
        ct_reply_dst: entry.map(|e| e.reply.dst.clone()),
        ct_line: entry.map(|e| e.line.clone()).unwrap_or_default(),
    };
    eprintln!("probe udp/{port}: {p:?} (pod stderr: {})", err.trim());
    p
}

fn assert_transit_and_lost(p: &Probe) {
    let saw = p.client_saw.as_deref().unwrap_or("nothing");
    assert!(
        TRANSITS.contains(&saw),
        "without the fix the client should see a transit source, saw {saw}"
    );
    let dst = p.ct_reply_dst.as_deref().unwrap_or("no entry");
    assert!(
        TRANSITS.contains(&dst),
        "conntrack reply tuple should point at a transit address: {}",
        p.ct_line
    );
    assert!(
        p.ct_line.contains("[UNREPLIED]"),
        "entry should be unreplied: {}",
        p.ct_line
    );
    assert!(!p.replied, "the reply must not come back without the fix");
}

/// With the fix on, one UDP exchange is retried once on another port when
/// its reply is lost: a single lost datagram under CI load is not the bug
/// (the source address is checked on every attempt, and the retry must
/// complete). Seen once in CI: client saw the service IP, no reply in 3 s.
fn probe_with_fix(m: &mut Masq, port: u16) -> Probe {
    let first = probe(m, port);
    if first.replied || first.client_saw.as_deref() != Some(SERVICE_IP) {
        return first;
    }
    eprintln!(
        "udp/{port}: source right but no reply; retrying once on {}",
        port + 100
    );
    probe(m, port + 100)
}

fn assert_service_ip_and_replied(p: &Probe) {
    assert_eq!(
        p.client_saw.as_deref(),
        Some(SERVICE_IP),
        "client saw: {p:?}"
    );
    assert_eq!(
        p.ct_reply_dst.as_deref(),
        Some(SERVICE_IP),
        "conntrack: {}",
        p.ct_line
    );
    assert!(p.replied, "the exchange should complete: {p:?}");
}

#[test]
fn masquerade_picks_transit_without_fix_and_service_ip_with_scope_link() {
    // Fix off: transit addresses at global scope.
    let mut global = build("mg", false);
    let off = probe(&mut global, 9001);
    assert_transit_and_lost(&off);
    drop(global);

    // Fix on: the same topology with transit addresses at `scope link`, no nft table.
    let mut link = build("ml", natlab::fix_enabled());
    let on = probe_with_fix(&mut link, 9002);
    assert_service_ip_and_replied(&on);
}

#[test]
fn masquerade_picks_transit_without_fix_and_service_ip_with_snat_table() {
    let mut m = build("ms", false);
    let off = probe(&mut m, 9011);
    assert_transit_and_lost(&off);

    let params = NatParams {
        mode: NatMode::Snat,
        service_ipv4: SERVICE_IP.parse().unwrap(),
        uplinks: vec!["up1".into(), "up2".into()],
        pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        guard: None,
    };
    assert!(
        m.lab.apply_fix(&m.host, &params),
        "first apply creates the table"
    );
    let masq_before = masquerade_packets(&m);
    let on = probe_with_fix(&mut m, 9012);
    assert_service_ip_and_replied(&on);

    // Evidence that our chain (srcnat - 10), not the MASQUERADE rule (srcnat), bound the flow.
    let table = m.lab.sh(&m.host, "nft list table inet underlay");
    eprintln!("{table}");
    let pod_rule = table
        .lines()
        .find(|l| l.contains("ip saddr 10.244.0.0/16"))
        .expect("pod egress rule listed");
    assert!(
        !pod_rule.contains("counter packets 0 "),
        "pod egress rule never matched: {pod_rule}"
    );
    assert_eq!(
        masquerade_packets(&m),
        masq_before,
        "MASQUERADE must not see the flow once our SNAT chain bound it"
    );
}

/// Packet count of the host's iptables MASQUERADE rule.
fn masquerade_packets(m: &Masq) -> u64 {
    let out = m.lab.sh(&m.host, "iptables -t nat -L POSTROUTING -v -x -n");
    out.lines()
        .find(|l| l.contains("MASQUERADE"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("MASQUERADE rule listed")
}
