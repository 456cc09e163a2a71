//! BIRD as Debian's bird.service runs it: `bird -u bird -g bird`, which reads
//! its config *after* dropping privileges. The config underlay writes must be
//! readable by that user (bird:bird 0640 for a new file; an existing file keeps
//! its owner and mode), at the first start and at every reload. Real BIRD 2 in
//! a namespace the test creates.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{host_facts, Lab, ROLE};
use underlay_testkit::{bird_ids, birdc, BirdUser};

#[test]
fn bird_running_as_bird_reads_and_reloads_what_underlay_writes() {
    let mut lab = Lab::new();
    let (uid, gid) = bird_ids();
    // BIRD, as user bird, must reach its config and socket below the root.
    lab.kit.open_dir();
    let run_bird = lab.root().join("run/bird");
    std::fs::create_dir_all(&run_bird).unwrap();
    std::os::unix::fs::chown(&run_bird, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(
        lab.root().join("run"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let (code, out, _) = lab.underlay("apply", Path::new(ROLE), &host);
    assert_eq!(code, 0, "{out}");
    let conf = lab.root().join("etc/bird/bird.conf");
    let m = std::fs::metadata(&conf).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (uid, gid),
        "a new BIRD config is bird:bird"
    );
    assert_eq!(
        m.mode() & 0o7777,
        0o640,
        "and mode 0640 (it may hold BGP passwords)"
    );
    for dir in [lab.root().join("etc"), lab.root().join("etc/bird")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // Start BIRD exactly as Debian's unit does (in the foreground, so the
    // lab stops it even when an assertion below fails).
    let host_ns = lab.host.clone();
    let sock = lab.kit.bird(
        "bird",
        &host_ns,
        &conf,
        &run_bird.join("bird.ctl"),
        BirdUser::Bird,
    );
    let t = Instant::now();
    while !birdc(&sock, "show status").contains("Daemon is up") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "BIRD (as bird) did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = birdc(&sock, "show status");
    assert!(status.contains("Router ID is 10.10.0.11"), "{status}");
    let reconfigured = |s: &str| {
        s.lines()
            .find(|l| l.contains("Last reconfiguration"))
            .map(str::to_string)
    };
    let first = reconfigured(&status);
    // BIRD's timestamps have one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));

    // A profile change: underlay rewrites the config and reloads the running
    // BIRD, which reads it again as user bird.
    let role = lab.write_host(
        "role.toml",
        &std::fs::read_to_string(ROLE)
            .unwrap()
            .replace("hold_time = 9", "hold_time = 12"),
    );
    let (code, out, _) = lab.underlay("apply", &role, &host);
    assert_eq!(code, 0, "the reload as user bird worked: {out}");
    let bgp = out["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "bgp" && r["action"] == "update")
        .unwrap_or_else(|| panic!("the BIRD config changed: {out}"));
    assert!(bgp["after"].as_str().unwrap().contains("reload"), "{bgp}");
    let m = std::fs::metadata(&conf).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (uid, gid, 0o640),
        "kept"
    );
    let last = birdc(&sock, "show status");
    assert_ne!(first, reconfigured(&last), "BIRD reconfigured: {last}");
}
