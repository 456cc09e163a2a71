//! The cluster join, the last step of the pipeline: after every readiness
//! gate passed, `kubeadm join --config FILE` with a JoinConfiguration whose
//! kubelet `--node-ip` is the service IP, once. A node that has
//! `/etc/kubernetes/kubelet.conf`, or that the state file records as joined
//! by us, is never joined again. The bootstrap token is read from its file
//! (mode 0600, ours) and written only into the config file kubeadm reads
//! (mode 0600, on /run, removed after the run): never into arguments, logs,
//! plans or JSON, and scrubbed from kubeadm's output.
//!
//! `render` is pure; `run` drives a [`crate::system::join::JoinHost`].

pub mod render;
pub mod run;
pub mod token;

use serde::{Deserialize, Serialize};

pub use run::{
    already_joined, join, not_attempted, prepare, AlreadyJoined, Attempt, JoinError, JoinReport,
    JoinStatus, Prepared,
};
pub use token::BootstrapToken;

/// Our marker in the state file: this node was joined by underlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRecord {
    pub node_name: String,
    /// The endpoint discovery went through.
    pub api_server: String,
    /// The kubelet `--node-ip` it registered with.
    pub node_ip: String,
    /// Seconds since the Unix epoch.
    pub joined_at: u64,
}
