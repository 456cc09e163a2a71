//! What the watcher tells `underlay status`: counters, the last repairs, the
//! input error it is living with. Written as JSON by the watcher (atomic
//! rename) and read back by `status`. Holds resource ids and summaries only:
//! BIRD's config is a line count and a hash, never its text.

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::system::events::EventStats;

pub const STATUS_VERSION: u32 = 1;

/// Where the watcher writes its status (below --root).
pub const DEFAULT_STATUS_PATH: &str = "/run/underlay/watch.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatchStatus {
    pub version: u32,
    pub pid: u32,
    /// Start time of `pid` (clock ticks since boot): tells a reused pid apart.
    pub pid_start: u64,
    /// Set by the reader: the writing process still runs.
    #[serde(default)]
    pub running: bool,
    pub started_unix: f64,
    pub updated_unix: f64,
    /// Set when the watcher exits on SIGTERM/SIGINT.
    pub stopped_unix: Option<f64>,
    /// The last reconcile's verdict (`None` before the first).
    pub converged: Option<bool>,
    pub settings: Settings,
    pub counters: Counters,
    pub events: EventStats,
    pub last_reconcile: Option<ReconcileRecord>,
    /// The most recent changes, oldest first (bounded).
    pub repairs: Vec<ChangeRecord>,
    /// A re-read profile or host facts that were refused: the watcher keeps
    /// converging to the last good copy until they are fixed.
    pub input_error: Option<ErrorRecord>,
    pub last_error: Option<ErrorRecord>,
    pub watching: Watching,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub resync_s: f64,
    pub poll_s: f64,
    pub debounce_ms: f64,
    pub max_rate: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// engine runs (apply), whatever started them.
    pub reconciles: u64,
    /// Of those, the ones that changed nothing.
    pub noop: u64,
    /// Resources put back after someone else changed them.
    pub repairs: u64,
    /// Resources changed because the profile or host facts changed.
    pub profile_changes: u64,
    /// Resources changed by the first converge of this watcher.
    pub initial_changes: u64,
    /// Reconciles by what started them (one reconcile may have several).
    pub by_cause: CauseCounts,
    pub failures: FailureCounts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CauseCounts {
    pub start: u64,
    pub kernel: u64,
    pub overrun: u64,
    pub input: u64,
    pub files: u64,
    pub resync: u64,
    pub retry: u64,
    pub reload: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailureCounts {
    pub input: u64,
    pub transient: u64,
    pub system: u64,
}

impl FailureCounts {
    pub fn count(&mut self, k: ErrorKind) {
        match k {
            ErrorKind::Input => self.input += 1,
            ErrorKind::Transient => self.transient += 1,
            ErrorKind::System => self.system += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReconcileRecord {
    pub at_unix: f64,
    pub causes: Vec<String>,
    pub changes: usize,
    pub converged: bool,
    pub duration_ms: f64,
    /// From the first trigger of the burst to the end of verification.
    pub latency_ms: f64,
    pub error: Option<ErrorRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeRecord {
    pub at_unix: f64,
    /// "repair", "profile" or "initial".
    pub purpose: String,
    pub kind: String,
    pub id: String,
    /// What drifted and what was done, for a person.
    pub what: String,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorRecord {
    pub kind: ErrorKind,
    pub message: String,
    pub at_unix: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Watching {
    /// Links whose notifications wake a reconcile.
    pub links: Vec<String>,
    /// Routes in this table wake it too.
    pub host_table: Option<u32>,
    pub protocol: u8,
    /// Sysctls with kernel notifications (the others wait for the resync).
    pub evented_sysctls: usize,
}

pub fn now_unix() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs_f64() * 1e3).round() / 1e3
}

/// One line for a person (`underlay status`).
pub fn summary(s: &WatchStatus) -> String {
    let c = &s.counters;
    let state = if s.running {
        format!("running (pid {})", s.pid)
    } else if s.stopped_unix.is_some() {
        "stopped".to_string()
    } else {
        format!("not running (pid {} is gone)", s.pid)
    };
    let mut line = format!(
        "watch: {state}; {} reconciles ({} no-op), {} repairs, {} profile changes, {} overruns",
        c.reconciles, c.noop, c.repairs, c.profile_changes, s.events.overruns
    );
    if let Some(r) = s.repairs.iter().rev().find(|r| r.purpose == "repair") {
        line.push_str(&format!(
            "; last repair: {} {}: {} ({:.1} ms)",
            r.kind, r.id, r.what, r.latency_ms
        ));
    }
    if let Some(e) = &s.input_error {
        line.push_str(&format!(
            "; INPUT REFUSED (keeping the last good profile): {}",
            e.message.lines().next().unwrap_or_default()
        ));
    }
    line
}
