//! `underlay watch` against the real kernel, in namespaces each test creates:
//! drift is repaired from netlink events (latencies printed), foreign route
//! churn wakes nothing, an overrun is a resync, a bad profile keeps the last
//! good one, and the readiness wait sleeps until the kernel says a link
//! changed. The watcher runs as the real binary; the tests read the status
//! file it writes for `underlay status`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{host_facts, must, Lab, ROLE};
use serde_json::Value;

/// A running `underlay watch` in the lab's host namespace.
struct Watch {
    child: Option<Child>,
    status: PathBuf,
    stderr: PathBuf,
}

impl Watch {
    fn start(lab: &Lab, role: &Path, host: &Path, extra: &[&str]) -> Watch {
        let w = Watch::spawn(lab, role, host, extra);
        // The kernel settles on its own after the first converge (carrier,
        // then IPv6 link-local addresses): snapshots start after that.
        let t0 = Instant::now();
        while !["eth0", "eth1"]
            .iter()
            .all(|d| link_field(lab, d, "operstate") == "UP")
        {
            assert!(t0.elapsed() < Duration::from_secs(5), "no carrier");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        w
    }

    fn spawn(lab: &Lab, role: &Path, host: &Path, extra: &[&str]) -> Watch {
        let stderr = lab.root().join("watch.stderr");
        let mut args = vec!["watch"];
        args.extend_from_slice(extra);
        let child = lab
            .underlay_cmd(&args, role, host)
            .env("UNDERLAY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(lab.root().join("watch.stdout")).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start underlay watch");
        let w = Watch {
            child: Some(child),
            status: lab.root().join("run/underlay/watch.json"),
            stderr,
        };
        w.wait_for("the first converge", Duration::from_secs(20), |s| {
            s["converged"] == true
        });
        // Then the follow-up check of our own writes, if any: quiet for 300 ms.
        let mut last = w.status().unwrap()["counters"]["reconciles"].clone();
        let mut since = Instant::now();
        while since.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(20));
            let now = w.status().unwrap()["counters"]["reconciles"].clone();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        w
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Polls the status file every millisecond until `pred` holds.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "watch: no {what} within {timeout:?}; status: {:?}\nlog:\n{}",
                    self.status(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.status().unwrap()["counters"][name].as_u64().unwrap()
    }

    /// utime + stime of the watcher, in milliseconds (/proc/PID/stat).
    fn cpu_ms(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of stat; `rest` starts at field 3.
        let ticks = f[11] + f[12];
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) } as f64;
        ticks as f64 * 1000.0 / hz
    }

    fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "watch did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn has_addr(lab: &Lab, dev: &str, local: &str) -> bool {
    lab.ip_json(&["addr", "show", "dev", dev])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
        .any(|a| a["local"] == local)
}

fn link_field(lab: &Lab, dev: &str, field: &str) -> Value {
    lab.ip_json(&["link", "show", "dev", dev])[0][field].clone()
}

/// Runs `drift`, waits until the watcher counts one more repair, and
/// returns (the watcher's own latency, the latency seen from here since
/// `drift` returned). Then checks our write caused at most one follow-up.
fn repair(w: &Watch, what: &str, expect: u64, drift: impl FnOnce()) -> (f64, f64) {
    let timeout = Duration::from_secs(5);
    let before = w.status().unwrap();
    let repairs = before["counters"]["repairs"].as_u64().unwrap();
    let reconciles = before["counters"]["reconciles"].as_u64().unwrap();
    drift();
    let t0 = Instant::now();
    let after = w.wait_for(what, timeout, |s| {
        s["counters"]["repairs"].as_u64().unwrap() > repairs && s["converged"] == true
    });
    let external = t0.elapsed().as_secs_f64() * 1e3;
    let last = after["repairs"].as_array().unwrap().last().unwrap().clone();
    let internal = last["latency_ms"].as_f64().unwrap();
    println!(
        "repair {what:<32} {internal:>7.1} ms event->converged (watcher), {external:>7.1} ms seen by the test; {}: {}",
        last["id"].as_str().unwrap(),
        last["what"].as_str().unwrap()
    );
    // Our own writes: at most one follow-up check, and it changes nothing.
    std::thread::sleep(Duration::from_millis(300));
    let s = w.status().unwrap();
    let c = &s["counters"];
    let runs = c["reconciles"].as_u64().unwrap() - reconciles;
    assert!(
        (1..=2).contains(&runs),
        "{what}: {runs} reconciles for one drift\n{}",
        w.log()
    );
    assert_eq!(
        c["repairs"].as_u64().unwrap() - repairs,
        expect,
        "{what}: resources repaired\n{}",
        w.log()
    );
    (internal, external)
}

/// A snapshot without operational state (carrier settles on its own).
fn stable(lab: &Lab) -> String {
    lab.snapshot(common::PROFILE_SYSCTLS)
        .lines()
        .map(|l| {
            let mut out = Vec::new();
            let mut words = l.split(' ');
            while let Some(w) = words.next() {
                if w == "state" {
                    words.next();
                } else {
                    out.push(w);
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn profile_and_host(lab: &Lab) -> (PathBuf, PathBuf) {
    let role = lab.write_host("role.toml", &std::fs::read_to_string(ROLE).unwrap());
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    (role, host)
}

#[test]
fn drift_is_repaired_from_events() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    let w = Watch::start(
        &lab,
        &role,
        &host,
        &["--resync-interval", "3600", "--poll-interval", "0.5"],
    );
    let s = w.status().unwrap();
    assert_eq!(s["counters"]["by_cause"]["start"], 1);
    assert!(s["counters"]["initial_changes"].as_u64().unwrap() >= 20);
    assert_eq!(s["events"]["kernel_filter"], true);
    // The first converge's own writes: at most one follow-up check.
    assert!(w.counter("reconciles") <= 2, "{}", w.log());
    let mut figures = vec![];

    figures.push(repair(&w, "service IP deleted", 1, || {
        lab.ip(&["addr", "del", "10.10.0.11/32", "dev", "lo"])
    }));
    assert!(has_addr(&lab, "lo", "10.10.0.11"));
    assert!(w
        .log()
        .contains("repaired address 10.10.0.11/32 dev lo: deleted by someone else"));

    figures.push(repair(&w, "rule deleted", 1, || {
        lab.ip(&["rule", "del", "pref", "30001"])
    }));
    let rules = lab.ip_json(&["rule"]);
    assert!(
        rules
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["priority"] == 30001
                && (r["protocol"] == "211" || r["protocol"] == "underlay"))
    );

    figures.push(repair(&w, "uplink MTU changed", 1, || {
        lab.ip(&["link", "set", "eth1", "mtu", "1500"])
    }));
    assert_eq!(link_field(&lab, "eth1", "mtu"), 9000);

    // Down, the kernel also drops eth0's IPv6 transit address: two repairs.
    figures.push(repair(&w, "uplink set down", 2, || {
        lab.ip(&["link", "set", "eth0", "down"])
    }));
    let flags = link_field(&lab, "eth0", "flags");
    assert!(
        flags.as_array().unwrap().iter().any(|f| f == "UP"),
        "{flags}"
    );
    assert!(has_addr(&lab, "eth0", "fd00:30::1"));

    figures.push(repair(&w, "rp_filter changed (netconf)", 1, || {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &lab.host,
                "sysctl",
                "-qw",
                "net.ipv4.conf.eth0.rp_filter=1",
            ],
        );
    }));
    assert_eq!(lab.sysctl("net.ipv4.conf.eth0.rp_filter"), "2");

    let rt_tables = lab.root().join("etc/iproute2/rt_tables.d/underlay.conf");
    figures.push(repair(&w, "rt_tables file deleted (poll)", 1, || {
        std::fs::remove_file(&rt_tables).unwrap()
    }));
    assert!(std::fs::read_to_string(&rt_tables)
        .unwrap()
        .contains("1001\tunderlay-host"));

    // Nothing else woke it: no resync ran in this test.
    let s = w.status().unwrap();
    assert_eq!(s["counters"]["by_cause"]["resync"], 0);
    assert_eq!(s["counters"]["failures"]["system"], 0);
    let evented: Vec<f64> = figures[..5].iter().map(|f| f.0).collect();
    println!(
        "evented repairs, watcher latency: max {:.1} ms (debounce 10 ms included)",
        evented.iter().copied().fold(0.0, f64::max)
    );

    // What `underlay status` shows while it runs.
    let (code, doc, _) = lab.underlay("status", &role, &host);
    assert_eq!(code, 0);
    let wd = &doc["watch"];
    assert_eq!(wd["running"], true, "{wd}");
    assert_eq!(wd["counters"]["repairs"], 7);
    assert!(wd["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "10.10.0.11/32 dev lo" && r["purpose"] == "repair"));
    assert_eq!(w.stop(), 0, "SIGTERM exits 0");
    let (_, doc, _) = lab.underlay("status", &role, &host);
    assert_eq!(doc["watch"]["running"], false);
    assert!(doc["watch"]["stopped_unix"].is_number());
    let out = lab.underlay_raw(&["status"], &role, &host);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("watch: stopped; "), "{text}");
}

#[test]
fn sysctls_without_events_are_repaired_by_the_resync() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    let w = Watch::start(&lab, &role, &host, &["--resync-interval", "1"]);
    let (_, external) = repair(&w, "arp_ignore changed (resync)", 1, || {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &lab.host,
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=0",
            ],
        );
    });
    assert_eq!(lab.sysctl("net.ipv4.conf.all.arp_ignore"), "1");
    assert!(external < 3000.0, "within the 1 s resync: {external} ms");
    let s = w.status().unwrap();
    assert_eq!(
        s["repairs"].as_array().unwrap().last().unwrap()["id"],
        "net.ipv4.conf.all.arp_ignore"
    );
    assert!(
        s["counters"]["by_cause"]["resync"].as_u64().unwrap() >= 1,
        "{s:#}\n{}",
        w.log()
    );
    assert_eq!(w.stop(), 0);
}

/// One `ip -batch -` reading `lines` at `rate` lines per second from a pipe.
fn churn(ns: &str, lines: Vec<String>, rate: u32) -> std::thread::JoinHandle<(usize, Duration)> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ip -batch");
    std::thread::spawn(move || {
        let mut stdin = child.stdin.take().unwrap();
        let start = Instant::now();
        // 10 ms slices; the pipe blocks when ip falls behind.
        let per_slice = (rate / 100).max(1) as usize;
        let mut sent = 0;
        for chunk in lines.chunks(per_slice) {
            let text: String = chunk.iter().map(|l| format!("{l}\n")).collect();
            if stdin.write_all(text.as_bytes()).is_err() {
                break;
            }
            sent += chunk.len();
            let due = Duration::from_secs_f64(sent as f64 / f64::from(rate));
            if let Some(d) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(d);
            }
        }
        drop(stdin);
        let _ = child.wait();
        (sent, start.elapsed())
    })
}

/// `secs` seconds of add/delete pairs of /32s via eth0, in `table` (or main).
fn route_lines(base: &str, table: Option<u32>, rate: u32, secs: u32) -> Vec<String> {
    let t = table.map(|t| format!(" table {t}")).unwrap_or_default();
    let n = (rate * secs) as usize;
    (0..n)
        .map(|i| {
            let k = (i / 2) % 60000;
            let op = if i % 2 == 0 { "add" } else { "del" };
            format!(
                "route {op} {base}.{}.{}/32 dev eth0 proto static{t}",
                k / 250,
                k % 250 + 1
            )
        })
        .collect()
}

#[test]
fn foreign_route_churn_wakes_nothing() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    let w = Watch::start(&lab, &role, &host, &["--resync-interval", "3600"]);
    std::thread::sleep(Duration::from_millis(500));
    let before = w.status().unwrap();
    let snap = stable(&lab);
    let owned = |s: &str| -> String {
        // Our objects only: the churn adds and removes routes meanwhile.
        s.lines()
            .filter(|l| !l.contains("198.18.") && !l.contains("198.19."))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cpu0 = w.cpu_ms();
    let rss0 = w.rss_kb();
    let (rate, secs) = (10_000, 20);
    let t0 = Instant::now();
    let a = churn(&lab.host, route_lines("198.18", None, rate, secs), rate);
    let b = churn(
        &lab.host,
        route_lines("198.19", Some(100), rate, secs),
        rate,
    );
    let (na, da) = a.join().unwrap();
    let (nb, db) = b.join().unwrap();
    let window = t0.elapsed();
    let cpu = w.cpu_ms() - cpu0;
    let after = w.status().unwrap();
    let got = |v: &Value, k: &str| v["events"][k].as_u64().unwrap();
    println!(
        "churn: {na} route changes in main in {:.1} s ({:.0}/s), {nb} in table 100 in {:.1} s ({:.0}/s)",
        da.as_secs_f64(),
        na as f64 / da.as_secs_f64(),
        db.as_secs_f64(),
        nb as f64 / db.as_secs_f64()
    );
    println!(
        "watcher over {:.1} s: {cpu:.0} ms CPU (utime+stime) = {:.2} % of one core; {} notifications reached it, {} relevant; RSS {} -> {} KB",
        window.as_secs_f64(),
        cpu / window.as_secs_f64() / 10.0,
        got(&after, "received") - got(&before, "received"),
        got(&after, "relevant") - got(&before, "relevant"),
        rss0,
        w.rss_kb()
    );
    // The load really ran (else this would pass vacuously).
    assert!(
        na + nb >= (rate * secs) as usize,
        "the churn generators reached only {} changes",
        na + nb
    );
    assert_eq!(
        after["counters"]["reconciles"],
        before["counters"]["reconciles"],
        "foreign churn started a reconcile\n{}",
        w.log()
    );
    assert_eq!(after["counters"]["repairs"], before["counters"]["repairs"]);
    assert_eq!(owned(&stable(&lab)), owned(&snap), "our objects changed");
    // The kernel filter kept the churn out of the socket altogether.
    assert!(
        got(&after, "received") - got(&before, "received") < 100,
        "foreign routes reached user space: the BPF filter is not working"
    );
    assert!(
        cpu < 0.05 * window.as_secs_f64() * 1000.0,
        "{cpu} ms CPU in {window:?}"
    );
    assert_eq!(w.stop(), 0);
}

#[test]
fn an_overrun_is_a_full_resync_and_the_watcher_goes_on() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    // A tiny receive buffer: a few notifications fill it.
    let mut w = Watch::start(
        &lab,
        &role,
        &host,
        &["--resync-interval", "3600", "--test-rcvbuf", "2048"],
    );
    let rcvbuf = w.status().unwrap()["events"]["rcvbuf"].as_u64().unwrap();
    // Routes in the host table are relevant, so they reach the socket.
    let flood: String = (0..20_000)
        .map(|i| {
            format!(
                "route add 198.20.{}.{}/32 dev eth0 table 1001\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let file = lab.write_host("flood.batch", &flood);
    must(
        "ip",
        &["-n", &lab.host, "-force", "-batch", &file.to_string_lossy()],
    );
    let s = w.wait_for("overrun resync", Duration::from_secs(10), |s| {
        s["counters"]["by_cause"]["overrun"].as_u64().unwrap() >= 1 && s["converged"] == true
    });
    println!(
        "overrun: receive buffer {rcvbuf} bytes, {} overruns, {} reconciles after 20 000 host-table routes",
        s["events"]["overruns"], s["counters"]["reconciles"]
    );
    assert!(s["events"]["overruns"].as_u64().unwrap() >= 1);
    assert!(w.log().contains("ENOBUFS"), "{}", w.log());
    assert!(w.alive(), "the watcher survived the overrun");
    // ...and still repairs.
    repair(&w, "service IP after overrun", 1, || {
        lab.ip(&["addr", "del", "10.10.0.11/32", "dev", "lo"])
    });
    assert_eq!(w.stop(), 0);
}

#[test]
fn a_bad_profile_keeps_the_last_good_state_until_fixed() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    let w = Watch::start(
        &lab,
        &role,
        &host,
        &[
            "--resync-interval",
            "3600",
            "--poll-interval",
            "0.2",
            "--json",
        ],
    );
    let snap = stable(&lab);
    let good = std::fs::read_to_string(&host).unwrap();
    std::fs::write(&host, good.replace("10.10.0.11/32", "10.10.0.300/32")).unwrap();
    let s = w.wait_for("input error", Duration::from_secs(5), |s| {
        !s["input_error"].is_null()
    });
    let msg = s["input_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("host.toml") && msg.contains("service_ipv4"),
        "{msg}"
    );
    assert_eq!(s["input_error"]["kind"], "input");
    assert!(
        w.log().contains("keeping the last good profile"),
        "{}",
        w.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let now = stable(&lab);
    let diff: Vec<&str> = now
        .lines()
        .filter(|l| !snap.lines().any(|s| s == *l))
        .chain(snap.lines().filter(|l| !now.lines().any(|n| n == *l)))
        .collect();
    assert!(diff.is_empty(), "a bad profile changed the host: {diff:#?}");
    // Drift is still repaired, to the last good profile.
    repair(&w, "service IP with a bad profile", 1, || {
        lab.ip(&["addr", "del", "10.10.0.11/32", "dev", "lo"])
    });
    // The fix: a new service IP replaces ours.
    std::fs::write(&host, good.replace("10.10.0.11/32", "10.10.0.12/32")).unwrap();
    let s = w.wait_for("fixed profile", Duration::from_secs(5), |s| {
        s["input_error"].is_null() && s["counters"]["profile_changes"].as_u64().unwrap() >= 2
    });
    assert_eq!(s["converged"], true);
    assert!(has_addr(&lab, "lo", "10.10.0.12"));
    assert!(!has_addr(&lab, "lo", "10.10.0.11"));
    assert!(w.log().contains("inputs fixed and loaded"), "{}", w.log());
    assert_eq!(w.stop(), 0);
    // --json: one document per reconcile that changed something.
    let out = std::fs::read_to_string(lab.root().join("watch.stdout")).unwrap();
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for d in &docs {
        common::assert_schema(d);
        assert_eq!(d["command"], "watch");
    }
    // The start (a fresh host), the repair, the fixed profile.
    assert_eq!(docs.len(), 3, "{out}");
    assert!(docs
        .iter()
        .all(|d| d["changed"] == true && d["converged"] == true));
}

#[test]
fn a_bad_profile_at_start_is_exit_1_and_changes_nothing() {
    let lab = Lab::new();
    let (role, host) = profile_and_host(&lab);
    std::fs::write(&host, "version = 1\nhostname = \"x\"\n").unwrap();
    let snap = lab.snapshot(common::PROFILE_SYSCTLS);
    let out = lab.underlay_raw(&["watch"], &role, &host);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("underlay watch: error") && err.contains("host.toml"),
        "{err}"
    );
    assert_eq!(lab.snapshot(common::PROFILE_SYSCTLS), snap);
}

/// A profile without [bgp]: the uplinks gate is the only one, and the kernel
/// announces link state, so the wait sleeps until the carrier comes.
#[test]
fn the_readiness_wait_wakes_on_the_link_event() {
    let lab = Lab::new();
    let text = std::fs::read_to_string(ROLE).unwrap();
    let no_bgp = &text[..text.find("\n[bgp]").expect("the role has [bgp]")];
    let role = lab.write_host("role.toml", no_bgp);
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    // No carrier on eth1 until its ToR end comes up. eth1 is up already:
    // right after `link set up` the kernel reports operstate UNKNOWN (which
    // the gate counts as up, for lo) until linkwatch says DOWN.
    must("ip", &["-n", &lab.tor, "link", "set", "torb0", "down"]);
    lab.ip(&["link", "set", "eth1", "up"]);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let child = lab
        .underlay_cmd(
            &["apply", "--json", "--wait", "--wait-timeout", "20", "-vv"],
            &role,
            &host,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    must("ip", &["-n", &lab.tor, "link", "set", "torb0", "up"]);
    let out = child.wait_with_output().unwrap();
    let total = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["gates"]["passed"], true);
    let waited = doc["gates"]["elapsed_ms"].as_u64().unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("readiness:"))
        .unwrap_or_else(|| panic!("no readiness debug line: {err}"));
    let readings: u32 = line
        .split("readiness: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    println!("readiness: {readings} readings in the {waited} ms wait; carrier up 1500 ms after the start, exit after {total:?}");
    assert!(
        total >= Duration::from_millis(1500),
        "it waited for the carrier"
    );
    // Polling every 100 ms would have read ~15 times by then.
    assert!(
        readings <= 6,
        "{readings} readings: not event-driven\n{err}"
    );
}
