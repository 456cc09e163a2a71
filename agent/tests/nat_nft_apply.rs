//! Real nft in a namespace: apply is atomic, idempotent, detects hand edits, and never touches
//! anyone else's tables.

mod natlab;

use natlab::Lab;
use underlay::nft::{
    apply, desired_ruleset, observe, plan, MarkGuard, NatMode, NatParams, NftChange,
};

fn params() -> NatParams {
    NatParams {
        mode: NatMode::Snat,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: vec!["up1".into(), "up2".into()],
        pod_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.245.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ],
        guard: Some(MarkGuard::default()),
    }
}

/// What other components install: iptables-nft's `ip nat` (kube-proxy style), a hand-made
/// `ip filter`, and an `inet` table of someone else's with a set.
const FOREIGN: &str = "
iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
iptables -t filter -A FORWARD -s 10.244.0.0/16 -j ACCEPT
nft add table ip calico_like
nft add chain ip calico_like post '{ type nat hook postrouting priority srcnat; }'
nft add rule ip calico_like post ip saddr 10.244.0.0/16 oifname up1 counter masquerade
nft add table inet someone_else
nft add set inet someone_else s '{ type ipv4_addr; elements = { 10.0.0.1 } }'
";

/// `nft list ruleset` without the `table inet underlay { ... }` block.
fn without_ours(ruleset: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in ruleset.lines() {
        if line.starts_with("table inet underlay {") {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && line == "}" {
            skipping = false;
        }
    }
    out
}

#[test]
fn apply_twice_changes_nothing_and_foreign_tables_survive() {
    let mut lab = Lab::new("ap");
    let ns = lab.ns("n");
    lab.sh(&ns, "ip link add up1 type veth peer name up2");
    lab.sh(&ns, FOREIGN);
    let before = lab.sh(&ns, "nft list ruleset");
    assert!(before.contains("table ip nat"), "{before}");

    let runner = lab.nft(&ns);
    let desired = desired_ruleset(&params());
    assert!(matches!(
        plan(desired.as_ref(), &observe(&runner).unwrap()),
        NftChange::Create { .. }
    ));
    assert!(lab.converge(&ns, &params()), "first apply changes");
    assert!(
        !lab.converge(&ns, &params()),
        "second apply changes nothing"
    );
    let with_ours = lab.sh(&ns, "nft list ruleset");
    assert!(with_ours.contains("table inet underlay"), "{with_ours}");
    assert_eq!(without_ours(&with_ours), before, "foreign tables changed");

    // Changed parameters: replace, still nothing else touched.
    let mut p2 = params();
    p2.service_ipv4 = "10.10.0.99".parse().unwrap();
    assert!(lab.converge(&ns, &p2));
    let listed = lab.sh(&ns, "nft list table inet underlay");
    assert!(
        listed.contains("snat ip to 10.10.0.99") && !listed.contains("10.10.0.11"),
        "{listed}"
    );
    assert_eq!(without_ours(&lab.sh(&ns, "nft list ruleset")), before);

    // Not desired any more: delete, and the ruleset is byte-for-byte what it was.
    let none = NatParams {
        mode: NatMode::ScopeLink,
        guard: None,
        ..params()
    };
    assert!(desired_ruleset(&none).is_none());
    assert!(lab.converge(&ns, &none), "delete runs nft");
    assert!(
        !lab.converge(&ns, &none),
        "absent and not desired: nothing to do"
    );
    assert_eq!(lab.sh(&ns, "nft list ruleset"), before);
}

#[test]
fn hand_edits_are_detected_and_reverted() {
    let mut lab = Lab::new("he");
    let ns = lab.ns("n");
    lab.sh(&ns, "ip link add up1 type veth peer name up2");
    let runner = lab.nft(&ns);
    let p = params();
    let desired = desired_ruleset(&p);
    lab.converge(&ns, &p);

    let edits = [
        "nft add rule inet underlay pod_snat counter accept",
        "nft delete rule inet underlay mark_guard handle $(nft -a list chain inet underlay mark_guard | awk '/udp dport/ {print $NF}')",
        "nft replace rule inet underlay mark_guard handle $(nft -a list chain inet underlay mark_guard | awk '/udp dport/ {print $NF}') udp dport 4790 counter",
        "nft add chain inet underlay extra",
        "nft add set inet underlay s '{ type ipv4_addr; }'",
        "nft flush chain inet underlay pod_snat",
    ];
    for edit in edits {
        lab.sh(&ns, edit);
        let change = plan(desired.as_ref(), &observe(&runner).unwrap());
        assert!(
            matches!(change, NftChange::Replace { .. }),
            "`{edit}` not detected: {change:?}"
        );
        eprintln!("after `{edit}`:\n{}", change.diff().join("\n"));
        assert!(apply(&runner, &change).unwrap());
        assert_eq!(
            plan(desired.as_ref(), &observe(&runner).unwrap()),
            NftChange::Ok,
            "not reverted after `{edit}`"
        );
    }
}

#[test]
fn a_rejected_batch_leaves_the_old_table_in_place() {
    let mut lab = Lab::new("rj");
    let ns = lab.ns("n");
    lab.sh(&ns, "ip link add up1 type veth peer name up2");
    let runner = lab.nft(&ns);
    lab.converge(&ns, &params());
    let before = lab.sh(&ns, "nft list ruleset");

    // A batch whose last rule the kernel rejects (jump to a chain that does not exist).
    let mut doc = desired_ruleset(&NatParams {
        service_ipv4: "10.10.0.42".parse().unwrap(),
        ..params()
    })
    .unwrap();
    let bad: nftables::schema::NfObject = serde_json::from_value(serde_json::json!({
        "rule": {"family": "inet", "table": "underlay", "chain": "pod_snat",
                 "expr": [{"jump": {"target": "missing"}}]}
    }))
    .unwrap();
    doc.objects.to_mut().push(bad);
    let change = NftChange::Replace {
        desired: doc,
        diff: vec![],
    };
    let err = apply(&runner, &change).expect_err("nft must reject the batch");
    assert!(err.is_rejected(), "{err}");
    assert_eq!(
        lab.sh(&ns, "nft list ruleset"),
        before,
        "a failed batch changed the ruleset"
    );
}
