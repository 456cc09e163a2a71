//! The real kernel, as root, in namespaces each test creates and removes:
//! converge a two-uplink host, then again (zero changes); drop an uplink;
//! foreign objects survive; a bad profile changes nothing.

mod common;

use std::path::Path;

use common::{host_facts, Lab, PROFILE_SYSCTLS, ROLE};
use serde_json::Value;

fn addr<'a>(addrs: &'a Value, ifname: &str, local: &str) -> Option<&'a Value> {
    addrs
        .as_array()?
        .iter()
        .filter(|l| l["ifname"] == ifname)
        .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
        .find(|a| a["local"] == local)
}

fn changes(json: &Value) -> u64 {
    let s = &json["summary"];
    s["create"].as_u64().unwrap() + s["update"].as_u64().unwrap() + s["delete"].as_u64().unwrap()
}

#[test]
fn converges_two_uplink_host_then_zero_changes() {
    let lab = Lab::new();
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let role = Path::new(ROLE);

    let (code, plan, _) = lab.underlay("plan", role, &host);
    assert_eq!(code, 2, "plan on a fresh host has changes pending: {plan}");
    assert_eq!(plan["changed"], false, "plan changes nothing");

    let (code, first, stderr) = lab.underlay("apply", role, &host);
    assert_eq!(code, 0, "apply: {first}\n{stderr}");
    assert_eq!(first["changed"], true);
    assert_eq!(first["converged"], true);
    let n = changes(&first);
    assert!(
        n >= 20,
        "a fresh host needs files, links, sysctls, addresses and rules: {n}"
    );
    for phase in ["observe", "plan", "apply", "verify", "total"] {
        assert!(
            first["durations_ms"][phase].as_f64().is_some(),
            "duration {phase}"
        );
    }
    let resources = first["resources"].as_array().unwrap();
    let svc = resources
        .iter()
        .find(|r| r["id"] == "10.10.0.11/32 dev lo")
        .expect("service IP resource");
    assert_eq!(svc["action"], "create");
    assert_eq!(svc["before"], Value::Null);

    // The kernel's view, through the standard tools.
    let addrs = lab.ip_json(&["addr"]);
    let svc = addr(&addrs, "lo", "10.10.0.11").expect("service IPv4 on lo");
    assert_eq!(svc["scope"], "global");
    assert_eq!(svc["prefixlen"], 32);
    assert_eq!(
        addr(&addrs, "lo", "fd00:10::11").expect("service IPv6 on lo")["prefixlen"],
        128
    );
    for (nic, ip) in [("eth0", "172.30.0.1"), ("eth1", "172.30.1.1")] {
        let a = addr(&addrs, nic, ip).unwrap_or_else(|| panic!("transit on {nic}"));
        assert_eq!(a["scope"], "link", "transit addresses are scope link");
        assert_eq!(a["prefixlen"], 31);
    }
    let links = lab.ip_json(&["link"]);
    for l in links.as_array().unwrap() {
        if l["ifname"] == "eth0" || l["ifname"] == "eth1" {
            assert_eq!(l["mtu"], 9000);
            assert!(
                l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                "{l}"
            );
        }
    }
    for fam in [&["rule"][..], &["-6", "rule"][..]] {
        let rules = lab.ip_json(fam);
        let ours: Vec<&Value> = rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["protocol"] == "211")
            .collect();
        assert_eq!(ours.len(), 2, "{fam:?}: {rules}");
        assert_eq!(ours[0]["priority"], 30000);
        assert_eq!(ours[0]["table"], "main");
        assert_eq!(ours[0]["suppress_prefixlen"], 0);
        assert_eq!(ours[1]["priority"], 30001);
        assert_eq!(ours[1]["table"], "1001");
    }
    assert_eq!(lab.sysctl("net.ipv4.ip_forward"), "1");
    assert_eq!(lab.sysctl("net.ipv4.fib_multipath_hash_policy"), "1");
    assert_eq!(lab.sysctl("net.ipv4.conf.eth0.rp_filter"), "2");
    assert_eq!(lab.sysctl("net.ipv4.conf.eth1.rp_filter"), "2");
    let persisted =
        std::fs::read_to_string(lab.root().join("etc/sysctl.d/90-underlay.conf")).unwrap();
    assert!(
        persisted.contains("net.ipv4.conf.eth0.rp_filter = 2"),
        "{persisted}"
    );
    let tables =
        std::fs::read_to_string(lab.root().join("etc/iproute2/rt_tables.d/underlay.conf")).unwrap();
    assert!(tables.contains("1001\tunderlay-host"));
    let protos =
        std::fs::read_to_string(lab.root().join("etc/iproute2/rt_protos.d/underlay.conf")).unwrap();
    assert!(protos.contains("211\tunderlay"));
    assert!(lab.root().join("var/lib/underlay/state.json").exists());

    // Scope link at work: with a fabric default in the host table, the kernel
    // picks the loopback service IP as source, never the transit address.
    lab.ip(&[
        "route",
        "add",
        "default",
        "via",
        "172.30.0.0",
        "dev",
        "eth0",
        "table",
        "1001",
    ]);
    let route = lab.ip_json(&["route", "get", "203.0.113.9"]);
    assert_eq!(route[0]["prefsrc"], "10.10.0.11", "{route}");

    let (code, second, _) = lab.underlay("apply", role, &host);
    assert_eq!(code, 0);
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(changes(&second), 0);
    let (code, _, _) = lab.underlay("plan", role, &host);
    assert_eq!(code, 0, "plan after convergence: nothing to do");
    let (code, _, _) = lab.underlay("verify", role, &host);
    assert_eq!(code, 0);
}

#[test]
fn dropping_an_uplink_removes_exactly_our_objects() {
    let lab = Lab::new();
    let role = Path::new(ROLE);
    let both = lab.write_host("both.toml", &host_facts(&["tor-a", "tor-b"]));
    let only_a = lab.write_host("only-a.toml", &host_facts(&["tor-a"]));
    // A DHCP-style address on the uplink that is about to be dropped.
    lab.ip(&["addr", "add", "192.168.77.5/24", "dev", "eth1"]);

    let (code, _, err) = lab.underlay("apply", role, &both);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = lab.underlay("apply", role, &only_a);
    assert_eq!(code, 0, "{out}\n{err}");
    let deleted: Vec<(&str, &str)> = out["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "delete")
        .map(|r| (r["kind"].as_str().unwrap(), r["id"].as_str().unwrap()))
        .collect();
    // The transit address goes; the per-uplink sysctl leaves the persisted
    // file (its live value stays: the value before ours is unknowable).
    assert_eq!(
        deleted,
        [
            ("sysctl", "net.ipv4.conf.eth1.rp_filter"),
            ("address", "172.30.1.1/31 dev eth1")
        ],
        "{out}"
    );
    assert_eq!(lab.sysctl("net.ipv4.conf.eth1.rp_filter"), "2");

    let addrs = lab.ip_json(&["addr"]);
    assert!(
        addr(&addrs, "eth1", "172.30.1.1").is_none(),
        "our transit on eth1 is gone"
    );
    assert!(
        addr(&addrs, "eth1", "192.168.77.5").is_some(),
        "the foreign address stays"
    );
    assert!(
        addr(&addrs, "eth0", "172.30.0.1").is_some(),
        "tor-a untouched"
    );
    assert!(addr(&addrs, "lo", "10.10.0.11").is_some());
    let persisted =
        std::fs::read_to_string(lab.root().join("etc/sysctl.d/90-underlay.conf")).unwrap();
    assert!(!persisted.contains("eth1"), "{persisted}");

    let (code, again, _) = lab.underlay("apply", role, &only_a);
    assert_eq!(code, 0);
    assert_eq!(again["changed"], false);
}

#[test]
fn foreign_rules_routes_and_tables_survive_ten_runs() {
    let lab = Lab::new();
    let role = Path::new(ROLE);
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let (code, _, err) = lab.underlay("apply", role, &host);
    assert_eq!(code, 0, "{err}");
    // Another daemon's rule and routes: in main, in its own table, and the
    // host BIRD's default in our host table (BIRD's, not ours).
    lab.ip(&[
        "rule", "add", "pref", "100", "fwmark", "0x10", "lookup", "77", "proto", "186",
    ]);
    lab.ip(&["rule", "add", "pref", "30000", "lookup", "78"]);
    lab.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "172.30.0.0",
        "dev",
        "eth0",
        "proto",
        "bird",
    ]);
    lab.ip(&[
        "route",
        "add",
        "198.51.101.0/24",
        "via",
        "172.30.1.0",
        "dev",
        "eth1",
        "table",
        "77",
    ]);
    lab.ip(&[
        "route",
        "add",
        "default",
        "via",
        "172.30.0.0",
        "dev",
        "eth0",
        "table",
        "1001",
        "proto",
        "bird",
    ]);
    lab.ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"]);
    let before = lab.snapshot(PROFILE_SYSCTLS);
    for run in 0..10 {
        let (code, out, _) = lab.underlay("apply", role, &host);
        assert_eq!(code, 0, "run {run}: {out}");
        assert_eq!(out["changed"], false, "run {run}: {out}");
    }
    assert_eq!(lab.snapshot(PROFILE_SYSCTLS), before);
}

#[test]
fn bad_profile_changes_nothing() {
    let lab = Lab::new();
    let role = Path::new(ROLE);
    lab.ip(&["addr", "add", "192.168.77.5/24", "dev", "eth0"]);
    let before = lab.snapshot(PROFILE_SYSCTLS);

    let bad_text = host_facts(&["tor-a", "tor-b"]).replace("172.30.0.1/31", "172.30.0.1/24");
    let bad_line = bad_text
        .lines()
        .position(|l| l.contains("172.30.0.1/24"))
        .unwrap()
        + 1;
    let bad = lab.write_host("bad.toml", &bad_text);
    let (code, out, _) = lab.underlay("apply", role, &bad);
    assert_eq!(code, 1);
    assert_eq!(out["changed"], false);
    let p = &out["failure"]["problems"][0];
    assert_eq!(p["key"], "uplinks[0].ipv4.address", "{out}");
    assert!(p["file"].as_str().unwrap().ends_with("bad.toml"));
    assert_eq!(p["line"], bad_line);
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "a bad profile changed the host"
    );

    // Valid profile, but a NIC that is not there: refused before any change.
    let missing = host_facts(&["tor-a", "tor-b"]).replace("name = \"eth1\"", "name = \"ens9\"");
    let missing = lab.write_host("missing.toml", &missing);
    let (code, out, _) = lab.underlay("apply", role, &missing);
    assert_eq!(code, 1);
    let err = out["failure"]["message"].as_str().unwrap();
    assert!(err.contains("no NIC matches name ens9"), "{err}");
    assert!(
        err.contains("eth0") && err.contains("eth1") && err.contains("lo"),
        "{err}"
    );
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "a missing NIC changed the host"
    );
    assert!(!lab.root().join("etc").exists(), "no file was written");
}

#[test]
fn unknown_netns_is_a_clear_error() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_underlay"))
        .args(["plan", "--netns", "underlay-no-such-ns", "--root"])
        .arg(dir.path())
        .args(["--profile", ROLE, "--host"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/examples/host.toml"
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ip netns add underlay-no-such-ns"), "{err}");
}

#[test]
fn wait_names_the_failing_gate_when_no_bird_runs() {
    let lab = Lab::new();
    let role = Path::new(ROLE);
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    let out = lab.underlay_raw(
        &["apply", "--json", "--wait", "--wait-timeout", "1"],
        role,
        &host,
    );
    assert_eq!(out.status.code(), Some(3), "a failed gate exits 3");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["converged"], true, "the host itself converged");
    let gates = &doc["gates"];
    assert_eq!(gates["passed"], false);
    let by_name = |n: &str| {
        gates["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .unwrap()
            .clone()
    };
    // The ToR ends are up in the lab fixture, so the uplinks gate passes...
    assert_eq!(by_name("uplinks-up")["passed"], true, "{gates}");
    // ...but no BIRD answers on the socket below the scratch root.
    let bgp = by_name("bgp-established");
    assert_eq!(bgp["passed"], false);
    assert!(
        bgp["evidence"]
            .as_str()
            .unwrap()
            .contains("BIRD not answering"),
        "{bgp}"
    );
    assert!(gates["elapsed_ms"].as_u64().unwrap() >= 1000);
}

#[test]
fn overlay_profile_owns_one_nft_table_and_leaves_the_others() {
    let lab = Lab::new();
    let ipip = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../profiles/l3-ecmp-calico-ipip.toml"
    ));
    let flat = Path::new(ROLE);
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));
    // kube-proxy-style rules in iptables-nft's own table: never ours.
    common::must(
        "ip",
        &[
            "netns", "exec", &lab.host, "nft", "add", "table", "ip", "nat",
        ],
    );
    common::must(
        "ip",
        &[
            "netns",
            "exec",
            &lab.host,
            "nft",
            "add",
            "chain",
            "ip",
            "nat",
            "POSTROUTING",
            "{ type nat hook postrouting priority 100; }",
        ],
    );
    common::must(
        "ip",
        &[
            "netns",
            "exec",
            &lab.host,
            "nft",
            "add",
            "rule",
            "ip",
            "nat",
            "POSTROUTING",
            "meta",
            "mark",
            "&",
            "0x4000",
            "==",
            "0x4000",
            "masquerade",
        ],
    );
    let foreign = || {
        common::must(
            "ip",
            &[
                "netns", "exec", &lab.host, "nft", "list", "table", "ip", "nat",
            ],
        )
    };
    let before = foreign();

    let (code, out, err) = lab.underlay("apply", ipip, &host);
    assert_eq!(code, 0, "{out}\n{err}");
    let ours = common::must(
        "ip",
        &[
            "netns", "exec", &lab.host, "nft", "list", "table", "inet", "underlay",
        ],
    );
    assert!(ours.contains("chain mark_guard"), "{ours}");
    assert!(ours.contains("priority srcnat - 1"), "{ours}");
    assert!(
        ours.contains("meta mark set meta mark & 0xffffbfff"),
        "{ours}"
    );
    let (code, again, _) = lab.underlay("apply", ipip, &host);
    assert_eq!(code, 0);
    assert_eq!(again["changed"], false, "{again}");

    // A hand edit of our table is put right on the next run.
    common::must(
        "ip",
        &[
            "netns",
            "exec",
            &lab.host,
            "nft",
            "flush",
            "chain",
            "inet",
            "underlay",
            "mark_guard",
        ],
    );
    let (_, fixed, _) = lab.underlay("apply", ipip, &host);
    let nft_item = fixed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "nft")
        .unwrap()
        .clone();
    assert_eq!(nft_item["action"], "update", "{fixed}");

    // The flat profile wants no table: ours goes, the foreign one stays as it was.
    let (code, out, _) = lab.underlay("apply", flat, &host);
    assert_eq!(code, 0, "{out}");
    let listed = common::run(
        "ip",
        &[
            "netns", "exec", &lab.host, "nft", "list", "table", "inet", "underlay",
        ],
    );
    assert!(!listed.status.success(), "our table was removed");
    assert_eq!(foreign(), before, "the foreign nat table is untouched");
}

#[test]
fn bgp_password_reaches_bird_only() {
    let lab = Lab::new();
    let role = Path::new(ROLE);
    let secret = "t0p-s3cret-md5";
    let facts = host_facts(&["tor-a", "tor-b"]).replace(
        "peer_asn = 65001\n",
        "peer_asn = 65001\npassword_file = \"/etc/underlay/secrets/tor-a\"\n",
    );
    let host = lab.write_host("host.toml", &facts);
    // Missing secret: refused before any change, naming the uplink and file.
    let (code, out, _) = lab.underlay("apply", role, &host);
    assert_eq!(code, 1);
    assert!(
        out["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("uplink 'tor-a': password_file /etc/underlay/secrets/tor-a"),
        "{out}"
    );
    assert!(!lab.root().join("etc/bird").exists());

    std::fs::create_dir_all(lab.root().join("etc/underlay/secrets")).unwrap();
    let secret_file = lab.root().join("etc/underlay/secrets/tor-a");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    // Readable by others (umask 022 made it 0644): refused like ssh refuses
    // such a key, with the fix, before any change.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = lab.snapshot(PROFILE_SYSCTLS);
    let (code, out, _) = lab.underlay("apply", role, &host);
    assert_eq!(code, 1, "{out}");
    let err = out["failure"]["message"].as_str().unwrap();
    assert!(
        err.contains("has mode 0644")
            && err.contains(&format!(
                "chmod 600 {0}; chown root:root {0}",
                secret_file.display()
            )),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "an open secret file changed the host"
    );
    assert!(!lab.root().join("etc/bird").exists());
    // A symlink to it is refused too (it could point anywhere).
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let linked = lab.write_host(
        "linked.toml",
        &facts.replace("/etc/underlay/secrets/tor-a", "/etc/underlay/secrets/link"),
    );
    std::os::unix::fs::symlink("tor-a", lab.root().join("etc/underlay/secrets/link")).unwrap();
    let (code, out, _) = lab.underlay("apply", role, &linked);
    assert_eq!(code, 1, "{out}");
    assert!(
        out["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{out}"
    );
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "a linked secret changed the host"
    );
    let run = |args: &[&str]| {
        let out = lab.underlay_raw(args, role, &host);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, json) = run(&["apply", "--json", "-vv"]);
    assert_eq!(code, Some(0), "{json}");
    assert!(
        !json.contains(secret),
        "the secret leaked into JSON or logs: {json}"
    );
    let conf = std::fs::read_to_string(lab.root().join("etc/bird/bird.conf")).unwrap();
    assert!(
        conf.contains(&format!("password \"{secret}\";")),
        "BIRD gets the password"
    );
    let (_, plan) = run(&["plan", "-v"]);
    assert!(!plan.contains(secret), "{plan}");
    let (code, rendered) = run(&["render", "bird"]);
    assert_eq!(code, Some(0));
    assert!(
        rendered.contains("password \"<redacted>\";") && !rendered.contains(secret),
        "{rendered}"
    );
    let (_, shown) = run(&["render", "bird", "--show-secrets"]);
    assert!(shown.contains(secret));

    // BIRD rejecting a config whose bad line carries the password: the
    // excerpt in the error is redacted too.
    let tdir = lab.root().join("etc/underlay/templates");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(
        tdir.join("bird.conf.j2"),
        "router id {{ router_id }};\n{% for s in sessions %}{% if s.password %}bogus password \"{{ s.password }}\";\n{% endif %}{% endfor %}",
    )
    .unwrap();
    let (code, rejected) = run(&["apply", "--json"]);
    assert_eq!(code, Some(1), "{rejected}");
    assert!(
        rejected.contains("BIRD rejected the rendered config"),
        "{rejected}"
    );
    assert!(
        rejected.contains("<redacted>") && !rejected.contains(secret),
        "{rejected}"
    );
    assert_eq!(
        std::fs::read_to_string(lab.root().join("etc/bird/bird.conf")).unwrap(),
        conf,
        "kept"
    );
}
