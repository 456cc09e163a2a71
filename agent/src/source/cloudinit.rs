//! cloud-init: an `underlay` key in the instance's user-data or vendor-data.
//!
//! ```yaml
//! #cloud-config
//! underlay:
//!   profile:
//!     url: https://prov.example/profiles/l3-ecmp-calico.toml
//!     sha256: 3f2a...                       # sha256sum of the file
//!   host:
//!     toml: |
//!       version = 1
//!       hostname = "node-a1"
//!       ...
//! ```
//!
//! Where cloud-init 22.4 (Debian 12) keeps it: `instance-data.json` holds
//! the datasource's metadata only (cloud-init pops user-data and vendor-data
//! from it, `sources/__init__.py` `persist_instance_data`); the user-data's
//! cloud-config, merged from every part (MIME, gzip and jinja already
//! handled), is `/var/lib/cloud/instance/cloud-config.txt` (0600, written in
//! the network stage by `handlers/cloud_config.py`), vendor-data's is
//! `vendor-cloud-config.txt` beside it. Before that stage only the raw
//! `user-data.txt` exists; it is read when it is a plain `#cloud-config`.
//! User-data wins over vendor-data, item by item, as in cloud-init.
//! `instance-data.json`'s `v1.local_hostname` is what `${hostname}` uses.

use std::path::Path;

use serde::Deserialize;

use super::{Candidate, Item, Level, Location, Sha256};

pub const DEFAULT_INSTANCE_DIR: &str = "/var/lib/cloud/instance";
pub const DEFAULT_INSTANCE_DATA: &str = "/run/cloud-init/instance-data.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnderlayKey {
    profile: Option<Entry>,
    host: Option<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    url: Option<String>,
    sha256: Option<String>,
    toml: Option<String>,
}

/// Which cloud-init data a file holds, for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    UserData,
    VendorData,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::UserData => "user-data",
            Part::VendorData => "vendor-data",
        }
    }
}

/// The `underlay` key of one cloud-config text, as candidates; empty when
/// the text has none. `file` is for messages.
pub fn parse(file: &Path, part: Part, text: &str) -> Result<Vec<(Item, Candidate)>, String> {
    let doc: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|e| format!("{} is not valid YAML: {e}", file.display()))?;
    let Some(key) = doc.get("underlay") else {
        return Ok(Vec::new());
    };
    let key: UnderlayKey = serde_norway::from_value(key.clone()).map_err(|e| {
        format!(
            "{}: underlay: {e}; expected `profile:` and/or `host:`, each with `url:` and `sha256:`, or `toml:`",
            file.display()
        )
    })?;
    let mut out = Vec::new();
    for (item, entry) in [(Item::Profile, key.profile), (Item::Host, key.host)] {
        let Some(e) = entry else { continue };
        let declared = format!("cloud-init {} underlay.{}", part.label(), item.key());
        let err = |m: &str| format!("{}: underlay.{}: {m}", file.display(), item.key());
        let pin = match &e.sha256 {
            Some(s) => Some(
                s.parse::<Sha256>()
                    .map_err(|m| err(&format!("sha256: {m}")))?,
            ),
            None => None,
        };
        let location = match (e.url, e.toml) {
            (Some(url), None) => Location::Url(url),
            (None, Some(toml)) => Location::Inline(toml),
            (Some(_), Some(_)) => {
                return Err(err("has both `url:` and `toml:`; give one"));
            }
            (None, None) => {
                return Err(err(
                    "has neither `url:` (with `sha256:`) nor `toml:` (the file's text inline)",
                ));
            }
        };
        let declared = match location {
            Location::Inline(_) => format!("{declared}.toml"),
            _ => declared,
        };
        out.push((
            item,
            Candidate {
                level: Level::CloudInit,
                location,
                pin,
                declared,
            },
        ));
    }
    Ok(out)
}

/// User-data first, vendor-data for what user-data does not say.
pub fn merge(
    user: Vec<(Item, Candidate)>,
    vendor: Vec<(Item, Candidate)>,
) -> Vec<(Item, Candidate)> {
    let mut out = user;
    for (item, c) in vendor {
        if !out.iter().any(|(i, _)| *i == item) {
            out.push((item, c));
        }
    }
    out
}

/// Whether a raw user-data file is a plain cloud-config (not MIME, gzip, a
/// script or a jinja template, which only cloud-init itself can process).
pub fn is_plain_cloud_config(raw: &[u8]) -> bool {
    raw.starts_with(b"#cloud-config\n") || raw.starts_with(b"#cloud-config\r\n")
}

/// `v1.local_hostname` of instance-data.json.
pub fn local_hostname(instance_data: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(instance_data).ok()?;
    v.pointer("/v1/local_hostname")
        .and_then(|h| h.as_str())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn url_with_pin_and_inline_toml() {
        let text = format!(
            "#cloud-config\npackages: [bird2]\nunderlay:\n  profile:\n    url: https://p/r.toml\n    sha256: {PIN}\n  host:\n    toml: |\n      version = 1\n      hostname = \"n1\"\n"
        );
        let c = parse(Path::new("cloud-config.txt"), Part::UserData, &text).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, Item::Profile);
        assert_eq!(c[0].1.location, Location::Url("https://p/r.toml".into()));
        assert_eq!(c[0].1.pin.unwrap().to_string(), PIN);
        assert_eq!(c[0].1.declared, "cloud-init user-data underlay.profile");
        assert_eq!(
            c[1].1.location,
            Location::Inline("version = 1\nhostname = \"n1\"\n".into())
        );
        assert_eq!(c[1].1.declared, "cloud-init user-data underlay.host.toml");
    }

    #[test]
    fn no_underlay_key_is_no_candidate() {
        assert!(parse(
            Path::new("x"),
            Part::UserData,
            "#cloud-config\npackages: [a]\n"
        )
        .unwrap()
        .is_empty());
        assert!(parse(Path::new("x"), Part::UserData, "")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, wants) in [
            (
                "underlay:\n  profile:\n    url: https://x\n    toml: a\n",
                "both `url:` and `toml:`",
            ),
            ("underlay:\n  host: {}\n", "neither `url:`"),
            (
                "underlay:\n  profile: {url: https://x, sha256: abc}\n",
                "sha256: 'abc' is not a sha256",
            ),
            ("underlay:\n  profiles: {}\n", "unknown field `profiles`"),
            ("underlay:\n  profile: {uri: x}\n", "unknown field `uri`"),
            ("underlay: [\n", "not valid YAML"),
        ] {
            let e = parse(Path::new("cc.txt"), Part::UserData, text).expect_err(text);
            assert!(e.contains(wants), "{text}: {e}");
        }
    }

    #[test]
    fn user_data_wins_over_vendor_data_per_item() {
        let user = parse(
            Path::new("u"),
            Part::UserData,
            "underlay:\n  host: {toml: u}\n",
        )
        .unwrap();
        let vendor = parse(
            Path::new("v"),
            Part::VendorData,
            &format!("underlay:\n  host: {{toml: v}}\n  profile: {{url: 'https://v/p', sha256: {PIN}}}\n"),
        )
        .unwrap();
        let m = merge(user, vendor);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].1.location, Location::Inline("u".into()));
        assert_eq!(m[1].1.declared, "cloud-init vendor-data underlay.profile");
    }

    #[test]
    fn hostname_from_instance_data() {
        let j = br#"{"v1": {"local_hostname": "node-a1", "instance_id": "i-1"}, "ds": {"meta_data": {}}}"#;
        assert_eq!(local_hostname(j).as_deref(), Some("node-a1"));
        assert_eq!(local_hostname(b"{}"), None);
        assert_eq!(local_hostname(b"not json"), None);
    }
}
