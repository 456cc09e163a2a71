//! `underlay-lab bench`: whole-process wall time (median after warm-up) and
//! peak RSS of `underlay` against the ways a host is programmed without it,
//! on the same host (service IP, K uplinks with transit /31 and MTU, two
//! rules, sysctls), each in namespaces the bench creates and removes:
//!
//! - `ip-batch`: one `ip -force -batch` file, then `sysctl -p` (the lower
//!   bound for a tool that programs the kernel);
//! - `ip-script`: a shell script of single `ip` and `sysctl` commands (what an
//!   Ansible `command` role runs);
//! - `nmstate`: `nmstatectl apply --kernel` where it is installed (it cannot
//!   express sysctls or the address scope, so it does less).
//!
//! Cases: cold converge (a fresh namespace per run and tool), no-op reconcile
//! (each tool on a namespace it converged itself, optionally loaded with
//! foreign routes or rules before timing), and `underlay plan`.
//!
//! Watch mode (`watch.rs`, skipped with `--no-watch`, alone with
//! `--watch-only`): repair latency of the service IP and a rule, the
//! watcher's CPU under 1k/10k/50k foreign route events per second, and its
//! RSS across an hour-equivalent of reconciles.
//!
//! underlay's `--root` (and every scratch file) lives below `$TMPDIR`: it
//! persists its files with fsync, so the disk below it shows in the cold
//! figures (`TMPDIR=/dev/shm` leaves the kernel work alone).

mod fixtures;
mod measure;
mod report;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use fixtures::{Host, Load};
use measure::{Netns, Step};
use report::{Record, IP_BATCH, UNDERLAY};

/// Every namespace the bench makes starts with this (then the pid).
pub const NS_PREFIX: &str = "ulb-";

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Reduced set (K = 2 and 16, no load and 10k routes, 3 runs after 1
    /// warm-up): under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the records as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Timed runs per case and tool [default: 3 quick, 10 full].
    #[arg(long)]
    runs: Option<usize>,
    /// Untimed warm-up runs first [default: 1 quick, 2 full].
    #[arg(long)]
    warmup: Option<usize>,
    /// Uplink counts [default: 2,16 quick; 2,16,64 full].
    #[arg(long, value_delimiter = ',')]
    uplinks: Vec<usize>,
    /// Skip the load cases (foreign routes and rules).
    #[arg(long)]
    no_load: bool,
    /// nmstatectl to compare with [default: NMSTATECTL, else PATH, else ~/.cargo/bin].
    #[arg(long)]
    nmstatectl: Option<PathBuf>,
    /// Skip the watch-mode cases (repair latency, CPU under churn, RSS).
    #[arg(long, conflicts_with = "watch_only")]
    no_watch: bool,
    /// Only the watch-mode cases.
    #[arg(long)]
    watch_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Underlay,
    IpBatch,
    IpScript,
    Nmstate,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Underlay => UNDERLAY,
            Tool::IpBatch => IP_BATCH,
            Tool::IpScript => "ip-script",
            Tool::Nmstate => "nmstate",
        }
    }
}

pub fn case_cold(k: usize) -> String {
    format!("cold K={k}")
}
pub fn case_noop(k: usize, load: &Load) -> String {
    match load {
        Load::None => format!("noop K={k}"),
        l => format!("noop K={k}, {}", l.label()),
    }
}
fn case_plan(k: usize) -> String {
    format!("plan K={k}")
}

/// Files of one host size, written once.
struct Fixture {
    host: Host,
    dir: PathBuf,
}

impl Fixture {
    fn new(scratch: &Path, k: usize) -> Result<Fixture> {
        let host = Host { k };
        let dir = scratch.join(format!("k{k}"));
        std::fs::create_dir_all(&dir)?;
        for (name, text) in [
            ("setup.batch", host.setup_batch()),
            ("role.toml", host.role_profile()),
            ("host.toml", host.host_facts()),
            ("apply.batch", host.ip_batch()),
            ("sysctl.conf", host.sysctl_conf()),
            ("apply.sh", host.shell_script()),
            ("state.yml", host.nmstate_yaml()),
        ] {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(Fixture { host, dir })
    }
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// A tool's runs in one case: one namespace (and step list) for all runs,
/// or one per run.
type Job<'a> = (Tool, Vec<Vec<Step>>, Vec<&'a Netns>);

struct Bench {
    underlay: PathBuf,
    nmstatectl: std::result::Result<PathBuf, String>,
    scratch: Scratch,
    runs: usize,
    warmup: usize,
    settle: Duration,
    counter: AtomicUsize,
}

/// The scratch directory, removed when dropped.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Bench {
    fn tools(&self) -> Vec<Tool> {
        let mut t = vec![Tool::Underlay, Tool::IpBatch, Tool::IpScript];
        if self.nmstatectl.is_ok() {
            t.push(Tool::Nmstate);
        }
        t
    }

    /// A namespace with the uplinks of `fx`, and the `--root` dir for it.
    fn namespace(&self, fx: &Fixture) -> Result<(Netns, PathBuf)> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ns = Netns::create(format!("{NS_PREFIX}{}-{n}", std::process::id()))?;
        ns.batch(&fx.dir.join("setup.batch"))?;
        let root = self.scratch.0.join("roots").join(&ns.name);
        std::fs::create_dir_all(&root)?;
        Ok((ns, root))
    }

    fn steps(&self, tool: Tool, fx: &Fixture, ns: &Netns, root: &Path, noop: bool) -> Vec<Step> {
        match tool {
            Tool::Underlay => vec![self.underlay_step("apply", fx, ns, root)],
            Tool::IpBatch => {
                vec![
                    // A re-run reports the rules as existing (exit 1) and goes on.
                    Step::new("ip", &["-force", "-batch", &fx.file("apply.batch")])
                        .ok_codes(if noop { &[0, 1] } else { &[0] }),
                    Step::new("sysctl", &["-q", "-p", &fx.file("sysctl.conf")]),
                ]
            }
            Tool::IpScript => vec![Step::new("/bin/sh", &[&fx.file("apply.sh")])],
            Tool::Nmstate => {
                let bin = self.nmstatectl.clone().unwrap_or_default();
                vec![Step::new(
                    bin,
                    &["apply", "--kernel", &fx.file("state.yml")],
                )]
            }
        }
    }

    fn underlay_step(&self, verb: &str, fx: &Fixture, ns: &Netns, root: &Path) -> Step {
        let root = root.to_string_lossy();
        Step::new(
            &self.underlay,
            &[
                verb,
                "--netns",
                &ns.name,
                "--root",
                &root,
                "--profile",
                &fx.file("role.toml"),
                "--host",
                &fx.file("host.toml"),
            ],
        )
    }

    fn time(&self, ns: &Netns, steps: &[Step]) -> Result<measure::Sample> {
        let dir = self.scratch.0.join("out");
        std::fs::create_dir_all(&dir)?;
        measure::run(ns, steps, &dir)
    }

    /// Runs every (tool, namespace) `warmup + runs` times, tools interleaved;
    /// a tool that fails once gets a "failed" row.
    fn measure_all(&self, case: &str, jobs: &[Job]) -> Vec<Record> {
        std::thread::sleep(self.settle);
        let mut ms: Vec<Vec<f64>> = vec![vec![]; jobs.len()];
        let mut rss = vec![0u64; jobs.len()];
        let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
        for r in 0..self.warmup + self.runs {
            for (j, (_, steps, nss)) in jobs.iter().enumerate() {
                if failed[j].is_some() {
                    continue;
                }
                // One namespace for all runs (no-op) or one per run (cold).
                let (steps, ns) = if nss.len() == 1 {
                    (&steps[0], nss[0])
                } else {
                    (&steps[r], nss[r])
                };
                match self.time(ns, steps) {
                    Ok(s) if r >= self.warmup => {
                        ms[j].push(s.wall.as_secs_f64() * 1000.0);
                        rss[j] = rss[j].max(s.maxrss_kb);
                    }
                    Ok(_) => {}
                    Err(e) => failed[j] = Some(format!("failed: {e:#}")),
                }
            }
        }
        jobs.iter()
            .enumerate()
            .map(|(j, (tool, _, _))| match &failed[j] {
                Some(f) => Record::not_measured(case, tool.name(), f.clone()),
                None => Record::measured(case, tool.name(), &ms[j], rss[j]),
            })
            .collect()
    }

    fn note_check(&self, rec: &mut Record, tool: Tool, fx: &Fixture, ns: &Netns) {
        if rec.status != "ok" {
            return;
        }
        let mut notes = vec![];
        if tool == Tool::Nmstate {
            notes.push("addresses only: --kernel sets no MTU, rules, sysctls or scope".to_string());
        }
        match fx.host.check(&ns.name, tool != Tool::Nmstate) {
            Ok(m) if m.is_empty() => {}
            Ok(m) => notes.push(format!("INCOMPLETE, missing: {}", m.join(", "))),
            Err(e) => notes.push(format!("check failed: {e:#}")),
        }
        if !notes.is_empty() {
            rec.note = Some(notes.join("; "));
        }
    }

    fn cold(&self, fx: &Fixture) -> Result<Vec<Record>> {
        let case = case_cold(fx.host.k);
        let total = self.warmup + self.runs;
        let tools = self.tools();
        // Every namespace first: setup (and the kernel's cleanup of the last
        // case's namespaces) stays out of the timed runs.
        let mut owned: Vec<Vec<(Netns, PathBuf)>> = vec![];
        for _ in &tools {
            owned.push(
                (0..total)
                    .map(|_| self.namespace(fx))
                    .collect::<Result<_>>()?,
            );
        }
        let jobs: Vec<Job> = tools
            .iter()
            .zip(&owned)
            .map(|(&t, v)| {
                let steps = v
                    .iter()
                    .map(|(ns, root)| self.steps(t, fx, ns, root, false))
                    .collect();
                (t, steps, v.iter().map(|(ns, _)| ns).collect())
            })
            .collect();
        let mut recs = self.measure_all(&case, &jobs);
        for ((rec, &t), v) in recs.iter_mut().zip(&tools).zip(&owned) {
            self.note_check(rec, t, fx, &v[total - 1].0);
        }
        Ok(recs)
    }

    /// No-op reconcile: each tool converges its own namespace (untimed), the
    /// load goes in, then the tool runs again on what it made. With no load,
    /// `underlay plan` is measured on underlay's namespace too.
    fn noop(&self, fx: &Fixture, load: Load) -> Result<Vec<Record>> {
        let case = case_noop(fx.host.k, &load);
        let tools = self.tools();
        let load_file = self
            .scratch
            .0
            .join(format!("load-{:?}.batch", load).replace(['(', ')'], ""));
        let has_load = load.write_batch(&load_file)?;
        let mut owned = vec![];
        let mut failed = vec![];
        for &t in &tools {
            let (ns, root) = self.namespace(fx)?;
            match self.time(&ns, &self.steps(t, fx, &ns, &root, false)) {
                Ok(_) => {
                    if has_load {
                        ns.batch(&load_file)?;
                    }
                    owned.push((t, ns, root));
                }
                Err(e) => failed.push(Record::not_measured(
                    &case,
                    t.name(),
                    format!("failed: first converge: {e:#}"),
                )),
            }
        }
        let jobs: Vec<Job> = owned
            .iter()
            .map(|(t, ns, root)| (*t, vec![self.steps(*t, fx, ns, root, true)], vec![ns]))
            .collect();
        let mut recs = self.measure_all(&case, &jobs);
        for (rec, (t, ns, _)) in recs.iter_mut().zip(&owned) {
            self.note_check(rec, *t, fx, ns);
        }
        recs.extend(failed);
        if load == Load::None {
            if let Some((_, ns, root)) = owned.iter().find(|(t, _, _)| *t == Tool::Underlay) {
                let plan = vec![vec![self.underlay_step("plan", fx, ns, root)]];
                recs.extend(
                    self.measure_all(&case_plan(fx.host.k), &[(Tool::Underlay, plan, vec![ns])]),
                );
            }
        }
        Ok(recs)
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    meta: serde_json::Value,
    records: &'a [Record],
    targets: &'a [report::Target],
    watch: Option<&'a watch::WatchReport>,
}

fn find_nmstatectl(explicit: Option<PathBuf>) -> std::result::Result<PathBuf, String> {
    let mut tried = vec![];
    if let Some(p) = explicit.or_else(|| std::env::var_os("NMSTATECTL").map(PathBuf::from)) {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("unavailable: {} is not a file", p.display()))
        };
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        tried.push(dir.join("nmstatectl"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        tried.push(Path::new(&home).join(".cargo/bin/nmstatectl"));
    }
    tried.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "unavailable: nmstatectl not found (NMSTATECTL, PATH, ~/.cargo/bin); \
         `cargo install nmstatectl`, then --nmstatectl PATH"
            .to_string()
    })
}

/// Namespaces of bench runs whose process is gone (killed mid-run).
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = crate::cmd::output("ip", &["netns", "del", &name]);
        }
    }
}

pub fn main(args: BenchArgs) -> Result<ExitCode> {
    let (records, targets) = run(&args)?;
    Ok(if records.iter().any(|r| r.status.starts_with("failed")) {
        ExitCode::FAILURE
    } else {
        let _ = targets;
        ExitCode::SUCCESS
    })
}

/// The whole bench; prints the table and targets, writes the JSON.
pub fn run(args: &BenchArgs) -> Result<(Vec<Record>, Vec<report::Target>)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench needs root (it creates network namespaces)");
    }
    remove_stale_namespaces();
    let quick = args.quick;
    let ks = if !args.uplinks.is_empty() {
        args.uplinks.clone()
    } else if quick {
        vec![2, 16]
    } else {
        vec![2, 16, 64]
    };
    let loads: Vec<Load> = if args.no_load {
        vec![Load::None]
    } else if quick {
        vec![Load::None, Load::MainRoutes(10_000)]
    } else {
        vec![
            Load::None,
            Load::MainRoutes(10_000),
            Load::MainRoutes(100_000),
            Load::OtherTableRoutes(10_000),
            Load::Rules(100),
        ]
    };
    let scratch = std::env::temp_dir().join(format!("ulb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let b = Bench {
        underlay: crate::agent::find_agent_bin()?,
        nmstatectl: find_nmstatectl(args.nmstatectl.clone()),
        scratch: Scratch(scratch),
        runs: args.runs.unwrap_or(if quick { 3 } else { 10 }).max(1),
        warmup: args.warmup.unwrap_or(if quick { 1 } else { 2 }),
        settle: Duration::from_millis(if quick { 200 } else { 1000 }),
        counter: AtomicUsize::new(0),
    };
    eprintln!(
        "bench: underlay {}, nmstate {}; {} runs after {} warm-up",
        b.underlay.display(),
        b.nmstatectl
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| e.clone()),
        b.runs,
        b.warmup
    );
    let mut records = vec![];
    let mut watch_report = None;
    if !args.no_watch {
        let name = || {
            let n = b.counter.fetch_add(1, Ordering::Relaxed);
            format!("{NS_PREFIX}{}-{n}", std::process::id())
        };
        watch_report = Some(watch::run(&watch::Params {
            underlay: b.underlay.clone(),
            scratch: b.scratch.0.clone(),
            quick,
            ns_name: &name,
        })?);
    }
    if args.watch_only {
        let w = watch_report.unwrap_or_default();
        let targets = watch::targets(&w);
        print!("{}", watch::render(&w));
        println!();
        print!("{}", report::render_targets(&targets));
        if let Some(path) = &args.json {
            let doc = JsonReport {
                meta: serde_json::json!({ "quick": quick, "watch_only": true }),
                records: &[],
                targets: &targets,
                watch: Some(&w),
            };
            std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
                .with_context(|| format!("write {}", path.display()))?;
        }
        return Ok((vec![], targets));
    }
    // The cost of starting any process inside a namespace, and its RSS.
    {
        let fx = Fixture::new(&b.scratch.0, 0)?;
        let (ns, _) = b.namespace(&fx)?;
        let jobs = [(
            Tool::IpBatch,
            vec![vec![Step::new("/bin/true", &[])]],
            vec![&ns],
        )];
        let mut r = b.measure_all("spawn floor", &jobs);
        r[0].tool = "/bin/true".into();
        records.extend(r);
    }
    let mut fixtures = vec![];
    for &k in &ks {
        fixtures.push(Fixture::new(&b.scratch.0, k)?);
    }
    for fx in &fixtures {
        eprintln!("bench: {}", case_cold(fx.host.k));
        records.extend(b.cold(fx)?);
    }
    for fx in &fixtures {
        eprintln!("bench: {}", case_noop(fx.host.k, &Load::None));
        records.extend(b.noop(fx, Load::None)?);
    }
    let load_k = ks[0];
    let load_fx = &fixtures[0];
    for load in loads.iter().filter(|l| **l != Load::None) {
        eprintln!("bench: {}", case_noop(load_k, load));
        records.extend(b.noop(load_fx, *load)?);
    }
    if let Err(e) = &b.nmstatectl {
        for c in ks.iter().map(|&k| case_cold(k)) {
            records.push(Record::not_measured(&c, "nmstate", e.clone()));
        }
    }
    // Plan is compared with ip-batch's re-run on the same host.
    records.sort_by_key(|r| order(&r.case, &ks, &loads));
    report::fill_ratios(
        &mut records,
        &|case: &str| match case.strip_prefix("plan ") {
            Some(k) => format!("noop {k}"),
            None => case.to_string(),
        },
    );
    let heavy = loads
        .iter()
        .filter(|l| matches!(l, Load::MainRoutes(_)))
        .max_by_key(|l| match l {
            Load::MainRoutes(n) => *n,
            _ => 0,
        })
        .map(|l| case_noop(load_k, l))
        .unwrap_or_else(|| case_noop(load_k, &Load::MainRoutes(100_000)));
    let mut targets = report::targets(&records, &ks, &heavy, &case_noop(load_k, &Load::None));
    print!("{}", report::render_table(&records));
    println!();
    if let Some(w) = &watch_report {
        print!("{}", watch::render(w));
        println!();
        targets.extend(watch::targets(w));
    }
    print!("{}", report::render_targets(&targets));
    if let Some(path) = &args.json {
        let meta = serde_json::json!({
            "quick": quick,
            "runs": b.runs,
            "warmup": b.warmup,
            "uplinks": ks,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "underlay": b.underlay,
            "nmstate": b.nmstatectl.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|e| e.clone()),
            "bench_rss_kb": measure::self_rss_kb(),
            "method": "wall time from fork to wait4 of each child started inside the namespace \
                       (setns, private mount namespace, fresh /sys); peak RSS = wait4 ru_maxrss; \
                       median of the timed runs after warm-up",
        });
        let doc = JsonReport {
            meta,
            records: &records,
            targets: &targets,
            watch: watch_report.as_ref(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok((records, targets))
}

/// Table order: floor, cold by K, noop by K, loads, plan by K.
fn order(case: &str, ks: &[usize], loads: &[Load]) -> usize {
    if case == "spawn floor" {
        return 0;
    }
    for (i, &k) in ks.iter().enumerate() {
        if case == case_cold(k) {
            return 10 + i;
        }
        if case == case_noop(k, &Load::None) {
            return 100 + i;
        }
        if case == case_plan(k) {
            return 300 + i;
        }
    }
    for (i, l) in loads.iter().enumerate() {
        if case == case_noop(ks[0], l) {
            return 200 + i;
        }
    }
    1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_describe_k_uplinks() {
        let h = Host { k: 3 };
        assert_eq!(h.host_facts().matches("[[uplinks]]").count(), 3);
        assert!(h
            .ip_batch()
            .contains("address replace 172.30.0.5/31 dev eth2 scope link"));
        assert!(h.sysctl_conf().contains("net.ipv4.conf.eth2.rp_filter = 2"));
        assert_eq!(h.shell_script().matches("ip rule add").count(), 2);
        assert_eq!(h.nmstate_yaml().matches("prefix-length: 31").count(), 3);
    }

    #[test]
    fn case_order_is_stable() {
        let ks = [2, 16];
        let loads = [Load::None, Load::MainRoutes(10_000)];
        let mut cases = vec![
            case_plan(2),
            case_noop(2, &Load::MainRoutes(10_000)),
            case_noop(16, &Load::None),
            case_cold(16),
            case_cold(2),
        ];
        cases.sort_by_key(|c| order(c, &ks, &loads));
        assert_eq!(
            cases,
            [
                "cold K=2",
                "cold K=16",
                "noop K=16",
                "noop K=2, 10k routes in main",
                "plan K=2"
            ]
        );
    }

    /// The smallest real bench: every row has the fields the issue asks for.
    #[test]
    fn minimal_bench_writes_every_field() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("minimal_bench_writes_every_field needs root (namespaces); run vm-tests/run-tests.sh as root");
        }
        let json = std::env::temp_dir().join(format!("ulb-bench-test-{}.json", std::process::id()));
        let args = BenchArgs {
            quick: true,
            json: Some(json.clone()),
            runs: Some(1),
            warmup: Some(0),
            uplinks: vec![2],
            no_load: true,
            nmstatectl: Some(PathBuf::from("/nonexistent/nmstatectl")),
            no_watch: true,
            watch_only: false,
        };
        run(&args).unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let _ = std::fs::remove_file(&json);
        let recs = doc["records"].as_array().unwrap();
        for case in ["cold K=2", "noop K=2", "plan K=2"] {
            let u = recs
                .iter()
                .find(|r| r["case"] == case && r["tool"] == UNDERLAY)
                .unwrap_or_else(|| panic!("no underlay row for {case}: {doc}"));
            assert_eq!(u["status"], "ok", "{u}");
            for f in [
                "case",
                "tool",
                "median_ms",
                "peak_rss_kb",
                "ratio_to_ip_batch",
            ] {
                assert!(!u[f].is_null(), "{case}: {f} missing: {u}");
            }
        }
        assert!(recs
            .iter()
            .any(|r| r["tool"] == "nmstate"
                && r["status"].as_str().unwrap().starts_with("unavailable")));
        assert!(
            !std::fs::read_dir("/run/netns").unwrap().flatten().any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{NS_PREFIX}{}-", std::process::id())))
        );
    }
}
