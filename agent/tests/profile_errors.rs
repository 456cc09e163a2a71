//! Every validation error the profile loader promises: each names the file,
//! the key path, line and column, what was found and what is expected.

mod profile_fixtures;

use underlay::profile::{load_str, Problem};

use profile_fixtures::{edit, line_of, problems};

const ROLE: &str = r#"version = 1

[routing]
protocol = 211

[[routing.tables]]
name = "underlay-host"
id = 1001

[[routing.rules]]
priority = 30000
table = "main"
suppress_prefixlength = 0

[[routing.rules]]
priority = 30001
table = "underlay-host"

[pods]
cidrs = ["10.244.0.0/16"]

[uplinks]
mtu = 9000

[sysctl.global]
"net.ipv4.ip_forward" = 1

[sysctl.uplink]
"net.ipv4.conf.{uplink}.rp_filter" = 2
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
nic = { mac = "52:54:00:00:00:02" }
ipv4 = { address = "172.30.1.1/31", peer = "172.30.1.0" }
peer_asn = 65002
"#;

/// Asserts exactly one problem, in `file` at `key`, on the line holding
/// `line_needle`, whose message contains every fragment.
fn expect_one(
    ps: &[Problem],
    file: &str,
    key: &str,
    text: &str,
    line_needle: &str,
    fragments: &[&str],
) {
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    let p = &ps[0];
    assert_eq!(p.file.to_str(), Some(file), "{p}");
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line_of(text, line_needle), "{p}");
    assert!(p.column >= 1, "{p}");
    for f in fragments {
        assert!(p.message.contains(f), "message of {p} lacks {f:?}");
    }
    let shown = p.to_string();
    assert!(
        shown.starts_with(&format!("{file}:{}:{}: {key}: ", p.line, p.column)),
        "{shown}"
    );
}

#[test]
fn fixtures_are_valid() {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).expect("valid fixtures");
    assert_eq!(d.uplinks.len(), 2);
    assert_eq!(d.rules.len(), 2, "IPv4 only: one rule per priority");
    assert_eq!(d.uplinks[0].mtu, Some(9000));
}

#[test]
fn shipped_profiles_load_with_the_example_host() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/");
    let host = std::path::PathBuf::from(root).join("examples/host.toml");
    for role in ["l3-ecmp-calico.toml", "l3-ecmp-calico-ipip.toml"] {
        let d = underlay::profile::load(&std::path::PathBuf::from(root).join(role), &host)
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(d.hostname, "node-a1");
        assert_eq!(
            d.rules.len(),
            4,
            "{role}: the example host has IPv6, so rules for both families"
        );
    }
}

#[test]
fn unknown_key_in_role() {
    let role = edit(ROLE, "protocol = 211", "protocol = 211\ntabel = 5");
    let ps = problems(&role, HOST);
    expect_one(
        &ps,
        "role.toml",
        "routing.tabel",
        &role,
        "tabel",
        &[
            "unknown key `tabel`",
            "did you mean `tables`?",
            "expected one of: protocol",
        ],
    );
}

#[test]
fn unknown_key_in_host_uplink() {
    let host = edit(HOST, "peer_asn = 65001", "peer_asn = 65001\npeer_as = 1");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].peer_as",
        &host,
        "peer_as = 1",
        &["unknown key `peer_as`", "did you mean `peer_asn`?"],
    );
}

#[test]
fn wrong_version() {
    let host = edit(HOST, "version = 1", "version = 2");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "version",
        &host,
        "version = 2",
        &["found 2", "expected 1"],
    );
}

#[test]
fn malformed_ip() {
    let host = edit(HOST, "\"10.10.0.11/32\"", "\"10.10.0.300/32\"");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "service_ipv4",
        &host,
        "service_ipv4",
        &[
            "found \"10.10.0.300/32\"",
            "not a valid address",
            "expected an IPv4 host prefix",
        ],
    );
}

#[test]
fn service_ip_must_be_host_prefix() {
    let host = edit(HOST, "10.10.0.11/32", "10.10.0.11/24");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "service_ipv4",
        &host,
        "service_ipv4",
        &["found 10.10.0.11/24", "/32"],
    );
}

#[test]
fn service_ipv6_must_be_host_prefix() {
    let host = edit(
        HOST,
        "service_ipv4 = \"10.10.0.11/32\"",
        "service_ipv4 = \"10.10.0.11/32\"\nservice_ipv6 = \"fd00::11/64\"",
    );
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "service_ipv6",
        &host,
        "service_ipv6",
        &["found fd00::11/64", "/128"],
    );
}

#[test]
fn transit_must_be_31_or_30() {
    let host = edit(HOST, "172.30.0.1/31", "172.30.0.1/24");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].ipv4.address",
        &host,
        "172.30.0.1/24",
        &["found 172.30.0.1/24", "/31 or /30"],
    );
}

#[test]
fn transit_30_accepts_host_addresses() {
    let host = edit(
        HOST,
        "address = \"172.30.0.1/31\", peer = \"172.30.0.0\"",
        "address = \"172.30.0.1/30\", peer = \"172.30.0.2\"",
    );
    load_str("role.toml", ROLE, "host.toml", &host).expect("a /30 with .1 and .2 is valid");
    let host = edit(
        HOST,
        "address = \"172.30.0.1/31\", peer = \"172.30.0.0\"",
        "address = \"172.30.0.1/30\", peer = \"172.30.0.3\"",
    );
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].ipv4.peer",
        &host,
        "172.30.0.3",
        &["broadcast"],
    );
}

#[test]
fn peer_outside_transit_subnet() {
    let host = edit(HOST, "peer = \"172.30.0.0\"", "peer = \"172.30.9.0\"");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].ipv4.peer",
        &host,
        "172.30.9.0",
        &["found 172.30.9.0", "inside 172.30.0.0/31"],
    );
}

#[test]
fn peer_equal_to_our_address() {
    let host = edit(HOST, "peer = \"172.30.0.0\"", "peer = \"172.30.0.1\"");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].ipv4.peer",
        &host,
        "peer = \"172.30.0.1\"",
        &["our own transit address"],
    );
}

#[test]
fn ipv6_peer_outside_subnet() {
    let host = edit(
        HOST,
        "peer_asn = 65001",
        "ipv6 = { address = \"fd00:30::1/127\", peer = \"fd00:31::\" }\npeer_asn = 65001",
    );
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].ipv6.peer",
        &host,
        "fd00:31::",
        &["inside fd00:30::/127"],
    );
}

#[test]
fn duplicate_table_id() {
    let role = edit(
        ROLE,
        "[[routing.rules]]",
        "[[routing.tables]]\nname = \"other\"\nid = 1001\n\n[[routing.rules]]",
    );
    let ps = problems(&role, HOST);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "routing.tables[1].id");
    assert_eq!(ps[0].line, 12);
    assert!(
        ps[0].message.contains("found table id 1001, a duplicate"),
        "{}",
        ps[0]
    );
}

#[test]
fn duplicate_table_name() {
    let role = edit(
        ROLE,
        "[[routing.rules]]",
        "[[routing.tables]]\nname = \"underlay-host\"\nid = 1002\n\n[[routing.rules]]",
    );
    let ps = problems(&role, HOST);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "routing.tables[1].name");
    assert_eq!(ps[0].line, 11);
    assert!(ps[0]
        .message
        .contains("found table name 'underlay-host', a duplicate"));
}

#[test]
fn duplicate_rule_priority() {
    let role = edit(ROLE, "priority = 30001", "priority = 30000");
    let ps = problems(&role, HOST);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "routing.rules[1].priority");
    assert_eq!(ps[0].line, 16);
    assert!(ps[0].message.contains("found priority 30000, a duplicate"));
}

#[test]
fn table_id_zero_and_reserved() {
    for id in ["0", "253", "254", "255"] {
        let role = edit(ROLE, "id = 1001", &format!("id = {id}"));
        let ps = problems(&role, HOST);
        expect_one(
            &ps,
            "role.toml",
            "routing.tables[0].id",
            &role,
            &format!("id = {id}"),
            &[id],
        );
    }
}

#[test]
fn felix_range_refused_by_default() {
    let role = edit(ROLE, "id = 1001", "id = 100");
    let ps = problems(&role, HOST);
    expect_one(
        &ps,
        "role.toml",
        "routing.tables[0].id",
        &role,
        "id = 100",
        &["found 100", "Felix"],
    );
    let allowed = edit(
        &role,
        "protocol = 211",
        "protocol = 211\nallow_felix_table_ids = true",
    );
    load_str("role.toml", &allowed, "host.toml", HOST).expect("opt-in accepts 1–250");
}

#[test]
fn rule_names_unknown_table() {
    let role = edit(ROLE, "table = \"underlay-host\"", "table = \"nope\"");
    let ps = problems(&role, HOST);
    expect_one(
        &ps,
        "role.toml",
        "routing.rules[1].table",
        &role,
        "table = \"nope\"",
        &[
            "found 'nope', which is not a table",
            "expected one of: main, underlay-host",
        ],
    );
}

#[test]
fn duplicate_uplink_match() {
    let host = edit(
        HOST,
        "nic = { mac = \"52:54:00:00:00:02\" }",
        "nic = { name = \"eth0\" }",
    );
    let ps = problems(ROLE, &host);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "uplinks[1].nic");
    assert_eq!(ps[0].line, 14);
    assert!(ps[0]
        .message
        .contains("found NIC match name eth0, a duplicate"));
}

#[test]
fn mac_that_does_not_parse() {
    let host = edit(HOST, "52:54:00:00:00:02", "52:54:00:00:00");
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[1].nic.mac",
        &host,
        "52:54:00:00:00\"",
        &["not a MAC address", "52:54:00:12:34:56"],
    );
}

#[test]
fn nic_needs_exactly_one_match() {
    let host = edit(
        HOST,
        "nic = { name = \"eth0\" }",
        "nic = { name = \"eth0\", mac = \"52:54:00:00:00:09\" }",
    );
    let ps = problems(ROLE, &host);
    expect_one(
        &ps,
        "host.toml",
        "uplinks[0].nic",
        &host,
        "nic = { name = \"eth0\", mac",
        &[
            "neither or both of nic.name and nic.mac",
            "expected exactly one",
        ],
    );
}

#[test]
fn uplink_sysctl_needs_placeholder() {
    let role = edit(
        ROLE,
        "\"net.ipv4.conf.{uplink}.rp_filter\"",
        "\"net.ipv4.conf.eth0.rp_filter\"",
    );
    let ps = problems(&role, HOST);
    expect_one(
        &ps,
        "role.toml",
        "sysctl.uplink.\"net.ipv4.conf.eth0.rp_filter\"",
        &role,
        "eth0.rp_filter",
        &["{uplink}"],
    );
}

#[test]
fn bad_mtu() {
    let role = edit(ROLE, "mtu = 9000", "mtu = 100");
    let ps = problems(&role, HOST);
    expect_one(
        &ps,
        "role.toml",
        "uplinks.mtu",
        &role,
        "mtu = 100",
        &["found 100", "1280"],
    );
}

#[test]
fn all_problems_reported_at_once() {
    let host = edit(HOST, "10.10.0.11/32", "10.10.0.11/24");
    let host = edit(&host, "peer = \"172.30.1.0\"", "peer = \"172.30.1.1\"");
    let ps = problems(ROLE, &host);
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["service_ipv4", "uplinks[1].ipv4.peer"]);
}

#[test]
fn problems_in_both_files_are_reported() {
    let role = edit(ROLE, "protocol = 211", "protocol = 211\nbogus = 1");
    let host = edit(HOST, "asn = 65101", "asn = 0");
    let ps = problems(&role, &host);
    let files: Vec<&str> = ps.iter().map(|p| p.file.to_str().unwrap()).collect();
    assert_eq!(files, ["role.toml", "host.toml"], "{ps:#?}");
    assert!(
        ps[1].message.contains("found ASN 0, which is reserved"),
        "{}",
        ps[1]
    );
}
