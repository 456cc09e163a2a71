//! Watch mode: reconcile on a trigger, never event-driven state. A
//! notification from the kernel, a changed profile, a changed generated
//! file, an overrun or the periodic resync only say "look again"; the look
//! is exactly a normal run ([`engine::run`] in apply mode), which observes
//! everything we own and plans from scratch.
//!
//! Between a trigger and a run sit a debounce (a burst becomes one run), a
//! token bucket (something fighting us cannot make us spin) and a back-off
//! after transient or system failures. A refused re-read of the profile
//! keeps the last good one. Time comes from the [`Events`] source, so the
//! whole loop runs on a virtual clock in tests.

mod interest;
mod limits;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::desired::Desired;
use crate::engine::{self, EngineError, Mode, Report};
use crate::error::ErrorKind;
use crate::plan::{Action, Item, Target};
use crate::system::events::{Events, Wake};
use crate::system::{System, SystemError};

pub use interest::interest;
pub use limits::{Backoff, Burst, TokenBucket};
use status::{ChangeRecord, ErrorRecord, ReconcileRecord, Settings, WatchStatus, Watching};

#[derive(Debug, Clone)]
pub struct Config {
    /// A burst ends after this long without a new trigger.
    pub debounce: Duration,
    /// ... or this long after its first trigger, whichever comes first.
    pub debounce_max: Duration,
    /// Sustained reconciles per second, and how many may run back to back.
    pub max_rate: f64,
    pub burst: u32,
    /// Full reconcile even without a trigger (events can be missed; sysctls
    /// without netlink notifications are only seen here).
    pub resync: Duration,
    /// How often the inputs and the generated files are checked for changes.
    pub poll: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Ping period for the systemd watchdog (half of WATCHDOG_USEC).
    pub watchdog: Option<Duration>,
    /// Changes kept in the status.
    pub history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            debounce: Duration::from_millis(10),
            debounce_max: Duration::from_millis(100),
            max_rate: 5.0,
            burst: 20,
            resync: Duration::from_secs(120),
            poll: Duration::from_secs(2),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            watchdog: None,
            history: 20,
        }
    }
}

/// Why a reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    Start,
    Kernel,
    Overrun,
    Input,
    Files,
    Resync,
    Retry,
    Reload,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Start => "start",
            Cause::Kernel => "kernel",
            Cause::Overrun => "overrun",
            Cause::Input => "input",
            Cause::Files => "files",
            Cause::Resync => "resync",
            Cause::Retry => "retry",
            Cause::Reload => "reload",
        }
    }
}

/// A refused profile or host facts (or a source that did not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Where the profile and host facts come from.
pub trait Inputs {
    /// Cheap check (file stamps, an interval for remote sources): did
    /// anything the loader reads change since the last `load`?
    fn changed(&mut self) -> bool;
    /// Reads and validates everything again.
    fn load(&mut self) -> Result<Desired, InputError>;
}

/// What a reconcile was for, which decides how its changes are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The first converge of this watcher.
    Initial,
    /// Putting back what someone else changed.
    Repair,
    /// Following a changed profile or host facts.
    Profile,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Initial => "initial",
            Purpose::Repair => "repair",
            Purpose::Profile => "profile",
        }
    }
}

/// One resource a reconcile changed, described for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: String,
    pub id: String,
    pub what: String,
}

pub struct Reconciled<'a> {
    pub causes: &'a [Cause],
    pub purpose: Purpose,
    pub desired: &'a Desired,
    pub result: Result<&'a Report, &'a EngineError>,
    pub changes: &'a [Change],
    /// From the first trigger of the burst to the end of verification.
    pub latency: Duration,
    pub duration: Duration,
}

pub enum Notice<'a> {
    /// Relevant notifications arrived (`first` of `count`), for debug logs.
    Woken {
        first: &'a str,
        count: u32,
    },
    /// The kernel dropped notifications; a full resync follows.
    Overrun,
    /// A changed profile or host facts were refused; the last good copy stays.
    InputRejected(&'a InputError),
    /// A changed profile or host facts were loaded.
    InputLoaded {
        fixed: bool,
    },
    /// A failed reconcile is retried after `after`.
    Retry {
        kind: ErrorKind,
        message: &'a str,
        after: Duration,
    },
    /// An input error: nothing is retried until something changes.
    WaitingForChange {
        message: &'a str,
    },
    Stopping(&'a str),
}

/// Where the loop reports to (the CLI logs, prints JSON, writes the status
/// file, talks to systemd); the library prints nothing.
pub trait Observer {
    fn reconciled(&mut self, r: &Reconciled);
    fn notice(&mut self, n: &Notice);
    fn status(&mut self, s: &WatchStatus);
    fn watchdog(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

pub struct Watcher {
    cfg: Config,
    desired: Desired,
    target: Option<Target>,
    burst: Option<Burst>,
    causes: Vec<Cause>,
    bucket: TokenBucket,
    backoff: Backoff,
    next_poll: Instant,
    next_resync: Instant,
    next_watchdog: Option<Instant>,
    /// Hashes of the generated files after the last reconcile.
    files: BTreeMap<PathBuf, Option<[u8; 32]>>,
    converged_once: bool,
    status: WatchStatus,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Watcher {
    /// `desired`: the validated input the caller loaded at start (before
    /// anything was changed). The first reconcile runs right away.
    pub fn new(cfg: Config, desired: Desired, now: Instant) -> Watcher {
        let status = WatchStatus {
            version: status::STATUS_VERSION,
            pid: std::process::id(),
            pid_start: crate::system::process::self_start_time(),
            running: true,
            started_unix: status::now_unix(),
            updated_unix: status::now_unix(),
            stopped_unix: None,
            converged: None,
            settings: Settings {
                resync_s: cfg.resync.as_secs_f64(),
                poll_s: cfg.poll.as_secs_f64(),
                debounce_ms: ms(cfg.debounce),
                max_rate: cfg.max_rate,
                burst: cfg.burst,
            },
            counters: Default::default(),
            events: Default::default(),
            last_reconcile: None,
            repairs: Vec::new(),
            input_error: None,
            last_error: None,
            watching: Watching::default(),
        };
        Watcher {
            bucket: TokenBucket::new(cfg.max_rate, cfg.burst, now),
            backoff: Backoff::new(cfg.backoff_min, cfg.backoff_max),
            next_poll: now + cfg.poll,
            next_resync: now + cfg.resync,
            next_watchdog: cfg.watchdog.map(|_| now),
            burst: Some(Burst::new(now)),
            causes: vec![Cause::Start],
            files: BTreeMap::new(),
            converged_once: false,
            target: None,
            desired,
            status,
            cfg,
        }
    }

    pub fn status(&self) -> &WatchStatus {
        &self.status
    }

    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// Runs until a stop signal; returns after the last reconcile finished.
    pub fn run(
        &mut self,
        sys: &mut dyn System,
        ev: &mut dyn Events,
        inputs: &mut dyn Inputs,
        obs: &mut dyn Observer,
    ) -> Result<(), SystemError> {
        while self.step(sys, ev, inputs, obs)? == Control::Continue {}
        Ok(())
    }

    fn trigger(&mut self, now: Instant, cause: Cause) {
        match &mut self.burst {
            Some(b) => b.touch(now),
            None => self.burst = Some(Burst::new(now)),
        }
        if !self.causes.contains(&cause) {
            self.causes.push(cause);
        }
        // A changed input may be the fix: do not wait out a back-off for it.
        if matches!(cause, Cause::Input | Cause::Reload) {
            self.backoff.until = None;
        }
    }

    /// When the pending burst may run (debounce and back-off; the bucket is
    /// checked apart).
    fn due_at(&self, now: Instant) -> Option<Instant> {
        let b = self.burst?;
        Some(
            b.ready_at(self.cfg.debounce, self.cfg.debounce_max)
                .max(self.backoff.ready_at(now)),
        )
    }

    fn deadline(&self, now: Instant) -> Instant {
        let mut d = self.next_poll.min(self.next_resync);
        if let Some(w) = self.next_watchdog {
            d = d.min(w);
        }
        if let Some(at) = self.due_at(now) {
            d = d.min(at.max(self.bucket.ready_at(now)));
        }
        d
    }

    /// One turn: timers, a reconcile if one is due, else one wait.
    pub fn step(
        &mut self,
        sys: &mut dyn System,
        ev: &mut dyn Events,
        inputs: &mut dyn Inputs,
        obs: &mut dyn Observer,
    ) -> Result<Control, SystemError> {
        let now = ev.now();
        if let Some(w) = self.next_watchdog.filter(|w| now >= *w) {
            obs.watchdog();
            let period = self.cfg.watchdog.unwrap_or(Duration::from_secs(1));
            self.next_watchdog = Some((w + period).max(now));
        }
        if now >= self.next_poll {
            self.next_poll = now + self.cfg.poll;
            if inputs.changed() {
                self.trigger(now, Cause::Input);
            }
            if self.files_changed(sys) {
                self.trigger(now, Cause::Files);
            }
            // Keep the event counters in the status current while only
            // (dropped) notifications arrive.
            if ev.stats() != self.status.events {
                self.publish(ev, obs);
            }
        }
        if now >= self.next_resync {
            self.next_resync = now + self.cfg.resync;
            self.trigger(now, Cause::Resync);
        }
        if self.due_at(now).is_some_and(|at| at <= now) && self.bucket.try_take(now) {
            self.reconcile(sys, ev, inputs, obs)?;
            return Ok(Control::Continue);
        }
        let deadline = self.deadline(now);
        match ev.wait(deadline)? {
            Wake::Changed { first, count } => {
                obs.notice(&Notice::Woken {
                    first: &first,
                    count,
                });
                self.trigger(ev.now(), Cause::Kernel);
            }
            Wake::Overrun => {
                obs.notice(&Notice::Overrun);
                self.trigger(ev.now(), Cause::Overrun);
            }
            Wake::Reload => self.trigger(ev.now(), Cause::Reload),
            Wake::Timeout => {}
            Wake::Stop(signal) => {
                obs.notice(&Notice::Stopping(&signal));
                self.status.stopped_unix = Some(status::now_unix());
                self.status.updated_unix = status::now_unix();
                self.status.events = ev.stats();
                obs.status(&self.status);
                return Ok(Control::Stop);
            }
        }
        Ok(Control::Continue)
    }

    /// Whether a generated file (rt_tables.d, sysctl.d, BIRD's config...)
    /// differs from what the last reconcile left: no kernel event exists
    /// for files, and a stat-sized read every poll is cheap.
    fn files_changed(&mut self, sys: &mut dyn System) -> bool {
        if self.files.is_empty() {
            return false;
        }
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        paths
            .iter()
            .any(|p| file_hash(sys, p).ok() != self.files.get(p).copied())
    }

    fn record_files(&mut self, sys: &mut dyn System) {
        self.files.clear();
        let Some(t) = &self.target else { return };
        let mut paths: Vec<PathBuf> = t.files.iter().map(|f| f.path.clone()).collect();
        paths.extend(t.bird.iter().map(|b| b.config_path.clone()));
        for p in paths {
            if let Ok(h) = file_hash(sys, &p) {
                self.files.insert(p, h);
            }
        }
    }

    fn reconcile(
        &mut self,
        sys: &mut dyn System,
        ev: &mut dyn Events,
        inputs: &mut dyn Inputs,
        obs: &mut dyn Observer,
    ) -> Result<(), SystemError> {
        let started = ev.now();
        let first = self.burst.take().map_or(started, |b| b.first);
        let mut causes = std::mem::take(&mut self.causes);
        causes.sort();

        let mut purpose = if self.converged_once {
            Purpose::Repair
        } else {
            Purpose::Initial
        };
        if causes
            .iter()
            .any(|c| matches!(c, Cause::Input | Cause::Reload))
        {
            match inputs.load() {
                Ok(d) => {
                    self.desired = d;
                    let fixed = self.status.input_error.take().is_some();
                    obs.notice(&Notice::InputLoaded { fixed });
                    if self.converged_once {
                        purpose = Purpose::Profile;
                    }
                }
                Err(e) => {
                    self.status.counters.failures.count(e.kind);
                    self.status.input_error = Some(ErrorRecord {
                        kind: e.kind,
                        message: e.message.clone(),
                        at_unix: status::now_unix(),
                    });
                    obs.notice(&Notice::InputRejected(&e));
                    // Nothing on the host changed because of it: the last
                    // good state stands, unless something else asked to look.
                    causes.retain(|c| !matches!(c, Cause::Input | Cause::Reload));
                    if causes.is_empty() {
                        self.publish(ev, obs);
                        return Ok(());
                    }
                }
            }
        }

        let result = engine::run(sys, &self.desired, Mode::Apply);
        // Held for the run only: between reconciles `apply` by hand, the
        // reconcile timer and Ansible take their turn.
        sys.unlock();
        let end = ev.now();
        let counters = &mut self.status.counters;
        counters.reconciles += 1;
        for c in &causes {
            let by = &mut counters.by_cause;
            *match c {
                Cause::Start => &mut by.start,
                Cause::Kernel => &mut by.kernel,
                Cause::Overrun => &mut by.overrun,
                Cause::Input => &mut by.input,
                Cause::Files => &mut by.files,
                Cause::Resync => &mut by.resync,
                Cause::Retry => &mut by.retry,
                Cause::Reload => &mut by.reload,
            } += 1;
        }
        let mut changes = Vec::new();
        let mut failure: Option<(ErrorKind, String)> = None;
        match &result {
            Ok(report) => {
                self.target = Some(report.target.clone());
                changes = describe(report, purpose);
                if let Some(f) = &report.failure {
                    failure = Some((f.kind, format!("{}: {}", f.resource, f.error)));
                } else if !report.converged() {
                    failure = Some((
                        ErrorKind::System,
                        "verification failed: resources still differ after apply (something may be fighting us)"
                            .to_string(),
                    ));
                }
            }
            Err(e) => failure = Some((e.kind(), e.to_string())),
        }
        let n = changes.len() as u64;
        match purpose {
            Purpose::Initial => counters.initial_changes += n,
            Purpose::Repair => counters.repairs += n,
            Purpose::Profile => counters.profile_changes += n,
        }
        if n == 0 {
            counters.noop += 1;
        }
        let latency = end.saturating_duration_since(first);
        let duration = end.saturating_duration_since(started);
        obs.reconciled(&Reconciled {
            causes: &causes,
            purpose,
            desired: &self.desired,
            result: result.as_ref(),
            changes: &changes,
            latency,
            duration,
        });

        let error = failure.as_ref().map(|(kind, message)| ErrorRecord {
            kind: *kind,
            message: message.clone(),
            at_unix: status::now_unix(),
        });
        match &failure {
            None => {
                self.backoff.succeed();
                self.converged_once = true;
            }
            Some((kind, message)) => {
                self.status.counters.failures.count(*kind);
                self.status.last_error = error.clone();
                if *kind == ErrorKind::Input {
                    // Retrying the same input fails the same way; a matching
                    // NIC appearing, a fixed profile or the resync wakes us.
                    obs.notice(&Notice::WaitingForChange { message });
                } else {
                    let after = self.backoff.fail(end);
                    obs.notice(&Notice::Retry {
                        kind: *kind,
                        message,
                        after,
                    });
                    self.trigger(end, Cause::Retry);
                }
            }
        }

        let at_unix = status::now_unix();
        let history = self.cfg.history;
        let log = &mut self.status.repairs;
        for c in &changes {
            log.push(ChangeRecord {
                at_unix,
                purpose: purpose.as_str().to_string(),
                kind: c.kind.clone(),
                id: c.id.clone(),
                what: c.what.clone(),
                latency_ms: ms(latency),
            });
        }
        let excess = log.len().saturating_sub(history);
        log.drain(..excess);
        self.status.converged = Some(failure.is_none());
        self.status.last_reconcile = Some(ReconcileRecord {
            at_unix,
            causes: causes.iter().map(|c| c.as_str().to_string()).collect(),
            changes: changes.len(),
            converged: failure.is_none(),
            duration_ms: ms(duration),
            latency_ms: ms(latency),
            error,
        });

        let i = interest(&self.desired, self.target.as_ref());
        self.status.watching = Watching {
            links: i.links.iter().map(|l| l.name.clone()).collect(),
            host_table: i.host_table,
            protocol: i.protocol,
            evented_sysctls: i.netconf.len(),
        };
        ev.set_interest(&i)?;
        self.record_files(sys);
        self.next_resync = end + self.cfg.resync;
        self.publish(ev, obs);
        Ok(())
    }

    fn publish(&mut self, ev: &dyn Events, obs: &mut dyn Observer) {
        self.status.updated_unix = status::now_unix();
        self.status.events = ev.stats();
        obs.status(&self.status);
    }
}

fn file_hash(
    sys: &mut dyn System,
    path: &std::path::Path,
) -> Result<Option<[u8; 32]>, SystemError> {
    Ok(sys
        .read_file(path)?
        .map(|text| Sha256::digest(text.as_bytes()).into()))
}

/// The changed resources of a run, each with what drifted. After a failed
/// op only the items before it were applied.
pub fn describe(report: &Report, purpose: Purpose) -> Vec<Change> {
    let failed = report.failure.as_ref().map(|f| f.resource.as_str());
    report
        .plan
        .changes()
        .take_while(|i| Some(format!("{} {}", i.kind, i.id)).as_deref() != failed)
        .filter(|i| !i.ops.is_empty())
        .map(|i| Change {
            kind: i.kind.to_string(),
            id: i.id.clone(),
            what: what(i, purpose),
        })
        .collect()
}

fn what(i: &Item, purpose: Purpose) -> String {
    let before = i.before.as_deref().unwrap_or("absent");
    let after = i.after.as_deref().unwrap_or("absent");
    // The nft table diff is many lines: keep the log to one.
    let one = |s: &str| {
        let mut l = s.lines();
        let first = l.next().unwrap_or_default().to_string();
        match l.count() {
            0 => first,
            n => format!("{first} (+{n} lines)"),
        }
    };
    match (i.action, purpose) {
        (Action::Skip, _) => format!("skipped ({})", one(after)),
        (Action::Create, Purpose::Repair) => "deleted by someone else".to_string(),
        (Action::Create, _) => format!("created ({})", one(after)),
        (Action::Update, Purpose::Repair) => {
            format!(
                "changed by someone else to {}; set back to {}",
                one(before),
                one(after)
            )
        }
        (Action::Update, _) => format!("{} -> {}", one(before), one(after)),
        (Action::Delete, Purpose::Repair) => {
            format!("ours but not in the profile ({}); removed", one(before))
        }
        (Action::Delete, _) => format!("removed ({})", one(before)),
        (Action::Ok, _) => "unchanged".to_string(),
    }
}

#[cfg(test)]
mod tests;
