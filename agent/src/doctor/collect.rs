//! Gathers a [`Snapshot`] through the caller's [`System`]: the same netlink
//! socket, `--root` and `--state` as every other verb, and no I/O of its own
//! (the host-specific reads are [`crate::system::inspect::Inspect`]'s). All
//! of it is read-only. Network facts come from the namespace the system was
//! opened in (the CLI has entered `--netns`); files come from below `--root`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checks::{KUBELET_FILES, NETWORKD_CONF, NETWORKD_CONF_D};
use super::parse;
use super::snapshot::{
    Address, BirdProcess, BirdSessions, Expect, ExpectedUplink, Link, Listener, Snapshot,
    StateFacts, TorPeer,
};
use crate::desired::{Desired, Family};
use crate::nft::NatMode;
use crate::observed::ObservedLink;
use crate::state::State;
use crate::system::inspect::ProcessInfo;
use crate::system::{Query, System};

pub fn collect(sys: &mut dyn System, desired: Option<&Desired>) -> (Snapshot, Option<Expect>) {
    let mut s = Snapshot::default();
    let state = read_state(&mut s, sys);

    let mut observed_links: Vec<ObservedLink> = Vec::new();
    match sys.links() {
        Ok(l) => observed_links = l,
        Err(e) => s.notes.push(format!("links: {e}")),
    }
    match sys.observe(observed_links.clone(), state, &Query::default()) {
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
    s.links = match sys.inspect().link_kinds() {
        Ok(l) => l
            .into_iter()
            .map(|l| Link {
                // A VXLAN link created without a port uses the kernel's default.
                vxlan_port: l
                    .vxlan_port
                    .or((l.kind.as_deref() == Some("vxlan")).then_some(crate::nft::VXLAN_PORT)),
                index: l.index,
                name: l.name,
                kind: l.kind,
            })
            .collect(),
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

    let expect = desired.map(|d| expect_of(d, sys, &observed_links));

    read_sysctls(&mut s, sys);
    read_firewall(&mut s, sys);
    read_conntrack(&mut s, sys);
    let processes = sys.inspect().processes();
    read_listeners(&mut s, sys, &processes);
    read_birds(&mut s, sys, &processes);
    read_files(&mut s, sys);

    if let Some(e) = &expect {
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
                socket: sys.real_path(sock),
                owner: "profile".into(),
                protocols,
            });
        }
    }
    // Every other BIRD's sessions, read from its own control socket.
    let known: Vec<PathBuf> = s.bird_sessions.iter().map(|b| b.socket.clone()).collect();
    let birds = s.birds.clone();
    for b in birds {
        if known.iter().any(|k| sys.inspect().same_file(k, &b.socket)) {
            continue;
        }
        match sys.inspect().bird_protocols_at(&b.socket) {
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

/// The state file `--state` names (below `--root`) and the safe apply's
/// checkpoint beside it; the parsed state (empty when unusable) is what
/// observation is given, as a converge would.
fn read_state(s: &mut Snapshot, sys: &mut dyn System) -> State {
    let (path, text) = sys.inspect().state_text();
    let parsed = match text {
        Ok(None) => Ok(None),
        Ok(Some(t)) => State::parse(&t).map(Some).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let checkpoint = match sys.load_checkpoint() {
        Ok(c) => c.is_some(),
        Err(e) => {
            s.notes.push(format!("checkpoint: {e}"));
            false
        }
    };
    let state = parsed.clone().ok().flatten().unwrap_or_default();
    s.state = Some(StateFacts {
        path,
        state: parsed,
        checkpoint,
    });
    state
}

fn expect_of(d: &Desired, sys: &mut dyn System, links: &[ObservedLink]) -> Expect {
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
    let inputs = crate::engine::read_bgp_inputs(sys, d).unwrap_or_default();
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

fn read_sysctls(s: &mut Snapshot, sys: &mut dyn System) {
    let mut names: Vec<String> = vec!["all".into(), "default".into()];
    names.extend(s.links.iter().map(|l| l.name.clone()));
    for n in names {
        if let Some(v) = sys
            .inspect()
            .proc_sys(&format!("net/ipv4/conf/{n}/rp_filter"))
        {
            s.sysctls.insert(format!("net.ipv4.conf.{n}.rp_filter"), v);
        }
    }
}

fn read_firewall(s: &mut Snapshot, sys: &mut dyn System) {
    for (t, out) in sys.inspect().iptables_dumps() {
        match out {
            Ok(text) => s.iptables.push((t, text)),
            Err(e) => s.notes.push(e),
        }
    }
    match sys.inspect().nft_ruleset() {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v) => s.nft_ruleset = Some(v),
            Err(e) => s
                .notes
                .push(format!("nft -j list ruleset: unreadable JSON: {e}")),
        },
        Err(e) => s.notes.push(e),
    }
}

fn read_conntrack(s: &mut Snapshot, sys: &mut dyn System) {
    let mut text = String::new();
    let mut ok = false;
    for fam in [Family::Ipv4, Family::Ipv6] {
        match sys.inspect().conntrack_snat(fam) {
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

fn read_listeners(s: &mut Snapshot, sys: &mut dyn System, processes: &[ProcessInfo]) {
    let mut socks = Vec::new();
    for fam in [Family::Ipv4, Family::Ipv6] {
        match sys.inspect().tcp_table(fam) {
            Ok(t) => socks.extend(parse::proc_net_tcp(&t, fam)),
            Err(e) => s.notes.push(e),
        }
    }
    s.listeners = listeners(socks, processes);
}

/// Each listening socket with the processes holding it (pure).
fn listeners(socks: Vec<(std::net::IpAddr, u16, u64)>, processes: &[ProcessInfo]) -> Vec<Listener> {
    let mut owners: BTreeMap<u64, Vec<(u32, String)>> = BTreeMap::new();
    for p in processes {
        for inode in &p.sockets {
            if socks.iter().any(|(_, _, i)| i == inode) {
                let entry = owners.entry(*inode).or_default();
                if !entry.iter().any(|(pid, _)| *pid == p.pid) {
                    entry.push((p.pid, p.comm.clone()));
                }
            }
        }
    }
    socks
        .into_iter()
        .map(|(addr, port, inode)| Listener {
            addr,
            port,
            inode,
            owners: owners.remove(&inode).unwrap_or_default(),
        })
        .collect()
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

/// A path in a process's arguments, made absolute from its cwd.
fn process_path(p: &ProcessInfo, arg: &str) -> PathBuf {
    let path = PathBuf::from(arg);
    if path.is_absolute() {
        path
    } else {
        p.cwd.join(path)
    }
}

fn read_birds(s: &mut Snapshot, sys: &mut dyn System, processes: &[ProcessInfo]) {
    for p in processes {
        let c = &p.comm;
        if !c.starts_with("bird") || c.starts_with("birdc") {
            continue;
        }
        let v6 = c.ends_with('6');
        let (config_path, config) = match arg_after(&p.cmdline, "-c") {
            Some(arg) => {
                let path = process_path(p, &arg);
                let text = sys.inspect().process_file(p.pid, &path);
                (path, text)
            }
            None => {
                let logical = Path::new(if v6 {
                    "/etc/bird/bird6.conf"
                } else {
                    "/etc/bird/bird.conf"
                });
                (
                    sys.real_path(logical),
                    sys.read_file(logical).ok().flatten(),
                )
            }
        };
        let socket = match arg_after(&p.cmdline, "-s") {
            Some(arg) => process_path(p, &arg),
            None => sys.real_path(Path::new(if v6 {
                "/run/bird/bird6.ctl"
            } else {
                "/run/bird/bird.ctl"
            })),
        };
        s.birds.push(BirdProcess {
            pid: p.pid,
            comm: c.clone(),
            config_path,
            config,
            socket,
        });
    }
    s.birds.sort_by_key(|b| b.pid);
}

fn read_files(s: &mut Snapshot, sys: &mut dyn System) {
    let mut logical: Vec<PathBuf> = KUBELET_FILES.iter().map(PathBuf::from).collect();
    logical.push(PathBuf::from(NETWORKD_CONF));
    for name in sys.inspect().list_dir(Path::new(NETWORKD_CONF_D)) {
        logical.push(Path::new(NETWORKD_CONF_D).join(name));
    }
    for p in logical {
        if let Ok(Some(t)) = sys.read_file(&p) {
            s.files.insert(p, t);
        }
    }
    s.networkd_links = read_state_dir(sys, Path::new("/run/systemd/netif/links"));
    s.nm_devices = read_state_dir(sys, Path::new("/run/NetworkManager/devices"));
}

/// Files named by ifindex.
fn read_state_dir(sys: &mut dyn System, dir: &Path) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for name in sys.inspect().list_dir(dir) {
        let Ok(index) = name.parse::<u32>() else {
            continue;
        };
        if let Ok(Some(t)) = sys.read_file(&dir.join(&name)) {
            out.insert(index, t);
        }
    }
    out
}
