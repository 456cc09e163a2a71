//! [`JoinHost`] on the real machine: secret files checked with fstat on the
//! opened file, the join config written 0600 below --root, kubeadm spawned
//! with fixed arguments and its merged stdout/stderr captured, and the
//! kubelet unit over D-Bus, but only on the machine itself: never inside
//! `--netns`, never under a scratch `--root`.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::units;
use super::LinuxSystem;
use crate::system::files::{self, Durability};
use crate::system::join::{
    check_secret, CommandOutput, JoinHost, JoinLock, SecretError, UnitReport, SECRET_MAX_BYTES,
};
use crate::system::SystemError;

/// Output kept from kubeadm (its tail is what gets reported).
const OUTPUT_MAX: usize = 64 * 1024;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SystemError {
    let path = path.to_path_buf();
    move |source| SystemError::Io { what, path, source }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl LinuxSystem {
    /// Units are the machine's: drive them only when this run is about the
    /// machine itself.
    fn drives_units(&self) -> Option<&'static str> {
        match &self.units {
            crate::observed::UnitControl::Caller => {
                Some("not managed here (--netns, or no systemd): kubeadm starts the kubelet itself")
            }
            crate::observed::UnitControl::ScratchRoot(_) => {
                Some("not managed under a scratch --root: the machine's units are never driven")
            }
            crate::observed::UnitControl::Systemd => None,
        }
    }
}

/// Next to the join config, on /run: a lock does not outlive a boot.
const JOIN_LOCK: &str = "/run/underlay/join.lock";

impl JoinHost for LinuxSystem {
    fn lock_join(&mut self) -> Result<Option<JoinLock>, SystemError> {
        use nix::fcntl::{Flock, FlockArg};
        let p = files::under_root(&self.root, Path::new(JOIN_LOCK));
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io("opening", &p))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(JoinLock::new(Some(Box::new(lock))))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(SystemError::Other(format!("locking {}: {e}", p.display()))),
        }
    }

    fn exists(&mut self, path: &Path) -> Result<bool, SystemError> {
        let p = files::under_root(&self.root, path);
        p.try_exists().map_err(io("checking", &p))
    }

    fn read_secret(&mut self, path: &Path) -> Result<String, SecretError> {
        let p = files::under_root(&self.root, path);
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::Missing {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io("opening", &p)(e).into()),
        };
        // The opened file's metadata: what we check is what we read.
        let m = f.metadata().map_err(io("reading the metadata of", &p))?;
        check_secret(
            path,
            m.is_file(),
            m.mode(),
            m.uid(),
            nix::unistd::geteuid().as_raw(),
            m.len(),
        )?;
        let mut text = String::new();
        f.take(SECRET_MAX_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io("reading", &p))?;
        Ok(text)
    }

    fn find_executable(&mut self, name: &Path) -> Option<PathBuf> {
        if name.components().count() > 1 {
            return is_executable(name).then(|| name.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }

    fn write_private(&mut self, path: &Path, content: &[u8]) -> Result<(), SystemError> {
        let p = files::under_root(&self.root, path);
        if let Some(dir) = p.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("setting the mode of", dir))?;
            }
        }
        // On /run (tmpfs) in production: no fsync needed, it never hits a disk.
        files::write_atomic(
            &p,
            content,
            &files::WriteSpec::new(0o600, Durability::Derived),
        )
    }

    fn remove_file(&mut self, path: &Path) -> Result<(), SystemError> {
        files::remove(&files::under_root(&self.root, path))
    }

    fn kubeadm_join(
        &mut self,
        kubeadm: &Path,
        config: &Path,
        timeout: Duration,
    ) -> Result<CommandOutput, SystemError> {
        let config = files::under_root(&self.root, config);
        let fail = |e: std::io::Error| {
            SystemError::Other(format!("running {} join: {e}", kubeadm.display()))
        };
        // One pipe for stdout and stderr keeps their interleaving.
        let (reader, writer) = nix::unistd::pipe()
            .map_err(|e| SystemError::Other(format!("creating a pipe for kubeadm: {e}")))?;
        let writer2 = writer.try_clone().map_err(fail)?;
        let start = Instant::now();
        let mut child = {
            let mut cmd = Command::new(kubeadm);
            cmd.arg("join")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::from(writer))
                .stderr(Stdio::from(writer2));
            // Dropping `cmd` closes our copies of the write end.
            cmd.spawn().map_err(fail)?
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() > 2 * OUTPUT_MAX {
                            buf.drain(..buf.len() - OUTPUT_MAX);
                        }
                    }
                }
            }
            let _ = tx.send(buf);
        });
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(fail)? {
                break s;
            }
            if start.elapsed() >= timeout {
                timed_out = true;
                let _ = child.kill();
                break child.wait().map_err(fail)?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let duration = start.elapsed();
        // A daemon kubeadm left behind may hold the pipe open: wait briefly.
        let mut buf = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        if buf.len() > OUTPUT_MAX {
            buf.drain(..buf.len() - OUTPUT_MAX);
        }
        Ok(CommandOutput {
            exit_code: status.code(),
            timed_out,
            output: String::from_utf8_lossy(&buf).into_owned(),
            duration,
        })
    }

    fn ensure_unit(&mut self, unit: &str) -> Result<UnitReport, SystemError> {
        if let Some(note) = self.drives_units() {
            return Ok(UnitReport {
                unit: unit.to_string(),
                managed: false,
                enabled_now: false,
                started_now: false,
                note: note.to_string(),
            });
        }
        let e = self.rt.block_on(units::enable_and_start(unit))?;
        let enabled = if e.enabled_now {
            "enabled now"
        } else {
            "enabled already"
        };
        let note = match (&e.queued_behind, e.started_now) {
            (Some(own), _) => format!(
                "{enabled}; start queued: it is ordered after {own}, systemd starts it once that unit has started"
            ),
            (None, false) => format!("{enabled}; {} already", e.active_state),
            (None, true) => format!("{enabled}; started now"),
        };
        Ok(UnitReport {
            unit: unit.to_string(),
            managed: true,
            enabled_now: e.enabled_now,
            started_now: e.started_now,
            note,
        })
    }
}
