//! Files under the `--root` prefix: read, and replace atomically (temp file
//! in the same directory, fsync, rename, fsync the directory) so a crash
//! never leaves a half-written config.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SystemError;

/// Maps a logical absolute path (/etc/...) below the root prefix.
pub fn under_root(root: &Path, logical: &Path) -> PathBuf {
    root.join(logical.strip_prefix("/").unwrap_or(logical))
}

pub fn read(path: &Path) -> Result<Option<String>, SystemError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(source) => Err(SystemError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// How hard to try to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: the state file and daemon configs,
    /// which must never be lost or empty after a power cut.
    Durable,
    /// Atomic rename only: derived files that every run regenerates (a crash
    /// at the wrong moment is repaired by the next run). Saves two fsyncs
    /// per file, which dominate a cold converge on a real disk.
    Derived,
}

pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    durability: Durability,
) -> Result<(), SystemError> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SystemError::Io {
            what,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.underlay-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(content).map_err(io("writing", &tmp))?;
        if durability == Durability::Durable {
            f.sync_all().map_err(io("syncing", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
        if durability == Durability::Durable {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn remove(path: &Path) -> Result<(), SystemError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == IoKind::NotFound => Ok(()),
        Err(source) => Err(SystemError::Io {
            what: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}
