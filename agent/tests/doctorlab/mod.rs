//! A lab for `underlay doctor`: a host namespace converged by the real
//! `underlay apply` (service IP on lo, scope-link /31s on eth0/eth1), two ToR
//! namespaces, optional real BIRDs, and a scratch --root. Every namespace,
//! daemon and file is removed on drop; nothing touches the root namespace.
//!
//! The doctor runs in-process on a thread that entered the host namespace
//! with setns (its collectors read per-thread /proc views), so these tests
//! do not depend on the CLI wiring.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use underlay::doctor::{DoctorReport, Severity};

pub const BIRD: &str = "/usr/sbin/bird";
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

pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "the doctor lab tests need root (network namespaces, iptables, BIRD); run them as root"
        );
    }
    for tool in ["ip", "iptables", "nft", "conntrack", "socat", BIRD] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "the doctor lab tests need `{tool}` installed");
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Lab {
    pub host: String,
    pub tors: [String; 2],
    pub dir: tempfile::TempDir,
    daemons: Vec<(String, Child)>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in std::iter::once(&self.host).chain(self.tors.iter()) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// Host and ToR namespaces, cabled, converged by `underlay apply` with [`ROLE`].
    pub fn new() -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let lab = Lab {
            host: format!("udh-{id}"),
            tors: [format!("udta-{id}"), format!("udtb-{id}")],
            dir: tempfile::tempdir().expect("tempdir"),
            daemons: Vec::new(),
        };
        // The tempdir is the scratch root; BIRD (another user on some systems) reads it.
        std::fs::set_permissions(lab.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for ns in std::iter::once(&lab.host).chain(lab.tors.iter()) {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        for (i, (nic, t)) in [("eth0", "a"), ("eth1", "b")].into_iter().enumerate() {
            let dn = format!("dn-{t}");
            run(
                "ip",
                &[
                    "-n",
                    &lab.host,
                    "link",
                    "add",
                    nic,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &dn,
                    "netns",
                    &lab.tors[i],
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    &lab.tors[i],
                    "addr",
                    "add",
                    &format!("172.30.{i}.0/31"),
                    "dev",
                    &dn,
                ],
            );
            run("ip", &["-n", &lab.tors[i], "link", "set", &dn, "up"]);
        }
        std::fs::write(lab.path("role.toml"), ROLE).unwrap();
        std::fs::write(lab.path("host.toml"), HOST).unwrap();
        lab.apply(&lab.path("role.toml"));
        lab
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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
        run("ip", &["netns", "exec", ns, "sh", "-ec", script])
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        let v: serde_json::Value =
            serde_json::from_str(&run("ip", &["-n", &self.host, "-j", "link", "show", name]))
                .unwrap();
        v[0]["ifindex"].as_u64().unwrap() as u32
    }

    /// Writes a file below the scratch root.
    pub fn write(&self, logical: &str, text: &str) {
        let p = self.root().join(logical.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A background process in `ns`, killed by its own pid on drop.
    pub fn spawn(&mut self, name: &str, ns: &str, argv: &[&str]) {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.daemons.push((name.to_string(), child));
    }

    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.daemons.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// BIRD in the foreground in `ns`; returns its control socket once it answers.
    pub fn bird(&mut self, name: &str, ns: &str, conf: &Path, sock: &Path) -> PathBuf {
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let (c, s) = (conf.to_str().unwrap(), sock.to_str().unwrap());
        self.spawn(name, ns, &[BIRD, "-f", "-c", c, "-s", s]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            if let Some((_, child)) = self.daemons.last_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("{name}: bird exited with {st}: {}", self.log(name));
                }
            }
            assert!(Instant::now() < deadline, "{name}: no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        sock.to_path_buf()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
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
        let mut args = vec!["-s", sock.to_str().unwrap()];
        args.extend(cmd.split_whitespace());
        run("birdc", &args)
    }

    /// Runs the doctor on a thread inside the host namespace.
    pub fn doctor(&self, with_profile: bool) -> DoctorReport {
        let desired = with_profile.then(|| {
            underlay::profile::load(&self.path("role.toml"), &self.path("host.toml"))
                .expect("the lab profile loads")
        });
        let root = self.root().to_path_buf();
        let ns = PathBuf::from("/run/netns").join(&self.host);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("open netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let mut sys = underlay::system::linux::LinuxSystem::new(
                &root,
                Path::new(underlay::system::linux::DEFAULT_STATE_PATH),
                true,
            )
            .expect("netlink in the lab namespace");
            underlay::doctor::run(&mut sys, desired.as_ref())
        })
        .join()
        .expect("doctor thread")
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
