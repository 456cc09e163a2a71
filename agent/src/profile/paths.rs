//! Every path in a profile is logical: absolute, resolved lexically below
//! `--root`, never with a `..` component (it would climb out of the root),
//! never into /proc, /sys or /dev, and never onto a file of ours or onto
//! another path the profile names (the BIRD config written over the state
//! file, a password read from the sysctl.d file).

use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::{Problem, Source};
use crate::desired::types::shown;

/// Longest path and file name the kernel takes (PATH_MAX, NAME_MAX).
const PATH_MAX: usize = 4095;
const NAME_MAX: usize = 255;

/// Kernel file systems: a file there is a device or a knob, never a config.
const KERNEL_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// What underlay writes itself, below the root, and the directory of its
/// state (the state file, its lock, private temporary files).
pub(super) fn own_files() -> [(&'static str, &'static str); 5] {
    use crate::plan::target::{RT_ADDRPROTOS_FILE, RT_PROTOS_FILE, RT_TABLES_FILE, SYSCTL_FILE};
    [
        (RT_TABLES_FILE, "underlay's routing table names"),
        (RT_PROTOS_FILE, "underlay's protocol name"),
        (RT_ADDRPROTOS_FILE, "underlay's address protocol name"),
        (SYSCTL_FILE, "underlay's persisted sysctls"),
        (STATE_DIR, "underlay's state directory"),
    ]
}

/// Parent of [`crate::system::linux::DEFAULT_STATE_PATH`].
pub(super) const STATE_DIR: &str = "/var/lib/underlay";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
}

/// The path normalized (`//` and `.` dropped), or a problem at its value.
pub(super) fn logical(
    src: &Source,
    key: &str,
    value: &Spanned<String>,
    kind: Kind,
    example: &str,
    p: &mut Vec<Problem>,
) -> Option<PathBuf> {
    let s = value.get_ref();
    let why = problem(s, kind);
    match why {
        Some(why) => {
            p.push(src.problem(
                key,
                &value.span(),
                format!("found '{}', {why}, e.g. {example}", shown(s)),
            ));
            None
        }
        None => Some(normalize(Path::new(s))),
    }
}

fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn problem(s: &str, kind: Kind) -> Option<String> {
    let path = Path::new(s);
    if !s.starts_with('/') {
        return Some(
            "expected an absolute path (it is taken below --root, never from the working directory)"
                .into(),
        );
    }
    if s.chars().any(char::is_control) {
        return Some("expected a path without control characters".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Some(
            "expected a path without '..' (paths are resolved below --root and may not climb out of it)"
                .into(),
        );
    }
    if s.len() > PATH_MAX || path.iter().any(|c| c.len() > NAME_MAX) {
        return Some(format!(
            "expected at most {PATH_MAX} bytes and {NAME_MAX} per name (the kernel's limits)"
        ));
    }
    let norm = normalize(path);
    if norm == Path::new("/") {
        return Some("expected a path below /, not / itself".into());
    }
    if kind == Kind::File && s.ends_with('/') {
        return Some("expected a file path, not a directory (drop the trailing '/')".into());
    }
    if let Some(tree) = KERNEL_TREES.iter().find(|t| norm.starts_with(t)) {
        return Some(format!(
            "expected a path outside {tree} (the kernel's files are devices and knobs, not configs)"
        ));
    }
    None
}

/// One path the profile names, for the collision check.
pub(super) struct Named<'a> {
    pub key: String,
    pub path: PathBuf,
    /// Where it was written; `None` for a default.
    pub at: Option<(&'a Source, std::ops::Range<usize>)>,
    /// Written or created (by us or BIRD), rather than only read.
    pub written: bool,
    /// Read as a secret: a password file holds nothing but its password.
    pub secret: bool,
}

/// Refuses two names for one file where one of them is written or only one
/// is a secret, and any path onto (or inside, or above) underlay's own
/// files. Reading one password file for two sessions is fine.
pub(super) fn collisions(named: &[Named<'_>], fallback: &Source, p: &mut Vec<Problem>) {
    let overlap = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
    for (i, n) in named.iter().enumerate() {
        let (src, span) = n.at.clone().unwrap_or((fallback, 0..0));
        for (own, what) in own_files() {
            if overlap(&n.path, Path::new(own)) {
                p.push(src.problem(
                    &n.key,
                    &span,
                    format!(
                        "found '{}', which {} {own} ({what}); expected a path of its own",
                        shown(&n.path.display().to_string()),
                        if n.path == Path::new(own) {
                            "is"
                        } else {
                            "overlaps"
                        },
                    ),
                ));
            }
        }
        for other in &named[..i] {
            let clash = n.written || other.written || n.secret != other.secret;
            if !clash || !overlap(&n.path, &other.path) {
                continue;
            }
            // Report where a person wrote it: the later one unless only the
            // earlier was written out.
            let (at, partner) = match (&n.at, &other.at) {
                (None, Some(_)) => (other, n),
                _ => (n, other),
            };
            let (src, span) = at.at.clone().unwrap_or((fallback, 0..0));
            p.push(src.problem(
                &at.key,
                &span,
                format!(
                    "found '{}', which {} {} ('{}'); expected separate files: one would overwrite or be read as the other",
                    shown(&at.path.display().to_string()),
                    if at.path == partner.path { "is also" } else { "overlaps" },
                    partner.key,
                    shown(&partner.path.display().to_string()),
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_directory_is_the_state_files() {
        let state = Path::new(crate::system::linux::DEFAULT_STATE_PATH);
        assert_eq!(state.parent(), Some(Path::new(STATE_DIR)));
    }

    #[test]
    fn normalization_is_lexical() {
        assert_eq!(
            normalize(Path::new("/etc//bird/./x")),
            Path::new("/etc/bird/x")
        );
        assert!(problem("/a/../b", Kind::File).is_some());
        assert!(problem("/a/b/", Kind::File).is_some());
        assert!(problem("/a/b/", Kind::Dir).is_none());
        assert!(problem(&format!("/{}", "a".repeat(256)), Kind::File).is_some());
    }
}
