//! The kind of every error underlay reports. It decides what happens next:
//! the exit code, whether watch mode retries with back-off or keeps the last
//! good state, and whether Ansible fails the host or retries it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The profile, the host facts or the flags are wrong: fix the input;
    /// retrying the same input fails the same way. Nothing was changed.
    Input,
    /// Retry may help: a timeout, a daemon not up yet, a lock held by
    /// another run, a source server down.
    Transient,
    /// The host refused a change or a read (netlink, a file, a daemon).
    System,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::Transient => "transient",
            ErrorKind::System => "system",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
