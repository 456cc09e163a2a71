//! `underlay watch`: the steady state after boot. Loads and validates the
//! inputs (a bad profile at start is exit 1, as for every verb), enters
//! --netns, subscribes to the kernel's notifications, then lets
//! [`underlay::watch::Watcher`] reconcile on every trigger. This module is
//! the loop's voice: log lines for journald, JSON lines with `--json`, the
//! status file `underlay status` reads, and sd_notify.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use underlay::desired::Desired;
use underlay::engine;
use underlay::report::{Context, Document};
use underlay::system::events::Events;
use underlay::system::files::{self, Durability};
use underlay::system::linux::watch::{KernelEvents, Options, StopSignals, DEFAULT_RCVBUF};
use underlay::watch::status::{WatchStatus, DEFAULT_STATUS_PATH};
use underlay::watch::{
    self, Config, InputError, Inputs, Notice, Observer, Purpose, Reconciled, Watcher,
};

use super::{init_logs_from, output, Common, Failed};

const VERB: &str = "watch";

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    common: Common,
    /// Full reconcile this often even without a trigger: catches lost events, and sysctls the
    /// kernel sends no notification for (arp_ignore, fib_multipath_hash_policy...)
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    resync_interval: f64,
    /// Check the profile, host facts, password and template files, and the generated files
    /// (rt_tables.d, sysctl.d, BIRD's config) for changes this often
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    poll_interval: f64,
    /// A burst of events is over after this many quiet milliseconds (one reconcile per burst,
    /// and never more than 100 ms after its first event)
    #[arg(long, value_name = "MS", default_value_t = 10)]
    debounce_ms: u64,
    /// At most this many reconciles per second when something keeps changing our objects
    /// (up to 4 seconds' worth may run back to back)
    #[arg(long, value_name = "N", default_value_t = 5.0)]
    max_rate: f64,
    /// Status file with the counters and last repairs (below --root); `underlay status` reads
    /// the default one
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATUS_PATH)]
    status_file: PathBuf,
    /// Tests only: ask for this netlink receive buffer (bytes) instead of 8 MiB, to provoke
    /// overruns (ENOBUFS)
    #[arg(long, value_name = "BYTES", hide = true)]
    test_rcvbuf: Option<usize>,
    /// Benchmarks only: no BPF route filter in the kernel; user space sees and drops every
    /// foreign route notification (to measure what the kernel filter saves)
    #[arg(long, hide = true)]
    test_no_kernel_filter: bool,
}

fn secs(what: &str, v: f64, c: &Common) -> Result<Duration, Failed> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(Failed::new(
            c,
            VERB,
            underlay::error::ErrorKind::Input,
            format!("--{what} {v}: expected a number of seconds above 0, such as 120 or 0.5"),
        ))
    }
}

pub fn run(a: &WatchArgs) -> Result<ExitCode, Failed> {
    let c = &a.common;
    init_logs_from(c, "info");
    output::start_clock();
    // Before any thread exists: every thread inherits the blocked mask, so
    // SIGTERM waits for the current apply instead of killing it.
    let signals = StopSignals::block().map_err(|e| Failed::system(c, VERB, &e))?;
    let resync = secs("resync-interval", a.resync_interval, c)?;
    let poll = secs("poll-interval", a.poll_interval, c)?;
    if !(a.max_rate.is_finite() && a.max_rate > 0.0) {
        return Err(Failed::new(
            c,
            VERB,
            underlay::error::ErrorKind::Input,
            format!(
                "--max-rate {}: expected reconciles per second above 0, such as 5",
                a.max_rate
            ),
        ));
    }
    let mut inputs = FileInputs::new(c);
    let (desired, _) = c.load(VERB)?;
    inputs.follow(&desired);
    let mut sys = c.open(VERB, &desired)?;
    let cfg = Config {
        debounce: Duration::from_millis(a.debounce_ms),
        max_rate: a.max_rate,
        burst: (a.max_rate * 4.0).ceil().max(1.0) as u32,
        resync,
        poll,
        watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
        ..Config::default()
    };
    let options = Options {
        rcvbuf: a.test_rcvbuf.unwrap_or(DEFAULT_RCVBUF),
        kernel_filter: !a.test_no_kernel_filter,
    };
    let mut ev = KernelEvents::open(&watch::interest(&desired, None), options, Some(signals))
        .map_err(|e| Failed::system(c, VERB, &e))?;
    tracing::info!(
        "watching (resync every {:.0} s, inputs checked every {:.1} s, receive buffer {} KiB)",
        resync.as_secs_f64(),
        poll.as_secs_f64(),
        ev.stats().rcvbuf / 1024
    );
    let mut obs = CliObserver {
        json: c.json,
        netns: c.netns.clone(),
        status_path: files::under_root(&c.root, &a.status_file),
        ready: false,
        status_error: false,
    };
    let mut watcher = Watcher::new(cfg, desired, ev.now());
    watcher
        .run(&mut sys, &mut ev, &mut inputs, &mut obs)
        .map_err(|e| Failed::system(c, VERB, &e))?;
    Ok(ExitCode::SUCCESS)
}

/// The profile and host facts as `Common::load` reads them, plus the files
/// the engine reads for BIRD (template override, password files), checked
/// by content hash: a rename into place or a symlink swap counts too.
struct FileInputs<'a> {
    common: &'a Common,
    engine_files: Vec<PathBuf>,
    seen: Vec<Option<[u8; 32]>>,
}

impl<'a> FileInputs<'a> {
    fn new(common: &'a Common) -> FileInputs<'a> {
        let mut f = FileInputs {
            common,
            engine_files: Vec::new(),
            seen: Vec::new(),
        };
        // Before the load: an edit during it shows at the first poll.
        f.seen = f.hashes();
        f
    }

    fn paths(&self) -> Vec<PathBuf> {
        let mut p: Vec<PathBuf> = self.common.input_files();
        p.extend(self.engine_files.iter().cloned());
        p
    }

    fn hashes(&self) -> Vec<Option<[u8; 32]>> {
        self.paths().iter().map(|p| files::digest(p)).collect()
    }

    /// Also watch the files this profile makes the engine read.
    fn follow(&mut self, d: &Desired) {
        let root = &self.common.root;
        self.engine_files = d
            .bgp
            .iter()
            .map(|b| b.templates_dir.join(underlay::bgp::render::TEMPLATE_NAME))
            .chain(d.uplinks.iter().filter_map(|u| u.password_file.clone()))
            .map(|p| files::under_root(root, &p))
            .collect();
        self.seen = self.hashes();
    }
}

impl Inputs for FileInputs<'_> {
    fn changed(&mut self) -> bool {
        self.hashes() != self.seen
    }

    fn load(&mut self) -> Result<Desired, InputError> {
        self.seen = self.hashes();
        let (d, _) = self.common.load(VERB).map_err(|f| InputError {
            kind: f.kind(),
            message: f.message().to_string(),
        })?;
        if self.common.netns.is_some() {
            engine::check_netns_safe(&d).map_err(|e| InputError {
                kind: e.kind(),
                message: e.to_string(),
            })?;
        }
        self.follow(&d);
        Ok(d)
    }
}

struct CliObserver {
    json: bool,
    netns: Option<String>,
    status_path: PathBuf,
    ready: bool,
    status_error: bool,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Observer for CliObserver {
    fn reconciled(&mut self, r: &Reconciled) {
        let causes: Vec<&str> = r.causes.iter().map(|c| c.as_str()).collect();
        let causes = causes.join("+");
        for ch in r.changes {
            match r.purpose {
                Purpose::Repair => tracing::warn!(
                    "repaired {} {}: {} ({:.1} ms after the first event; {causes})",
                    ch.kind,
                    ch.id,
                    ch.what,
                    ms(r.latency)
                ),
                Purpose::Profile => {
                    tracing::info!(
                        "applied {} {}: {} (inputs changed)",
                        ch.kind,
                        ch.id,
                        ch.what
                    )
                }
                Purpose::Initial => tracing::info!("applied {} {}: {}", ch.kind, ch.id, ch.what),
            }
        }
        let verdict = match &r.result {
            Ok(rep) if rep.failure.is_none() && rep.converged() => "converged".to_string(),
            Ok(rep) => match &rep.failure {
                Some(f) => format!("FAILED at {}: {}", f.resource, f.error),
                None => "NOT converged: resources still differ after apply".to_string(),
            },
            Err(e) => format!("FAILED ({}): {e}", e.kind()),
        };
        if r.changes.is_empty() && verdict == "converged" {
            tracing::debug!("no-op reconcile ({causes}) in {:.1} ms", ms(r.duration));
        } else {
            tracing::info!(
                "reconcile ({causes}): {verdict}, {} changes in {:.1} ms",
                r.changes.len(),
                ms(r.duration)
            );
        }
        if self.json && (!r.changes.is_empty() || verdict != "converged") {
            let doc = match &r.result {
                Ok(rep) => Document::of_report(
                    rep,
                    &Context {
                        command: VERB,
                        host: &r.desired.hostname,
                        netns: self.netns.as_deref(),
                        total_ms: ms(r.duration),
                    },
                    None,
                    rep.exit_code(),
                ),
                Err(e) => Document::of_error(
                    VERB,
                    self.netns.as_deref(),
                    e.kind(),
                    &e.to_string(),
                    &[],
                    ms(r.duration),
                ),
            };
            println!("{}", serde_json::to_string(&doc).unwrap_or_default());
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "{verdict} after {causes}"
        ))]);
        if !self.ready {
            // Started = watching; whether the host is converged is in STATUS=.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            self.ready = true;
        }
    }

    fn notice(&mut self, n: &Notice) {
        match n {
            Notice::Woken { first, count } => {
                tracing::debug!("woken by {count} notification(s), first: {first}")
            }
            Notice::Overrun => tracing::warn!(
                "the kernel dropped netlink notifications (ENOBUFS): full resync"
            ),
            Notice::InputRejected(e) => tracing::error!(
                "changed inputs refused ({}), keeping the last good profile and host facts: {}",
                e.kind,
                e.message
            ),
            Notice::InputLoaded { fixed: true } => {
                tracing::info!("inputs fixed and loaded: converging to them")
            }
            Notice::InputLoaded { fixed: false } => tracing::info!("inputs changed: reloaded"),
            Notice::Retry {
                kind,
                message,
                after,
            } => tracing::warn!(
                "reconcile failed ({kind}): {message}; retrying in {:.0} s",
                after.as_secs_f64()
            ),
            Notice::WaitingForChange { message } => tracing::error!(
                "cannot converge: {message}; waiting for a matching NIC, fixed inputs or the next resync"
            ),
            Notice::Stopping(signal) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                tracing::info!("{signal}: stopping (no apply was interrupted)")
            }
        }
    }

    fn status(&mut self, s: &WatchStatus) {
        let text = serde_json::to_string_pretty(s).unwrap_or_default() + "\n";
        // Root only: error messages quote what the host or BIRD said.
        match files::write_atomic(
            &self.status_path,
            text.as_bytes(),
            &files::WriteSpec::new(0o600, Durability::Derived),
        ) {
            Ok(()) => self.status_error = false,
            Err(e) if !self.status_error => {
                self.status_error = true;
                tracing::warn!(
                    "cannot write the status file (underlay status will not see this watcher): {e}"
                );
            }
            Err(_) => {}
        }
    }

    fn watchdog(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
