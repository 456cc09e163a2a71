//! docs/background.md failure 2, the route-table fight, and the split that
//! prevents it (docs/design.md "Routing split").
//!
//! Both scenarios churn the Calico-role BIRD once per second (a second pod
//! block, 10.244.<i>.64/26, added to and removed from its `pod_blocks` static
//! protocol, then `birdc configure`, like Calico IPAM allocating and releasing
//! blocks) while the lab
//! - samples `main` and the host table with `ip -j -4 route show table all`
//!   (one dump, both tables) every [`SAMPLE_EVERY`] in a thread of its own, and
//! - records every route change of the host namespace with
//!   `ip -ts monitor route`, so a deletion shorter than a sample period is
//!   still seen.
//!
//! `no-table-fight` runs that against the lab as the agent converged it: the
//! host BIRD syncs table 1001, the Calico-role BIRD syncs `main`, and nothing
//! of either may go missing while `underlay apply` re-runs stay at 0 changes.
//!
//! `table-fight-shared-main` first points the host BIRD's kernel protocol at
//! `main` (`kernel table 254`), the talk's setup. What happens (observed with
//! BIRD 2.0.12): both daemons install their routes with `proto bird` (12) and
//! the default metric 32, and a BIRD kernel protocol treats every `proto bird`
//! route of its table as its own. At each of its scans (host BIRD: `scan time
//! 10` in the agent's config; Calico role: `scan time 2`, as Calico's bird.cfg)
//! it deletes the `proto bird` routes it did not export and re-installs its own
//! missing ones. So the Calico-role BIRD deletes the host BIRD's ECMP default
//! and fabric routes within 2 s of their installation, and every host-BIRD scan
//! deletes Calico's pod blocks; neither daemon notices until its next scan
//! (BIRD ignores netlink notifications about its own protocol's routes). No
//! shared prefix is needed: `learn`/`persist` play no part, the shared
//! protocol number is the whole mechanism. The scenario passes when both
//! directions of deletion were recorded, then restores the split with
//! `underlay apply` (which rewrites the agent's config and reloads BIRD) and
//! `birdc configure`, and waits until the lab is converged again.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agent;
use crate::bird::{self, Bird};
use crate::cmd;
use crate::outcome::{Outcome, TestOptions};
use crate::plan::{Host, Lab, CLIENT_SUBNET, HOST_TABLE};
use crate::status;

/// Target interval between two samples of the kernel tables.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(40);
/// Sampling must keep up with this interval: at least [`MIN_ON_TIME_SHARE`]
/// of the gaps between two samples are no longer...
pub const SAMPLE_GAP_TARGET: Duration = Duration::from_millis(100);
pub const MIN_ON_TIME_SHARE: f64 = 0.99;
/// ...and none is longer than this (a loaded machine may delay a spawn of
/// `ip`; the netlink monitor still records every change meanwhile).
pub const MAX_SAMPLE_GAP: Duration = Duration::from_millis(500);
/// Interval of the Calico-role churn (announce, withdraw, announce, ...).
pub const CHURN_EVERY: Duration = Duration::from_secs(1);
/// `underlay apply` re-runs during a `no-table-fight` churn.
const APPLY_RERUNS: u32 = 3;

/// One look at a host's two tables.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Since the start of the churn.
    at: Duration,
    host_default_nexthops: usize,
    host_client_route: bool,
    main_pod_block: bool,
    main_churn_block: bool,
    main_default: bool,
    main_client_route: bool,
}

fn has_dst(routes: &serde_json::Value, dst: &str) -> bool {
    routes
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["dst"] == dst)
}

/// Splits one `ip -j -4 route show table all` dump into (table 1001, main):
/// one dump is one consistent look at both tables, and one process per sample.
fn split_tables(all: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let host_table = HOST_TABLE.to_string();
    let (mut host, mut main) = (vec![], vec![]);
    for r in all.as_array().into_iter().flatten() {
        match r["table"].as_str() {
            None | Some("main") => main.push(r.clone()),
            Some(t) if t == host_table => host.push(r.clone()),
            Some(_) => {}
        }
    }
    (host.into(), main.into())
}

fn sample(h: &Host, t0: Instant) -> Result<Sample> {
    let at = t0.elapsed();
    let all = cmd::ip_json(&h.netns, &["-4", "route", "show", "table", "all"])?;
    let (host, main) = split_tables(&all);
    Ok(Sample {
        at,
        host_default_nexthops: status::default_nexthops(&host),
        host_client_route: has_dst(&host, CLIENT_SUBNET),
        main_pod_block: has_dst(&main, &h.pod_block_cidr()),
        main_churn_block: has_dst(&main, &h.churn_block_cidr()),
        main_default: has_dst(&main, "default"),
        main_client_route: has_dst(&main, CLIENT_SUBNET),
    })
}

/// What the samples of one host add up to.
#[derive(Debug, Default)]
struct Tally {
    samples: usize,
    max_gap: Duration,
    /// Gaps between two samples longer than [`SAMPLE_GAP_TARGET`].
    late_gaps: usize,
    host_default_missing: usize,
    host_default_single_path: usize,
    host_client_missing: usize,
    main_pod_block_missing: usize,
    main_default_present: usize,
    main_default_missing: usize,
    main_client_present: usize,
    churn_present: usize,
    churn_transitions: usize,
    /// First sample (ms) in which main lacked the host BIRD's default.
    first_main_default_missing: Option<Duration>,
    first_pod_block_missing: Option<Duration>,
}

fn tally(samples: &[Sample]) -> Tally {
    let mut t = Tally {
        samples: samples.len(),
        ..Tally::default()
    };
    let mut prev: Option<&Sample> = None;
    for s in samples {
        if let Some(p) = prev {
            let gap = s.at.saturating_sub(p.at);
            t.max_gap = t.max_gap.max(gap);
            t.late_gaps += usize::from(gap > SAMPLE_GAP_TARGET);
            if p.main_churn_block != s.main_churn_block {
                t.churn_transitions += 1;
            }
        }
        prev = Some(s);
        match s.host_default_nexthops {
            0 => t.host_default_missing += 1,
            1 => t.host_default_single_path += 1,
            _ => {}
        }
        t.host_client_missing += usize::from(!s.host_client_route);
        if !s.main_pod_block {
            t.main_pod_block_missing += 1;
            t.first_pod_block_missing.get_or_insert(s.at);
        }
        if s.main_default {
            t.main_default_present += 1;
        } else {
            t.main_default_missing += 1;
            t.first_main_default_missing.get_or_insert(s.at);
        }
        t.main_client_present += usize::from(s.main_client_route);
        t.churn_present += usize::from(s.main_churn_block);
    }
    t
}

/// One route change seen by `ip monitor route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEvent {
    pub deleted: bool,
    /// `main`, `1001`, `local`, ...
    pub table: String,
    pub dst: String,
}

/// Parses one line of `ip -ts monitor route` (continuation lines, IPv6 and
/// anything unparsable give `None`).
pub fn parse_monitor_line(line: &str) -> Option<RouteEvent> {
    let rest = match line.strip_prefix('[') {
        Some(r) => r.split_once("] ")?.1,
        None => line,
    };
    if rest.starts_with(char::is_whitespace) || rest.starts_with("nexthop") {
        return None;
    }
    let (deleted, rest) = match rest.strip_prefix("Deleted ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut toks = rest.split_whitespace().peekable();
    const TYPES: [&str; 9] = [
        "unicast",
        "blackhole",
        "unreachable",
        "prohibit",
        "local",
        "broadcast",
        "anycast",
        "multicast",
        "throw",
    ];
    if toks.peek().is_some_and(|t| TYPES.contains(t)) {
        toks.next();
    }
    let dst = toks.next()?.to_string();
    if dst.contains(':') {
        return None;
    }
    let mut table = "main".to_string();
    while let Some(t) = toks.next() {
        if t == "table" {
            table = toks.next()?.to_string();
        }
    }
    Some(RouteEvent {
        deleted,
        table,
        dst,
    })
}

/// `ip -n NS -ts monitor route` writing to a file, stopped by its own pid.
struct RouteMonitor {
    child: Child,
    path: PathBuf,
}

impl RouteMonitor {
    fn start(lab: &Lab, h: &Host) -> Result<RouteMonitor> {
        let path = h.dir(lab).join("route-monitor.log");
        let file = std::fs::File::create(&path)?;
        let child = Command::new("ip")
            .args(["-n", &h.netns, "-ts", "monitor", "route"])
            .stdout(Stdio::from(file))
            .stderr(Stdio::null())
            .spawn()
            .context("start `ip monitor route`")?;
        // Let it subscribe before anything happens.
        std::thread::sleep(Duration::from_millis(200));
        Ok(RouteMonitor { child, path })
    }

    fn stop(mut self) -> Result<Vec<RouteEvent>> {
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let f = std::fs::File::open(&self.path)?;
        Ok(std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| parse_monitor_line(&l))
            .collect())
    }
}

fn count(events: &[RouteEvent], deleted: bool, table: &str, dst: &str) -> usize {
    events
        .iter()
        .filter(|e| e.deleted == deleted && e.table == table && e.dst == dst)
        .count()
}

/// What one churn run did and saw, per host.
struct ChurnRun {
    hosts: Vec<HostRun>,
    /// `underlay apply` re-runs planned per host (fewer than
    /// [`APPLY_RERUNS`] in a churn of less than 4 s).
    planned_applies: usize,
}

struct HostRun {
    host: Host,
    samples: Vec<Sample>,
    sample_errors: Vec<String>,
    events: Vec<RouteEvent>,
    configures: usize,
    configure_errors: Vec<String>,
    /// `underlay apply` re-runs: (at, changed resources, exit code, summary).
    applies: Vec<(Duration, usize, Option<i32>, String)>,
}

/// Churns the Calico-role BIRD of every host in `hosts` for `duration`,
/// sampling and monitoring meanwhile; with `apply_with`, re-runs `underlay
/// apply` [`APPLY_RERUNS`] times spread over the run. Always leaves the
/// Calico-role BIRDs on their normal config (without the churn block).
fn churn(
    lab: &Lab,
    hosts: &[Host],
    duration: Duration,
    apply_with: Option<(&Path, &Path)>,
    on_start: &dyn Fn() -> Result<()>,
) -> Result<ChurnRun> {
    let mut monitors = vec![];
    for h in hosts {
        monitors.push(RouteMonitor::start(lab, h)?);
    }
    let stop = AtomicBool::new(false);
    let mut planned_applies = 0;
    let t0 = Instant::now();
    let mut runs: Vec<HostRun> = hosts
        .iter()
        .map(|h| HostRun {
            host: h.clone(),
            samples: vec![],
            sample_errors: vec![],
            events: vec![],
            configures: 0,
            configure_errors: vec![],
            applies: vec![],
        })
        .collect();
    let sampled: Result<Vec<(Vec<Sample>, Vec<String>)>> = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out: Vec<(Vec<Sample>, Vec<String>)> =
                hosts.iter().map(|_| (vec![], vec![])).collect();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                for (h, (samples, errors)) in hosts.iter().zip(out.iter_mut()) {
                    match sample(h, t0) {
                        Ok(x) => samples.push(x),
                        Err(e) => errors.push(format!("{e:#}")),
                    }
                }
                next += SAMPLE_EVERY;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
            out
        });
        // Sampler and monitors run: now the change under test (if any).
        if let Err(e) = on_start() {
            stop.store(true, Ordering::Relaxed);
            let _ = sampler.join();
            return Err(e);
        }
        let ticks = (duration.as_millis() / CHURN_EVERY.as_millis()).max(1) as u32;
        let mut apply_at: Vec<u32> = (1..=APPLY_RERUNS)
            .map(|k| k * ticks / (APPLY_RERUNS + 1))
            .collect();
        apply_at.dedup();
        if apply_with.is_some() {
            planned_applies = apply_at.len();
        }
        for tick in 0..ticks {
            let due = t0 + CHURN_EVERY * tick;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for r in runs.iter_mut() {
                let h = &r.host;
                // Announce on even ticks, withdraw on odd ones.
                let announce = tick % 2 == 0;
                let extra = if announce {
                    vec![h.churn_block_cidr()]
                } else {
                    vec![]
                };
                let c = Bird::calico(lab, h);
                let res = bird::write_if_changed(&c.conf, &bird::render_calico_conf(h, &extra))
                    .and_then(|_| c.start_or_reload());
                match res {
                    Ok(()) => r.configures += 1,
                    Err(e) => r.configure_errors.push(format!("{e:#}")),
                }
                if let (Some((bin, profile)), true) = (apply_with, apply_at.contains(&tick)) {
                    let at = t0.elapsed();
                    match agent::run_apply(lab, h, bin, profile) {
                        Ok(run) => {
                            let changed = run.json["resources"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|x| x["action"] != "ok")
                                .count();
                            let summary = format!(
                                "changed: {}, {}",
                                run.json["changed"],
                                agent::summarize(&run.json)
                            );
                            r.applies.push((at, changed, run.code, summary));
                        }
                        Err(e) => r.applies.push((at, usize::MAX, None, format!("{e:#}"))),
                    }
                }
            }
        }
        std::thread::sleep(CHURN_EVERY);
        stop.store(true, Ordering::Relaxed);
        Ok(sampler.join().expect("sampler thread"))
    });
    let sampled = match sampled {
        Ok(s) => s,
        Err(e) => {
            for m in monitors {
                let _ = m.stop();
            }
            return Err(e);
        }
    };
    // Back to the normal Calico-role config.
    for h in hosts {
        let c = Bird::calico(lab, h);
        bird::write_if_changed(&c.conf, &bird::render_calico_conf(h, &[]))?;
        c.start_or_reload()?;
    }
    for ((r, m), (samples, errors)) in runs.iter_mut().zip(monitors).zip(sampled) {
        r.events = m.stop()?;
        r.samples = samples;
        r.sample_errors = errors;
    }
    Ok(ChurnRun {
        hosts: runs,
        planned_applies,
    })
}

fn agent_and_profile(lab: &Lab) -> Result<(PathBuf, PathBuf)> {
    let bin = agent::find_agent_bin()?;
    let profile = lab.profile.clone().unwrap_or_else(agent::default_profile);
    Ok((bin, profile))
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

pub fn no_table_fight(lab: &Lab, opts: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let (bin, profile) = agent_and_profile(lab)?;
    let hosts = lab.hosts();
    let run = churn(lab, &hosts, opts.churn, Some((&bin, &profile)), &|| Ok(()))?;
    for r in &run.hosts {
        let h = &r.host;
        let t = tally(&r.samples);
        let ticks = (opts.churn.as_millis() / CHURN_EVERY.as_millis()).max(1) as usize;
        o.check(
            r.configures == ticks && r.configure_errors.is_empty(),
            format!(
                "{}: Calico-role BIRD reconfigured {}/{ticks} times over {} s, announcing and withdrawing {} {}",
                h.name,
                r.configures,
                opts.churn.as_secs(),
                h.churn_block_cidr(),
                r.configure_errors.first().cloned().unwrap_or_default()
            ),
        );
        let adds = count(&r.events, false, "main", &h.churn_block_cidr());
        let dels = count(&r.events, true, "main", &h.churn_block_cidr());
        o.check(
            t.churn_transitions >= ticks / 2 && adds >= ticks / 4 && dels >= ticks / 4,
            format!(
                "{}: the churn reached main: {} installs and {} deletions of {} on netlink, {} transitions in the samples",
                h.name, adds, dels, h.churn_block_cidr(), t.churn_transitions
            ),
        );
        let on_time = 1.0 - t.late_gaps as f64 / t.samples.max(1) as f64;
        let expected = (opts.churn.as_millis() / SAMPLE_GAP_TARGET.as_millis()) as usize;
        o.check(
            r.sample_errors.is_empty()
                && t.samples >= expected
                && on_time >= MIN_ON_TIME_SHARE
                && t.max_gap <= MAX_SAMPLE_GAP,
            format!(
                "{}: {} samples of main and table {HOST_TABLE} (want >= {expected}), {} gaps > {} ms, largest gap {} ms (limit {} ms){}",
                h.name,
                t.samples,
                t.late_gaps,
                ms(SAMPLE_GAP_TARGET),
                ms(t.max_gap),
                ms(MAX_SAMPLE_GAP),
                r.sample_errors
                    .first()
                    .map(|e| format!(", {} sample errors, first: {e}", r.sample_errors.len()))
                    .unwrap_or_default()
            ),
        );
        o.check(
            t.host_default_missing == 0 && t.host_default_single_path == 0 && t.host_client_missing == 0,
            format!(
                "{}: table {HOST_TABLE} (host BIRD): default missing in {} samples, single-path in {}, {CLIENT_SUBNET} missing in {}",
                h.name, t.host_default_missing, t.host_default_single_path, t.host_client_missing
            ),
        );
        o.check(
            t.main_pod_block_missing == 0,
            format!(
                "{}: main (Calico role): pod block {} missing in {} of {} samples",
                h.name,
                h.pod_block_cidr(),
                t.main_pod_block_missing,
                t.samples
            ),
        );
        o.check(
            t.main_default_present == 0 && t.main_client_present == 0,
            format!(
                "{}: main never held a host-BIRD route (default in {} samples, {CLIENT_SUBNET} in {})",
                h.name, t.main_default_present, t.main_client_present
            ),
        );
        let host_dels = count(&r.events, true, &HOST_TABLE.to_string(), "default")
            + count(&r.events, true, &HOST_TABLE.to_string(), CLIENT_SUBNET);
        let block_dels = count(&r.events, true, "main", &h.pod_block_cidr());
        o.check(
            host_dels == 0 && block_dels == 0,
            format!(
                "{}: netlink saw {host_dels} deletions of host-BIRD routes in table {HOST_TABLE} and {block_dels} of the pod block in main ({} route events recorded)",
                h.name,
                r.events.len()
            ),
        );
        for (at, changed, code, summary) in &r.applies {
            o.check(
                *code == Some(0) && *changed == 0 && summary.starts_with("changed: false"),
                format!(
                    "{}: `underlay apply --json` at {} ms into the churn: exit {}, {summary}",
                    h.name,
                    ms(*at),
                    code.map(|c| c.to_string()).unwrap_or("-".into())
                ),
            );
        }
        o.check(
            r.applies.len() == run.planned_applies && !r.applies.is_empty(),
            format!(
                "{}: {} apply re-runs during the churn",
                h.name,
                r.applies.len()
            ),
        );
    }
    let st = status::collect(lab);
    o.check(
        st.converged(),
        "lab still converged after the churn".to_string(),
    );
    Ok(o)
}

/// The host BIRD config of the talk's setup: the agent's config with the
/// kernel protocol syncing `main` instead of the host table.
fn shared_main_conf(agent_conf: &str) -> Result<String> {
    let from = format!("kernel table {HOST_TABLE};");
    if agent_conf.matches(&from).count() != 1 {
        bail!(
            "the agent's host BIRD config does not have exactly one `{from}` line; \
             the scenario cannot point its kernel protocol at main"
        );
    }
    Ok(format!(
        "# underlay-lab table-fight-shared-main: the agent's config with the kernel protocol on main\n{}",
        agent_conf.replace(&from, "kernel table 254; # main, shared with the Calico-role BIRD")
    ))
}

pub fn table_fight_shared_main(lab: &Lab, opts: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let (bin, profile) = agent_and_profile(lab)?;
    let h = lab.host(1);
    // Host 2 (when there is one) keeps the split and churns too: the control.
    let hosts: Vec<Host> = lab.hosts().into_iter().take(2).collect();
    let hb = Bird::host(lab, &h);
    let agent_conf =
        std::fs::read_to_string(&hb.conf).with_context(|| format!("read {}", hb.conf.display()))?;
    let fight_conf = shared_main_conf(&agent_conf)?;
    let switch = || -> Result<()> {
        bird::write_if_changed(&hb.conf, &fight_conf)?;
        hb.start_or_reload()
    };
    let result = churn(lab, &hosts, opts.fight, None, &switch);
    // Before the restore: the host BIRD never lost its ToR sessions, so it
    // never withdrew the default itself; someone else deleted it.
    let sessions = status::host_status(lab, &h).sessions;
    // Always restore the split, even when the fight run failed.
    let mut restore_o = Outcome::new();
    let restored = restore(lab, &h, &bin, &profile, &mut restore_o);
    let run = result?;
    let r = &run.hosts[0];
    let t = tally(&r.samples);
    o.info(format!(
        "{}: host BIRD kernel protocol switched to main (kernel table 254) at 0 ms; Calico-role BIRD on main (scan time 2); {} s of churn, {} samples (largest gap {} ms), {} Calico-role reconfigurations, {} route events",
        h.name,
        opts.fight.as_secs(),
        t.samples,
        ms(t.max_gap),
        r.configures,
        r.events.len()
    ));
    let default_dels = count(&r.events, true, "main", "default");
    let default_adds = count(&r.events, false, "main", "default");
    let client_dels = count(&r.events, true, "main", CLIENT_SUBNET);
    let block_dels = count(&r.events, true, "main", &h.pod_block_cidr());
    let block_adds = count(&r.events, false, "main", &h.pod_block_cidr());
    o.check(
        default_dels > 0,
        format!(
            "{}: the host BIRD's default was deleted from main {default_dels} times ({CLIENT_SUBNET} {client_dels} times), installed {default_adds} times: the Calico-role BIRD deletes proto-bird routes it did not export",
            h.name
        ),
    );
    let tor_up = h.tor_peers().iter().all(|p| {
        sessions
            .iter()
            .any(|x| x.peer == p.to_string() && x.state == "Established")
    });
    o.check(
        tor_up,
        format!(
            "{}: the host BIRD's ToR sessions were still Established at the end ({}): it did not withdraw the default itself",
            h.name,
            sessions
                .iter()
                .map(|x| format!("{}={}", x.name, x.state))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    o.check(
        block_dels > 0,
        format!(
            "{}: Calico's pod block {} was deleted from main {block_dels} times, installed again {block_adds} times: the host BIRD deletes it at every scan",
            h.name,
            h.pod_block_cidr()
        ),
    );
    o.check(
        t.main_default_missing > 0,
        format!(
            "{}: main had no default (table {HOST_TABLE} empty meanwhile: the host is off the fabric) in {} of {} samples ({:.0}%)",
            h.name,
            t.main_default_missing,
            t.samples,
            100.0 * t.main_default_missing as f64 / t.samples.max(1) as f64,
        ),
    );
    o.info(format!(
        "{}: Calico's pod block missing from main in {} of {} samples{} (back at the Calico-role BIRD's next scan, <= 2 s later)",
        h.name,
        t.main_pod_block_missing,
        t.samples,
        t.first_pod_block_missing
            .map(|d| format!(", first at {} ms", ms(d)))
            .unwrap_or_default()
    ));
    for c in run.hosts.iter().skip(1) {
        let t = tally(&c.samples);
        let dels = count(&c.events, true, &HOST_TABLE.to_string(), "default")
            + count(&c.events, true, "main", &c.host.pod_block_cidr());
        o.check(
            t.host_default_missing == 0 && t.main_pod_block_missing == 0 && dels == 0,
            format!(
                "{} (split tables, same churn, control): default missing from table {HOST_TABLE} in {} of {} samples, pod block missing from main in {}, {dels} deletions of either on netlink",
                c.host.name, t.host_default_missing, t.samples, t.main_pod_block_missing
            ),
        );
    }
    o.pass &= restore_o.pass;
    o.evidence.extend(restore_o.evidence);
    restored?;
    Ok(o)
}

/// `underlay apply` (rewrites the agent's config, reloads BIRD), `birdc
/// configure`, then waits until the host is converged again with nothing of
/// the host BIRD left in main.
fn restore(lab: &Lab, h: &Host, bin: &Path, profile: &Path, o: &mut Outcome) -> Result<()> {
    let run = agent::run_apply(lab, h, bin, profile)?;
    let bird_update = run.json["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "bgp")
        .map(|r| format!("{} -> {}", r["action"], r["after"]))
        .unwrap_or("no bgp resource in the report".into());
    o.check(
        run.code == Some(0),
        format!(
            "{}: restore: `underlay apply` exit {}, {} ({bird_update})",
            h.name,
            run.code.map(|c| c.to_string()).unwrap_or("-".into()),
            agent::summarize(&run.json)
        ),
    );
    let hb = Bird::host(lab, h);
    hb.start_or_reload()?;
    let start = Instant::now();
    let mut last = String::new();
    let ok = loop {
        let s = status::host_status(lab, h);
        let main = cmd::ip_json(&h.netns, &["route", "show", "table", "main"])?;
        let clean = !has_dst(&main, "default") && !has_dst(&main, CLIENT_SUBNET);
        let block = has_dst(&main, &h.pod_block_cidr());
        if s.converged && clean && block {
            break true;
        }
        last = format!(
            "converged={} nexthops={} main without host routes={clean} pod block in main={block}",
            s.converged, s.host_table_nexthops
        );
        if start.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    o.check(
        ok,
        if ok {
            format!(
                "{}: restored: host BIRD back on table {HOST_TABLE}, converged, main clean of host-BIRD routes after {} ms",
                h.name,
                ms(start.elapsed())
            )
        } else {
            format!("{}: not converged 30 s after the restore: {last}", h.name)
        },
    );
    let conf_now = std::fs::read_to_string(&hb.conf).unwrap_or_default();
    o.check(
        conf_now.contains(&format!("kernel table {HOST_TABLE};"))
            && !conf_now.contains("underlay-lab"),
        format!(
            "{}: {} is the agent's rendering again",
            h.name,
            hb.conf.display()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_monitor_lines() {
        let e = parse_monitor_line(
            "[2026-11-26T16:34:19.485774] Deleted blackhole 10.244.1.0/26 proto bird metric 32 ",
        )
        .unwrap();
        assert_eq!(
            e,
            RouteEvent {
                deleted: true,
                table: "main".into(),
                dst: "10.244.1.0/26".into()
            }
        );
        let e = parse_monitor_line(
            "[2026-11-26T16:34:19.485033] Deleted default table 1001 proto bird src 10.10.0.11 metric 32 ",
        )
        .unwrap();
        assert_eq!(
            (e.deleted, e.table.as_str(), e.dst.as_str()),
            (true, "1001", "default")
        );
        let e = parse_monitor_line(
            "[2026-11-26T16:34:29.485975] default proto bird src 10.10.0.11 metric 32 ",
        )
        .unwrap();
        assert_eq!(
            (e.deleted, e.table.as_str(), e.dst.as_str()),
            (false, "main", "default")
        );
        assert!(parse_monitor_line("\tnexthop via 172.30.2.0 dev eth0 weight 1 ").is_none());
        assert!(parse_monitor_line(
            "[2026-11-26T16:34:19.485033] \tnexthop via 172.30.2.0 dev eth0"
        )
        .is_none());
        assert!(
            parse_monitor_line("[2026-11-26T16:34:19.485033] fe80::/64 dev eth0 proto kernel")
                .is_none()
        );
    }

    #[test]
    fn splits_a_dump_of_all_tables() {
        let all: serde_json::Value = serde_json::from_str(
            r#"[{"dst":"default","table":"1001","nexthops":[{},{}]},{"dst":"10.244.1.0/26","type":"blackhole"},{"dst":"10.10.0.11","table":"local","type":"local"}]"#,
        )
        .unwrap();
        let (host, main) = split_tables(&all);
        assert_eq!(status::default_nexthops(&host), 2);
        assert!(has_dst(&main, "10.244.1.0/26"));
        assert!(!has_dst(&main, "10.10.0.11") && !has_dst(&host, "10.10.0.11"));
    }

    #[test]
    fn tally_counts_missing_routes_and_churn() {
        let ok = Sample {
            host_default_nexthops: 2,
            host_client_route: true,
            main_pod_block: true,
            ..Sample::default()
        };
        let samples = vec![
            Sample {
                at: Duration::from_millis(0),
                ..ok
            },
            Sample {
                at: Duration::from_millis(40),
                main_churn_block: true,
                ..ok
            },
            Sample {
                at: Duration::from_millis(130),
                main_pod_block: false,
                host_default_nexthops: 0,
                ..ok
            },
        ];
        let t = tally(&samples);
        assert_eq!(t.samples, 3);
        assert_eq!(t.max_gap, Duration::from_millis(90));
        assert_eq!(t.churn_transitions, 2);
        assert_eq!(t.main_pod_block_missing, 1);
        assert_eq!(t.host_default_missing, 1);
        assert_eq!(t.first_pod_block_missing, Some(Duration::from_millis(130)));
    }

    #[test]
    fn shared_main_conf_moves_the_kernel_protocol_to_main() {
        let c = shared_main_conf("protocol kernel k {\n  kernel table 1001;\n}\n").unwrap();
        assert!(c.contains("kernel table 254;"));
        assert!(!c.contains("kernel table 1001;"));
        assert!(shared_main_conf("protocol kernel k { }").is_err());
    }
}
