//! Real-kernel test helpers: namespaces we create and always remove, commands run inside them.
//! Nothing here touches the root namespace's network, iptables or nftables.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use underlay::nft::{apply, desired_ruleset, observe, plan, NatParams};
use underlay::system::nft::NftCommand;

/// Fails the test (CI runs as root) with a message that says what to do.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this test builds network namespaces and needs root (uid 0); run `sudo -E cargo test` \
         or run only the unprivileged tests with `cargo test --lib --test desired_golden --test plan_pure`"
    );
}

/// `UNAT_FIX_OFF=1` leaves every fix out of the "fix on" halves of the reproduction tests, to
/// show that those halves then fail (`UNAT_FIX_OFF=1 cargo test --test masquerade_source`).
pub fn fix_enabled() -> bool {
    std::env::var_os("UNAT_FIX_OFF").is_none()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Named network namespaces deleted on drop, plus background processes killed on drop.
pub struct Lab {
    prefix: String,
    names: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Lab {
            prefix: format!("unat-{}-{n}-{tag}", std::process::id()),
            names: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates `<prefix>-<short>` with lo up, forwarding on and rp_filter off.
    pub fn ns(&mut self, short: &str) -> String {
        let name = format!("{}-{short}", self.prefix);
        run("ip", &["netns", "add", &name]);
        self.names.push(name.clone());
        self.sh(&name, "ip link set lo up; sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0");
        name
    }

    /// `ip netns exec NS sh -c SCRIPT` (set -e); panics with stderr on failure.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        run("ip", &["netns", "exec", ns, "sh", "-ec", script])
    }

    /// Like [`Lab::sh`] but returns (success, stdout, stderr).
    pub fn try_sh(&self, ns: &str, script: &str) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", script])
            .output()
            .expect("spawn ip");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A veth pair between two namespaces.
    pub fn veth(&self, a_ns: &str, a: &str, b_ns: &str, b: &str) {
        run(
            "ip",
            &[
                "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns,
            ],
        );
        self.sh(a_ns, &format!("ip link set {a} up"));
        self.sh(b_ns, &format!("ip link set {b} up"));
    }

    /// Starts a background process inside `ns`; killed (by its own pid) on drop.
    pub fn spawn(&mut self, ns: &str, script: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn background process");
        self.children.push(child);
    }

    /// Waits until something listens on UDP `port` in `ns`.
    pub fn wait_udp(&self, ns: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (_, out, _) = self.try_sh(ns, &format!("ss -Huln 'sport = :{port}'"));
            if !out.trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nothing listens on udp/{port} in {ns}");
    }

    /// nft runner for `ns`.
    pub fn nft(&self, ns: &str) -> NftCommand {
        NftCommand::in_netns(ns)
    }

    /// Like [`Lab::converge`], but a no-op (returning true) when the fix is switched off.
    pub fn apply_fix(&self, ns: &str, p: &NatParams) -> bool {
        if !fix_enabled() {
            eprintln!("UNAT_FIX_OFF: not applying the nat table in {ns}");
            return true;
        }
        self.converge(ns, p)
    }

    /// observe -> plan -> apply for our table in `ns`; returns whether nft ran.
    pub fn converge(&self, ns: &str, p: &NatParams) -> bool {
        let runner = self.nft(ns);
        let desired = desired_ruleset(p);
        let observed = observe(&runner).expect("observe");
        let change = plan(desired.as_ref(), &observed);
        for line in change.diff() {
            eprintln!("[{ns}] {line}");
        }
        let changed = apply(&runner, &change).expect("apply");
        let again = plan(desired.as_ref(), &observe(&runner).expect("observe"));
        assert!(!again.is_change(), "not converged after apply: {again:?}");
        changed
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One conntrack entry: original and reply tuples (`src`, `dst`, `sport`, `dport`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub line: String,
    pub orig: Tuple,
    pub reply: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: String,
    pub dst: String,
    pub sport: String,
    pub dport: String,
}

/// Parses `conntrack -L` lines (first src/dst/sport/dport = original, second = reply).
pub fn parse_conntrack(text: &str) -> Vec<CtEntry> {
    text.lines()
        .filter(|l| l.contains("src="))
        .map(|line| {
            let mut tuples = [Tuple::default(), Tuple::default()];
            let mut seen = std::collections::HashMap::new();
            for word in line.split_whitespace() {
                if let Some((k, v)) = word.split_once('=') {
                    if !["src", "dst", "sport", "dport"].contains(&k) {
                        continue;
                    }
                    let i = seen.entry(k.to_string()).or_insert(0usize);
                    if *i < 2 {
                        let t = &mut tuples[*i];
                        match k {
                            "src" => t.src = v.into(),
                            "dst" => t.dst = v.into(),
                            "sport" => t.sport = v.into(),
                            _ => t.dport = v.into(),
                        }
                    }
                    *i += 1;
                }
            }
            let [orig, reply] = tuples;
            CtEntry {
                line: line.to_string(),
                orig,
                reply,
            }
        })
        .collect()
}

pub fn conntrack(lab: &Lab, ns: &str, filter: &str) -> Vec<CtEntry> {
    let (_, out, _) = lab.try_sh(ns, &format!("conntrack -L {filter} 2>/dev/null"));
    parse_conntrack(&out)
}
