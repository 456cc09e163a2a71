//! Real-kernel test helpers: network namespaces the test creates and always
//! removes, scratch roots, and the real `underlay` binary. Nothing here
//! touches the root network namespace or the machine's /etc.

#![allow(dead_code)]

#[path = "../schema_check/mod.rs"]
pub mod schema_check;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub const ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/l3-ecmp-calico.toml"
);

/// Panics unless `doc` matches agent/schema/output.schema.json.
pub fn assert_schema(doc: &Value) {
    schema_check::assert_valid(doc);
}

/// Root is required: say so loudly instead of passing vacuously.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root (network namespaces); run the README's test command as root");
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    out
}

pub fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A host namespace `uh-<pid>-<n>` with NICs eth0/eth1 whose peers live in a
/// second namespace `ut-<pid>-<n>` (the "ToR"), plus a scratch root. Drop
/// removes both namespaces and the directory, even when the test fails.
pub struct Lab {
    pub host: String,
    pub tor: String,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let lab = Lab {
            host: format!("uh-{id}"),
            tor: format!("ut-{id}"),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        must("ip", &["netns", "add", &lab.host]);
        must("ip", &["netns", "add", &lab.tor]);
        // No IPv6 duplicate address detection: a link-local address turning
        // from tentative to valid mid-test would show up in snapshots.
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            must("ip", &["netns", "exec", &lab.host, "sysctl", "-qw", key]);
        }
        for (nic, peer) in [("eth0", "tora0"), ("eth1", "torb0")] {
            must(
                "ip",
                &[
                    "-n", &lab.host, "link", "add", nic, "type", "veth", "peer", "name", peer,
                    "netns", &lab.tor,
                ],
            );
            must("ip", &["-n", &lab.tor, "link", "set", peer, "up"]);
        }
        lab
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_host(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs the real binary inside the host namespace with the scratch root.
    /// Runs the binary with `args`, then --netns, --root, --profile, --host.
    pub fn underlay_raw(&self, args: &[&str], role: &Path, host: &Path) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(args)
            .args(["--netns", &self.host, "--root"])
            .arg(self.root())
            .arg("--profile")
            .arg(role)
            .arg("--host")
            .arg(host)
            .output()
            .expect("run underlay")
    }

    /// Like [`Lab::underlay_raw`], started in the background.
    pub fn underlay_raw_spawn(
        &self,
        args: &[&str],
        role: &Path,
        host: &Path,
    ) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(args)
            .args(["--netns", &self.host, "--root"])
            .arg(self.root())
            .arg("--profile")
            .arg(role)
            .arg("--host")
            .arg(host)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run underlay")
    }

    pub fn underlay(&self, verb: &str, role: &Path, host: &Path) -> (i32, Value, String) {
        let out = self.underlay_raw(&[verb, "--json"], role, host);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "underlay {verb} printed no JSON ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        schema_check::assert_valid(&json);
        (
            out.status.code().unwrap_or(-1),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j", "-n", &self.host];
        full.extend_from_slice(args);
        let s = must("ip", &full);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip {args:?}: {e}: {s}"))
    }

    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.host];
        full.extend_from_slice(args);
        must("ip", &full);
    }

    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        must("ip", &["netns", "exec", &self.host, "cat", &path])
            .trim()
            .to_string()
    }

    /// Everything a run could change, for before/after comparisons.
    pub fn snapshot(&self, sysctls: &[&str]) -> String {
        let mut s = String::new();
        for args in [
            vec!["-d", "addr"],
            vec!["-d", "link"],
            vec!["rule"],
            vec!["-6", "rule"],
            vec!["route", "show", "table", "all"],
            vec!["-6", "route", "show", "table", "all"],
        ] {
            let mut full = vec!["-n", self.host.as_str()];
            full.extend(args);
            s.push_str(&must("ip", &full));
        }
        for k in sysctls {
            s.push_str(&format!("{k}={}\n", self.sysctl(k)));
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.host]);
        let _ = run("ip", &["netns", "del", &self.tor]);
    }
}

/// Host facts for the lab's two NICs; `uplinks` picks which of tor-a/tor-b.
pub fn host_facts(uplinks: &[&str]) -> String {
    let mut s = String::from(
        "version = 1\nhostname = \"node-t\"\nasn = 65101\nservice_ipv4 = \"10.10.0.11/32\"\nservice_ipv6 = \"fd00:10::11/128\"\n",
    );
    if uplinks.contains(&"tor-a") {
        s.push_str(
            "[[uplinks]]\nname = \"tor-a\"\nnic = { name = \"eth0\" }\nipv4 = { address = \"172.30.0.1/31\", peer = \"172.30.0.0\" }\nipv6 = { address = \"fd00:30::1/127\", peer = \"fd00:30::\" }\npeer_asn = 65001\n",
        );
    }
    if uplinks.contains(&"tor-b") {
        s.push_str(
            "[[uplinks]]\nname = \"tor-b\"\nnic = { name = \"eth1\" }\nipv4 = { address = \"172.30.1.1/31\", peer = \"172.30.1.0\" }\npeer_asn = 65002\n",
        );
    }
    s
}

pub const PROFILE_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.fib_multipath_hash_policy",
    "net.ipv6.fib_multipath_hash_policy",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.eth0.rp_filter",
    "net.ipv4.conf.eth1.rp_filter",
];
