//! The run lock: an exclusive flock on `<state file>.lock`, held for the
//! whole observe → apply → verify cycle, so two runs on one root (a timer, an
//! Ansible run, watch mode) never interleave their changes or their state
//! writes. The holder's PID is written into the file for the error message.
//! flock dies with its process, so a killed run never leaves it held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::system::SystemError;

pub fn lock_path(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

pub fn acquire(state_file: &Path, timeout: Duration) -> Result<Flock<File>, SystemError> {
    let path = lock_path(state_file);
    let io = |what: &'static str| {
        let path = path.clone();
        move |source| SystemError::Io { what, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
    }
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
    };
    let start = Instant::now();
    let mut file = open().map_err(io("opening the lock"))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut held) => {
                let _ = held.set_len(0);
                let _ = held.rewind();
                let _ = writeln!(held, "pid {}", std::process::id());
                return Ok(held);
            }
            Err((f, Errno::EWOULDBLOCK)) => file = f,
            Err((_, e)) => return Err(io("locking")(std::io::Error::from(e))),
        }
        if start.elapsed() >= timeout {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(SystemError::Locked {
                path,
                holder: if holder.is_empty() {
                    "holder unknown".into()
                } else {
                    holder.to_string()
                },
                waited_s: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
