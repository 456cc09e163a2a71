//! The join's orchestration, plain code over [`JoinHost`]: is the node
//! joined already, read the token and find kubeadm (input errors before
//! anything changes), then, only when every gate passed, run kubeadm once
//! per API server until one succeeds (falling back only while kubeadm got no
//! further than discovery), and report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::render;
use super::token::{BootstrapToken, TokenFormatError};
use super::JoinRecord;
use crate::desired::join::{Join, BOOTSTRAP_KUBELET_CONF, JOIN_CONFIG, KUBELET_CONF, KUBELET_UNIT};
use crate::error::ErrorKind;
use crate::gates::Outcome;
use crate::system::join::{JoinHost, SecretError, UnitReport};
use crate::system::SystemError;

/// Lines of kubeadm's output kept in a report.
pub const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the host facts have no [join] section; add one with api_servers, ca_cert_hashes and token_file (see the README, \"Joining the cluster\")")]
    NoJoin,
    #[error("join.token_file {0}")]
    Secret(#[from] SecretError),
    #[error("join.token_file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: TokenFormatError,
    },
    #[error("kubeadm: no executable '{}'{}; install kubeadm or pass --kubeadm PATH", name.display(), if name.components().count() > 1 { "" } else { " in PATH" })]
    NoKubeadm { name: PathBuf },
    #[error(transparent)]
    System(#[from] SystemError),
}

impl JoinError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            JoinError::Secret(SecretError::Io(e)) | JoinError::System(e) => e.kind(),
            JoinError::NoJoin
            | JoinError::Secret(_)
            | JoinError::Token { .. }
            | JoinError::NoKubeadm { .. } => ErrorKind::Input,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinStatus {
    /// kubeadm joined the node in this run.
    Joined,
    /// kubelet.conf or our marker: kubeadm was not run.
    AlreadyJoined,
    /// A gate failed or the host did not converge: kubeadm was not run.
    NotAttempted,
    /// kubeadm failed (or could not be run); the next run retries.
    Failed,
}

/// One kubeadm run.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub api_server: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: f64,
    /// The last lines of its output, the token scrubbed.
    pub output_tail: Vec<String>,
}

/// The `join` section of the JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    pub status: JoinStatus,
    /// One line for a person.
    pub message: String,
    pub node_name: String,
    pub node_ip: String,
    pub node_labels: String,
    pub attempts: Vec<Attempt>,
    pub kubelet: Option<UnitReport>,
    /// This run's record, or the one found in the state file.
    pub record: Option<JoinRecord>,
    pub warnings: Vec<String>,
    /// Set when the run failed: the kind the document's failure gets.
    #[serde(skip)]
    pub failure_kind: Option<ErrorKind>,
    /// A record this run made, for the state file.
    #[serde(skip)]
    pub new_record: Option<JoinRecord>,
}

impl JoinReport {
    fn new(j: &Join, status: JoinStatus, message: String) -> JoinReport {
        JoinReport {
            status,
            message,
            node_name: j.node_name.clone(),
            node_ip: j.node_ip_arg(),
            node_labels: j.node_labels_arg(),
            attempts: Vec::new(),
            kubelet: None,
            record: None,
            warnings: Vec::new(),
            failure_kind: None,
            new_record: None,
        }
    }

    pub fn changed(&self) -> bool {
        self.status == JoinStatus::Joined
    }
}

/// Why a node counts as joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyJoined {
    pub kubelet_conf: bool,
    pub marker: Option<JoinRecord>,
}

/// `Some` when the node has joined: kubelet.conf exists, or `marker` (the
/// state file's) says underlay joined it.
pub fn already_joined(
    host: &mut dyn JoinHost,
    marker: Option<&JoinRecord>,
) -> Result<Option<AlreadyJoined>, JoinError> {
    let kubelet_conf = host.exists(Path::new(KUBELET_CONF))?;
    Ok((kubelet_conf || marker.is_some()).then(|| AlreadyJoined {
        kubelet_conf,
        marker: marker.cloned(),
    }))
}

pub fn report_already(j: &Join, a: &AlreadyJoined) -> JoinReport {
    let message = match (&a.marker, a.kubelet_conf) {
        (Some(m), true) => format!(
            "already joined (underlay joined it through {} at {}; {KUBELET_CONF} present): kubeadm not run",
            m.api_server, m.joined_at
        ),
        (None, _) => format!("already joined ({KUBELET_CONF} present): kubeadm not run"),
        (Some(m), false) => format!(
            "already joined according to the state file (through {} at {}), but {KUBELET_CONF} is missing: \
             underlay never joins a node twice on its own; after a deliberate `kubeadm reset`, run `underlay join --rejoin`",
            m.api_server, m.joined_at
        ),
    };
    let mut r = JoinReport::new(j, JoinStatus::AlreadyJoined, message);
    r.record = a.marker.clone();
    r
}

/// kubeadm was not run, and why.
pub fn not_attempted(j: &Join, why: impl Into<String>) -> JoinReport {
    JoinReport::new(j, JoinStatus::NotAttempted, why.into())
}

/// What a join needs that could be wrong before anything changes.
#[derive(Debug)]
pub struct Prepared {
    token: BootstrapToken,
    kubeadm: PathBuf,
}

impl Prepared {
    pub fn token(&self) -> &BootstrapToken {
        &self.token
    }
    pub fn kubeadm(&self) -> &Path {
        &self.kubeadm
    }
}

/// Reads the token (checked for mode, owner and shape) and finds kubeadm.
pub fn prepare(host: &mut dyn JoinHost, j: &Join, kubeadm: &Path) -> Result<Prepared, JoinError> {
    let token = read_token(host, j)?;
    let kubeadm = host
        .find_executable(kubeadm)
        .ok_or_else(|| JoinError::NoKubeadm {
            name: kubeadm.to_path_buf(),
        })?;
    Ok(Prepared { token, kubeadm })
}

pub fn read_token(host: &mut dyn JoinHost, j: &Join) -> Result<BootstrapToken, JoinError> {
    let text = host.read_secret(&j.token_file)?;
    BootstrapToken::parse(&text).map_err(|source| JoinError::Token {
        path: j.token_file.clone(),
        source,
    })
}

fn tail(output: &str, token: &BootstrapToken) -> Vec<String> {
    let clean = token.redact(output);
    let lines: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| {
            let l = l.trim_end();
            if l.chars().count() > TAIL_LINE_CHARS {
                format!("{}…", l.chars().take(TAIL_LINE_CHARS).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// kubeadm's own error line (`error execution phase ...`, `[ERROR ...]`),
/// else the last line.
fn error_line(tail: &[String]) -> Option<String> {
    tail.iter()
        .rev()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("error") || l.contains("[error")
        })
        .or(tail.last())
        .cloned()
}

/// Joins when every gate passed; never runs kubeadm otherwise. The caller
/// checked [`already_joined`] and saves `new_record` in the state file.
pub fn join(
    host: &mut dyn JoinHost,
    j: &Join,
    prepared: &Prepared,
    gates: &Outcome,
    now_unix: u64,
) -> JoinReport {
    if !gates.passed {
        let failed: Vec<&str> = gates
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.name)
            .collect();
        return not_attempted(
            j,
            format!(
                "not joined: readiness gate{} {} failed; kubeadm was not run",
                if failed.len() == 1 { "" } else { "s" },
                failed.join(", ")
            ),
        );
    }
    let mut r = JoinReport::new(j, JoinStatus::Failed, String::new());
    // Never twice, also against a concurrent run: under the lock, look again.
    let _lock = match host.lock_join() {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            r.message = "not joined: another underlay run is joining this node right now; kubeadm was not run".into();
            r.failure_kind = Some(ErrorKind::Transient);
            return r;
        }
        Err(e) => {
            r.message = format!("not joined: taking the join lock: {e}");
            r.failure_kind = Some(e.kind());
            return r;
        }
    };
    match already_joined(host, None) {
        Ok(Some(a)) => return report_already(j, &a),
        Ok(None) => {}
        Err(e) => {
            r.message = format!("not joined: {e}");
            r.failure_kind = Some(e.kind());
            return r;
        }
    }
    let config = Path::new(JOIN_CONFIG);
    let timeout = Duration::from_secs(u64::from(j.kubeadm_timeout_s));
    for (i, server) in j.api_servers.iter().enumerate() {
        let yaml = render::render(j, server, Some(&prepared.token));
        if let Err(e) = host.write_private(config, yaml.as_bytes()) {
            r.message = format!("not joined: writing the join config: {e}");
            r.failure_kind = Some(e.kind());
            return r;
        }
        let run = host.kubeadm_join(&prepared.kubeadm, config, timeout);
        // The token leaves the disk whatever kubeadm did.
        if let Err(e) = host.remove_file(config) {
            r.warnings.push(format!(
                "could not remove {JOIN_CONFIG} (it holds the token, mode 0600): {e}"
            ));
        }
        let out = match run {
            Ok(out) => out,
            Err(e) => {
                r.message = format!("not joined: running {}: {e}", prepared.kubeadm.display());
                r.failure_kind = Some(e.kind());
                return r;
            }
        };
        r.attempts.push(Attempt {
            api_server: server.clone(),
            exit_code: out.exit_code,
            timed_out: out.timed_out,
            duration_ms: (out.duration.as_secs_f64() * 1e6).round() / 1e3,
            output_tail: tail(&out.output, &prepared.token),
        });
        if out.exit_code == Some(0) {
            return joined(host, j, r, server, out.duration, now_unix);
        }
        let last = r
            .attempts
            .last()
            .and_then(|a| error_line(&a.output_tail))
            .unwrap_or_else(|| "(no output)".into());
        let tried: Vec<&str> = r.attempts.iter().map(|a| a.api_server.as_str()).collect();
        let how = match (out.timed_out, out.exit_code) {
            (true, _) => format!(
                "did not finish within {} s and was killed",
                j.kubeadm_timeout_s
            ),
            (false, Some(c)) => format!("exited {c}"),
            (false, None) => "was killed by a signal".to_string(),
        };
        r.message = format!(
            "not joined: kubeadm join through {} {how}: {last}; the next run retries",
            tried.join(", then ")
        );
        r.failure_kind = Some(ErrorKind::Transient);
        let more = i + 1 < j.api_servers.len();
        let past_discovery = host
            .exists(Path::new(BOOTSTRAP_KUBELET_CONF))
            .unwrap_or(true)
            || host.exists(Path::new(KUBELET_CONF)).unwrap_or(true);
        if !more || past_discovery || out.timed_out {
            break;
        }
    }
    r
}

fn joined(
    host: &mut dyn JoinHost,
    j: &Join,
    mut r: JoinReport,
    server: &str,
    took: Duration,
    now_unix: u64,
) -> JoinReport {
    r.status = JoinStatus::Joined;
    r.message = format!(
        "joined the cluster through {server} in {:.1} s as {} (node-ip {})",
        took.as_secs_f64(),
        j.node_name,
        j.node_ip_arg()
    );
    let record = JoinRecord {
        node_name: j.node_name.clone(),
        api_server: server.to_string(),
        node_ip: j.node_ip_arg(),
        joined_at: now_unix,
    };
    r.record = Some(record.clone());
    r.new_record = Some(record);
    if !host.exists(Path::new(KUBELET_CONF)).unwrap_or(false) {
        r.warnings.push(format!(
            "kubeadm exited 0 but {KUBELET_CONF} is not there yet (TLS bootstrap still running?)"
        ));
    }
    match host.ensure_unit(KUBELET_UNIT) {
        Ok(u) => r.kubelet = Some(u),
        Err(e) => {
            r.message = format!("{}; but {KUBELET_UNIT}: {e}", r.message);
            r.failure_kind = Some(e.kind());
        }
    }
    r
}
