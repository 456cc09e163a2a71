//! Boot timings of a VM, every milestone in seconds from the moment QEMU was
//! started: kernel (the guest's CLOCK_MONOTONIC zero, placed on the host's
//! clock by one control-channel round trip), systemd (userspace start),
//! cloud-init.service, underlay.service (converged), bird.service,
//! underlay-gates.service (READY=1), multi-user.target, underlay-join.service
//! (when it ran kubeadm). The unit times are
//! systemd's own ActiveEnterTimestampMonotonic.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::qemu::{unix_now, VmRecord};

#[derive(Debug, Clone, Serialize)]
pub struct BootTiming {
    pub vm: String,
    pub accel: String,
    /// False: the baseline (same image, underlay's units masked).
    pub agent: bool,
    pub kernel_s: f64,
    pub systemd_s: Option<f64>,
    pub cloud_init_s: Option<f64>,
    pub converged_s: Option<f64>,
    pub bird_s: Option<f64>,
    pub ready_s: Option<f64>,
    pub multi_user_s: Option<f64>,
    /// underlay-join.service done, when it ran kubeadm (the stand-in) in
    /// this boot; `None` on a host without `[join]` or already joined.
    pub join_s: Option<f64>,
    /// Half the control-channel round trip: the uncertainty of kernel_s.
    pub clock_error_s: f64,
}

fn mono(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map(|us| us as f64 / 1e6)
}

/// Reads the milestones of `vm`'s current boot; `agent: None` takes it from
/// whether underlay.service ran.
pub fn collect(vm: &VmRecord, agent: Option<bool>) -> Result<BootTiming> {
    let mut c = vm.ctl();
    // Kernel start on the host's clock: guest uptime against the midpoint of
    // one short round trip.
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..3 {
        let t0 = unix_now();
        let r = c.run("cut -d' ' -f1 /proc/uptime", Duration::from_secs(10))?;
        let t1 = unix_now();
        let up: f64 = r.output.trim().parse().context("guest /proc/uptime")?;
        let half = (t1 - t0) / 2.0;
        let kernel_unix = t0 + half - up;
        if best.is_none_or(|(_, h)| half < h) {
            best = Some((kernel_unix, half));
        }
    }
    let (kernel_unix, half) = best.context("no uptime reading")?;
    let kernel_s = kernel_unix - vm.started_unix;
    let r = c.run(
        "echo userspace=$(systemctl show -p UserspaceTimestampMonotonic --value)
         for u in cloud-init.service underlay.service bird.service underlay-gates.service multi-user.target underlay-join.service; do
           echo \"$u=$(systemctl show -p ActiveEnterTimestampMonotonic --value $u)\"
         done
         echo joined=$(journalctl -b -u underlay-join.service -o cat --no-pager | grep -c 'joined the cluster')",
        Duration::from_secs(30),
    )?;
    let t = &r.output;
    let at = |key: &str| mono(t, key).map(|s| s + kernel_s);
    let converged_s = at("underlay.service=");
    Ok(BootTiming {
        vm: vm.name.clone(),
        accel: vm.accel.name.clone(),
        agent: agent.unwrap_or(converged_s.is_some()),
        kernel_s,
        systemd_s: at("userspace="),
        cloud_init_s: at("cloud-init.service="),
        converged_s,
        bird_s: at("bird.service="),
        ready_s: at("underlay-gates.service="),
        multi_user_s: at("multi-user.target="),
        join_s: at("underlay-join.service=").filter(|_| mono(t, "joined=").is_some()),
        clock_error_s: half,
    })
}

/// What multi-user.target waited for in `vm`'s current boot, and the boot
/// unit's journal (when it ran)
/// (`systemd-analyze critical-chain`: the time after `@` is when a unit became
/// active, after `+` how long it took to start; guest clock).
pub fn critical_chain(vm: &VmRecord) -> Result<String> {
    let r = vm.ctl().run(
        "systemd-analyze critical-chain --no-pager multi-user.target 2>&1 | sed -n '3,$p'
         if [ -n \"$(systemctl show -p ExecMainStartTimestampMonotonic --value underlay.service | grep -v '^0$')\" ]; then
           echo '--- journalctl -b -u underlay.service -o short-monotonic'
           journalctl -b -u underlay.service -o short-monotonic --no-pager | tail -25
         fi",
        Duration::from_secs(60),
    )?;
    Ok(r.output.trim_end().to_string())
}

fn f(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into())
}

/// The table people read; the last line compares agent and baseline.
pub fn table(rows: &[BootTiming]) -> String {
    let mut out = String::new();
    let accel = rows.first().map(|r| r.accel.as_str()).unwrap_or("?");
    let _ = writeln!(
        out,
        "boot timings, seconds from QEMU start (accelerator {accel}; the kernel column ±{:.2} s):",
        rows.iter().map(|r| r.clock_error_s).fold(0.0, f64::max)
    );
    let _ = writeln!(
        out,
        "{:<5} {:<6} {:>6} {:>8} {:>10} {:>10} {:>6} {:>6} {:>10} {:>5}",
        "VM",
        "agent",
        "kernel",
        "systemd",
        "cloud-init",
        "converged",
        "bird",
        "READY",
        "multi-user",
        "join"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<5} {:<6} {:>6} {:>8} {:>10} {:>10} {:>6} {:>6} {:>10} {:>5}",
            r.vm,
            if r.agent { "yes" } else { "no" },
            format!("{:.1}", r.kernel_s),
            f(r.systemd_s),
            f(r.cloud_init_s),
            f(r.converged_s),
            f(r.bird_s),
            f(r.ready_s),
            f(r.multi_user_s),
            f(r.join_s)
        );
    }
    if let Some(line) = overhead(rows) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// "the agent's units add X s (Y %) to multi-user.target", means over the
/// boots of each kind, when both kinds are there.
pub fn overhead(rows: &[BootTiming]) -> Option<String> {
    let mean = |agent: bool| -> Option<(f64, usize)> {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.agent == agent)
            .filter_map(|r| r.multi_user_s)
            .collect();
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64, v.len()))
    };
    let ((a, na), (b, nb)) = (mean(true)?, mean(false)?);
    Some(format!(
        "the agent's units add {:.1} s ({:+.0} %) to multi-user.target (mean of {na} boot(s) {a:.1} s vs {nb} baseline boot(s) {b:.1} s; target <= 10 %)",
        a - b,
        (a - b) / b * 100.0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(agent: bool, mu: f64) -> BootTiming {
        BootTiming {
            vm: if agent { "h1" } else { "h2" }.into(),
            accel: "tcg".into(),
            agent,
            kernel_s: 0.4,
            systemd_s: Some(2.0),
            cloud_init_s: Some(8.0),
            converged_s: agent.then_some(9.0),
            bird_s: Some(9.1),
            ready_s: agent.then_some(10.0),
            multi_user_s: Some(mu),
            join_s: None,
            clock_error_s: 0.01,
        }
    }

    #[test]
    fn table_compares_agent_and_baseline() {
        let t = table(&[row(true, 11.0), row(false, 10.0)]);
        assert!(t.contains("h1    yes"), "{t}");
        assert!(t.contains("add 1.0 s (+10 %)"), "{t}");
        let three = table(&[
            row(true, 11.0),
            row(false, 10.0),
            row(true, 13.0),
            row(false, 12.0),
        ]);
        assert!(three.contains("add 1.0 s (+9 %)"), "{three}");
        assert_eq!(mono("x=1500000\n", "x="), Some(1.5));
        assert_eq!(mono("x=0\n", "x="), None);
    }
}
