//! The last good copy of each remote source, so a reboot while the
//! provisioning server is down still converges.
//!
//! `<root>/var/lib/underlay/cache/profile.toml` holds the bytes,
//! `profile.json` their sha256, origin and when they were stored (the same
//! for `host`). A copy is stored only by `apply`, only after the pair
//! validated, and only when its hash matched the pin. It is used only when
//! the server cannot be reached and its hash equals the pin as it is now;
//! a copy whose bytes do not hash to what it records is corrupt and ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Freshness, Host, Item, Loaded, Sha256, MAX_BYTES};

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    sha256: String,
    origin: String,
    stored_at_unix: u64,
}

pub fn paths(dir: &Path, item: Item) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{}.toml", item.key())),
        dir.join(format!("{}.json", item.key())),
    )
}

/// What the cache holds for an item, against the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Vec<u8>),
    Missing,
    Corrupt { recorded: String, actual: Sha256 },
    OtherPin { cached: Sha256, pin: Sha256 },
    Unreadable(String),
}

impl Lookup {
    pub fn explain(&self) -> String {
        match self {
            Lookup::Hit(_) => "served from the cache".into(),
            Lookup::Missing => {
                "no cached copy to fall back on (one is kept after the first successful apply)".into()
            }
            Lookup::Corrupt { recorded, actual } => format!(
                "the cached copy is corrupt (it records sha256 {recorded} but its bytes hash to {actual}) and was ignored"
            ),
            Lookup::OtherPin { cached, pin } => format!(
                "the cached copy has sha256 {cached}, not the pinned {pin}, so it cannot stand in"
            ),
            Lookup::Unreadable(e) => format!("the cached copy cannot be read ({e})"),
        }
    }
}

pub fn lookup(host: &mut dyn Host, dir: &Path, item: Item, pin: Sha256) -> Lookup {
    let (data, meta) = paths(dir, item);
    let read = |host: &mut dyn Host, p: &Path| match host.read_file(p, MAX_BYTES) {
        Ok(Some(b)) if b.len() <= MAX_BYTES => Ok(Some(b)),
        Ok(Some(_)) => Err(format!("{} is over the size cap", p.display())),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    };
    let (bytes, meta) = match (read(host, &data), read(host, &meta)) {
        (Ok(Some(b)), Ok(Some(m))) => (b, m),
        (Ok(None), _) | (_, Ok(None)) => return Lookup::Missing,
        (Err(e), _) | (_, Err(e)) => return Lookup::Unreadable(e),
    };
    let actual = Sha256::of(&bytes);
    let recorded = serde_json::from_slice::<Meta>(&meta)
        .map(|m| m.sha256)
        .unwrap_or_else(|_| "(unreadable metadata)".into());
    if recorded.parse::<Sha256>().ok() != Some(actual) {
        return Lookup::Corrupt { recorded, actual };
    }
    if actual != pin {
        return Lookup::OtherPin {
            cached: actual,
            pin,
        };
    }
    Lookup::Hit(bytes)
}

/// Keeps a freshly fetched, validated source (unless the cache already
/// holds exactly it: `Ok(false)`). Bytes first, then the
/// metadata: a crash between the two leaves a pair that no longer matches,
/// which [`lookup`] reports as corrupt and ignores.
pub fn store(host: &mut dyn Host, dir: &Path, l: &Loaded) -> Result<bool, String> {
    if l.freshness != Freshness::Fetched {
        return Ok(false);
    }
    if let Lookup::Hit(_) = lookup(host, dir, l.item, l.sha256) {
        return Ok(false);
    }
    let (data, meta) = paths(dir, l.item);
    let m = Meta {
        sha256: l.sha256.to_string(),
        origin: l.origin.clone(),
        stored_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
    host.write_file(&data, &l.bytes)?;
    host.write_file(&meta, &json)?;
    Ok(true)
}
