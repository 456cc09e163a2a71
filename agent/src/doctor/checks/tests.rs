//! Every check on hand-built snapshots: a healthy host is clean, and each
//! injected failure is reported by its check with its severity, and by no other.

use std::path::PathBuf;

use super::*;
use crate::doctor::snapshot::{Address, BirdProcess, BirdSessions, ExpectedUplink, Link, Listener};
use crate::observed::{NextHop, Scope};
use crate::system::BirdProtocol;

fn addr(index: u32, ifname: &str, prefix: &str, scope: Scope) -> Address {
    Address {
        index,
        ifname: ifname.into(),
        prefix: prefix.parse().unwrap(),
        scope,
    }
}

fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
    Link {
        index,
        name: name.into(),
        kind: kind.map(str::to_string),
        vxlan_port: (kind == Some("vxlan")).then_some(4789),
    }
}

fn proto(name: &str, info: &str) -> BirdProtocol {
    BirdProtocol {
        name: name.into(),
        proto: "BGP".into(),
        state: if info.starts_with("Established") {
            "up"
        } else {
            "start"
        }
        .into(),
        info: info.into(),
    }
}

const HOST_BIRD: &str = "protocol device {}\nprotocol kernel kernel_host { ipv4 { export where source = RTS_BGP; }; kernel table 1001; merge paths on; }\nprotocol bgp tor_a {}\n";
const CALICO_BIRD: &str = "protocol kernel {\n  learn;\n  export all;\n}\n";

/// A converged host: service IP on lo, scope-link transits, loose rp_filter,
/// the host BIRD (table 1001) and Calico's BIRD (main) on different ports.
fn healthy() -> Snapshot {
    let mut s = Snapshot {
        links: vec![
            link(1, "lo", None),
            link(2, "eth0", Some("veth")),
            link(3, "eth1", Some("veth")),
        ],
        addresses: vec![
            addr(1, "lo", "127.0.0.1/8", Scope::Host),
            addr(1, "lo", "10.10.0.11/32", Scope::Global),
            addr(2, "eth0", "172.30.0.1/31", Scope::Link),
            addr(3, "eth1", "172.30.1.1/31", Scope::Link),
        ],
        iptables: vec![(
            "iptables-save".into(),
            "*nat\n-A POSTROUTING -o eth+ -j MASQUERADE\nCOMMIT\n".into(),
        )],
        nft_ruleset: Some(serde_json::json!({"nftables": []})),
        conntrack: Some(String::new()),
        listeners: vec![
            Listener {
                addr: "0.0.0.0".parse().unwrap(),
                port: 179,
                inode: 10,
                owners: vec![(100, "bird".into())],
            },
            Listener {
                addr: "127.0.0.2".parse().unwrap(),
                port: 1179,
                inode: 11,
                owners: vec![(200, "bird".into())],
            },
        ],
        birds: vec![
            BirdProcess {
                pid: 100,
                comm: "bird".into(),
                config_path: "/etc/bird/bird.conf".into(),
                config: Some(HOST_BIRD.into()),
                socket: "/run/bird/bird.ctl".into(),
            },
            BirdProcess {
                pid: 200,
                comm: "bird".into(),
                config_path: "/etc/calico/confd/config/bird.cfg".into(),
                config: Some(CALICO_BIRD.into()),
                socket: "/var/run/calico/bird.ctl".into(),
            },
        ],
        host_nexthops: Some(Ok(vec![
            NextHop {
                gateway: Some("172.30.0.0".parse().unwrap()),
                oif: 2,
            },
            NextHop {
                gateway: Some("172.30.1.0".parse().unwrap()),
                oif: 3,
            },
        ])),
        bird_sessions: vec![BirdSessions {
            socket: "/run/bird/bird.ctl".into(),
            owner: "profile".into(),
            protocols: Ok(vec![
                proto("tor_a", "Established"),
                proto("tor_b", "Established"),
            ]),
        }],
        ..Snapshot::default()
    };
    for (k, v) in [("all", "0"), ("eth0", "2"), ("eth1", "2")] {
        s.sysctls
            .insert(format!("net.ipv4.conf.{k}.rp_filter"), v.into());
    }
    s
}

fn expect() -> Expect {
    Expect {
        uplinks: vec![
            ExpectedUplink {
                role: "tor-a".into(),
                ifname: "eth0".into(),
                index: 2,
                transit: vec!["172.30.0.1/31".parse().unwrap()],
            },
            ExpectedUplink {
                role: "tor-b".into(),
                ifname: "eth1".into(),
                index: 3,
                transit: vec!["172.30.1.1/31".parse().unwrap()],
            },
        ],
        service_ipv4: Some("10.10.0.11".parse().unwrap()),
        host_table: Some((1001, 2)),
        tor_sessions: vec!["tor_a".into(), "tor_b".into()],
        bird_socket: Some("/run/bird/bird.ctl".into()),
        bgp_ports: vec![1179],
        ..Expect::default()
    }
}

/// The non-ok findings as (id, severity).
fn problems(s: &Snapshot, e: Option<&Expect>) -> Vec<(&'static str, Severity)> {
    run_checks(s, e)
        .into_iter()
        .filter(|f| f.severity > Severity::Skipped)
        .map(|f| (f.check, f.severity))
        .collect()
}

fn get(s: &Snapshot, e: Option<&Expect>, id: &str) -> Finding {
    run_checks(s, e)
        .into_iter()
        .find(|f| f.check == id)
        .unwrap()
}

#[test]
fn healthy_host_is_clean_with_and_without_profile() {
    let s = healthy();
    assert_eq!(problems(&s, Some(&expect())), []);
    assert_eq!(problems(&s, None), []);
    let all = run_checks(&s, Some(&expect()));
    assert_eq!(all.iter().map(|f| f.check).collect::<Vec<_>>(), ALL);
    assert!(
        all.iter().all(|f| f.severity <= Severity::Skipped),
        "{all:#?}"
    );
    // Without a profile the uplinks are found by their /31s.
    let u = uplinks(&s, None);
    assert_eq!(
        u.iter().map(|u| u.ifname.as_str()).collect::<Vec<_>>(),
        ["eth0", "eth1"]
    );
}

#[test]
fn global_transit_alone_is_a_warning_with_masquerade_a_failure() {
    let mut s = healthy();
    s.iptables.clear();
    s.addresses[2].scope = Scope::Global;
    assert_eq!(problems(&s, None), [(TRANSIT_GLOBAL, Severity::Warning)]);
    s.iptables = vec![(
        "iptables-save".into(),
        "*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n".into(),
    )];
    assert_eq!(
        problems(&s, Some(&expect())),
        [
            (MASQUERADE_TRANSIT, Severity::Failure),
            (TRANSIT_GLOBAL, Severity::Warning)
        ]
    );
    let f = get(&s, None, MASQUERADE_TRANSIT);
    assert!(
        f.evidence[0].contains("eth0: MASQUERADE picks 172.30.0.1/31"),
        "{f:#?}"
    );
    assert!(f.evidence[1].contains("-A POSTROUTING -o eth0 -j MASQUERADE"));
    assert!(f.fix.contains("scope link"));
    // A rule out of the other uplink only does not pick eth0's address.
    s.iptables[0].1 = "*nat\n-A POSTROUTING -o eth1 -j MASQUERADE\nCOMMIT\n".into();
    assert_eq!(problems(&s, None), [(TRANSIT_GLOBAL, Severity::Warning)]);
    // snat mode: global on purpose, our SNAT chain in front.
    s.iptables[0].1 = "*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n".into();
    s.nft_ruleset = Some(serde_json::json!({"nftables": [
        {"chain": {"family": "inet", "table": "underlay", "name": "pod_snat", "type": "nat", "hook": "postrouting", "prio": 90}}]}));
    let mut e = expect();
    e.transit_global_intended = true;
    assert_eq!(
        problems(&s, Some(&e)),
        [(MASQUERADE_TRANSIT, Severity::Warning)]
    );
}

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/firewall/", $name))
    };
}

/// Real iptables-save / nft output for the rules each component writes
/// (`tests/firewall_fixtures.rs` keeps them what the tools print).
const KP_1_18_5: &str = fixture!("kube-proxy-1.18.5.iptables-save");
const KP_1_19: &str = fixture!("kube-proxy-1.19.iptables-save");
const CALICO_KP_1_19: &str = fixture!("calico-kube-proxy-1.19.iptables-save");
const KP_NFT: &str = fixture!("kube-proxy-nftables.json");
const CALICO_KP_NFT_SAVE: &str = fixture!("calico-kube-proxy-nftables.iptables-save");
const CALICO_KP_NFT_JSON: &str = fixture!("calico-kube-proxy-nftables.json");

fn with_vxlan() -> Snapshot {
    let mut s = healthy();
    s.links.push(link(4, "vxlan.calico", Some("vxlan")));
    s
}

fn iptables(text: &str) -> Vec<(String, String)> {
    vec![("iptables-save".into(), text.into())]
}

/// underlay's guard for these uplinks, as `desired_ruleset` builds it.
fn guard_on(uplinks: &[&str]) -> serde_json::Value {
    let doc = crate::nft::desired_ruleset(&crate::nft::NatParams {
        mode: crate::nft::NatMode::ScopeLink,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: uplinks.iter().map(|u| u.to_string()).collect(),
        pod_cidrs: vec![],
        guard: Some(crate::nft::MarkGuard::default()),
    })
    .unwrap();
    serde_json::to_value(&doc).unwrap()
}

/// `extra` nft objects appended to a ruleset document.
fn plus(doc: &serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    let mut d = doc.clone();
    let list = d["nftables"].as_array_mut().unwrap();
    list.extend(extra["nftables"].as_array().unwrap().iter().cloned());
    d
}

fn evidence(s: &Snapshot, id: &str) -> String {
    get(s, None, id).evidence.join("\n")
}

#[test]
fn kube_proxy_1_18_5_with_a_tunnel_needs_a_guard() {
    let mut s = with_vxlan();
    assert_eq!(
        get(&s, None, TUNNEL_MARK).severity,
        Severity::Ok,
        "no mark rules"
    );
    s.iptables = iptables(KP_1_18_5);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    let ev = evidence(&s, TUNNEL_MARK);
    assert!(ev.contains("vxlan.calico (vxlan port 4789)"), "{ev}");
    assert!(
        ev.contains("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"),
        "{ev}"
    );
    assert!(ev.contains("nothing clears 0x4000"), "{ev}");
    // IPIP device.
    let mut s = healthy();
    s.links.push(link(5, "tunl0", Some("ipip")));
    s.iptables = iptables(KP_1_18_5);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
}

#[test]
fn guards_count_only_before_srcnat_for_the_tunnel_on_every_uplink() {
    let mut s = with_vxlan();
    s.iptables = iptables(KP_1_18_5);
    s.nft_ruleset = Some(guard_on(&["eth0", "eth1"]));
    assert_eq!(problems(&s, None), [], "{}", evidence(&s, TUNNEL_MARK));
    assert!(evidence(&s, TUNNEL_MARK)
        .contains("guard: nft inet underlay mark_guard: meta oifname={eth0,eth1} udp dport=4789"));
    // A guard on other interfaces misses the outer packets leaving eth0/eth1.
    s.nft_ruleset = Some(guard_on(&["up1", "up2"]));
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    assert!(evidence(&s, TUNNEL_MARK).contains("guard (misses an uplink)"));
    s.nft_ruleset = Some(guard_on(&["eth0"]));
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    // The IPIP rule alone does not cover VXLAN.
    let mut g = guard_on(&["eth0", "eth1"]);
    g["nftables"]
        .as_array_mut()
        .unwrap()
        .retain(|o| !o.to_string().contains("dport"));
    s.nft_ruleset = Some(g);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    // After srcnat is too late.
    let mut g = guard_on(&["eth0", "eth1"]);
    g["nftables"][1]["chain"]["prio"] = serde_json::json!(101);
    s.nft_ruleset = Some(g);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
}

/// Issue 10: kube-proxy >= 1.19 clears the bit itself, so alone it is fine; Calico's
/// cali-POSTROUTING (at the top of POSTROUTING) masquerades inner flows leaving vxlan.calico
/// first, and its connection never reaches kube-proxy's clearing.
#[test]
fn kube_proxy_1_19_is_ok_alone_and_fails_behind_calico() {
    let mut s = with_vxlan();
    s.iptables = iptables(KP_1_19);
    let f = get(&s, None, TUNNEL_MARK);
    assert_eq!(f.severity, Severity::Ok, "{f:#?}");
    assert!(f
        .title
        .contains("clears the masquerade mark before its MASQUERADE"));
    let ev = f.evidence.join("\n");
    assert!(ev.contains("masquerade by mark (the bit cleared first): iptables-save *nat: -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"), "{ev}");
    assert!(
        ev.contains("via POSTROUTING > KUBE-POSTROUTING, priority 100"),
        "{ev}"
    );

    s.iptables = iptables(CALICO_KP_1_19);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    let f = get(&s, None, TUNNEL_MARK);
    assert!(f.title.contains("before kube-proxy clears"), "{f:#?}");
    let ev = f.evidence.join("\n");
    assert!(
        ev.contains("runs ahead of the clearing, earlier in iptables-save *nat POSTROUTING (via POSTROUTING > cali-POSTROUTING): iptables-save *nat: -A cali-POSTROUTING -o vxlan.calico"),
        "{ev}"
    );
    assert!(
        ev.contains("binds inner flows leaving vxlan.calico"),
        "{ev}"
    );
    assert!(f
        .fix
        .contains("Felix re-inserts cali-POSTROUTING at the top"));

    // Without Felix's tunnel rule only cali-nat-outgoing (an ipset match) is ahead: a risk.
    let no_tunnel_rule: String = CALICO_KP_1_19
        .lines()
        .filter(|l| !l.contains("-o vxlan.calico"))
        .map(|l| format!("{l}\n"))
        .collect();
    s.iptables = iptables(&no_tunnel_rule);
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Warning)]);
    assert!(evidence(&s, TUNNEL_MARK).contains("cali-nat-outgoing"));

    // The guard makes both safe.
    s.nft_ruleset = Some(guard_on(&["eth0", "eth1"]));
    assert_eq!(problems(&s, None), []);
    s.iptables = iptables(CALICO_KP_1_19);
    assert_eq!(problems(&s, None), []);
}

/// kube-proxy's nftables mode clears the bit in its `masquerading` chain; next to Calico's
/// iptables rules both nat chains sit at priority 100: the one registered last runs first.
#[test]
fn kube_proxy_nftables_mode_and_equal_priorities() {
    let mut s = with_vxlan();
    s.iptables = vec![];
    s.nft_ruleset = Some(serde_json::from_str(KP_NFT).unwrap());
    let f = get(&s, None, TUNNEL_MARK);
    assert_eq!(f.severity, Severity::Ok, "{f:#?}");
    let ev = f.evidence.join("\n");
    assert!(
        ev.contains("masquerade by mark (the bit cleared first): nft ip kube-proxy masquerading"),
        "{ev}"
    );
    assert!(
        ev.contains("via nat-postrouting > masquerading, priority 100"),
        "{ev}"
    );

    s.iptables = iptables(CALICO_KP_NFT_SAVE);
    let doc: serde_json::Value = serde_json::from_str(CALICO_KP_NFT_JSON).unwrap();
    s.nft_ruleset = Some(doc.clone());
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Warning)]);
    let ev = evidence(&s, TUNNEL_MARK);
    assert!(
        ev.contains("in iptables-save *nat POSTROUTING at the same priority 100 as nft ip kube-proxy nat-postrouting: of equal priorities the chain registered last runs first, so it depends on which component started last: iptables-save *nat: -A cali-POSTROUTING -o vxlan.calico"),
        "{ev}"
    );

    // A (hand-built) native nat chain of lower priority that masquerades vxlan.calico
    // surely runs first.
    let early = serde_json::json!({"nftables": [
        {"table": {"family": "ip", "name": "early"}},
        {"chain": {"family": "ip", "table": "early", "name": "post", "type": "nat", "hook": "postrouting", "prio": 99}},
        {"rule": {"family": "ip", "table": "early", "chain": "post", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "vxlan.calico"}},
            {"masquerade": null}]}}]});
    s.iptables = vec![];
    s.nft_ruleset = Some(plus(&serde_json::from_str(KP_NFT).unwrap(), &early));
    assert_eq!(problems(&s, None), [(TUNNEL_MARK, Severity::Failure)]);
    assert!(evidence(&s, TUNNEL_MARK).contains("in nft ip early post at priority 99 < 100"));
    // One of higher priority runs after kube-proxy's: no risk.
    let mut late = early.clone();
    late["nftables"][1]["chain"]["prio"] = serde_json::json!(101);
    s.nft_ruleset = Some(plus(&serde_json::from_str(KP_NFT).unwrap(), &late));
    assert_eq!(problems(&s, None), []);

    // The guard.
    s.iptables = iptables(CALICO_KP_NFT_SAVE);
    s.nft_ruleset = Some(plus(&doc, &guard_on(&["eth0", "eth1"])));
    assert_eq!(problems(&s, None), []);
}

#[test]
fn natted_outer_conntrack_entries_fail() {
    let mut s = healthy();
    s.conntrack = Some(
        "udp      17 29 src=10.10.0.11 dst=10.10.0.12 sport=41234 dport=4789 [UNREPLIED] src=10.10.0.12 dst=172.30.0.1 sport=4789 dport=41234 mark=16384 use=1\n\
         tcp      6 100 ESTABLISHED src=10.244.1.5 dst=1.1.1.1 sport=1 dport=443 src=1.1.1.1 dst=10.10.0.11 sport=443 dport=1 [ASSURED] use=1\n"
            .into(),
    );
    assert_eq!(
        problems(&s, None),
        [(CONNTRACK_TUNNEL_NAT, Severity::Failure)]
    );
    let f = get(&s, None, CONNTRACK_TUNNEL_NAT);
    assert_eq!(
        f.evidence.len(),
        1,
        "pod egress NAT is not a tunnel entry: {f:#?}"
    );
    assert!(f.evidence[0].contains("reply to 172.30.0.1"));
    // Issue 10: on a scope-link host MASQUERADE keeps the address and --random-fully
    // rewrites only the port; still an outer flow bound by NAT.
    s.conntrack = Some(
        "udp      17 29 src=10.10.0.11 dst=10.10.0.12 sport=41234 dport=4789 [UNREPLIED] src=10.10.0.12 dst=10.10.0.11 sport=4789 dport=2911 mark=0 use=1\n"
            .into(),
    );
    assert_eq!(
        problems(&s, None),
        [(CONNTRACK_TUNNEL_NAT, Severity::Failure)]
    );
    let f = get(&s, None, CONNTRACK_TUNNEL_NAT);
    assert!(f.title.contains("source port rewritten"), "{f:#?}");
    assert!(
        f.evidence[0].contains("reply to 10.10.0.11:2911 (sent from 10.10.0.11:41234): only the source port was rewritten"),
        "{f:#?}"
    );
    s.conntrack = Some(
        "unknown  4 599 src=10.10.0.11 dst=10.10.0.12 src=10.10.0.12 dst=172.30.0.1 mark=0 use=1\n"
            .into(),
    );
    assert_eq!(
        problems(&s, None),
        [(CONNTRACK_TUNNEL_NAT, Severity::Failure)]
    );
    s.conntrack = None;
    assert_eq!(
        get(&s, None, CONNTRACK_TUNNEL_NAT).severity,
        Severity::Skipped
    );
}

#[test]
fn two_listeners_on_one_socket_fail_overlap_warns() {
    let mut s = healthy();
    s.listeners.push(Listener {
        addr: "0.0.0.0".parse().unwrap(),
        port: 179,
        inode: 12,
        owners: vec![(200, "bird".into())],
    });
    assert_eq!(problems(&s, None), [(BGP_LISTENERS, Severity::Failure)]);
    let f = get(&s, None, BGP_LISTENERS);
    assert!(
        f.evidence[0]
            .contains("0.0.0.0:179 held by bird (pid 100) and 0.0.0.0:179 held by bird (pid 200)"),
        "{f:#?}"
    );
    s.listeners[2].addr = "10.10.0.11".parse().unwrap();
    assert_eq!(problems(&s, None), [(BGP_LISTENERS, Severity::Warning)]);
    // Calico's port from the profile; socat on it next to Calico's BIRD.
    let mut s = healthy();
    s.listeners.push(Listener {
        addr: "127.0.0.2".parse().unwrap(),
        port: 1179,
        inode: 13,
        owners: vec![(300, "socat".into())],
    });
    assert_eq!(
        problems(&s, Some(&expect())),
        [(BGP_LISTENERS, Severity::Failure)]
    );
    // The same process with two sockets (v4 and v6 or reuseport workers) is one daemon.
    let mut s = healthy();
    s.listeners.push(Listener {
        addr: "0.0.0.0".parse().unwrap(),
        port: 179,
        inode: 14,
        owners: vec![(100, "bird".into())],
    });
    assert_eq!(problems(&s, None), []);
}

#[test]
fn two_birds_on_one_kernel_table_fail() {
    let mut s = healthy();
    s.birds[1].config = Some(HOST_BIRD.into());
    assert_eq!(problems(&s, None), [(BIRD_SHARED_TABLE, Severity::Failure)]);
    let f = get(&s, None, BIRD_SHARED_TABLE);
    assert_eq!(f.evidence.len(), 2, "{f:#?}");
    assert!(f.evidence[0].contains("syncs ipv4 table 1001"));
    // bird (v4) and bird6 (v6) of BIRD 1.x both on main: different families, fine.
    let mut s = healthy();
    s.birds[0].config = Some(CALICO_BIRD.into());
    s.birds[0].comm = "bird6".into();
    assert_eq!(problems(&s, None), []);
    s.birds[0].comm = "bird".into();
    assert_eq!(problems(&s, None), [(BIRD_SHARED_TABLE, Severity::Failure)]);
    assert!(get(&s, None, BIRD_SHARED_TABLE).evidence[0].contains("main (254)"));
    s.birds.clear();
    assert_eq!(get(&s, None, BIRD_SHARED_TABLE).severity, Severity::Skipped);
}

#[test]
fn strict_rp_filter_warns_and_all_counts() {
    let mut s = healthy();
    s.sysctls
        .insert("net.ipv4.conf.eth1.rp_filter".into(), "1".into());
    assert_eq!(problems(&s, None), [(RP_FILTER, Severity::Warning)]);
    assert!(get(&s, None, RP_FILTER).evidence[0].starts_with("eth1: rp_filter strict"));
    let mut s = healthy();
    s.sysctls
        .insert("net.ipv4.conf.all.rp_filter".into(), "1".into());
    s.sysctls
        .insert("net.ipv4.conf.eth0.rp_filter".into(), "0".into());
    s.sysctls
        .insert("net.ipv4.conf.eth1.rp_filter".into(), "0".into());
    assert_eq!(
        problems(&s, Some(&expect())),
        [(RP_FILTER, Severity::Warning)]
    );
    assert_eq!(get(&s, None, RP_FILTER).evidence.len(), 2);
}

#[test]
fn networkd_removing_foreign_routes_warns() {
    let mut s = healthy();
    s.networkd_links.insert(
        2,
        "ADMIN_STATE=configured\nNETWORK_FILE=/etc/systemd/network/10-eth0.network\n".into(),
    );
    assert_eq!(problems(&s, None), [(NETWORKD, Severity::Warning)]);
    let f = get(&s, None, NETWORKD);
    assert!(
        f.evidence
            .iter()
            .any(|e| e.contains("ManageForeignRoutes=yes (default)")),
        "{f:#?}"
    );
    s.files.insert(
        PathBuf::from(NETWORKD_CONF),
        "[Network]\nManageForeignRoutes=no\n".into(),
    );
    assert_eq!(
        problems(&s, None),
        [(NETWORKD, Severity::Warning)],
        "rules still removed"
    );
    s.files.insert(
        PathBuf::from("/etc/systemd/networkd.conf.d/underlay.conf"),
        "[Network]\nManageForeignRoutingPolicyRules=no\n".into(),
    );
    assert_eq!(problems(&s, None), []);
    // A drop-in overrides networkd.conf.
    s.files.insert(
        PathBuf::from(NETWORKD_CONF),
        "[Network]\nManageForeignRoutes=no\nManageForeignRoutingPolicyRules=no\n".into(),
    );
    s.files.insert(
        PathBuf::from("/etc/systemd/networkd.conf.d/underlay.conf"),
        "[Network]\nManageForeignRoutes=yes\n".into(),
    );
    assert_eq!(problems(&s, None), [(NETWORKD, Severity::Warning)]);
    // Unmanaged uplink, no managed link at all: nothing removed.
    let mut s = healthy();
    s.networkd_links.insert(2, "ADMIN_STATE=unmanaged\n".into());
    assert_eq!(problems(&s, None), []);
}

#[test]
fn network_manager_managing_an_uplink_warns() {
    let mut s = healthy();
    assert_eq!(get(&s, None, NETWORK_MANAGER).severity, Severity::Skipped);
    s.nm_devices
        .insert(3, "[device]\nmanaged=true\nperm-hw-addr-fake=\n".into());
    assert_eq!(problems(&s, None), [(NETWORK_MANAGER, Severity::Warning)]);
    s.nm_devices.insert(3, "[device]\nmanaged=false\n".into());
    assert_eq!(problems(&s, None), []);
}

#[test]
fn kubelet_node_ip_must_be_the_service_ip() {
    let mut s = healthy();
    assert_eq!(get(&s, None, KUBELET_NODE_IP).severity, Severity::Skipped);
    let flags = PathBuf::from("/var/lib/kubelet/kubeadm-flags.env");
    s.files.insert(
        flags.clone(),
        "KUBELET_KUBEADM_ARGS=\"--node-ip=172.30.0.1\"\n".into(),
    );
    assert_eq!(
        problems(&s, Some(&expect())),
        [(KUBELET_NODE_IP, Severity::Warning)]
    );
    assert_eq!(problems(&s, None), [(KUBELET_NODE_IP, Severity::Warning)]);
    s.files.insert(
        flags.clone(),
        "KUBELET_KUBEADM_ARGS=\"--node-ip=10.10.0.11\"\n".into(),
    );
    assert_eq!(problems(&s, Some(&expect())), []);
    assert_eq!(problems(&s, None), []);
    s.files.insert(
        flags,
        "KUBELET_KUBEADM_ARGS=\"--pod-infra-container-image=x\"\n".into(),
    );
    assert_eq!(problems(&s, None), [(KUBELET_NODE_IP, Severity::Warning)]);
}

#[test]
fn host_table_with_one_path_fails_only_with_a_profile() {
    let mut s = healthy();
    if let Some(Ok(h)) = s.host_nexthops.as_mut() {
        h.pop();
    }
    assert_eq!(
        problems(&s, Some(&expect())),
        [(HOST_TABLE_PATHS, Severity::Failure)]
    );
    let f = get(&s, Some(&expect()), HOST_TABLE_PATHS);
    assert!(
        f.evidence[0].contains("1 next hop(s), want 2: via 172.30.0.0 dev eth0"),
        "{f:#?}"
    );
    assert_eq!(get(&s, None, HOST_TABLE_PATHS).severity, Severity::Skipped);
}

#[test]
fn sessions_not_established_fail() {
    let mut s = healthy();
    s.bird_sessions[0].protocols = Ok(vec![
        proto("tor_a", "Established"),
        proto("tor_b", "Active        Socket: Connection refused"),
    ]);
    assert_eq!(
        problems(&s, Some(&expect())),
        [(BGP_SESSIONS, Severity::Failure)]
    );
    assert!(get(&s, Some(&expect()), BGP_SESSIONS).evidence[0]
        .starts_with("tor_b (profile): start Active"));
    // A missing ToR session and a BIRD that does not answer fail too.
    s.bird_sessions[0].protocols = Ok(vec![proto("tor_a", "Established")]);
    assert_eq!(
        problems(&s, Some(&expect())),
        [(BGP_SESSIONS, Severity::Failure)]
    );
    s.bird_sessions[0].protocols = Err("connection refused".into());
    assert_eq!(
        problems(&s, Some(&expect())),
        [(BGP_SESSIONS, Severity::Failure)]
    );
    // Calico's session on the host BIRD down: a warning.
    s.bird_sessions[0].protocols = Ok(vec![
        proto("tor_a", "Established"),
        proto("tor_b", "Established"),
        proto("calico", "Connect"),
    ]);
    assert_eq!(
        problems(&s, Some(&expect())),
        [(BGP_SESSIONS, Severity::Warning)]
    );
    // Without a profile every BGP session counts.
    s.bird_sessions[0].owner = "bird pid 100".into();
    assert_eq!(problems(&s, None), [(BGP_SESSIONS, Severity::Failure)]);
}

#[test]
fn profile_that_does_not_match_the_nics_fails_and_falls_back() {
    let s = healthy();
    let mut e = expect();
    e.uplinks.clear();
    e.resolve_error = Some("uplink 'tor-a': no NIC matches name eth9".into());
    assert_eq!(
        problems(&s, Some(&e)),
        [(PROFILE_UPLINKS, Severity::Failure)]
    );
    assert_eq!(uplinks(&s, Some(&e)).len(), 2, "generic uplinks instead");
}

#[test]
fn report_groups_and_exit_codes() {
    let mut s = healthy();
    s.sysctls
        .insert("net.ipv4.conf.eth1.rp_filter".into(), "1".into());
    let r = crate::doctor::DoctorReport {
        findings: run_checks(&s, None),
        profile: false,
        notes: vec!["conntrack: missing".into()],
    };
    assert_eq!(r.exit_code(), 1);
    let h = r.human();
    assert!(h.contains("WARNINGS (risks)\n  [rp-filter-strict]"), "{h}");
    assert!(h.contains("      fix: Use loose mode"), "{h}");
    assert!(h.contains("NOT COLLECTED\n  conntrack: missing"));
    assert!(!h.contains("saw: eth0 172.30.0.1/31"));
    assert!(r.human_verbose().contains("saw: eth0 172.30.0.1/31"));
    let j = r.json();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["summary"]["warning"], 1);
    let f = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == RP_FILTER)
        .unwrap();
    assert_eq!(f["severity"], "warning");
    assert!(f["evidence"][0].as_str().unwrap().contains("eth1"));
    s.birds[1].config = Some(HOST_BIRD.into());
    let r = crate::doctor::DoctorReport {
        findings: run_checks(&s, None),
        profile: false,
        notes: vec![],
    };
    assert_eq!(r.exit_code(), 2);
    assert!(r
        .human()
        .starts_with("underlay doctor (generic checks, no profile)\n\nFAILURES"));
}

#[test]
fn unreadable_firewall_is_skipped_not_ok() {
    let mut s = healthy();
    s.links.push(link(4, "vxlan.calico", Some("vxlan")));
    s.iptables.clear();
    s.nft_ruleset = None;
    for id in [MASQUERADE_TRANSIT, TUNNEL_MARK] {
        let f = get(&s, None, id);
        assert_eq!(f.severity, Severity::Skipped, "{f:#?}");
        assert!(f.title.contains("not readable"));
    }
}
