//! The cluster join as validated: what `kubeadm join` gets for this host.
//! Worker joins only. The bootstrap token is not here: it is a secret read
//! from `token_file` at join time (through the system layer), never part of
//! the model, a plan or a report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// The zone label Calico's IPPool node selectors use (`render calico`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The rack label, unless the role profile names another: a namespace ending
/// in `node.kubernetes.io` is one a kubelet may set on itself.
pub const DEFAULT_RACK_LABEL: &str = "underlay.node.kubernetes.io/rack";
/// A node that has this file has joined (kubeadm writes it; the kubelet
/// rewrites it after TLS bootstrap).
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// Written by kubeadm once discovery succeeded (its `kubelet-start` phase):
/// a failed join that left it behind got past the API server.
pub const BOOTSTRAP_KUBELET_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// The JoinConfiguration with the token, mode 0600, on tmpfs, removed after
/// every kubeadm run.
pub const JOIN_CONFIG: &str = "/run/underlay/kubeadm-join.yaml";
pub const KUBELET_UNIT: &str = "kubelet.service";
/// Hang bound of one `kubeadm join`: its own discovery, TLS bootstrap and
/// kubelet health timeouts are 5 + 5 + 4 minutes by default.
pub const DEFAULT_KUBEADM_TIMEOUT_S: u32 = 900;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// `nodeRegistration.name`: the host facts' hostname.
    pub node_name: String,
    /// `host:port` of the API server, tried in order when discovery fails.
    pub api_servers: Vec<String>,
    /// `sha256:<64 hex>` pins of the cluster CA's public key, lowercase.
    pub ca_cert_hashes: Vec<String>,
    /// Only when the role profile allows it (labs).
    pub unsafe_skip_ca_verification: bool,
    /// Logical path (below --root) of the file holding the bootstrap token.
    pub token_file: PathBuf,
    /// kubelet `--node-ip`: the service IP(s), IPv4 first.
    pub node_ips: Vec<IpAddr>,
    /// kubelet `--node-labels`, every one a label a kubelet may set on itself.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `unix:///...`; `None`: kubeadm detects the runtime.
    pub cri_socket: Option<String>,
    pub discovery_timeout_s: Option<u32>,
    pub tls_bootstrap_timeout_s: Option<u32>,
    pub kubeadm_timeout_s: u32,
}

impl Join {
    /// `--node-ip` as kubelet takes it: comma-separated, IPv4 first.
    pub fn node_ip_arg(&self) -> String {
        self.node_ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--node-labels` as kubelet takes it: `k=v,k=v`, sorted by key.
    pub fn node_labels_arg(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A taint the node registers with (corev1.Taint without timeAdded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}
