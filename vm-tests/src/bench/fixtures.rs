//! The benchmarked host, written once per tool: the role profile and host
//! facts for `underlay`, one `ip -batch` file plus a sysctl file, a shell
//! script of single `ip`/`sysctl` commands, and an nmstate state. Also the
//! foreign load and the check that a tool really configured the host.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;

pub const SERVICE_IP: &str = "10.10.0.11/32";
pub const MTU: u32 = 9000;
pub const PROTOCOL: u32 = 211;
pub const HOST_TABLE: u32 = 1001;
/// (priority, table, suppress_prefixlength)
pub const RULES: [(u32, &str, Option<u32>); 2] = [(30000, "main", Some(0)), (30001, "1001", None)];
pub const GLOBAL_SYSCTLS: [(&str, &str); 7] = [
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv4.fib_multipath_hash_policy", "1"),
    ("net.ipv6.fib_multipath_hash_policy", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
];

/// A host with `k` uplinks `eth0..` (veths whose peers `p0..` stay in the
/// namespace, down), transit 172.30.<i>.1/31.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub k: usize,
}

impl Host {
    pub fn nic(i: usize) -> String {
        format!("eth{i}")
    }
    fn addr(i: usize) -> String {
        format!("172.30.{}.{}/31", i / 128, (i % 128) * 2 + 1)
    }
    fn peer(i: usize) -> String {
        format!("172.30.{}.{}", i / 128, (i % 128) * 2)
    }

    fn sysctls(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = GLOBAL_SYSCTLS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for i in 0..self.k {
            v.push((
                format!("net.ipv4.conf.{}.rp_filter", Self::nic(i)),
                "2".into(),
            ));
        }
        v
    }

    /// `ip -batch` lines that create the uplinks (setup, never timed).
    pub fn setup_batch(&self) -> String {
        (0..self.k)
            // Peers up: the uplinks get carrier, as on a cabled host (nmstate
            // verifies the operational state).
            .map(|i| {
                format!(
                    "link add {} type veth peer name p{i}\nlink set p{i} up\n",
                    Self::nic(i)
                )
            })
            .collect()
    }

    pub fn role_profile(&self) -> String {
        let mut s = format!(
            "version = 1\n[routing]\nprotocol = {PROTOCOL}\n\
             [[routing.tables]]\nname = \"underlay-host\"\nid = {HOST_TABLE}\n\
             [[routing.rules]]\npriority = 30000\ntable = \"main\"\nsuppress_prefixlength = 0\n\
             [[routing.rules]]\npriority = 30001\ntable = \"underlay-host\"\n\
             [pods]\ncidrs = [\"10.244.0.0/16\"]\nencapsulation = \"none\"\n\
             [uplinks]\nmtu = {MTU}\n[sysctl.global]\n"
        );
        for (k, v) in GLOBAL_SYSCTLS {
            let _ = writeln!(s, "\"{k}\" = {v}");
        }
        s.push_str("[sysctl.uplink]\n\"net.ipv4.conf.{uplink}.rp_filter\" = 2\n");
        s
    }

    pub fn host_facts(&self) -> String {
        let mut s = format!(
            "version = 1\nhostname = \"bench\"\nzone = \"az1\"\nrack = \"r01\"\nasn = 65101\n\
             service_ipv4 = \"{SERVICE_IP}\"\n"
        );
        for i in 0..self.k {
            let _ = write!(
                s,
                "[[uplinks]]\nname = \"tor-{i}\"\nnic = {{ name = \"{}\" }}\n\
                 ipv4 = {{ address = \"{}\", peer = \"{}\" }}\npeer_asn = {}\n",
                Self::nic(i),
                Self::addr(i),
                Self::peer(i),
                65001 + i
            );
        }
        s
    }

    /// The lower bound: one `ip -force -batch` file (re-runs report the
    /// existing rules as errors and go on)...
    pub fn ip_batch(&self) -> String {
        let mut s =
            format!("link set dev lo up\naddress replace {SERVICE_IP} dev lo scope global\n");
        for i in 0..self.k {
            let n = Self::nic(i);
            let _ = write!(
                s,
                "link set dev {n} mtu {MTU} up\naddress replace {} dev {n} scope link\n",
                Self::addr(i)
            );
        }
        for (pref, table, sup) in RULES {
            let sup = sup
                .map(|p| format!(" suppress_prefixlength {p}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "rule add pref {pref} table {table}{sup} protocol {PROTOCOL}"
            );
        }
        s
    }

    /// ...plus `sysctl -p` of this file.
    pub fn sysctl_conf(&self) -> String {
        self.sysctls()
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }

    /// One command per change, idempotent the way a `command` role makes it
    /// (`replace`, and a `grep` guard for rules).
    pub fn shell_script(&self) -> String {
        let mut s = String::from("#!/bin/sh\nset -e\nip link set dev lo up\n");
        let _ = writeln!(s, "ip address replace {SERVICE_IP} dev lo scope global");
        for i in 0..self.k {
            let n = Self::nic(i);
            let _ = write!(
                s,
                "ip link set dev {n} mtu {MTU} up\nip address replace {} dev {n} scope link\n",
                Self::addr(i)
            );
        }
        for (pref, table, sup) in RULES {
            let sup = sup
                .map(|p| format!(" suppress_prefixlength {p}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "ip rule show pref {pref} | grep -q . || ip rule add pref {pref} table {table}{sup} protocol {PROTOCOL}"
            );
        }
        for (k, v) in self.sysctls() {
            let _ = writeln!(s, "sysctl -qw {k}={v}");
        }
        s
    }

    /// What `nmstatectl apply --kernel` can apply: links up with their
    /// addresses. Its kernel mode (the nispor plugin) sets no MTU and no
    /// route rules, and nmstate has no sysctls and no address scope, so the
    /// nmstate rows do less than the others.
    pub fn nmstate_yaml(&self) -> String {
        let (sip, splen) = SERVICE_IP.split_once('/').unwrap();
        let mut s = format!(
            "interfaces:\n- name: lo\n  type: loopback\n  state: up\n  ipv4:\n    enabled: true\n    address:\n    - ip: 127.0.0.1\n      prefix-length: 8\n    - ip: {sip}\n      prefix-length: {splen}\n"
        );
        for i in 0..self.k {
            let a = Self::addr(i);
            let (ip, plen) = a.split_once('/').unwrap();
            let _ = write!(
                s,
                "- name: {}\n  type: veth\n  state: up\n  veth:\n    peer: p{i}\n  ipv4:\n    enabled: true\n    dhcp: false\n    address:\n    - ip: {ip}\n      prefix-length: {plen}\n",
                Self::nic(i)
            );
        }
        s
    }

    /// What is missing after a tool ran (empty: the host is configured).
    /// `full` false: only the addresses (what nmstate's kernel mode applies).
    pub fn check(&self, ns: &str, full: bool) -> Result<Vec<String>> {
        let mut missing = vec![];
        let links = cmd::ip_json(ns, &["address", "show"])?;
        let links = links.as_array().cloned().unwrap_or_default();
        let has_addr = |dev: &str, cidr: &str| -> (bool, Option<u64>) {
            let (ip, plen) = cidr.split_once('/').unwrap();
            let l = links.iter().find(|l| l["ifname"] == dev);
            let mtu = l.and_then(|l| l["mtu"].as_u64());
            let found = l.and_then(|l| l["addr_info"].as_array()).is_some_and(|a| {
                a.iter().any(|x| {
                    x["local"] == ip
                        && x["prefixlen"].as_u64().map(|p| p.to_string()) == Some(plen.to_string())
                })
            });
            (found, mtu)
        };
        if !has_addr("lo", SERVICE_IP).0 {
            missing.push(format!("{SERVICE_IP} on lo"));
        }
        for i in 0..self.k {
            let (found, mtu) = has_addr(&Self::nic(i), &Self::addr(i));
            if !found {
                missing.push(format!("{} on {}", Self::addr(i), Self::nic(i)));
            }
            if full && mtu != Some(MTU as u64) {
                missing.push(format!("mtu {MTU} on {}", Self::nic(i)));
            }
        }
        if !full {
            return Ok(missing);
        }
        let rules = cmd::ip_json(ns, &["-4", "rule", "show"])?;
        for (pref, _, _) in RULES {
            let present = rules.as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["priority"].as_u64() == Some(pref as u64))
            });
            if !present {
                missing.push(format!("rule pref {pref}"));
            }
        }
        {
            let last = self.sysctls().pop().unwrap();
            let now = cmd::read_sysctl(ns, &last.0)?;
            if now != last.1 {
                missing.push(format!("{}={} (is {now})", last.0, last.1));
            }
        }
        Ok(missing)
    }
}

/// Foreign state loaded (untimed) into a converged namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    None,
    MainRoutes(u32),
    OtherTableRoutes(u32),
    Rules(u32),
}

impl Load {
    pub fn label(&self) -> String {
        let n = |n: &u32| {
            if n / 1000 * 1000 == *n {
                format!("{}k", n / 1000)
            } else {
                n.to_string()
            }
        };
        match self {
            Load::None => "no load".into(),
            Load::MainRoutes(c) => format!("{} routes in main", n(c)),
            Load::OtherTableRoutes(c) => format!("{} routes in other tables", n(c)),
            Load::Rules(c) => format!("{} foreign rules", n(c)),
        }
    }

    /// Writes the `ip -batch` file of this load (none for `Load::None`).
    pub fn write_batch(&self, path: &Path) -> Result<bool> {
        if *self == Load::None {
            return Ok(false);
        }
        let f =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut w = BufWriter::new(f);
        // No dummy module on every kernel: a veth pair carries the foreign routes.
        writeln!(
            w,
            "link add fr0 type veth peer name fr1\nlink set fr0 up\nlink set fr1 up"
        )?;
        let ip = |i: u32| {
            let a = (100u32 << 24) | (64 << 16) | i;
            format!(
                "{}.{}.{}.{}",
                a >> 24,
                (a >> 16) & 255,
                (a >> 8) & 255,
                a & 255
            )
        };
        match *self {
            Load::None => {}
            Load::MainRoutes(c) => {
                for i in 0..c {
                    writeln!(w, "route add {}/32 dev fr0 proto static", ip(i))?;
                }
            }
            Load::OtherTableRoutes(c) => {
                for i in 0..c {
                    writeln!(
                        w,
                        "route add {}/32 dev fr0 proto static table {}",
                        ip(i),
                        2000 + i % 10
                    )?;
                }
            }
            Load::Rules(c) => {
                for i in 0..c {
                    writeln!(
                        w,
                        "rule add pref {} from {}/32 table {} protocol static",
                        1000 + i,
                        ip(i),
                        2000 + i % 10
                    )?;
                }
            }
        }
        w.flush()?;
        Ok(true)
    }
}
