//! Which process wrote a status file, and whether it still runs: the pid
//! plus its start time (field 22 of /proc/PID/stat), so a reused pid never
//! passes for the watcher.

use std::path::Path;

/// Start time of `pid` in clock ticks since boot; `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn self_start_time() -> u64 {
    start_time(std::process::id()).unwrap_or(0)
}

/// Whether the process that recorded (`pid`, `start`) is still running.
pub fn is_running(pid: u32, start: u64) -> bool {
    start_time(pid).is_some_and(|s| s == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_changed_start_time_does_not() {
        let me = std::process::id();
        let start = self_start_time();
        assert!(start > 0);
        assert!(is_running(me, start));
        assert!(!is_running(me, start + 1));
        assert!(!is_running(u32::MAX - 1, start));
    }
}
