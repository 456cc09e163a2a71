//! What the cluster join needs from the host, behind one narrow trait so the
//! orchestration (`crate::join::run`) is plain code and tests drive it with
//! [`crate::system::fake_join::FakeJoinHost`]: secret files checked for mode
//! and owner, the JoinConfiguration file (mode 0600), `kubeadm join`, and
//! the kubelet unit. Paths are logical (below `--root`), except the kubeadm
//! executable, which is the machine's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::SystemError;

/// The output of one `kubeadm join --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// `None`: killed by a signal (or by us at the timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// stdout and stderr as they interleaved (the last 64 KiB).
    pub output: String,
    pub duration: Duration,
}

/// What was done to the kubelet unit after a join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitReport {
    pub unit: String,
    /// false: underlay does not drive units here (`--netns`, a scratch
    /// `--root`, or no systemd); `note` says which.
    pub managed: bool,
    pub enabled_now: bool,
    pub started_now: bool,
    pub note: String,
}

/// A secret file that cannot be used. Never carries the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: does not exist (below --root); create it (owner root, mode 0600) holding the secret", path.display())]
    Missing { path: PathBuf },
    #[error("{}: mode {mode:04o} lets other users read or change it; run `chmod 0600 {}`", path.display(), path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("{}: owned by uid {uid}, expected uid {expected} (the user underlay runs as, root on a real host); run `chown {expected} {}`", path.display(), path.display())]
    Owner {
        path: PathBuf,
        uid: u32,
        expected: u32,
    },
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: larger than {max} bytes; expected one short secret", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error(transparent)]
    Io(#[from] SystemError),
}

/// The largest secret file read (a token is 23 bytes).
pub const SECRET_MAX_BYTES: u64 = 4096;

/// The rule for a secret file: a regular file, no group or other
/// permission bits, owned by the user we run as.
pub fn check_secret(
    path: &Path,
    is_file: bool,
    mode: u32,
    uid: u32,
    euid: u32,
    len: u64,
) -> Result<(), SecretError> {
    let path = path.to_path_buf();
    if !is_file {
        return Err(SecretError::NotAFile { path });
    }
    if mode & 0o077 != 0 {
        return Err(SecretError::Mode {
            path,
            mode: mode & 0o7777,
        });
    }
    if uid != euid {
        return Err(SecretError::Owner {
            path,
            uid,
            expected: euid,
        });
    }
    if len > SECRET_MAX_BYTES {
        return Err(SecretError::TooLarge {
            path,
            max: SECRET_MAX_BYTES,
        });
    }
    Ok(())
}

/// Held while a join runs: a second underlay run on the same node (the boot
/// unit and Ansible, say) cannot join at the same time. Released on drop.
pub struct JoinLock(#[allow(dead_code)] Option<Box<dyn std::any::Any>>);

impl JoinLock {
    pub fn new(inner: Option<Box<dyn std::any::Any>>) -> JoinLock {
        JoinLock(inner)
    }
}

pub trait JoinHost {
    /// Takes the node's join lock, or `Ok(None)` when another run holds it.
    fn lock_join(&mut self) -> Result<Option<JoinLock>, SystemError>;
    /// Whether a file exists below --root.
    fn exists(&mut self, path: &Path) -> Result<bool, SystemError>;
    /// A secret file's text, after [`check_secret`].
    fn read_secret(&mut self, path: &Path) -> Result<String, SecretError>;
    /// `name` as given when it has a '/', else found in PATH; `None` when
    /// there is no such executable.
    fn find_executable(&mut self, name: &Path) -> Option<PathBuf>;
    /// Writes a file below --root with mode 0600 (atomically).
    fn write_private(&mut self, path: &Path, content: &[u8]) -> Result<(), SystemError>;
    fn remove_file(&mut self, path: &Path) -> Result<(), SystemError>;
    /// Runs `<kubeadm> join --config <config below --root>`, stdin closed,
    /// killed after `timeout`. The arguments are fixed: nothing secret can
    /// reach the process table.
    fn kubeadm_join(
        &mut self,
        kubeadm: &Path,
        config: &Path,
        timeout: Duration,
    ) -> Result<CommandOutput, SystemError>;
    /// Enables the unit and starts it when it is not active.
    fn ensure_unit(&mut self, unit: &str) -> Result<UnitReport, SystemError>;
}
