//! `[sysctl.global]` and `[sysctl.uplink]`: every key is a plain dotted (or
//! slash) name below /proc/sys, an uplink key lives in an interface's own
//! directory (`net.{ipv4,ipv6}.{conf,neigh}.{uplink}.NAME`), two spellings of
//! one key are a duplicate, and values are what sysctl.d can carry.

use std::collections::BTreeMap;

use toml::{Spanned, Value};

use super::input::RoleInput;
use super::{Problem, Source};
use crate::desired::types::shown;
use crate::desired::{SysctlKey, UplinkSysctl};

pub(super) type Sysctls = (Vec<(SysctlKey, String)>, Vec<(UplinkSysctl, String)>);

pub(super) fn sysctls(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) -> Sysctls {
    let mut global = Vec::new();
    let mut seen: BTreeMap<SysctlKey, String> = BTreeMap::new();
    for (k, v) in &role.sysctl.global {
        let path = key_path("global", k.get_ref());
        let value = value(src, "global", k, v, p);
        if matches!(v.get_ref(), Value::Table(_)) {
            continue;
        }
        if k.get_ref().contains(UplinkSysctl::PLACEHOLDER) {
            p.push(src.problem(
                path,
                &k.span(),
                format!(
                    "found '{}': a global key cannot use {{uplink}}; expected a key without it, \
                     or move this one to [sysctl.uplink]",
                    shown(k.get_ref())
                ),
            ));
            continue;
        }
        match SysctlKey::parse(k.get_ref()) {
            Err(e) => p.push(src.problem(path, &k.span(), e)),
            Ok(key) => {
                if let Some(first) = seen.get(&key) {
                    p.push(duplicate(src, path, k, first));
                    continue;
                }
                seen.insert(key.clone(), k.get_ref().clone());
                if let Some(value) = value {
                    global.push((key, value));
                }
            }
        }
    }
    let mut uplink = Vec::new();
    let mut seen: BTreeMap<UplinkSysctl, String> = BTreeMap::new();
    for (k, v) in &role.sysctl.uplink {
        let path = key_path("uplink", k.get_ref());
        let value = value(src, "uplink", k, v, p);
        if matches!(v.get_ref(), Value::Table(_)) {
            continue;
        }
        match UplinkSysctl::parse(k.get_ref()) {
            Err(e) => p.push(src.problem(path, &k.span(), e)),
            Ok(key) => {
                if let Some(first) = seen.get(&key) {
                    p.push(duplicate(src, path, k, first));
                    continue;
                }
                seen.insert(key.clone(), k.get_ref().clone());
                if let Some(value) = value {
                    uplink.push((key, value));
                }
            }
        }
    }
    (global, uplink)
}

fn key_path(table: &str, key: &str) -> String {
    format!("sysctl.{table}.\"{}\"", shown(key))
}

fn duplicate(src: &Source, path: String, k: &Spanned<String>, first: &str) -> Problem {
    src.problem(
        path,
        &k.span(),
        format!(
            "found '{}', the same key as '{}' (dotted and slash notation name one key); \
             expected each key once: keep one of them",
            shown(k.get_ref()),
            shown(first)
        ),
    )
}

/// The value as the kernel and sysctl.d take it, or a problem.
fn value(
    src: &Source,
    table: &str,
    k: &Spanned<String>,
    v: &Spanned<Value>,
    p: &mut Vec<Problem>,
) -> Option<String> {
    const EXPECTED: &str = "expected an integer, a boolean or a single-line string, e.g. = 1 or = \"4096 131072 6291456\"";
    let found = match v.get_ref() {
        Value::Integer(i) => return Some(i.to_string()),
        Value::Boolean(b) => return Some(u8::from(*b).to_string()),
        Value::String(s) => {
            let printable = s.chars().all(|c| c == '\t' || !c.is_control());
            let words: Vec<&str> = s.split_whitespace().collect();
            if printable && !words.is_empty() {
                return Some(words.join(" "));
            }
            format!("\"{}\"", shown(s))
        }
        Value::Table(t) => {
            // `net.ipv4.ip_forward = 1` unquoted: TOML made tables of it.
            let dotted = dotted_name(k.get_ref(), t);
            p.push(src.problem(
                key_path(table, &dotted.0),
                &k.span(),
                format!(
                    "found the unquoted key {}: TOML reads its dots as nested tables; \
                     expected a quoted key: \"{}\" = {}",
                    shown(&dotted.0),
                    shown(&dotted.0),
                    dotted.1
                ),
            ));
            return None;
        }
        Value::Float(f) => f.to_string(),
        Value::Array(_) => "an array".into(),
        Value::Datetime(d) => d.to_string(),
    };
    p.push(src.problem(
        key_path(table, k.get_ref()),
        &v.span(),
        format!("found {found}, {EXPECTED}"),
    ));
    None
}

/// The key a person wrote unquoted, rebuilt from the tables TOML made of it,
/// and its value (the first leaf).
fn dotted_name(first: &str, t: &toml::Table) -> (String, String) {
    let mut name = first.to_string();
    let mut t = t;
    loop {
        match t.iter().next() {
            Some((k, Value::Table(inner))) => {
                name.push('.');
                name.push_str(k);
                t = inner;
            }
            Some((k, v)) => {
                name.push('.');
                name.push_str(k);
                let v = v.to_string();
                return (name, shown(&v));
            }
            None => return (name, "1".into()),
        }
    }
}
