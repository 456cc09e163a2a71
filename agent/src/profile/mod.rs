//! Profile loading: a role profile (shared by many hosts) and host facts (one
//! host) are parsed, validated and merged into one [`Desired`]. This is the
//! only place a user's mistake is reported; every error names the file, the
//! key path, line and column, what was found and what is expected.

mod addresses;
mod bgp;
mod errors;
pub mod input;
pub mod join;
mod names;
mod paths;
mod sysctl;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::desired::Desired;

/// An input value as echoed in an error: at most 80 characters, so a huge
/// value never floods a terminal or a journal.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}… ({} bytes)", s.len())
    }
}

/// An input value for an error message: control characters escaped, at most
/// 80 characters.
pub(crate) fn shown(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    clip(&escaped)
}

/// The profile schema versions this build understands.
pub const SUPPORTED_VERSION: u32 = 1;

/// Largest role profile or host facts file read (1 MiB): checked before
/// parsing, so a huge or endless file costs no more than this in memory.
/// Real profiles are a few KiB.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// Longest message a problem carries (each echoed value is capped at
/// [`crate::desired::types::ECHO_LIMIT`] characters before that).
const MAX_MESSAGE_CHARS: usize = 600;
const MAX_KEY_CHARS: usize = 160;

/// One mistake in a profile, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            if self.key.is_empty() {
                "(top level)"
            } else {
                &self.key
            },
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ProfileError {
    /// A profile that cannot be read or is invalid is always the input's fault.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Input
    }

    pub fn problems(&self) -> &[Problem] {
        match self {
            ProfileError::Invalid(p) => p,
            ProfileError::Read { .. } => &[],
        }
    }
}

/// A loaded TOML file: its path (as given) and text, to locate spans.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    fn read(path: &Path) -> Result<Source, ProfileError> {
        use std::io::Read;
        let read_err = |source| ProfileError::Read {
            file: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // One byte past the limit tells "too large" from "exactly 1 MiB";
        // `take` also bounds a FIFO or /dev/zero.
        let mut bytes = Vec::new();
        file.take(MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        Source::from_bytes(path, bytes)
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Source, ProfileError> {
        let at_start = |message: String| {
            ProfileError::Invalid(vec![Problem {
                file: path.to_path_buf(),
                key: String::new(),
                line: 1,
                column: 1,
                message,
            }])
        };
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(at_start(format!(
                "the file is larger than {} KiB, the limit for a role profile or host facts file; \
                 expected a profile of a few KiB: is this the right file?",
                MAX_INPUT_BYTES / 1024
            )));
        }
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let src = Source {
                    path: path.to_path_buf(),
                    text,
                };
                let span = good..good;
                let valid = std::str::from_utf8(&e.as_bytes()[..good]).unwrap_or("");
                Err(ProfileError::Invalid(vec![Problem {
                    key: errors::locate_key(valid, good),
                    message: format!(
                        "found a byte that is not UTF-8 (byte {good} of the file); expected UTF-8 text: \
                         re-save the file as UTF-8"
                    ),
                    ..src.problem("", &span, "")
                }]))
            }
        }
    }

    fn location(&self, span: &Range<usize>) -> (usize, usize) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub fn problem(
        &self,
        key: impl Into<String>,
        span: &Range<usize>,
        message: impl Into<String>,
    ) -> Problem {
        let (line, column) = self.location(span);
        // Key paths hold keys a person wrote: capped like any echoed value.
        let mut key: String = key.into();
        if key.chars().count() > MAX_KEY_CHARS {
            key = key.chars().take(MAX_KEY_CHARS).collect::<String>() + "…";
        }
        let mut message: String = message.into();
        if message.chars().count() > MAX_MESSAGE_CHARS {
            message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        Problem {
            file: self.path.clone(),
            key,
            line,
            column,
            message,
        }
    }

    /// Deserializes the whole file, peeling the version key first so a later
    /// schema can be dispatched on it.
    fn parse<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let version: input::VersionOnly = self.deserialize()?;
        match version.version {
            None => {
                return Err(self.problem(
                    "version",
                    &(0..0),
                    format!("missing; expected `version = {SUPPORTED_VERSION}` at the top of the file"),
                ))
            }
            Some(v) if *v.get_ref() != SUPPORTED_VERSION => {
                return Err(self.problem(
                    "version",
                    &v.span(),
                    format!(
                        "found {}, expected {SUPPORTED_VERSION} (the only profile version this build of underlay understands)",
                        v.get_ref()
                    ),
                ))
            }
            Some(_) => {}
        }
        self.deserialize()
    }

    fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let de = toml::de::Deserializer::parse(&self.text)
            .map_err(|e| self.toml_problem(String::new(), &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> shows up as a synthetic path segment; people never wrote it.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let key = if key == "." { String::new() } else { key };
            self.toml_problem(key, e.inner())
        })
    }

    fn toml_problem(&self, key: String, e: &toml::de::Error) -> Problem {
        errors::problem(self, key, e)
    }
}

/// Loads and validates a role profile and a host facts file into one
/// [`Desired`]. Reports every problem found, not just the first.
pub fn load(role: &Path, host: &Path) -> Result<Desired, ProfileError> {
    let role_src = Source::read(role)?;
    let host_src = Source::read(host)?;
    load_sources(&role_src, &host_src)
}

/// Same as [`load`] on bytes from any source (a file, an HTTPS URL,
/// cloud-init): `*_origin` names them in every error, where a file name
/// would be (`https://prov/r.toml:12:3: ...`).
pub fn load_bytes(
    role_origin: &str,
    role: &[u8],
    host_origin: &str,
    host: &[u8],
) -> Result<Desired, ProfileError> {
    let text = |origin: &str, b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let src = Source {
                path: origin.into(),
                text: String::from_utf8_lossy(&b[..at]).into_owned(),
            };
            src.problem(
                "",
                &(at..at),
                "not UTF-8 text (a TOML file must be UTF-8); is this the right file?",
            )
        })
    };
    match (text(role_origin, role), text(host_origin, host)) {
        (Ok(r), Ok(h)) => load_str(role_origin, &r, host_origin, &h),
        (r, h) => Err(ProfileError::Invalid(
            [r.err(), h.err()].into_iter().flatten().collect(),
        )),
    }
}

/// Same as [`load`] on in-memory text; `role_name`/`host_name` are used in errors.
pub fn load_str(
    role_name: &str,
    role_text: &str,
    host_name: &str,
    host_text: &str,
) -> Result<Desired, ProfileError> {
    let role_src = Source::from_bytes(Path::new(role_name), role_text.as_bytes().to_vec());
    let host_src = Source::from_bytes(Path::new(host_name), host_text.as_bytes().to_vec());
    match (role_src, host_src) {
        (Ok(r), Ok(h)) => load_sources(&r, &h),
        (r, h) => Err(ProfileError::Invalid(
            [r.err(), h.err()]
                .into_iter()
                .flatten()
                .flat_map(|e| e.problems().to_vec())
                .collect(),
        )),
    }
}

fn load_sources(role_src: &Source, host_src: &Source) -> Result<Desired, ProfileError> {
    let role = role_src.parse::<input::RoleInput>();
    let host = host_src.parse::<input::HostInput>();
    match (role, host) {
        (Ok(role), Ok(host)) => {
            validate::validate(role_src, &role, host_src, &host).map_err(ProfileError::Invalid)
        }
        (role, host) => Err(ProfileError::Invalid(
            [role.err(), host.err()].into_iter().flatten().collect(),
        )),
    }
}
