//! The promises a root agent that runs at every boot must keep, on the real
//! kernel in namespaces the tests create: input the kernel or BIRD would
//! reject changes nothing; a change the host refuses part-way is undone; a
//! kill -9 at any point loses no ownership; two runs on one root never
//! interleave; `--netns` never writes the machine's own files.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{host_facts, Lab, PROFILE_SYSCTLS, ROLE};
use serde_json::Value;

const IPIP_ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/l3-ecmp-calico-ipip.toml"
);

/// Path → mode and content.
type Files = BTreeMap<PathBuf, (u32, Vec<u8>)>;

/// Every file below `root`, except the run lock.
fn files(root: &Path) -> Files {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".lock") {
                out.insert(p.clone(), (m.mode(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

fn nft(lab: &Lab) -> String {
    common::must(
        "ip",
        &["netns", "exec", &lab.host, "nft", "list", "ruleset"],
    )
}

/// The kernel, nftables and every file below the root.
fn everything(lab: &Lab) -> (String, String, Files) {
    (lab.snapshot(PROFILE_SYSCTLS), nft(lab), files(lab.root()))
}

fn role_with(lab: &Lab, base: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = edit(std::fs::read_to_string(base).unwrap());
    lab.write_host("role.toml", &text)
}

#[test]
fn input_the_kernel_or_bird_would_reject_changes_nothing() {
    let lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a misspelt sysctl key",
            Box::new(|t: String| t.replace("\"net.ipv4.ip_forward\"", "\"net.ipv4.ip_forwrad\"")),
        ),
        (
            "a word where the kernel keeps a number",
            Box::new(|t: String| {
                t.replace(
                    "\"net.ipv4.ip_forward\" = 1",
                    "\"net.ipv4.ip_forward\" = \"yes\"",
                )
            }),
        ),
        (
            "a BIRD config path that is a directory",
            Box::new(|t: String| t.replace("[bgp]\n", "[bgp]\nconfig_path = \"/etc/bird\"\n")),
        ),
    ];
    std::fs::create_dir_all(lab.root().join("etc/bird")).unwrap();
    for (what, edit) in cases {
        let role = role_with(&lab, ROLE, edit);
        let before = everything(&lab);
        let (code, out, _) = lab.underlay("apply", &role, &host);
        assert_eq!(code, 1, "{what}: {out}");
        assert_eq!(out["failure"]["kind"], "input", "{what}: {out}");
        assert_eq!(out["changed"], false, "{what}");
        let after = everything(&lab);
        assert_eq!(before.0, after.0, "{what}: the kernel changed");
        assert_eq!(before.1, after.1, "{what}: nftables changed");
        assert_eq!(before.2, after.2, "{what}: a file below the root changed");
        eprintln!("{what}: {}", out["failure"]["message"]);
    }
}

#[test]
fn a_change_the_host_refuses_part_way_is_undone() {
    let lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    // A number of the right type that the kernel refuses (the hash policy
    // is 0..3): known only when written, after files, links and the other
    // sysctls.
    let role = role_with(&lab, ROLE, |t| {
        t.replace(
            "\"net.ipv6.fib_multipath_hash_policy\" = 1",
            "\"net.ipv6.fib_multipath_hash_policy\" = 9",
        )
    });
    // lo is up on any real host. Bringing a link up has side effects no
    // rollback can take back (the kernel's 127.0.0.1/8 on lo, a qdisc):
    // the comparison ignores the qdisc only.
    lab.ip(&["link", "set", "lo", "up"]);
    let kernel = |lab: &Lab| {
        let s = lab.snapshot(PROFILE_SYSCTLS);
        s.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != "qdisc")
            .map(|w| w[1])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let before = everything(&lab);
    let kernel_before = kernel(&lab);
    let (code, out, _) = lab.underlay("apply", &role, &host);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["failure"]["kind"], "system", "{out}");
    let undone = out["rolled_back"].as_array().unwrap();
    assert!(!undone.is_empty(), "{out}");
    assert!(
        undone
            .iter()
            .all(|l| l.as_str().unwrap().starts_with("undone ")),
        "{out}"
    );
    let after = everything(&lab);
    assert_eq!(kernel_before, kernel(&lab), "the kernel is as before");
    assert_eq!(before.1, after.1, "nftables is as before");
    let kept: Vec<_> = after
        .2
        .keys()
        .filter(|p| !p.ends_with("var/lib/underlay/state.json"))
        .collect();
    assert_eq!(
        before.2.keys().collect::<Vec<_>>(),
        kept,
        "no generated file is left"
    );

    // --no-rollback keeps today's behaviour for debugging.
    let out = lab.underlay_raw(&["apply", "--json", "--no-rollback"], &role, &host);
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["rolled_back"].as_array().unwrap().len(), 0);
    assert_ne!(
        lab.snapshot(PROFILE_SYSCTLS),
        before.0,
        "the partial changes stay"
    );
    // And the next good run converges and owns all of it.
    let (code, out, _) = lab.underlay("apply", Path::new(ROLE), &host);
    assert_eq!(code, 0, "{out}");
}

/// The state file's owned objects, for comparing runs.
fn owned(lab: &Lab) -> Value {
    let text = std::fs::read_to_string(lab.root().join("var/lib/underlay/state.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("version");
    v
}

fn apply_killed_at(lab: &Lab, role: &Path, host: &Path, point: &str) -> bool {
    let out = lab
        .underlay_cmd(&["apply", "--json"], role, host)
        .env("UNDERLAY_FAILPOINT", point)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

/// After a kill anywhere, one apply converges, verify agrees, a third run
/// changes nothing, and the state file owns exactly what a clean run owns.
fn recovers(lab: &Lab, role: &Path, host: &Path, reference: &Value, what: &str) {
    let (code, out, _) = lab.underlay("apply", role, host);
    assert_eq!(code, 0, "{what}: recovery apply: {out}");
    let (code, out, _) = lab.underlay("verify", role, host);
    assert_eq!(code, 0, "{what}: verify: {out}");
    let (code, out, _) = lab.underlay("apply", role, host);
    assert_eq!(
        (code, &out["changed"]),
        (0, &Value::Bool(false)),
        "{what}: {out}"
    );
    assert_eq!(
        &owned(lab),
        reference,
        "{what}: the state file owns something else"
    );
}

#[test]
fn a_kill_at_any_point_loses_no_ownership() {
    // The reference: what a clean converge owns (IPIP profile: addresses,
    // rules, files, sysctls and the nft guard table).
    let clean = Lab::new();
    let host = clean.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let role = Path::new(IPIP_ROLE);
    let (code, out, _) = clean.underlay("apply", role, &host);
    assert_eq!(code, 0, "{out}");
    let reference = owned(&clean);
    let ops = out["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "ok")
        .count();
    assert!(ops >= 10, "a fresh host takes many ops: {out}");
    drop(clean);

    // Failpoints: after the intent record, and before and after each op
    // (the first 12 ops and the last one: bounded for CI).
    let mut points = vec!["after-intents".to_string()];
    for i in (0..12).chain([ops + 6]) {
        points.push(format!("before-op-{i}"));
        points.push(format!("after-op-{i}"));
    }
    let mut killed = 0;
    for p in &points {
        let lab = Lab::new();
        let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
        if apply_killed_at(&lab, role, &host, p) {
            killed += 1;
        }
        recovers(&lab, role, &host, &reference, p);
    }
    assert!(
        killed >= 20,
        "only {killed} of {} failpoints were reached",
        points.len()
    );

    // And real SIGKILLs at time offsets into a converge.
    for delay_us in [0u64, 300, 700, 1500, 3000, 6000, 12000] {
        let lab = Lab::new();
        let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
        let mut child = lab
            .underlay_cmd(&["apply"], role, &host)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        let _ = child.kill();
        let _ = child.wait();
        recovers(
            &lab,
            role,
            &host,
            &reference,
            &format!("SIGKILL after {delay_us} µs"),
        );
    }
    eprintln!("{killed} failpoints killed the run; every one recovered");
}

#[test]
fn a_second_run_waits_for_the_lock_then_fails_as_transient() {
    let lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let lock = lab.root().join("var/lib/underlay/state.json.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // Another run holds it (flock from a child that sleeps).
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1) from util-linux");
    std::thread::sleep(Duration::from_millis(200));
    let before = lab.snapshot(PROFILE_SYSCTLS);
    let t = Instant::now();
    let out = lab.underlay_raw(
        &["apply", "--json", "--lock-timeout", "1"],
        Path::new(ROLE),
        &host,
    );
    let waited = t.elapsed();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{doc}");
    assert_eq!(doc["failure"]["kind"], "transient", "{doc}");
    assert!(
        doc["failure"]["message"].as_str().unwrap().contains("lock"),
        "{doc}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "it waited: {waited:?}"
    );
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "nothing changed while locked"
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // Two real runs at once: both succeed, one after the other, and the
    // state file lists everything.
    let a = lab.underlay_raw_spawn(&["apply", "--json"], Path::new(ROLE), &host);
    let b = lab.underlay_raw_spawn(&["apply", "--json"], Path::new(ROLE), &host);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{doc}");
    }
    let (code, out, _) = lab.underlay("apply", Path::new(ROLE), &host);
    assert_eq!((code, &out["changed"]), (0, &Value::Bool(false)), "{out}");
    let state = owned(&lab);
    assert_eq!(state["addresses"].as_array().unwrap().len(), 5, "{state}");
}

#[test]
fn netns_without_an_explicit_root_is_refused() {
    // Refused before the namespace is even entered: no root needed.
    let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
        .args([
            "apply",
            "--json",
            "--netns",
            "some-ns",
            "--profile",
            ROLE,
            "--host",
        ])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/examples/host.toml"
        ))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{doc}");
    assert_eq!(doc["failure"]["kind"], "input");
    assert!(
        doc["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("--root"),
        "{doc}"
    );
}

#[test]
fn a_foreign_rule_borrowing_our_protocol_is_refused_before_any_change() {
    let lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    // Someone else's rule with a source selector, at our priority and table,
    // carrying our protocol number (211).
    lab.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.1",
        "lookup",
        "1001",
        "pref",
        "30001",
        "proto",
        "211",
    ]);
    let before = everything(&lab);
    let (code, out, _) = lab.underlay("apply", Path::new(ROLE), &host);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["failure"]["kind"], "input", "{out}");
    let msg = out["failure"]["message"].as_str().unwrap();
    assert!(msg.contains("from 192.0.2.1"), "{msg}");
    assert_eq!(before, everything(&lab), "nothing changed");
    let rules = common::must("ip", &["-n", &lab.host, "rule"]);
    assert!(rules.contains("from 192.0.2.1 lookup 1001"), "{rules}");
}
