//! The firewall parsers against real tool output: every fixture is what this
//! machine's iptables-save or `nft -j list ruleset` printed after loading the
//! rules kube-proxy and Calico Felix write (`tests/firewall_fixtures.rs` keeps
//! them honest).

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../../tests/fixtures/firewall/", $name))
    };
}

const KP_1_18_5: &str = fixture!("kube-proxy-1.18.5.iptables-save");
const KP_1_19: &str = fixture!("kube-proxy-1.19.iptables-save");
const CALICO_KP_1_19: &str = fixture!("calico-kube-proxy-1.19.iptables-save");
const KP_NFT: &str = fixture!("kube-proxy-nftables.json");
const CALICO_KP_NFT_SAVE: &str = fixture!("calico-kube-proxy-nftables.iptables-save");
const CALICO_KP_NFT_JSON: &str = fixture!("calico-kube-proxy-nftables.json");
/// underlay's own table as nft 1.0.6 lists it (snat mode with the guard).
const UNDERLAY_NFT: &str =
    include_str!("../../../../tests/golden/listing_nft_1.0.6_snat_guard.json");

fn iptables(text: &str) -> Firewall {
    let mut fw = Firewall::default();
    iptables_save("iptables-save", text, &mut fw);
    fw
}

fn kube_masq(fw: &Firewall) -> &MasqRule {
    let hits: Vec<&MasqRule> = fw
        .masquerade
        .iter()
        .filter(|m| m.text.contains("KUBE-POSTROUTING") || m.text.contains("masquerading"))
        .collect();
    assert_eq!(hits.len(), 1, "{fw:#?}");
    hits[0]
}

#[test]
fn kube_proxy_1_18_5_masquerades_by_mark_and_never_clears() {
    let fw = iptables(KP_1_18_5);
    let m = kube_masq(&fw);
    assert!(m.by_mark && !m.clears_first, "{m:?}");
    assert!(m
        .text
        .contains("-m mark --mark 0x4000/0x4000 -j MASQUERADE --random-fully"));
    assert_eq!(fw.marks.len(), 1);
    assert!(fw.marks[0].sets && fw.marks[0].text.contains("KUBE-MARK-MASQ"));
    assert_eq!(fw.nat_chains.len(), 1);
    let c = &fw.nat_chains[0];
    assert_eq!(
        (c.name.as_str(), c.family.as_str(), c.prio),
        ("iptables-save *nat POSTROUTING", "ip", 100)
    );
    assert_eq!(c.steps.len(), 1, "{c:#?}");
    assert_eq!(c.steps[0].via(), "POSTROUTING > KUBE-POSTROUTING");
    assert!(c.steps[0].by_mark && !c.steps[0].cleared);
}

/// Issue 10: the 1.19+ MASQUERADE carries no mark match of its own; it is
/// reached only by marked packets (the RETURN ahead) after the bit is cleared.
#[test]
fn kube_proxy_1_19_masquerades_by_mark_after_clearing() {
    let fw = iptables(KP_1_19);
    let m = kube_masq(&fw);
    assert!(!m.text.contains("--mark 0x4000"), "{m:?}");
    assert!(m.by_mark && m.clears_first, "{m:?}");
    let clear = fw
        .marks
        .iter()
        .find(|r| !r.sets)
        .expect("the clearing rule");
    assert!(clear
        .text
        .ends_with("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0"));
    assert!(clear.iptables_nat);
    let steps = &fw.nat_chains[0].steps;
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert!(steps[0].by_mark && steps[0].cleared);
}

/// Felix inserts cali-POSTROUTING at the top: its MASQUERADEs come first on the walk, ahead
/// of kube-proxy's clearing, and one of them is written for vxlan.calico.
#[test]
fn calico_felix_masquerades_ahead_of_kube_proxy() {
    let fw = iptables(CALICO_KP_1_19);
    let steps = &fw.nat_chains[0].steps;
    let via: Vec<String> = steps.iter().map(NatStep::via).collect();
    assert_eq!(
        via,
        [
            "POSTROUTING > cali-POSTROUTING > cali-nat-outgoing",
            "POSTROUTING > cali-POSTROUTING",
            "POSTROUTING > KUBE-POSTROUTING"
        ],
        "{steps:#?}"
    );
    assert!(steps[..2]
        .iter()
        .all(|s| !s.by_mark && !s.cleared && s.masquerade));
    assert!(
        steps[0].out_if.is_none(),
        "nat-outgoing matches by ipset only"
    );
    let vx = steps[1].out_if.as_ref().unwrap();
    assert!(vx.names("vxlan.calico") && !vx.matches("eth0"));
    assert!(steps[1]
        .text
        .contains("--limit-iface-out -m addrtype --src-type LOCAL -j MASQUERADE --random-fully"));
    assert!(steps[2].by_mark && steps[2].cleared);
    assert_eq!(fw.masquerade.len(), 3);
}

#[test]
fn kube_proxy_nftables_mode() {
    let doc: Value = serde_json::from_str(KP_NFT).unwrap();
    let mut fw = Firewall::default();
    nft_ruleset(&doc, &[], &mut fw);
    let m = kube_masq(&fw);
    assert_eq!(
        m.text,
        "nft ip kube-proxy masquerading: (every packet) masquerade"
    );
    assert!(m.by_mark && m.clears_first, "{m:?}");
    let sets: Vec<&MarkRule> = fw.marks.iter().filter(|r| r.sets).collect();
    assert_eq!(sets.len(), 1);
    assert!(sets[0]
        .text
        .starts_with("nft ip kube-proxy mark-for-masquerade"));
    let clears: Vec<&MarkRule> = fw.marks.iter().filter(|r| !r.sets).collect();
    assert_eq!(clears.len(), 1);
    assert!(
        clears[0].text.starts_with("nft ip kube-proxy masquerading") && !clears[0].before_srcnat
    );
    assert_eq!(fw.nat_chains.len(), 1, "{:#?}", fw.nat_chains);
    let c = &fw.nat_chains[0];
    assert_eq!(
        (c.name.as_str(), c.family.as_str(), c.prio),
        ("nft ip kube-proxy nat-postrouting", "ip", 100)
    );
    assert_eq!(c.steps.len(), 1);
    assert_eq!(c.steps[0].via(), "nat-postrouting > masquerading");
    assert!(c.steps[0].by_mark && c.steps[0].cleared);
}

/// kube-proxy's nftables table next to Calico's iptables-nft rules: two nat chains at
/// priority 100, the iptables one read from iptables-save (its nft form is `xt` only).
#[test]
fn kube_proxy_nftables_next_to_calico_iptables_nft() {
    let ipt = vec![("iptables-save".to_string(), CALICO_KP_NFT_SAVE.to_string())];
    let doc: Value = serde_json::from_str(CALICO_KP_NFT_JSON).unwrap();
    let mut fw = Firewall::default();
    iptables_save(&ipt[0].0, &ipt[0].1, &mut fw);
    nft_ruleset(&doc, &ipt, &mut fw);
    let names: Vec<(&str, i64)> = fw
        .nat_chains
        .iter()
        .map(|c| (c.name.as_str(), c.prio))
        .collect();
    assert_eq!(
        names,
        [
            ("iptables-save *nat POSTROUTING", 100),
            ("nft ip kube-proxy nat-postrouting", 100)
        ]
    );
    assert_eq!(fw.nat_chains[0].steps.len(), 2);
    assert!(fw.nat_chains[0].shares_family(&fw.nat_chains[1]));
    assert_eq!(fw.masquerade.len(), 3, "{:#?}", fw.masquerade);
}

/// underlay's own table: the guard clears the bit before srcnat on the uplinks only; the
/// SNAT chain's second rule is by mark (and not a MASQUERADE).
#[test]
fn underlay_guard_and_snat_chain() {
    let doc: Value = serde_json::from_str(UNDERLAY_NFT).unwrap();
    let mut fw = Firewall::default();
    nft_ruleset(&doc, &[], &mut fw);
    let guards: Vec<&MarkRule> = fw
        .marks
        .iter()
        .filter(|m| !m.sets && m.before_srcnat)
        .collect();
    assert_eq!(guards.len(), 2, "{:#?}", fw.marks);
    for g in &guards {
        let oif = g.out_if.as_ref().expect("the guard names the uplinks");
        assert_eq!(oif.patterns, ["up1", "up2"]);
        assert!(oif.matches("up2") && !oif.matches("vxlan.calico"));
    }
    assert_eq!(
        guards[0].matches[..2],
        ["meta oifname={up1,up2}", "meta l4proto=ipencap"]
    );
    assert_eq!(guards[1].matches[1], "udp dport=4789");
    assert!(fw.masquerade.is_empty());
    let c = &fw.nat_chains[0];
    assert_eq!(
        (c.name.as_str(), c.family.as_str(), c.prio),
        ("nft inet underlay pod_snat", "inet", 90)
    );
    assert_eq!(c.steps.len(), 2);
    assert!(c
        .steps
        .iter()
        .all(|s| !s.masquerade && !s.applies_to("vxlan.calico")));
    assert!(!c.steps[0].by_mark && c.steps[1].by_mark);
}

#[test]
fn interface_matches() {
    let m = IfMatch::one("eth+", false);
    assert!(m.matches("eth0") && !m.matches("bond0") && m.names("eth1"));
    let m = IfMatch::one("lo", true);
    assert!(m.matches("eth0") && !m.matches("lo") && !m.names("eth0"));
    let m = IfMatch {
        patterns: vec!["up1".into(), "up*".into()],
        negated: false,
    };
    assert!(m.matches("up7") && !m.matches("eth0"));
}

/// Rules reached by nobody (after an unconditional RETURN, or needing a bit the walk knows
/// was cleared) are not MASQUERADEs anyone meets.
#[test]
fn dead_rules_and_jumps() {
    let fw = iptables(
        "*nat\n-A POSTROUTING -j G\n-A POSTROUTING -j MASQUERADE\n\
         -A G -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A G -j MARK --set-xmark 0x4000/0x0\n\
         -A G -m mark --mark 0x4000/0x4000 -j MASQUERADE\n-A G -o eth0 -j SNAT --to-source 10.0.0.1\n\
         -A H -j RETURN\n-A H -j MASQUERADE\nCOMMIT\n",
    );
    // POSTROUTING's own MASQUERADE is still met by packets G returned.
    let steps = &fw.nat_chains[0].steps;
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert!(!steps[0].masquerade && steps[0].by_mark && steps[0].cleared);
    assert_eq!(steps[0].via(), "POSTROUTING > G");
    assert!(steps[1].masquerade && !steps[1].by_mark);
    assert_eq!(fw.masquerade.len(), 1, "{:#?}", fw.masquerade);
    // After an unconditional goto nothing of the calling chain runs.
    let fw = iptables("*nat\n-A POSTROUTING -g H\n-A POSTROUTING -j MASQUERADE\n-A H -o eth0 -j MASQUERADE\nCOMMIT\n");
    let steps = &fw.nat_chains[0].steps;
    assert_eq!(steps.len(), 1, "{steps:#?}");
    assert_eq!(steps[0].via(), "POSTROUTING > H");
}

#[test]
fn conntrack_lines() {
    let text = "udp      17 29 src=10.10.0.11 dst=10.10.0.12 sport=41234 dport=4789 [UNREPLIED] src=10.10.0.12 dst=172.30.0.1 sport=4789 dport=41234 mark=16384 use=1\n\
        udp      17 29 src=10.10.0.11 dst=10.10.0.12 sport=41234 dport=4789 [UNREPLIED] src=10.10.0.12 dst=10.10.0.11 sport=4789 dport=2911 mark=0 use=1\n\
        unknown  4 599 src=10.10.0.11 dst=10.10.0.12 src=10.10.0.12 dst=10.10.0.11 mark=0 use=1\n\
        conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n";
    let e = conntrack(text);
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].proto, 17);
    assert_eq!(e[0].orig_dport, Some(4789));
    assert!(e[0].source_natted() && !e[0].source_port_natted());
    assert_eq!(
        (e[1].orig_sport, e[1].reply_dport),
        (Some(41234), Some(2911))
    );
    assert!(!e[1].source_natted() && e[1].source_port_natted());
    assert_eq!(e[2].proto, 4);
    assert!(!e[2].source_natted() && !e[2].source_port_natted());
}
