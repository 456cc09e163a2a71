//! The watch loop on the fake system and scripted triggers, on virtual
//! time: what starts a reconcile, what does not, and how often.

use std::time::{Duration, Instant};

use super::*;
use crate::desired::SysctlKey;
use crate::profile::load_str;
use crate::system::events::{FakeEvents, LinkWant};
use crate::system::fake::FakeSystem;

const ROLE: &str = include_str!("../../../profiles/l3-ecmp-calico.toml");

fn host(service: &str) -> String {
    format!(
        r#"version = 1
hostname = "h1"
asn = 65101
service_ipv4 = "{service}"
[[uplinks]]
name = "tor-a"
nic = {{ name = "eth0" }}
ipv4 = {{ address = "172.30.0.1/31", peer = "172.30.0.0" }}
peer_asn = 65001
[[uplinks]]
name = "tor-b"
nic = {{ name = "eth1" }}
ipv4 = {{ address = "172.30.1.1/31", peer = "172.30.1.0" }}
peer_asn = 65002
"#
    )
}

fn desired(service: &str) -> Desired {
    load_str("role.toml", ROLE, "host.toml", &host(service)).expect("valid profile")
}

fn fresh() -> FakeSystem {
    let mut f = FakeSystem::with_nics(&["eth0", "eth1"]);
    for k in [
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.ipv4.fib_multipath_hash_policy",
        "net.ipv6.fib_multipath_hash_policy",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.all.arp_announce",
        "net.ipv4.conf.eth0.rp_filter",
        "net.ipv4.conf.eth1.rp_filter",
    ] {
        f.sysctls.insert(SysctlKey::parse(k).unwrap(), "0".into());
    }
    f
}

/// One reconcile as the observer saw it: causes, purpose, changes, latency, converged.
type Run = (Vec<Cause>, Purpose, Vec<Change>, Duration, bool);

#[derive(Default)]
struct Rec {
    runs: Vec<Run>,
    notices: Vec<String>,
    watchdogs: usize,
    last: Option<WatchStatus>,
}

impl Observer for Rec {
    fn reconciled(&mut self, r: &Reconciled) {
        let ok = r
            .result
            .is_ok_and(|rep| rep.failure.is_none() && rep.converged());
        self.runs.push((
            r.causes.to_vec(),
            r.purpose,
            r.changes.to_vec(),
            r.latency,
            ok,
        ));
    }
    fn notice(&mut self, n: &Notice) {
        self.notices.push(match n {
            Notice::Woken { first, .. } => format!("woken: {first}"),
            Notice::Overrun => "overrun".into(),
            Notice::InputRejected(e) => format!("rejected: {}", e.message),
            Notice::InputLoaded { fixed } => format!("loaded fixed={fixed}"),
            Notice::Retry { after, .. } => format!("retry in {}s", after.as_secs()),
            Notice::WaitingForChange { message } => format!("waiting: {message}"),
            Notice::Stopping(s) => format!("stop {s}"),
        });
    }
    fn status(&mut self, s: &WatchStatus) {
        self.last = Some(s.clone());
    }
    fn watchdog(&mut self) {
        self.watchdogs += 1;
    }
}

#[derive(Default)]
struct FakeInputs {
    changed: bool,
    next: Option<Result<Desired, InputError>>,
    loads: usize,
}

impl Inputs for FakeInputs {
    fn changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
    fn load(&mut self) -> Result<Desired, InputError> {
        self.loads += 1;
        self.next.take().expect("a scripted load")
    }
}

struct World {
    w: Watcher,
    sys: FakeSystem,
    ev: FakeEvents,
    inputs: FakeInputs,
    rec: Rec,
    steps: usize,
}

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

impl World {
    fn new(cfg: Config) -> World {
        let ev = FakeEvents::new();
        let w = Watcher::new(cfg, desired("10.10.0.11/32"), ev.now());
        World {
            w,
            sys: fresh(),
            ev,
            inputs: FakeInputs::default(),
            rec: Rec::default(),
            steps: 0,
        }
    }

    /// Steps until the virtual clock reaches `now + d` (or a stop).
    fn run_for(&mut self, d: Duration) -> Control {
        let until = self.ev.now() + d;
        self.ev.horizon = Some(until);
        while self.ev.now() < until {
            self.steps += 1;
            assert!(self.steps < 200_000, "the loop spins");
            let c = self
                .w
                .step(&mut self.sys, &mut self.ev, &mut self.inputs, &mut self.rec)
                .expect("step");
            if c == Control::Stop {
                return c;
            }
        }
        Control::Continue
    }

    fn started() -> World {
        let mut w = World::new(Config::default());
        w.run_for(100 * MS);
        assert_eq!(w.rec.runs.len(), 1, "one initial converge");
        assert_eq!(w.rec.runs[0].1, Purpose::Initial);
        assert!(w.rec.runs[0].4, "converged: {:?}", w.rec.notices);
        w
    }

    fn counters(&self) -> &status::Counters {
        &self.rec.last.as_ref().expect("a status").counters
    }

    fn delete_service_ip(&mut self) {
        let before = self.sys.addresses.len();
        self.sys
            .addresses
            .retain(|a| a.prefix.to_string() != "10.10.0.11/32");
        assert_eq!(self.sys.addresses.len(), before - 1);
    }
}

#[test]
fn start_converges_once_then_only_the_resync_runs() {
    let mut w = World::started();
    // The watcher lives on; the run lock lives for one reconcile only, or
    // every `underlay apply` by hand waits for it and fails.
    assert!(
        !w.sys.locked,
        "the watcher kept the run lock after its reconcile"
    );
    let c = w.counters().clone();
    assert!(c.initial_changes >= 15, "{c:?}");
    assert_eq!(c.repairs, 0);
    let waits_before = w.ev.waits;
    w.run_for(Duration::from_secs(3601));
    // An hour idle: one no-op resync every two minutes, nothing else.
    let runs = &w.rec.runs[1..];
    assert_eq!(
        runs.len(),
        30,
        "{:?}",
        runs.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert!(runs
        .iter()
        .all(|r| r.0 == [Cause::Resync] && r.2.is_empty() && r.4));
    assert_eq!(w.counters().noop, 30);
    // Woken by the poll (2 s) and the resync only.
    assert!(w.ev.waits - waits_before <= 1900, "{} waits", w.ev.waits);
    // The interest follows the resolved target.
    let i = w.ev.interest.as_ref().expect("interest set");
    let names: Vec<&str> = i.links.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0", "eth1"]);
    assert_eq!(i.links[1].want, LinkWant::Drift { mtu: Some(9000) });
    assert_eq!(i.host_table, Some(1001));
    assert_eq!(i.protocol, 211);
    assert_eq!(i.rules.len(), 2);
    assert!(i
        .addresses
        .iter()
        .any(|a| a.addr.to_string() == "10.10.0.11"));
    // ip_forward, all/eth0/eth1 rp_filter, ipv6 all.forwarding.
    assert_eq!(i.netconf.len(), 5, "{:?}", i.netconf);
}

#[test]
fn a_kernel_event_repairs_after_the_debounce() {
    let mut w = World::started();
    w.delete_service_ip();
    w.ev.push(5 * MS, FakeEvents::changed("address deleted"));
    w.run_for(50 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    let (causes, purpose, changes, latency, ok) = &w.rec.runs[1];
    assert_eq!(causes, &[Cause::Kernel]);
    assert_eq!(*purpose, Purpose::Repair);
    assert!(ok);
    assert_eq!(
        changes,
        &[Change {
            kind: "address".into(),
            id: "10.10.0.11/32 dev lo".into(),
            what: "deleted by someone else".into()
        }]
    );
    // The debounce is the only delay on virtual time.
    assert_eq!(*latency, 10 * MS);
    assert_eq!(w.counters().repairs, 1);
    let st = w.rec.last.as_ref().unwrap();
    assert_eq!(st.repairs.last().unwrap().purpose, "repair");
    assert!(w
        .sys
        .addresses
        .iter()
        .any(|a| a.prefix.to_string() == "10.10.0.11/32"));
}

#[test]
fn a_burst_of_events_is_one_reconcile() {
    let mut w = World::started();
    w.delete_service_ip();
    for i in 0..40 {
        w.ev.push((i + 1) * MS, FakeEvents::changed("x"));
    }
    w.run_for(S);
    assert_eq!(w.rec.runs.len(), 2, "{:?}", w.rec.runs);
    // 40 ms of events, then 10 ms quiet.
    assert_eq!(w.rec.runs[1].3, 49 * MS);
}

#[test]
fn a_steady_trickle_still_reconciles_at_the_debounce_cap() {
    let mut w = World::started();
    w.delete_service_ip();
    for i in 0..100 {
        w.ev.push((i + 1) * 5 * MS, FakeEvents::changed("x"));
    }
    w.run_for(120 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert_eq!(w.rec.runs[1].3, 100 * MS);
    assert_eq!(w.counters().repairs, 1);
}

#[test]
fn the_token_bucket_caps_a_fight() {
    let mut w = World::new(Config {
        max_rate: 1.0,
        burst: 3,
        ..Config::default()
    });
    w.run_for(100 * MS);
    // Something pokes our objects every 20 ms for 10 s.
    for i in 0..500 {
        w.ev.push((i + 1) * 20 * MS, FakeEvents::changed("x"));
    }
    w.run_for(10 * S);
    let n = w.rec.runs.len() - 1;
    // Two saved tokens, then one a second (not one per 30 ms debounce).
    assert!((10..=13).contains(&n), "{n} reconciles in 10 s");
}

#[test]
fn failures_back_off_and_recover() {
    let mut w = World::started();
    w.delete_service_ip();
    // The next apply fails (the host refuses); later ones succeed.
    w.sys.fail_at = Some(w.sys.applied.len());
    w.ev.push(MS, FakeEvents::changed("x"));
    w.run_for(100 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert!(!w.rec.runs[1].4);
    assert_eq!(w.rec.notices.last().unwrap(), "retry in 1s");
    assert_eq!(w.counters().failures.system, 1);
    w.sys.fail_at = None;
    // Events during the back-off do not cut it short.
    w.ev.push(200 * MS, FakeEvents::changed("x"));
    w.run_for(500 * MS);
    assert_eq!(w.rec.runs.len(), 2, "{:?} {:?}", w.rec.runs, w.rec.notices);
    w.run_for(S);
    assert_eq!(w.rec.runs.len(), 3);
    let (causes, _, changes, _, ok) = &w.rec.runs[2];
    assert!(causes.contains(&Cause::Retry), "{causes:?}");
    assert!(ok);
    assert_eq!(changes.len(), 1);
}

#[test]
fn repeated_failures_double_the_delay() {
    let mut w = World::started();
    w.delete_service_ip();
    w.sys.fail_at = Some(0); // never reached again: applied only grows
    for _ in 0..4 {
        w.sys.fail_at = Some(w.sys.applied.len());
        w.ev.push(MS, FakeEvents::changed("x"));
        w.run_for(20 * S);
    }
    let retries: Vec<&String> = w
        .rec
        .notices
        .iter()
        .filter(|n| n.starts_with("retry"))
        .collect();
    assert_eq!(retries[..3], ["retry in 1s", "retry in 2s", "retry in 4s"]);
}

#[test]
fn a_bad_profile_keeps_the_last_good_one() {
    let mut w = World::started();
    w.inputs.changed = true;
    w.inputs.next = Some(Err(InputError {
        kind: ErrorKind::Input,
        message: "host.toml:4:16: service_ipv4: found 'banana'".into(),
    }));
    w.run_for(3 * S);
    assert_eq!(w.inputs.loads, 1);
    // Refused: nothing ran, the error is in the status.
    assert_eq!(w.rec.runs.len(), 1);
    let st = w.rec.last.clone().unwrap();
    assert!(st.input_error.as_ref().unwrap().message.contains("banana"));
    assert_eq!(st.counters.failures.input, 1);
    // Drift is still repaired, to the last good profile.
    w.delete_service_ip();
    w.ev.push(MS, FakeEvents::changed("x"));
    w.run_for(100 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert!(w
        .sys
        .addresses
        .iter()
        .any(|a| a.prefix.to_string() == "10.10.0.11/32"));
    // The fixed profile moves the service IP.
    w.inputs.changed = true;
    w.inputs.next = Some(Ok(desired("10.10.0.12/32")));
    w.run_for(3 * S);
    assert_eq!(w.rec.runs.len(), 3);
    let (causes, purpose, changes, _, ok) = &w.rec.runs[2];
    assert_eq!(causes, &[Cause::Input]);
    assert_eq!(*purpose, Purpose::Profile);
    assert!(ok);
    let ids: Vec<&str> = changes.iter().map(|c| c.id.as_str()).collect();
    assert!(ids.contains(&"10.10.0.12/32 dev lo"), "{ids:?}");
    assert!(ids.contains(&"10.10.0.11/32 dev lo"), "{ids:?}");
    assert!(w.rec.notices.contains(&"loaded fixed=true".to_string()));
    let st = w.rec.last.clone().unwrap();
    assert!(st.input_error.is_none());
    assert!(st.counters.profile_changes >= 2);
    assert_eq!(st.counters.repairs, 1);
}

#[test]
fn an_overrun_is_a_full_resync_and_the_loop_goes_on() {
    let mut w = World::started();
    w.delete_service_ip();
    w.ev.push(MS, Wake::Overrun);
    w.run_for(100 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert_eq!(w.rec.runs[1].0, [Cause::Overrun]);
    assert_eq!(w.rec.runs[1].2.len(), 1);
    assert!(w.rec.notices.contains(&"overrun".to_string()));
    w.ev.push(MS, FakeEvents::changed("x"));
    w.run_for(100 * MS);
    assert_eq!(w.rec.runs.len(), 3);
}

#[test]
fn a_deleted_generated_file_is_seen_by_the_poll() {
    let mut w = World::started();
    let path = std::path::PathBuf::from(crate::plan::target::RT_TABLES_FILE);
    assert!(w.sys.files.remove(&path).is_some());
    w.run_for(2500 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert_eq!(w.rec.runs[1].0, [Cause::Files]);
    assert_eq!(w.rec.runs[1].2[0].id, RT_TABLES_ID);
    assert!(w.sys.files.contains_key(&path));
    // Our own write is not a change on the next poll.
    w.run_for(10 * S);
    assert_eq!(w.rec.runs.len(), 2);
}

const RT_TABLES_ID: &str = crate::plan::target::RT_TABLES_FILE;

#[test]
fn a_missing_nic_waits_for_a_change_instead_of_retrying() {
    let mut w = World::new(Config::default());
    w.sys.links.retain(|l| l.name != "eth1");
    w.run_for(S);
    assert_eq!(w.rec.runs.len(), 1);
    assert!(!w.rec.runs[0].4);
    assert!(
        w.rec
            .notices
            .iter()
            .any(|n| n.starts_with("waiting: uplink 'tor-b'")),
        "{:?}",
        w.rec.notices
    );
    w.run_for(60 * S);
    assert_eq!(w.rec.runs.len(), 1, "no retry loop on an input error");
    // The interest asks for a link named eth1.
    let i = w.ev.interest.as_ref().unwrap();
    assert!(i.nic_names.contains(&"eth1".to_string()));
    // The NIC shows up: the kernel event starts the converge.
    w.sys = fresh();
    w.ev.push(MS, FakeEvents::changed("new link"));
    w.run_for(100 * MS);
    assert_eq!(w.rec.runs.len(), 2);
    assert!(w.rec.runs[1].4);
    assert_eq!(w.rec.runs[1].1, Purpose::Initial);
}

#[test]
fn stop_ends_the_loop_and_says_so() {
    let mut w = World::started();
    w.ev.push(S, Wake::Stop("SIGTERM".into()));
    assert_eq!(w.run_for(10 * S), Control::Stop);
    let st = w.rec.last.clone().unwrap();
    assert!(st.stopped_unix.is_some());
    assert_eq!(w.rec.notices.last().unwrap(), "stop SIGTERM");
}

#[test]
fn sighup_reloads_now() {
    let mut w = World::started();
    w.inputs.next = Some(Ok(desired("10.10.0.11/32")));
    w.ev.push(S / 2, Wake::Reload);
    w.run_for(S);
    assert_eq!(w.inputs.loads, 1);
    assert_eq!(w.rec.runs.len(), 2);
    assert_eq!(w.rec.runs[1].0, [Cause::Reload]);
    assert!(w.rec.runs[1].2.is_empty());
}

#[test]
fn the_watchdog_is_pinged_at_its_period() {
    let mut w = World::new(Config {
        watchdog: Some(5 * S),
        ..Config::default()
    });
    w.run_for(60 * S);
    assert!((12..=13).contains(&w.rec.watchdogs), "{}", w.rec.watchdogs);
}

#[test]
fn what_drifted_reads_like_a_sentence() {
    let item = |action, before: Option<&str>, after: Option<&str>| Item {
        kind: crate::plan::Kind::Link,
        id: "eth0 (tor-a)".into(),
        action,
        before: before.map(str::to_string),
        after: after.map(str::to_string),
        ops: vec![],
    };
    assert_eq!(
        what(
            &item(Action::Update, Some("mtu 1500 up"), Some("mtu 9000 up")),
            Purpose::Repair
        ),
        "changed by someone else to mtu 1500 up; set back to mtu 9000 up"
    );
    assert_eq!(
        what(&item(Action::Create, None, Some("x")), Purpose::Initial),
        "created (x)"
    );
    assert_eq!(
        what(
            &item(Action::Update, Some("a\nb\nc"), Some("d")),
            Purpose::Profile
        ),
        "a (+2 lines) -> d"
    );
    let _ = Instant::now();
}
