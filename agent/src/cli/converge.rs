//! `plan`, `apply`, `verify` and `status`: the pipeline, then the readiness
//! gates when asked (`--wait`) or as they stand (`status`); `apply
//! --confirm` keeps its change only when the gates pass in time, and every
//! `apply` first rolls back a checkpoint a dead safe apply left.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use underlay::confirm::{self, Checkpoint, RollbackDoc, EXIT_ROLLED_BACK};
use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::gates;
use underlay::observed::Observed;
use underlay::plan::{Plan, Target};
use underlay::report::{self, Context, Document};
use underlay::system::events::{Events, Interest, Wake};
use underlay::system::linux::watch::{KernelEvents, Options};
use underlay::system::{files, process, System, SystemError};

use super::join::JoinFlags;
use super::{init_logs, output, Common, Failed, Safe, WithWait};

pub fn run(
    mode: Mode,
    verb: &'static str,
    c: &Common,
    wait: Option<&WithWait>,
    join: Option<&JoinFlags>,
    safe: Option<&Safe>,
) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    let started = Instant::now();
    let confirm_secs = safe.and_then(|s| s.confirm).filter(|_| mode == Mode::Apply);
    // Validate everything before the first syscall that could change anything.
    let (desired, mut sources) = c.load(verb)?;
    // A safe apply's sources become the last good copy only once confirmed.
    if mode == Mode::Apply && confirm_secs.is_none() {
        sources.store_cache();
    }
    let mut sys = c.open(verb, &desired)?;
    // The join's input (token file, kubeadm) too, unless the node joined.
    let pre = match join.filter(|j| j.join) {
        Some(j) => Some(super::join::before(
            c, verb, &mut sys, &desired, &j.kubeadm, false,
        )?),
        None => None,
    };
    let opts = engine::RunOptions {
        lock_timeout: Duration::from_secs(wait.map_or(60, |w| w.lock_timeout)),
        rollback: !wait.is_some_and(|w| w.no_rollback),
    };
    let mut recovered: Option<RollbackDoc> = None;
    if mode == Mode::Apply {
        // The run lock first: a safe apply holds it through its confirm
        // window, so a checkpoint found under the lock was left by a run
        // that died; it is rolled back before anything else.
        sys.lock(opts.lock_timeout)
            .map_err(|e| Failed::system(c, verb, &e))?;
        recovered = confirm::recover(&mut sys).map_err(|e| Failed::engine(c, verb, &e))?;
    }
    let mut checkpoint: Option<Checkpoint> = None;
    let result = match confirm_secs {
        Some(secs) => {
            // Written before the first change: a crash from here on is rolled back.
            let mut record = |sys: &mut dyn System, t: &Target, p: &Plan, o: &Observed| {
                let cp = confirm::checkpoint(t, p, o, secs)?;
                confirm::save(sys, &cp)?;
                checkpoint = Some(cp);
                Ok(())
            };
            engine::run_hooked(&mut sys, &desired, mode, &opts, Some(&mut record))
        }
        None => engine::run_with(&mut sys, &desired, mode, &opts),
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
    let converge_code = report.exit_code();
    let mut code = converge_code;
    let converge_ms = ms(started);
    let mut outcome = None;
    let mut own_rollback: Option<RollbackDoc> = None;
    if let Some(secs) = confirm_secs {
        let (o, rb) = confirm_window(
            &mut sys,
            &desired,
            &report,
            checkpoint.as_ref(),
            secs,
            safe.and_then(|s| s.probe),
            c.json,
        )
        .map_err(|e| Failed::engine(c, verb, &e))?;
        code = match (&rb, &o) {
            (Some(_), _) => EXIT_ROLLED_BACK,
            (None, Some(o)) if !o.passed => 3,
            _ => code,
        };
        if code == 0 {
            sources.store_cache();
        }
        outcome = o;
        own_rollback = rb;
    } else if let Some(w) = wait.filter(|w| w.wait && code == 0) {
        let o = wait_for_gates(&mut sys, &desired, &report.target, w.wait_timeout, c.json)
            .map_err(|e| Failed::system(c, verb, &e))?;
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
    // A rollback that could not put everything back is an error of its own.
    if own_rollback.as_ref().is_some_and(|r| !r.complete)
        || recovered.as_ref().is_some_and(|r| !r.complete)
    {
        code = 1;
    }
    // Never join on a change that was rolled back.
    let join_code = if own_rollback.is_some() {
        code
    } else {
        converge_code
    };
    let joined =
        pre.map(|p| super::join::after(&mut sys, &desired, p, join_code, outcome.as_ref()));
    if let Some(r) = &joined {
        code = super::join::exit_code(code, r);
    }
    let watch = (mode == Mode::Status)
        .then(|| read_watch_status(c))
        .flatten();
    // A dead safe apply's checkpoint: plan and verify see the host it left,
    // which the next apply rolls back first. Say so.
    let pending = if mode == Mode::Apply {
        None
    } else {
        match confirm::load(&mut sys).ok().flatten() {
            Some(cp) if sys.underlay_running(cp.pid) => Some(format!(
                "a safe apply (pid {}) is in its {} s confirm window",
                cp.pid, cp.confirm_secs
            )),
            Some(cp) => Some(format!(
                "a safe apply (pid {}) left a checkpoint: the next apply rolls its change back first",
                cp.pid
            )),
            None => None,
        }
    };
    let ctx = Context {
        command: verb,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    let bird_command = bird_command(c, &desired, &mut sys);
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code)
            .with_rollback(recovered, own_rollback);
        if let Some(r) = &joined {
            super::join::annotate(&mut doc, r, code);
        }
        doc.durations_ms.total = ms(started);
        doc.msg.push_str(&sources.msg_suffix());
        if let Some(p) = &pending {
            doc.msg.push_str(&format!("; note: {p}"));
        }
        doc.sources = sources.docs();
        doc.watch = watch;
        doc.bird_command = bird_command.map(|b| b.command);
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        if let Some(r) = &recovered {
            print!("{}", report::rollback_human(r));
        }
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        for note in sources.cache_notes() {
            println!("note: {note}");
        }
        if let Some(b) = bird_command.filter(|_| mode == Mode::Apply) {
            if b.running {
                println!("BIRD answers on {}; started with: {}", b.socket, b.command);
            } else {
                println!(
                    "BIRD is not running; inside --netns nothing supervises it, start it with:\n  {}",
                    b.command
                );
            }
        }
        if let Some(p) = &pending {
            println!("note: {p}");
        }
        if let Some(g) = &outcome {
            let waited = mode != Mode::Status;
            print!("{}", report::gates_human(g, waited));
            if waited {
                print!(
                    "{}",
                    report::totals_human(converge_ms, g.elapsed_ms, ms(started))
                );
            }
        }
        if let Some(r) = &own_rollback {
            print!("{}", report::rollback_human(r));
        }
        if let Some(r) = &joined {
            print!("{}", super::join::human(r));
        }
        if mode == Mode::Status {
            match &watch {
                Some(w) => println!("{}", underlay::watch::status::summary(w)),
                None => println!("watch: not running (no status file)"),
            }
        }
    }
    Ok(ExitCode::from(code as u8))
}

/// A safe apply's window: the gates (and the probe) within `secs`, then keep
/// the change (drop the checkpoint) or roll it back. Returns the gates'
/// outcome (when they ran) and the rollback (when there was one). A run
/// whose op or verification failed is rolled back without waiting; a run
/// that changed nothing has nothing to roll back.
fn confirm_window(
    sys: &mut dyn System,
    desired: &Desired,
    report: &engine::Report,
    checkpoint: Option<&Checkpoint>,
    secs: u64,
    probe: Option<std::net::SocketAddr>,
    json: bool,
) -> Result<(Option<gates::Outcome>, Option<RollbackDoc>), engine::EngineError> {
    if report.exit_code() != 0 {
        let Some(cp) = checkpoint else {
            return Ok((None, None));
        };
        let reason = match &report.failure {
            Some(f) => format!("failed at {}: {}", f.resource, f.error),
            None => "verification failed: resources still differ after apply".to_string(),
        };
        return Ok((None, Some(confirm::roll_back(sys, cp, reason)?)));
    }
    let o = wait_for_gates_with(sys, desired, &report.target, Some(secs), probe, json)?;
    let rb = match checkpoint {
        Some(_) if o.passed => {
            confirm::confirm(sys)?;
            None
        }
        Some(cp) => {
            let failing: Vec<String> = o
                .gates
                .iter()
                .filter(|g| !g.passed)
                .map(|g| format!("{}: {}", g.name, g.evidence))
                .collect();
            let reason = format!("not ready within {secs} s: {}", failing.join("; "));
            Some(confirm::roll_back(sys, cp, reason)?)
        }
        None => None,
    };
    Ok((Some(o), rb))
}

/// The watcher's status file, if one ever ran, with `running` filled in.
fn read_watch_status(c: &Common) -> Option<underlay::watch::status::WatchStatus> {
    let path = files::under_root(
        &c.root,
        std::path::Path::new(underlay::watch::status::DEFAULT_STATUS_PATH),
    );
    let text = files::read(&path).ok().flatten()?;
    match serde_json::from_str::<underlay::watch::status::WatchStatus>(&text) {
        Ok(mut w) => {
            w.running = w.stopped_unix.is_none() && process::is_running(w.pid, w.pid_start);
            Some(w)
        }
        Err(e) => {
            tracing::warn!("{}: not a watch status file ({e}); ignored", path.display());
            None
        }
    }
}

/// Netlink notifications end a pause early (see `gates::wait_with`).
struct EventPause(KernelEvents);

impl gates::Pause for EventPause {
    fn pause(&mut self, max: Duration) {
        let deadline = Instant::now() + max;
        match self.0.wait(deadline) {
            Ok(Wake::Changed { .. }) => {
                // BIRD installs routes in bursts: read once the burst is over
                // (10 ms quiet), or 50 ms after it began.
                let cap = (Instant::now() + Duration::from_millis(50)).min(deadline);
                loop {
                    let quiet = (Instant::now() + Duration::from_millis(10)).min(cap);
                    match self.0.wait(quiet) {
                        Ok(Wake::Changed { .. }) if Instant::now() < cap => continue,
                        _ => break,
                    }
                }
            }
            Ok(_) => {}
            // The socket broke: fall back to the poll interval.
            Err(_) => std::thread::sleep(max.min(Duration::from_millis(100))),
        }
    }
}

struct BirdCommand {
    command: String,
    socket: String,
    running: bool,
}

/// Inside --netns the caller runs BIRD: the exact command, with the paths
/// below --root that the agent wrote and that gates read.
fn bird_command(c: &Common, d: &Desired, sys: &mut dyn System) -> Option<BirdCommand> {
    c.netns.as_ref()?;
    let bgp = d.bgp.as_ref()?;
    let config = sys.real_path(&bgp.config_path).display().to_string();
    let socket = sys.real_path(&bgp.control_socket).display().to_string();
    Some(BirdCommand {
        command: format!("bird -c {config} -s {socket}"),
        running: sys.bird_protocols(&bgp.control_socket).is_ok(),
        socket,
    })
}

pub(super) fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn wait_for_gates(
    sys: &mut dyn System,
    desired: &Desired,
    target: &Target,
    wait_timeout: Option<u64>,
    json: bool,
) -> Result<gates::Outcome, SystemError> {
    wait_for_gates_with(sys, desired, target, wait_timeout, None, json)
}

/// [`wait_for_gates`], with a TCP probe as one more gate.
fn wait_for_gates_with(
    sys: &mut dyn System,
    desired: &Desired,
    target: &Target,
    wait_timeout: Option<u64>,
    probe: Option<std::net::SocketAddr>,
    json: bool,
) -> Result<gates::Outcome, SystemError> {
    let mut spec = gates::spec(desired, target, wait_timeout.map(Duration::from_secs));
    spec.probe = probe;
    let tty = std::io::stderr().is_terminal() && !json;
    let mut last_status = String::new();
    // Link state and host-table routes wake the wait the moment they
    // change; opened before the first reading so no change slips between.
    let uplinks: Vec<(u32, String)> = spec
        .uplinks
        .iter()
        .map(|u| (u.index, u.ifname.clone()))
        .collect();
    let interest = Interest::for_gates(&uplinks, Some(spec.host_table));
    let mut pause: Box<dyn gates::Pause> =
        match KernelEvents::open(&interest, Options::default(), None) {
            Ok(ev) => Box::new(EventPause(ev)),
            Err(e) => {
                tracing::debug!("readiness wait polls every 100 ms: {e}");
                Box::new(gates::Sleep)
            }
        };
    let mut readings = 0u32;
    let mut last_extend: Option<Instant> = None;
    let outcome = gates::wait_with(sys, &spec, pause.as_mut(), |gates, elapsed| {
        readings += 1;
        // Under systemd (the gates unit): still making progress, so do not
        // let TimeoutStartSec end the wait; the gates' own timeout bounds it.
        if last_extend.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000)]);
            last_extend = Some(Instant::now());
        }
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
    tracing::debug!(
        "readiness: {readings} readings in {:.1} s",
        outcome.elapsed_ms as f64 / 1e3
    );
    if outcome.passed {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    Ok(outcome)
}
