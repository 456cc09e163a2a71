//! The two-uplink host of the CLI tests, a thin layer on the shared harness
//! (`testkit/`): a host namespace `uh-<pid>-<n>` whose NICs eth0/eth1 are
//! cabled to a ToR namespace `ut-<pid>-<n>` (tora0/torb0, up), a scratch
//! root, and the real `underlay` binary run inside the host namespace. The
//! harness removes both namespaces and the directory, even when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

// Each test binary uses a different subset of the harness.
#[allow(unused_imports)]
pub use underlay_testkit::{must, require_root, run, schema_check};

pub const ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/l3-ecmp-calico.toml"
);

/// Panics unless `doc` matches agent/schema/output.schema.json.
pub fn assert_schema(doc: &Value) {
    schema_check::assert_valid(doc);
}

pub struct Lab {
    pub host: String,
    pub tor: String,
    /// The namespaces, background processes and scratch root.
    pub kit: underlay_testkit::Lab,
}

impl Lab {
    pub fn new() -> Lab {
        let mut kit = underlay_testkit::Lab::new();
        let host = kit.netns("uh");
        let tor = kit.netns("ut");
        // No IPv6 duplicate address detection: a link-local address turning
        // from tentative to valid mid-test would show up in snapshots.
        kit.sysctl_set(
            &host,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        );
        // The host's NICs stay down: bringing them up is underlay's job.
        for (nic, peer) in [("eth0", "tora0"), ("eth1", "torb0")] {
            kit.veth(&host, nic, &tor, peer);
            kit.link_up(&tor, peer);
        }
        Lab { host, tor, kit }
    }

    pub fn root(&self) -> &Path {
        self.kit.dir()
    }

    /// Writes a file below the scratch root.
    pub fn write_host(&self, name: &str, text: &str) -> PathBuf {
        self.kit.write(name, text)
    }

    /// The real binary with `args`, then --netns HOST, --root, --profile, --host.
    pub fn underlay_cmd(&self, args: &[&str], role: &Path, host: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_underlay"));
        cmd.args(args)
            .args(["--netns", &self.host, "--root"])
            .arg(self.root())
            .arg("--profile")
            .arg(role)
            .arg("--host")
            .arg(host);
        cmd
    }

    /// Runs [`Lab::underlay_cmd`] to its end.
    pub fn underlay_raw(&self, args: &[&str], role: &Path, host: &Path) -> std::process::Output {
        self.underlay_cmd(args, role, host)
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
        self.underlay_cmd(args, role, host)
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
        self.kit.ip_json(&self.host, args)
    }

    pub fn ip(&self, args: &[&str]) {
        self.kit.ip(&self.host, args);
    }

    pub fn sysctl(&self, key: &str) -> String {
        self.kit.sysctl(&self.host, key)
    }

    /// Everything a run could change, for before/after comparisons.
    pub fn snapshot(&self, sysctls: &[&str]) -> String {
        let mut s = String::new();
        for args in [
            &["-d", "addr"][..],
            &["-d", "link"],
            &["rule"],
            &["-6", "rule"],
            &["route", "show", "table", "all"],
            &["-6", "route", "show", "table", "all"],
        ] {
            s.push_str(&self.kit.ip(&self.host, args));
        }
        for k in sysctls {
            s.push_str(&format!("{k}={}\n", self.sysctl(k)));
        }
        s
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

/// The kubeadm stand-in (vm-tests/kubeadm-standin): records its argv and
/// config and writes kubelet.conf below KUBEADM_STANDIN_ROOT, as kubeadm would.
pub const STANDIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vm-tests/kubeadm-standin");
/// A bootstrap token of the join tests, and its secret half (never to be seen).
pub const JOIN_TOKEN: &str = "jt0k3n.s3cr3tv4lu3xyz12";
pub const JOIN_SECRET: &str = "s3cr3tv4lu3xyz12";

/// A role without [bgp] (so the gate is `uplinks-up`) that joins.
pub const JOIN_ROLE: &str = r#"version = 1
[routing]
[[routing.tables]]
name = "underlay-host"
id = 1001
[[routing.rules]]
priority = 30000
table = "main"
suppress_prefixlength = 0
[[routing.rules]]
priority = 30001
table = "underlay-host"
[pods]
cidrs = ["10.244.0.0/16"]
[join]
cri_socket = "unix:///run/containerd/containerd.sock"
"#;
