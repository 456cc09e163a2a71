//! The NAT tests' namespaces, a thin layer on the shared harness
//! (`testkit/`): namespaces made on demand with lo up, forwarding on and
//! rp_filter off, veth cables, background processes, and our nftables table
//! converged inside one of them. Nothing here touches the root namespace's
//! network, iptables or nftables.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use underlay::nft::{apply, desired_ruleset, observe, plan, NatParams};
use underlay::system::nft::NftCommand;

/// `UNAT_FIX_OFF=1` leaves every fix out of the "fix on" halves of the reproduction tests, to
/// show that those halves then fail (`UNAT_FIX_OFF=1 cargo test --test nat_masquerade_source`).
pub fn fix_enabled() -> bool {
    std::env::var_os("UNAT_FIX_OFF").is_none()
}

/// Named network namespaces deleted on drop, plus background processes killed on drop.
pub struct Lab {
    tag: String,
    kit: underlay_testkit::Lab,
    background: usize,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab {
            tag: tag.to_string(),
            kit: underlay_testkit::Lab::new(),
            background: 0,
        }
    }

    /// Creates `unat-<tag>-<short>-<pid>-<n>` with lo up, forwarding on and rp_filter off.
    pub fn ns(&mut self, short: &str) -> String {
        let name = self.kit.netns(&format!("unat-{}-{short}", self.tag));
        self.sh(&name, "ip link set lo up; sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0");
        name
    }

    /// `ip netns exec NS sh -c SCRIPT` (set -e); panics with stderr on failure.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        self.kit.sh(ns, script)
    }

    /// Like [`Lab::sh`] but returns (success, stdout, stderr).
    pub fn try_sh(&self, ns: &str, script: &str) -> (bool, String, String) {
        self.kit.try_sh(ns, script)
    }

    /// A veth pair between two namespaces, both ends up.
    pub fn veth(&self, a_ns: &str, a: &str, b_ns: &str, b: &str) {
        self.kit.veth(a_ns, a, b_ns, b);
        self.kit.link_up(a_ns, a);
        self.kit.link_up(b_ns, b);
    }

    /// Starts a background process inside `ns`; killed (by its own pid) on drop.
    pub fn spawn(&mut self, ns: &str, script: &str) {
        self.background += 1;
        let name = format!("bg{}", self.background);
        self.kit
            .spawn(&name, ns, &["sh", "-c", &format!("exec {script}")]);
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
