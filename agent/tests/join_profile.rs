//! The `[join]` sections' validation errors: each names the file, the key
//! path, line and column, what was found and what is expected, and nothing
//! secret is ever echoed.

mod profile_fixtures;

use underlay::profile::{load_str, Problem};

use profile_fixtures::{edit, line_of, problems};

const ROLE: &str = r#"version = 1
[routing]
[[routing.tables]]
name = "underlay-host"
id = 1001
[[routing.rules]]
priority = 30001
table = "underlay-host"
[pods]
cidrs = ["10.244.0.0/16"]
[pods.zones]
az1 = "10.244.0.0/17"
az2 = "10.244.128.0/17"
[join]
cri_socket = "unix:///run/containerd/containerd.sock"
"#;

const HOST: &str = r#"version = 1
hostname = "node-a1"
zone = "az1"
rack = "r01"
asn = 65101
service_ipv4 = "10.10.0.11/32"

[[uplinks]]
name = "tor-a"
nic = { name = "eth0" }
ipv4 = { address = "172.30.0.1/31", peer = "172.30.0.0" }
peer_asn = 65001

[join]
api_servers = ["10.10.255.1:6443"]
ca_cert_hashes = ["sha256:6f1c4ea5a0f2c2e5b8f9d1d2c3b4a59687766554433221100ffeeddccbbaa998"]
token_file = "/etc/underlay/secrets/join-token"
"#;

const HASH: &str =
    "ca_cert_hashes = [\"sha256:6f1c4ea5a0f2c2e5b8f9d1d2c3b4a59687766554433221100ffeeddccbbaa998\"]\n";

/// Exactly one problem, in `file` at `key`, on the line holding `needle`,
/// whose message has every fragment.
fn one(ps: &[Problem], file: &str, key: &str, text: &str, needle: &str, fragments: &[&str]) {
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    let p = &ps[0];
    assert_eq!(p.file.to_str(), Some(file), "{p}");
    assert_eq!(p.key, key, "{p}");
    assert_eq!(p.line, line_of(text, needle), "{p}");
    assert!(p.column >= 1, "{p}");
    for f in fragments {
        assert!(p.message.contains(f), "message of {p} lacks {f:?}");
    }
}

#[test]
fn fixtures_are_valid() {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).unwrap();
    let j = d.join.unwrap();
    assert_eq!(j.node_name, "node-a1");
    assert_eq!(j.node_ip_arg(), "10.10.0.11");
    assert_eq!(
        j.node_labels_arg(),
        "topology.kubernetes.io/zone=az1,underlay.node.kubernetes.io/rack=r01"
    );
}

#[test]
fn no_join_section_in_the_host_facts_means_no_join() {
    let host = HOST.split("[join]").next().unwrap();
    let d = load_str("role.toml", ROLE, "host.toml", host).unwrap();
    assert!(d.join.is_none());
}

#[test]
fn a_label_a_kubelet_may_not_set_on_itself() {
    for (label, why) in [
        ("node-role.kubernetes.io/worker", "may not set on itself"),
        ("kubernetes.io/role", "may not set on itself"),
        ("example.k8s.io/x", "may not set on itself"),
        (
            "node-restriction.kubernetes.io/pool",
            "only the control plane",
        ),
        ("kubernetes.io/hostname", "set by the kubelet itself"),
        ("topology.kubernetes.io/zone", "host facts' `zone`"),
    ] {
        let host = edit(
            HOST,
            "token_file =",
            &format!("labels = {{ \"{label}\" = \"x\" }}\ntoken_file ="),
        );
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            &format!("join.labels.\"{label}\""),
            &host,
            label,
            &[why],
        );
    }
}

#[test]
fn node_role_in_the_role_profile_names_the_role_file_and_the_fix() {
    let role = format!("{ROLE}labels = {{ \"node-role.kubernetes.io/worker\" = \"\" }}\n");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "join.labels.\"node-role.kubernetes.io/worker\"",
        &role,
        "node-role",
        &[
            "node.kubernetes.io/worker",
            "kubectl label node",
            "NodeRestriction",
        ],
    );
}

#[test]
fn label_syntax() {
    let host = edit(
        HOST,
        "token_file =",
        "labels = { \"Example.com/rack\" = \"a b\" }\ntoken_file =",
    );
    let ps = problems(ROLE, &host);
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(ps[0].message.contains("not a DNS subdomain"), "{}", ps[0]);
    assert!(ps[1].message.contains("not a label value"), "{}", ps[1]);
}

#[test]
fn an_inline_token_is_refused_and_never_echoed() {
    let secret = "abcdef.0123456789abcdef";
    let host = edit(
        HOST,
        "token_file = \"/etc/underlay/secrets/join-token\"\n",
        &format!("token = \"{secret}\"\n"),
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.token",
        &host,
        "token =",
        &["token_file", "0600"],
    );
    let all = format!("{ps:?}");
    assert!(
        !all.contains(secret) && !all.contains("0123456789abcdef"),
        "{all}"
    );
}

#[test]
fn token_file_missing_or_relative() {
    let host = edit(
        HOST,
        "token_file = \"/etc/underlay/secrets/join-token\"\n",
        "",
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.token_file",
        &host,
        "[join]",
        &["missing", "0600"],
    );
    let host = edit(
        HOST,
        "\"/etc/underlay/secrets/join-token\"",
        "\"join-token\"",
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.token_file",
        &host,
        "token_file",
        &["absolute path"],
    );
}

#[test]
fn api_servers() {
    let host = edit(HOST, "api_servers = [\"10.10.255.1:6443\"]\n", "");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.api_servers",
        &host,
        "[join]",
        &["missing"],
    );
    for (bad, why) in [
        ("10.10.255.1", "without a port"),
        ("https://10.10.255.1:6443", "no scheme"),
        ("fd00::1:6443", "brackets"),
        ("10.10.255.1:99999", "1–65535"),
    ] {
        let host = edit(HOST, "10.10.255.1:6443", bad);
        let ps = problems(ROLE, &host);
        one(
            &ps,
            "host.toml",
            "join.api_servers[0]",
            &host,
            "api_servers",
            &[why],
        );
    }
}

#[test]
fn ca_pins() {
    let host = edit(HOST, "sha256:6f1c", "sha1:6f1c");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.ca_cert_hashes[0]",
        &host,
        "ca_cert_hashes",
        &["sha256:<64 hex digits>"],
    );
    let host = edit(HOST, HASH, "");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.ca_cert_hashes",
        &host,
        "[join]",
        &["missing", "trusts"],
    );
}

#[test]
fn unsafe_skip_ca_verification_only_when_the_role_allows_it() {
    let host = edit(HOST, HASH, "unsafe_skip_ca_verification = true\n");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.unsafe_skip_ca_verification",
        &host,
        "unsafe_skip",
        &[
            "refused",
            "impersonate",
            "allow_unsafe_skip_ca_verification",
        ],
    );
    let role = format!("{ROLE}allow_unsafe_skip_ca_verification = true\n");
    let d = load_str("role.toml", &role, "host.toml", &host).unwrap();
    assert!(d.join.unwrap().unsafe_skip_ca_verification);
    // With pins it would mean nothing: refused as confusing.
    let both = edit(
        HOST,
        HASH,
        &format!("{HASH}unsafe_skip_ca_verification = true\n"),
    );
    let ps = problems(&role, &both);
    one(
        &ps,
        "host.toml",
        "join.unsafe_skip_ca_verification",
        &both,
        "unsafe_skip",
        &["no effect"],
    );
}

#[test]
fn the_zone_must_have_a_pod_pool() {
    let host = edit(HOST, "zone = \"az1\"", "zone = \"az9\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "zone",
        &host,
        "zone = ",
        &["az1, az2", "no pool"],
    );
    let host = edit(HOST, "zone = \"az1\"\n", "");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "zone",
        &host,
        "[join]",
        &["missing", "zone = \"az1\""],
    );
}

#[test]
fn rack_and_its_label() {
    let host = edit(HOST, "rack = \"r01\"", "rack = \"row 1\"");
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "rack",
        &host,
        "rack = ",
        &["expected a Kubernetes label value"],
    );
    let role = format!("{ROLE}rack_label = \"node-role.kubernetes.io/rack\"\n");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "join.rack_label",
        &role,
        "rack_label",
        &["may not set on itself"],
    );
    let host = edit(
        HOST,
        "token_file =",
        "labels = { \"underlay.node.kubernetes.io/rack\" = \"r02\" }\ntoken_file =",
    );
    let ps = problems(ROLE, &host);
    one(
        &ps,
        "host.toml",
        "join.labels.\"underlay.node.kubernetes.io/rack\"",
        &host,
        "labels =",
        &["`rack`"],
    );
}

#[test]
fn taints_and_cri_socket() {
    let role = format!(
        "{ROLE}taints = [{{ key = \"dedicated\", value = \"edge\", effect = \"NoScheduleX\" }}]\n"
    );
    let ps = problems(&role, HOST);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].line, line_of(&role, "taints ="));
    assert!(ps[0].message.contains("NoSchedule"), "{}", ps[0]);
    let role = format!(
        "{ROLE}taints = [{{ key = \"a\", effect = \"NoSchedule\" }}, {{ key = \"a\", value = \"b\", effect = \"NoSchedule\" }}]\n"
    );
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "join.taints[1]",
        &role,
        "taints =",
        &["duplicate taint a:NoSchedule"],
    );
    let role = edit(
        ROLE,
        "unix:///run/containerd/containerd.sock",
        "/run/containerd/containerd.sock",
    );
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "join.cri_socket",
        &role,
        "cri_socket",
        &["did you mean unix:///run/containerd/containerd.sock?"],
    );
}

#[test]
fn timeouts() {
    let role = format!("{ROLE}discovery_timeout_s = 0\n");
    let ps = problems(&role, HOST);
    one(
        &ps,
        "role.toml",
        "join.discovery_timeout_s",
        &role,
        "discovery_timeout_s",
        &["1–3600"],
    );
}
