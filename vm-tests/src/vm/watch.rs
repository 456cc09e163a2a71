//! The `watch` scenario: the packaged `underlay-watch.service`, enabled by
//! the package and started by the boot path after the gates, repairs an
//! operator's `ip addr flush dev lo`: the service IP is back on `lo` within a
//! bound, the unit's journal has the repair line saying what drifted, the
//! client reaches the service IP again. Addresses someone else put on `lo`
//! survive a repair, and afterwards the watcher stays idle (no repair loop:
//! its counters do not move, its CPU time is reported).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::scenarios::{
    boot_one, check_converged, check_reachable, guest, guest_out, wait_until, Options,
    BOOT_TIMEOUT, FLAT_PROFILE,
};
use super::{Boot, VmLab};
use crate::probe;
use crate::scenarios::Outcome;

/// A generous hang bound for one repair under TCG (measured: see the output).
const REPAIR_BOUND: Duration = Duration::from_secs(20);
/// How long the watcher is watched for idleness after the repairs.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// Someone else's address on `lo` (TEST-NET-1): never ours to touch.
const FOREIGN: &str = "192.0.2.77/32";

/// Runs `drift` in the guest, then polls (in the guest, every 5 ms) until the
/// service IP is on `lo` again; returns the milliseconds it took.
fn drift_and_wait(lab: &VmLab, sip: &str, drift: &str) -> Result<Option<u64>> {
    let bound_ms = REPAIR_BOUND.as_millis();
    let script = format!(
        "{drift}
t0=$(date +%s%N)
until ip -4 -o addr show dev lo | grep -q ' inet {sip}/32 '; do
  if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt {bound_ms} ]; then echo timeout; exit 0; fi
  sleep 0.005
done
echo back_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
    );
    let out = guest_out(lab, "h1", &script)?;
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix("back_ms="))
        .and_then(|v| v.trim().parse().ok()))
}

fn repair_lines(lab: &VmLab) -> Result<Vec<String>> {
    Ok(guest_out(
        lab,
        "h1",
        "journalctl -b -u underlay-watch.service -o cat --no-pager | grep 'repaired ' || true",
    )?
    .lines()
    .map(str::to_string)
    .collect())
}

/// The watcher's status file (`underlay status` reads it).
fn status(lab: &VmLab) -> Result<serde_json::Value> {
    let text = guest_out(lab, "h1", "cat /run/underlay/watch.json")?;
    serde_json::from_str(&text).with_context(|| format!("/run/underlay/watch.json: {text}"))
}

fn counter(s: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(s, |v, k| &v[*k])
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// utime + stime of the watcher, in clock ticks.
fn cpu_ticks(lab: &VmLab) -> Result<(u64, u64)> {
    let out = guest_out(
        lab,
        "h1",
        "pid=$(systemctl show -p MainPID --value underlay-watch.service); \
         echo $(cut -d' ' -f14,15 /proc/$pid/stat) $(getconf CLK_TCK)",
    )?;
    let v: Vec<u64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v[..] {
        [u, s, hz] => Ok((u + s, hz)),
        _ => bail!("watcher CPU time: {out:?}"),
    }
}

fn wait_reachable(lab: &VmLab) -> Option<Duration> {
    let Ok(h) = lab.host("h1") else { return None };
    wait_until(Duration::from_secs(60), Duration::from_millis(200), || {
        probe::ping_from(&lab.lab.client_netns(), h.service_ip, 1, 500)
            .is_ok_and(|p| p.received == 1)
    })
}

pub fn watch(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    boot_one(lab, "h1", &Boot::converge(FLAT_PROFILE))?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    check_converged(&mut o, lab, "h1", "before")?;
    let sip = lab.host("h1")?.service_ip.to_string();

    // The package enables it; the boot path starts it after READY.
    let unit = guest_out(
        lab,
        "h1",
        "echo \"$(systemctl is-enabled underlay-watch.service) $(systemctl is-active underlay-watch.service)|$(systemctl show -p StatusText --value underlay-watch.service)\"",
    )?;
    o.check(
        unit.starts_with("enabled active|converged"),
        format!("underlay-watch.service enabled by the package and running: {unit}"),
    );
    let order = guest_out(
        lab,
        "h1",
        "echo $(systemctl show -p ActiveEnterTimestampMonotonic --value underlay-gates.service) \
              $(systemctl show -p ExecMainStartTimestampMonotonic --value underlay-watch.service) \
              $(systemctl show -p ActiveEnterTimestampMonotonic --value underlay-watch.service) \
              $(systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target)",
    )?;
    let t: Vec<u64> = order
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let s = |us: u64| format!("{:.2} s", us as f64 / 1e6);
    o.check(
        t.len() == 4 && t[0] > 0 && t[1] >= t[0],
        match t[..] {
            [ready, start, watching, mu] => format!(
                "watch started after READY: gates READY at {}, watch process at {}, watching (READY=1) at {}; multi-user.target at {} (not ordered after it)",
                s(ready),
                s(start),
                s(watching),
                s(mu)
            ),
            _ => format!("unit timestamps: {order:?}"),
        },
    );
    let lo_before = guest_out(
        lab,
        "h1",
        "ip -o addr show dev lo | awk '{print $4}' | paste -sd' '",
    )?;
    o.info(format!("lo before: {lo_before}"));

    // 1. The operator's stray flush.
    let t0 = Instant::now();
    let back = drift_and_wait(lab, &sip, "ip addr flush dev lo")?;
    o.check(
        back.is_some(),
        format!(
            "`ip addr flush dev lo`: {sip}/32 back on lo after {} (polled in the guest every 5 ms; bound {} s)",
            back.map_or("never".into(), |ms| format!("{ms} ms")),
            REPAIR_BOUND.as_secs()
        ),
    );
    let lines = repair_lines(lab)?;
    let want = format!("repaired address {sip}/32 dev lo: deleted by someone else");
    o.check(
        lines.len() == 1 && lines[0].contains(&want),
        format!(
            "underlay-watch's journal says what drifted ({} repair line(s)): {:?}",
            lines.len(),
            lines
        ),
    );
    let reach = wait_reachable(lab);
    o.check(
        reach.is_some(),
        format!(
            "the client reaches {sip} again {:.1} s after the flush",
            t0.elapsed().as_secs_f64()
        ),
    );
    check_reachable(&mut o, lab, "h1", "after the flush")?;

    // 2. Foreign addresses on lo (loopback put back by hand, and someone
    // else's /32) while our address is deleted again: the repair adds ours
    // and leaves theirs.
    let r = guest(
        lab,
        "h1",
        &format!(
            "ip addr add 127.0.0.1/8 dev lo && ip addr add ::1/128 dev lo && ip addr add {FOREIGN} dev lo"
        ),
    )?;
    if !r.ok() {
        bail!("adding foreign addresses on lo: {}", r.output);
    }
    std::thread::sleep(Duration::from_secs(2));
    let back2 = drift_and_wait(lab, &sip, &format!("ip addr del {sip}/32 dev lo"))?;
    // The follow-up reconciles (the repair's own events, the next poll) run.
    std::thread::sleep(Duration::from_secs(3));
    let lo = guest_out(
        lab,
        "h1",
        "ip -o addr show dev lo | awk '{print $4}' | paste -sd' '",
    )?;
    let has = |a: &str| lo.split_whitespace().any(|x| x == a);
    o.check(
        back2.is_some() && has(&format!("{sip}/32")),
        format!(
            "`ip addr del {sip}/32 dev lo` with foreign addresses on lo: back after {}",
            back2.map_or("never".into(), |ms| format!("{ms} ms"))
        ),
    );
    o.check(
        has(FOREIGN) && has("127.0.0.1/8") && has("::1/128"),
        format!("foreign addresses on lo survive the repair: lo has {lo}"),
    );
    let lines = repair_lines(lab)?;
    o.check(
        lines.len() == 2 && lines.iter().all(|l| l.contains(&want)),
        format!(
            "two drifts, two repair lines, both for the service IP: {:?}",
            lines
        ),
    );
    let plan = guest(lab, "h1", "underlay plan")?;
    o.check(
        plan.code == 0,
        format!(
            "`underlay plan` afterwards: exit {} (0 = nothing to do)",
            plan.code
        ),
    );

    // 3. Idle afterwards: no reconcile but the periodic resync, no repair.
    let before = status(lab)?;
    let (cpu0, hz) = cpu_ticks(lab)?;
    let w0 = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let after = status(lab)?;
    let (cpu1, _) = cpu_ticks(lab)?;
    let window = w0.elapsed().as_secs_f64();
    let d = |p: &[&str]| counter(&after, p).wrapping_sub(counter(&before, p));
    let (rec, resync, rep) = (
        d(&["counters", "reconciles"]),
        d(&["counters", "by_cause", "resync"]),
        d(&["counters", "repairs"]),
    );
    o.check(
        rep == 0 && rec <= resync && resync <= 1,
        format!(
            "idle for {window:.0} s afterwards: {rec} reconcile(s) ({resync} of them the periodic resync), {rep} repair(s); \
             watcher CPU {:.2} s ({:.1} % of the guest's one vCPU); totals {} reconciles, {} repairs",
            (cpu1 - cpu0) as f64 / hz as f64,
            (cpu1 - cpu0) as f64 / hz as f64 / window * 100.0,
            counter(&after, &["counters", "reconciles"]),
            counter(&after, &["counters", "repairs"]),
        ),
    );
    let active = guest_out(
        lab,
        "h1",
        "echo $(systemctl is-active underlay-watch.service) $(systemctl show -p NRestarts --value underlay-watch.service)",
    )?;
    o.check(
        active == "active 0",
        format!("underlay-watch.service still active, restarts: {active}"),
    );
    Ok(o)
}
