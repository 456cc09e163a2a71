//! The `[bgp]` section's validation: the profile layer owns every semantic
//! check of what BIRD gets, so each mistake is reported here with file, key,
//! line and column, never later by the renderer or BIRD. Every case is one
//! edit of a valid pair of files and must yield exactly that one problem.

use underlay::desired::BirdLog;
mod profile_fixtures;

use underlay::profile::load_str;

use profile_fixtures::{edit, problems};

const ROLE: &str = r#"version = 1

[routing]
[[routing.tables]]
name = "underlay-host"
id = 1001

[pods]
cidrs = ["10.244.0.0/16"]

[bgp]
host_table = "underlay-host"
hold_time = 9
keepalive = 3

[bgp.bfd]
interval_ms = 100

[bgp.calico]
host_address = "127.0.0.1"
calico_address = "127.0.0.2"
"#;

const HOST: &str = r#"version = 1
hostname = "node-a1"
asn = 65101
service_ipv4 = "10.10.0.11/32"

[[uplinks]]
name = "tor-a"
nic = { name = "eth0" }
ipv4 = { address = "172.30.0.1/31", peer = "172.30.0.0" }
peer_asn = 65001

[[uplinks]]
name = "tor-b"
nic = { name = "eth1" }
ipv4 = { address = "172.30.1.1/31", peer = "172.30.1.0" }
peer_asn = 65002
"#;

/// Exactly one problem, in `file` at `key`, on the line holding `needle`,
/// whose message has every fragment.
fn expect_one(role: &str, host: &str, file: &str, key: &str, needle: &str, fragments: &[&str]) {
    let ps = problems(role, host);
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    let p = &ps[0];
    let text = if file == "role.toml" { role } else { host };
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1;
    assert_eq!(p.file.to_str(), Some(file), "{p}");
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line, "{p}");
    for f in fragments {
        assert!(p.message.contains(f), "message of {p} lacks {f:?}");
    }
}

#[test]
fn fixtures_are_valid_and_defaults_are_safe() {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).unwrap();
    let b = d.bgp.unwrap();
    let gr = b.graceful_restart.expect("GR on by default");
    assert_eq!(gr.restart_time, 120);
    assert_eq!(gr.long_lived_stale_time, None, "LLGR off by default");
    assert_eq!(b.log, BirdLog::Auto);
}

#[test]
fn hold_time_zero_means_no_hold_timer_and_needs_bfd() {
    let role = edit(ROLE, "hold_time = 9\nkeepalive = 3", "hold_time = 0");
    let b = load_str("role.toml", &role, "host.toml", HOST)
        .unwrap()
        .bgp
        .unwrap();
    assert_eq!((b.hold_time, b.keepalive), (0, 0));
    let role0 = edit(
        ROLE,
        "hold_time = 9\nkeepalive = 3",
        "hold_time = 0\nkeepalive = 0",
    );
    assert!(load_str("role.toml", &role0, "host.toml", HOST).is_ok());

    let role =
        edit(ROLE, "keepalive = 3", "keepalive = 3").replace("hold_time = 9", "hold_time = 0");
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.hold_time",
        "hold_time = 0",
        &["no keepalive (BIRD refuses keepalives without a hold timer)"],
    );

    let role = edit(ROLE, "hold_time = 9\nkeepalive = 3", "hold_time = 0");
    let role = edit(&role, "interval_ms = 100", "enabled = false");
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.hold_time",
        "hold_time = 0",
        &["BFD disabled", "enable [bgp.bfd]"],
    );
}

#[test]
fn timers() {
    let role = edit(ROLE, "hold_time = 9", "hold_time = 2");
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.hold_time",
        "hold_time = 2",
        &["found 2", "0 (no hold timer) or 3–65535"],
    );
    let role = edit(ROLE, "keepalive = 3", "keepalive = 9");
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.keepalive",
        "keepalive = 9",
        &["less than hold_time (9)"],
    );
    // Without keepalive, a third of the hold time: hold 3 works on its own.
    let role = edit(ROLE, "hold_time = 9\nkeepalive = 3", "hold_time = 3");
    let b = load_str("role.toml", &role, "host.toml", HOST)
        .unwrap()
        .bgp
        .unwrap();
    assert_eq!((b.hold_time, b.keepalive), (3, 1));
}

#[test]
fn graceful_restart_knobs() {
    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\ngraceful_restart_time = 4096",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.graceful_restart_time",
        "graceful_restart_time",
        &["found 4096", "1–4095", "12 bits"],
    );
    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\ngraceful_restart_time = 0",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.graceful_restart_time",
        "graceful_restart_time",
        &["found 0"],
    );
    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\ngraceful_restart = false\nlong_lived_graceful_restart = true",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.long_lived_graceful_restart",
        "long_lived_graceful_restart",
        &["graceful_restart = false"],
    );
    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\nlong_lived_stale_time = 60",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.long_lived_stale_time",
        "long_lived_stale_time",
        &["no effect unless long_lived_graceful_restart = true"],
    );
    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\nlong_lived_graceful_restart = true\nlong_lived_stale_time = 0",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.long_lived_stale_time",
        "long_lived_stale_time",
        &["found 0"],
    );

    let role = edit(
        ROLE,
        "keepalive = 3",
        "keepalive = 3\ngraceful_restart_time = 30\nlong_lived_graceful_restart = true",
    );
    let gr = load_str("role.toml", &role, "host.toml", HOST)
        .unwrap()
        .bgp
        .unwrap()
        .graceful_restart
        .unwrap();
    assert_eq!(
        (gr.restart_time, gr.long_lived_stale_time),
        (30, Some(3600))
    );
}

#[test]
fn log_target() {
    for (value, want) in [
        ("syslog", BirdLog::Syslog),
        ("stderr", BirdLog::Stderr),
        (
            "/var/log/bird/bird.log",
            BirdLog::File("/var/log/bird/bird.log".into()),
        ),
    ] {
        let role = edit(
            ROLE,
            "keepalive = 3",
            &format!("keepalive = 3\nlog = \"{value}\""),
        );
        let d = load_str("role.toml", &role, "host.toml", HOST).unwrap();
        assert_eq!(d.bgp.unwrap().log, want);
    }
    for bad in ["bird.log", "/var/log/a\\\"b.log", "file", "/var/log/"] {
        let role = edit(
            ROLE,
            "keepalive = 3",
            &format!("keepalive = 3\nlog = \"{bad}\""),
        );
        expect_one(
            &role,
            HOST,
            "role.toml",
            "bgp.log",
            "log =",
            &["expected \"syslog\", \"stderr\" or an absolute file path"],
        );
    }
}

#[test]
fn uplink_names_must_make_bird_names() {
    let host = edit(HOST, "name = \"tor-b\"", "name = \"TOR_A\"");
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].name",
        "TOR_A",
        &["tor_a", "uplinks[0] ('tor-a')"],
    );
    let host = edit(HOST, "name = \"tor-b\"", "name = \"kernel\"");
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].name",
        "\"kernel\"",
        &["BIRD keyword"],
    );
    let host = edit(HOST, "name = \"tor-b\"", "name = \"underlay-host4\"");
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].name",
        "underlay-host4",
        &["already taken by the host table"],
    );
    let host = edit(HOST, "name = \"tor-b\"", "name = \"calico\"");
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].name",
        "\"calico\"",
        &["its own protocols"],
    );
    let host = edit(
        HOST,
        "nic = { name = \"eth1\" }",
        "nic = { name = \"e\\\"1\" }",
    );
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].nic.name",
        "e\\\"1",
        &["not an interface name"],
    );
    // Without [bgp] these names are nobody's business.
    let no_bgp = ROLE.split("[bgp]").next().unwrap();
    let host = edit(HOST, "name = \"tor-b\"", "name = \"kernel\"");
    assert!(load_str("role.toml", no_bgp, "host.toml", &host).is_ok());
}

fn role() -> String {
    ROLE.to_string()
}

#[test]
fn ipv6_session_names_too() {
    // `is` is a fine IPv4 protocol name; its IPv6 session `is_v6` is a BIRD keyword.
    let host = edit(
        HOST,
        "service_ipv4 = \"10.10.0.11/32\"",
        "service_ipv4 = \"10.10.0.11/32\"\nservice_ipv6 = \"2001:db8::11/128\"",
    );
    let host = edit(&host, "name = \"tor-b\"", "name = \"is\"");
    let host = edit(
        &host,
        "ipv4 = { address = \"172.30.1.1/31\", peer = \"172.30.1.0\" }",
        "ipv6 = { address = \"fd00:1::1/127\", peer = \"fd00:1::\" }",
    );
    expect_one(
        &role(),
        &host,
        "host.toml",
        "uplinks[1].name",
        "\"is\"",
        &["is_v6", "BIRD keyword"],
    );
}

#[test]
fn host_table_name_must_make_bird_names() {
    let role = ROLE.replace("underlay-host", "as");
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.host_table",
        "host_table",
        &["as4", "BIRD keyword"],
    );
}

#[test]
fn calico_session_family() {
    let role = edit(
        ROLE,
        "calico_address = \"127.0.0.2\"",
        "calico_address = \"fd00::2\"",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.calico.host_address",
        "host_address",
        &["one address family"],
    );
    let role = edit(
        ROLE,
        "host_address = \"127.0.0.1\"\ncalico_address = \"127.0.0.2\"",
        "host_address = \"::1\"\ncalico_address = \"fd00::2\"",
    );
    expect_one(
        &role,
        HOST,
        "role.toml",
        "bgp.calico.host_address",
        "host_address",
        &["without service_ipv6"],
    );
    let host = edit(
        HOST,
        "service_ipv4 = \"10.10.0.11/32\"",
        "service_ipv4 = \"10.10.0.11/32\"\nservice_ipv6 = \"2001:db8::11/128\"",
    );
    assert!(load_str("role.toml", &role, "host.toml", &host).is_ok());
}
