//! Inside `--netns` nothing supervises BIRD: `apply` prints the exact command
//! that starts it on the files below `--root`, the config logs to a file
//! below the root, and the gates say what they cannot know without BIRD.
//! Then BIRD is started with that very command, and `status` shows each
//! session by uplink name and BIRD protocol name with its BFD state.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{host_facts, Lab, ROLE};
use serde_json::Value;

#[test]
fn netns_apply_prints_the_bird_command_and_status_shows_sessions() {
    let mut lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let role = Path::new(ROLE);
    let root = lab.root().display().to_string();
    let want = format!("bird -c {root}/etc/bird/bird.conf -s {root}/run/bird/bird.ctl");

    // No BIRD yet: apply converges, says how to start it, and the gates
    // neither pass nor claim "not exported".
    let out = lab.underlay_raw(&["apply", "--wait", "--wait-timeout", "1"], role, &host);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("start it with:\n  {want}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "FAILED  gate     service-exported  (unknown: cannot reach BIRD at {root}/run/bird/bird.ctl)"
        )),
        "{text}"
    );
    // The converge and the wait are reported apart.
    assert!(text.contains("NOT READY after waiting 1."), "{text}");
    let total = text.lines().last().unwrap_or_default();
    assert!(
        total.starts_with("total ")
            && total.contains(" s: converge ")
            && total.contains(" ms, readiness wait 1."),
        "{total}"
    );
    let conf = std::fs::read_to_string(lab.root().join("etc/bird/bird.conf")).unwrap();
    assert!(
        conf.contains(&format!("\nlog \"{root}/var/log/bird/bird.log\" all;\n")),
        "inside --netns BIRD logs to a file below the root:\n{conf}"
    );
    assert!(lab.root().join("run/bird").is_dir() && lab.root().join("var/log/bird").is_dir());

    let (code, doc, _) = lab.underlay("apply", role, &host);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["bird_command"], want.as_str());

    // Start BIRD with exactly that command (plus -f: in the foreground it
    // stays this test's child, so the test stops exactly the process it started).
    let mut argv: Vec<&str> = want.split_whitespace().collect();
    argv.push("-f");
    let host_ns = lab.host.clone();
    lab.kit.spawn("bird", &host_ns, &argv);
    let sock = lab.root().join("run/bird/bird.ctl");
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "BIRD never made {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The ToR ends run no BGP: sessions stay down, but status names them.
    let (code, doc, _) = lab.underlay("status", role, &host);
    assert_eq!(code, 0, "{doc}");
    let sessions = doc["gates"]["sessions"].as_array().expect("sessions");
    let pairs: Vec<(String, String)> = sessions
        .iter()
        .map(|s| {
            (
                s["uplink"].as_str().unwrap().into(),
                s["protocol"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("tor-a".to_string(), "tor_a".to_string()),
            ("tor-a".to_string(), "tor_a_v6".to_string()),
            ("tor-b".to_string(), "tor_b".to_string()),
        ]
    );
    for s in sessions {
        let bgp = s["bgp"].as_str().unwrap();
        assert!(
            bgp != "unknown" && bgp != "missing" && !bgp.starts_with("Established"),
            "{s}"
        );
        let bfd = s["bfd"].as_str().unwrap();
        assert_ne!(bfd, "Up", "no ToR speaks BFD here: {s}");
    }
    let gate = |name: &str| -> Value {
        doc["gates"]["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no gate {name}: {doc}"))
    };
    assert_eq!(gate("bfd-up")["passed"], false);
    assert!(
        gate("bfd-up")["evidence"]
            .as_str()
            .unwrap()
            .contains("tor_a (172.30.0.0 on eth0) "),
        "{}",
        gate("bfd-up")
    );
    let exported = gate("service-exported");
    assert!(
        !exported["evidence"].as_str().unwrap().contains("unknown"),
        "{exported}"
    );

    let out = lab.underlay_raw(&["status"], role, &host);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.contains("down    session  tor-a -> BIRD tor_a (172.30.0.0 on eth0): BGP "),
        "{text}"
    );
    assert!(text.contains("NOT READY: "), "status only looks: {text}");

    let log = std::fs::read_to_string(lab.root().join("var/log/bird/bird.log")).unwrap_or_default();
    assert!(
        log.contains("Started"),
        "BIRD logs to the file below the root: {log:?}"
    );
}
