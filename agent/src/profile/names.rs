//! Names a person chooses: the hostname (the Kubernetes node name), zone and
//! rack (node label values), pod zone names, and uplink names (which become
//! BIRD protocol names).

use toml::Spanned;

use super::input::HostInput;
use super::{Problem, Source};
use crate::desired::types::shown;

/// Longest uplink name: BIRD symbols hold 64 characters, and the IPv6
/// session appends `_v6`; 32 leaves room and reads well in output.
pub(super) const UPLINK_NAME_MAX: usize = 32;

/// RFC 1123 host name, lower case (Kubernetes node names are): labels of
/// 1–63 characters `[a-z0-9-]`, no leading or trailing hyphen, 253 in all.
pub(super) fn hostname(src: &Source, h: &Spanned<String>, p: &mut Vec<Problem>) {
    let s = h.get_ref();
    let why = if s.is_empty() {
        Some("it is empty".to_string())
    } else if s.len() > 253 {
        Some(format!("it has {} characters (at most 253)", s.len()))
    } else {
        s.split('.').find_map(|label| {
            if label.is_empty() {
                Some("it has an empty label (a leading, trailing or double dot)".into())
            } else if label.len() > 63 {
                Some(format!(
                    "label '{}' has {} characters (at most 63)",
                    shown(label),
                    label.len()
                ))
            } else if label.bytes().any(|b| b.is_ascii_uppercase()) {
                Some(format!(
                    "label '{}' has upper case (Kubernetes node names are lower case)",
                    shown(label)
                ))
            } else if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                Some(format!(
                    "label '{}' has characters other than a–z, 0–9 and '-'",
                    shown(label)
                ))
            } else if label.starts_with('-') || label.ends_with('-') {
                Some(format!("label '{}' starts or ends with '-'", shown(label)))
            } else {
                None
            }
        })
    };
    if let Some(why) = why {
        p.push(src.problem(
            "hostname",
            &h.span(),
            format!(
                "found '{}': {why}; expected an RFC 1123 name (labels of a–z, 0–9 and '-', dot-separated), e.g. node-a1",
                shown(s)
            ),
        ));
    }
}

/// A Kubernetes label value (zone, rack, pod zone): at most 63 characters
/// of `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
pub(super) fn label_problem(s: &str) -> Option<String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.is_empty() || s.len() > 63 {
        Some(format!("it has {} characters (1–63)", s.len()))
    } else if !s.chars().all(|c| alnum(c) || "._-".contains(c)) {
        Some("it has characters other than letters, digits, '.', '_' and '-'".into())
    } else if !s.starts_with(alnum) || !s.ends_with(alnum) {
        Some("it must start and end with a letter or digit".into())
    } else {
        None
    }
}

pub(super) fn label(src: &Source, key: &str, v: &Spanned<String>, p: &mut Vec<Problem>) {
    if let Some(why) = label_problem(v.get_ref()) {
        p.push(src.problem(
            key,
            &v.span(),
            format!(
                "found '{}': {why}; expected a Kubernetes label value (it becomes a node label), e.g. az1",
                shown(v.get_ref())
            ),
        ));
    }
}

/// Uplink names: short and `[A-Za-z0-9_-]`. With BGP, the BIRD names they
/// map to (`tor-a` and `tor_a` are one; IPv6 adds `tor_a_v6`) are checked
/// by `profile::bgp` together with the host table's.
pub(super) fn uplinks(src: &Source, host: &HostInput, p: &mut Vec<Problem>) {
    for (i, u) in host.uplinks.iter().enumerate() {
        let name = u.name.get_ref();
        let key = format!("uplinks[{i}].name");
        let valid = !name.is_empty()
            && name.len() <= UPLINK_NAME_MAX
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            p.push(src.problem(
                &key,
                &u.name.span(),
                format!(
                    "found '{}', expected a name of 1–{UPLINK_NAME_MAX} letters, digits, '-' and '_', e.g. tor-a",
                    shown(name)
                ),
            ));
            continue;
        }
        // With [bgp], the BIRD names this one maps to are checked by
        // profile::bgp (names_in_bird), with the host table's.
    }
}
