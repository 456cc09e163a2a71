//! Readiness gates: the host is ready for the cluster join only when every
//! uplink is up, every ToR session is Established, a BFD session is Up to
//! every ToR (when the profile enables BFD), the host table's default has
//! enough ECMP next hops, and the service IP is exported to every ToR.
//! Evaluation is pure (`evaluate`); `wait` polls the system until all pass or
//! the timeout expires, reporting progress.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use crate::bgp::BfdSession;
use crate::desired::Family;
use crate::observed::{NextHop, ObservedLink};
use crate::system::{BirdProtocol, System, SystemError};

/// What the gates check, resolved for this host.
#[derive(Debug, Clone)]
pub struct Spec {
    pub uplinks: Vec<GateUplink>,
    pub host_table: u32,
    pub min_paths: u32,
    pub service: Vec<IpNet>,
    /// The host BIRD's control socket; `None` when the profile has no [bgp]
    /// (then only the uplinks gate applies).
    pub socket: Option<PathBuf>,
    /// BFD enabled in the profile: the `bfd-up` gate applies.
    pub bfd: bool,
    pub timeout: Duration,
    /// A TCP connection the safe apply must make through the fabric
    /// (`apply --confirm SECS --probe ADDR:PORT`).
    pub probe: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct GateUplink {
    pub name: String,
    pub index: u32,
    pub ifname: String,
    /// BIRD protocol names of this uplink's sessions (one per family).
    pub protocols: Vec<String>,
    /// The ToR's address of each session, in `protocols` order.
    pub peers: Vec<IpAddr>,
}

/// One poll's readings.
#[derive(Debug, Clone)]
pub struct Readings {
    pub links: Vec<ObservedLink>,
    pub nexthops: Vec<NextHop>,
    /// `Err`: BIRD did not answer (message kept as evidence).
    pub protocols: Result<Vec<BirdProtocol>, String>,
    pub exported: Vec<(String, Vec<IpNet>)>,
    /// `show bfd sessions` (`Err`: BIRD did not answer).
    pub bfd: Result<Vec<BfdSession>, String>,
    /// The control socket as a person finds it (below --root), for evidence.
    pub socket_path: Option<PathBuf>,
    /// The probe's outcome, when the spec has one (`Err`: why it failed).
    pub probe: Option<Result<(), String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gate {
    pub name: &'static str,
    pub passed: bool,
    pub evidence: String,
}

pub const UPLINKS_UP: &str = "uplinks-up";
pub const BGP_ESTABLISHED: &str = "bgp-established";
pub const BFD_UP: &str = "bfd-up";
pub const ECMP_PATHS: &str = "ecmp-paths";
pub const SERVICE_EXPORTED: &str = "service-exported";
pub const PROBE: &str = "probe";

/// How long one probe connection may take: a poll every 100 ms must not
/// stall on a black-holed address.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

fn probe_gate(spec: &Spec, r: &Readings) -> Option<Gate> {
    let addr = spec.probe?;
    Some(match &r.probe {
        Some(Ok(())) => Gate {
            name: PROBE,
            passed: true,
            evidence: format!("TCP {addr} connected"),
        },
        Some(Err(e)) => Gate {
            name: PROBE,
            passed: false,
            evidence: e.clone(),
        },
        None => Gate {
            name: PROBE,
            passed: false,
            evidence: format!("TCP {addr} not tried"),
        },
    })
}

pub fn evaluate(spec: &Spec, r: &Readings) -> Vec<Gate> {
    let mut gates = Vec::new();

    let link_states: Vec<(String, bool)> = spec
        .uplinks
        .iter()
        .map(|u| {
            let up = r
                .links
                .iter()
                .find(|l| l.index == u.index)
                .is_some_and(|l| l.oper_up);
            (u.ifname.clone(), up)
        })
        .collect();
    gates.push(Gate {
        name: UPLINKS_UP,
        passed: link_states.iter().all(|(_, up)| *up),
        evidence: link_states
            .iter()
            .map(|(n, up)| format!("{n} {}", if *up { "up" } else { "down" }))
            .collect::<Vec<_>>()
            .join(", "),
    });

    if spec.socket.is_none() {
        gates.extend(probe_gate(spec, r));
        return gates;
    }
    let (bgp_ok, bgp_evidence) = match &r.protocols {
        Err(e) => (false, format!("BIRD not answering: {e}")),
        Ok(protos) => {
            let mut ok = true;
            let mut ev = Vec::new();
            for p in spec.uplinks.iter().flat_map(|u| u.protocols.iter()) {
                let info = protos
                    .iter()
                    .find(|x| &x.name == p)
                    .map_or("missing", |x| x.info.as_str());
                let est = info.starts_with("Established");
                ok &= est;
                ev.push(format!("{p} {info}"));
            }
            (ok, ev.join(", "))
        }
    };
    gates.push(Gate {
        name: BGP_ESTABLISHED,
        passed: bgp_ok,
        evidence: bgp_evidence,
    });

    if spec.bfd {
        let (ok, evidence) = match &r.bfd {
            Err(e) => (false, format!("BIRD not answering: {e}")),
            Ok(_) => {
                let states = session_states(spec, r);
                let ok = states.iter().all(|s| s.bfd.as_deref() == Some("Up"));
                let ev: Vec<String> = states
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({} on {}) {}",
                            s.protocol,
                            s.peer,
                            s.ifname,
                            s.bfd.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                (ok, ev.join(", "))
            }
        };
        gates.push(Gate {
            name: BFD_UP,
            passed: ok,
            evidence,
        });
    }

    let n = r.nexthops.len() as u32;
    let via: Vec<String> = r
        .nexthops
        .iter()
        .map(|h| {
            let dev = r
                .links
                .iter()
                .find(|l| l.index == h.oif)
                .map_or_else(|| h.oif.to_string(), |l| l.name.clone());
            match h.gateway {
                Some(g) => format!("{g} ({dev})"),
                None => dev,
            }
        })
        .collect();
    gates.push(Gate {
        name: ECMP_PATHS,
        passed: n >= spec.min_paths,
        evidence: format!(
            "table {} default: {n} next hop{} (want {}){}{}",
            spec.host_table,
            if n == 1 { "" } else { "s" },
            spec.min_paths,
            if via.is_empty() { "" } else { " via " },
            via.join(", ")
        ),
    });

    if r.protocols.is_err() {
        // Without BIRD nobody knows what is exported: never claim "not exported".
        let socket = r.socket_path.as_ref().or(spec.socket.as_ref());
        gates.push(Gate {
            name: SERVICE_EXPORTED,
            passed: false,
            evidence: format!(
                "unknown: cannot reach BIRD at {}",
                socket.map_or_else(|| "its control socket".into(), |s| s.display().to_string())
            ),
        });
        return gates;
    }
    let mut ok = true;
    let mut ev = Vec::new();
    for p in spec.uplinks.iter().flat_map(|u| u.protocols.iter()) {
        let exported = r
            .exported
            .iter()
            .find(|(name, _)| name == p)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[]);
        // Each session carries its own family: a v4 session must export the v4 service IP.
        let missing: Vec<String> = spec
            .service
            .iter()
            .filter(|s| family_of_protocol(p) == Family::of(&s.addr()) && !exported.contains(s))
            .map(ToString::to_string)
            .collect();
        ok &= missing.is_empty();
        ev.push(if missing.is_empty() {
            format!("{p}: exported")
        } else {
            format!("{p}: {} not exported", missing.join(", "))
        });
    }
    gates.push(Gate {
        name: SERVICE_EXPORTED,
        passed: ok,
        evidence: ev.join(", "),
    });
    gates.extend(probe_gate(spec, r));
    gates
}

/// One ToR session as `status` shows it: the uplink's name and the BIRD
/// protocol name side by side, so a person finds it in `birdc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionState {
    /// Logical uplink name (`tor-a`).
    pub uplink: String,
    pub ifname: String,
    /// BIRD protocol name (`tor_a`, `tor_a_v6`).
    pub protocol: String,
    pub peer: IpAddr,
    /// BIRD's BGP state and detail (`Established`, `Active Socket: Connection refused`),
    /// `missing` when BIRD has no such protocol, `unknown` when BIRD does not answer.
    pub bgp: String,
    /// BFD state to this peer (`Up`, `Down`, `Init`, `AdminDown`, `no session`, `unknown`);
    /// `None` when the profile disables BFD.
    pub bfd: Option<String>,
}

/// Every ToR session with its BGP and BFD state, in uplink order.
pub fn session_states(spec: &Spec, r: &Readings) -> Vec<SessionState> {
    let mut out = Vec::new();
    for u in &spec.uplinks {
        for (i, p) in u.protocols.iter().enumerate() {
            let Some(peer) = u.peers.get(i).copied() else {
                continue;
            };
            let bgp = match &r.protocols {
                Err(_) => "unknown".to_string(),
                Ok(ps) => ps
                    .iter()
                    .find(|x| &x.name == p)
                    .map_or_else(|| "missing".to_string(), bgp_text),
            };
            let bfd = spec.bfd.then(|| match &r.bfd {
                Err(_) => "unknown".to_string(),
                Ok(ss) => ss
                    .iter()
                    .find(|s| {
                        s.address == peer && (s.interface.is_empty() || s.interface == u.ifname)
                    })
                    .map_or_else(|| "no session".to_string(), |s| s.state.clone()),
            });
            out.push(SessionState {
                uplink: u.name.clone(),
                ifname: u.ifname.clone(),
                protocol: p.clone(),
                peer,
                bgp,
                bfd,
            });
        }
    }
    out
}

fn bgp_text(p: &BirdProtocol) -> String {
    let info = p.info.split_whitespace().collect::<Vec<_>>().join(" ");
    if info.is_empty() {
        p.state.clone()
    } else {
        info
    }
}

/// Protocol names for IPv6 sessions end in `_v6` (see the BIRD template).
pub fn family_of_protocol(name: &str) -> Family {
    if name.ends_with("_v6") {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

pub fn read(sys: &mut dyn System, spec: &Spec) -> Result<Readings, SystemError> {
    let links = sys.links()?;
    let probe = spec.probe.map(|a| sys.tcp_probe(a, PROBE_TIMEOUT));
    let Some(socket) = &spec.socket else {
        return Ok(Readings {
            links,
            nexthops: Vec::new(),
            protocols: Ok(Vec::new()),
            exported: Vec::new(),
            bfd: Ok(Vec::new()),
            socket_path: None,
            probe,
        });
    };
    let nexthops = sys.default_nexthops(spec.host_table, Family::Ipv4)?;
    let protocols = sys.bird_protocols(socket).map_err(|e| e.to_string());
    let mut exported = Vec::new();
    let mut bfd = Ok(Vec::new());
    match &protocols {
        Ok(_) => {
            for p in spec.uplinks.iter().flat_map(|u| u.protocols.iter()) {
                exported.push((p.clone(), sys.bird_exported(socket, p).unwrap_or_default()));
            }
            if spec.bfd {
                bfd = sys.bird_bfd_sessions(socket).map_err(|e| e.to_string());
            }
        }
        Err(e) => bfd = Err(e.clone()),
    }
    Ok(Readings {
        links,
        nexthops,
        protocols,
        exported,
        bfd,
        socket_path: Some(sys.real_path(socket)),
        probe,
    })
}

/// The gates for a resolved target.
pub fn spec(
    d: &crate::desired::Desired,
    t: &crate::plan::Target,
    timeout: Option<Duration>,
) -> Spec {
    let uplinks = t
        .uplinks()
        .iter()
        .map(|l| {
            let protocols: Vec<String> = t
                .bird
                .as_ref()
                .and_then(|b| b.sessions.iter().find(|(u, _)| u == &l.role))
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let up = d.uplinks.iter().find(|u| u.name == l.role);
            let peers = protocols
                .iter()
                .filter_map(|p| match family_of_protocol(p) {
                    Family::Ipv4 => up.and_then(|u| u.ipv4.as_ref()).map(|t| IpAddr::V4(t.peer)),
                    Family::Ipv6 => up.and_then(|u| u.ipv6.as_ref()).map(|t| IpAddr::V6(t.peer)),
                })
                .collect();
            GateUplink {
                name: l.role.clone(),
                index: l.index,
                ifname: l.ifname.clone(),
                protocols,
                peers,
            }
        })
        .collect();
    let bgp = d.bgp.as_ref();
    Spec {
        uplinks,
        host_table: bgp.map_or(0, |b| b.host_table.id.get()),
        min_paths: bgp.map_or(0, |b| b.min_paths),
        service: d.service_addresses(),
        socket: t.bird.as_ref().map(|b| b.socket.clone()),
        bfd: t.bird.is_some() && bgp.is_some_and(|b| b.bfd.is_some()),
        timeout: timeout
            .unwrap_or_else(|| Duration::from_secs(u64::from(bgp.map_or(60, |b| b.timeout_s)))),
        probe: None,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub passed: bool,
    pub gates: Vec<Gate>,
    /// How long the gates were waited for (0 for `status`, which only looks).
    pub elapsed_ms: u64,
    /// Every ToR session at the last poll (uplink name, BIRD protocol, BGP and BFD state).
    pub sessions: Vec<SessionState>,
}

/// Polls until every gate passes or the timeout expires. `progress` is called
/// after each poll (for a terminal line or sd_notify STATUS=).
pub fn wait(
    sys: &mut dyn System,
    spec: &Spec,
    progress: impl FnMut(&[Gate], Duration),
) -> Result<Outcome, SystemError> {
    wait_with(sys, spec, &mut Sleep, progress)
}

/// How `wait_with` spends the time between two readings.
pub trait Pause {
    /// Returns after at most `max`, or earlier when something changed.
    fn pause(&mut self, max: Duration);
}

/// Plain polling: 100 ms between readings.
pub struct Sleep;

impl Pause for Sleep {
    fn pause(&mut self, max: Duration) {
        std::thread::sleep(max.min(POLL));
    }
}

const POLL: Duration = Duration::from_millis(100);

/// Gates the kernel announces (link state, routes in the host table): while
/// only these are pending, a pause that wakes on netlink events waits for
/// one instead of polling. Any other gate (BIRD's) is polled every 100 ms.
const EVENTED: &[&str] = &[UPLINKS_UP, ECMP_PATHS];

/// [`wait`], pausing through `pause` (an event source in the CLI).
pub fn wait_with(
    sys: &mut dyn System,
    spec: &Spec,
    pause: &mut dyn Pause,
    mut progress: impl FnMut(&[Gate], Duration),
) -> Result<Outcome, SystemError> {
    let start = Instant::now();
    loop {
        let readings = read(sys, spec)?;
        let gates = evaluate(spec, &readings);
        let elapsed = start.elapsed();
        progress(&gates, elapsed);
        let passed = gates.iter().all(|g| g.passed);
        if passed || elapsed >= spec.timeout {
            return Ok(Outcome {
                passed,
                gates,
                elapsed_ms: elapsed.as_millis() as u64,
                sessions: session_states(spec, &readings),
            });
        }
        let evented = gates
            .iter()
            .filter(|g| !g.passed)
            .all(|g| EVENTED.contains(&g.name));
        // Never past the timeout: the last reading is taken at it.
        let left = spec.timeout.saturating_sub(elapsed);
        pause.pause(if evented { left } else { left.min(POLL) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::ObservedLink;

    fn spec() -> Spec {
        Spec {
            uplinks: vec![
                GateUplink {
                    name: "tor-a".into(),
                    index: 2,
                    ifname: "eth0".into(),
                    protocols: vec!["tor_a".into()],
                    peers: vec!["172.30.0.0".parse().unwrap()],
                },
                GateUplink {
                    name: "tor-b".into(),
                    index: 3,
                    ifname: "eth1".into(),
                    protocols: vec!["tor_b".into()],
                    peers: vec!["172.30.1.0".parse().unwrap()],
                },
            ],
            host_table: 1001,
            min_paths: 2,
            service: vec!["10.10.0.11/32".parse().unwrap()],
            socket: Some("/run/bird/bird.ctl".into()),
            bfd: true,
            timeout: Duration::from_secs(1),
            probe: None,
        }
    }

    fn link(index: u32, name: &str, up: bool) -> ObservedLink {
        ObservedLink {
            index,
            name: name.into(),
            mac: None,
            perm_mac: None,
            mtu: 9000,
            up: true,
            oper_up: up,
        }
    }

    fn proto(name: &str, info: &str) -> BirdProtocol {
        BirdProtocol {
            name: name.into(),
            proto: "BGP".into(),
            state: "up".into(),
            info: info.into(),
        }
    }

    fn bfd(addr: &str, ifname: &str, state: &str) -> BfdSession {
        BfdSession {
            protocol: "bfd1".into(),
            address: addr.parse().unwrap(),
            interface: ifname.into(),
            state: state.into(),
            since: "16:24:06.374".into(),
        }
    }

    fn healthy() -> Readings {
        let svc: IpNet = "10.10.0.11/32".parse().unwrap();
        Readings {
            links: vec![link(2, "eth0", true), link(3, "eth1", true)],
            nexthops: vec![
                NextHop {
                    gateway: Some("172.30.0.0".parse().unwrap()),
                    oif: 2,
                },
                NextHop {
                    gateway: Some("172.30.1.0".parse().unwrap()),
                    oif: 3,
                },
            ],
            protocols: Ok(vec![
                proto("tor_a", "Established"),
                proto("tor_b", "Established"),
            ]),
            exported: vec![("tor_a".into(), vec![svc]), ("tor_b".into(), vec![svc])],
            bfd: Ok(vec![
                bfd("172.30.0.0", "eth0", "Up"),
                bfd("172.30.1.0", "eth1", "Up"),
            ]),
            socket_path: Some("/tmp/root/run/bird/bird.ctl".into()),
            probe: None,
        }
    }

    fn failed(gates: &[Gate]) -> Vec<&'static str> {
        gates.iter().filter(|g| !g.passed).map(|g| g.name).collect()
    }

    fn gate<'a>(gates: &'a [Gate], name: &str) -> &'a Gate {
        gates.iter().find(|g| g.name == name).expect("gate present")
    }

    #[test]
    fn healthy_host_passes_every_gate() {
        let g = evaluate(&spec(), &healthy());
        let names: Vec<&str> = g.iter().map(|g| g.name).collect();
        assert_eq!(
            names,
            [
                UPLINKS_UP,
                BGP_ESTABLISHED,
                BFD_UP,
                ECMP_PATHS,
                SERVICE_EXPORTED
            ]
        );
        assert!(failed(&g).is_empty(), "{g:#?}");
        let ecmp = &gate(&g, ECMP_PATHS).evidence;
        assert!(
            ecmp.contains("via 172.30.0.0 (eth0), 172.30.1.0 (eth1)"),
            "{ecmp}"
        );
        assert_eq!(
            gate(&g, BFD_UP).evidence,
            "tor_a (172.30.0.0 on eth0) Up, tor_b (172.30.1.0 on eth1) Up"
        );
    }

    #[test]
    fn each_gate_fails_on_its_own_evidence() {
        let mut r = healthy();
        r.links[1].oper_up = false;
        assert_eq!(failed(&evaluate(&spec(), &r)), [UPLINKS_UP]);

        let mut r = healthy();
        r.protocols = Ok(vec![
            proto("tor_a", "Established"),
            proto("tor_b", "Active   Socket: Connection refused"),
        ]);
        let g = evaluate(&spec(), &r);
        assert_eq!(failed(&g), [BGP_ESTABLISHED]);
        assert!(gate(&g, BGP_ESTABLISHED).evidence.contains("tor_b Active"));

        // The case: BGP Established, the ToR's BFD off.
        let mut r = healthy();
        r.bfd = Ok(vec![
            bfd("172.30.0.0", "eth0", "Down"),
            bfd("172.30.1.0", "eth1", "Up"),
        ]);
        let g = evaluate(&spec(), &r);
        assert_eq!(failed(&g), [BFD_UP]);
        assert!(
            gate(&g, BFD_UP)
                .evidence
                .contains("tor_a (172.30.0.0 on eth0) Down"),
            "{}",
            gate(&g, BFD_UP).evidence
        );
        let mut r = healthy();
        r.bfd = Ok(vec![
            bfd("172.30.1.0", "eth1", "Up"),
            bfd("172.30.0.0", "eth9", "Up"),
        ]);
        let g = evaluate(&spec(), &r);
        assert_eq!(
            failed(&g),
            [BFD_UP],
            "a session on another interface is not ours"
        );
        assert!(gate(&g, BFD_UP)
            .evidence
            .contains("tor_a (172.30.0.0 on eth0) no session"));

        let mut r = healthy();
        r.nexthops.pop();
        let g = evaluate(&spec(), &r);
        assert_eq!(failed(&g), [ECMP_PATHS]);
        assert!(gate(&g, ECMP_PATHS)
            .evidence
            .contains("1 next hop (want 2)"));

        let mut r = healthy();
        r.exported[1].1.clear();
        let g = evaluate(&spec(), &r);
        assert_eq!(failed(&g), [SERVICE_EXPORTED]);
        assert!(gate(&g, SERVICE_EXPORTED)
            .evidence
            .contains("tor_b: 10.10.0.11/32 not exported"));
    }

    /// Records what it was asked to wait for; sleeps briefly so time moves.
    struct Recorder(Vec<Duration>);
    impl Pause for Recorder {
        fn pause(&mut self, max: Duration) {
            self.0.push(max);
            std::thread::sleep(max.min(Duration::from_millis(20)));
        }
    }

    #[test]
    fn only_netlink_gates_pending_waits_for_an_event_up_to_the_timeout() {
        let mut sys = crate::system::fake::FakeSystem::with_nics(&["eth0", "eth1"]);
        let mut s = spec();
        s.timeout = Duration::from_millis(150);
        // Without BGP only uplinks-up is left: one pause for the rest of the timeout.
        s.socket = None;
        let mut rec = Recorder(Vec::new());
        let o = wait_with(&mut sys, &s, &mut rec, |_, _| {}).unwrap();
        assert!(!o.passed);
        assert!(rec.0[0] > Duration::from_millis(100), "{:?}", rec.0);
        assert!(rec.0.iter().all(|d| *d <= s.timeout));
        assert!(
            o.elapsed_ms >= 150 && o.elapsed_ms < 1000,
            "{}",
            o.elapsed_ms
        );
        // BIRD's gates have no events: polled every 100 ms at most.
        s.socket = Some("/run/bird/bird.ctl".into());
        let mut rec = Recorder(Vec::new());
        wait_with(&mut sys, &s, &mut rec, |_, _| {}).unwrap();
        assert!(rec.0.iter().all(|d| *d <= POLL), "{:?}", rec.0);
    }

    #[test]
    fn without_bird_nothing_is_claimed_not_exported() {
        let mut r = healthy();
        r.protocols = Err("connecting to BIRD control socket: No such file or directory".into());
        r.bfd = Err("same".into());
        let g = evaluate(&spec(), &r);
        assert_eq!(failed(&g), [BGP_ESTABLISHED, BFD_UP, SERVICE_EXPORTED]);
        assert!(gate(&g, BGP_ESTABLISHED)
            .evidence
            .contains("BIRD not answering"));
        assert_eq!(
            gate(&g, SERVICE_EXPORTED).evidence,
            "unknown: cannot reach BIRD at /tmp/root/run/bird/bird.ctl"
        );
        let s = session_states(&spec(), &r);
        assert_eq!(s[0].bgp, "unknown");
        assert_eq!(s[0].bfd.as_deref(), Some("unknown"));
    }

    #[test]
    fn a_probe_is_one_more_gate_with_its_error_as_evidence() {
        let mut s = spec();
        s.probe = Some("10.96.0.1:443".parse().unwrap());
        let mut r = healthy();
        r.probe = Some(Err("connect 10.96.0.1:443: connection timed out".into()));
        let g = evaluate(&s, &r);
        assert_eq!(failed(&g), [PROBE]);
        assert!(gate(&g, PROBE).evidence.contains("timed out"));
        r.probe = Some(Ok(()));
        assert!(failed(&evaluate(&s, &r)).is_empty());
    }

    #[test]
    fn without_bgp_only_the_uplinks_gate_applies_and_without_bfd_no_bfd_gate() {
        let mut s = spec();
        s.socket = None;
        assert_eq!(evaluate(&s, &healthy()).len(), 1);
        let mut s = spec();
        s.bfd = false;
        let mut r = healthy();
        r.bfd = Ok(Vec::new());
        let g = evaluate(&s, &r);
        assert!(!g.iter().any(|g| g.name == BFD_UP));
        assert!(failed(&g).is_empty());
        assert!(session_states(&s, &r).iter().all(|x| x.bfd.is_none()));
    }

    #[test]
    fn sessions_name_the_uplink_and_the_bird_protocol() {
        let mut r = healthy();
        r.protocols = Ok(vec![
            proto("tor_a", "Established"),
            proto("tor_b", "Active   Socket: Connection refused"),
        ]);
        let s = session_states(&spec(), &r);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].uplink.as_str(), s[0].protocol.as_str()),
            ("tor-a", "tor_a")
        );
        assert_eq!(s[1].bgp, "Active Socket: Connection refused");
        assert_eq!(s[1].bfd.as_deref(), Some("Up"));
    }
}
