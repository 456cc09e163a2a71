//! Safe-apply proofs on the fake system: a checkpoint taken before the
//! change undoes it exactly (whole, part-way, or after a crash), touches no
//! foreign object, and does nothing a second time.

use super::*;
use crate::desired::Family;
use crate::engine::{self, Mode, RunOptions};
use crate::profile::load_str;
use crate::system::fake::FakeSystem;
use crate::system::BirdProtocol;

const ROLE: &str = include_str!("../../../profiles/l3-ecmp-calico.toml");
const OVERLAY: &str = include_str!("../../../profiles/l3-ecmp-calico-ipip.toml");

fn host(peer_a: u32) -> String {
    format!(
        r#"version = 1
hostname = "h1"
asn = 65101
service_ipv4 = "10.10.0.11/32"
[[uplinks]]
name = "tor-a"
nic = {{ name = "eth0" }}
ipv4 = {{ address = "172.30.0.1/31", peer = "172.30.0.0" }}
peer_asn = {peer_a}
[[uplinks]]
name = "tor-b"
nic = {{ name = "eth1" }}
ipv4 = {{ address = "172.30.1.1/31", peer = "172.30.1.0" }}
peer_asn = 65002
"#
    )
}

fn desired(role: &str, host: &str) -> crate::desired::Desired {
    load_str("role.toml", role, "host.toml", host).expect("valid profile")
}

fn fresh() -> FakeSystem {
    let mut f = FakeSystem::with_nics(&["eth0", "eth1"]);
    for k in [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv4.fib_multipath_hash_policy",
        "net.ipv6.fib_multipath_hash_policy",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.all.arp_announce",
        "net.ipv4.conf.eth0.rp_filter",
        "net.ipv4.conf.eth1.rp_filter",
    ] {
        f.sysctls.insert(SysctlKey::parse(k).unwrap(), "0".into());
    }
    f
}

/// Everything a rollback must restore, comparable.
fn host_state(f: &FakeSystem) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\nbird running {}",
        f.links,
        f.addresses,
        f.rules,
        f.sysctls,
        f.files,
        f.nft,
        f.bird.is_some()
    )
}

/// A safe apply's first half: checkpoint saved, then the whole run.
fn apply_with_checkpoint(f: &mut FakeSystem, d: &crate::desired::Desired) -> Checkpoint {
    let mut saved = None;
    let mut hook = |sys: &mut dyn System, t: &Target, p: &Plan, o: &Observed| {
        let cp = checkpoint(t, p, o, 30)?;
        save(sys, &cp)?;
        saved = Some(cp);
        Ok(())
    };
    let r = engine::run_hooked(f, d, Mode::Apply, &RunOptions::default(), Some(&mut hook))
        .expect("apply");
    assert!(r.failure.is_none(), "{:?}", r.failure);
    saved.expect("a checkpoint (the plan had changes)")
}

#[test]
fn a_fresh_host_is_restored_exactly_and_only_once() {
    let mut f = fresh();
    let before = host_state(&f);
    let d = desired(ROLE, &host(65001));
    let cp = apply_with_checkpoint(&mut f, &d);
    assert!(f.checkpoint.is_some());
    assert_ne!(host_state(&f), before, "the apply changed nothing");
    let doc = roll_back(&mut f, &cp, "test".into()).unwrap();
    assert!(doc.complete, "{:?}", doc.lines);
    assert!(doc.ops > 0);
    assert_eq!(host_state(&f), before);
    assert!(f.checkpoint.is_none());
    // Again: everything is as recorded, nothing to do.
    let again = roll_back(&mut f, &cp, "test".into()).unwrap();
    assert_eq!(again.ops, 0, "{:?}", again.lines);
}

#[test]
fn a_bad_peer_asn_rolls_back_to_the_good_bird_config_with_a_reload() {
    let mut f = fresh();
    f.bird = Some(vec![BirdProtocol {
        name: "tor_a".into(),
        proto: "BGP".into(),
        state: "up".into(),
        info: "Established".into(),
    }]);
    let good = desired(ROLE, &host(65001));
    engine::run(&mut f, &good, Mode::Apply).unwrap();
    let converged = host_state(&f);
    let conf = PathBuf::from("/etc/bird/bird.conf");
    let good_conf = f.files[&conf].clone();

    let bad = desired(ROLE, &host(65999));
    let cp = apply_with_checkpoint(&mut f, &bad);
    assert!(f.files[&conf].contains("65999"));
    // Only the BIRD config (and its reload) are in the checkpoint.
    assert!(
        matches!(&cp.undo[..], [SavedOp::WriteBirdConfig { content, .. }, SavedOp::ReloadBird { .. }] if *content == good_conf),
        "{:?}",
        cp.undo
    );
    let reloads = f.reloads;
    let doc = roll_back(&mut f, &cp, "bgp-established failed".into()).unwrap();
    assert_eq!(doc.ops, 2, "{:?}", doc.lines);
    assert_eq!(f.reloads, reloads + 1);
    assert_eq!(host_state(&f), converged);
}

#[test]
fn a_run_killed_part_way_is_undone_from_its_checkpoint() {
    for stop_after in [0, 3, 9] {
        let mut f = fresh();
        let before = host_state(&f);
        let d = desired(ROLE, &host(65001));
        let (target, pre) = engine::observe(&mut f, &d, None).unwrap();
        let plan = crate::plan::plan(&target, &pre);
        let mut cp = checkpoint(&target, &plan, &pre, 30).unwrap();
        cp.pid = 999_999;
        save(&mut f, &cp).unwrap();
        // The run dies after `stop_after` ops (as kill -9 would leave it).
        for op in plan.ops().take(stop_after) {
            f.apply(op).unwrap();
        }
        // While its run lives, the checkpoint is not ours to roll back.
        f.live_pids.push(999_999);
        assert!(matches!(recover(&mut f), Err(EngineError::Busy(_))));
        f.live_pids.clear();
        let doc = recover(&mut f).unwrap().expect("a rollback");
        assert!(doc.complete, "after {stop_after} ops: {:?}", doc.lines);
        assert_eq!(doc.checkpoint.as_ref().unwrap().pid, 999_999);
        assert_eq!(host_state(&f), before, "after {stop_after} ops");
        assert!(f.checkpoint.is_none());
        assert!(recover(&mut f).unwrap().is_none());
    }
}

#[test]
fn foreign_objects_are_never_part_of_a_rollback() {
    let mut f = fresh();
    let foreign_addr = ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: "192.0.2.7/24".parse().unwrap(),
        scope: Scope::Global,
        protocol: Some(3),
    };
    f.addresses.push(foreign_addr.clone());
    let foreign_rule = RuleSpec {
        family: Family::Ipv4,
        priority: 100,
        table: 254,
        suppress_prefixlength: None,
    };
    f.rules.push((foreign_rule, 4));
    let d = desired(ROLE, &host(65001));
    let cp = apply_with_checkpoint(&mut f, &d);
    let text = serde_json::to_string(&cp).unwrap();
    assert!(!text.contains("192.0.2.7"), "{text}");
    // Someone removes the foreign objects during the window: the rollback
    // does not bring them back (they were never ours).
    f.addresses.retain(|a| a != &foreign_addr);
    f.rules.retain(|(r, _)| r != &foreign_rule);
    let doc = roll_back(&mut f, &cp, "test".into()).unwrap();
    assert!(doc.complete);
    assert!(!f.addresses.contains(&foreign_addr));
    assert!(!f.rules.iter().any(|(r, _)| r == &foreign_rule));
}

#[test]
fn the_nft_table_comes_back_as_it_was() {
    let mut f = fresh();
    let overlay = desired(OVERLAY, &host(65001));
    engine::run(&mut f, &overlay, Mode::Apply).unwrap();
    assert!(f.nft.is_some());
    let with_table = host_state(&f);
    // A profile without the table: apply deletes ours; rollback recreates it.
    let flat = desired(ROLE, &host(65001));
    let cp = apply_with_checkpoint(&mut f, &flat);
    assert!(f.nft.is_none());
    // Through the file format, as recovery reads it.
    let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
    let doc = roll_back(&mut f, &cp, "test".into()).unwrap();
    assert!(doc.complete, "{:?}", doc.lines);
    assert_eq!(host_state(&f), with_table);
}

#[test]
fn a_corrupt_checkpoint_is_an_error_that_says_what_to_do() {
    let mut f = fresh();
    f.checkpoint = Some("{ not json".into());
    let e = recover(&mut f).unwrap_err().to_string();
    assert!(e.contains("remove the file"), "{e}");
}
