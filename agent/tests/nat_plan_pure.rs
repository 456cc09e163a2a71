//! Pure: plan() golden cases, and apply()/observe() against a fake nft (no root).

use std::cell::RefCell;

use underlay::nft::{
    apply, desired_ruleset, observe, parse_listing, plan, transaction, MarkGuard, NatMode,
    NatParams, NftChange, NftError, NftExec, ObservedNat, ObservedRule, TableContent,
};

fn params() -> NatParams {
    NatParams {
        mode: NatMode::Snat,
        service_ipv4: "10.10.0.11".parse().unwrap(),
        uplinks: vec!["up2".into(), "up1".into()],
        pod_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ],
        guard: Some(MarkGuard::default()),
    }
}

/// What nft 1.0.6 listed after applying `params()` (`nft -j list table inet underlay` in a
/// scratch namespace): handles, metainfo and expressions as nft prints them; the counters were
/// then set to 12/1000, as on a host that has seen traffic, which plan() must ignore.
fn listed() -> ObservedNat {
    let text = include_str!("golden/listing_nft_1.0.6_snat_guard.json");
    ObservedNat {
        table: Some(parse_listing("fixture", text).unwrap()),
    }
}

#[test]
fn absent_and_desired_is_create() {
    let d = desired_ruleset(&params());
    let change = plan(d.as_ref(), &ObservedNat::default());
    assert!(matches!(change, NftChange::Create { .. }), "{change:?}");
    assert!(
        change.diff()[0].contains("absent -> fingerprint"),
        "{:?}",
        change.diff()
    );
    assert!(change
        .diff()
        .iter()
        .any(|l| l.starts_with("+ chain pod_snat")));
}

#[test]
fn real_listing_of_the_same_params_is_ok() {
    let d = desired_ruleset(&params());
    assert_eq!(plan(d.as_ref(), &listed()), NftChange::Ok);
}

#[test]
fn own_content_observed_is_ok() {
    let d = desired_ruleset(&params()).unwrap();
    let observed = ObservedNat {
        table: Some(TableContent::from_doc(&d)),
    };
    assert_eq!(plan(Some(&d), &observed), NftChange::Ok);
}

#[test]
fn changed_params_is_replace_with_a_readable_diff() {
    let mut p = params();
    p.service_ipv4 = "10.10.0.12".parse().unwrap();
    let change = plan(desired_ruleset(&p).as_ref(), &listed());
    let NftChange::Replace { diff, .. } = &change else {
        panic!("{change:?}")
    };
    let text = diff.join("\n");
    assert!(
        text.contains("- ") && text.contains("snat ip to 10.10.0.11"),
        "{text}"
    );
    assert!(
        text.contains("+ ") && text.contains("snat ip to 10.10.0.12"),
        "{text}"
    );
    // The guard chain did not change: shown as context, not as +/-.
    assert!(
        diff.iter()
            .any(|l| l.starts_with("    mark_guard: oifname { \"up1\", \"up2\" } udp dport 4789")),
        "{text}"
    );
}

#[test]
fn guard_switched_off_is_replace() {
    let mut p = params();
    p.guard = None;
    assert!(matches!(
        plan(desired_ruleset(&p).as_ref(), &listed()),
        NftChange::Replace { .. }
    ));
}

fn edited(f: impl FnOnce(&mut TableContent)) -> ObservedNat {
    let mut o = listed();
    f(o.table.as_mut().unwrap());
    o
}

#[test]
fn hand_edited_tables_are_replace() {
    let d = desired_ruleset(&params());
    let cases: Vec<(&str, ObservedNat)> = vec![
        (
            "rule added",
            edited(|t| {
                t.rules.push(ObservedRule {
                    chain: "pod_snat".into(),
                    comment: None,
                    expr: serde_json::json!([{"accept": null}]),
                })
            }),
        ),
        ("rule deleted", edited(|t| drop(t.rules.remove(1)))),
        (
            "rule replaced (comment lost)",
            edited(|t| t.rules[0].comment = None),
        ),
        ("rules reordered", edited(|t| t.rules.swap(2, 3))),
        (
            "chain priority changed",
            edited(|t| t.chains[0]["prio"] = serde_json::json!(101)),
        ),
        (
            "chain added",
            edited(|t| {
                t.chains
                    .push(serde_json::json!({"family": "inet", "table": "underlay", "name": "x"}))
            }),
        ),
        (
            "set added",
            edited(|t| t.others.push(serde_json::json!({"set": {"name": "s"}}))),
        ),
        (
            "chain flushed",
            edited(|t| t.rules.retain(|r| r.chain != "pod_snat")),
        ),
    ];
    for (what, observed) in cases {
        let change = plan(d.as_ref(), &observed);
        assert!(
            matches!(change, NftChange::Replace { .. }),
            "{what}: {change:?}"
        );
    }
}

#[test]
fn present_and_not_desired_is_delete() {
    let mut p = params();
    p.mode = NatMode::ScopeLink;
    p.guard = None;
    let change = plan(desired_ruleset(&p).as_ref(), &listed());
    assert!(matches!(change, NftChange::Delete { .. }), "{change:?}");
    assert!(change
        .diff()
        .iter()
        .any(|l| l.starts_with("- chain mark_guard")));
}

#[test]
fn absent_and_not_desired_is_ok() {
    assert_eq!(plan(None, &ObservedNat::default()), NftChange::Ok);
}

/// Records every nft invocation; answers `list table` from `listing` (None = no such table).
struct FakeNft {
    listing: Option<String>,
    calls: RefCell<Vec<(Vec<String>, Option<String>)>>,
}

impl NftExec for FakeNft {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        self.calls.borrow_mut().push((
            args.iter().map(|s| s.to_string()).collect(),
            stdin.map(str::to_string),
        ));
        if args.contains(&"list") {
            return self.listing.clone().ok_or(NftError::Failed {
                command: "nft".into(),
                status: "exit status: 1".into(),
                stderr: "Error: No such file or directory\nlist table inet underlay".into(),
            });
        }
        Ok(String::new())
    }
}

#[test]
fn observe_maps_missing_table_to_absent_and_reads_only_our_table() {
    let fake = FakeNft {
        listing: None,
        calls: RefCell::default(),
    };
    assert_eq!(observe(&fake).unwrap(), ObservedNat::default());
    assert_eq!(
        fake.calls.borrow()[0].0,
        ["-j", "list", "table", "inet", "underlay"]
    );
}

#[test]
fn observe_propagates_other_failures() {
    struct Broken;
    impl NftExec for Broken {
        fn run(&self, _: &[&str], _: Option<&str>) -> Result<String, NftError> {
            Err(NftError::Failed {
                command: "nft".into(),
                status: "exit status: 1".into(),
                stderr: "Error: Operation not permitted".into(),
            })
        }
    }
    assert!(observe(&Broken).is_err());
}

#[test]
fn apply_ok_runs_nothing() {
    let fake = FakeNft {
        listing: None,
        calls: RefCell::default(),
    };
    assert!(!apply(&fake, &NftChange::Ok).unwrap());
    assert!(fake.calls.borrow().is_empty());
}

#[test]
fn apply_replace_is_one_batch_naming_only_our_table() {
    let fake = FakeNft {
        listing: None,
        calls: RefCell::default(),
    };
    let change = plan(desired_ruleset(&params()).as_ref(), &ObservedNat::default());
    assert!(apply(&fake, &change).unwrap());
    let calls = fake.calls.borrow();
    assert_eq!(calls.len(), 1, "one nft run = one transaction");
    assert_eq!(calls[0].0, ["-j", "-f", "-"]);
    let batch: serde_json::Value = serde_json::from_str(calls[0].1.as_deref().unwrap()).unwrap();
    let cmds = batch["nftables"].as_array().unwrap();
    let verbs: Vec<String> = cmds
        .iter()
        .map(|c| {
            let (verb, obj) = c.as_object().unwrap().iter().next().unwrap();
            let (kind, _) = obj.as_object().unwrap().iter().next().unwrap();
            format!("{verb} {kind}")
        })
        .collect();
    assert_eq!(
        verbs[..5],
        [
            "add table",
            "delete table",
            "add table",
            "add chain",
            "add chain"
        ]
    );
    assert!(verbs[5..].iter().all(|v| v == "add rule"), "{verbs:?}");
    for c in cmds {
        let obj = c.as_object().unwrap().values().next().unwrap();
        let body = obj.as_object().unwrap().values().next().unwrap();
        let table = body.get("table").or(body.get("name")).unwrap();
        assert_eq!(table, "underlay", "{c}");
        assert_eq!(body["family"], "inet", "{c}");
    }
}

#[test]
fn delete_is_add_then_delete_of_our_table() {
    let doc = transaction(&NftChange::Delete { diff: vec![] }).unwrap();
    let text = serde_json::to_string(&doc).unwrap();
    assert_eq!(
        text,
        r#"{"nftables":[{"add":{"table":{"family":"inet","name":"underlay"}}},{"delete":{"table":{"family":"inet","name":"underlay"}}}]}"#
    );
}
