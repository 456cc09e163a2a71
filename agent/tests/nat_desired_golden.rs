//! Pure: desired_ruleset for each mode/guard combination against golden JSON files.
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test --test desired_golden`
//! and review the diff.

use std::path::PathBuf;

use underlay::nft::{desired_ruleset, MarkGuard, NatMode, NatParams};

fn params(mode: NatMode, guard: Option<MarkGuard>) -> NatParams {
    NatParams {
        mode,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: vec!["up2".into(), "up1".into()],
        pod_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ],
        guard,
    }
}

fn golden(name: &str, p: &NatParams) {
    let doc = desired_ruleset(p).expect("a table is desired");
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        text, want,
        "golden {name} differs; UPDATE_GOLDEN=1 to accept"
    );
}

#[test]
fn scope_link_without_guard_wants_no_table() {
    assert!(desired_ruleset(&params(NatMode::ScopeLink, None)).is_none());
}

#[test]
fn none_without_guard_wants_no_table() {
    assert!(desired_ruleset(&params(NatMode::None, None)).is_none());
}

#[test]
fn guard_that_guards_nothing_wants_no_table() {
    let g = MarkGuard {
        mark: 0x4000,
        ipip: false,
        vxlan_port: None,
    };
    assert!(desired_ruleset(&params(NatMode::ScopeLink, Some(g))).is_none());
}

#[test]
fn golden_scope_link_with_guard() {
    golden(
        "scope_link_guard",
        &params(NatMode::ScopeLink, Some(MarkGuard::default())),
    );
}

#[test]
fn golden_none_with_guard_equals_scope_link_with_guard() {
    let a = desired_ruleset(&params(NatMode::None, Some(MarkGuard::default())));
    let b = desired_ruleset(&params(NatMode::ScopeLink, Some(MarkGuard::default())));
    assert_eq!(a, b);
}

#[test]
fn golden_snat_without_guard() {
    golden("snat", &params(NatMode::Snat, None));
}

#[test]
fn golden_snat_with_guard() {
    golden(
        "snat_guard",
        &params(NatMode::Snat, Some(MarkGuard::default())),
    );
}

#[test]
fn golden_vxlan_only_guard_with_custom_mark() {
    let g = MarkGuard {
        mark: 0x8000,
        ipip: false,
        vxlan_port: Some(8472),
    };
    golden(
        "vxlan_custom_mark_guard",
        &params(NatMode::ScopeLink, Some(g)),
    );
}

#[test]
fn golden_snat_single_uplink_several_pod_cidrs() {
    let mut p = params(NatMode::Snat, None);
    p.uplinks = vec!["eth0".into()];
    p.pod_cidrs = vec![
        "10.245.0.0/16".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(), // adjacent: aggregated to 10.244.0.0/15
        "10.96.128.0/17".parse().unwrap(),
        "10.96.128.0/17".parse().unwrap(),
    ];
    golden("snat_one_uplink_many_pods", &p);
}

#[test]
fn without_uplinks_neither_snat_nor_guard_is_desired() {
    // Both match only what leaves through an uplink; with none there is nothing to match.
    let mut p = params(NatMode::Snat, Some(MarkGuard::default()));
    p.uplinks.clear();
    assert!(desired_ruleset(&p).is_none());
}

/// Issue 10: the guard must leave the inner packet's mark alone (a Service whose endpoint
/// listens on UDP 4789 is masqueraded by kube-proxy), so every guard rule starts with the
/// uplink match; the outer packet is the only one of the tunnel that leaves an uplink.
#[test]
fn every_guard_rule_matches_only_packets_leaving_an_uplink() {
    let doc = desired_ruleset(&params(NatMode::ScopeLink, Some(MarkGuard::default()))).unwrap();
    let v = serde_json::to_value(&doc).unwrap();
    let rules: Vec<&serde_json::Value> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["chain"] == "mark_guard")
        .collect();
    assert_eq!(rules.len(), 2);
    for r in rules {
        assert_eq!(
            r["expr"][0]["match"],
            serde_json::json!({"left": {"meta": {"key": "oifname"}}, "right": {"set": ["up1", "up2"]}, "op": "=="}),
            "{r}"
        );
    }
}

#[test]
fn fingerprint_changes_with_content_and_is_in_every_comment() {
    let a = desired_ruleset(&params(NatMode::Snat, None)).unwrap();
    let mut p = params(NatMode::Snat, None);
    p.service_ipv4 = "10.10.0.12".parse().unwrap();
    let b = desired_ruleset(&p).unwrap();
    let (fa, fb) = (
        underlay::nft::fingerprint(&a),
        underlay::nft::fingerprint(&b),
    );
    assert_ne!(fa, fb);
    let text = serde_json::to_string(&a).unwrap();
    assert_eq!(
        text.matches(&format!("underlay:{fa}:")).count(),
        2,
        "{text}"
    );
}
