//! Files under the `--root` prefix: read, and the one writer every generated
//! file goes through. It replaces a file atomically (temp file beside the
//! target, fsync where durability matters, rename), keeps an existing file's
//! owner, group and mode, and gives a new file the owner and mode asked for
//! (BIRD's config must stay readable by `bird:bird`). Its temp file has a
//! fixed name beside the target, so one a killed run left behind is replaced
//! (and removed) by the next run instead of piling up.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// The sha256 of a file's bytes, `None` when it cannot be read: how watch
/// mode notices an input changed (a rename into place or a symlink swap too).
pub fn digest(path: &Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    fs::read(path).ok().map(|b| sha2::Sha256::digest(&b).into())
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

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSpec {
    /// Mode of a new file (an existing file keeps its own).
    pub mode: u32,
    /// Owner and group (uid, gid) of a new file; `None`: the writer's.
    pub owner: Option<(u32, u32)>,
    pub durability: Durability,
}

impl WriteSpec {
    pub fn new(mode: u32, durability: Durability) -> WriteSpec {
        WriteSpec {
            mode,
            owner: None,
            durability,
        }
    }
}

/// The temp file the writer uses for `path` (and that a crash may leave).
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.underlay-tmp"))
}

/// Removes what a killed run may have left beside `path`.
pub fn remove_stale_temp(path: &Path) {
    let _ = fs::remove_file(temp_path(path));
}

pub fn write_atomic(path: &Path, content: &[u8], spec: &WriteSpec) -> Result<(), SystemError> {
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
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(SystemError::Io {
                what: "writing",
                path: path.to_path_buf(),
                source: std::io::Error::new(IoKind::IsADirectory, "it is a directory"),
            })
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == IoKind::NotFound => None,
        Err(source) => {
            return Err(SystemError::Io {
                what: "inspecting",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(spec.mode)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        let (mode, owner) = match &existing {
            Some(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
            None => (spec.mode, spec.owner),
        };
        // The umask may have narrowed the create mode: set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of", &tmp))?;
        if let Some((uid, gid)) = owner {
            let now = f.metadata().map_err(io("inspecting", &tmp))?;
            if (now.uid(), now.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(io("setting the owner of", &tmp))?;
            }
        }
        f.write_all(content).map_err(io("writing", &tmp))?;
        if spec.durability == Durability::Durable {
            f.sync_all().map_err(io("syncing", &tmp))?;
        }
        drop(f);
        fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
        if spec.durability == Durability::Durable {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(p: &Path) -> fs::Metadata {
        fs::metadata(p).unwrap()
    }

    #[test]
    fn digest_follows_the_bytes_and_is_none_for_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("profile.toml");
        assert_eq!(digest(&p), None);
        fs::write(&p, "a = 1\n").unwrap();
        let first = digest(&p).unwrap();
        assert_eq!(digest(&p), Some(first));
        // A swap by rename (what editors and config management do) shows too.
        fs::write(dir.path().join("new"), "a = 2\n").unwrap();
        fs::rename(dir.path().join("new"), &p).unwrap();
        assert_ne!(digest(&p), Some(first));
    }

    #[test]
    fn a_new_file_gets_the_mode_and_owner_asked_for() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/bird/bird.conf");
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let spec = WriteSpec {
            mode: 0o640,
            owner: Some(me),
            durability: Durability::Durable,
        };
        write_atomic(&p, b"router id 10.0.0.1;\n", &spec).unwrap();
        assert_eq!(meta(&p).mode() & 0o7777, 0o640);
        assert_eq!((meta(&p).uid(), meta(&p).gid()), me);
        assert!(!temp_path(&p).exists(), "no temp file is left behind");
    }

    #[test]
    fn an_existing_file_keeps_its_mode_and_owner() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bird.conf");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o604)).unwrap();
        write_atomic(&p, b"new", &WriteSpec::new(0o600, Durability::Derived)).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(meta(&p).mode() & 0o7777, 0o604);
    }

    #[test]
    fn a_stale_temp_file_from_a_killed_run_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        fs::write(temp_path(&p), "half-written secret").unwrap();
        write_atomic(&p, b"{}", &WriteSpec::new(0o600, Durability::Durable)).unwrap();
        assert!(!temp_path(&p).exists());
        assert_eq!(fs::read_to_string(&p).unwrap(), "{}");
    }

    #[test]
    fn a_directory_in_the_way_is_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bird.conf");
        fs::create_dir(&p).unwrap();
        let e = write_atomic(&p, b"x", &WriteSpec::new(0o600, Durability::Derived)).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        assert!(p.is_dir());
    }
}
