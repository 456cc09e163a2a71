//! Secrets (BGP password files) below `--root`, read the way ssh reads a
//! private key. Every component below the root is opened relative to its
//! parent with `O_NOFOLLOW`, so no symlink (on the way or at the end) leads
//! the read outside the root or onto another file; the file must be a
//! regular file owned by root with no group or other permission bits.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};

use super::super::{files, Secret, SystemError};

/// Largest secret read (a TCP-MD5 key is at most 80 bytes).
pub const MAX_SECRET_BYTES: u64 = 4096;

/// `None` when the file (or a directory on its way) does not exist.
pub fn read(root: &Path, logical: &Path) -> Result<Option<Secret>, SystemError> {
    let real = files::under_root(root, logical);
    let fix = format!("fix: chmod 600 {0}; chown root:root {0}", real.display());
    let refuse = |message: String| SystemError::Secret {
        path: real.clone(),
        message,
    };
    if !logical.is_absolute() {
        return Err(refuse("expected an absolute path (below --root)".into()));
    }
    let mut names: Vec<&OsStr> = Vec::new();
    for c in logical.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => names.push(n),
            _ => {
                return Err(refuse(
                    "expected an absolute path without '.' or '..' components".into(),
                ))
            }
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Err(refuse("expected a file path below --root".into()));
    };
    let io = |source: std::io::Error| SystemError::Io {
        what: "reading secret",
        path: real.clone(),
        source,
    };
    let mut dir: OwnedFd = File::open(root).map_err(io)?.into();
    let mut walked = PathBuf::from(root);
    for d in dirs {
        walked.push(d);
        match openat(
            &dir,
            *d,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => dir = fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(refuse(if is_symlink(&dir, d) {
                    format!(
                        "{} is a symbolic link; secrets are read without following links: \
                         expected a real directory there (or point password_file at the real path)",
                        walked.display()
                    )
                } else {
                    format!("{} is not a directory ({e})", walked.display())
                }))
            }
            Err(e) => return Err(io(e.into())),
        }
    }
    let fd = match openat(
        &dir,
        *last,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(refuse(
                "is a symbolic link; secrets are read without following links: \
                 expected the file itself (copy it there, or point password_file at it)"
                    .into(),
            ))
        }
        Err(e) => return Err(io(e.into())),
    };
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(refuse(format!(
            "is {what}; expected a regular file holding the password"
        )));
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 || mode & 0o077 != 0 {
        let mut why = Vec::new();
        if mode & 0o077 != 0 {
            why.push(format!("has mode {mode:04o}, open to group or others"));
        }
        if meta.uid() != 0 {
            why.push(format!("is owned by uid {}, not root", meta.uid()));
        }
        return Err(refuse(format!(
            "{}; expected a file only root can read or change (mode 0600, owner root), like ssh expects of a private key; {fix}",
            why.join(" and ")
        )));
    }
    let mut bytes = Vec::new();
    file.by_ref()
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(refuse(format!(
            "is larger than {MAX_SECRET_BYTES} bytes; expected one line holding the password"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse("is not UTF-8 text; expected one line holding the password".into()))?;
    Ok(Some(Secret::new(text)))
}

fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}
