//! `plan`, `apply`, `verify` and `status`: the pipeline, then the readiness
//! gates when asked (`--wait`) or as they stand (`status`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::gates;
use underlay::plan::Target;
use underlay::report::{self, Context, Document};
use underlay::system::events::{Events, Interest, Wake};
use underlay::system::linux::watch::{KernelEvents, Options};
use underlay::system::{files, process, System, SystemError};

use super::join::JoinFlags;
use super::{init_logs, output, Common, Failed, WithWait};

pub fn run(
    mode: Mode,
    verb: &'static str,
    c: &Common,
    wait: Option<&WithWait>,
    join: Option<&JoinFlags>,
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
    let report = engine::run_with(&mut sys, &desired, mode, &opts)
        .map_err(|e| Failed::engine(c, verb, &e))?;
    let converge_code = report.exit_code();
    let mut code = converge_code;
    let converge_ms = ms(started);
    let mut outcome = None;
    if let Some(w) = wait.filter(|w| w.wait && code == 0) {
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
    let joined =
        pre.map(|p| super::join::after(&mut sys, &desired, p, converge_code, outcome.as_ref()));
    if let Some(r) = &joined {
        code = super::join::exit_code(code, r);
    }
    let watch = (mode == Mode::Status)
        .then(|| read_watch_status(c))
        .flatten();
    let ctx = Context {
        command: verb,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    let bird_command = bird_command(c, &desired, &mut sys);
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code);
        if let Some(r) = &joined {
            super::join::annotate(&mut doc, r, code);
        }
        doc.durations_ms.total = ms(started);
        doc.msg.push_str(&sources.msg_suffix());
        doc.sources = sources.docs();
        doc.watch = watch;
        doc.bird_command = bird_command.map(|b| b.command);
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
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
    let spec = gates::spec(desired, target, wait_timeout.map(Duration::from_secs));
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
