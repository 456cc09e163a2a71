//! Pure: the kubeadm JoinConfiguration against golden files (single stack,
//! dual stack, taints, labels, lab without a CA pin). Every golden also
//! parses as YAML into a mirror of kubeadm.k8s.io/v1beta4's JoinConfiguration
//! that refuses unknown fields: the field names are exactly v1beta4's
//! (cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go, JSON tags). Regenerate
//! after an intended change with `UPDATE_GOLDEN=1 cargo test -p underlay
//! --test join_config` and review the diff.

use std::path::PathBuf;

use serde::Deserialize;
use underlay::desired::Desired;
use underlay::join::render::render;
use underlay::join::BootstrapToken;
use underlay::profile::load_str;

// A mirror of the v1beta4 types, for parsing only: `deny_unknown_fields`
// everywhere, so a misspelt or invented key fails the test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinConfiguration {
    api_version: String,
    kind: String,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    node_registration: Option<NodeRegistrationOptions>,
    #[serde(default)]
    ca_cert_path: Option<String>,
    discovery: Discovery,
    #[serde(default)]
    control_plane: Option<serde_norway::Value>,
    #[serde(default)]
    skip_phases: Option<Vec<String>>,
    #[serde(default)]
    patches: Option<serde_norway::Value>,
    #[serde(default)]
    timeouts: Option<Timeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeRegistrationOptions {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    cri_socket: Option<String>,
    // No omitempty upstream: nil means kubeadm's defaults, so we always write it.
    taints: Vec<Taint>,
    #[serde(default)]
    kubelet_extra_args: Vec<Arg>,
    #[serde(default)]
    ignore_preflight_errors: Option<Vec<String>>,
    #[serde(default)]
    image_pull_policy: Option<String>,
    #[serde(default)]
    image_pull_serial: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Taint {
    key: String,
    #[serde(default)]
    value: Option<String>,
    effect: String,
    #[serde(default)]
    time_added: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Discovery {
    #[serde(default)]
    bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(default)]
    file: Option<serde_norway::Value>,
    #[serde(default)]
    tls_bootstrap_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    token: String,
    #[serde(default)]
    api_server_endpoint: Option<String>,
    #[serde(default)]
    ca_cert_hashes: Option<Vec<String>>,
    #[serde(default, rename = "unsafeSkipCAVerification")]
    unsafe_skip_ca_verification: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Timeouts {
    #[serde(default)]
    control_plane_component_health_check: Option<String>,
    #[serde(default)]
    kubelet_health_check: Option<String>,
    #[serde(default, rename = "kubernetesAPICall")]
    kubernetes_api_call: Option<String>,
    #[serde(default, rename = "etcdAPICall")]
    etcd_api_call: Option<String>,
    #[serde(default)]
    tls_bootstrap: Option<String>,
    #[serde(default)]
    discovery: Option<String>,
    #[serde(default)]
    upgrade_manifests: Option<String>,
}

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

const TOKEN: &str = "k8stok.0123456789abcdef";

fn load(role: &str, host: &str) -> Desired {
    load_str("role.toml", role, "host.toml", host).unwrap_or_else(|e| panic!("{e}"))
}

fn with_service_v6(host: &str) -> String {
    host.replace(
        "service_ipv4 = \"10.10.0.11/32\"\n",
        "service_ipv4 = \"10.10.0.11/32\"\nservice_ipv6 = \"fd00:10::11/128\"\n",
    )
}

/// Renders (token redacted), compares with the golden, parses it.
fn golden(name: &str, d: &Desired) -> JoinConfiguration {
    let j = d.join.as_ref().expect("the host facts have [join]");
    let text = render(j, &j.api_servers[0], None);
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/join/{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        text, want,
        "golden {name} differs; UPDATE_GOLDEN=1 to accept"
    );
    parse(&text)
}

fn parse(text: &str) -> JoinConfiguration {
    let c: JoinConfiguration = serde_norway::from_str(text)
        .unwrap_or_else(|e| panic!("not a v1beta4 JoinConfiguration: {e}\n{text}"));
    assert_eq!(c.api_version, "kubeadm.k8s.io/v1beta4");
    assert_eq!(c.kind, "JoinConfiguration");
    assert!(c.dry_run.is_none() && c.ca_cert_path.is_none() && c.control_plane.is_none());
    assert!(c.skip_phases.is_none() && c.patches.is_none());
    assert!(c.discovery.file.is_none() && c.discovery.tls_bootstrap_token.is_none());
    c
}

fn kubelet_arg<'a>(c: &'a JoinConfiguration, name: &str) -> Option<&'a str> {
    let nr = c.node_registration.as_ref()?;
    let args: Vec<&Arg> = nr
        .kubelet_extra_args
        .iter()
        .filter(|a| a.name == name)
        .collect();
    assert!(args.len() <= 1, "{name} given twice");
    args.first().map(|a| a.value.as_str())
}

#[test]
fn single_stack() {
    let c = golden("single_stack", &load(ROLE, HOST));
    let bt = c.discovery.bootstrap_token.as_ref().unwrap();
    assert_eq!(bt.token, "<redacted>");
    assert_eq!(bt.api_server_endpoint.as_deref(), Some("10.10.255.1:6443"));
    assert_eq!(bt.ca_cert_hashes.as_ref().unwrap().len(), 1);
    assert_eq!(bt.unsafe_skip_ca_verification, None);
    let nr = c.node_registration.as_ref().unwrap();
    assert_eq!(nr.name.as_deref(), Some("node-a1"));
    assert!(nr.taints.is_empty());
    assert!(nr.cri_socket.is_none() && nr.ignore_preflight_errors.is_none());
    assert!(nr.image_pull_policy.is_none() && nr.image_pull_serial.is_none());
    assert_eq!(kubelet_arg(&c, "node-ip"), Some("10.10.0.11"));
    assert_eq!(
        kubelet_arg(&c, "node-labels"),
        Some("topology.kubernetes.io/zone=az1,underlay.node.kubernetes.io/rack=r01")
    );
    assert!(c.timeouts.is_none());
}

#[test]
fn dual_stack() {
    let c = golden("dual_stack", &load(ROLE, &with_service_v6(HOST)));
    // kubelet takes a dual-stack node-ip as "v4,v6".
    assert_eq!(kubelet_arg(&c, "node-ip"), Some("10.10.0.11,fd00:10::11"));
}

#[test]
fn taints_cri_socket_and_timeouts() {
    let role = format!(
        "{ROLE}[join]\ncri_socket = \"unix:///run/containerd/containerd.sock\"\n\
         discovery_timeout_s = 120\ntls_bootstrap_timeout_s = 300\ntaints = [\n  \
         {{ key = \"node.example.com/dedicated\", value = \"edge\", effect = \"NoSchedule\" }},\n  \
         {{ key = \"node.example.com/draining\", effect = \"NoExecute\" }},\n]\n"
    );
    let c = golden("taints", &load(&role, HOST));
    let nr = c.node_registration.as_ref().unwrap();
    assert_eq!(
        nr.cri_socket.as_deref(),
        Some("unix:///run/containerd/containerd.sock")
    );
    assert_eq!(nr.taints.len(), 2);
    assert_eq!(nr.taints[0].key, "node.example.com/dedicated");
    assert_eq!(nr.taints[0].value.as_deref(), Some("edge"));
    assert_eq!(nr.taints[0].effect, "NoSchedule");
    assert_eq!(nr.taints[1].value, None);
    assert_eq!(nr.taints[1].effect, "NoExecute");
    assert!(nr.taints[1].time_added.is_none());
    let t = c.timeouts.as_ref().unwrap();
    assert_eq!(t.discovery.as_deref(), Some("120s"));
    assert_eq!(t.tls_bootstrap.as_deref(), Some("300s"));
    assert!(t.control_plane_component_health_check.is_none() && t.kubelet_health_check.is_none());
    assert!(t.kubernetes_api_call.is_none() && t.etcd_api_call.is_none());
    assert!(t.upgrade_manifests.is_none());
}

#[test]
fn labels_from_role_host_zone_and_rack() {
    let role = format!(
        "{ROLE}[join]\nrack_label = \"example.com/rack\"\n\
         labels = {{ \"node.kubernetes.io/pool\" = \"general\", \"example.com/team\" = \"infra\" }}\n"
    );
    let host = HOST.replace(
        "token_file = ",
        "labels = { \"example.com/team\" = \"storage\", \"kubelet.kubernetes.io/disk\" = \"nvme\" }\ntoken_file = ",
    );
    let c = golden("labels", &load(&role, &host));
    // The host's value wins over the role's; sorted by key.
    assert_eq!(
        kubelet_arg(&c, "node-labels"),
        Some(
            "example.com/rack=r01,example.com/team=storage,kubelet.kubernetes.io/disk=nvme,\
             node.kubernetes.io/pool=general,topology.kubernetes.io/zone=az1"
        )
    );
}

#[test]
fn lab_without_a_ca_pin_when_the_role_allows_it() {
    let role = format!("{ROLE}[join]\nallow_unsafe_skip_ca_verification = true\n");
    let host = HOST.replace(
        "ca_cert_hashes = [\"sha256:6f1c4ea5a0f2c2e5b8f9d1d2c3b4a59687766554433221100ffeeddccbbaa998\"]\n",
        "unsafe_skip_ca_verification = true\n",
    );
    let c = golden("unsafe_skip_ca", &load(&role, &host));
    let bt = c.discovery.bootstrap_token.as_ref().unwrap();
    assert_eq!(bt.unsafe_skip_ca_verification, Some(true));
    assert!(bt.ca_cert_hashes.is_none());
}

#[test]
fn the_token_is_written_only_when_given_and_only_once() {
    let d = load(ROLE, HOST);
    let j = d.join.as_ref().unwrap();
    let token = BootstrapToken::parse(TOKEN).unwrap();
    let with = render(j, &j.api_servers[0], Some(&token));
    assert_eq!(with.matches(TOKEN).count(), 1, "{with}");
    let c = parse(&with);
    assert_eq!(c.discovery.bootstrap_token.unwrap().token, TOKEN);
    let without = render(j, &j.api_servers[0], None);
    assert!(!without.contains(TOKEN) && !without.contains("0123456789abcdef"));
    // Only the token line differs.
    let diff: Vec<(&str, &str)> = with
        .lines()
        .zip(without.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 1, "{diff:?}");
}

#[test]
fn fallback_endpoints_each_get_their_own_config() {
    let host = HOST.replace(
        "api_servers = [\"10.10.255.1:6443\"]",
        "api_servers = [\"10.10.255.1:6443\", \"api.cluster.example:6443\"]",
    );
    let d = load(ROLE, &host);
    let j = d.join.as_ref().unwrap();
    let second = parse(&render(j, &j.api_servers[1], None));
    assert_eq!(
        second
            .discovery
            .bootstrap_token
            .unwrap()
            .api_server_endpoint
            .as_deref(),
        Some("api.cluster.example:6443")
    );
}

#[test]
fn the_mirror_refuses_a_field_v1beta4_does_not_have() {
    let d = load(ROLE, HOST);
    let j = d.join.as_ref().unwrap();
    let good = render(j, &j.api_servers[0], None);
    for (from, to) in [
        ("apiServerEndpoint", "apiServerEndPoint"),
        ("kubeletExtraArgs", "kubeletArgs"),
        ("caCertHashes", "caCertHash"),
    ] {
        let bad = good.replace(from, to);
        assert!(
            serde_norway::from_str::<JoinConfiguration>(&bad).is_err(),
            "{to} was accepted"
        );
    }
    // v1beta3's map form of kubeletExtraArgs is not v1beta4's list.
    let v1beta3 = good.replace(
        "  kubeletExtraArgs:\n    - name: \"node-ip\"\n      value: \"10.10.0.11\"\n",
        "  kubeletExtraArgs:\n    node-ip: \"10.10.0.11\"\n",
    );
    assert_ne!(v1beta3, good);
    assert!(serde_norway::from_str::<JoinConfiguration>(&v1beta3).is_err());
}
