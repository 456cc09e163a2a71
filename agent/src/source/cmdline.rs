//! The kernel command line (`/proc/cmdline`): what PXELINUX or iPXE passed.
//!
//! Keys: `underlay.profile=`, `underlay.profile.sha256=`, `underlay.host=`,
//! `underlay.host.sha256=`, `underlay.ca=` (a PEM bundle on the booted
//! system, for a private provisioning CA) and `BOOTIF=01-aa-bb-cc-dd-ee-ff`
//! (PXELINUX's `IPAPPEND 2`, iPXE's `BOOTIF=01-${net0/mac:hexhyp}`), the
//! boot NIC's MAC that `${mac}` resolves to. A later duplicate wins, as for
//! every kernel and systemd parameter. Any other `underlay.*` key is an
//! error: a typo must not silently drop the pin.

use std::path::PathBuf;

use super::Sha256;
use crate::desired::MacAddr;

pub const DEFAULT_PATH: &str = "/proc/cmdline";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub profile: Option<String>,
    pub profile_sha256: Option<Sha256>,
    pub host: Option<String>,
    pub host_sha256: Option<Sha256>,
    pub ca: Option<PathBuf>,
    pub bootif: Option<MacAddr>,
}

const KEYS: &str =
    "underlay.profile, underlay.profile.sha256, underlay.host, underlay.host.sha256, underlay.ca";

/// Splits like the kernel does: on whitespace, with double quotes grouping
/// (`key="a b"` and `"key=a b"` are both one parameter, quotes removed).
pub fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses the parameters underlay reads; the error is one line naming the
/// parameter, what was found and what is expected.
pub fn parse(text: &str) -> Result<Cmdline, String> {
    let mut c = Cmdline::default();
    for param in split(text) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param.as_str(), None),
        };
        if key == "BOOTIF" {
            let v = value.unwrap_or_default();
            c.bootif = Some(parse_bootif(v)?);
            continue;
        }
        let Some(sub) = key.strip_prefix("underlay.") else {
            continue;
        };
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => return Err(format!("{key}: has no value; expected {key}=VALUE")),
        };
        let sha = |v: &str| v.parse::<Sha256>().map_err(|e| format!("{key}: {e}"));
        match sub {
            "profile" => c.profile = Some(location(key, value)?),
            "host" => c.host = Some(location(key, value)?),
            "profile.sha256" => c.profile_sha256 = Some(sha(value)?),
            "host.sha256" => c.host_sha256 = Some(sha(value)?),
            "ca" => {
                if !value.starts_with('/') {
                    return Err(format!(
                        "{key}: found '{value}', expected an absolute path to a PEM CA bundle on the booted system"
                    ));
                }
                c.ca = Some(PathBuf::from(value));
            }
            _ => {
                return Err(format!(
                    "unknown parameter {key}; underlay reads {KEYS} (and BOOTIF)"
                ))
            }
        }
    }
    for (pin, url, name) in [
        (&c.profile_sha256, &c.profile, "profile"),
        (&c.host_sha256, &c.host, "host"),
    ] {
        if pin.is_some() && url.is_none() {
            return Err(format!(
                "underlay.{name}.sha256 is set but underlay.{name}= is not; give the URL it pins"
            ));
        }
    }
    Ok(c)
}

fn location(key: &str, value: &str) -> Result<String, String> {
    if value.contains("://") || value.starts_with('/') {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{key}: found '{value}', expected an https:// URL or an absolute path"
        ))
    }
}

/// `01-aa-bb-cc-dd-ee-ff`: ARP hardware type 1 (Ethernet), then the MAC.
fn parse_bootif(v: &str) -> Result<MacAddr, String> {
    let bad = || {
        format!(
            "BOOTIF: found '{v}', expected 01- and a MAC in hyphens, like BOOTIF=01-52-54-00-12-34-56 \
             (PXELINUX IPAPPEND 2, or BOOTIF=01-${{net0/mac:hexhyp}} in iPXE)"
        )
    };
    let mac = v
        .strip_prefix("01-")
        .filter(|m| m.len() == 17 && !m.contains(':'))
        .ok_or_else(bad)?;
    mac.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn reads_the_keys_and_ignores_the_kernel_s_own() {
        let c = parse(&format!(
            "BOOT_IMAGE=/vmlinuz root=UUID=1 ro quiet underlay.profile=https://p/r.toml \
             underlay.profile.sha256={PIN} underlay.host=https://p/h/${{mac}}.toml \
             underlay.host.sha256={} BOOTIF=01-52-54-00-AB-cd-01 underlay.ca=/etc/prov-ca.pem\n",
            PIN.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.profile.as_deref(), Some("https://p/r.toml"));
        assert_eq!(c.host.as_deref(), Some("https://p/h/${mac}.toml"));
        assert_eq!(c.profile_sha256.unwrap().to_string(), PIN);
        assert_eq!(c.host_sha256, c.profile_sha256, "hex is case-insensitive");
        assert_eq!(c.bootif.unwrap().to_string(), "52:54:00:ab:cd:01");
        assert_eq!(c.ca, Some(PathBuf::from("/etc/prov-ca.pem")));
    }

    #[test]
    fn quotes_group_and_a_later_duplicate_wins() {
        assert_eq!(
            split(r#"a "b c" d="e f" "g=h i"  "#),
            vec!["a", "b c", "d=e f", "g=h i"]
        );
        let c = parse("underlay.profile=/a.toml underlay.profile=/b.toml").unwrap();
        assert_eq!(c.profile.as_deref(), Some("/b.toml"));
        assert_eq!(parse("").unwrap(), Cmdline::default());
    }

    #[test]
    fn malformed_parameters_are_errors_that_name_them() {
        for (line, wants) in [
            (
                "underlay.profle=https://x/y",
                "unknown parameter underlay.profle",
            ),
            ("underlay.profile=", "underlay.profile: has no value"),
            ("underlay.host", "underlay.host: has no value"),
            (
                "underlay.profile=https://x underlay.profile.sha256=abc",
                "'abc' is not a sha256",
            ),
            ("underlay.host.sha256=".to_string().as_str(), "has no value"),
            (
                &format!("underlay.host.sha256={PIN}"),
                "underlay.host= is not",
            ),
            (
                "underlay.profile=profiles/x.toml",
                "expected an https:// URL or an absolute path",
            ),
            ("BOOTIF=52-54-00-12-34-56", "expected 01- and a MAC"),
            ("BOOTIF=01-52:54:00:12:34:56", "expected 01- and a MAC"),
            ("BOOTIF=01-52-54-00-12-34", "expected 01- and a MAC"),
            ("underlay.ca=ca.pem", "expected an absolute path"),
        ] {
            let e = parse(line).expect_err(line);
            assert!(e.contains(wants), "{line}: {e}");
        }
    }
}
