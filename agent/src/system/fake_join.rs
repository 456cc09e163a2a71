//! An in-memory [`JoinHost`] for tests without root: files with a mode and
//! owner, and a scripted kubeadm that records every invocation (with the
//! config file it was given) and, on success, writes kubelet.conf the way
//! kubeadm would.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::join::{check_secret, CommandOutput, JoinHost, JoinLock, SecretError, UnitReport};
use super::SystemError;
use crate::desired::join::{BOOTSTRAP_KUBELET_CONF, KUBELET_CONF};

#[derive(Debug, Clone)]
pub struct FakeFile {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
}

/// One recorded kubeadm run.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub kubeadm: PathBuf,
    pub config_path: PathBuf,
    /// The config file's content and mode at the moment kubeadm ran.
    pub config: String,
    pub config_mode: u32,
}

/// What the scripted kubeadm does on one run.
#[derive(Debug, Clone)]
pub struct Script {
    pub exit_code: i32,
    pub output: String,
    /// On failure, leave bootstrap-kubelet.conf behind (got past discovery).
    pub past_discovery: bool,
}

impl Script {
    pub fn ok() -> Script {
        Script {
            exit_code: 0,
            output: "This node has joined the cluster\n".into(),
            past_discovery: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FakeJoinHost {
    pub files: BTreeMap<PathBuf, FakeFile>,
    /// Executables that exist (absolute paths).
    pub executables: Vec<PathBuf>,
    /// The next runs' behaviour; when empty, kubeadm succeeds.
    pub scripts: VecDeque<Script>,
    pub invocations: Vec<Invocation>,
    pub euid: u32,
    pub units: Vec<UnitReport>,
    pub fail_unit: bool,
    /// Another run holds the join lock.
    pub locked_elsewhere: bool,
}

impl FakeJoinHost {
    pub fn new() -> FakeJoinHost {
        FakeJoinHost {
            executables: vec!["/usr/bin/kubeadm".into()],
            ..FakeJoinHost::default()
        }
    }

    pub fn put(&mut self, path: &str, content: &str, mode: u32) {
        self.files.insert(
            path.into(),
            FakeFile {
                content: content.as_bytes().to_vec(),
                mode,
                uid: self.euid,
            },
        );
    }
}

impl JoinHost for FakeJoinHost {
    fn lock_join(&mut self) -> Result<Option<JoinLock>, SystemError> {
        Ok((!self.locked_elsewhere).then(|| JoinLock::new(None)))
    }

    fn exists(&mut self, path: &Path) -> Result<bool, SystemError> {
        Ok(self.files.contains_key(path))
    }

    fn read_secret(&mut self, path: &Path) -> Result<String, SecretError> {
        let f = self.files.get(path).ok_or_else(|| SecretError::Missing {
            path: path.to_path_buf(),
        })?;
        check_secret(path, true, f.mode, f.uid, self.euid, f.content.len() as u64)?;
        Ok(String::from_utf8_lossy(&f.content).into_owned())
    }

    fn find_executable(&mut self, name: &Path) -> Option<PathBuf> {
        self.executables
            .iter()
            .find(|e| e.as_path() == name || e.file_name() == Some(name.as_os_str()))
            .cloned()
    }

    fn write_private(&mut self, path: &Path, content: &[u8]) -> Result<(), SystemError> {
        self.files.insert(
            path.to_path_buf(),
            FakeFile {
                content: content.to_vec(),
                mode: 0o600,
                uid: self.euid,
            },
        );
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> Result<(), SystemError> {
        self.files.remove(path);
        Ok(())
    }

    fn kubeadm_join(
        &mut self,
        kubeadm: &Path,
        config: &Path,
        _timeout: Duration,
    ) -> Result<CommandOutput, SystemError> {
        let f = self.files.get(config).ok_or_else(|| {
            SystemError::Other(format!("kubeadm: no config at {}", config.display()))
        })?;
        self.invocations.push(Invocation {
            kubeadm: kubeadm.to_path_buf(),
            config_path: config.to_path_buf(),
            config: String::from_utf8_lossy(&f.content).into_owned(),
            config_mode: f.mode,
        });
        let s = self.scripts.pop_front().unwrap_or_else(Script::ok);
        if s.past_discovery {
            self.put(BOOTSTRAP_KUBELET_CONF, "bootstrap\n", 0o600);
        }
        if s.exit_code == 0 {
            self.put(KUBELET_CONF, "kubeconfig\n", 0o600);
        }
        Ok(CommandOutput {
            exit_code: Some(s.exit_code),
            timed_out: false,
            output: s.output,
            duration: Duration::from_millis(5),
        })
    }

    fn ensure_unit(&mut self, unit: &str) -> Result<UnitReport, SystemError> {
        if self.fail_unit {
            return Err(SystemError::Other(format!("starting {unit}: job failed")));
        }
        let r = UnitReport {
            unit: unit.to_string(),
            managed: true,
            enabled_now: true,
            started_now: false,
            note: "enabled; already active".into(),
        };
        self.units.push(r.clone());
        Ok(r)
    }
}
