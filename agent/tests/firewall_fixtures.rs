//! The doctor's firewall fixtures (`tests/fixtures/firewall/*.iptables-save`, `*.json`) are
//! what this machine's real iptables-save and `nft -j list ruleset` print after loading the
//! rules kube-proxy and Calico Felix write (`*.iptables-restore`, `*.nft` beside them) into a
//! namespace this test creates. So the parser tests in `src/doctor` run against real tool
//! output, not hand-written text. Regenerate after changing an input with
//! `UPDATE_FIXTURES=1 cargo test -p underlay --test firewall_fixtures` and review the diff.

mod natlab;

use std::path::{Path, PathBuf};

use natlab::Lab;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firewall")
}

/// What Felix creates before its rules can reference them.
const CALICO_IPSETS: &str = "ipset create cali40masq-ipam-pools hash:net family inet
ipset create cali40all-ipam-pools hash:net family inet
ipset add cali40masq-ipam-pools 10.244.0.0/16
ipset add cali40all-ipam-pools 10.244.0.0/16";

/// Shell that loads `inputs` in order (by extension: iptables-restore or nft).
fn load_script(inputs: &[&str]) -> String {
    let mut s = String::new();
    for i in inputs {
        let path = dir().join(i);
        let path = path.display();
        if i.starts_with("calico") {
            s.push_str(CALICO_IPSETS);
            s.push('\n');
        }
        if i.ends_with(".nft") {
            s.push_str(&format!("nft -f '{path}'\n"));
        } else {
            s.push_str(&format!("iptables-restore --noflush < '{path}'\n"));
        }
    }
    s
}

/// iptables-save without its timestamp comments.
fn iptables_save(lab: &Lab, ns: &str) -> String {
    lab.sh(ns, "iptables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn nft_json(lab: &Lab, ns: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&lab.sh(ns, "nft -j list ruleset")).unwrap();
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

fn compare(name: &str, got: &str) {
    let path = dir().join(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_FIXTURES=1 creates it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} is not what this machine's tools print for its inputs; \
         UPDATE_FIXTURES=1 to accept (and review the diff)",
        Path::new(name).display()
    );
}

fn case(inputs: &[&str], save: Option<&str>, json: Option<&str>) {
    let mut lab = Lab::new("fx");
    let ns = lab.ns("h");
    lab.sh(&ns, &load_script(inputs));
    if let Some(name) = save {
        compare(name, &iptables_save(&lab, &ns));
    }
    if let Some(name) = json {
        compare(name, &nft_json(&lab, &ns));
    }
}

#[test]
fn kube_proxy_1_18_5_iptables() {
    case(
        &["kube-proxy-1.18.5.iptables-restore"],
        Some("kube-proxy-1.18.5.iptables-save"),
        None,
    );
}

#[test]
fn kube_proxy_1_19_iptables() {
    case(
        &["kube-proxy-1.19.iptables-restore"],
        Some("kube-proxy-1.19.iptables-save"),
        None,
    );
}

/// Felix after kube-proxy, as on a node where calico-node starts once kube-proxy runs (and
/// Felix keeps its jumps at the top anyway).
#[test]
fn calico_felix_over_kube_proxy_1_19_iptables() {
    case(
        &[
            "kube-proxy-1.19.iptables-restore",
            "calico-felix.iptables-restore",
        ],
        Some("calico-kube-proxy-1.19.iptables-save"),
        None,
    );
}

#[test]
fn kube_proxy_nftables_mode() {
    case(
        &["kube-proxy-nftables.nft"],
        None,
        Some("kube-proxy-nftables.json"),
    );
}

/// kube-proxy in nftables mode next to Calico's iptables dataplane (iptables-nft): two nat
/// chains at postrouting priority 100, run in the order they were registered.
#[test]
fn kube_proxy_nftables_next_to_calico_iptables() {
    case(
        &["calico-felix.iptables-restore", "kube-proxy-nftables.nft"],
        Some("calico-kube-proxy-nftables.iptables-save"),
        Some("calico-kube-proxy-nftables.json"),
    );
}
