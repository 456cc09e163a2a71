//! Golden plans (current + desired → expected ops) and convergence proofs on
//! the fake system: apply the plan, plan again, nothing left to do.

use std::path::PathBuf;

use ipnet::IpNet;

use super::*;
use crate::desired::{Family, RuleSpec, SysctlKey};
use crate::engine::{self, Mode};
use crate::observed::{ObservedAddress, ObservedUnit, Scope, UnitControl};
use crate::profile::load_str;
use crate::system::fake::FakeSystem;

const ROLE: &str = include_str!("../../../profiles/l3-ecmp-calico.toml");

const HOST: &str = r#"version = 1
hostname = "h1"
asn = 65101
service_ipv4 = "10.10.0.11/32"
[[uplinks]]
name = "tor-a"
nic = { name = "eth0" }
ipv4 = { address = "172.30.0.1/31", peer = "172.30.0.0" }
peer_asn = 65001
[[uplinks]]
name = "tor-b"
nic = { name = "eth1" }
ipv4 = { address = "172.30.1.1/31", peer = "172.30.1.0" }
peer_asn = 65002
"#;

fn desired(host: &str) -> crate::desired::Desired {
    load_str("role.toml", ROLE, "host.toml", host).expect("valid profile")
}

/// A host with the sysctls the profile touches present at kernel defaults.
fn fresh() -> FakeSystem {
    let mut f = FakeSystem::with_nics(&["eth0", "eth1", "eth2"]);
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
        "net.ipv4.conf.eth2.rp_filter",
    ] {
        f.sysctls.insert(SysctlKey::parse(k).unwrap(), "0".into());
    }
    f
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn plan_of(f: &mut FakeSystem, host: &str) -> Plan {
    engine::run(f, &desired(host), Mode::Plan)
        .expect("plan")
        .plan
}

fn ops(p: &Plan) -> Vec<Op> {
    p.ops().cloned().collect()
}

#[test]
fn golden_fresh_host() {
    let mut f = fresh();
    let p = plan_of(&mut f, HOST);
    let ops = ops(&p);
    let rule = |prio, table, s| RuleSpec {
        family: Family::Ipv4,
        priority: prio,
        table,
        suppress_prefixlength: s,
    };
    let expected_tail = [
        Op::AddAddress {
            index: 1,
            ifname: "lo".into(),
            prefix: net("10.10.0.11/32"),
            scope: Scope::Global,
            protocol: 211,
        },
        Op::AddAddress {
            index: 2,
            ifname: "eth0".into(),
            prefix: net("172.30.0.1/31"),
            scope: Scope::Link,
            protocol: 211,
        },
        Op::AddAddress {
            index: 3,
            ifname: "eth1".into(),
            prefix: net("172.30.1.1/31"),
            scope: Scope::Link,
            protocol: 211,
        },
        Op::AddRule {
            rule: rule(30000, 254, Some(0)),
            protocol: 211,
        },
        Op::AddRule {
            rule: rule(30001, 1001, None),
            protocol: 211,
        },
    ];
    // The BIRD config comes last: its krt_prefsrc needs the service IP on lo.
    assert!(
        matches!(ops.last(), Some(Op::WriteBirdConfig { .. })),
        "{:?}",
        ops.last()
    );
    assert_eq!(ops[ops.len() - 6..ops.len() - 1], expected_tail[..]);
    assert!(ops.contains(&Op::SetLink {
        index: 2,
        ifname: "eth0".into(),
        mtu: Some(9000),
        up: true
    }));
    assert!(ops.contains(&Op::WriteSysctl {
        key: SysctlKey::parse("net.ipv4.conf.eth1.rp_filter").unwrap(),
        value: "2".into()
    }));
    // eth2 is not an uplink: nothing of ours touches it.
    assert!(
        !ops.iter().any(|o| format!("{o:?}").contains("eth2")),
        "{ops:#?}"
    );
    let tables = ops.iter().find_map(|o| match o {
        Op::WriteFile { path, content } if path == &PathBuf::from(target::RT_TABLES_FILE) => {
            Some(content.clone())
        }
        _ => None,
    });
    assert!(tables
        .expect("rt_tables.d written")
        .contains("1001\tunderlay-host"));
}

#[test]
fn fresh_host_converges_and_second_plan_is_empty() {
    let mut f = fresh();
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(r.changed());
    assert!(r.failure.is_none());
    assert!(r.converged(), "{:#?}", r.remaining);
    assert_eq!(r.exit_code(), 0);
    let again = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(!again.changed());
    assert_eq!(again.applied_ops, 0);
    assert!(again.plan.is_converged());
}

#[test]
fn existing_address_with_wrong_scope_is_replaced() {
    let mut f = fresh();
    // A transit address someone put there at global scope: the MASQUERADE trap.
    f.addresses.push(ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: net("172.30.0.1/31"),
        scope: Scope::Global,
        protocol: None,
    });
    let p = plan_of(&mut f, HOST);
    let item = p
        .items
        .iter()
        .find(|i| i.id == "172.30.0.1/31 dev eth0")
        .unwrap();
    assert_eq!(item.action, Action::Update);
    assert!(matches!(
        item.ops[..],
        [
            Op::DelAddress { .. },
            Op::AddAddress {
                scope: Scope::Link,
                ..
            }
        ]
    ));
}

#[test]
fn foreign_objects_are_never_planned_for_deletion() {
    let mut f = fresh();
    f.addresses.push(ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: net("192.168.50.5/24"),
        scope: Scope::Global,
        protocol: Some(3),
    });
    f.rules.push((
        RuleSpec {
            family: Family::Ipv4,
            priority: 100,
            table: 77,
            suppress_prefixlength: None,
        },
        186,
    ));
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(f
        .addresses
        .iter()
        .any(|a| a.prefix == net("192.168.50.5/24")));
    assert!(f.rules.iter().any(|(r, p)| r.table == 77 && *p == 186));
    assert!(!f
        .applied
        .iter()
        .any(|o| matches!(o, Op::DelAddress { .. } | Op::DelRule { .. })));
}

#[test]
fn dropping_an_uplink_deletes_exactly_its_objects() {
    let mut f = fresh();
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let one_uplink = HOST
        .split("[[uplinks]]\nname = \"tor-b\"")
        .next()
        .unwrap()
        .to_string();
    let p = plan_of(&mut f, &one_uplink);
    let deletes: Vec<&Op> = p
        .ops()
        .filter(|o| matches!(o, Op::DelAddress { .. } | Op::DelRule { .. }))
        .collect();
    assert_eq!(
        deletes,
        [&Op::DelAddress {
            index: 3,
            ifname: "eth1".into(),
            prefix: net("172.30.1.1/31")
        }]
    );
    let r = engine::run(&mut f, &desired(&one_uplink), Mode::Apply).unwrap();
    assert!(r.converged());
    // The link itself is left as it is, and nothing else on it was ours.
    assert!(f.links.iter().any(|l| l.name == "eth1" && l.up));
}

#[test]
fn without_ifa_proto_the_state_file_alone_proves_ownership() {
    let mut f = fresh();
    f.addr_proto = false;
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let state = f.state.clone().unwrap();
    assert_eq!(state.addresses.len(), 3);
    let one_uplink = HOST
        .split("[[uplinks]]\nname = \"tor-b\"")
        .next()
        .unwrap()
        .to_string();
    let r = engine::run(&mut f, &desired(&one_uplink), Mode::Apply).unwrap();
    assert!(r.converged());
    assert!(!f.addresses.iter().any(|a| a.ifname == "eth1"));
    // With the state file lost, nothing is claimed: a deletion is never guessed.
    f.state = None;
    let p = plan_of(&mut f, &HOST.replace("10.10.0.11/32", "10.10.0.12/32"));
    assert!(!p.ops().any(|o| matches!(o, Op::DelAddress { .. })));
}

#[test]
fn changed_service_ip_replaces_ours_only() {
    let mut f = fresh();
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let moved = HOST.replace("10.10.0.11/32", "10.10.0.12/32");
    let p = plan_of(&mut f, &moved);
    let changes: Vec<(Action, &str)> = p.changes().map(|i| (i.action, i.id.as_str())).collect();
    assert_eq!(
        changes,
        [
            (Action::Delete, "10.10.0.11/32 dev lo"),
            (Action::Create, "10.10.0.12/32 dev lo"),
            // The router id and the announced service IP change with it.
            (Action::Update, "bird config /etc/bird/bird.conf"),
        ]
    );
}

#[test]
fn sysctl_written_only_when_different() {
    let mut f = fresh();
    f.sysctls
        .insert(SysctlKey::parse("net.ipv4.ip_forward").unwrap(), "1".into());
    let p = plan_of(&mut f, HOST);
    assert!(!p.ops().any(
        |o| matches!(o, Op::WriteSysctl { key, .. } if key.to_string() == "net.ipv4.ip_forward")
    ));
    assert!(p.ops().any(|o| matches!(o, Op::WriteSysctl { key, .. } if key.to_string() == "net.ipv4.fib_multipath_hash_policy")));
}

#[test]
fn dropped_sysctl_leaves_live_value_and_persisted_file() {
    let mut f = fresh();
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let role = ROLE.replace("\"net.ipv4.conf.all.arp_ignore\" = 1\n", "");
    let d = load_str("role.toml", &role, "host.toml", HOST).unwrap();
    let r = engine::run(&mut f, &d, Mode::Apply).unwrap();
    let item = r
        .plan
        .items
        .iter()
        .find(|i| i.id == "net.ipv4.conf.all.arp_ignore")
        .unwrap();
    assert_eq!(item.action, Action::Delete);
    assert!(r.converged());
    assert_eq!(
        f.sysctls[&SysctlKey::parse("net.ipv4.conf.all.arp_ignore").unwrap()],
        "1"
    );
    let persisted = &f.files[&PathBuf::from(target::SYSCTL_FILE)];
    assert!(!persisted.contains("arp_ignore"), "{persisted}");
}

#[test]
fn partial_apply_records_what_it_created() {
    let mut f = fresh();
    let total = plan_of(&mut f, HOST).ops().count();
    f.fail_at = Some(total - 1); // the last rule fails
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(r.failure.is_some());
    assert_eq!(r.exit_code(), 1);
    assert_eq!(f.state.as_ref().unwrap().addresses.len(), 3);
    f.fail_at = None;
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert_eq!(r.applied_ops, 1);
    assert!(r.converged());
}

#[test]
fn missing_nic_names_the_match_and_lists_nics() {
    let mut f = fresh();
    let host = HOST.replace("name = \"eth1\"", "name = \"ens9\"");
    let err = engine::run(&mut f, &desired(&host), Mode::Plan)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uplink 'tor-b'"), "{err}");
    assert!(err.contains("name ens9"), "{err}");
    assert!(err.contains("eth0 (52:54:00:00:00:02), eth1"), "{err}");
}

#[test]
fn nic_matched_by_mac() {
    let mut f = fresh();
    let host = HOST.replace(
        "nic = { name = \"eth1\" }",
        "nic = { mac = \"52:54:00:00:00:04\" }",
    );
    let p = plan_of(&mut f, &host);
    // 52:54:00:00:00:04 is eth2 in the fake: tor-b binds there.
    assert!(p.items.iter().any(|i| i.id == "eth2 (tor-b)"));
    assert!(p
        .ops()
        .any(|o| matches!(o, Op::AddAddress { ifname, .. } if ifname == "eth2")));
}

#[test]
fn bird_config_written_once_and_reloaded_only_when_running() {
    let mut f = fresh();
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(r.converged());
    assert!(f
        .applied
        .iter()
        .any(|o| matches!(o, Op::WriteBirdConfig { .. })));
    assert_eq!(f.reloads, 0, "no BIRD running: nothing to reload");
    let conf = f.files[&PathBuf::from("/etc/bird/bird.conf")].clone();
    assert!(conf.contains("router id 10.10.0.11;"), "{conf}");
    assert!(conf.contains("kernel table 1001"), "{conf}");
    // BIRD now runs; an unchanged config is neither rewritten nor reloaded.
    f.bird = Some(Vec::new());
    f.applied.clear();
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(!r.changed());
    assert_eq!(f.reloads, 0);
    // A timer change rewrites and reloads.
    let role = ROLE.replace("hold_time = 9", "hold_time = 30");
    let d = load_str("role.toml", &role, "host.toml", HOST).unwrap();
    let r = engine::run(&mut f, &d, Mode::Apply).unwrap();
    let item = r.plan.changes().next().unwrap();
    assert_eq!((item.kind, item.action), (Kind::Bgp, Action::Update));
    assert!(item.after.as_ref().unwrap().contains("reload"));
    assert_eq!(f.reloads, 1);
}

#[test]
fn template_override_replaces_the_embedded_template() {
    let mut f = fresh();
    f.files.insert(
        PathBuf::from("/etc/underlay/templates/bird.conf.j2"),
        "# custom\nrouter id {{ router_id }};\n".into(),
    );
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert_eq!(
        f.files[&PathBuf::from("/etc/bird/bird.conf")],
        "# custom\nrouter id 10.10.0.11;\n"
    );
    f.files.insert(
        PathBuf::from("/etc/underlay/templates/bird.conf.j2"),
        "{{ no_such_variable }}".into(),
    );
    let err = engine::run(&mut f, &desired(HOST), Mode::Plan)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/etc/underlay/templates/bird.conf.j2"),
        "{err}"
    );
    assert!(err.contains("undefined"), "{err}");
}

#[test]
fn stopped_bird_is_started_only_under_systemd() {
    let mut f = fresh();
    let p = plan_of(&mut f, HOST);
    assert!(
        !p.ops().any(|o| matches!(o, Op::StartUnit { .. })),
        "no systemd (or --netns): the caller starts BIRD"
    );
    f.units = UnitControl::Systemd;
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let ops: Vec<&Op> = f
        .applied
        .iter()
        .filter(|o| matches!(o, Op::WriteBirdConfig { .. } | Op::StartUnit { .. }))
        .collect();
    assert!(
        matches!(
            ops[..],
            [Op::WriteBirdConfig { .. }, Op::StartUnit { wait: true, .. }]
        ),
        "config first, then start and wait for the job: {ops:?}"
    );
    assert!(r.converged());
}

fn bird_unit_item(p: &Plan) -> &Item {
    p.items
        .iter()
        .find(|i| i.id == "unit bird.service")
        .expect("an item for bird.service")
}

#[test]
fn a_scratch_root_never_drives_the_machines_bird_unit() {
    let mut f = fresh();
    f.units = UnitControl::ScratchRoot(PathBuf::from("/tmp/scratch"));
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(f.unit_starts.is_empty(), "{:?}", f.unit_starts);
    let item = bird_unit_item(&r.plan);
    assert_eq!(item.action, Action::Skip);
    let why = item.after.as_deref().unwrap();
    assert!(why.contains("--root /tmp/scratch"), "{why}");
    assert!(r.converged(), "a skip is not a pending change");
    let text = crate::report::human(
        &r,
        &crate::report::Context {
            command: "apply",
            host: "h",
            netns: None,
            total_ms: 1.0,
        },
        false,
    );
    assert!(
        text.contains("skip    bgp      unit bird.service  (not started: --root /tmp/scratch"),
        "the reason shows without -v:\n{text}"
    );
}

#[test]
fn a_start_queued_by_systemd_is_left_to_systemd() {
    // At boot bird.service's start job waits for the converge unit.
    let mut f = fresh();
    f.units = UnitControl::Systemd;
    f.bird_unit = Some(ObservedUnit {
        active_state: "inactive".into(),
        queued_job: Some(77),
        ordered_after_caller: Some("underlay.service".into()),
    });
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(f.unit_starts.is_empty(), "{:?}", f.unit_starts);
    let item = bird_unit_item(&r.plan);
    assert_eq!(item.action, Action::Ok);
    assert!(item.after.as_deref().unwrap().contains("job 77"));
    assert!(r.converged());
}

#[test]
fn a_unit_ordered_after_the_caller_is_started_without_waiting() {
    // Awaiting that job from inside the converge unit would deadlock.
    let mut f = fresh();
    f.units = UnitControl::Systemd;
    f.bird_unit = Some(ObservedUnit {
        active_state: "inactive".into(),
        queued_job: None,
        ordered_after_caller: Some("underlay.service".into()),
    });
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert_eq!(f.unit_starts, vec![("bird.service".to_string(), false)]);
    assert!(r.converged(), "queued now, so verification is satisfied");
    let again = plan_of(&mut f, HOST);
    assert!(again.is_converged());
}

#[test]
fn a_bird_unit_systemd_just_started_is_not_started_again() {
    // bird.service is Type=simple: active before its control socket exists.
    let mut f = fresh();
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    f.units = UnitControl::Systemd;
    f.bird_unit = Some(ObservedUnit {
        active_state: "active".into(),
        ..Default::default()
    });
    let p = plan_of(&mut f, HOST);
    assert!(p.is_converged(), "{p:?}");
    assert_eq!(bird_unit_item(&p).action, Action::Ok);
}

const IPIP_ROLE: &str = include_str!("../../../profiles/l3-ecmp-calico-ipip.toml");

#[test]
fn overlay_profile_gets_the_mark_guard_table_once() {
    let mut f = fresh();
    let d = load_str("role.toml", IPIP_ROLE, "host.toml", HOST).unwrap();
    let r = engine::run(&mut f, &d, Mode::Apply).unwrap();
    let item = r
        .plan
        .items
        .iter()
        .find(|i| i.kind == Kind::Nft)
        .expect("nft item");
    assert_eq!(item.action, Action::Create);
    assert!(
        item.after.as_ref().unwrap().contains("mark_guard"),
        "{:?}",
        item.after
    );
    assert!(f.state.as_ref().unwrap().nft_table);
    let again = engine::run(&mut f, &d, Mode::Apply).unwrap();
    assert!(
        !again.changed(),
        "{:#?}",
        again.plan.changes().collect::<Vec<_>>()
    );
    // Back to the flat profile: the table we created goes.
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(r
        .plan
        .items
        .iter()
        .any(|i| i.kind == Kind::Nft && i.action == Action::Delete));
    assert!(f.nft.is_none());
    assert!(!f.state.as_ref().unwrap().nft_table);
    // Neither wanted nor ours: nft is not even spawned.
    let reads = f.nft_reads;
    engine::run(&mut f, &desired(HOST), Mode::Plan).unwrap();
    assert_eq!(f.nft_reads, reads);
}

#[test]
fn a_table_we_did_not_create_is_never_deleted() {
    let mut f = fresh();
    let d = load_str("role.toml", IPIP_ROLE, "host.toml", HOST).unwrap();
    engine::run(&mut f, &d, Mode::Apply).unwrap();
    // Same table present, but the state file was lost: not ours to delete.
    f.state = None;
    let r = engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    assert!(!r.plan.items.iter().any(|i| i.kind == Kind::Nft));
    assert!(f.nft.is_some());
}

#[test]
fn snat_mode_keeps_transit_global_and_translates_explicitly() {
    let mut f = fresh();
    let role = format!("{ROLE}\n[nat]\nmode = \"snat\"\n");
    let d = load_str("role.toml", &role, "host.toml", HOST).unwrap();
    let r = engine::run(&mut f, &d, Mode::Apply).unwrap();
    assert!(r.converged());
    let transit = f
        .addresses
        .iter()
        .find(|a| a.prefix == net("172.30.0.1/31"))
        .unwrap();
    assert_eq!(transit.scope, Scope::Global);
    let item = r.plan.items.iter().find(|i| i.kind == Kind::Nft).unwrap();
    let diff = item.after.as_ref().unwrap();
    assert!(diff.contains("snat ip to 10.10.0.11"), "{diff}");
    assert!(diff.contains("pod_snat"), "{diff}");
}

#[test]
fn exit_codes() {
    let mut f = fresh();
    let r = engine::run(&mut f, &desired(HOST), Mode::Plan).unwrap();
    assert_eq!(r.exit_code(), 2);
    let r = engine::run(&mut f, &desired(HOST), Mode::Verify).unwrap();
    assert_eq!(r.exit_code(), 3);
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    for m in [Mode::Plan, Mode::Verify, Mode::Status] {
        assert_eq!(
            engine::run(&mut f, &desired(HOST), m).unwrap().exit_code(),
            0
        );
    }
}

#[test]
fn bird_logs_to_syslog_on_a_host_and_to_a_file_below_root_in_netns() {
    let mut f = fresh();
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let conf = &f.files[&PathBuf::from("/etc/bird/bird.conf")];
    assert!(conf.contains("\nlog syslog all;\n"), "{conf}");
    assert!(
        f.dirs.is_empty(),
        "a host's units prepare BIRD's directories"
    );

    let mut f = fresh();
    f.in_netns = true;
    f.root = Some(PathBuf::from("/tmp/try"));
    engine::run(&mut f, &desired(HOST), Mode::Apply).unwrap();
    let conf = &f.files[&PathBuf::from("/etc/bird/bird.conf")];
    assert!(
        conf.contains("\nlog \"/tmp/try/var/log/bird/bird.log\" all;\n"),
        "{conf}"
    );
    assert_eq!(
        f.dirs,
        [PathBuf::from("/run/bird"), PathBuf::from("/var/log/bird")],
        "inside --netns the config write makes the socket and log directories"
    );
}

#[test]
fn a_password_bird_cannot_quote_is_refused_before_any_change() {
    let host = HOST.replacen(
        "peer_asn = 65001",
        "peer_asn = 65001\npassword_file = \"/etc/underlay/secrets/tor-a\"",
        1,
    );
    for bad in ["a\"b\n", "\n", "two\nlines\n"] {
        let mut f = fresh();
        f.files
            .insert(PathBuf::from("/etc/underlay/secrets/tor-a"), bad.into());
        let err = engine::run(&mut f, &desired(&host), Mode::Apply)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("uplink 'tor-a': password_file /etc/underlay/secrets/tor-a"),
            "{err}"
        );
        assert!(
            !err.contains("a\"b"),
            "the secret never reaches the error: {err}"
        );
        assert!(f.applied.is_empty());
    }
}
