//! Shared by the profile tests: the shipped role profile and example host
//! facts (real files, so the tests follow them), and the rules every input
//! error must satisfy.

#![allow(dead_code)]

use underlay::profile::{load_str, Problem, ProfileError};

pub const ROLE: &str = include_str!("../../../profiles/l3-ecmp-calico.toml");
pub const HOST: &str = include_str!("../../../profiles/examples/host.toml");

/// The shipped files plus every optional key they leave out.
pub fn role_full() -> String {
    ROLE.replace(
        "control_socket = \"/run/bird/bird.ctl\"\n",
        "control_socket = \"/run/bird/bird.ctl\"\ntemplates_dir = \"/etc/underlay/templates\"\n",
    )
    .replacen("version = 1\n", "version = 1\ndescription = \"flat\"\n", 1)
    .replace("protocol = 211\n", "protocol = 211\nallow_felix_table_ids = false\n")
        + "\n[nat]\nmode = \"scope-link\"\n\n[nat.guard]\nenabled = true\nmark = 0x4000\nipip = true\nvxlan_port = 4789\n"
}

pub fn host_full() -> String {
    HOST.replace(
        "peer_asn = 65001\n",
        "peer_asn = 65001\nmtu = 9000\npassword_file = \"/etc/underlay/secrets/tor-a\"\n",
    )
}

/// Longest message a problem may carry (the loader caps at 600 characters).
pub const MAX_MESSAGE: usize = 601;

pub fn load(role: &str, host: &str) -> Result<underlay::desired::Desired, Vec<Problem>> {
    match load_str("role.toml", role, "host.toml", host) {
        Ok(d) => Ok(d),
        Err(ProfileError::Invalid(p)) => Err(p),
        Err(e) => panic!("unexpected error {e}"),
    }
}

pub fn problems(role: &str, host: &str) -> Vec<Problem> {
    match load(role, host) {
        Ok(_) => panic!("expected a validation error"),
        Err(p) => p,
    }
}

/// Replaces the first occurrence of `from` and checks it was there.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// Words that mean a Rust type or serde internals leaked into a message.
const INTERNAL: &[&str] = &[
    "struct ",
    "enum ",
    "untagged",
    "variant of",
    "Input",
    "Spanned",
    "serde",
    "$__",
    "expected u8",
    "expected u16",
    "expected u32",
    "expected u64",
    "expected i64",
    "invalid type:",
    "invalid value:",
    "a sequence",
    "a map",
    "IpNet",
    "Ipv4Net",
    "Ipv6Net",
];

/// The rules of the brief for one input error: file, key path, a position,
/// found/expected, no internal names, bounded length.
pub fn assert_well_formed(p: &Problem, case: &str) {
    let faults = faults(p);
    assert!(faults.is_empty(), "{case}: {}: {p}", faults.join(", "));
}

/// What is wrong with one problem report (empty: nothing).
pub fn faults(p: &Problem) -> Vec<String> {
    let mut out = Vec::new();
    let file = p.file.to_str().unwrap_or("");
    if file != "role.toml" && file != "host.toml" {
        out.push(format!("file {file:?}"));
    }
    if p.key.is_empty() {
        out.push("no key path".into());
    }
    // serde_path_to_error's marker for a key it could not name (a header
    // shown as written, `[...]`, may hold a `?` the person typed).
    let header = p.key.starts_with('[');
    if !header && (p.key == "?" || p.key.ends_with(".?") || p.key.contains(".?.")) {
        out.push(format!("key path {:?}", p.key));
    }
    if p.line < 1 || p.column < 1 {
        out.push("no position".into());
    }
    let m = &p.message;
    if !m.contains("expected") {
        out.push("nothing of what is expected".into());
    }
    if !["found", "missing", "unknown key", "set twice"]
        .iter()
        .any(|w| m.contains(w))
    {
        out.push("nothing of what was found".into());
    }
    for w in INTERNAL {
        if m.contains(w) {
            out.push(format!("internal name {w:?}"));
        }
    }
    if m.chars().count() > MAX_MESSAGE {
        out.push(format!("message of {} chars", m.chars().count()));
    }
    if m.chars().any(|c| c.is_control()) {
        out.push("raw control character".into());
    }
    out
}
