//! Gathers a [`Snapshot`]: the only part of the doctor that does I/O, and all
//! of it read-only. Network facts come from the current network namespace
//! (the CLI has entered `--netns`); files come from below `--root`.
//!
//! Per-thread views on purpose: `/proc/thread-self/net/*` and
//! `/proc/thread-self/ns/net` follow the calling thread's namespace, so the
//! doctor also works from a thread that entered a namespace with setns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};

use super::checks::{KUBELET_FILES, NETWORKD_CONF, NETWORKD_CONF_D};
use super::parse;
use super::snapshot::{
    Address, BirdProcess, BirdSessions, Expect, ExpectedUplink, Link, Listener, Snapshot, TorPeer,
};
use super::DoctorOptions;
use crate::desired::{Desired, Family};
use crate::nft::{NatMode, NftExec};
use crate::observed::ObservedLink;
use crate::system::files::under_root;
use crate::system::linux::{LinuxSystem, DEFAULT_STATE_PATH};
use crate::system::{BirdProtocol, Query, System};

pub fn collect(opts: &DoctorOptions) -> (Snapshot, Option<Expect>) {
    let mut s = Snapshot::default();
    let mut sys = match LinuxSystem::new(&opts.root, Path::new(DEFAULT_STATE_PATH), opts.in_netns) {
        Ok(sys) => Some(sys),
        Err(e) => {
            s.notes.push(format!("netlink: {e}"));
            None
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");

    let mut observed_links: Vec<ObservedLink> = Vec::new();
    if let Some(sys) = sys.as_mut() {
        match sys.links() {
            Ok(l) => observed_links = l,
            Err(e) => s.notes.push(format!("links: {e}")),
        }
        match sys.observe(
            observed_links.clone(),
            crate::state::State::new(),
            &Query::default(),
        ) {
            Ok(o) => {
                s.addresses = o
                    .addresses
                    .into_iter()
                    .map(|a| Address {
                        index: a.index,
                        ifname: a.ifname,
                        prefix: a.prefix,
                        scope: a.scope,
                    })
                    .collect()
            }
            Err(e) => s.notes.push(format!("addresses: {e}")),
        }
    }
    s.links = match rt.block_on(link_kinds()) {
        Ok(l) => l,
        Err(e) => {
            s.notes.push(format!("link kinds: {e}"));
            observed_links
                .iter()
                .map(|l| Link {
                    index: l.index,
                    name: l.name.clone(),
                    kind: None,
                    vxlan_port: None,
                })
                .collect()
        }
    };

    let expect = opts
        .desired
        .as_ref()
        .map(|d| expect_of(d, sys.as_mut(), &observed_links));

    read_sysctls(&mut s);
    read_firewall(&mut s);
    read_conntrack(&mut s);
    read_listeners(&mut s);
    read_birds(&mut s, &opts.root);
    read_files(&mut s, &opts.root);

    if let (Some(e), Some(sys)) = (&expect, sys.as_mut()) {
        if let Some((table, _)) = e.host_table {
            s.host_nexthops = Some(
                sys.default_nexthops(table, Family::Ipv4)
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(sock) = &e.bird_socket {
            let protocols = sys.bird_protocols(sock).map_err(|e| e.to_string());
            if protocols.is_ok() {
                if e.bfd_detect_ms.is_some() {
                    s.bfd_sessions = Some(sys.bird_bfd_sessions(sock).map_err(|e| e.to_string()));
                }
                for p in &e.tor_sessions {
                    let d = sys.bird_bgp_detail(sock, p).map_err(|e| e.to_string());
                    s.bgp_details.push((p.clone(), d));
                }
            }
            s.bird_sessions.push(BirdSessions {
                socket: under_root(&opts.root, sock),
                owner: "profile".into(),
                protocols,
            });
        }
    }
    // Every other BIRD's sessions, read from its own control socket.
    let known: Vec<PathBuf> = s.bird_sessions.iter().map(|b| b.socket.clone()).collect();
    let birds = s.birds.clone();
    for b in birds {
        let same = known.iter().any(|k| {
            k == &b.socket
                || matches!((k.canonicalize(), b.socket.canonicalize()), (Ok(x), Ok(y)) if x == y)
        });
        if same {
            continue;
        }
        match rt.block_on(protocols(&b.socket)) {
            Ok(p) => s.bird_sessions.push(BirdSessions {
                socket: b.socket.clone(),
                owner: format!("{} pid {}", b.comm, b.pid),
                protocols: Ok(p),
            }),
            Err(e) => s.notes.push(format!(
                "{} (pid {}): control socket {}: {e}; its sessions were not checked",
                b.comm,
                b.pid,
                b.socket.display()
            )),
        }
    }
    (s, expect)
}

fn expect_of(d: &Desired, sys: Option<&mut LinuxSystem>, links: &[ObservedLink]) -> Expect {
    let mut e = Expect {
        service_ipv4: Some(d.service_ipv4.addr()),
        service_ipv6: d.service_ipv6.map(|n| n.addr()),
        host_table: d.bgp.as_ref().map(|b| (b.host_table.id.get(), b.min_paths)),
        bird_socket: d.bgp.as_ref().map(|b| b.control_socket.clone()),
        bgp_ports: d
            .bgp
            .as_ref()
            .and_then(|b| b.calico.map(|c| c.calico_port))
            .into_iter()
            .collect(),
        transit_global_intended: d.nat.mode != NatMode::ScopeLink,
        bfd_detect_ms: d
            .bgp
            .as_ref()
            .and_then(|b| b.bfd)
            .map(|b| b.interval_ms * u32::from(b.multiplier)),
        hold_time: d.bgp.as_ref().map(|b| b.hold_time),
        llgr_intended: d
            .bgp
            .as_ref()
            .and_then(|b| b.graceful_restart)
            .is_some_and(|g| g.long_lived_stale_time.is_some()),
        ..Expect::default()
    };
    let inputs = match sys {
        Some(sys) => crate::engine::read_bgp_inputs(sys, d).unwrap_or_default(),
        None => crate::plan::BgpInputs::default(),
    };
    match crate::plan::resolve(d, links, &inputs) {
        Ok(t) => {
            e.uplinks = t
                .uplinks()
                .iter()
                .map(|l| ExpectedUplink {
                    role: l.role.clone(),
                    ifname: l.ifname.clone(),
                    index: l.index,
                    transit: t
                        .addresses
                        .iter()
                        .filter(|a| a.index == l.index)
                        .map(|a| a.prefix)
                        .collect(),
                })
                .collect();
            e.tor_sessions = t
                .bird
                .iter()
                .flat_map(|b| b.sessions.iter().flat_map(|(_, p)| p.clone()))
                .collect();
            // The gates pair each session with its ToR address; so do the checks.
            e.tor_peers = crate::gates::spec(d, &t, None)
                .uplinks
                .iter()
                .flat_map(|u| {
                    u.protocols.iter().zip(&u.peers).map(|(p, peer)| TorPeer {
                        protocol: p.clone(),
                        uplink: u.name.clone(),
                        peer: *peer,
                        ifname: u.ifname.clone(),
                    })
                })
                .collect();
        }
        Err(err) => e.resolve_error = Some(err.to_string()),
    }
    e
}

async fn link_kinds() -> Result<Vec<Link>, String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let msgs: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    task.abort();
    let mut out = Vec::new();
    for m in msgs {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            kind: None,
            vxlan_port: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::Vxlan(v)) => {
                                link.vxlan_port = v.iter().find_map(|x| match x {
                                    InfoVxlan::Port(p) => Some(*p),
                                    _ => None,
                                });
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if link.kind.as_deref() == Some("vxlan") && link.vxlan_port.is_none() {
            link.vxlan_port = Some(crate::nft::VXLAN_PORT);
        }
        out.push(link);
    }
    out.sort_by_key(|l| l.index);
    Ok(out)
}

fn read_sysctls(s: &mut Snapshot) {
    let mut names: Vec<String> = vec!["all".into(), "default".into()];
    names.extend(s.links.iter().map(|l| l.name.clone()));
    for n in names {
        let key = format!("net.ipv4.conf.{n}.rp_filter");
        let path = format!("/proc/sys/net/ipv4/conf/{n}/rp_filter");
        if let Ok(v) = std::fs::read_to_string(&path) {
            s.sysctls.insert(key, v.trim().to_string());
        }
    }
}

/// Runs a read-only tool; `Err` carries why it could not (missing, failed).
fn tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_firewall(s: &mut Snapshot) {
    let mut tools = vec!["iptables-save", "ip6tables-save"];
    // Legacy x_tables in use next to iptables-nft: read them too. Checking the
    // names file first avoids loading legacy modules on hosts without them.
    let legacy = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
        .is_ok_and(|t| !t.trim().is_empty());
    if legacy {
        tools.push("iptables-legacy-save");
    }
    for t in tools {
        match tool(t, &[]) {
            Ok(text) => s.iptables.push((t.to_string(), text)),
            Err(e) => s.notes.push(e),
        }
    }
    match crate::system::nft::NftCommand::new().run(&["-j", "list", "ruleset"], None) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => s.nft_ruleset = Some(v),
            Err(e) => s
                .notes
                .push(format!("nft -j list ruleset: unreadable JSON: {e}")),
        },
        Err(e) => s.notes.push(e.to_string()),
    }
}

fn read_conntrack(s: &mut Snapshot) {
    let mut text = String::new();
    let mut ok = false;
    for args in [
        &["-L", "--src-nat"][..],
        &["-L", "-f", "ipv6", "--src-nat"][..],
    ] {
        match tool("conntrack", args) {
            Ok(t) => {
                ok = true;
                text.push_str(&t);
            }
            Err(e) => s.notes.push(e),
        }
    }
    if ok {
        s.conntrack = Some(text);
    }
}

fn netns_id(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// Pids of processes in this thread's network namespace.
fn same_netns_pids() -> Vec<u32> {
    let Ok(me) = std::fs::read_link("/proc/thread-self/ns/net") else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| netns_id(&pid.to_string()).as_ref() == Some(&me))
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

fn read_listeners(s: &mut Snapshot) {
    let mut socks = Vec::new();
    for (file, fam) in [("tcp", Family::Ipv4), ("tcp6", Family::Ipv6)] {
        match std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            Ok(t) => socks.extend(parse::proc_net_tcp(&t, fam)),
            Err(e) => s.notes.push(format!("/proc/net/{file}: {e}")),
        }
    }
    let mut owners: BTreeMap<u64, Vec<(u32, String)>> = BTreeMap::new();
    let wanted: std::collections::BTreeSet<u64> = socks.iter().map(|(_, _, i)| *i).collect();
    for pid in same_netns_pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(|f| f.ok()) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if wanted.contains(&inode) {
                    let entry = owners.entry(inode).or_default();
                    if !entry.iter().any(|(p, _)| *p == pid) {
                        entry.push((pid, comm(pid)));
                    }
                }
            }
        }
    }
    s.listeners = socks
        .into_iter()
        .map(|(addr, port, inode)| Listener {
            addr,
            port,
            inode,
            owners: owners.remove(&inode).unwrap_or_default(),
        })
        .collect();
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter().find_map(|a| {
                a.strip_prefix(flag)
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
            })
        })
}

/// A path as process `pid` sees it: relative to its cwd, absolute through its
/// root (its mount namespace), falling back to our own view.
fn process_path(pid: u32, p: &str) -> (PathBuf, Vec<PathBuf>) {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        let via_root = PathBuf::from(format!("/proc/{pid}/root"))
            .join(path.strip_prefix("/").unwrap_or(&path));
        (path.clone(), vec![via_root, path])
    } else {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        let abs = cwd.join(&path);
        (
            abs.clone(),
            vec![PathBuf::from(format!("/proc/{pid}/cwd")).join(&path), abs],
        )
    }
}

fn read_birds(s: &mut Snapshot, root: &Path) {
    for pid in same_netns_pids() {
        let c = comm(pid);
        if !c.starts_with("bird") || c.starts_with("birdc") {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let v6 = c.ends_with('6');
        let (config_path, candidates) = match arg_after(&args, "-c") {
            Some(p) => process_path(pid, &p),
            None => {
                let logical = if v6 {
                    "/etc/bird/bird6.conf"
                } else {
                    "/etc/bird/bird.conf"
                };
                let p = under_root(root, Path::new(logical));
                (p.clone(), vec![p])
            }
        };
        let config = candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok());
        let socket = match arg_after(&args, "-s") {
            Some(p) => process_path(pid, &p).0,
            None => {
                let logical = if v6 {
                    "/run/bird/bird6.ctl"
                } else {
                    "/run/bird/bird.ctl"
                };
                under_root(root, Path::new(logical))
            }
        };
        s.birds.push(BirdProcess {
            pid,
            comm: c,
            config_path,
            config,
            socket,
        });
    }
    s.birds.sort_by_key(|b| b.pid);
}

fn read_files(s: &mut Snapshot, root: &Path) {
    let mut logical: Vec<PathBuf> = KUBELET_FILES.iter().map(PathBuf::from).collect();
    logical.push(PathBuf::from(NETWORKD_CONF));
    if let Ok(dir) = std::fs::read_dir(under_root(root, Path::new(NETWORKD_CONF_D))) {
        for e in dir.filter_map(|e| e.ok()) {
            logical.push(Path::new(NETWORKD_CONF_D).join(e.file_name()));
        }
    }
    for p in logical {
        if let Ok(t) = std::fs::read_to_string(under_root(root, &p)) {
            s.files.insert(p, t);
        }
    }
    s.networkd_links = read_state_dir(&under_root(root, Path::new("/run/systemd/netif/links")));
    s.nm_devices = read_state_dir(&under_root(root, Path::new("/run/NetworkManager/devices")));
}

/// Files named by ifindex.
fn read_state_dir(dir: &Path) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let Some(index) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                out.insert(index, t);
            }
        }
    }
    out
}

async fn protocols(socket: &Path) -> Result<Vec<BirdProtocol>, String> {
    crate::system::linux::bird::protocols(socket)
        .await
        .map_err(|e| e.to_string())
}
