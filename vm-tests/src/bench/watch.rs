//! Watch-mode figures, in namespaces the bench creates: repair latency of
//! the service IP and of a rule (median, p99), the watcher's CPU under
//! foreign route churn, and its RSS across an hour-equivalent of work.
//!
//! - Latency is measured outside the watcher: `ip -ts monitor address rule`
//!   in the namespace timestamps the deletion and the re-add as the kernel
//!   announces them; the difference is event to repaired in the kernel. The
//!   watcher's own figure (first event read to verified) is reported beside.
//!   The rate limit is raised (`--max-rate 100`) so back-to-back samples
//!   measure the repair path, not the token bucket.
//! - CPU: paced `ip -batch -` writers add and delete /32s in `main` and in
//!   table 100 (half each) at the asked rate; the watcher's CPU is
//!   /proc/PID/schedstat (ns on CPU) over the window, with the BPF route
//!   filter (the default) and without it (user space drops every route).
//! - RSS: an hour at the default rate limit (5 reconciles/s) is 18 000
//!   reconciles; host-table route changes (relevant, each a no-op reconcile)
//!   drive them back to back while foreign churn crosses the user-space
//!   filter. VmRSS is sampled every second.
//!
//! The profile is the shipped role (with [bgp], so routes are subscribed as
//! in production) on the bench's two-uplink host.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::fixtures::{Host, SERVICE_IP};
use super::measure::Netns;
use super::report::{median, round, Target};

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRecord {
    pub case: String,
    pub samples: usize,
    /// Kernel event (deletion) to kernel event (re-add), from `ip -ts monitor`.
    pub median_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The watcher's own: first notification read to verification done.
    pub watcher_median_ms: Option<f64>,
    pub watcher_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuRecord {
    pub filter: &'static str,
    pub asked_per_s: u32,
    pub achieved_per_s: f64,
    pub window_s: f64,
    pub cpu_ms: f64,
    pub cpu_percent: f64,
    /// Notifications that reached the process during the window.
    pub received: u64,
    pub reconciles: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RssRecord {
    pub reconciles: u64,
    pub foreign_events: u64,
    pub seconds: f64,
    pub rss_start_kb: u64,
    /// After the first tenth (allocator warm-up).
    pub rss_warm_kb: u64,
    pub rss_end_kb: u64,
    pub rss_max_kb: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct WatchReport {
    pub latency: Vec<LatencyRecord>,
    pub cpu: Vec<CpuRecord>,
    pub rss: Option<RssRecord>,
    pub notes: Vec<String>,
}

fn p(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    Some(round(v[i], 2))
}

/// A running `underlay watch`, stopped with SIGTERM when dropped.
struct Watcher {
    child: Child,
    status: PathBuf,
}

impl Watcher {
    fn start(
        underlay: &Path,
        ns: &Netns,
        root: &Path,
        files: &Path,
        extra: &[&str],
    ) -> Result<Watcher> {
        let log = std::fs::File::create(root.join("watch.log"))?;
        let child = Command::new(underlay)
            .args(["watch", "--netns", &ns.name, "--root"])
            .arg(root)
            .arg("--profile")
            .arg(files.join("role.toml"))
            .arg("--host")
            .arg(files.join("host.toml"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start underlay watch")?;
        let w = Watcher {
            child,
            status: root.join("run/underlay/watch.json"),
        };
        let start = Instant::now();
        while w.status().map(|s| s["converged"] != true).unwrap_or(true) {
            if start.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(root.join("watch.log")).unwrap_or_default();
                bail!("underlay watch did not converge in 30 s: {log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Its own follow-up check passes.
        std::thread::sleep(Duration::from_millis(300));
        Ok(w)
    }

    fn status(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            &self.status,
        )?)?)
    }

    fn counter(&self, path: &[&str]) -> u64 {
        let mut v = self.status().unwrap_or_default();
        for k in path {
            v = v[*k].clone();
        }
        v.as_u64().unwrap_or(0)
    }

    /// Time on CPU, all threads (/proc/PID/schedstat, nanoseconds).
    fn cpu_ns(&self) -> u64 {
        let mut total = 0;
        let dir = format!("/proc/{}/task", self.child.id());
        for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
            }
        }
        total
    }

    fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The watcher's latency of its most recent repair, if it is `id`.
    fn last_repair_ms(&self, id: &str) -> Option<f64> {
        let s = self.status().ok()?;
        let r = s["repairs"].as_array()?.last()?.clone();
        (r["id"] == id).then(|| r["latency_ms"].as_f64()).flatten()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// `[2026-12-01T10:15:37.546026] text` → (seconds of the day, text).
fn parse_ts(line: &str) -> Option<(f64, String)> {
    let rest = line.strip_prefix('[')?;
    let (ts, text) = rest.split_once("] ")?;
    let time = ts.split('T').nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3600.0 + m * 60.0 + s, text.to_string()))
}

/// `ip -ts monitor` in the namespace; lines arrive on the channel.
struct Monitor {
    child: Child,
    rx: mpsc::Receiver<(f64, String)>,
}

impl Monitor {
    fn start(ns: &Netns) -> Result<Monitor> {
        let mut child = Command::new("ip")
            .args(["-n", &ns.name, "-ts", "monitor", "address", "rule"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("ip monitor")?;
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(x) = parse_ts(&line) {
                    if tx.send(x).is_err() {
                        break;
                    }
                }
            }
        });
        // Let it subscribe before the first sample.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Monitor { child, rx })
    }

    /// Waits for a line satisfying `pred`; its timestamp.
    fn expect(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Result<f64> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, text)) if pred(&text) => return Ok(t),
                Ok(_) => {}
                Err(_) => bail!("no matching `ip monitor` line within {timeout:?}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One kind of drift to time: the `ip` arguments that cause it, the
/// monitor lines of the deletion and of the repair, and the resource id.
struct Drift<'a> {
    case: &'a str,
    del: &'a [&'a str],
    deleted: String,
    added: String,
    id: String,
}

fn latency(ns: &Netns, w: &Watcher, mon: &Monitor, d: &Drift, n: usize) -> Result<LatencyRecord> {
    let (case, id) = (d.case, d.id.as_str());
    let (mut kernel, mut own) = (vec![], vec![]);
    for _ in 0..n {
        while mon.rx.try_recv().is_ok() {}
        crate::cmd::ip(&ns.name, d.del)?;
        let t0 = mon.expect(|l| l.starts_with(&d.deleted), Duration::from_secs(5))?;
        let t1 = mon.expect(|l| l.starts_with(&d.added), Duration::from_secs(5))?;
        let mut d = t1 - t0;
        if d < 0.0 {
            d += 86_400.0; // midnight
        }
        kernel.push(d * 1e3);
        // The status file is written right after verification.
        std::thread::sleep(Duration::from_millis(30));
        if let Some(ms) = w.last_repair_ms(id) {
            own.push(ms);
        }
    }
    Ok(LatencyRecord {
        case: case.into(),
        samples: kernel.len(),
        median_ms: median(&kernel).map(|m| round(m, 2)),
        p99_ms: p(&kernel, 0.99),
        max_ms: p(&kernel, 1.0),
        watcher_median_ms: median(&own).map(|m| round(m, 2)),
        watcher_p99_ms: p(&own, 0.99),
    })
}

/// A paced `ip -batch -`: `lines` at `rate` per second; returns how many
/// were executed and when the process finished.
fn churn(
    ns: &str,
    lines: Vec<String>,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Duration)> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let Ok(mut child) = Command::new("ip")
            .args(["-n", &ns, "-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return (0, Duration::ZERO);
        };
        let mut stdin = child.stdin.take().unwrap();
        let start = Instant::now();
        let per_slice = (rate / 100).max(1) as usize;
        let mut sent = 0;
        for chunk in lines.chunks(per_slice) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let text: String = chunk.iter().map(|l| format!("{l}\n")).collect();
            if stdin.write_all(text.as_bytes()).is_err() {
                break;
            }
            sent += chunk.len();
            let due = Duration::from_secs_f64(sent as f64 / f64::from(rate));
            if let Some(d) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(d);
            }
        }
        drop(stdin);
        let _ = child.wait();
        (sent, start.elapsed())
    })
}

/// Add/delete pairs of /32s via eth0 in `table` (`None`: main).
fn route_lines(base: &str, table: Option<u32>, count: usize) -> Vec<String> {
    let t = table.map(|t| format!(" table {t}")).unwrap_or_default();
    (0..count)
        .map(|i| {
            let k = (i / 2) % 60_000;
            let op = if i % 2 == 0 { "add" } else { "del" };
            format!(
                "route {op} {base}.{}.{}/32 dev eth0{t}",
                k / 250,
                k % 250 + 1
            )
        })
        .collect()
}

/// Foreign churn at `rate` (half in main, half in table 100) for `secs`.
fn foreign(
    ns: &str,
    rate: u32,
    secs: f64,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, Duration)>> {
    let each = (f64::from(rate) / 2.0 * secs) as usize;
    vec![
        churn(
            ns,
            route_lines("198.18", None, each),
            rate / 2,
            stop.clone(),
        ),
        churn(
            ns,
            route_lines("198.19", Some(100), each),
            rate / 2,
            stop.clone(),
        ),
    ]
}

fn cpu_case(w: &Watcher, ns: &Netns, filter: &'static str, rate: u32, secs: f64) -> CpuRecord {
    let (c0, r0, n0) = (
        w.cpu_ns(),
        w.counter(&["events", "received"]),
        w.counter(&["counters", "reconciles"]),
    );
    let t0 = Instant::now();
    let done: Vec<(usize, Duration)> = foreign(&ns.name, rate, secs, &Arc::default())
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let window = t0.elapsed().as_secs_f64();
    let cpu_ms = (w.cpu_ns() - c0) as f64 / 1e6;
    let sent: usize = done.iter().map(|d| d.0).sum();
    CpuRecord {
        filter,
        asked_per_s: rate,
        achieved_per_s: round(sent as f64 / window, 0),
        window_s: round(window, 2),
        cpu_ms: round(cpu_ms, 2),
        cpu_percent: round(cpu_ms / (window * 1e3) * 100.0, 3),
        received: w.counter(&["events", "received"]) - r0,
        reconciles: w.counter(&["counters", "reconciles"]) - n0,
    }
}

pub struct Params<'a> {
    pub underlay: PathBuf,
    pub scratch: PathBuf,
    pub quick: bool,
    /// A fresh namespace name (with the bench's prefix and pid).
    pub ns_name: &'a dyn Fn() -> String,
}

pub fn run(pr: &Params) -> Result<WatchReport> {
    let mut report = WatchReport::default();
    let files = pr.scratch.join("watch");
    std::fs::create_dir_all(&files)?;
    let host = Host { k: 2 };
    std::fs::write(files.join("setup.batch"), host.setup_batch())?;
    std::fs::copy(crate::agent::default_profile(), files.join("role.toml"))?;
    std::fs::write(files.join("host.toml"), host.host_facts())?;
    let fresh = |tag: &str| -> Result<(Netns, PathBuf)> {
        let ns = Netns::create((pr.ns_name)())?;
        ns.batch(&files.join("setup.batch"))?;
        let root = pr.scratch.join("roots").join(format!("{}-{tag}", ns.name));
        std::fs::create_dir_all(&root)?;
        Ok((ns, root))
    };

    // Repair latency.
    {
        let (ns, root) = fresh("lat")?;
        let w = Watcher::start(&pr.underlay, &ns, &root, &files, &["--max-rate", "100"])?;
        let mon = Monitor::start(&ns)?;
        let n = if pr.quick { 40 } else { 200 };
        eprintln!("bench: watch repair latency, {n} samples each");
        let drifts = [
            Drift {
                case: "service IP deleted",
                del: &["addr", "del", SERVICE_IP, "dev", "lo"],
                deleted: format!("Deleted 1: lo    inet {SERVICE_IP}"),
                added: format!("1: lo    inet {SERVICE_IP}"),
                id: format!("{SERVICE_IP} dev lo"),
            },
            Drift {
                case: "rule deleted",
                del: &["rule", "del", "pref", "30001"],
                deleted: "Deleted 30001:".into(),
                added: "30001:".into(),
                id: "inet pref 30001 lookup 1001".into(),
            },
        ];
        for d in &drifts {
            report.latency.push(latency(&ns, &w, &mon, d, n)?);
        }
    }

    // CPU under foreign churn, with and without the kernel filter.
    let rates: &[u32] = if pr.quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 50_000]
    };
    let secs = if pr.quick { 5.0 } else { 10.0 };
    for (filter, extra) in [
        ("kernel (BPF)", vec!["--resync-interval", "3600"]),
        (
            "user space",
            vec!["--resync-interval", "3600", "--test-no-kernel-filter"],
        ),
    ] {
        let (ns, root) = fresh("cpu")?;
        let w = Watcher::start(&pr.underlay, &ns, &root, &files, &extra)?;
        for &rate in rates {
            eprintln!(
                "bench: watch CPU, {filter} filter, {rate} foreign route events/s for {secs} s"
            );
            report.cpu.push(cpu_case(&w, &ns, filter, rate, secs));
        }
    }

    // RSS across an hour-equivalent of reconciles.
    {
        let target: u64 = if pr.quick { 1_800 } else { 18_000 };
        let cap = Duration::from_secs(if pr.quick { 60 } else { 300 });
        eprintln!(
            "bench: watch RSS across {target} reconciles (an hour at 5/s) with foreign churn"
        );
        let (ns, root) = fresh("rss")?;
        let w = Watcher::start(
            &pr.underlay,
            &ns,
            &root,
            &files,
            &[
                "--resync-interval",
                "3600",
                "--max-rate",
                "10000",
                "--debounce-ms",
                "1",
                "--test-no-kernel-filter",
            ],
        )?;
        let n0 = w.counter(&["counters", "reconciles"]);
        let r0 = w.counter(&["events", "received"]);
        let rss_start = w.rss_kb();
        let t0 = Instant::now();
        // Relevant: host-table routes, paced so each pair is a reconcile.
        let secs_max = cap.as_secs_f64();
        let stop = Arc::new(AtomicBool::new(false));
        let host_table = churn(
            &ns.name,
            route_lines("198.20", Some(1001), (secs_max * 600.0) as usize),
            600,
            stop.clone(),
        );
        let foreign_h = foreign(&ns.name, 10_000, secs_max, &stop);
        let (mut samples, mut warm) = (vec![], None);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let done = w.counter(&["counters", "reconciles"]) - n0;
            samples.push(w.rss_kb());
            if warm.is_none() && done >= target / 10 {
                warm = samples.last().copied();
            }
            if done >= target || t0.elapsed() > cap {
                break;
            }
        }
        let reconciles = w.counter(&["counters", "reconciles"]) - n0;
        let received = w.counter(&["events", "received"]) - r0;
        let rss_end = w.rss_kb();
        let seconds = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        drop(w);
        let _ = host_table.join();
        for h in foreign_h {
            let _ = h.join();
        }
        if reconciles < target {
            report.notes.push(format!(
                "RSS case: only {reconciles} of {target} reconciles within {} s",
                cap.as_secs()
            ));
        }
        report.rss = Some(RssRecord {
            reconciles,
            foreign_events: received,
            seconds: round(seconds, 1),
            rss_start_kb: rss_start,
            rss_warm_kb: warm.unwrap_or(rss_start),
            rss_end_kb: rss_end,
            rss_max_kb: samples.iter().copied().max().unwrap_or(rss_end),
        });
    }
    Ok(report)
}

pub fn render(r: &WatchReport) -> String {
    let f = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or("-".into());
    let mut s = String::from("watch: repair latency (kernel event -> re-added, ip -ts monitor; watcher's own in brackets)\n");
    for l in &r.latency {
        s += &format!(
            "  {:<20} n={:<4} median {:>7} ms  p99 {:>7} ms  max {:>7} ms   [watcher median {} ms, p99 {} ms]\n",
            l.case,
            l.samples,
            f(l.median_ms),
            f(l.p99_ms),
            f(l.max_ms),
            f(l.watcher_median_ms),
            f(l.watcher_p99_ms)
        );
    }
    s += "watch: CPU under foreign route churn (main + table 100)\n";
    for c in &r.cpu {
        s += &format!(
            "  {:<13} asked {:>6}/s achieved {:>7.0}/s  {:>6.2} ms CPU in {:>5.1} s = {:>6.3} % of one core; {} reached the process, {} reconciles\n",
            c.filter, c.asked_per_s, c.achieved_per_s, c.cpu_ms, c.window_s, c.cpu_percent, c.received, c.reconciles
        );
    }
    if let Some(m) = &r.rss {
        s += &format!(
            "watch: RSS over {} reconciles and {} foreign notifications in {:.0} s: start {} KB, after warm-up {} KB, end {} KB, max {} KB\n",
            m.reconciles, m.foreign_events, m.seconds, m.rss_start_kb, m.rss_warm_kb, m.rss_end_kb, m.rss_max_kb
        );
    }
    for n in &r.notes {
        s += &format!("  note: {n}\n");
    }
    s
}

pub fn targets(r: &WatchReport) -> Vec<Target> {
    let mut t = vec![];
    for l in &r.latency {
        let name = format!("watch repair ({}): p99 <= 50 ms after the event", l.case);
        t.push(match l.p99_ms {
            Some(p) => Target {
                target: name,
                met: Some(p <= 50.0),
                evidence: format!(
                    "median {} ms, p99 {p:.2} ms over {} samples",
                    l.median_ms.unwrap_or_default(),
                    l.samples
                ),
            },
            None => Target {
                target: name,
                met: None,
                evidence: "not measured".into(),
            },
        });
    }
    if let Some(c) = r
        .cpu
        .iter()
        .find(|c| c.asked_per_s == 10_000 && c.filter.starts_with("kernel"))
    {
        t.push(Target {
            target: "watch CPU <= 2 % of one core at 10k foreign route events/s".into(),
            met: Some(c.cpu_percent <= 2.0 && c.reconciles == 0),
            evidence: format!(
                "{:.3} % at {:.0} events/s achieved, {} reconciles",
                c.cpu_percent, c.achieved_per_s, c.reconciles
            ),
        });
    }
    if let Some(m) = &r.rss {
        t.push(Target {
            target: "watch RSS flat across an hour-equivalent (<= 1 MB growth after warm-up)"
                .into(),
            met: Some(m.rss_end_kb <= m.rss_warm_kb + 1024 && m.reconciles >= 1),
            evidence: format!(
                "{} KB after warm-up, {} KB after {} reconciles",
                m.rss_warm_kb, m.rss_end_kb, m.reconciles
            ),
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_timestamps_parse() {
        let (t, text) = parse_ts("[2026-12-01T10:15:37.546026] Deleted 30001:\tfrom all").unwrap();
        assert!((t - (10.0 * 3600.0 + 15.0 * 60.0 + 37.546026)).abs() < 1e-6);
        assert!(text.starts_with("Deleted 30001:"));
        assert!(parse_ts("       valid_lft forever").is_none());
    }

    #[test]
    fn percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p(&xs, 0.99), Some(99.0));
        assert_eq!(p(&xs, 1.0), Some(100.0));
        assert_eq!(p(&[], 0.5), None);
    }
}
