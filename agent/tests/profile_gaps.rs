//! What validation refuses because it could only fail (or do harm) later:
//! sysctl keys that leave the uplink's directory or the namespace, paths that
//! leave --root or land on our own files, address classes and overlaps that
//! never converge, reserved ASNs, non-RFC 1123 hostnames. Each case names the
//! key and the line of the offending value.

mod profile_fixtures;

use profile_fixtures::{
    assert_well_formed, edit, host_full, line_of, load, problems, role_full, HOST, ROLE,
};
use underlay::profile::Problem;

/// Exactly one problem, at `key` on the line holding `needle`, whose message
/// holds every fragment; and it is well formed.
fn one(ps: &[Problem], file: &str, key: &str, text: &str, needle: &str, fragments: &[&str]) {
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    let p = &ps[0];
    assert_eq!(p.file.to_str(), Some(file), "{p}");
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line_of(text, needle), "{p}");
    for f in fragments {
        assert!(p.message.contains(f), "{p} lacks {f:?}");
    }
    assert_well_formed(p, key);
}

fn role_sysctl(extra: &str) -> String {
    edit(
        ROLE,
        "[sysctl.uplink]\n",
        &format!("[sysctl.uplink]\n{extra}\n"),
    )
}

// Item 1: sysctl keys.

#[test]
fn uplink_sysctl_outside_an_interface_directory_is_refused() {
    for key in [
        "kernel.{uplink}",
        "kernel.domainname.{uplink}",
        "net.core.{uplink}",
        "net.ipv4.{uplink}",
        "net.ipv4.conf.{uplink}",
        "net.ipv4.conf.{uplink}.a.b",
        "net.ipv4.conf.x{uplink}.rp_filter",
        "net.ipv4.route.{uplink}.x",
        "net/ipv4/conf/{uplink}/../../../kernel/domainname",
        "net.ipv4.conf.{uplink}..rp_filter",
    ] {
        let line = format!("\"{key}\" = 1");
        let role = role_sysctl(&line);
        let ps = problems(&role, HOST);
        one(
            &ps,
            "role.toml",
            &format!("sysctl.uplink.\"{key}\""),
            &role,
            &line,
            &["expected net.ipv4.conf.{uplink}.NAME"],
        );
    }
}

#[test]
fn uplink_sysctl_in_every_interface_tree_is_accepted() {
    for key in [
        "net.ipv4.conf.{uplink}.arp_ignore",
        "net.ipv6.conf.{uplink}.accept_ra",
        "net.ipv4.neigh.{uplink}.base_reachable_time_ms",
        "net/ipv6/neigh/{uplink}/retrans_time_ms",
    ] {
        let d = load(&role_sysctl(&format!("\"{key}\" = 1")), HOST)
            .unwrap_or_else(|p| panic!("{key}: {p:#?}"));
        assert!(d
            .sysctl_uplink
            .iter()
            .any(|(k, _)| k.to_string().contains("{uplink}")));
    }
}

#[test]
fn global_sysctl_keys_are_plain_names() {
    for key in [
        "net..ipv4",
        "net.ipv4.",
        ".net.ipv4",
        "net/ipv4/../../kernel/x",
        "net/./ipv4/ip_forward",
        "/net/ipv4/ip_forward",
        "net.ipv4.ip_forward ",
        "net.ipv4.ip forward",
        "net.ipv4.ip_forward\u{7}",
        "-net.ipv4.ip_forward",
        "net.ipv4.*",
        "net",
    ] {
        let line = format!("\"{}\" = 1", key.replace('\u{7}', "\\u0007"));
        let role = edit(
            ROLE,
            "[sysctl.global]\n",
            &format!("[sysctl.global]\n{line}\n"),
        );
        let ps = problems(&role, HOST);
        assert_eq!(ps.len(), 1, "{key:?}: {ps:#?}");
        assert!(
            ps[0].message.contains("not a sysctl key"),
            "{key:?}: {}",
            ps[0]
        );
        assert_eq!(ps[0].line, line_of(&role, &line), "{}", ps[0]);
        assert_well_formed(&ps[0], key);
    }
}

#[test]
fn dotted_and_slash_spellings_are_one_key() {
    let role = edit(
        ROLE,
        "\"net.ipv4.ip_forward\" = 1\n",
        "\"net.ipv4.ip_forward\" = 1\n\"net/ipv4/ip_forward\" = 1\n",
    );
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "sysctl.global.\"net/ipv4/ip_forward\"",
        &role,
        "\"net/ipv4/ip_forward\"",
        &["the same key as 'net.ipv4.ip_forward'", "keep one"],
    );
    let role = role_sysctl("\"net/ipv4/conf/{uplink}/rp_filter\" = 1");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "sysctl.uplink.\"net/ipv4/conf/{uplink}/rp_filter\"",
        &role,
        "net/ipv4/conf/{uplink}/rp_filter",
        &["the same key as 'net.ipv4.conf.{uplink}.rp_filter'"],
    );
}

#[test]
fn a_nic_name_that_would_leave_its_directory_is_refused() {
    // Named NICs are checked at validation, with the line of the NIC.
    for nic in ["all", "default", "..", "a=b", "a#b"] {
        let host = edit(
            HOST,
            "nic = { name = \"eth0\" }",
            &format!("nic = {{ name = \"{nic}\" }}"),
        );
        let ps = problems(ROLE, &host);
        assert_eq!(ps.len(), 1, "{nic}: {ps:#?}");
        assert_eq!(ps[0].key, "uplinks[0].nic.name", "{}", ps[0]);
        assert_eq!(ps[0].line, line_of(&host, "nic = { name"), "{}", ps[0]);
        assert_well_formed(&ps[0], nic);
    }
}

#[test]
fn a_mac_matched_nic_with_an_escaping_name_fails_resolution_before_any_change() {
    use underlay::engine;
    use underlay::system::fake::FakeSystem;
    let host = edit(
        HOST,
        "nic = { name = \"eth0\" }",
        "nic = { mac = \"52:54:00:00:00:02\" }",
    );
    let d = load(ROLE, &host).expect("valid");
    // The kernel refuses "all" and ".." itself; a name with '=' would split
    // the sysctl.d line. The fake shows what resolution does with either.
    for bad in ["a=b", "all"] {
        let mut f = FakeSystem::with_nics(&[bad, "eth1"]);
        let e = engine::run(&mut f, &d, engine::Mode::Apply).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("uplink 'tor-a'") && msg.contains(bad), "{msg}");
        assert!(f.applied.is_empty(), "nothing applied: {:?}", f.applied);
    }
}

#[test]
fn unquoted_dotted_sysctl_keys_get_the_quoting_fix() {
    let role = edit(
        ROLE,
        "\"net.ipv4.ip_forward\" = 1",
        "net.ipv4.ip_forward = 1",
    );
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "sysctl.global.\"net.ipv4.ip_forward\"",
        &role,
        "net.ipv4.ip_forward = 1",
        &["unquoted", "\"net.ipv4.ip_forward\" = 1"],
    );
    let role = edit(
        ROLE,
        "\"net.ipv4.conf.{uplink}.rp_filter\" = 2",
        "net.ipv4.conf.{uplink}.rp_filter = 2",
    );
    let ps = problems(&role, HOST);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(
        ps[0].key,
        "sysctl.uplink.\"net.ipv4.conf.{uplink}.rp_filter\""
    );
    assert!(ps[0].message.contains("quote sysctl keys"), "{}", ps[0]);
}

#[test]
fn sysctl_values_are_what_sysctl_d_can_carry() {
    for (v, fragment) in [
        ("[1]", "found an array"),
        ("1.5", "found 1.5"),
        ("\"\"", "found \"\""),
        ("\"1\\n2\"", "found \"1\\n2\""),
        ("1979-05-27", "found 1979-05-27"),
    ] {
        let line = format!("\"net.ipv4.tcp_rmem\" = {v}");
        let role = edit(
            ROLE,
            "[sysctl.global]\n",
            &format!("[sysctl.global]\n{line}\n"),
        );
        let ps = problems(&role, HOST);
        one(
            &ps,
            "role.toml",
            "sysctl.global.\"net.ipv4.tcp_rmem\"",
            &role,
            &line,
            &[
                fragment,
                "expected an integer, a boolean or a single-line string",
            ],
        );
    }
    let role = edit(
        ROLE,
        "[sysctl.global]\n",
        "[sysctl.global]\n\"net.ipv4.tcp_rmem\" = \"4096  131072\t6291456\"\n",
    );
    let d = load(&role, HOST).unwrap();
    assert!(d
        .sysctl_global
        .iter()
        .any(|(k, v)| k.to_string() == "net.ipv4.tcp_rmem" && v == "4096 131072 6291456"));
}

// Item 5: paths.

fn role_bgp(key: &str, value: &str) -> String {
    let full = role_full();
    let line = full
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} in the full role"))
        .to_string();
    edit(&full, &line, &format!("{key} = \"{value}\""))
}

#[test]
fn paths_stay_below_the_root() {
    for key in ["config_path", "control_socket", "templates_dir"] {
        for (value, fragment) in [
            ("/../outside/bird.conf", "without '..'"),
            ("/etc/bird/../../x", "without '..'"),
            ("etc/bird/bird.conf", "absolute path"),
            ("", "absolute path"),
            ("/", "not / itself"),
            ("/proc/sys/kernel/domainname", "outside /proc"),
            ("/dev/sda", "outside /dev"),
            ("/sys/x", "outside /sys"),
            ("/etc/bird\u{1}x", "control characters"),
        ] {
            let role = role_bgp(key, &value.replace('\u{1}', "\\u0001"));
            let ps = problems(&role, &host_full());
            assert_eq!(ps.len(), 1, "{key} = {value:?}: {ps:#?}");
            let p = &ps[0];
            assert_eq!(p.key, format!("bgp.{key}"), "{p}");
            assert_eq!(p.line, line_of(&role, &format!("{key} = ")), "{p}");
            assert!(p.message.contains(fragment), "{key} = {value:?}: {p}");
            assert_well_formed(p, key);
        }
    }
    let host = edit(&host_full(), "/etc/underlay/secrets/tor-a", "/../x");
    let ps = problems(&role_full(), &host);
    one(
        &ps,
        "host.toml",
        "uplinks[0].password_file",
        &host,
        "password_file",
        &["without '..'"],
    );
    let host = edit(
        &host_full(),
        "/etc/underlay/secrets/tor-a",
        "/etc/underlay/secrets/",
    );
    let ps = problems(&role_full(), &host);
    one(
        &ps,
        "host.toml",
        "uplinks[0].password_file",
        &host,
        "password_file",
        &["not a directory"],
    );
}

#[test]
fn paths_are_normalized_lexically() {
    let role = role_bgp("config_path", "/etc//bird/./bird.conf");
    let d = load(&role, &host_full()).unwrap();
    assert_eq!(
        d.bgp.unwrap().config_path,
        std::path::Path::new("/etc/bird/bird.conf")
    );
}

#[test]
fn paths_never_land_on_our_files_or_each_other() {
    for (key, value, fragment) in [
        (
            "config_path",
            "/var/lib/underlay/state.json",
            "underlay's state directory",
        ),
        (
            "config_path",
            "/var/lib/underlay",
            "underlay's state directory",
        ),
        (
            "config_path",
            "/etc/sysctl.d/90-underlay.conf",
            "underlay's persisted sysctls",
        ),
        (
            "config_path",
            "/etc/iproute2/rt_tables.d/underlay.conf",
            "routing table names",
        ),
        (
            "config_path",
            "/etc/iproute2/rt_protos.d/underlay.conf",
            "protocol name",
        ),
        (
            "config_path",
            "/etc/iproute2/rt_addrprotos.d/underlay.conf",
            "address protocol",
        ),
        ("config_path", "/etc/iproute2/rt_tables.d", "overlaps"),
        (
            "control_socket",
            "/etc/sysctl.d/90-underlay.conf",
            "persisted sysctls",
        ),
        ("control_socket", "/etc/bird/bird.conf", "bgp.config_path"),
        ("templates_dir", "/var/lib/underlay", "state directory"),
    ] {
        let role = role_bgp(key, value);
        let ps = problems(&role, &host_full());
        assert!(!ps.is_empty());
        let p = ps
            .iter()
            .find(|p| p.key == format!("bgp.{key}"))
            .unwrap_or_else(|| panic!("{key} = {value}: {ps:#?}"));
        assert_eq!(p.line, line_of(&role, &format!("{key} = ")), "{p}");
        assert!(p.message.contains(fragment), "{key} = {value}: {p}");
        assert_well_formed(p, key);
    }
    // A password read from the BIRD config (default path) or the state file.
    for (value, fragment) in [
        ("/etc/bird/bird.conf", "bgp.config_path"),
        ("/var/lib/underlay/state.json", "state directory"),
        ("/etc/underlay/templates/bird.conf.j2", "bgp.templates_dir"),
    ] {
        let host = edit(&host_full(), "/etc/underlay/secrets/tor-a", value);
        let ps = problems(&role_full(), &host);
        let p = ps
            .iter()
            .find(|p| p.key == "uplinks[0].password_file")
            .unwrap_or_else(|| panic!("{value}: {ps:#?}"));
        assert_eq!(p.line, line_of(&host, "password_file"), "{p}");
        assert!(p.message.contains(fragment), "{value}: {p}");
    }
    // Two sessions may share one password file (it is only read).
    let host = host_full().replace(
        "peer_asn = 65002\n",
        "peer_asn = 65002\npassword_file = \"/etc/underlay/secrets/tor-a\"\n",
    );
    load(&role_full(), &host).expect("a shared password file is fine");
}

// Item 10: validation gaps.

#[test]
fn mac_with_a_sign_is_refused() {
    for mac in [
        "+2:54:00:12:34:56",
        "52:54:00:12:34:+6",
        "52:54:00:12:34:-6",
        "52:54-00:12:34:56",
        "52:54:00:12:34:5 ",
    ] {
        let host = edit(
            HOST,
            "nic = { name = \"eth0\" }",
            &format!("nic = {{ mac = \"{mac}\" }}"),
        );
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "uplinks[0].nic.mac",
            &host,
            "nic = { mac",
            &["not a MAC address"],
        );
    }
}

#[test]
fn transit_subnets_must_not_overlap() {
    for (a, peer) in [
        ("172.30.0.1/31", "172.30.0.0"),
        ("172.30.0.2/30", "172.30.0.1"),
    ] {
        let host = edit(
            HOST,
            "address = \"172.30.1.1/31\", peer = \"172.30.1.0\"",
            &format!("address = \"{a}\", peer = \"{peer}\""),
        );
        let ps = problems(ROLE, &host);
        assert_eq!(ps.len(), 1, "{ps:#?}");
        assert_eq!(ps[0].key, "uplinks[1].ipv4.address");
        assert_eq!(
            ps[0].line,
            line_of(&host, "name = \"tor-b\"") + 2,
            "{}",
            ps[0]
        );
        assert!(
            ps[0].message.contains("uplinks[0]'s 172.30.0.0/31"),
            "{}",
            ps[0]
        );
        assert_well_formed(&ps[0], a);
    }
}

#[test]
fn transit_must_not_hold_the_service_ip() {
    for (svc, fam) in [("172.30.0.1/32", "ipv4"), ("172.30.0.0/32", "ipv4")] {
        let host = edit(HOST, "10.10.0.11/32", svc);
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            &format!("uplinks[0].{fam}.address"),
            &host,
            "172.30.0.1/31",
            &["holds the service IP"],
        );
    }
    let host = edit(HOST, "fd00:10::11/128", "fd00:30::/128");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[0].ipv6.address",
        &host,
        "fd00:30::1/127",
        &["holds the service IP"],
    );
}

#[test]
fn pod_zones_must_not_overlap() {
    for az2 in ["10.244.0.0/17", "10.244.64.0/18", "10.244.0.0/16"] {
        let role = edit(
            ROLE,
            "az2 = \"10.244.128.0/17\"",
            &format!("az2 = \"{az2}\""),
        );
        let ps = problems(&role, HOST);
        one(
            &ps,
            "role.toml",
            "pods.zones.az2",
            &role,
            "az2 =",
            &["zone az1's block 10.244.0.0/17"],
        );
    }
    let role = edit(
        ROLE,
        "cidrs = [\"10.244.0.0/16\"]",
        "cidrs = [\"10.244.0.0/16\", \"10.244.128.0/17\"]",
    );
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "pods.cidrs[1]",
        &role,
        "cidrs =",
        &["overlaps pods.cidrs[0]"],
    );
    // A zone name becomes a node label value.
    let role = edit(ROLE, "az2 = ", "\"-az2\" = ");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "pods.zones.-az2",
        &role,
        "\"-az2\"",
        &["Kubernetes label value"],
    );
}

#[test]
fn pod_cidrs_must_not_hold_the_service_ip_or_a_transit() {
    let host = edit(HOST, "10.10.0.11/32", "10.244.1.1/32");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "service_ipv4",
        &host,
        "service_ipv4",
        &["inside the pod CIDR 10.244.0.0/16"],
    );
    let host = edit(
        HOST,
        "address = \"172.30.1.1/31\", peer = \"172.30.1.0\"",
        "address = \"10.244.9.1/31\", peer = \"10.244.9.0\"",
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[1].ipv4.address",
        &host,
        "10.244.9.1/31",
        &["overlaps the pod CIDR"],
    );
}

#[test]
fn service_addresses_of_the_wrong_class_are_refused() {
    for (svc, fragment) in [
        ("0.0.0.0/32", "this network"),
        ("0.1.2.3/32", "this network"),
        ("127.0.0.5/32", "loopback"),
        ("224.0.0.5/32", "multicast"),
        ("239.1.1.1/32", "multicast"),
        ("255.255.255.255/32", "limited broadcast"),
        ("169.254.10.1/32", "link-local"),
    ] {
        let host = edit(HOST, "10.10.0.11/32", svc);
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "service_ipv4",
            &host,
            "service_ipv4",
            &[fragment],
        );
    }
    for (svc, fragment) in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("ff02::1/128", "multicast"),
        ("fe80::1/128", "link-local"),
        ("::ffff:10.0.0.1/128", "IPv4-mapped"),
    ] {
        let host = edit(HOST, "fd00:10::11/128", svc);
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "service_ipv6",
            &host,
            "service_ipv6",
            &[fragment],
        );
    }
}

#[test]
fn transit_addresses_of_the_wrong_class_are_refused_link_local_is_fine() {
    for (addr, peer, key, fragment) in [
        ("127.0.0.1/31", "127.0.0.0", "address", "loopback"),
        ("224.0.0.1/31", "224.0.0.0", "address", "multicast"),
        ("0.0.0.1/31", "0.0.0.0", "address", "this network"),
        (
            "255.255.255.254/31",
            "255.255.255.255",
            "peer",
            "limited broadcast",
        ),
    ] {
        let host = edit(
            HOST,
            "address = \"172.30.0.1/31\", peer = \"172.30.0.0\"",
            &format!("address = \"{addr}\", peer = \"{peer}\""),
        );
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            &format!("uplinks[0].ipv4.{key}"),
            &host,
            addr,
            &[fragment],
        );
    }
    for (addr, peer, fragment) in [
        ("ff02::1/127", "ff02::", "multicast"),
        ("::1/127", "::", "loopback"),
    ] {
        let host = edit(
            HOST,
            "address = \"fd00:30::1/127\", peer = \"fd00:30::\"",
            &format!("address = \"{addr}\", peer = \"{peer}\""),
        );
        let ps = problems(ROLE, &host);
        assert!(
            ps.iter()
                .any(|p| p.key == "uplinks[0].ipv6.address" && p.message.contains(fragment)),
            "{ps:#?}"
        );
    }
    // BGP peering over 169.254.0.0/16 and IPv6 link-local is common.
    let host = edit(
        HOST,
        "address = \"172.30.0.1/31\", peer = \"172.30.0.0\"",
        "address = \"169.254.0.1/31\", peer = \"169.254.0.0\"",
    );
    let host = edit(
        &host,
        "address = \"fd00:30::1/127\", peer = \"fd00:30::\"",
        "address = \"fe80::1/64\", peer = \"fe80::2\"",
    );
    load(ROLE, &host).expect("link-local transits are fine");
}

#[test]
fn reserved_asns_are_refused_private_ones_are_fine() {
    for asn in ["0", "23456", "65535", "4294967295"] {
        let host = edit(HOST, "asn = 65101", &format!("asn = {asn}"));
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "asn",
            &host,
            "asn = ",
            &[&format!("found ASN {asn}")],
        );
        let host = edit(HOST, "peer_asn = 65001", &format!("peer_asn = {asn}"));
        let ps = problems(ROLE, &host);
        let why = if asn == "23456" {
            "AS_TRANS"
        } else {
            "reserved"
        };
        one(
            &ps,
            "host.toml",
            "uplinks[0].peer_asn",
            &host,
            "peer_asn = ",
            &[why],
        );
    }
    for asn in ["64512", "65534", "4200000000", "4294967294", "13335"] {
        let host = edit(HOST, "asn = 65101", &format!("asn = {asn}"));
        load(ROLE, &host).unwrap_or_else(|p| panic!("{asn}: {p:#?}"));
    }
}

#[test]
fn hostnames_are_rfc_1123() {
    let long_label = "a".repeat(64);
    let long_name = ["a".repeat(63).as_str(); 5].join(".");
    for (name, fragment) in [
        ("", "empty"),
        ("-node", "starts or ends with '-'"),
        ("node-", "starts or ends with '-'"),
        ("node_a1", "other than a–z"),
        ("Node-A1", "upper case"),
        ("node..a1", "empty label"),
        ("node.", "empty label"),
        (" node", "other than a–z"),
        (long_label.as_str(), "at most 63"),
        (long_name.as_str(), "at most 253"),
        ("nodé", "other than a–z"),
    ] {
        let host = edit(
            HOST,
            "hostname = \"node-a1\"",
            &format!("hostname = \"{name}\""),
        );
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "hostname",
            &host,
            "hostname =",
            &[fragment, "RFC 1123"],
        );
    }
    for name in [
        "node-a1",
        "n",
        "1node",
        "node-a1.rack-3.example",
        &"a".repeat(63),
    ] {
        let host = edit(
            HOST,
            "hostname = \"node-a1\"",
            &format!("hostname = \"{name}\""),
        );
        load(ROLE, &host).unwrap_or_else(|p| panic!("{name}: {p:#?}"));
    }
}

#[test]
fn zone_and_rack_are_label_values() {
    for (key, value) in [
        ("zone", "az 1"),
        ("zone", "-az1"),
        ("rack", ""),
        ("rack", &"r".repeat(64)),
    ] {
        let host = edit(
            HOST,
            &format!("{key} = \""),
            &format!("{key} = \"{value}\" #"),
        );
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            key,
            &host,
            &format!("{key} = "),
            &["Kubernetes label value"],
        );
    }
}

#[test]
fn uplink_names_are_distinct_bird_names() {
    // tor-a and tor_a are one BIRD protocol name.
    let host = edit(HOST, "name = \"tor-b\"", "name = \"tor_a\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[1].name",
        &host,
        "name = \"tor_a\"",
        &["already taken by uplinks[0]"],
    );
    // tor-a's IPv6 session is tor_a_v6.
    let host = edit(HOST, "name = \"tor-b\"", "name = \"tor-a-v6\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[1].name",
        &host,
        "name = \"tor-a-v6\"",
        &["tor_a_v6"],
    );
    for reserved in ["bgp", "calico", "kernel", "master4", "device1"] {
        let host = edit(HOST, "name = \"tor-b\"", &format!("name = \"{reserved}\""));
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "uplinks[1].name",
            &host,
            &format!("name = \"{reserved}\""),
            &["BIRD name"],
        );
    }
    let long = "t".repeat(33);
    let host = edit(HOST, "name = \"tor-b\"", &format!("name = \"{long}\""));
    let ps = problems(ROLE, &host);
    one(&ps, "host.toml", "uplinks[1].name", &host, &long, &["1–32"]);
}

#[test]
fn hold_time_below_the_default_keepalive_is_refused() {
    let role = edit(ROLE, "keepalive = 3\n", "");
    let role = edit(&role, "hold_time = 9", "hold_time = 3");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "bgp.hold_time",
        &role,
        "hold_time = 3",
        &["keepalive = 1"],
    );
}

// Item 11: the messages the issue quotes.

#[test]
fn a_service_ip_without_its_prefix_length_gets_the_exact_fix() {
    let host = edit(HOST, "\"10.10.0.11/32\"", "\"10.10.0.11\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "service_ipv4",
        &host,
        "service_ipv4",
        &["add the /32", "\"10.10.0.11/32\""],
    );
    let host = edit(HOST, "\"172.30.0.1/31\"", "\"172.30.0.1\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[0].ipv4.address",
        &host,
        "172.30.0.1\"",
        &["add the /31"],
    );
}

#[test]
fn a_duplicate_key_names_its_path() {
    let role = edit(ROLE, "protocol = 211\n", "protocol = 211\nprotocol = 212\n");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "routing.protocol",
        &role,
        "protocol = 212",
        &["set twice", "remove one"],
    );
    let host = edit(
        HOST,
        "peer_asn = 65002",
        "peer_asn = 65002\npeer_asn = 65003",
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "uplinks[1].peer_asn",
        &host,
        "peer_asn = 65003",
        &["set twice"],
    );
}

#[test]
fn wrong_types_say_what_is_expected_in_words() {
    for (from, to, key, fragment) in [
        (
            "protocol = 211",
            "protocol = \"x\"",
            "routing.protocol",
            "expected a protocol number 5–255",
        ),
        (
            "mtu = 9000",
            "mtu = \"9000\"",
            "uplinks.mtu",
            "expected an MTU 1280–65535",
        ),
        (
            "encapsulation = \"none\"",
            "encapsulation = 3",
            "pods.encapsulation",
            "expected one of none, ipip, vxlan",
        ),
        (
            "graceful_restart = true",
            "graceful_restart = \"yes\"",
            "bgp.graceful_restart",
            "expected true or false",
        ),
    ] {
        let role = edit(ROLE, from, to);
        let ps = problems(&role, HOST);
        one(&ps, "role.toml", key, &role, to, &[fragment]);
    }
}
