//! `underlay doctor` against the real kernel, as root, in namespaces each test
//! creates and removes: a healthy lab host reports clean; each failure the
//! doctor checks is injected in turn and must be reported by its check id
//! with its severity (and by no other check), with the matching exit code.

mod doctorlab;

use std::path::Path;
use std::time::Duration;

use doctorlab::{assert_clean, problems, Lab, OVERLAY_ROLE};
use underlay::doctor::checks::*;
use underlay::doctor::Severity;

/// Loads the rules a component writes (`tests/fixtures/firewall/`) into the lab host, the way
/// it writes them: iptables-restore --noflush, or nft -f; Felix's ipsets first.
fn load_rules(lab: &Lab, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/firewall")
        .join(file);
    let path = path.display();
    let script = if file.ends_with(".nft") {
        format!("nft -f '{path}'")
    } else if file.starts_with("calico") {
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
    lab.sh(&lab.host, &script);
}

/// A Calico-style vxlan.calico on the lab host (local = the service IP on lo, bound to lo as
/// Calico binds it), a remote VTEP 10.10.0.12 and the Service range behind ToR a (the lab
/// runs no BGP here), and the remote pod block routed onlink.
const VXLAN_TO_REMOTE: &str = "ip route add 10.10.0.12/32 via 172.30.0.0 dev eth0
ip route add 10.96.0.0/16 via 172.30.0.0 dev eth0
ip link add vxlan.calico type vxlan id 4096 local 10.10.0.11 dev lo dstport 4789 nolearning
ip link set vxlan.calico mtu 1450 address 66:00:00:00:00:01
ip addr add 10.244.1.0/32 dev vxlan.calico
ip link set vxlan.calico up
ip neigh add 10.244.2.0 lladdr 66:00:00:00:00:02 dev vxlan.calico nud permanent
bridge fdb add 66:00:00:00:00:02 dev vxlan.calico dst 10.10.0.12 self permanent
ip route add 10.244.2.0/26 via 10.244.2.0 dev vxlan.calico onlink";

/// One datagram from the host to kube-proxy's Service 10.96.0.10:80 (DNATed to the remote
/// pod 10.244.2.10:8080): its outer packet creates the conntrack entry the doctor reads.
const SERVICE_FLOW: &str = "conntrack -F 2>/dev/null || true
echo x | socat -u - UDP:10.96.0.10:80";

fn expect_only(r: &underlay::doctor::DoctorReport, check: &str, sev: Severity) {
    assert_eq!(
        problems(r),
        [(check_id(check), sev)],
        "expected only {check} ({sev:?}):\n{}",
        r.human()
    );
    let code = if sev == Severity::Failure { 2 } else { 1 };
    assert_eq!(r.exit_code(), code);
    let f = r.get(check).unwrap();
    assert!(!f.evidence.is_empty() && !f.fix.is_empty(), "{f:#?}");
}

fn check_id(check: &str) -> &'static str {
    ALL.iter()
        .copied()
        .find(|c| *c == check)
        .expect("a known check id")
}

#[test]
fn healthy_lab_host_with_bgp_is_clean_then_paths_and_sessions_fail() {
    let mut lab = Lab::new();
    let _tor_a = lab.start_tor(0);
    let tor_b = lab.start_tor(1);
    lab.start_host_bird();
    let r = lab.doctor_until(true, Duration::from_secs(60), "a clean host", |r| {
        r.exit_code() == 0
    });
    assert_clean(&r);
    // Not vacuous: the BGP checks ran and saw both sessions and both paths.
    for id in [
        HOST_TABLE_PATHS,
        BGP_SESSIONS,
        BIRD_SHARED_TABLE,
        BGP_LISTENERS,
    ] {
        assert_eq!(r.get(id).unwrap().severity, Severity::Ok, "{}", r.human());
    }
    let paths = &r.get(HOST_TABLE_PATHS).unwrap().evidence[0];
    assert!(paths.contains("2 next hop(s), want 2"), "{paths}");
    let sessions = r.get(BGP_SESSIONS).unwrap().evidence.join("\n");
    assert!(
        sessions.contains("tor_a (profile): up Established"),
        "{sessions}"
    );
    assert!(
        sessions.contains("tor_b (profile): up Established"),
        "{sessions}"
    );
    let json = r.json();
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["profile"], true);
    // Generic mode finds the host BIRD by its process and reads its socket.
    let g = lab.doctor(false);
    assert_clean(&g);
    assert!(g
        .get(BGP_SESSIONS)
        .unwrap()
        .evidence
        .join(" ")
        .contains("Established"));
    assert!(g.get(BIRD_SHARED_TABLE).unwrap().evidence[0].contains("syncs ipv4 table 1001"));

    // ToR b stops announcing the default: one next hop, sessions still up.
    lab.birdc(&tor_b, "disable defroute");
    let r = lab.doctor_until(true, Duration::from_secs(30), "one path", |r| {
        r.get(HOST_TABLE_PATHS).unwrap().severity == Severity::Failure
    });
    expect_only(&r, HOST_TABLE_PATHS, Severity::Failure);
    assert!(r.get(HOST_TABLE_PATHS).unwrap().evidence[0].contains("1 next hop(s), want 2"));
    lab.birdc(&tor_b, "enable defroute");
    lab.doctor_until(true, Duration::from_secs(30), "two paths again", |r| {
        r.exit_code() == 0
    });

    // ToR b's session goes down: the host's tor_b is not Established.
    lab.birdc(&tor_b, "disable host");
    let r = lab.doctor_until(true, Duration::from_secs(30), "tor_b down", |r| {
        r.get(BGP_SESSIONS).unwrap().severity == Severity::Failure
            && r.get(HOST_TABLE_PATHS).unwrap().severity == Severity::Failure
    });
    assert_eq!(
        problems(&r),
        [
            (HOST_TABLE_PATHS, Severity::Failure),
            (BGP_SESSIONS, Severity::Failure)
        ],
        "{}",
        r.human()
    );
    assert_eq!(r.exit_code(), 2);
    let ev = r.get(BGP_SESSIONS).unwrap().evidence.join("\n");
    assert!(
        ev.contains("tor_b (profile)") && !ev.contains("tor_b (profile): up Established"),
        "{ev}"
    );
    assert!(r
        .human()
        .contains("FAILURES (break traffic)\n  [host-table-paths]"));
}

#[test]
fn bgp_sessions_fail_when_the_neighbor_never_answers() {
    // No ToR BIRDs at all: the host BIRD's neighbors never answer.
    let mut lab = Lab::new();
    lab.start_host_bird();
    let r = lab.doctor(true);
    assert_eq!(
        problems(&r),
        [
            (HOST_TABLE_PATHS, Severity::Failure),
            (BGP_SESSIONS, Severity::Failure)
        ],
        "{}",
        r.human()
    );
    let ev = r.get(BGP_SESSIONS).unwrap().evidence.join("\n");
    assert!(
        ev.contains("tor_a (profile)") && ev.contains("tor_b (profile)"),
        "{ev}"
    );
    assert!(r.get(HOST_TABLE_PATHS).unwrap().evidence[0].contains("0 next hop(s), want 2"));
    // And with no BIRD at all, the profile's socket does not answer.
    lab.kill("host-bird");
    let r = lab.doctor(true);
    assert!(
        r.get(BGP_SESSIONS).unwrap().evidence[0].contains("BIRD not answering"),
        "{}",
        r.human()
    );
}

#[test]
fn healthy_lab_host_without_profile_is_clean() {
    let lab = Lab::new();
    let r = lab.doctor(false);
    eprintln!("{}", r.human());
    assert_clean(&r);
    assert!(!r.profile);
    // The generic uplinks were found (checks ran, not skipped).
    for id in [MASQUERADE_TRANSIT, TRANSIT_GLOBAL, RP_FILTER] {
        assert_eq!(r.get(id).unwrap().severity, Severity::Ok, "{}", r.human());
    }
    let t = r.get(TRANSIT_GLOBAL).unwrap().evidence.join(" ");
    assert!(
        t.contains("eth0 172.30.0.1/31") && t.contains("eth1 172.30.1.1/31"),
        "{t}"
    );
}

#[test]
fn global_transit_warns_and_masquerade_out_of_it_fails() {
    let lab = Lab::new();
    assert_clean(&lab.doctor(false));
    lab.sh(
        &lab.host,
        "ip addr del 172.30.0.1/31 dev eth0; ip addr add 172.30.0.1/31 dev eth0 scope global",
    );
    let r = lab.doctor(false);
    expect_only(&r, TRANSIT_GLOBAL, Severity::Warning);
    lab.sh(
        &lab.host,
        "iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE",
    );
    let r = lab.doctor(false);
    assert_eq!(
        problems(&r),
        [
            (MASQUERADE_TRANSIT, Severity::Failure),
            (TRANSIT_GLOBAL, Severity::Warning)
        ],
        "{}",
        r.human()
    );
    assert_eq!(r.exit_code(), 2);
    eprintln!(
        "{}\n{}",
        r.human(),
        serde_json::to_string_pretty(&r.json()).unwrap()
    );
    let ev = r.get(MASQUERADE_TRANSIT).unwrap().evidence.join("\n");
    assert!(ev.contains("eth0: MASQUERADE picks 172.30.0.1/31"), "{ev}");
    assert!(ev.contains("-A POSTROUTING -o eth0 -j MASQUERADE"), "{ev}");
    // underlay apply puts scope link back: clean again (the rule stays, harmless).
    lab.apply(&lab.path("role.toml"));
    assert_clean(&lab.doctor(false));
}

#[test]
fn vxlan_with_kube_proxy_mark_fails_until_the_guard_exists() {
    let lab = Lab::new();
    lab.sh(
        &lab.host,
        "ip link add vxlan.calico type vxlan id 4096 local 10.10.0.11 dstport 4789 nolearning
         ip link set vxlan.calico up",
    );
    let r = lab.doctor(false);
    assert_clean(&r);
    assert!(r.get(TUNNEL_MARK).unwrap().evidence[0].contains("vxlan.calico (vxlan port 4789)"));
    load_rules(&lab, "kube-proxy-1.18.5.iptables-restore");
    let r = lab.doctor(false);
    expect_only(&r, TUNNEL_MARK, Severity::Failure);
    let ev = r.get(TUNNEL_MARK).unwrap().evidence.join("\n");
    assert!(
        ev.contains("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully"),
        "{ev}"
    );
    // The overlay profile turns the guard on: `inet underlay mark_guard`.
    lab.apply(Path::new(OVERLAY_ROLE));
    let r = lab.doctor(false);
    assert_clean(&r);
    let ev = r.get(TUNNEL_MARK).unwrap().evidence.join("\n");
    assert!(ev.contains("guard: nft inet underlay mark_guard"), "{ev}");
}

/// Issue 10 on the real kernel: kube-proxy >= 1.19 behind Calico Felix's cali-POSTROUTING.
/// The doctor reports the ordering from the rules alone; once a Service flow ran, the outer
/// VXLAN entry is NATed with only its source port rewritten (transits are scope link, so
/// MASQUERADE --random-fully keeps the service IP) and conntrack-tunnel-nat reports it too.
/// The overlay profile's guard makes the host clean.
#[test]
fn kube_proxy_1_19_behind_calico_fails_and_port_only_nat_is_reported() {
    let lab = Lab::new();
    lab.sh(&lab.host, VXLAN_TO_REMOTE);
    load_rules(&lab, "kube-proxy-1.19.iptables-restore");
    let r = lab.doctor(false);
    assert_clean(&r);
    assert!(
        r.get(TUNNEL_MARK)
            .unwrap()
            .title
            .contains("clears the masquerade mark before its MASQUERADE"),
        "{}",
        r.human()
    );

    load_rules(&lab, "calico-felix.iptables-restore");
    let r = lab.doctor(false);
    expect_only(&r, TUNNEL_MARK, Severity::Failure);
    let ev = r.get(TUNNEL_MARK).unwrap().evidence.join("\n");
    assert!(
        ev.contains("runs ahead of the clearing, earlier in iptables-save *nat POSTROUTING (via POSTROUTING > cali-POSTROUTING): iptables-save *nat: -A cali-POSTROUTING -o vxlan.calico"),
        "{ev}"
    );

    lab.sh(&lab.host, SERVICE_FLOW);
    let r = lab.doctor(false);
    eprintln!("{}", r.human());
    assert_eq!(
        problems(&r),
        [
            (TUNNEL_MARK, Severity::Failure),
            (CONNTRACK_TUNNEL_NAT, Severity::Failure)
        ],
        "{}",
        r.human()
    );
    let f = r.get(CONNTRACK_TUNNEL_NAT).unwrap();
    assert!(
        f.evidence.iter().any(|e| e.contains("dport=4789")
            && e.contains("(sent from 10.10.0.11:")
            && e.ends_with("only the source port was rewritten")),
        "{f:#?}"
    );

    lab.apply(Path::new(OVERLAY_ROLE));
    lab.sh(&lab.host, SERVICE_FLOW);
    let r = lab.doctor(false);
    assert_clean(&r);
    assert!(r
        .get(TUNNEL_MARK)
        .unwrap()
        .evidence
        .join("\n")
        .contains("guard: nft inet underlay mark_guard: meta oifname={eth0,eth1}"));
}

/// kube-proxy's nftables mode next to Calico's iptables-nft rules: both nat chains at
/// priority 100, so the doctor can only warn (which runs first depends on start-up order).
#[test]
fn kube_proxy_nftables_next_to_calico_warns_until_the_guard_exists() {
    let lab = Lab::new();
    lab.sh(&lab.host, VXLAN_TO_REMOTE);
    load_rules(&lab, "kube-proxy-nftables.nft");
    assert_clean(&lab.doctor(false));
    load_rules(&lab, "calico-felix.iptables-restore");
    let r = lab.doctor(false);
    expect_only(&r, TUNNEL_MARK, Severity::Warning);
    let ev = r.get(TUNNEL_MARK).unwrap().evidence.join("\n");
    assert!(
        ev.contains("at the same priority 100 as nft ip kube-proxy nat-postrouting"),
        "{ev}"
    );
    lab.apply(Path::new(OVERLAY_ROLE));
    assert_clean(&lab.doctor(false));
}

#[test]
fn natted_outer_vxlan_conntrack_entries_fail() {
    let lab = Lab::new();
    // The failure of docs/background.md failure 4, for real: a global transit, a VXLAN tunnel
    // to another host, and kube-proxy-style marking of the inner traffic.
    lab.sh(
        &lab.host,
        "ip addr del 172.30.0.1/31 dev eth0; ip addr add 172.30.0.1/31 dev eth0 scope global
         ip route add 10.10.0.12/32 via 172.30.0.0 dev eth0
         ip link add vxlan.calico type vxlan id 4096 local 10.10.0.11 dstport 4789 nolearning
         ip link set vxlan.calico address 66:00:00:00:00:01
         ip addr add 10.244.1.0/32 dev vxlan.calico
         ip link set vxlan.calico up
         ip neigh add 10.244.2.0 lladdr 66:00:00:00:00:02 dev vxlan.calico nud permanent
         bridge fdb add 66:00:00:00:00:02 dev vxlan.calico dst 10.10.0.12 self permanent
         ip route add 10.244.2.0/26 via 10.244.2.0 dev vxlan.calico onlink
         iptables -t nat -A OUTPUT -d 10.244.2.0/24 -j MARK --set-xmark 0x4000/0x4000
         iptables -t nat -A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
         conntrack -F 2>/dev/null || true
         echo x | socat -u - UDP:10.244.2.10:80",
    );
    let r = lab.doctor(false);
    let f = r.get(CONNTRACK_TUNNEL_NAT).unwrap();
    assert_eq!(f.severity, Severity::Failure, "{}", r.human());
    assert!(
        f.evidence
            .iter()
            .any(|e| e.contains("dport=4789") && e.contains("reply to 172.30.0.1")),
        "{f:#?}"
    );
    assert_eq!(
        problems(&r),
        [
            (MASQUERADE_TRANSIT, Severity::Failure),
            (TRANSIT_GLOBAL, Severity::Warning),
            (TUNNEL_MARK, Severity::Failure),
            (CONNTRACK_TUNNEL_NAT, Severity::Failure),
        ],
        "{}",
        r.human()
    );
    // Once the entries are gone the conntrack check is clean again.
    lab.sh(&lab.host, "conntrack -F");
    assert_eq!(
        lab.doctor(false)
            .get(CONNTRACK_TUNNEL_NAT)
            .unwrap()
            .severity,
        Severity::Ok
    );
}

#[test]
fn two_bgp_listeners_on_one_address_and_port_fail() {
    let mut lab = Lab::new();
    let host = lab.host.clone();
    for name in ["socat1", "socat2"] {
        lab.spawn(
            name,
            &host,
            &[
                "socat",
                "TCP-LISTEN:179,bind=10.10.0.11,reuseaddr,reuseport,fork",
                "EXEC:/bin/true",
            ],
        );
    }
    let r = lab.doctor_until(false, Duration::from_secs(5), "two listeners", |r| {
        r.get(BGP_LISTENERS).unwrap().severity != Severity::Ok
    });
    expect_only(&r, BGP_LISTENERS, Severity::Failure);
    let ev = &r.get(BGP_LISTENERS).unwrap().evidence[0];
    assert!(
        ev.matches("10.10.0.11:179 held by socat").count() == 2,
        "{ev}"
    );
    lab.kill("socat2");
    assert_clean(&lab.doctor(false));
}

#[test]
fn two_birds_syncing_one_kernel_table_fail() {
    let mut lab = Lab::new();
    let host = lab.host.clone();
    for (i, name) in ["bird-a", "bird-b"].into_iter().enumerate() {
        let conf = lab.path(&format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "router id 10.10.0.{};\nprotocol device {{}}\nprotocol kernel {{ ipv4 {{ import none; export none; }}; }}\n",
                i + 1
            ),
        )
        .unwrap();
        let sock = lab.path(&format!("{name}.ctl"));
        lab.bird(name, &host, &conf, &sock);
        let r = lab.doctor(false);
        if i == 0 {
            assert_clean(&r);
            assert_eq!(r.get(BIRD_SHARED_TABLE).unwrap().severity, Severity::Ok);
        } else {
            expect_only(&r, BIRD_SHARED_TABLE, Severity::Failure);
            let ev = r.get(BIRD_SHARED_TABLE).unwrap().evidence.join("\n");
            assert!(
                ev.contains("bird-a.conf") && ev.contains("bird-b.conf"),
                "{ev}"
            );
            assert!(ev.contains("main (254)"), "{ev}");
        }
    }
}

#[test]
fn strict_rp_filter_on_an_uplink_warns() {
    let lab = Lab::new();
    assert_clean(&lab.doctor(false));
    lab.sh(&lab.host, "sysctl -qw net.ipv4.conf.eth1.rp_filter=1");
    let r = lab.doctor(false);
    expect_only(&r, RP_FILTER, Severity::Warning);
    assert!(r.get(RP_FILTER).unwrap().evidence[0].starts_with("eth1: rp_filter strict"));
    let j = r.json();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["summary"]["warning"], 1);
}

/// systemd-networkd and NetworkManager cannot run here: their state files are
/// simulated below the scratch root (the doctor detects them from files only).
#[test]
fn networkd_and_network_manager_on_uplinks_warn() {
    let lab = Lab::new();
    let eth0 = lab.ifindex("eth0");
    let eth1 = lab.ifindex("eth1");
    lab.write(
        &format!("/run/systemd/netif/links/{eth0}"),
        "# This is private data. Do not parse.\nADMIN_STATE=configured\nOPER_STATE=routable\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\n",
    );
    let r = lab.doctor(false);
    expect_only(&r, NETWORKD, Severity::Warning);
    assert!(r
        .get(NETWORKD)
        .unwrap()
        .evidence
        .join(" ")
        .contains("ManageForeignRoutes=yes (default)"));
    lab.write(
        "/etc/systemd/networkd.conf.d/underlay.conf",
        "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n",
    );
    assert_clean(&lab.doctor(false));

    lab.write(
        &format!("/run/NetworkManager/devices/{eth1}"),
        "[device]\nmanaged=true\n",
    );
    let r = lab.doctor(false);
    expect_only(&r, NETWORK_MANAGER, Severity::Warning);
    assert!(r.get(NETWORK_MANAGER).unwrap().evidence[0].starts_with("eth1: managed=true"));
    lab.write(
        &format!("/run/NetworkManager/devices/{eth1}"),
        "[device]\nmanaged=false\n",
    );
    assert_clean(&lab.doctor(false));
}

#[test]
fn kubelet_node_ip_other_than_the_service_ip_warns() {
    let mut lab = Lab::new();
    let _a = lab.start_tor(0);
    let _b = lab.start_tor(1);
    lab.start_host_bird();
    lab.write(
        "/var/lib/kubelet/kubeadm-flags.env",
        "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///run/containerd/containerd.sock --node-ip=172.30.0.1\"\n",
    );
    // With the profile, once BGP is up.
    let r = lab.doctor_until(true, Duration::from_secs(60), "BGP up", |r| {
        r.get(BGP_SESSIONS).unwrap().severity == Severity::Ok
            && r.get(HOST_TABLE_PATHS).unwrap().severity == Severity::Ok
    });
    expect_only(&r, KUBELET_NODE_IP, Severity::Warning);
    assert!(r.get(KUBELET_NODE_IP).unwrap().evidence[0]
        .contains("--node-ip=172.30.0.1; wanted the profile's service IP: 10.10.0.11"));
    // Without: the service IP is the global /32 on lo.
    expect_only(&lab.doctor(false), KUBELET_NODE_IP, Severity::Warning);
    lab.write(
        "/var/lib/kubelet/kubeadm-flags.env",
        "KUBELET_KUBEADM_ARGS=\"--node-ip=10.10.0.11\"\n",
    );
    assert_clean(&lab.doctor(true));
    let r = lab.doctor(false);
    assert_clean(&r);
    assert_eq!(r.get(KUBELET_NODE_IP).unwrap().severity, Severity::Ok);
}

/// Not a test: runs the doctor inside an existing namespace (for example a
/// `vm-tests` lab host) and prints both reports. Read-only.
/// `DOCTOR_NETNS=ul-h1 DOCTOR_ROOT=/tmp/underlay-lab/h1/root DOCTOR_PROFILE=profiles/l3-ecmp-calico.toml
///  DOCTOR_HOST=/tmp/underlay-lab/h1/host.toml cargo test --test doctor_netns -- --ignored --nocapture probe`
#[test]
#[ignore]
fn probe_named_namespace() {
    let ns = std::env::var("DOCTOR_NETNS").expect("DOCTOR_NETNS");
    let root = std::env::var("DOCTOR_ROOT").unwrap_or_else(|_| "/".into());
    let desired = match (
        std::env::var("DOCTOR_PROFILE"),
        std::env::var("DOCTOR_HOST"),
    ) {
        (Ok(p), Ok(h)) => {
            Some(underlay::profile::load(Path::new(&p), Path::new(&h)).expect("profile"))
        }
        _ => None,
    };
    let r = underlay_testkit::on_thread(&ns, move || {
        let state = Path::new(underlay::system::linux::DEFAULT_STATE_PATH);
        let mut sys = underlay::system::linux::LinuxSystem::new(Path::new(&root), state, true)
            .expect("netlink");
        underlay::doctor::run(&mut sys, desired.as_ref())
    });
    if std::env::var_os("DOCTOR_JSON").is_some() {
        println!("{}", serde_json::to_string_pretty(&r.json()).unwrap());
    } else {
        println!("{}", r.human());
    }
}
