//! Pure: the join's orchestration over the in-memory host. The readiness
//! gates come from the real engine and gate code over the fake system (BGP
//! sessions, next hops, exports as BIRD and the kernel would report them);
//! kubeadm is the fake's scripted stand-in, which records every run.

use std::path::Path;
use std::time::Duration;

use underlay::desired::join::{JOIN_CONFIG, KUBELET_CONF};
use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::error::ErrorKind;
use underlay::gates::{self, Outcome};
use underlay::join::{self, JoinError, JoinStatus};
use underlay::observed::NextHop;
use underlay::profile::load_str;
use underlay::system::fake::FakeSystem;
use underlay::system::fake_join::{FakeJoinHost, Script};
use underlay::system::join::SecretError;
use underlay::system::BirdProtocol;

const ROLE: &str = include_str!("../../profiles/l3-ecmp-calico.toml");
const TOKEN: &str = "k8stok.0123456789abcdef";
const TOKEN_FILE: &str = "/etc/underlay/secrets/join-token";

fn host_facts(api_servers: &str) -> String {
    format!(
        "{}\n[join]\napi_servers = {api_servers}\n\
         ca_cert_hashes = [\"sha256:{}\"]\ntoken_file = \"{TOKEN_FILE}\"\n",
        // The example's own [join] section replaced by this test's.
        include_str!("../../profiles/examples/host.toml")
            .split("\n[join]")
            .next()
            .unwrap(),
        "ab".repeat(32)
    )
}

fn desired(api_servers: &str) -> Desired {
    load_str("role.toml", ROLE, "host.toml", &host_facts(api_servers)).unwrap()
}

/// A converged fake host and the gates as they stand; `healthy` decides
/// whether every BGP session is Established.
fn gates_of(d: &Desired, healthy: bool) -> Outcome {
    let mut sys = FakeSystem::with_nics(&["eth0", "eth1"]).with_sysctls_of(d);
    let r = engine::run(&mut sys, d, Mode::Apply).unwrap();
    assert!(r.converged());
    let spec = gates::spec(d, &r.target, Some(Duration::ZERO));
    let mut protos = Vec::new();
    for (i, u) in spec.uplinks.iter().enumerate() {
        for p in &u.protocols {
            let est = healthy || i == 0;
            protos.push(BirdProtocol {
                name: p.clone(),
                proto: "BGP".into(),
                state: if est { "up" } else { "start" }.into(),
                info: if est { "Established" } else { "Active" }.into(),
            });
            let svc: Vec<_> = spec
                .service
                .iter()
                .filter(|s| {
                    gates::family_of_protocol(p) == underlay::desired::Family::of(&s.addr())
                })
                .copied()
                .collect();
            sys.exported.insert(p.clone(), svc);
        }
        sys.nexthops
            .entry(spec.host_table)
            .or_default()
            .push(NextHop {
                gateway: None,
                oif: u.index,
            });
    }
    sys.bird = Some(protos);
    gates::wait(&mut sys, &spec, |_, _| {}).unwrap()
}

fn host_with_token(mode: u32) -> FakeJoinHost {
    let mut h = FakeJoinHost::new();
    h.put(TOKEN_FILE, &format!("{TOKEN}\n"), mode);
    h
}

fn prepared(h: &mut FakeJoinHost, d: &Desired) -> join::Prepared {
    join::prepare(h, d.join.as_ref().unwrap(), Path::new("kubeadm")).unwrap()
}

#[test]
fn a_failing_gate_never_runs_kubeadm() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let gates = gates_of(&d, false);
    assert!(!gates.passed);
    let mut h = host_with_token(0o600);
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, d.join.as_ref().unwrap(), &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::NotAttempted);
    assert!(r.message.contains("bgp-established"), "{}", r.message);
    assert!(h.invocations.is_empty());
    assert!(r.new_record.is_none() && r.failure_kind.is_none());
    assert!(!h.files.contains_key(Path::new(JOIN_CONFIG)));
}

#[test]
fn all_gates_pass_kubeadm_runs_once_then_never_again() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let j = d.join.as_ref().unwrap();
    let gates = gates_of(&d, true);
    assert!(gates.passed, "{gates:?}");
    let mut h = host_with_token(0o600);
    assert!(join::already_joined(&mut h, None).unwrap().is_none());
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, j, &p, &gates, 1_700_000_000);
    assert_eq!(r.status, JoinStatus::Joined, "{}", r.message);
    assert_eq!(h.invocations.len(), 1);
    let inv = &h.invocations[0];
    assert_eq!(inv.kubeadm, Path::new("/usr/bin/kubeadm"));
    assert_eq!(inv.config_path, Path::new(JOIN_CONFIG));
    assert_eq!(inv.config_mode, 0o600);
    assert!(inv.config.contains(&format!("token: \"{TOKEN}\"")));
    assert!(inv.config.contains("value: \"10.10.0.11,fd00:10::11\""));
    // The token left the disk with the config.
    assert!(!h.files.contains_key(Path::new(JOIN_CONFIG)));
    let rec = r.new_record.clone().unwrap();
    assert_eq!(rec.node_ip, "10.10.0.11,fd00:10::11");
    assert_eq!(rec.joined_at, 1_700_000_000);
    assert_eq!(h.units.len(), 1, "the kubelet is enabled and started");
    assert!(!serde_json::to_string(&r)
        .unwrap()
        .contains("0123456789abcdef"));

    // Next run: kubelet.conf alone, or our marker alone, says joined.
    let a = join::already_joined(&mut h, None).unwrap().unwrap();
    assert!(a.kubelet_conf);
    h.files.remove(Path::new(KUBELET_CONF));
    let a = join::already_joined(&mut h, Some(&rec)).unwrap().unwrap();
    assert!(!a.kubelet_conf && a.marker.is_some());
    let r = join::run::report_already(j, &a);
    assert_eq!(r.status, JoinStatus::AlreadyJoined);
    assert!(r.message.contains("--rejoin"), "{}", r.message);
}

#[test]
fn a_failed_join_is_transient_with_exit_code_and_scrubbed_tail_then_retried() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let j = d.join.as_ref().unwrap();
    let gates = gates_of(&d, true);
    let mut h = host_with_token(0o600);
    h.scripts.push_back(Script {
        exit_code: 1,
        output: format!(
            "[preflight] Running pre-flight checks\nerror execution phase preflight: token {TOKEN} rejected (secret 0123456789abcdef)\nTo see the stack trace of this error execute with --v=5 or higher\n"
        ),
        past_discovery: false,
    });
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, j, &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::Failed);
    assert_eq!(r.failure_kind, Some(ErrorKind::Transient));
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(r.attempts[0].exit_code, Some(1));
    assert!(r.message.contains("exited 1"), "{}", r.message);
    assert!(
        r.message.contains("error execution phase preflight"),
        "{}",
        r.message
    );
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        !json.contains(TOKEN) && !json.contains("0123456789abcdef"),
        "{json}"
    );
    assert!(
        json.contains("token <redacted> rejected (secret <redacted>)"),
        "{json}"
    );
    assert!(r.new_record.is_none());
    assert!(!h.files.contains_key(Path::new(JOIN_CONFIG)));
    // Not joined: the next run tries again, and this time kubeadm succeeds.
    assert!(join::already_joined(&mut h, None).unwrap().is_none());
    let r = join::join(&mut h, j, &p, &gates, 2);
    assert_eq!(r.status, JoinStatus::Joined);
    assert_eq!(h.invocations.len(), 2);
}

#[test]
fn the_next_api_server_only_while_kubeadm_got_no_further_than_discovery() {
    let d = desired("[\"10.10.255.1:6443\", \"10.10.255.2:6443\"]");
    let j = d.join.as_ref().unwrap();
    let gates = gates_of(&d, true);
    let fail = |past_discovery| Script {
        exit_code: 1,
        output:
            "error execution phase preflight: couldn't validate the identity of the API Server\n"
                .into(),
        past_discovery,
    };

    let mut h = host_with_token(0o600);
    h.scripts.push_back(fail(false));
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, j, &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::Joined);
    assert_eq!(h.invocations.len(), 2);
    assert!(h.invocations[1]
        .config
        .contains("apiServerEndpoint: \"10.10.255.2:6443\""));
    assert_eq!(r.new_record.unwrap().api_server, "10.10.255.2:6443");

    let mut h = host_with_token(0o600);
    h.scripts.push_back(fail(true));
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, j, &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::Failed);
    assert_eq!(
        h.invocations.len(),
        1,
        "past discovery: the next endpoint would not help"
    );
}

#[test]
fn a_token_file_others_can_read_is_an_input_error_before_anything() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let j = d.join.as_ref().unwrap();
    let mut h = host_with_token(0o644);
    let e = join::prepare(&mut h, j, Path::new("kubeadm")).unwrap_err();
    assert!(
        matches!(e, JoinError::Secret(SecretError::Mode { mode: 0o644, .. })),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(e.to_string().contains("chmod 0600"), "{e}");

    let mut h = host_with_token(0o600);
    h.files.get_mut(Path::new(TOKEN_FILE)).unwrap().uid = 1000;
    let e = join::prepare(&mut h, j, Path::new("kubeadm")).unwrap_err();
    assert!(
        matches!(e, JoinError::Secret(SecretError::Owner { uid: 1000, .. })),
        "{e}"
    );

    let mut h = FakeJoinHost::new();
    let e = join::prepare(&mut h, j, Path::new("kubeadm")).unwrap_err();
    assert!(
        matches!(e, JoinError::Secret(SecretError::Missing { .. })),
        "{e}"
    );

    let mut h = FakeJoinHost::new();
    h.put(TOKEN_FILE, "not a token\n", 0o600);
    let e = join::prepare(&mut h, j, Path::new("kubeadm")).unwrap_err();
    assert!(matches!(e, JoinError::Token { .. }), "{e}");
    assert!(
        !e.to_string().contains("not a token"),
        "the content is never echoed: {e}"
    );

    let mut h = host_with_token(0o600);
    let e = join::prepare(&mut h, j, Path::new("kubeadm-missing")).unwrap_err();
    assert!(matches!(e, JoinError::NoKubeadm { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(h.invocations.is_empty());
}

#[test]
fn a_kubelet_that_cannot_be_started_fails_the_run_but_the_join_is_recorded() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let gates = gates_of(&d, true);
    let mut h = host_with_token(0o600);
    h.fail_unit = true;
    let p = prepared(&mut h, &d);
    let r = join::join(&mut h, d.join.as_ref().unwrap(), &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::Joined);
    assert_eq!(r.failure_kind, Some(ErrorKind::System));
    assert!(r.new_record.is_some(), "joined: never again, even so");
    assert!(r.message.contains("kubelet.service"), "{}", r.message);
}

#[test]
fn a_concurrent_run_never_joins_twice() {
    let d = desired("[\"10.10.255.1:6443\"]");
    let j = d.join.as_ref().unwrap();
    let gates = gates_of(&d, true);
    // Another run holds the lock: nothing runs, retry later.
    let mut h = host_with_token(0o600);
    let p = prepared(&mut h, &d);
    h.locked_elsewhere = true;
    let r = join::join(&mut h, j, &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::Failed);
    assert_eq!(r.failure_kind, Some(ErrorKind::Transient));
    assert!(r.message.contains("another underlay run"), "{}", r.message);
    assert!(h.invocations.is_empty());
    // The other run joined between our check and our turn: under the lock
    // we look again and do not run kubeadm.
    h.locked_elsewhere = false;
    h.put(KUBELET_CONF, "kubeconfig\n", 0o600);
    let r = join::join(&mut h, j, &p, &gates, 1);
    assert_eq!(r.status, JoinStatus::AlreadyJoined, "{}", r.message);
    assert!(h.invocations.is_empty());
}
