//! `underlay-lab fleet bench`: how long Ansible takes to reconcile N lab
//! hosts with the module, against a plain shell loop of `underlay apply`
//! over the same SSH (same keys, same sshd, same management network).
//!
//! Per N (default 4, 16, 32): `fleet up`, then timed
//! - playbook, first run (every host changes) and no-op run, `--forks F`;
//! - shell loop, no-op: `xargs -P F` (the same parallelism) and sequential,
//!   each with a new SSH connection per host, then sequential again on warm
//!   per-host connections (ControlMaster, as Ansible's ssh plugin keeps them);
//! - playbook no-op with `--forks 1`, so that (playbook − sequential loop on
//!   warm connections)/N is the module's per-host overhead over the raw CLI;
//!
//! then `fleet down`, `fleet up` again and the shell loop's first run.
//! Wall times are one run each (a fleet run is seconds long; the spread is
//! reported by running the bench again, not hidden in a median).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::fleet::{self, RunOptions};
use crate::lifecycle;
use crate::plan::Lab;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fleet sizes.
    #[arg(long, value_delimiter = ',', default_value = "4,16,32")]
    hosts: Vec<u8>,
    /// Ansible forks (and the shell loop's parallelism).
    #[arg(long, default_value_t = 16)]
    forks: u32,
    /// Skip the second `fleet up` for the shell loop's first run.
    #[arg(long)]
    no_cold_loop: bool,
    /// Also write the records as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub hosts: u8,
    pub forks: u32,
    pub up_ms: f64,
    pub playbook_first_ms: f64,
    pub playbook_noop_ms: f64,
    pub playbook_noop_forks1_ms: f64,
    pub loop_noop_parallel_ms: f64,
    pub loop_noop_sequential_ms: f64,
    /// Sequential, reusing a warm SSH connection per host (as Ansible does).
    pub loop_noop_sequential_persist_ms: f64,
    pub loop_first_parallel_ms: Option<f64>,
    /// (playbook --forks 1 no-op − sequential loop no-op on warm
    /// connections) / hosts.
    pub module_overhead_per_host_ms: f64,
    /// Mean of the agent's own total over the hosts, no-op run.
    pub agent_noop_mean_ms: f64,
}

fn check(r: &fleet::FleetRun, n: u8, changed: bool, what: &str) -> Result<()> {
    let ok = r.code == Some(0)
        && r.hosts.len() == usize::from(n)
        && r.hosts.iter().all(|h| h.changed == changed && !h.failed);
    if !ok {
        bail!(
            "{what}: expected {n} hosts, all changed={changed} and none failed:\n{}\n{}",
            fleet::render_run(r),
            r.output
        );
    }
    Ok(())
}

fn one(dir: &Path, prefix: &str, n: u8, args: &Args) -> Result<Record> {
    // Its own namespaces, beside any lab that is up with `prefix`.
    let lab = Lab::new(
        &dir.join(format!("fleet-bench-{n}")),
        &format!("{prefix}fb{n}-"),
        n,
    )?;
    let profile = crate::agent::default_profile();
    let up = |lab: &Lab| -> Result<f64> {
        let t = Instant::now();
        fleet::up(
            lab,
            &fleet::UpOptions {
                profile: profile.clone(),
            },
        )?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let opts = |forks| RunOptions {
        forks,
        check: false,
        diff: false,
        safe: None,
        broken: vec![],
        limit: None,
    };
    let result = (|| {
        let up_ms = up(&lab)?;
        let lab = Lab::load(&lab.dir)?;
        let first = fleet::run(&lab, &opts(args.forks))?;
        check(&first, n, true, "playbook first run")?;
        let noop = fleet::run(&lab, &opts(args.forks))?;
        check(&noop, n, false, "playbook no-op run")?;
        let noop1 = fleet::run(&lab, &opts(1))?;
        check(&noop1, n, false, "playbook no-op run, forks 1")?;
        let (lp, ok1) = fleet::shell_loop(&lab, args.forks, false)?;
        let (ls, ok2) = fleet::shell_loop(&lab, 1, false)?;
        // Warm the per-host connections, then time the loop reusing them.
        let (_, ok3) = fleet::shell_loop(&lab, args.forks, true)?;
        let (lsp, ok4) = fleet::shell_loop(&lab, 1, true)?;
        if !(ok1 && ok2 && ok3 && ok4) {
            bail!("the shell loop of `underlay apply` failed on some host");
        }
        let agent_noop_mean_ms =
            noop.hosts.iter().filter_map(|h| h.agent_ms).sum::<f64>() / f64::from(n);
        Ok::<_, anyhow::Error>(Record {
            hosts: n,
            forks: args.forks,
            up_ms,
            playbook_first_ms: first.wall_ms,
            playbook_noop_ms: noop.wall_ms,
            playbook_noop_forks1_ms: noop1.wall_ms,
            loop_noop_parallel_ms: lp,
            loop_noop_sequential_ms: ls,
            loop_noop_sequential_persist_ms: lsp,
            loop_first_parallel_ms: None,
            module_overhead_per_host_ms: (noop1.wall_ms - lsp) / f64::from(n),
            agent_noop_mean_ms,
        })
    })();
    let _ = lifecycle::down(&lab);
    let mut rec = result?;
    if !args.no_cold_loop {
        let cold = (|| {
            up(&lab)?;
            let lab = Lab::load(&lab.dir)?;
            let (ms, ok) = fleet::shell_loop(&lab, args.forks, false)?;
            if !ok {
                bail!("the shell loop's first run failed on some host");
            }
            Ok::<_, anyhow::Error>(ms)
        })();
        let _ = lifecycle::down(&lab);
        rec.loop_first_parallel_ms = Some(cold?);
    }
    Ok(rec)
}

pub fn render(records: &[Record]) -> String {
    let mut s = String::from(
        "hosts forks |  up s | playbook first  no-op  no-op/f1 | loop first  no-op  no-op/seq  seq/warm-ssh | module overhead/host | agent no-op\n",
    );
    for r in records {
        s.push_str(&format!(
            "{:>5} {:>5} | {:>5.1} | {:>11.0} ms {:>6.0} {:>9.0} | {:>10} {:>6.0} {:>10.0} {:>13.0} | {:>17.0} ms | {:>8.1} ms\n",
            r.hosts,
            r.forks,
            r.up_ms / 1e3,
            r.playbook_first_ms,
            r.playbook_noop_ms,
            r.playbook_noop_forks1_ms,
            r.loop_first_parallel_ms
                .map(|m| format!("{m:.0}"))
                .unwrap_or("-".into()),
            r.loop_noop_parallel_ms,
            r.loop_noop_sequential_ms,
            r.loop_noop_sequential_persist_ms,
            r.module_overhead_per_host_ms,
            r.agent_noop_mean_ms,
        ));
    }
    s
}

/// The per-host cost without ansible-playbook's fixed start-up: the slope
/// of the sequential wall times between the smallest and largest fleet.
pub fn slope_line(records: &[Record]) -> Option<String> {
    let (a, b) = (records.first()?, records.last()?);
    if b.hosts <= a.hosts {
        return None;
    }
    let dn = f64::from(b.hosts - a.hosts);
    let pb = (b.playbook_noop_forks1_ms - a.playbook_noop_forks1_ms) / dn;
    let lp = (b.loop_noop_sequential_persist_ms - a.loop_noop_sequential_persist_ms) / dn;
    Some(format!(
        "per host, sequential no-op, slope {}..{} hosts: playbook (forks 1) {pb:.0} ms, shell loop on warm SSH {lp:.0} ms, module overhead {:.0} ms; fixed start-up of ansible-playbook ≈ {:.0} ms",
        a.hosts,
        b.hosts,
        pb - lp,
        a.playbook_noop_forks1_ms - pb * f64::from(a.hosts)
    ))
}

pub fn main(dir: &Path, prefix: &str, args: &Args) -> Result<ExitCode> {
    let mut records = vec![];
    for &n in &args.hosts {
        eprintln!("fleet bench: {n} hosts ...");
        let rec = one(dir, prefix, n, args)?;
        eprint!("{}", render(std::slice::from_ref(&rec)));
        records.push(rec);
    }
    print!("{}", render(&records));
    if let Some(line) = slope_line(&records) {
        println!("{line}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&records)? + "\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
