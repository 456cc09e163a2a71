//! The doctor's BFD and LLGR checks against real BIRDs in namespaces: a ToR
//! whose BFD is off while BGP stays Established, and ToR sessions that
//! negotiated long-lived graceful restart (what FRR's datacenter defaults and
//! BIRD's `long lived graceful restart on` offer).

mod doctorlab;

use std::time::Duration;

use doctorlab::{assert_clean, problems, Lab, ROLE};
use underlay::doctor::checks::*;
use underlay::doctor::Severity;

#[test]
fn bfd_off_on_one_tor_fails_bfd_sessions_only() {
    let mut lab = Lab::new();
    lab.start_tor(0);
    lab.start_tor_with(1, "bfd off;");
    lab.start_host_bird();
    // The host's BGP sessions come up without BFD; BFD to ToR b never does.
    let r = lab.doctor_until(
        true,
        Duration::from_secs(60),
        "bfd-sessions failing alone",
        |r| problems(r) == [(BFD_SESSIONS, Severity::Failure)],
    );
    let f = r.get(BFD_SESSIONS).unwrap();
    assert!(
        f.evidence[0].starts_with("tor_b (tor-b, 172.30.1.0 on eth1): BFD ")
            && !f.evidence[0].ends_with("BFD Up"),
        "{f:#?}"
    );
    assert!(
        f.evidence
            .iter()
            .any(|e| e == "tor_a (tor-a, 172.30.0.0 on eth0): BFD Up"),
        "{f:#?}"
    );
    assert!(
        f.title.contains("9 s hold time") && f.title.contains("300 ms"),
        "{}",
        f.title
    );
    assert_eq!(r.get(BGP_SESSIONS).unwrap().severity, Severity::Ok);
}

#[test]
fn llgr_negotiated_on_uplinks_is_reported_unless_the_profile_asks_for_it() {
    let mut lab = Lab::new();
    let llgr_role = ROLE.replace(
        "graceful_restart = false",
        "graceful_restart = true\nlong_lived_graceful_restart = true",
    );
    assert_ne!(llgr_role, ROLE);
    std::fs::write(lab.path("role.toml"), &llgr_role).unwrap();
    lab.apply(&lab.path("role.toml"));
    let conf = std::fs::read_to_string(lab.root().join("etc/bird/bird.conf")).unwrap();
    assert!(conf.contains("long lived graceful restart on;"), "{conf}");
    let tor =
        "bfd on; graceful restart on; long lived graceful restart on; long lived stale time 1;";
    lab.start_tor_with(0, tor);
    lab.start_tor_with(1, tor);
    lab.start_host_bird();
    // Asked for: reported as intended, with what the ToRs announce.
    let r = lab.doctor_until(
        true,
        Duration::from_secs(60),
        "LLGR negotiated, as asked",
        |r| {
            r.exit_code() == 0
                && r.get(BGP_LLGR).is_some_and(|f| {
                    f.severity == Severity::Ok && f.title.contains("as the profile asks")
                })
        },
    );
    assert_clean(&r);
    let ev = r.get(BGP_LLGR).unwrap().evidence.join("\n");
    assert!(
        ev.contains("tor_a: LLGR negotiated; the ToR announces restart time 120 s, LL stale time 1 s; BFD Up"),
        "{ev}"
    );

    // The profile says no LLGR, the running BIRD still negotiates it (a config
    // from before the upgrade): a warning while BFD covers it.
    std::fs::write(
        lab.path("role.toml"),
        ROLE.replace("graceful_restart = false", "graceful_restart = true"),
    )
    .unwrap();
    let r = lab.doctor(true);
    assert_eq!(
        problems(&r),
        [(BGP_LLGR, Severity::Warning)],
        "{}",
        r.human()
    );
    let f = r.get(BGP_LLGR).unwrap();
    assert!(
        f.title.contains("about 121 s instead of the 9 s hold time"),
        "{}",
        f.title
    );
    assert!(
        f.fix.contains("long lived graceful restart off"),
        "{}",
        f.fix
    );

    // Re-applied with that profile, BIRD renegotiates without LLGR: clean.
    lab.apply(&lab.path("role.toml"));
    let r = lab.doctor_until(
        true,
        Duration::from_secs(60),
        "LLGR gone after apply",
        |r| r.exit_code() == 0,
    );
    assert!(
        r.get(BGP_LLGR)
            .unwrap()
            .title
            .starts_with("no ToR session negotiated"),
        "{}",
        r.human()
    );
}
