//! Rollback proofs on the fake system: record, apply, roll back against a
//! fresh observation, and the host is exactly as before; foreign objects are
//! never part of it; a rollback of a host already as recorded does nothing.

use super::*;
use crate::desired::{Family, RuleSpec};
use crate::engine;
use crate::observed::ObservedAddress;
use crate::profile::load_str;
use crate::system::fake::FakeSystem;
use crate::system::{BirdProtocol, System};

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

/// Plans, records, applies; returns the records.
fn apply_recorded(f: &mut FakeSystem, d: &crate::desired::Desired) -> Vec<Restore> {
    let (target, pre) = engine::observe(f, d, None).unwrap();
    let plan = crate::plan::plan(&target, &pre);
    let records = record(plan.ops(), &pre);
    for op in plan.ops() {
        f.apply(op).unwrap();
    }
    records
}

fn roll_back(f: &mut FakeSystem, d: &crate::desired::Desired, records: &[Restore]) -> Vec<Op> {
    let (_, now) = engine::observe(f, d, None).unwrap();
    let ops = plan_rollback(records, &now).unwrap();
    for op in &ops {
        f.apply(op).unwrap();
    }
    ops
}

#[test]
fn a_fresh_host_is_restored_exactly() {
    let mut f = fresh();
    let before = host_state(&f);
    let d = desired(ROLE, &host(65001));
    let records = apply_recorded(&mut f, &d);
    assert_ne!(host_state(&f), before, "the apply changed nothing");
    let ops = roll_back(&mut f, &d, &records);
    assert!(!ops.is_empty());
    assert_eq!(host_state(&f), before);
    // A second rollback finds everything as recorded.
    let (_, now) = engine::observe(&mut f, &d, None).unwrap();
    assert_eq!(plan_rollback(&records, &now).unwrap(), vec![]);
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
    apply_recorded(&mut f, &good);
    let converged = host_state(&f);
    let good_conf = f.files[&PathBuf::from("/etc/bird/bird.conf")].clone();

    let bad = desired(ROLE, &host(65999));
    let records = apply_recorded(&mut f, &bad);
    // Only the BIRD config (and its reload) changed.
    assert_eq!(
        records.iter().map(Restore::key).collect::<Vec<_>>(),
        ["file /etc/bird/bird.conf", "bird reload"]
    );
    assert!(f.files[&PathBuf::from("/etc/bird/bird.conf")].contains("65999"));
    let reloads = f.reloads;
    let ops = roll_back(&mut f, &bad, &records);
    assert!(
        matches!(&ops[..], [Op::WriteBirdConfig { content, .. }, Op::ReloadBird { .. }] if *content == good_conf),
        "{ops:?}"
    );
    assert_eq!(f.reloads, reloads + 1);
    assert_eq!(host_state(&f), converged);
}

#[test]
fn foreign_objects_are_never_part_of_a_rollback() {
    let mut f = fresh();
    let foreign_addr = ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: "192.0.2.7/24".parse().unwrap(),
        scope: crate::observed::Scope::Global,
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
    let records = apply_recorded(&mut f, &d);
    assert!(records.iter().all(|r| !r.describe().contains("192.0.2.7")));
    // Someone removes the foreign objects during the window: the rollback
    // does not bring them back (they were never ours).
    f.addresses.retain(|a| a != &foreign_addr);
    f.rules.retain(|(r, _)| r != &foreign_rule);
    let ops = roll_back(&mut f, &d, &records);
    assert!(
        ops.iter().all(|o| !format!("{o:?}").contains("192.0.2.7")
            && !format!("{o:?}").contains("priority: 100")),
        "{ops:?}"
    );
    assert!(f.addresses.iter().all(|a| a != &foreign_addr));
}

#[test]
fn a_partial_apply_rolls_back_what_it_did() {
    let mut f = fresh();
    let before = host_state(&f);
    let d = desired(ROLE, &host(65001));
    let (target, pre) = engine::observe(&mut f, &d, None).unwrap();
    let plan = crate::plan::plan(&target, &pre);
    let records = record(plan.ops(), &pre);
    // The run dies after half of its ops (as a kill -9 would leave it).
    let n = plan.ops().count() / 2;
    for op in plan.ops().take(n) {
        f.apply(op).unwrap();
    }
    roll_back(&mut f, &d, &records);
    assert_eq!(host_state(&f), before);
}

#[test]
fn the_nft_table_comes_back_as_it_was() {
    let mut f = fresh();
    let overlay = desired(OVERLAY, &host(65001));
    apply_recorded(&mut f, &overlay);
    // What engine::run records after creating it: the table is ours.
    f.state.get_or_insert_with(Default::default).nft_table = true;
    let with_table = host_state(&f);
    assert!(f.nft.is_some());
    // A profile without the table: apply deletes ours; rollback recreates it.
    let flat = desired(ROLE, &host(65001));
    let records = apply_recorded(&mut f, &flat);
    assert!(f.nft.is_none());
    let ops = roll_back(&mut f, &flat, &records);
    assert!(ops.iter().any(|o| matches!(o, Op::Nft { .. })), "{ops:?}");
    assert_eq!(host_state(&f), with_table);
}

#[test]
fn a_listed_table_rebuilds_into_the_same_content() {
    let t = crate::plan::resolve(
        &desired(OVERLAY, &host(65001)),
        &fresh().links().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let content = TableContent::from_doc(t.nft.as_ref().unwrap());
    let doc: nftables::schema::Nftables<'static> =
        serde_json::from_value(table_document(&content)).unwrap();
    assert_eq!(TableContent::from_doc(&doc), content);
}

#[test]
fn inverse_of_each_op() {
    let mut f = fresh();
    f.addresses.push(ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: "172.30.0.1/31".parse().unwrap(),
        scope: crate::observed::Scope::Global,
        protocol: None,
    });
    let d = desired(ROLE, &host(65001));
    let (_, pre) = engine::observe(&mut f, &d, None).unwrap();
    let prefix: IpNet = "10.10.0.11/32".parse().unwrap();
    let add = Op::AddAddress {
        index: 1,
        ifname: "lo".into(),
        prefix,
        scope: crate::observed::Scope::Global,
        protocol: 211,
    };
    assert_eq!(
        inverse(&add, &pre).unwrap(),
        [Op::DelAddress {
            index: 1,
            ifname: "lo".into(),
            prefix
        }]
    );
    // The foreign global transit address the plan replaces comes back as it was.
    let transit: IpNet = "172.30.0.1/31".parse().unwrap();
    let del = Op::DelAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: transit,
    };
    assert_eq!(
        inverse(&del, &pre).unwrap(),
        [Op::AddAddress {
            index: 2,
            ifname: "eth0".into(),
            prefix: transit,
            scope: crate::observed::Scope::Global,
            protocol: 0,
        }]
    );
    let key = SysctlKey::parse("net.ipv4.ip_forward").unwrap();
    assert_eq!(
        inverse(
            &Op::WriteSysctl {
                key: key.clone(),
                value: "1".into()
            },
            &pre
        )
        .unwrap(),
        [Op::WriteSysctl {
            key,
            value: "0".into()
        }]
    );
    let path = PathBuf::from(crate::plan::target::SYSCTL_FILE);
    assert_eq!(
        inverse(
            &Op::WriteFile {
                path: path.clone(),
                content: "x".into()
            },
            &pre
        )
        .unwrap(),
        [Op::RemoveFile { path }]
    );
    assert_eq!(
        inverse(
            &Op::SetLink {
                index: 2,
                ifname: "eth0".into(),
                mtu: Some(9000),
                up: true
            },
            &pre
        )
        .unwrap(),
        [Op::SetLink {
            index: 2,
            ifname: "eth0".into(),
            mtu: Some(1500),
            up: false
        }]
    );
}
