//! The doctor end to end on [`FakeSystem`]: every fact reaches the snapshot
//! through the caller's system (its `--root`, its `--state`, its inspector),
//! so a host's failure can be staged without root and without a kernel.

use std::path::{Path, PathBuf};

use super::checks::{BGP_LISTENERS, RP_FILTER, UNDERLAY_STATE};
use super::*;
use crate::desired::Family;
use crate::observed::{ObservedAddress, Scope};
use crate::state::{OwnedAddress, State};
use crate::system::fake::FakeSystem;
use crate::system::inspect::ProcessInfo;
use crate::system::BirdProtocol;

fn host() -> FakeSystem {
    let mut f = FakeSystem::with_nics(&["eth0"]);
    f.root = Some(PathBuf::from("/scratch"));
    f.addresses.push(ObservedAddress {
        index: 2,
        ifname: "eth0".into(),
        prefix: "172.30.0.1/31".parse().unwrap(),
        scope: Scope::Link,
        protocol: None,
    });
    f
}

/// Two sockets listening on `0.0.0.0:179` (state 0A, SO_REUSEPORT), inodes 4242 and 4343.
const TCP_TWO_ON_179: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 00000000:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 100 0 0 10 0
";

fn bird(pid: u32, args: &[&str], cwd: &str, sockets: Vec<u64>) -> ProcessInfo {
    ProcessInfo {
        pid,
        comm: "bird".into(),
        cmdline: std::iter::once("bird")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect(),
        cwd: PathBuf::from(cwd),
        sockets,
    }
}

#[test]
fn the_state_file_is_read_through_the_callers_system() {
    let mut f = host();
    let mut st = State::new();
    st.addresses.insert(OwnedAddress {
        ifname: "eth0".into(),
        prefix: "172.30.0.1/31".parse().unwrap(),
    });
    f.state = Some(st.clone());
    let r = run(&mut f, None);
    let s = r.get(UNDERLAY_STATE).unwrap();
    assert_eq!(s.severity, Severity::Ok, "{s:#?}");
    assert!(
        s.evidence[0]
            .starts_with("/scratch/var/lib/underlay/state.json: underlay owns 1 addresses"),
        "{s:#?}"
    );

    // A run killed part-way, and a safe apply in its window.
    st.intents
        .files
        .insert(PathBuf::from("/etc/bird/bird.conf"));
    f.state = Some(st);
    f.checkpoint = Some("{}".into());
    let s = run(&mut f, None).get(UNDERLAY_STATE).unwrap().clone();
    assert_eq!(s.severity, Severity::Warning);
    assert!(
        s.title.contains("interrupted") && s.title.contains("checkpoint"),
        "{s:#?}"
    );

    // What converge would refuse: a failure, and the other checks still run.
    f.host.state_text = Some("{\"version\": \"two\"}".into());
    let r = run(&mut f, None);
    let s = r.get(UNDERLAY_STATE).unwrap();
    assert_eq!(s.severity, Severity::Failure, "{s:#?}");
    assert!(
        s.fix.contains("mv /scratch/var/lib/underlay/state.json"),
        "{s:#?}"
    );
    assert_eq!(r.findings.len(), checks::ALL.len());

    f.state = None;
    f.host.state_text = None;
    f.checkpoint = None;
    let s = run(&mut f, None).get(UNDERLAY_STATE).unwrap().clone();
    assert_eq!(s.severity, Severity::Skipped, "{s:#?}");
}

#[test]
fn host_facts_come_from_the_inspector_and_files_from_below_root() {
    let mut f = host();
    f.host
        .proc_sys
        .insert("net/ipv4/conf/all/rp_filter".into(), "0".into());
    f.host
        .proc_sys
        .insert("net/ipv4/conf/eth0/rp_filter".into(), "1".into());
    // Two BIRDs on one BGP socket: the relative -s resolves from the cwd,
    // the config is read as the process sees it.
    f.host.tcp.insert(Family::Ipv4, TCP_TWO_ON_179.into());
    f.host.processes = vec![
        bird(
            40,
            &["-c", "/srv/a.conf", "-s", "a.ctl"],
            "/run/a",
            vec![4242],
        ),
        bird(41, &[], "/", vec![7, 4343]),
    ];
    f.host.process_files.insert(
        (40, PathBuf::from("/srv/a.conf")),
        "protocol device {}\n".into(),
    );
    f.host.bird_sockets.insert(
        PathBuf::from("/run/a/a.ctl"),
        vec![BirdProtocol {
            name: "tor_a".into(),
            proto: "BGP".into(),
            state: "up".into(),
            info: "Established".into(),
        }],
    );
    // The second BIRD has no -c: its config is the default one below --root.
    f.files.insert(
        PathBuf::from("/etc/bird/bird.conf"),
        "protocol kernel {}\n".into(),
    );
    f.files.insert(
        PathBuf::from("/etc/systemd/networkd.conf.d/10-keep.conf"),
        "[Network]\nManageForeignRoutes=no\n".into(),
    );

    let (snap, _) = collect::collect(&mut f, None);
    assert_eq!(snap.birds.len(), 2);
    assert_eq!(
        snap.birds[0].config.as_deref(),
        Some("protocol device {}\n")
    );
    assert_eq!(snap.birds[0].socket, Path::new("/run/a/a.ctl"));
    assert_eq!(
        snap.birds[1].config_path,
        Path::new("/scratch/etc/bird/bird.conf")
    );
    assert_eq!(
        snap.birds[1].config.as_deref(),
        Some("protocol kernel {}\n")
    );
    assert_eq!(
        snap.birds[1].socket,
        Path::new("/scratch/run/bird/bird.ctl")
    );
    assert_eq!(snap.bird_sessions.len(), 1, "{:#?}", snap.bird_sessions);
    assert_eq!(snap.listeners.len(), 2);
    assert_eq!(snap.listeners[0].owners, [(40, "bird".to_string())]);
    assert_eq!(snap.listeners[1].owners, [(41, "bird".to_string())]);
    assert!(snap
        .files
        .contains_key(Path::new("/etc/systemd/networkd.conf.d/10-keep.conf")));
    assert!(
        snap.notes
            .iter()
            .any(|n| n.contains("pid 41") && n.contains("/scratch/run/bird/bird.ctl")),
        "{:#?}",
        snap.notes
    );

    let r = run(&mut f, None);
    assert_eq!(r.get(RP_FILTER).unwrap().severity, Severity::Warning);
    assert_eq!(r.get(BGP_LISTENERS).unwrap().severity, Severity::Failure);
}
