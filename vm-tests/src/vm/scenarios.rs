//! The VM tier's scenarios. Each builds its own fabric, boots its own VMs
//! from the cached image (two at a time at most), checks from outside (the
//! ToRs' BIRD, the client) and inside (the control channel), and tears it
//! all down. A failure prints the serial console tail (and journal) of every
//! VM. Hooks for what other issues bring: `Boot::cmdline` carries a kernel
//! command line (`underlay.profile=https://...` once the sources land), the
//! ToR namespaces can host a DHCP/HTTPS server for a PXE-style boot, and a
//! booted VM is where the watch unit gets its `ip addr flush dev lo` test.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::ctl::Reply;
use super::qemu;
use super::timing::{self, BootTiming};
use super::{Boot, VmArgs, VmLab};
use crate::cmd;
use crate::plan::Tor;
use crate::probe;
use crate::scenarios::Outcome;
use crate::status;

pub const FLAT_PROFILE: &str = include_str!("../../../profiles/l3-ecmp-calico.toml");
pub const IPIP_PROFILE: &str = include_str!("../../../profiles/l3-ecmp-calico-ipip.toml");

pub(super) const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Options {
    pub keep: bool,
    pub timings_json: Option<PathBuf>,
}

type ScenarioFn = fn(&mut VmLab, &Options) -> Result<Outcome>;

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    /// VMs it boots (its fabric is planned for this many hosts).
    pub hosts: u8,
    f: ScenarioFn,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "first-boot",
        what: "cloud-init NoCloud seed -> packaged units converge at first boot: both ToR sessions, 2 next hops, client reaches the service IP, bird as user bird, system running",
        hosts: 1,
        f: first_boot,
    },
    Scenario {
        name: "reboot",
        what: "a converged VM reboots: converges again, sessions and paths back, a later apply changes nothing",
        hosts: 1,
        f: reboot,
    },
    Scenario {
        name: "uplink-failure",
        what: "one ToR link down (QMP set_link): the service IP stays reachable via the other ToR; BFD detection time",
        hosts: 1,
        f: uplink_failure,
    },
    Scenario {
        name: "readiness-order",
        what: "kubelet-standin (ordered after underlay-gates) starts only after READY=1, which waits for BGP (journal timestamps)",
        hosts: 1,
        f: readiness_order,
    },
    Scenario {
        name: "ipip-mark-leak",
        what: "two VMs, IPIP, kube-proxy + Calico-style MASQUERADE: outer IPIP conntrack entry NATed with the guard off, never with it on",
        hosts: 2,
        f: ipip_mark_leak,
    },
    Scenario {
        name: "scratch-root",
        what: "apply --root /scratch never drives the machine's bird.service; apply on / starts it and waits for the job",
        hosts: 1,
        f: scratch_root,
    },
    Scenario {
        name: "pxe-boot",
        what: "DHCP from the ToR on the BOOTIF NIC, kernel command line underlay.profile/host=https (lab CA) + sha256: a stale pin is refused with the network untouched; the right pin converges; a reboot with the server down converges from the cache before the kubelet",
        hosts: 1,
        f: super::pxe::pxe_boot,
    },
    Scenario {
        name: "watch",
        what: "the packaged underlay-watch.service repairs `ip addr flush dev lo` (journal line, latency), keeps foreign addresses on lo, then stays idle",
        hosts: 1,
        f: super::watch::watch,
    },
    Scenario {
        name: "boot-join",
        what: "host facts with [join] and a 0600 token file from the seed: underlay-join.service runs kubeadm-standin once, after READY, node-ip = service IP, token in no journal or JSON; not again after a reboot",
        hosts: 1,
        f: super::join::boot_join,
    },
    Scenario {
        name: "boot-timings",
        what: "QEMU -> kernel -> systemd -> converged -> READY -> multi-user, against the same image with underlay's units masked",
        hosts: 2,
        f: boot_timings,
    },
];

/// Runs the selected scenarios one after the other; returns how many failed.
pub fn run(args: &VmArgs, only: &[String], opts: &Options) -> Result<usize> {
    for o in only {
        if !SCENARIOS.iter().any(|s| s.name == o) {
            bail!(
                "unknown scenario {o:?}; `underlay-lab vm test --list` shows them: {}",
                SCENARIOS
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut failed = 0;
    for s in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == s.name) {
            continue;
        }
        let t0 = Instant::now();
        let mut a = args.clone();
        a.dir = args.dir.join(s.name);
        println!("=== {}: {}", s.name, s.what);
        let mut lab = match VmLab::create(&a, s.hosts) {
            Ok(l) => l,
            Err(e) => {
                println!("FAIL {}: setting up: {e:#}", s.name);
                failed += 1;
                // Whatever part of the fabric was made goes again.
                if let Ok(partial) = VmLab::load(&a.dir) {
                    let _ = partial.down();
                }
                continue;
            }
        };
        let outcome = (s.f)(&mut lab, opts);
        let pass = matches!(&outcome, Ok(o) if o.pass);
        match &outcome {
            Ok(o) => {
                for l in &o.evidence {
                    println!("  {l}");
                }
            }
            Err(e) => println!("  FAIL error: {e:#}"),
        }
        println!(
            "{} {} ({:.0} s)",
            if pass { "PASS" } else { "FAIL" },
            s.name,
            t0.elapsed().as_secs_f64()
        );
        if !pass {
            failed += 1;
            lab.print_failure_report();
        }
        if !pass && opts.keep {
            println!(
                "kept running: underlay-lab vm console h1 --dir {} --prefix {}",
                a.dir.display(),
                a.prefix
            );
        } else if let Err(e) = lab.down() {
            println!("  (tearing down: {e:#})");
        }
    }
    Ok(failed)
}

// ---- helpers ----

pub(super) fn guest(lab: &VmLab, vm: &str, script: &str) -> Result<Reply> {
    lab.ctl(vm)?.run(script, Duration::from_secs(120))
}

pub(super) fn guest_out(lab: &VmLab, vm: &str, script: &str) -> Result<String> {
    Ok(guest(lab, vm, script)?.output.trim().to_string())
}

pub(super) fn nexthops(lab: &VmLab, vm: &str) -> Result<usize> {
    let out = guest_out(lab, vm, "ip -j route show table 1001")?;
    let v: serde_json::Value = if out.is_empty() {
        serde_json::json!([])
    } else {
        serde_json::from_str(&out).with_context(|| format!("ip -j route: {out}"))?
    };
    Ok(status::default_nexthops(&v))
}

/// Polls `f` every `every` until it returns true or `timeout`; returns when.
pub(super) fn wait_until(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

fn all_established(lab: &VmLab, vm: &str) -> bool {
    lab.host(vm)
        .map(|h| {
            super::fabric::tor_sessions(&lab.lab, &h)
                .iter()
                .all(|(_, s)| s == "Established")
        })
        .unwrap_or(false)
}

fn sessions_line(lab: &VmLab, vm: &str) -> String {
    lab.host(vm)
        .map(|h| {
            super::fabric::tor_sessions(&lab.lab, &h)
                .iter()
                .map(|(t, s)| format!("{} {s}", t.name()))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn ssh_banner(lab: &VmLab, ip: Ipv4Addr) -> String {
    let script = format!("exec 3<>/dev/tcp/{ip}/22; head -c 8 <&3");
    cmd::output(
        "ip",
        &[
            "netns",
            "exec",
            &lab.lab.client_netns(),
            "timeout",
            "5",
            "bash",
            "-c",
            &script,
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

/// Client -> service IP: ICMP and a TCP connection to the guest's sshd.
pub(super) fn check_reachable(o: &mut Outcome, lab: &VmLab, vm: &str, what: &str) -> Result<()> {
    let h = lab.host(vm)?;
    let p = probe::ping_from(&lab.lab.client_netns(), h.service_ip, 3, 1000)?;
    o.check(
        p.received == p.sent,
        format!(
            "{what}: client -> {} ICMP {}/{} replies",
            h.service_ip, p.received, p.sent
        ),
    );
    let banner = ssh_banner(lab, h.service_ip);
    o.check(
        banner.starts_with("SSH-2.0"),
        format!(
            "{what}: client -> {}:22 TCP, guest sshd says {:?}",
            h.service_ip,
            banner.trim()
        ),
    );
    Ok(())
}

/// The converged-host checks every scenario starts from.
pub(super) fn check_converged(o: &mut Outcome, lab: &VmLab, vm: &str, what: &str) -> Result<()> {
    let est = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        all_established(lab, vm)
    });
    o.check(
        est.is_some(),
        format!("{what}: ToR sessions of {vm}: {}", sessions_line(lab, vm)),
    );
    let mut n = 0;
    let two = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
        n = nexthops(lab, vm).unwrap_or(0);
        n == 2
    });
    o.check(
        two.is_some(),
        format!("{what}: {vm} table 1001 default has {n} next hops (want 2)"),
    );
    check_reachable(o, lab, vm, what)
}

pub(super) fn boot_one(lab: &mut VmLab, vm: &str, b: &Boot) -> Result<()> {
    let h = lab.host(vm)?;
    lab.boot(&h, b)?;
    Ok(())
}

// ---- scenarios ----

fn first_boot(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    boot_one(lab, "h1", &Boot::converge(FLAT_PROFILE))?;
    let state = lab.wait_booted("h1", BOOT_TIMEOUT)?;
    let failed = guest_out(lab, "h1", "systemctl --failed --no-legend --plain")?;
    o.check(
        state == "running",
        format!("systemctl is-system-running: {state}; failed units: {failed:?}"),
    );
    let cycles = guest_out(
        lab,
        "h1",
        "journalctl -b --no-pager | grep -i 'ordering cycle' | head -5",
    )?;
    o.check(
        cycles.is_empty(),
        format!("no ordering cycle in the journal: {cycles:?}"),
    );
    let facts = guest(
        lab,
        "h1",
        "test -s /etc/underlay/host.toml && test -s /etc/underlay/profile.toml",
    )?;
    o.check(
        facts.ok(),
        "cloud-init wrote /etc/underlay/host.toml and profile.toml from the seed".into(),
    );
    for unit in ["underlay.service", "underlay-gates.service", "bird.service"] {
        let s = guest_out(
            lab,
            "h1",
            &format!("echo $(systemctl is-active {unit}) $(systemctl is-enabled {unit})"),
        )?;
        o.check(
            s == "active enabled",
            format!("{unit}: {s} (want active enabled)"),
        );
    }
    let timer = guest_out(lab, "h1", "systemctl is-enabled underlay-reconcile.timer")?;
    o.check(
        timer == "disabled",
        format!("underlay-reconcile.timer is opt-in: {timer}"),
    );
    let order = guest_out(
        lab,
        "h1",
        "for u in cloud-init.service underlay.service bird.service underlay-gates.service network-online.target; do
           echo \"$u $(systemctl show -p ActiveEnterTimestampMonotonic --value $u)\"; done",
    )?;
    let t: Vec<(String, u64)> = order
        .lines()
        .filter_map(|l| {
            let (u, v) = l.split_once(' ')?;
            Some((u.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    let at = |u: &str| t.iter().find(|(n, _)| n == u).map(|(_, v)| *v).unwrap_or(0);
    o.check(
        at("cloud-init.service") > 0
            && at("cloud-init.service") <= at("underlay.service")
            && at("underlay.service") <= at("bird.service")
            && at("bird.service") <= at("underlay-gates.service")
            && at("underlay.service") <= at("network-online.target"),
        format!(
            "unit order cloud-init <= underlay <= bird <= gates, underlay <= network-online (monotonic us): {}",
            order.replace('\n', ", ")
        ),
    );
    let bird = guest_out(
        lab,
        "h1",
        "pid=$(systemctl show -p MainPID --value bird.service); \
         echo \"user=$(ps -o user= -p $pid) unit=$(systemctl show -p FragmentPath --value bird.service) \
         dropins=$(systemctl show -p DropInPaths --value bird.service) \
         conf=$(stat -c '%U:%G:%a' /etc/bird/bird.conf)\"",
    )?;
    o.check(
        bird.contains("user=bird ")
            && bird.contains("unit=/lib/systemd/system/bird.service")
            && bird.contains("dropins= "),
        format!("BIRD runs as user bird from Debian's own bird.service: {bird}"),
    );
    check_converged(&mut o, lab, "h1", "first boot")?;
    let log = guest_out(
        lab,
        "h1",
        "journalctl -b -u underlay.service --no-pager -o cat | tail -5",
    )?;
    o.info(format!(
        "underlay.service journal tail: {}",
        log.replace('\n', " | ")
    ));
    Ok(o)
}

pub(super) fn boot_id(lab: &VmLab, vm: &str) -> Result<String> {
    guest_out(lab, vm, "cat /proc/sys/kernel/random/boot_id")
}

/// `systemctl reboot` in `vm`, then waits for a new boot id; checks that
/// it changed (`what` names the check) and returns when the reboot began.
pub(super) fn reboot_vm(o: &mut Outcome, lab: &VmLab, vm: &str, what: &str) -> Result<Instant> {
    let first = boot_id(lab, vm)?;
    // Returns before systemd starts the reboot, so the reply gets out.
    guest(
        lab,
        vm,
        "systemd-run --quiet --on-active=1 systemctl reboot",
    )?;
    let t0 = Instant::now();
    let changed = wait_until(BOOT_TIMEOUT, Duration::from_secs(1), || {
        boot_id(lab, vm).is_ok_and(|b| !b.is_empty() && b != first)
    });
    o.check(
        changed.is_some(),
        format!(
            "{what} (boot id changed after {:.0} s)",
            t0.elapsed().as_secs_f64()
        ),
    );
    Ok(t0)
}

fn reboot(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    boot_one(lab, "h1", &Boot::converge(FLAT_PROFILE))?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    check_converged(&mut o, lab, "h1", "first boot")?;
    let t0 = reboot_vm(&mut o, lab, "h1", "the VM rebooted")?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    o.info(format!(
        "back to READY {:.0} s after `systemctl reboot`",
        t0.elapsed().as_secs_f64()
    ));
    let ran = guest_out(
        lab,
        "h1",
        "echo $(systemctl is-active underlay.service) $(systemctl show -p Result --value underlay.service) $(journalctl -b -u underlay.service --no-pager -o cat | grep -c 'underlay apply')",
    )?;
    o.check(
        ran.starts_with("active success ") && !ran.ends_with(" 0"),
        format!(
            "underlay.service converged again in this boot: {}",
            ran.replace('\n', ", ")
        ),
    );
    check_converged(&mut o, lab, "h1", "after reboot")?;
    let plan = guest(lab, "h1", "underlay plan")?;
    o.check(
        plan.code == 0,
        format!(
            "`underlay plan` after the reboot: exit {} (0 = nothing to do): {}",
            plan.code,
            plan.output.lines().last().unwrap_or("")
        ),
    );
    let apply = guest(lab, "h1", "underlay apply --json")?;
    let doc: serde_json::Value = serde_json::from_str(apply.output.trim()).unwrap_or_default();
    o.check(
        apply.code == 0 && doc["changed"] == serde_json::Value::Bool(false),
        format!(
            "a later `underlay apply` changes nothing: exit {}, changed={}{}",
            apply.code,
            doc["changed"],
            doc["failure"]["message"]
                .as_str()
                .map(|m| format!(", failure: {m}"))
                .unwrap_or_default()
        ),
    );
    Ok(o)
}

fn uplink_failure(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    boot_one(lab, "h1", &Boot::converge(FLAT_PROFILE))?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    check_converged(&mut o, lab, "h1", "before")?;
    let vm = lab.vm("h1")?.clone();
    let h = lab.host("h1")?;
    // The cable to ToR A: the guest loses carrier, nothing passes either way.
    let t0 = Instant::now();
    qemu::qmp(
        &vm.qmp_sock(),
        "set_link",
        Some(serde_json::json!({"name": "up0", "up": false})),
    )?;
    let tor_a = crate::bird::Bird::tor(&lab.lab, Tor::A);
    // Both sides polled together, times from the set_link: ToR A's session
    // (birdc) and the VM's host table (control channel round trip included).
    let (mut tor_down, mut host_one, mut n) = (None, None, 2);
    while t0.elapsed() < Duration::from_secs(30) && (tor_down.is_none() || host_one.is_none()) {
        if tor_down.is_none()
            && tor_a
                .bgp_sessions()
                .ok()
                .and_then(|v| v.into_iter().find(|s| s.name == h.name))
                .is_some_and(|s| s.state != "Established")
        {
            tor_down = Some(t0.elapsed());
        }
        if host_one.is_none() {
            n = nexthops(lab, "h1").unwrap_or(2);
            if n == 1 {
                host_one = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or("never".into())
    };
    o.check(
        tor_down.is_some(),
        format!(
            "ToR A noticed the dead link after {} (BFD 100 ms x 3)",
            ms(tor_down)
        ),
    );
    o.check(
        host_one.is_some(),
        format!(
            "the VM's table 1001 default dropped to {n} next hop after {}",
            ms(host_one)
        ),
    );
    check_reachable(&mut o, lab, "h1", "ToR A link down")?;
    qemu::qmp(
        &vm.qmp_sock(),
        "set_link",
        Some(serde_json::json!({"name": "up0", "up": true})),
    )?;
    let t1 = Instant::now();
    let back = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        all_established(lab, "h1") && nexthops(lab, "h1").is_ok_and(|n| n == 2)
    });
    o.check(
        back.is_some(),
        format!(
            "link back: both sessions Established and 2 next hops after {:.1} s",
            t1.elapsed().as_secs_f64()
        ),
    );
    Ok(o)
}

/// `__MONOTONIC_TIMESTAMP` (us) of the first PID 1 journal entry for `unit`
/// with `message_id`.
pub(super) fn journal_mono(
    entries: &[serde_json::Value],
    unit: &str,
    message_id: &str,
) -> Option<u64> {
    entries
        .iter()
        .filter(|e| e["UNIT"] == unit && e["MESSAGE_ID"] == message_id)
        .filter_map(|e| e["__MONOTONIC_TIMESTAMP"].as_str()?.parse().ok())
        .min()
}

/// systemd's catalog ids: a unit's job started / finished.
pub(super) const UNIT_STARTING: &str = "7d4958e842da4a758f6c1cdc7b36dcc5";
pub(super) const UNIT_STARTED: &str = "39f53479d3a045ac8e11786248231fbf";

pub(super) fn unit_state(lab: &VmLab, vm: &str, unit: &str) -> String {
    guest_out(
        lab,
        vm,
        &format!("systemctl show -p ActiveState --value {unit}"),
    )
    .unwrap_or_default()
}

fn readiness_order(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    // Longer than the gates unit's TimeoutStartSec (30 s): only
    // EXTEND_TIMEOUT_USEC keeps it starting; shorter than the gates' own 60 s.
    const HOLD: Duration = Duration::from_secs(40);
    let mut b = Boot::converge(FLAT_PROFILE);
    b.cmdline
        .push("systemd.wants=kubelet-standin.service".into());
    // The fabric answers no one until the scenario says so.
    b.links_up = false;
    boot_one(lab, "h1", &b)?;
    lab.vm("h1")?.ctl().wait_ready(BOOT_TIMEOUT)?;
    let converged = wait_until(BOOT_TIMEOUT, Duration::from_millis(500), || {
        unit_state(lab, "h1", "underlay.service") == "active"
    });
    o.check(
        converged.is_some(),
        "underlay.service converged the host (ToR links still down)".into(),
    );
    std::thread::sleep(HOLD);
    let gates = guest_out(
        lab,
        "h1",
        "echo \"$(systemctl show -p ActiveState --value underlay-gates.service)|$(systemctl show -p StatusText --value underlay-gates.service)\"",
    )?;
    let timeout = guest_out(
        lab,
        "h1",
        "systemctl show -p TimeoutStartUSec --value underlay-gates.service",
    )?;
    o.check(
        timeout == "30s" && gates.starts_with("activating|"),
        format!(
            "{} s in, past its TimeoutStartSec ({timeout}): EXTEND_TIMEOUT_USEC keeps the gates unit starting",
            HOLD.as_secs()
        ),
    );
    let kubelet = unit_state(lab, "h1", "kubelet-standin.service");
    let jobs = guest_out(lab, "h1", "systemctl list-jobs --no-legend --plain")?;
    o.check(
        gates.starts_with("activating|waiting for"),
        format!(
            "{} s later the gates unit is still starting, its STATUS says why: {gates}",
            HOLD.as_secs()
        ),
    );
    o.check(
        kubelet == "inactive"
            && jobs
                .lines()
                .any(|l| l.contains("kubelet-standin.service") && l.contains("waiting")),
        format!(
            "kubelet-standin is {kubelet}, its start job waiting: {:?}",
            jobs.lines().find(|l| l.contains("kubelet")).unwrap_or("")
        ),
    );
    let h = lab.host("h1")?;
    lab.set_tor_links(&h, true)?;
    let t0 = Instant::now();
    let started = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        unit_state(lab, "h1", "kubelet-standin.service") == "active"
    });
    o.check(
        started.is_some(),
        format!(
            "ToR links up: READY and kubelet-standin active {:.1} s later",
            t0.elapsed().as_secs_f64()
        ),
    );
    let json = guest_out(lab, "h1", "journalctl -b -o json --no-pager _PID=1")?;
    let entries: Vec<serde_json::Value> = json
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let converged_at = journal_mono(&entries, "underlay.service", UNIT_STARTED);
    let ready_at = journal_mono(&entries, "underlay-gates.service", UNIT_STARTED);
    let kubelet_at = journal_mono(&entries, "kubelet-standin.service", UNIT_STARTING);
    let s = |v: Option<u64>| {
        v.map(|us| format!("{:.3} s", us as f64 / 1e6))
            .unwrap_or("missing".into())
    };
    o.check(
        matches!((ready_at, kubelet_at), (Some(r), Some(k)) if k >= r),
        format!(
            "journal: underlay-gates started (READY) at {}, kubelet-standin starting at {}",
            s(ready_at),
            s(kubelet_at)
        ),
    );
    o.check(
        matches!((converged_at, ready_at), (Some(c), Some(r)) if r >= c + HOLD.as_micros() as u64),
        format!(
            "READY came only after the fabric did: converged at {}, READY at {} (links held down {} s)",
            s(converged_at),
            s(ready_at),
            HOLD.as_secs()
        ),
    );
    let echo = guest_out(lab, "h1", "journalctl -b -u kubelet-standin.service -o cat --no-pager | grep 'kubelet-standin: started'")?;
    o.info(format!("stand-in's own line: {echo}"));
    Ok(o)
}

/// The IPIP profile with transit addresses at global scope (nat.mode none,
/// the talk's setup, where MASQUERADE picks a transit address) and the guard
/// on or off.
fn ipip_profile(guard: bool) -> String {
    format!("{IPIP_PROFILE}\n[nat]\nmode = \"none\"\n\n[nat.guard]\nenabled = {guard}\n")
}

const POD_ECHO: &str = r#"import socket, threading
def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(b"pong", peer)
for p in (8080, 8081):
    threading.Thread(target=serve, args=(p,)).start()
"#;

/// Calico-style IPIP between the VMs (tunl0, the other node's block via the
/// other service IP onlink) and a pod behind each (cali1, proxy ARP).
fn ipip_setup(i: u8) -> String {
    let j = 3 - i;
    format!(
        "set -e
modprobe ipip
ip link set tunl0 up mtu 8980
ip addr replace 10.244.{i}.0/32 dev tunl0
ip route replace 10.244.{j}.0/26 via 10.10.0.1{j} dev tunl0 onlink
ip netns add pod
ip link add cali1 type veth peer name eth0 netns pod
ip -n pod link set lo up
ip -n pod addr add 10.244.{i}.10/32 dev eth0
ip -n pod link set eth0 up
ip -n pod route add 169.254.1.1 dev eth0 scope link
ip -n pod route add default via 169.254.1.1 dev eth0
ip link set cali1 up
sysctl -qw net.ipv4.conf.cali1.proxy_arp=1 net.ipv4.neigh.cali1.proxy_delay=0
ip route replace 10.244.{i}.10/32 dev cali1 scope link
cat >/run/pod-echo.py <<'PY'
{POD_ECHO}PY
systemd-run --quiet --unit=pod-echo ip netns exec pod python3 /run/pod-echo.py
"
    )
}

/// kube-proxy (1.19+: clears the mark before its MASQUERADE) with a ClusterIP
/// 10.96.0.10:80/udp whose endpoint is the pod on h2, and Calico's
/// cali-POSTROUTING MASQUERADE for host traffic into tunl0 ahead of it.
const KUBE_PROXY_AND_CALICO: &str = "set -e
iptables -t nat -N KUBE-MARK-MASQ
iptables -t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
iptables -t nat -N KUBE-POSTROUTING
iptables -t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
iptables -t nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
iptables -t nat -A KUBE-POSTROUTING -j MASQUERADE
iptables -t nat -N KUBE-SERVICES
iptables -t nat -A OUTPUT -j KUBE-SERVICES
iptables -t nat -A PREROUTING -j KUBE-SERVICES
iptables -t nat -N KUBE-SVC-TEST
iptables -t nat -A KUBE-SERVICES -d 10.96.0.10/32 -p udp --dport 80 -j KUBE-SVC-TEST
iptables -t nat -A KUBE-SVC-TEST ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
iptables -t nat -A KUBE-SVC-TEST -p udp -j DNAT --to-destination 10.244.2.10:8080
iptables -t nat -N cali-POSTROUTING
iptables -t nat -A cali-POSTROUTING -o tunl0 -m addrtype ! --src-type LOCAL --limit-iface-out -m addrtype --src-type LOCAL -j MASQUERADE
iptables -t nat -A POSTROUTING -j cali-POSTROUTING
iptables -t nat -A POSTROUTING -j KUBE-POSTROUTING
";

fn udp_flow(ns: Option<&str>, dst: &str, port: u16) -> String {
    let exec = ns
        .map(|n| format!("ip netns exec {n} "))
        .unwrap_or_default();
    format!(
        "{exec}python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b'ping', ('{dst}', {port}))
try:
    print(s.recvfrom(64)[0].decode())
except Exception as e:
    print('no reply:', e)
PY"
    )
}

/// One of h1's outer IPIP conntrack entries (10.10.0.11 -> 10.10.0.12).
#[derive(Debug)]
struct Outer {
    orig_src: String,
    reply_dst: String,
    line: String,
}

impl Outer {
    /// NATed: the reply goes to another address than the original source.
    fn natted(&self) -> bool {
        self.orig_src != self.reply_dst
    }
}

fn outer_entries(lab: &VmLab) -> Result<Vec<Outer>> {
    let out = guest_out(lab, "h1", "conntrack -L -p 4 2>/dev/null")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let addrs: Vec<&str> = l
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("src=").or_else(|| w.strip_prefix("dst=")))
                .collect();
            (addrs.len() >= 4 && addrs[0] == "10.10.0.11" && addrs[1] == "10.10.0.12").then(|| {
                Outer {
                    orig_src: addrs[0].to_string(),
                    reply_dst: addrs[3].to_string(),
                    line: l.to_string(),
                }
            })
        })
        .collect())
}

fn flow_and_outer(
    lab: &VmLab,
    flows: &[(Option<&str>, &str, u16)],
) -> Result<(Vec<String>, Vec<Outer>)> {
    guest(lab, "h1", "conntrack -F >/dev/null 2>&1 || true")?;
    let mut replies = vec![];
    for (ns, dst, port) in flows {
        replies.push(guest_out(lab, "h1", &udp_flow(*ns, dst, *port))?);
    }
    Ok((replies, outer_entries(lab)?))
}

fn ipip_mark_leak(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    let off = ipip_profile(false);
    for vm in ["h1", "h2"] {
        boot_one(lab, vm, &Boot::converge(&off))?;
    }
    for vm in ["h1", "h2"] {
        lab.wait_ready(vm, BOOT_TIMEOUT)?;
    }
    for (i, vm) in [(1u8, "h1"), (2, "h2")] {
        let r = guest(lab, vm, &ipip_setup(i))?;
        if !r.ok() {
            bail!("{vm}: IPIP/pod setup failed: {}", r.output);
        }
    }
    let r = guest(lab, "h1", KUBE_PROXY_AND_CALICO)?;
    if !r.ok() {
        bail!("h1: kube-proxy/Calico rules failed: {}", r.output);
    }
    let transit = guest_out(
        lab,
        "h1",
        "ip -4 -o addr show scope global | grep -v ' lo ' | awk '{print $4}' | paste -sd' '",
    )?;
    o.info(format!(
        "h1 transit addresses at global scope (nat.mode none): {transit}"
    ));

    // Guard off: the service flow's outer packet carries the mark.
    let (replies, outer) = flow_and_outer(lab, &[(None, "10.96.0.10", 80)])?;
    o.check(
        !outer.is_empty() && outer.iter().any(|e| e.natted() && e.reply_dst.starts_with("172.30.")),
        format!(
            "guard off: host -> ClusterIP 10.96.0.10:80 (endpoint on h2): outer IPIP entry NATed to a transit address: {:?} (reply {:?})",
            outer.iter().map(|e| &e.line).collect::<Vec<_>>(),
            replies
        ),
    );
    // The talk's symptom: the first inner flow decides for the later ones.
    let (replies, outer) = flow_and_outer(
        lab,
        &[(Some("pod"), "10.244.2.10", 8081), (None, "10.96.0.10", 80)],
    )?;
    o.check(
        !outer.is_empty() && outer.iter().all(|e| !e.natted()),
        format!(
            "guard off, pod-to-pod flow first: the shared outer entry stays un-NATed for the service flow after it: {:?} (replies {:?})",
            outer.iter().map(|e| &e.line).collect::<Vec<_>>(),
            replies
        ),
    );

    // Guard on: the profile changes, `underlay apply` adds the guard table
    // (the watcher stopped first: it would apply the new profile itself).
    guest(lab, "h1", "systemctl stop underlay-watch.service")?;
    let on = ipip_profile(true);
    let r = guest(
        lab,
        "h1",
        &format!("cat >/etc/underlay/profile.toml <<'TOML'\n{on}TOML\nunderlay apply"),
    )?;
    o.check(
        r.ok() && r.output.contains("nft"),
        format!(
            "guard on: `underlay apply` exit {}: {}",
            r.code,
            r.output
                .lines()
                .filter(|l| l.contains("nft") || l.contains("converged"))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
    );
    let (replies, outer) = flow_and_outer(lab, &[(None, "10.96.0.10", 80)])?;
    o.check(
        !outer.is_empty() && outer.iter().all(|e| !e.natted()),
        format!(
            "guard on: the same service flow's outer entry is not NATed: {:?}",
            outer.iter().map(|e| &e.line).collect::<Vec<_>>()
        ),
    );
    o.check(
        replies.iter().all(|r| r == "pong"),
        format!("guard on: the service flow gets its reply: {replies:?}"),
    );
    let src_nat = guest_out(lab, "h1", "conntrack -L -p 4 --src-nat 2>/dev/null")?;
    o.check(
        src_nat.is_empty(),
        format!("guard on: conntrack --src-nat lists no IPIP entry: {src_nat:?}"),
    );
    let chain = guest_out(lab, "h1", "nft list chain inet underlay mark_guard")?;
    let rule = chain
        .lines()
        .find(|l| l.contains("ipencap"))
        .unwrap_or("")
        .trim()
        .to_string();
    o.check(
        !rule.is_empty() && !rule.contains("counter packets 0 "),
        format!("the guard rule fired: {rule}"),
    );
    Ok(o)
}

fn scratch_root(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    boot_one(lab, "h1", &Boot::converge(FLAT_PROFILE))?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    let show = "systemctl show -p ActiveState,InvocationID --value bird.service | paste -sd' '";
    // The watcher would start BIRD again (its routes leave the host table):
    // this scenario is about what one `apply` does.
    guest(
        lab,
        "h1",
        "systemctl stop underlay-watch.service && systemctl stop bird.service",
    )?;
    let before = guest_out(lab, "h1", show)?;
    let r = guest(
        lab,
        "h1",
        "mkdir -p /tmp/scratch && underlay apply --root /tmp/scratch \
         --profile /etc/underlay/profile.toml --host /etc/underlay/host.toml",
    )?;
    let after = guest_out(lab, "h1", show)?;
    let jobs = guest_out(lab, "h1", "systemctl list-jobs --no-legend --plain")?;
    let skip = r
        .output
        .lines()
        .find(|l| l.contains("unit bird.service"))
        .unwrap_or("")
        .to_string();
    o.check(
        skip.starts_with("skip") && skip.contains("--root /tmp/scratch"),
        format!("apply --root /tmp/scratch (exit {}) says: {skip:?}", r.code),
    );
    o.check(
        before.starts_with("inactive") && after == before && !jobs.contains("bird"),
        format!("the machine's bird.service was left alone: before {before:?}, after {after:?}, jobs {jobs:?}"),
    );
    let r = guest(
        lab,
        "h1",
        &format!("underlay apply; echo \"after: $({show})\""),
    )?;
    let line = r
        .output
        .lines()
        .find(|l| l.contains("unit bird.service"))
        .unwrap_or("")
        .to_string();
    let state = r.output.lines().last().unwrap_or("").to_string();
    o.check(
        r.code == 0 && line.contains("started") && state.starts_with("after: active"),
        format!(
            "apply on / (exit {}) started it and waited for the job: {line:?}; {state}",
            r.code
        ),
    );
    check_converged(&mut o, lab, "h1", "after the restart")?;
    Ok(o)
}

fn boot_timings(lab: &mut VmLab, opts: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    // Two VMs boot side by side on two cores; the second round swaps which
    // one has the agent's units, so neither the slot nor the order favours one.
    let mut rows: Vec<BootTiming> = vec![];
    let mut chains = vec![];
    for (round, agent_vm) in [(1, "h1"), (2, "h2")] {
        for vm in ["h1", "h2"] {
            if let Ok(v) = lab.vm(vm) {
                v.stop();
            }
        }
        for vm in ["h1", "h2"] {
            let mut b = Boot::converge(FLAT_PROFILE);
            b.agent = vm == agent_vm;
            boot_one(lab, vm, &b)?;
        }
        for vm in ["h1", "h2"] {
            if vm == agent_vm {
                lab.wait_ready(vm, BOOT_TIMEOUT)?;
            } else {
                lab.wait_booted(vm, BOOT_TIMEOUT)?;
            }
        }
        for vm in ["h1", "h2"] {
            let mut t = timing::collect(lab.vm(vm)?, Some(vm == agent_vm))?;
            t.vm = format!("{vm}#{round}");
            chains.push((t.vm.clone(), t.agent, timing::critical_chain(lab.vm(vm)?)?));
            rows.push(t);
        }
    }
    let table = timing::table(&rows);
    for l in table.lines() {
        o.info(l.to_string());
    }
    for (vm, agent, chain) in &chains {
        o.info(format!(
            "{vm} ({}): systemd-analyze critical-chain multi-user.target",
            if *agent { "agent" } else { "baseline" }
        ));
        for l in chain.lines() {
            o.info(format!("  {l}"));
        }
    }
    o.check(
        rows.iter()
            .all(|r| r.multi_user_s.is_some() && (r.agent == r.ready_s.is_some()) && (r.agent == r.converged_s.is_some())),
        "every agent boot reached READY; every baseline boot reached multi-user with underlay's units masked (never ran)".into(),
    );
    let mut doc = serde_json::json!({
        "accelerator": lab.accel,
        "image": {
            "base_key": lab.image.base_key,
            "base_built_now_s": lab.image.base_build_s,
            "deb_installed_now_s": lab.image.image_build_s,
            "versions": lab.image.versions,
        },
        "vms": rows,
    });
    if let Some(line) = timing::overhead(&rows) {
        doc["overhead"] = line.into();
    }
    let path = opts
        .timings_json
        .clone()
        .unwrap_or_else(|| lab.lab.dir.join("timings.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    o.info(format!("timings written to {}", path.display()));
    Ok(o)
}

/// `vm up`'s status table: per VM, the ToR sessions, next hops, units.
pub fn status_table(lab: &VmLab) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<14} {:<34} {:>5} {:<10} {:<8}",
        "VM", "service IP", "ToR sessions", "paths", "system", "gates"
    );
    for h in lab.lab.hosts() {
        let Ok(vm) = lab.vm(&h.name) else { continue };
        let mut c = vm.ctl();
        let system = c
            .run("systemctl is-system-running", Duration::from_secs(20))
            .map(|r| r.output.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let gates = c
            .run(
                "systemctl show -p ActiveState --value underlay-gates.service",
                Duration::from_secs(20),
            )
            .map(|r| r.output.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        // QEMU serves one control connection at a time.
        drop(c);
        let _ = writeln!(
            out,
            "{:<4} {:<14} {:<34} {:>5} {:<10} {:<8}",
            h.name,
            h.service_ip.to_string(),
            sessions_line(lab, &h.name),
            nexthops(lab, &h.name)
                .map(|n| n.to_string())
                .unwrap_or("?".into()),
            system,
            gates
        );
    }
    Ok(out)
}
