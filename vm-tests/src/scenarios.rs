//! Scenario checks against a running lab. Each returns PASS/FAIL with evidence;
//! a new scenario is one function and one line in [`SCENARIOS`]. The
//! table-fight scenarios live in `tablefight`, the template override one in
//! `overrides`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd;
use crate::plan::{Host, Lab, Tor};
use crate::probe::{self, Server};
use crate::status;

pub use crate::outcome::{Outcome, TestOptions};

pub type ScenarioFn = fn(&Lab, &TestOptions) -> Result<Outcome>;

pub const SCENARIOS: &[(&str, &str, ScenarioFn)] = &[
    (
        "converged",
        "every ToR and Calico-role session Established, host-table default has 2 next hops",
        converged,
    ),
    (
        "join",
        "apply --wait --join on every host: kubeadm-standin never invoked while a ToR session is down, then once per host with node-ip = its service IP after both sessions are Established, never again; the token in no stream",
        crate::join::join,
    ),
    (
        "reachability",
        "client reaches every service IP and pod by ICMP and TCP",
        reachability,
    ),
    (
        "ecmp-spread",
        "many TCP flows use both ToR links of every host (L4 hashing)",
        ecmp_spread,
    ),
    (
        "failover",
        "a ToR link goes down: detection time, service IP still reachable, recovery",
        failover,
    ),
    (
        "failover-silent",
        "a ToR link drops everything, carrier up (BFD's case): detection, reachability, recovery",
        failover_silent,
    ),
    (
        "no-table-fight",
        "Calico-role BIRD churns a pod route every second: host table and main never lose a route, underlay apply stays at 0 changes",
        crate::tablefight::no_table_fight,
    ),
    (
        "table-fight-shared-main",
        "both BIRDs sync main (the talk's setup): each deletes the other's routes; then the split is restored",
        crate::tablefight::table_fight_shared_main,
    ),
    (
        "bad-template-override",
        "a broken BIRD template override: apply exits 1 with the error, running BIRD and bird.conf untouched",
        crate::overrides::bad_template_override,
    ),
];

/// Runs the selected scenarios (all when `only` is empty); returns (passed, failed).
pub fn run(lab: &Lab, only: &[String], opts: &TestOptions) -> Result<(usize, usize)> {
    for o in only {
        if !SCENARIOS.iter().any(|(n, _, _)| n == o) {
            let names: Vec<_> = SCENARIOS.iter().map(|s| s.0).collect();
            anyhow::bail!("unknown scenario {o:?}; known: {}", names.join(", "));
        }
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, what, f) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let start = Instant::now();
        let outcome = f(lab, opts).unwrap_or_else(|e| Outcome {
            pass: false,
            evidence: vec![format!("FAIL error: {e:#}")],
        });
        let verdict = if outcome.pass { "PASS" } else { "FAIL" };
        println!(
            "{verdict} {name}: {what} ({} ms)",
            start.elapsed().as_millis()
        );
        for e in &outcome.evidence {
            println!("    {e}");
        }
        if outcome.pass {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    Ok((passed, failed))
}

fn converged(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    for h in status::collect(lab).hosts {
        let sessions: Vec<String> = h
            .sessions
            .iter()
            .map(|s| format!("{}={}", s.peer, s.state))
            .collect();
        o.check(
            h.converged,
            format!(
                "{}: sessions [{}] host-table nexthops={}{}",
                h.name,
                sessions.join(" "),
                h.host_table_nexthops,
                h.bird_error.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        );
    }
    Ok(o)
}

fn sock(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

fn reachability(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let client = lab.client_netns();
    for h in lab.hosts() {
        for (what, ns, ip) in [
            ("service IP", &h.netns, h.service_ip),
            ("pod", &h.pod_netns, h.pod_ip),
        ] {
            let p = probe::ping_from(&client, ip, 3, 1000)?;
            let rtt = p.rtt_ms.iter().cloned().fold(0.0, f64::max);
            o.check(
                p.received == p.sent,
                format!(
                    "{}: ping {what} {ip}: {}/{} replies, max rtt {rtt:.2} ms",
                    h.name, p.received, p.sent
                ),
            );
            let server = Server::start(ns, sock(ip, 7001), 30)?;
            let c = probe::connect_from(&client, server.addr, 4, 1000, 2000)?;
            o.check(
                c.ok == c.flows,
                format!(
                    "{}: TCP echo {what} {}: {}/{} flows in {} ms {}",
                    h.name,
                    server.addr,
                    c.ok,
                    c.flows,
                    c.elapsed_ms,
                    c.errors.join("; ")
                ),
            );
        }
    }
    Ok(o)
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    rx: u64,
    tx: u64,
}

fn link_counters(ns: &str, dev: &str) -> Result<Counters> {
    let v = cmd::ip_json(ns, &["-s", "link", "show", "dev", dev])?;
    let s = &v[0]["stats64"];
    Ok(Counters {
        rx: s["rx"]["packets"].as_u64().context("rx packets")?,
        tx: s["tx"]["packets"].as_u64().context("tx packets")?,
    })
}

fn uplink_counters(h: &Host) -> Result<Vec<Counters>> {
    h.uplinks
        .iter()
        .map(|u| link_counters(&h.netns, &u.host_if))
        .collect()
}

const SPREAD_FLOWS: u32 = 64;
/// Minimum share of packets each uplink must carry in each direction.
const SPREAD_MIN_SHARE: f64 = 0.15;

fn ecmp_spread(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let client = lab.client_netns();
    for h in lab.hosts() {
        let server = Server::start(&h.netns, sock(h.service_ip, 7002), 30)?;
        let before = uplink_counters(&h)?;
        let c = probe::connect_from(&client, server.addr, SPREAD_FLOWS, 20_000, 2000)?;
        let after = uplink_counters(&h)?;
        let d: Vec<Counters> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| Counters {
                rx: a.rx - b.rx,
                tx: a.tx - b.tx,
            })
            .collect();
        let (rx_total, tx_total) = (
            d.iter().map(|c| c.rx).sum::<u64>(),
            d.iter().map(|c| c.tx).sum::<u64>(),
        );
        let share = |x: u64, t: u64| if t == 0 { 0.0 } else { x as f64 / t as f64 };
        o.check(
            c.ok == c.flows,
            format!(
                "{}: {}/{} TCP flows to {} completed",
                h.name, c.ok, c.flows, server.addr
            ),
        );
        for (u, dc) in h.uplinks.iter().zip(&d) {
            let (rs, ts) = (share(dc.rx, rx_total), share(dc.tx, tx_total));
            o.check(
                rs >= SPREAD_MIN_SHARE && ts >= SPREAD_MIN_SHARE,
                format!(
                    "{}: {} (to {}) rx {} pkts ({:.0}%), tx {} pkts ({:.0}%)",
                    h.name,
                    u.host_if,
                    u.tor.name(),
                    dc.rx,
                    rs * 100.0,
                    dc.tx,
                    ts * 100.0
                ),
            );
        }
    }
    Ok(o)
}

/// Polls until `pred(nexthops)` holds; returns the elapsed time or None.
pub fn wait_nexthops(
    ns: &str,
    timeout: Duration,
    pred: impl Fn(usize) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if status::host_table_nexthops(ns).map(&pred).unwrap_or(false) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// How a ToR link fails in a failover scenario.
#[derive(Clone, Copy)]
enum Fault {
    /// `ip link set down` on the ToR end: the host sees its carrier go away.
    LinkDown,
    /// nftables in the ToR namespace drops everything on the link while the
    /// carrier stays up: only BFD (or the hold timer) can notice.
    Silent,
}

/// nftables table of the silent-failure fault (ToR namespaces only).
pub const FAULT_TABLE: &str = "ul_lab_fault";

impl Fault {
    fn describe(self, tor_if: &str) -> String {
        match self {
            Fault::LinkDown => format!("{tor_if} set down"),
            Fault::Silent => format!("{tor_if} silently dropping (carrier up)"),
        }
    }

    fn inject(self, lab: &Lab, tns: &str, tor_if: &str) -> Result<()> {
        match self {
            Fault::LinkDown => cmd::ip(tns, &["link", "set", "dev", tor_if, "down"]).map(|_| ()),
            Fault::Silent => {
                let rules = format!(
                    "table inet {FAULT_TABLE} {{\n\
                     chain input {{ type filter hook input priority -10; iifname \"{tor_if}\" drop; }}\n\
                     chain forward {{ type filter hook forward priority -10; iifname \"{tor_if}\" drop; oifname \"{tor_if}\" drop; }}\n\
                     chain output {{ type filter hook output priority -10; oifname \"{tor_if}\" drop; }}\n}}\n"
                );
                let path = lab.dir.join("fault.nft");
                std::fs::write(&path, rules)?;
                cmd::ns_exec(tns, "nft", &["-f", &path.to_string_lossy()]).map(|_| ())
            }
        }
    }

    fn clear(self, tns: &str, tor_if: &str) -> Result<()> {
        match self {
            Fault::LinkDown => cmd::ip(tns, &["link", "set", "dev", tor_if, "up"]).map(|_| ()),
            Fault::Silent => {
                cmd::ns_exec(tns, "nft", &["delete", "table", "inet", FAULT_TABLE]).map(|_| ())
            }
        }
    }
}

fn failover(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    failover_with(lab, Fault::LinkDown)
}

fn failover_silent(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    failover_with(lab, Fault::Silent)
}

/// Fails host 1's link to ToR A, measures how long the host table keeps the
/// dead next hop, checks the service IP stays reachable, restores the link.
fn failover_with(lab: &Lab, fault: Fault) -> Result<Outcome> {
    let mut o = Outcome::new();
    let h = lab.host(1);
    let tor = Tor::A;
    let tns = lab.tor_netns(tor);
    let uplink = &h.uplinks[tor.index() as usize];
    let before = status::host_table_nexthops(&h.netns)?;
    o.check(
        before == 2,
        format!(
            "{}: host-table default has {before} next hops before the failure",
            h.name
        ),
    );
    if before != 2 {
        return Ok(o);
    }
    let server = Server::start(&h.netns, sock(h.service_ip, 7003), 60)?;
    let client = lab.client_netns();

    let t0 = Instant::now();
    fault.inject(lab, &tns, &uplink.tor_if)?;
    let what = fault.describe(&format!("{}/{}", tor.name(), uplink.tor_if));
    let result = during_failure(&h, &what, &server, (&client, &tns), t0, &mut o);
    // Always restore, even when the checks above failed.
    fault.clear(&tns, &uplink.tor_if)?;
    result?;
    let restored = wait_nexthops(&h.netns, Duration::from_secs(30), |n| n >= 2);
    o.check(
        restored.is_some(),
        match restored {
            Some(d) => format!(
                "{}: fault cleared, 2 next hops again after {} ms",
                h.name,
                d.as_millis()
            ),
            None => format!("{}: fault cleared, but no 2 next hops within 30 s", h.name),
        },
    );
    Ok(o)
}

fn during_failure(
    h: &Host,
    what: &str,
    server: &Server,
    (client, tor_ns): (&str, &str),
    t0: Instant,
    o: &mut Outcome,
) -> Result<()> {
    let detected =
        wait_nexthops(&h.netns, Duration::from_secs(15), |n| n <= 1).map(|_| t0.elapsed());
    o.check(
        detected.is_some_and(|d| d <= Duration::from_secs(2)),
        match detected {
            Some(d) => format!(
                "{}: host-table default dropped to 1 next hop {} ms after {what}",
                h.name,
                d.as_millis(),
            ),
            None => format!(
                "{}: host-table default still had 2 next hops after 15 s",
                h.name
            ),
        },
    );
    // The service IP must stay reachable; both ToRs get client flows, the one
    // that lost the host detours over the ToR-to-ToR link.
    let detour_before = link_counters(tor_ns, "peer")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    let reached = loop {
        let p = probe::ping_from(client, h.service_ip, 1, 500)?;
        let c = probe::connect_from(client, server.addr, 16, 1000, 1000)?;
        if p.received == 1 && c.ok == c.flows {
            break Some(t0.elapsed());
        }
        last = format!(
            "ping {}/1, tcp {}/{} {}",
            p.received,
            c.ok,
            c.flows,
            c.errors.join("; ")
        );
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    o.check(
        reached.is_some(),
        match reached {
            Some(d) => format!(
                "{}: service IP {} reachable from the client (ping + 16 TCP flows) {} ms after the failure",
                h.name,
                h.service_ip,
                d.as_millis()
            ),
            None => format!("{}: service IP {} unreachable during the failure: {last}", h.name, h.service_ip),
        },
    );
    let detour = link_counters(tor_ns, "peer")?.tx - detour_before.tx;
    o.check(
        detour > 0,
        format!(
            "{}: {detour} packets detoured over the ToR-to-ToR link meanwhile",
            h.name
        ),
    );
    Ok(())
}
