//! The `[join]` sections: the cluster's facts in the host facts (API server,
//! CA pins, where the token is), the role's in the role profile (taints, CRI
//! socket, labels every host of the role gets). Validated here into
//! [`crate::desired::join::Join`]; labels are checked against what a kubelet
//! may set on itself, because a kubelet given any other `kubernetes.io` or
//! `k8s.io` label in `--node-labels` refuses to start, and NodeRestriction
//! rejects the registration.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use toml::Spanned;

use super::{Problem, Source};
use crate::desired::join::{
    Join, Taint, TaintEffect, DEFAULT_KUBEADM_TIMEOUT_S, DEFAULT_RACK_LABEL, ZONE_LABEL,
};
use crate::desired::Pods;

/// Role profile `[join]`: the same for every host of the role.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleJoinInput {
    /// `unix:///run/containerd/containerd.sock`; default: kubeadm detects it.
    #[serde(default)]
    pub cri_socket: Option<Spanned<String>>,
    #[serde(default)]
    pub taints: Vec<TaintInput>,
    /// Labels every host of the role registers with.
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The label the host facts' `rack` goes into.
    #[serde(default)]
    pub rack_label: Option<Spanned<String>>,
    /// Lets host facts set `unsafe_skip_ca_verification` (labs only).
    #[serde(default)]
    pub allow_unsafe_skip_ca_verification: bool,
    #[serde(default)]
    pub discovery_timeout_s: Option<Spanned<u32>>,
    #[serde(default)]
    pub tls_bootstrap_timeout_s: Option<Spanned<u32>>,
    /// Hang bound of one kubeadm run.
    #[serde(default)]
    pub kubeadm_timeout_s: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaintInput {
    pub key: Spanned<String>,
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    pub effect: Spanned<TaintEffect>,
}

/// Host facts `[join]`: this cluster's facts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostJoinInput {
    #[serde(default)]
    pub api_servers: Vec<Spanned<String>>,
    #[serde(default)]
    pub ca_cert_hashes: Vec<Spanned<String>>,
    #[serde(default)]
    pub unsafe_skip_ca_verification: Option<Spanned<bool>>,
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// Never accepted: read only to say so (its value is never echoed).
    #[serde(default)]
    pub token: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// Labels the kubelet sets on itself from the machine; one given in
/// `--node-labels` would fight it.
const SET_BY_KUBELET: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The `kubernetes.io` labels a kubelet may set on itself
/// (k8s.io/kubelet/pkg/apis well_known_labels.go, `kubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];

/// Label namespaces (and their subdomains) a kubelet may set on itself.
const KUBELET_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_namespace(ns: &str, base: &str) -> bool {
    ns == base || ns.strip_suffix(base).is_some_and(|s| s.ends_with('.'))
}

/// Whether a kubelet may put `key` on its own Node: the rule the kubelet
/// applies to `--node-labels` and NodeRestriction applies to the
/// registration. `Err` says why not and what to use instead.
pub fn kubelet_may_set(key: &str) -> Result<(), String> {
    let ns = key.split_once('/').map_or("", |(p, _)| p);
    if in_namespace(ns, "node-restriction.kubernetes.io") {
        return Err(format!(
            "'{key}' is in node-restriction.kubernetes.io, which only the control plane may set (NodeRestriction); \
             set it with `kubectl label node`, or use your own prefix"
        ));
    }
    let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
    let allowed =
        KUBELET_LABELS.contains(&key) || KUBELET_NAMESPACES.iter().any(|b| in_namespace(ns, b));
    if kubernetes && !allowed {
        let name = key.split_once('/').map_or(key, |(_, n)| n);
        return Err(format!(
            "'{key}' is a kubernetes.io/k8s.io label a kubelet may not set on itself (the kubelet refuses to start \
             with it in --node-labels, NodeRestriction rejects it); only the well-known topology/os/arch/instance-type \
             labels and the [*.]node.kubernetes.io and [*.]kubelet.kubernetes.io namespaces are allowed. \
             Use e.g. 'node.kubernetes.io/{name}' or a prefix of your own, or set it with `kubectl label node`"
        ));
    }
    Ok(())
}

/// A label value or the name part of a key: up to 63 of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric.
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// A DNS-1123 subdomain (label key prefixes): lowercase, dot-separated.
fn is_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'-')
        })
}

/// A Kubernetes qualified name (label and taint keys): `[prefix/]name`.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_subdomain(p) {
            return Err(format!(
                "'{key}': the prefix '{p}' is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
    }
    if !is_name(name) {
        return Err(format!(
            "'{key}': the name '{name}' must be 1–63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "'{value}' is not a label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// `host:port`, the host an IP address (IPv6 in brackets) or a DNS name.
fn check_endpoint(s: &str) -> Result<(), String> {
    let shown = super::shown(s);
    let example =
        "expected host:port, e.g. 10.10.255.1:6443, api.cluster.example:6443 or [fd00::1]:6443";
    if s.contains("://") {
        return Err(format!(
            "found '{shown}', {example} (no scheme: kubeadm always uses HTTPS)"
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p)) if h.parse::<Ipv6Addr>().is_ok() => (h, p),
            _ => return Err(format!("found '{shown}', {example}")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "found '{shown}', {example}: put an IPv6 address in brackets"
                ))
            }
            Some((h, p)) => (h, p),
            None => return Err(format!("found '{shown}' without a port, {example}")),
        }
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(format!(
            "found '{shown}': port '{}' is not 1–65535, {example}",
            super::shown(port)
        ));
    }
    let dns = host.len() <= 253
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        });
    if host.parse::<Ipv4Addr>().is_err() && host.parse::<Ipv6Addr>().is_err() && !dns {
        return Err(format!(
            "found '{shown}': '{}' is neither an IP address nor a DNS name, {example}",
            super::shown(host)
        ));
    }
    Ok(())
}

/// `sha256:` and 64 hex digits (kubeadm's caCertHashes); lowercased.
fn check_hash(s: &str) -> Result<String, String> {
    let shown = super::shown(s);
    match s.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        }
        _ => Err(format!(
            "found '{shown}', expected sha256:<64 hex digits>, the SHA-256 of the cluster CA's public key \
             (`kubeadm token create --print-join-command` prints it)"
        )),
    }
}

fn timeout(
    src: &Source,
    key: &str,
    v: &Option<Spanned<u32>>,
    range: std::ops::RangeInclusive<u32>,
    p: &mut Vec<Problem>,
) -> Option<u32> {
    let v = v.as_ref()?;
    if range.contains(v.get_ref()) {
        Some(*v.get_ref())
    } else {
        p.push(src.problem(
            key,
            &v.span(),
            format!(
                "found {}, expected {}–{} seconds",
                v.get_ref(),
                range.start(),
                range.end()
            ),
        ));
        None
    }
}

/// A label as given in a file, checked for syntax and for what a kubelet
/// may set; `what` names where it comes from in the message.
fn check_label(
    src: &Source,
    key_path: &str,
    k: &Spanned<String>,
    v: &Spanned<String>,
    p: &mut Vec<Problem>,
) -> bool {
    let before = p.len();
    let key = k.get_ref();
    if let Err(e) = check_key(key).and_then(|()| kubelet_may_set(key)) {
        p.push(src.problem(key_path, &k.span(), e));
    } else if SET_BY_KUBELET.contains(&key.as_str()) {
        p.push(src.problem(
            key_path,
            &k.span(),
            format!("'{key}' is set by the kubelet itself from the machine; drop it"),
        ));
    } else if key == ZONE_LABEL {
        p.push(src.problem(
            key_path,
            &k.span(),
            format!("'{key}' comes from the host facts' `zone`; set zone = \"...\" instead"),
        ));
    }
    if let Err(e) = check_value(v.get_ref()) {
        p.push(src.problem(key_path, &v.span(), e));
    }
    p.len() == before
}

pub(super) struct HostIdentity<'a> {
    pub hostname: &'a str,
    pub zone: Option<&'a Spanned<String>>,
    pub rack: Option<&'a Spanned<String>>,
    pub node_ips: Vec<IpAddr>,
}

pub(super) fn validate(
    role_src: &Source,
    role: Option<&RoleJoinInput>,
    host_src: &Source,
    host: Option<&Spanned<HostJoinInput>>,
    id: &HostIdentity,
    pods: &Pods,
    p: &mut Vec<Problem>,
) -> Option<Join> {
    // Without host facts for a cluster there is nothing to join; a role's
    // [join] only says how its hosts join when they do.
    let host_span = host?.span();
    let h = host?.get_ref();
    let default_role = RoleJoinInput::default();
    let r = role.unwrap_or(&default_role);
    let before = p.len();

    if h.api_servers.is_empty() {
        p.push(host_src.problem(
            "join.api_servers",
            &host_span,
            "missing; expected api_servers = [\"10.10.255.1:6443\"] (the API server, or its load balancer)",
        ));
    }
    for (i, s) in h.api_servers.iter().enumerate() {
        if let Err(e) = check_endpoint(s.get_ref()) {
            p.push(host_src.problem(format!("join.api_servers[{i}]"), &s.span(), e));
        }
    }

    let mut hashes: Vec<String> = Vec::new();
    for (i, s) in h.ca_cert_hashes.iter().enumerate() {
        match check_hash(s.get_ref()) {
            Ok(hash) if hashes.contains(&hash) => p.push(host_src.problem(
                format!("join.ca_cert_hashes[{i}]"),
                &s.span(),
                "duplicate hash; list each CA key once",
            )),
            Ok(hash) => hashes.push(hash),
            Err(e) => p.push(host_src.problem(format!("join.ca_cert_hashes[{i}]"), &s.span(), e)),
        }
    }
    let skip = h.unsafe_skip_ca_verification.as_ref();
    let skip_ca = skip.is_some_and(|s| *s.get_ref());
    match skip {
        Some(s) if *s.get_ref() && !r.allow_unsafe_skip_ca_verification => p.push(host_src.problem(
            "join.unsafe_skip_ca_verification",
            &s.span(),
            "refused: without CA pinning any machine answering on the API server's address can impersonate the \
             control plane and take this node. Pin the CA with ca_cert_hashes = [\"sha256:...\"], or (labs only) \
             set join.allow_unsafe_skip_ca_verification = true in the role profile",
        )),
        Some(s) if *s.get_ref() && !h.ca_cert_hashes.is_empty() => p.push(host_src.problem(
            "join.unsafe_skip_ca_verification",
            &s.span(),
            "has no effect next to ca_cert_hashes (the pins are checked); drop one of the two",
        )),
        _ => {}
    }
    if h.ca_cert_hashes.is_empty() && !skip_ca {
        p.push(host_src.problem(
            "join.ca_cert_hashes",
            &host_span,
            "missing; expected ca_cert_hashes = [\"sha256:<64 hex digits>\"]: discovery without a CA pin trusts \
             whatever answers on the API server's address (`kubeadm token create --print-join-command` prints the hash)",
        ));
    }

    if let Some(t) = &h.token {
        p.push(host_src.problem(
            "join.token",
            &t.span(),
            "found an inline token (not shown), expected token_file = \"/etc/underlay/secrets/join-token\": a \
             bootstrap token never goes inline in the host facts (readable by anyone who can read them, copied \
             into backups and logs); put it in a file owned by root with mode 0600",
        ));
    }
    let token_file = match &h.token_file {
        None => {
            if h.token.is_none() {
                p.push(host_src.problem(
                    "join.token_file",
                    &host_span,
                    "missing; expected token_file = \"/etc/underlay/secrets/join-token\": a file owned by root, \
                     mode 0600, holding the bootstrap token (`kubeadm token create`)",
                ));
            }
            None
        }
        Some(f) if !f.get_ref().starts_with('/') => {
            p.push(host_src.problem(
                "join.token_file",
                &f.span(),
                format!(
                    "found '{}', expected an absolute path such as /etc/underlay/secrets/join-token",
                    super::shown(f.get_ref())
                ),
            ));
            None
        }
        Some(f) => Some(std::path::PathBuf::from(f.get_ref())),
    };

    // Labels: the role's, then the host's (a host may override a role's
    // value), then the ones derived from zone and rack.
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &r.labels {
        let path = format!("join.labels.\"{}\"", k.get_ref());
        if check_label(role_src, &path, k, v, p) {
            labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    for (k, v) in &h.labels {
        let path = format!("join.labels.\"{}\"", k.get_ref());
        if check_label(host_src, &path, k, v, p) {
            labels.insert(k.get_ref().clone(), v.get_ref().clone());
        }
    }
    if let Some(z) = id.zone {
        match check_value(z.get_ref()) {
            // The host facts' own check reports a zone that is no label value.
            Err(_) => {}
            Ok(()) => {
                labels.insert(ZONE_LABEL.to_string(), z.get_ref().clone());
            }
        }
    }
    if !pods.zones.is_empty() {
        let known: Vec<&str> = pods.zones.iter().map(|(z, _)| z.as_str()).collect();
        match id.zone {
            // (A zone that is no label value is reported by the host facts' check.)
            Some(z) if !known.contains(&z.get_ref().as_str()) && check_value(z.get_ref()).is_ok() => p.push(host_src.problem(
                "zone",
                &z.span(),
                format!(
                    "found '{}', expected one of the role's pods.zones ({}): Calico IPAM picks the pod pool by the \
                     node's {ZONE_LABEL} label, and no pool would match this node",
                    super::shown(z.get_ref()),
                    known.join(", ")
                ),
            )),
            None => p.push(host_src.problem(
                "zone",
                &host_span,
                format!(
                    "missing, expected one of the role's pods.zones ({}): a node without {ZONE_LABEL} gets no pod pool; set zone = \"{}\"",
                    known.join(", "),
                    known[0]
                ),
            )),
            _ => {}
        }
    }
    let rack_label = match &r.rack_label {
        None => Some(DEFAULT_RACK_LABEL.to_string()),
        Some(k) => match check_key(k.get_ref()).and_then(|()| kubelet_may_set(k.get_ref())) {
            Err(e) => {
                p.push(role_src.problem("join.rack_label", &k.span(), e));
                None
            }
            Ok(()) => Some(k.get_ref().clone()),
        },
    };
    if let (Some(rk), Some(rack)) = (&rack_label, id.rack) {
        match check_value(rack.get_ref()) {
            // The host facts' own check reports a rack that is no label value.
            Err(_) => {}
            Ok(()) => {
                if let Some((k, _)) = h.labels.iter().find(|(k, _)| k.get_ref() == rk) {
                    p.push(host_src.problem(
                        format!("join.labels.\"{rk}\""),
                        &k.span(),
                        format!(
                            "'{rk}' comes from the host facts' `rack`; set rack = \"...\" instead"
                        ),
                    ));
                }
                labels.insert(rk.clone(), rack.get_ref().clone());
            }
        }
    }

    let mut taints: Vec<Taint> = Vec::new();
    for (i, t) in r.taints.iter().enumerate() {
        let key = t.key.get_ref();
        if let Err(e) = check_key(key) {
            p.push(role_src.problem(format!("join.taints[{i}].key"), &t.key.span(), e));
        }
        if let Some(v) = &t.value {
            if let Err(e) = check_value(v.get_ref()) {
                p.push(role_src.problem(format!("join.taints[{i}].value"), &v.span(), e));
            }
        }
        let effect = *t.effect.get_ref();
        if taints.iter().any(|o| &o.key == key && o.effect == effect) {
            p.push(role_src.problem(
                format!("join.taints[{i}]"),
                &t.key.span(),
                format!(
                    "duplicate taint {key}:{}; each key and effect once",
                    effect.as_str()
                ),
            ));
        }
        taints.push(Taint {
            key: key.clone(),
            value: t.value.as_ref().map(|v| v.get_ref().clone()),
            effect,
        });
    }

    let cri_socket = r.cri_socket.as_ref().and_then(|s| {
        let v = s.get_ref();
        let path = v.strip_prefix("unix://");
        if path.is_some_and(|p| p.starts_with('/') && p.len() > 1 && !p.contains(char::is_whitespace)) {
            Some(v.clone())
        } else {
            let hint = if v.starts_with('/') {
                format!(": did you mean unix://{v}?")
            } else {
                String::new()
            };
            p.push(role_src.problem(
                "join.cri_socket",
                &s.span(),
                format!(
                    "found '{}', expected a unix:// URL such as unix:///run/containerd/containerd.sock{hint}",
                    super::shown(v)
                ),
            ));
            None
        }
    });

    let discovery_timeout_s = timeout(
        role_src,
        "join.discovery_timeout_s",
        &r.discovery_timeout_s,
        1..=3600,
        p,
    );
    let tls_bootstrap_timeout_s = timeout(
        role_src,
        "join.tls_bootstrap_timeout_s",
        &r.tls_bootstrap_timeout_s,
        1..=3600,
        p,
    );
    let kubeadm_timeout_s = timeout(
        role_src,
        "join.kubeadm_timeout_s",
        &r.kubeadm_timeout_s,
        10..=86_400,
        p,
    )
    .unwrap_or(DEFAULT_KUBEADM_TIMEOUT_S);

    if p.len() != before {
        return None;
    }
    Some(Join {
        node_name: id.hostname.to_string(),
        api_servers: h.api_servers.iter().map(|s| s.get_ref().clone()).collect(),
        ca_cert_hashes: hashes,
        unsafe_skip_ca_verification: skip_ca,
        token_file: token_file?,
        node_ips: id.node_ips.clone(),
        labels,
        taints,
        cri_socket,
        discovery_timeout_s,
        tls_bootstrap_timeout_s,
        kubeadm_timeout_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_a_kubelet_may_set_on_itself() {
        for ok in [
            "topology.kubernetes.io/zone",
            "topology.kubernetes.io/region",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/pool",
            "underlay.node.kubernetes.io/rack",
            "kubelet.kubernetes.io/anything",
            "a.b.kubelet.kubernetes.io/x",
            "failure-domain.beta.kubernetes.io/zone",
            "example.com/rack",
            "rack",
        ] {
            assert_eq!(kubelet_may_set(ok), Ok(()), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/worker",
            "kubernetes.io/role",
            "k8s.io/x",
            "foo.k8s.io/x",
            "example.kubernetes.io/x",
            "node-restriction.kubernetes.io/x",
            "a.node-restriction.kubernetes.io/x",
            // A suffix match needs the dot: this is not node.kubernetes.io.
            "evilnode.kubernetes.io/x",
        ] {
            assert!(kubelet_may_set(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_and_value_syntax() {
        assert!(check_key("example.com/rack").is_ok());
        assert!(check_key("Example.com/rack").is_err());
        assert!(check_key("a/b/c").is_err());
        assert!(check_key("-x").is_err());
        assert!(check_key(&"x".repeat(64)).is_err());
        assert!(check_value("").is_ok());
        assert!(check_value("r01").is_ok());
        assert!(check_value("r 01").is_err());
        assert!(check_value("a,b").is_err());
    }

    #[test]
    fn endpoints_and_hashes() {
        for ok in ["10.0.0.1:6443", "api.example:6443", "[fd00::1]:6443"] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "https://10.0.0.1:6443",
            "fd00::1:6443",
            "10.0.0.1:0",
            "bad_host:6443",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        let h = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(check_hash(&h), Ok(format!("sha256:{}", "ab".repeat(32))));
        assert!(check_hash("sha1:abcd").is_err());
        assert!(check_hash(&format!("sha256:{}", "a".repeat(63))).is_err());
    }
}
