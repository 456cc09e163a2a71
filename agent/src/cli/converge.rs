//! `plan`, `apply`, `verify` and `status`: the pipeline, then the readiness
//! gates when asked (`--wait`) or as they stand (`status`); `apply
//! --confirm` keeps its change only when the gates pass in time.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use underlay::confirm::{self, Checkpoint, RollbackDoc, EXIT_ROLLED_BACK};
use underlay::engine::{self, Mode};
use underlay::gates;
use underlay::observed::Observed;
use underlay::plan::{Plan, Target};
use underlay::report::{self, Context, Document};
use underlay::system::{System, SystemError};

use super::{init_logs, output, Common, Failed, Safe, WithWait};

pub fn run(
    mode: Mode,
    verb: &'static str,
    c: &Common,
    wait: Option<&WithWait>,
) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    let started = Instant::now();
    // Validate everything before the first syscall that could change anything.
    let (desired, mut sources) = c.load(verb)?;
    if mode == Mode::Apply {
        sources.store_cache();
    }
    let mut sys = c.open(verb, &desired)?;
    let opts = engine::RunOptions {
        lock_timeout: Duration::from_secs(wait.map_or(60, |w| w.lock_timeout)),
        rollback: !wait.is_some_and(|w| w.no_rollback),
    };
    let report = engine::run_with(&mut sys, &desired, mode, &opts)
        .map_err(|e| Failed::engine(c, verb, &e))?;
    let mut code = report.exit_code();
    let converge_ms = ms(started);
    let mut outcome = None;
    if let Some(w) = wait.filter(|w| w.wait && code == 0) {
        let spec = gates::spec(
            &desired,
            &report.target,
            w.wait_timeout.map(Duration::from_secs),
        );
        let o = wait_for_gates(&mut sys, &spec, c.json).map_err(|e| Failed::system(c, verb, &e))?;
        if !o.passed {
            code = 3;
        }
        outcome = Some(o);
    } else if mode == Mode::Status {
        // Status shows the gates as they stand now, without waiting.
        let spec = gates::spec(&desired, &report.target, Some(Duration::ZERO));
        outcome =
            Some(gates::wait(&mut sys, &spec, |_, _| {}).map_err(|e| Failed::system(c, verb, &e))?);
    }
    let ctx = Context {
        command: verb,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code);
        doc.durations_ms.total = ms(started);
        doc.msg.push_str(&sources.msg_suffix());
        doc.sources = sources.docs();
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        for note in sources.cache_notes() {
            println!("note: {note}");
        }
        if let Some(g) = &outcome {
            print!("{}", report::gates_human(g));
        }
    }
    Ok(ExitCode::from(code as u8))
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// `apply`: a checkpoint left by a safe apply that died is rolled back
/// first; then converge, and with `--confirm` keep the change only when the
/// gates (and the probe) pass in time, else roll it back (exit 4).
pub fn run_apply(w: &WithWait, safe: &Safe) -> Result<ExitCode, Failed> {
    let (c, verb) = (&w.common, "apply");
    init_logs(c);
    output::start_clock();
    let started = Instant::now();
    let (desired, mut sources) = c.load(verb)?;
    if safe.confirm.is_none() {
        sources.store_cache();
    }
    let mut sys = c.open(verb, &desired)?;
    let opts = engine::RunOptions {
        lock_timeout: Duration::from_secs(w.lock_timeout),
        rollback: !w.no_rollback,
    };
    // The run lock first: a safe apply holds it through its confirm window,
    // so a checkpoint found under the lock was left by a run that died.
    sys.lock(opts.lock_timeout)
        .map_err(|e| Failed::system(c, verb, &e))?;
    let recovered = confirm::recover(&mut sys).map_err(|e| Failed::engine(c, verb, &e))?;
    let mut checkpoint: Option<Checkpoint> = None;
    let result = match safe.confirm {
        Some(secs) => {
            // Written before the first change: a crash from here on is rolled back.
            let mut record = |sys: &mut dyn System, t: &Target, p: &Plan, o: &Observed| {
                let cp = confirm::checkpoint(t, p, o, secs)?;
                confirm::save(sys, &cp)?;
                checkpoint = Some(cp);
                Ok(())
            };
            engine::run_hooked(&mut sys, &desired, Mode::Apply, &opts, Some(&mut record))
        }
        None => engine::run_with(&mut sys, &desired, Mode::Apply, &opts),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(cp) = &checkpoint {
                // What is known to be good beats a half-made change.
                let _ = confirm::roll_back(&mut sys, cp, format!("the run failed: {e}"));
            }
            return Err(Failed::engine(c, verb, &e));
        }
    };
    let mut code = report.exit_code();
    let converge_ms = ms(started);
    let mut outcome = None;
    let mut own_rollback: Option<RollbackDoc> = None;
    let rb = |sys: &mut dyn System, cp: &Checkpoint, reason: String| {
        confirm::roll_back(sys, cp, reason).map_err(|e| Failed::engine(c, verb, &e))
    };
    if let Some(secs) = safe.confirm {
        if code == 0 {
            let mut spec = gates::spec(&desired, &report.target, Some(Duration::from_secs(secs)));
            spec.probe = safe.probe;
            let o =
                wait_for_gates(&mut sys, &spec, c.json).map_err(|e| Failed::system(c, verb, &e))?;
            match &checkpoint {
                _ if o.passed => {
                    if checkpoint.is_some() {
                        confirm::confirm(&mut sys).map_err(|e| Failed::engine(c, verb, &e))?;
                    }
                }
                Some(cp) => {
                    let failing: Vec<String> = o
                        .gates
                        .iter()
                        .filter(|g| !g.passed)
                        .map(|g| format!("{}: {}", g.name, g.evidence))
                        .collect();
                    let reason = format!("not ready within {secs} s: {}", failing.join("; "));
                    own_rollback = Some(rb(&mut sys, cp, reason)?);
                    code = EXIT_ROLLED_BACK;
                }
                // Nothing changed, so nothing to roll back: a plain gate failure.
                None => code = 3,
            }
            outcome = Some(o);
        } else if let Some(cp) = &checkpoint {
            let reason = match &report.failure {
                Some(f) => format!("failed at {}: {}", f.resource, f.error),
                None => "verification failed: resources still differ after apply".to_string(),
            };
            own_rollback = Some(rb(&mut sys, cp, reason)?);
            code = EXIT_ROLLED_BACK;
        }
    } else if w.wait && code == 0 {
        let spec = gates::spec(
            &desired,
            &report.target,
            w.wait_timeout.map(Duration::from_secs),
        );
        let o = wait_for_gates(&mut sys, &spec, c.json).map_err(|e| Failed::system(c, verb, &e))?;
        if !o.passed {
            code = 3;
        }
        outcome = Some(o);
    }
    if safe.confirm.is_some() && code == 0 {
        // Only a confirmed change makes its sources the last good copy.
        sources.store_cache();
    }
    // A rollback that could not put everything back is an error of its own.
    if own_rollback.as_ref().is_some_and(|r| !r.complete)
        || recovered.as_ref().is_some_and(|r| !r.complete)
    {
        code = 1;
    }
    let ctx = Context {
        command: verb,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code)
            .with_rollback(recovered, own_rollback);
        doc.durations_ms.total = ms(started);
        doc.msg.push_str(&sources.msg_suffix());
        doc.sources = sources.docs();
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        if let Some(r) = &recovered {
            print!("{}", report::rollback_human(r));
        }
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        for note in sources.cache_notes() {
            println!("note: {note}");
        }
        if let Some(g) = &outcome {
            print!("{}", report::gates_human(g));
        }
        if let Some(r) = &own_rollback {
            print!("{}", report::rollback_human(r));
        }
    }
    Ok(ExitCode::from(code as u8))
}

fn wait_for_gates(
    sys: &mut dyn System,
    spec: &gates::Spec,
    json: bool,
) -> Result<gates::Outcome, SystemError> {
    let tty = std::io::stderr().is_terminal() && !json;
    let mut last_status = String::new();
    let outcome = gates::wait(sys, spec, |gates, elapsed| {
        let passed = gates.iter().filter(|g| g.passed).count();
        let pending = gates.iter().find(|g| !g.passed);
        let status = match pending {
            Some(g) => format!(
                "waiting for {} ({passed}/{} gates passed): {}",
                g.name,
                gates.len(),
                g.evidence
            ),
            None => format!("all {} readiness gates passed", gates.len()),
        };
        if tty {
            eprint!("\r\x1b[K{status} [{:.1} s]", elapsed.as_secs_f64());
        }
        if status != last_status {
            // Without NOTIFY_SOCKET this is a no-op.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    })?;
    if tty {
        eprintln!();
    }
    if outcome.passed {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    Ok(outcome)
}
