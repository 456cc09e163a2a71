//! A lab for `underlay doctor`, a thin layer on the shared harness
//! (`testkit/`): a host namespace converged by the real `underlay apply`
//! (service IP on lo, scope-link /31s on eth0/eth1), two ToR namespaces,
//! optional real BIRDs, and a scratch --root. The harness removes every
//! namespace, daemon and file on drop; nothing touches the root namespace.
//!
//! The doctor runs in-process on a thread that entered the host namespace
//! with setns (its collectors read per-thread /proc views), so these tests
//! do not depend on the CLI wiring.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use underlay::doctor::{DoctorReport, Severity};
use underlay_testkit::{BirdUser, BIRD};
pub const OVERLAY_ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../profiles/l3-ecmp-calico-ipip.toml"
);

/// The shipped flat profile without BFD and without the Calico session: the
/// lab runs no Calico, and a healthy host must report clean.
pub const ROLE: &str = r#"version = 1
[routing]
protocol = 211
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
encapsulation = "none"
[uplinks]
mtu = 9000
[sysctl.global]
"net.ipv4.ip_forward" = 1
"net.ipv4.fib_multipath_hash_policy" = 1
"net.ipv4.conf.all.rp_filter" = 0
[sysctl.uplink]
"net.ipv4.conf.{uplink}.rp_filter" = 2
[bgp]
host_table = "underlay-host"
config_path = "/etc/bird/bird.conf"
control_socket = "/run/bird/bird.ctl"
hold_time = 9
keepalive = 3
connect_retry = 2
graceful_restart = false
[bgp.calico]
enabled = false
[bgp.readiness]
min_paths = 2
timeout_s = 60
"#;

pub const HOST: &str = r#"version = 1
hostname = "node-d"
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

pub struct Lab {
    pub host: String,
    pub tors: [String; 2],
    /// The namespaces, daemons and scratch root.
    pub kit: underlay_testkit::Lab,
}

impl Lab {
    /// Host and ToR namespaces, cabled, converged by `underlay apply` with [`ROLE`].
    pub fn new() -> Lab {
        let mut kit = underlay_testkit::Lab::new();
        underlay_testkit::require_tools(&["iptables", "nft", "conntrack", "socat", BIRD]);
        let host = kit.netns("udh");
        let tors = [kit.netns("udta"), kit.netns("udtb")];
        // The scratch root; BIRD (another user on some systems) reads it.
        kit.open_dir();
        for ns in std::iter::once(&host).chain(tors.iter()) {
            kit.link_up(ns, "lo");
        }
        for (i, (nic, t)) in [("eth0", "a"), ("eth1", "b")].into_iter().enumerate() {
            let dn = format!("dn-{t}");
            kit.veth(&host, nic, &tors[i], &dn);
            kit.ip(
                &tors[i],
                &["addr", "add", &format!("172.30.{i}.0/31"), "dev", &dn],
            );
            kit.link_up(&tors[i], &dn);
        }
        let lab = Lab { host, tors, kit };
        std::fs::write(lab.path("role.toml"), ROLE).unwrap();
        std::fs::write(lab.path("host.toml"), HOST).unwrap();
        lab.apply(&lab.path("role.toml"));
        lab
    }

    pub fn root(&self) -> &Path {
        self.kit.dir()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.kit.path(name)
    }

    /// The real binary: `underlay apply --netns HOST --root DIR`.
    pub fn apply(&self, role: &Path) {
        let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(["apply", "--json", "--netns", &self.host, "--root"])
            .arg(self.root())
            .arg("--profile")
            .arg(role)
            .arg("--host")
            .arg(self.path("host.toml"))
            .output()
            .expect("run underlay");
        assert_eq!(
            out.status.code(),
            Some(0),
            "underlay apply: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip netns exec NS sh -ec SCRIPT`.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        self.kit.sh(ns, script)
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        let v = self.kit.ip_json(&self.host, &["link", "show", name]);
        v[0]["ifindex"].as_u64().unwrap() as u32
    }

    /// Writes a file below the scratch root.
    pub fn write(&self, logical: &str, text: &str) {
        self.kit.write(logical, text);
    }

    /// A background process in `ns`, killed by its own pid on drop.
    pub fn spawn(&mut self, name: &str, ns: &str, argv: &[&str]) {
        self.kit.spawn(name, ns, argv);
    }

    pub fn kill(&mut self, name: &str) {
        self.kit.kill(name);
    }

    /// BIRD in the foreground in `ns`; returns its control socket once it answers.
    pub fn bird(&mut self, name: &str, ns: &str, conf: &Path, sock: &Path) -> PathBuf {
        self.kit.bird(name, ns, conf, sock, BirdUser::Root)
    }

    pub fn log(&self, name: &str) -> String {
        self.kit.log(name)
    }

    /// ToR `i`: eBGP and BFD to the host (the profile's BFD is on), a default
    /// route from a blackhole (protocol `defroute`).
    pub fn start_tor(&mut self, i: usize) -> PathBuf {
        self.start_tor_with(i, "bfd on;")
    }

    /// ToR `i` with `session` as extra statements of its BGP session to the
    /// host (`bfd on;`, `bfd off; graceful restart on; long lived graceful restart on;`).
    pub fn start_tor_with(&mut self, i: usize, session: &str) -> PathBuf {
        let conf = format!(
            r#"router id 10.255.0.{id};
protocol device {{}}
protocol bfd {{ interface "*" {{ interval 100 ms; multiplier 3; }}; }}
protocol static defroute {{ ipv4; route 0.0.0.0/0 blackhole; }}
protocol bgp host {{
  local 172.30.{i}.0 as {asn};
  neighbor 172.30.{i}.1 as 65101;
  direct;
  hold time 9; keepalive time 3; connect delay time 1; connect retry time 2;
  {session}
  ipv4 {{ import all; export all; }};
}}
"#,
            id = i + 1,
            asn = 65001 + i,
        );
        let path = self.path(&format!("tor{i}.conf"));
        std::fs::write(&path, conf).unwrap();
        let ns = self.tors[i].clone();
        let sock = self.path(&format!("tor{i}.ctl"));
        self.bird(&format!("tor{i}"), &ns, &path, &sock)
    }

    /// The host BIRD on the config `underlay apply` rendered below the root.
    pub fn start_host_bird(&mut self) -> PathBuf {
        let conf = self.root().join("etc/bird/bird.conf");
        let sock = self.root().join("run/bird/bird.ctl");
        let host = self.host.clone();
        self.bird("host-bird", &host, &conf, &sock)
    }

    pub fn birdc(&self, sock: &Path, cmd: &str) -> String {
        underlay_testkit::birdc(sock, cmd)
    }

    /// Runs the doctor on a thread inside the host namespace.
    pub fn doctor(&self, with_profile: bool) -> DoctorReport {
        let desired = with_profile.then(|| {
            underlay::profile::load(&self.path("role.toml"), &self.path("host.toml"))
                .expect("the lab profile loads")
        });
        let root = self.root().to_path_buf();
        underlay_testkit::on_thread(&self.host, move || {
            let mut sys = underlay::system::linux::LinuxSystem::new(
                &root,
                Path::new(underlay::system::linux::DEFAULT_STATE_PATH),
                true,
            )
            .expect("netlink in the lab namespace");
            underlay::doctor::run(&mut sys, desired.as_ref())
        })
    }

    /// Polls the doctor until `pred` holds (daemons converge in seconds).
    pub fn doctor_until(
        &self,
        with_profile: bool,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&DoctorReport) -> bool,
    ) -> DoctorReport {
        let start = Instant::now();
        loop {
            let r = self.doctor(with_profile);
            if pred(&r) {
                return r;
            }
            assert!(
                start.elapsed() < timeout,
                "doctor never showed {what} within {timeout:?}:\n{}",
                r.human()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// The non-ok findings, as (check, severity).
pub fn problems(r: &DoctorReport) -> Vec<(&'static str, Severity)> {
    r.findings
        .iter()
        .filter(|f| f.severity > Severity::Skipped)
        .map(|f| (f.check, f.severity))
        .collect()
}

/// Asserts a clean report (exit 0) and returns it.
pub fn assert_clean(r: &DoctorReport) {
    assert_eq!(problems(r), [], "expected a clean host:\n{}", r.human());
    assert_eq!(r.exit_code(), 0);
}
