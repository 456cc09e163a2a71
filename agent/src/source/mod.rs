//! Where the role profile and the host facts come from, and which source
//! wins. Every source yields the same thing, a [`Loaded`]: its origin, its
//! bytes and their sha256.
//!
//! Precedence, per item (profile and host facts independently), first
//! present wins:
//!
//! | level | profile | host facts |
//! |---|---|---|
//! | 1. flag | `--profile FILE\|URL` (`--profile-sha256`) | `--host FILE\|URL` (`--host-sha256`) |
//! | 2. kernel command line | `underlay.profile=` (`underlay.profile.sha256=`) | `underlay.host=` (`underlay.host.sha256=`) |
//! | 3. cloud-init | `underlay: {profile: {url, sha256} or {toml}}` | `underlay: {host: ...}` |
//! | 4. local file | `<root>/etc/underlay/profile.toml` | `<root>/etc/underlay/host.toml` |
//!
//! "Present" means declared, not "worked": a kernel command line URL whose
//! server is down is an error (or the cache), never a silent fall back to a
//! stale local file.
//!
//! Everything here is pure except through [`Host`]: file reads, HTTPS, DMI,
//! NIC lookups and cache writes. The real implementation is
//! [`crate::system::sources::LinuxSources`].

pub mod cache;
pub mod cloudinit;
pub mod cmdline;
pub mod discover;
pub mod remote;
pub mod template;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256 as Sha256Hasher};

use crate::desired::MacAddr;
use crate::error::ErrorKind;

/// The largest profile or host facts file underlay reads, from any source.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Below `--root`: the last good copy of each remote source.
pub const CACHE_DIR: &str = "/var/lib/underlay/cache";
/// Below `--root`: the local files, the last level of the precedence.
pub const LOCAL_DIR: &str = "/etc/underlay";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Item {
    Profile,
    Host,
}

impl Item {
    pub const BOTH: [Item; 2] = [Item::Profile, Item::Host];

    pub fn key(self) -> &'static str {
        match self {
            Item::Profile => "profile",
            Item::Host => "host",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            Item::Profile => "role profile",
            Item::Host => "host facts",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Item::Profile => "--profile",
            Item::Host => "--host",
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Precedence levels, highest first (the derive order is the precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Flag,
    Cmdline,
    CloudInit,
    Local,
}

impl Level {
    /// As in the JSON document and logs.
    pub fn key(self) -> &'static str {
        match self {
            Level::Flag => "flag",
            Level::Cmdline => "cmdline",
            Level::CloudInit => "cloud-init",
            Level::Local => "local",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Level::Flag => "command-line flag",
            Level::Cmdline => "kernel command line",
            Level::CloudInit => "cloud-init",
            Level::Local => "local file",
        }
    }
}

/// A sha256 digest: parsed from 64 hex digits, printed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of(bytes: &[u8]) -> Sha256 {
        Sha256(Sha256Hasher::digest(bytes).into())
    }
}

impl std::str::FromStr for Sha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Sha256, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "'{s}' is not a sha256; expected 64 hex digits, as `sha256sum FILE` prints them"
            )
        };
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// Where a candidate's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// An https URL, possibly with `${...}` templates still in it.
    Url(String),
    /// TOML text given inline (cloud-init `toml:`).
    Inline(String),
}

/// A declared source for one item, not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub level: Level,
    pub location: Location,
    pub pin: Option<Sha256>,
    /// Where it was declared, for messages: `--profile`,
    /// `/proc/cmdline underlay.host=`, `cloud-init user-data underlay.host`.
    pub declared: String,
}

impl Candidate {
    /// `--profile`/`--host` or a kernel command line value: an URL when it
    /// has a scheme, a path otherwise.
    pub fn from_value(level: Level, value: &str, pin: Option<Sha256>, declared: String) -> Self {
        let location = if value.contains("://") {
            Location::Url(value.to_string())
        } else {
            Location::File(PathBuf::from(value))
        };
        Candidate {
            level,
            location,
            pin,
            declared,
        }
    }
}

/// Every declared source of both items, gathered from flags, the kernel
/// command line, cloud-init and the local directory.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    pub candidates: Vec<(Item, Candidate)>,
    /// What was looked at, per level, for the "nothing found" error.
    pub looked: Vec<String>,
    pub cmdline: cmdline::Cmdline,
    pub cloud_hostname: Option<String>,
}

/// The winner for `item`: the declared candidate of the highest level.
pub fn choose(d: &Discovered, item: Item) -> Result<Candidate, SourceError> {
    d.candidates
        .iter()
        .filter(|(i, _)| *i == item)
        .map(|(_, c)| c)
        .min_by_key(|c| c.level)
        .cloned()
        .ok_or_else(|| SourceError::NotFound {
            item,
            looked: d.looked.clone(),
        })
}

/// `cache_reason` of a source taken from the cache without a fetch.
pub const CACHED_REASON: &str = "the cached copy matches the pin; not fetched again";

/// How a loaded source relates to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// A local file or inline text: nothing to cache.
    Local,
    /// Fetched now; the cache may be refreshed with it once it validates.
    Fetched,
    /// The server could not be reached: the cached copy (its hash matches
    /// the pin) is used; `reason` says why the fetch failed.
    FromCache { reason: String },
    /// Taken from the cache without asking the server ([`Context::cache_first`]):
    /// a cached copy that hashes to the pin is byte for byte what a fetch
    /// that passes the pin returns.
    Cached,
}

/// One item's bytes, with where they came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub item: Item,
    pub level: Level,
    pub declared: String,
    /// The file path, or the URL without its query string and user info.
    pub origin: String,
    pub bytes: Vec<u8>,
    pub sha256: Sha256,
    pub pinned: bool,
    pub freshness: Freshness,
}

impl Loaded {
    pub fn from_cache(&self) -> bool {
        matches!(
            self.freshness,
            Freshness::FromCache { .. } | Freshness::Cached
        )
    }

    pub fn doc(&self) -> SourceDoc {
        SourceDoc {
            item: self.item,
            level: self.level,
            declared: self.declared.clone(),
            origin: self.origin.clone(),
            sha256: self.sha256.to_string(),
            bytes: self.bytes.len(),
            pinned: self.pinned,
            from_cache: self.from_cache(),
            cache_reason: match &self.freshness {
                Freshness::FromCache { reason } => Some(reason.clone()),
                Freshness::Cached => Some(CACHED_REASON.into()),
                _ => None,
            },
        }
    }
}

/// A loaded source in the JSON document (`sources[]`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceDoc {
    pub item: Item,
    pub level: Level,
    pub declared: String,
    pub origin: String,
    pub sha256: String,
    pub bytes: usize,
    pub pinned: bool,
    pub from_cache: bool,
    /// Why the cache was used (the fetch error), when it was.
    pub cache_reason: Option<String>,
}

/// Why a fetch failed, as the HTTPS client reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No answer: connection refused, no route, DNS, TLS, a timeout, after
    /// every retry. The cache may serve.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with an error status, after retries where a retry
    /// makes sense (408, 429, 5xx). The cache may serve.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// Refused whatever the cache holds: the server sent something unsafe.
    #[error("the body is larger than {limit} bytes (the cap for a profile or host facts file)")]
    TooLarge { limit: usize },
    #[error("the server redirected to {to}, which is not https; refused")]
    InsecureRedirect { to: String },
    #[error("more than {0} redirects; refused")]
    TooManyRedirects(usize),
}

impl FetchError {
    /// Whether the cache may stand in for the server.
    fn cache_may_serve(&self) -> bool {
        matches!(self, FetchError::Unreachable(_) | FetchError::Status(_))
    }
}

/// A template variable's value, as the host knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmiField {
    Serial,
    Uuid,
}

impl DmiField {
    pub fn file(self) -> &'static str {
        match self {
            DmiField::Serial => "product_serial",
            DmiField::Uuid => "product_uuid",
        }
    }
}

/// The side effects sources need. Synchronous; an implementation keeps any
/// async runtime to itself.
pub trait Host {
    /// A local file, at most `cap + 1` bytes of it (so over-size shows);
    /// `Ok(None)` when it does not exist.
    fn read_file(&mut self, path: &Path, cap: usize) -> std::io::Result<Option<Vec<u8>>>;
    /// GET an https URL (retries, timeouts, size cap and redirect rules are
    /// the implementation's).
    fn fetch(&mut self, url: &url::Url) -> Result<Vec<u8>, FetchError>;
    /// The kernel's hostname.
    fn hostname(&mut self) -> Option<String>;
    /// A DMI field (`/sys/class/dmi/id/...`), trimmed.
    fn dmi(&mut self, field: DmiField) -> Option<String>;
    /// The (permanent, else current) MAC of a NIC by name.
    fn nic_mac(&mut self, nic: &str) -> Result<MacAddr, String>;
    /// Replace a file atomically (the cache).
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no {} found; looked at: {}. Give {} FILE|URL, or see `underlay show-sources --help` for the kernel command line and cloud-init", .item.what(), .looked.join("; "), .item.flag())]
    NotFound { item: Item, looked: Vec<String> },
    #[error("kernel command line {}: {message}", path.display())]
    Cmdline { path: PathBuf, message: String },
    #[error("cloud-init {}: {message}", path.display())]
    CloudInit { path: PathBuf, message: String },
    #[error("{declared} {url}: {message}")]
    Url {
        declared: String,
        url: String,
        message: String,
    },
    #[error("{declared} {url}: a remote {} must be pinned: add {pin_hint}=<sha256> (the output of `sha256sum` on the file); an unpinned remote source is refused", .item.what())]
    Unpinned {
        item: Item,
        declared: String,
        url: String,
        pin_hint: String,
    },
    #[error("{declared}: {message}")]
    Template { declared: String, message: String },
    #[error("{} {origin}: sha256 mismatch: pinned {expected}, got {got}. Nothing was changed and the cache was left as it is; if the file changed on purpose, set the pin to {got}", .item.what())]
    PinMismatch {
        item: Item,
        origin: String,
        expected: Sha256,
        got: Sha256,
    },
    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{} {origin} is larger than {limit} bytes (the cap for a profile or host facts file)", .item.what())]
    TooLarge {
        item: Item,
        origin: String,
        limit: usize,
    },
    #[error("{} {origin}: {error}", .item.what())]
    Refused {
        item: Item,
        origin: String,
        error: FetchError,
    },
    #[error("{} {origin}: fetch failed: {error}; {cache}", .item.what())]
    Fetch {
        item: Item,
        origin: String,
        error: FetchError,
        /// What the cache had to say (none, corrupt, another hash).
        cache: String,
    },
    #[error("CA bundle {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
}

impl SourceError {
    /// Input: fix the flags, the command line, the user-data, the pin.
    /// Transient: the server is down and the cache cannot stand in.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Fetch { error, .. } => match error {
                // A 4xx other than 408/429 says the URL is wrong.
                FetchError::Status(s) if (400..500).contains(s) && *s != 408 && *s != 429 => {
                    ErrorKind::Input
                }
                _ => ErrorKind::Transient,
            },
            _ => ErrorKind::Input,
        }
    }
}

/// What loading needs besides the candidate: the cache directory (below
/// --root) and the facts templates resolve from.
pub struct Context<'a> {
    pub cache_dir: &'a Path,
    /// Use a cached copy that matches the pin without fetching: for the
    /// verbs that follow this boot's `apply` (the readiness gates, the
    /// join), which must not hang on a provisioning server gone quiet.
    pub cache_first: bool,
    pub bootif: Option<MacAddr>,
    pub cloud_hostname: Option<&'a str>,
}

/// Reads, fetches (or takes from the cache) and checks one item's winning
/// candidate. Changes nothing: the cache is written only by [`cache::store`]
/// after the pair validated.
pub fn load(
    item: Item,
    c: &Candidate,
    host: &mut dyn Host,
    ctx: &Context,
) -> Result<Loaded, SourceError> {
    let loaded = |origin: String, bytes: Vec<u8>, freshness: Freshness| {
        let sha256 = Sha256::of(&bytes);
        Loaded {
            item,
            level: c.level,
            declared: c.declared.clone(),
            origin,
            bytes,
            sha256,
            pinned: c.pin.is_some(),
            freshness,
        }
    };
    let check_pin = |origin: &str, got: Sha256| match c.pin {
        Some(expected) if expected != got => Err(SourceError::PinMismatch {
            item,
            origin: origin.to_string(),
            expected,
            got,
        }),
        _ => Ok(()),
    };
    match &c.location {
        Location::Inline(text) => {
            let origin = c.declared.clone();
            check_pin(&origin, Sha256::of(text.as_bytes()))?;
            if text.len() > MAX_BYTES {
                return Err(SourceError::TooLarge {
                    item,
                    origin,
                    limit: MAX_BYTES,
                });
            }
            Ok(loaded(origin, text.clone().into_bytes(), Freshness::Local))
        }
        Location::File(path) => {
            let origin = path.display().to_string();
            let bytes = match host.read_file(path, MAX_BYTES) {
                Ok(Some(b)) => b,
                Ok(None) => {
                    return Err(SourceError::Read {
                        path: path.clone(),
                        message: format!("no such file (named by {})", c.declared),
                    })
                }
                Err(e) => {
                    return Err(SourceError::Read {
                        path: path.clone(),
                        message: e.to_string(),
                    })
                }
            };
            if bytes.len() > MAX_BYTES {
                return Err(SourceError::TooLarge {
                    item,
                    origin,
                    limit: MAX_BYTES,
                });
            }
            check_pin(&origin, Sha256::of(&bytes))?;
            Ok(loaded(origin, bytes, Freshness::Local))
        }
        Location::Url(raw) => {
            let url = resolve_url(item, c, raw, host, ctx)?;
            let origin = remote::display(&url);
            let Some(pin) = c.pin else {
                return Err(SourceError::Unpinned {
                    item,
                    declared: c.declared.clone(),
                    url: origin,
                    pin_hint: pin_hint(item, c.level),
                });
            };
            if ctx.cache_first {
                if let cache::Lookup::Hit(bytes) = cache::lookup(host, ctx.cache_dir, item, pin) {
                    return Ok(loaded(origin, bytes, Freshness::Cached));
                }
            }
            match host.fetch(&url) {
                Ok(bytes) => {
                    if bytes.len() > MAX_BYTES {
                        return Err(SourceError::Refused {
                            item,
                            origin,
                            error: FetchError::TooLarge { limit: MAX_BYTES },
                        });
                    }
                    check_pin(&origin, Sha256::of(&bytes))?;
                    Ok(loaded(origin, bytes, Freshness::Fetched))
                }
                Err(error) if error.cache_may_serve() => {
                    match cache::lookup(host, ctx.cache_dir, item, pin) {
                        cache::Lookup::Hit(bytes) => {
                            let reason = error.to_string();
                            Ok(loaded(origin, bytes, Freshness::FromCache { reason }))
                        }
                        other => Err(SourceError::Fetch {
                            item,
                            origin,
                            error,
                            cache: other.explain(),
                        }),
                    }
                }
                Err(error) => Err(SourceError::Refused {
                    item,
                    origin,
                    error,
                }),
            }
        }
    }
}

fn pin_hint(item: Item, level: Level) -> String {
    match level {
        Level::Flag => format!("{}-sha256", item.flag()),
        Level::Cmdline => format!("underlay.{}.sha256", item.key()),
        Level::CloudInit => format!("`sha256:` beside `url:` under underlay.{}", item.key()),
        Level::Local => "a pin".into(),
    }
}

/// Expands `${...}` and checks the scheme: https only.
fn resolve_url(
    item: Item,
    c: &Candidate,
    raw: &str,
    host: &mut dyn Host,
    ctx: &Context,
) -> Result<url::Url, SourceError> {
    let template_err = |message: String| SourceError::Template {
        declared: format!("{} {}", c.declared, remote::display_str(raw)),
        message,
    };
    let expanded =
        template::expand(raw, |var| template::value(var, host, ctx)).map_err(template_err)?;
    let url_err = |message: String| SourceError::Url {
        declared: c.declared.clone(),
        url: remote::display_str(&expanded),
        message,
    };
    let url = url::Url::parse(&expanded).map_err(|e| url_err(format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            return Err(url_err(format!(
                "plain http is refused for the {}: serve it over https (with --ca-file or underlay.ca= for a private CA)",
                item.what()
            )))
        }
        other => {
            return Err(url_err(format!(
                "scheme '{other}' is not supported; expected https:// (or a local path)"
            )))
        }
    }
    if !matches!(url.host_str(), Some(h) if !h.is_empty()) {
        return Err(url_err("no host in the URL".into()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests;
