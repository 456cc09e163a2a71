//! Turns TOML and serde errors into messages a person can act on: the key
//! path (found from the text when the parser gives none), what was found,
//! what is expected, and an example that fixes it. No Rust type names reach
//! the user (`expected u8`, `struct NicInput`, `untagged enum`).

use std::collections::HashMap;

use super::{Problem, Source};
use crate::desired::types::shown;

/// What a key takes, in words, and a line that would be accepted.
struct Hint {
    expected: &'static str,
    example: &'static str,
}

const fn h(expected: &'static str, example: &'static str) -> Hint {
    Hint { expected, example }
}

/// Keys by path with array indices dropped (`uplinks[1].nic` → `uplinks.nic`).
fn hint(path: &str) -> Option<Hint> {
    Some(match path {
        "version" => h("the profile schema version, 1", "version = 1"),
        "description" => h("a string", "description = \"flat L3 ECMP\""),
        "routing" => h("a table", "[routing]"),
        "routing.protocol" => h("a protocol number 5–255", "protocol = 211"),
        "routing.allow_felix_table_ids" => h("true or false", "allow_felix_table_ids = false"),
        "routing.tables" => h("an array of tables", "[[routing.tables]] with name and id"),
        "routing.tables.name" => h("a table name", "name = \"underlay-host\""),
        "routing.tables.id" => h("a table id above 255", "id = 1001"),
        "routing.rules" => h(
            "an array of tables",
            "[[routing.rules]] with priority and table",
        ),
        "routing.rules.priority" => h("a rule priority 1–32765", "priority = 30000"),
        "routing.rules.table" => h("a table name (or main)", "table = \"underlay-host\""),
        "routing.rules.suppress_prefixlength" => {
            h("a prefix length 0–32", "suppress_prefixlength = 0")
        }
        "pods" => h("a table", "[pods]"),
        "pods.cidrs" => h("an array of CIDRs", "cidrs = [\"10.244.0.0/16\"]"),
        "pods.cidrs.?" | "pods.cidrs.item" => h("a CIDR", "\"10.244.0.0/16\""),
        "pods.encapsulation" => h("one of none, ipip, vxlan", "encapsulation = \"none\""),
        "pods.zones" => h("a table of zone = CIDR", "az1 = \"10.244.0.0/17\""),
        "uplinks.mtu" => h("an MTU 1280–65535", "mtu = 9000"),
        "sysctl" | "sysctl.global" | "sysctl.uplink" => {
            h("a table of quoted keys", "\"net.ipv4.ip_forward\" = 1")
        }
        "bgp" => h("a table", "[bgp] with host_table"),
        "bgp.host_table" => h(
            "the name of one of routing.tables",
            "host_table = \"underlay-host\"",
        ),
        "bgp.config_path" => h("an absolute path", "config_path = \"/etc/bird/bird.conf\""),
        "bgp.control_socket" => h(
            "an absolute path",
            "control_socket = \"/run/bird/bird.ctl\"",
        ),
        "bgp.templates_dir" => h(
            "an absolute path",
            "templates_dir = \"/etc/underlay/templates\"",
        ),
        "bgp.hold_time" => h("0 (no hold timer) or 3–65535 seconds", "hold_time = 9"),
        "bgp.keepalive" => h("1–65535 seconds, below hold_time", "keepalive = 3"),
        "bgp.connect_retry" => h("1–65535 seconds", "connect_retry = 5"),
        "bgp.graceful_restart" => h("true or false", "graceful_restart = true"),
        "bgp.bfd" => h("a table", "[bgp.bfd]"),
        "bgp.bfd.enabled" | "bgp.calico.enabled" | "nat.guard.enabled" => {
            h("true or false", "enabled = true")
        }
        "bgp.bfd.interval_ms" => h("10–10000 milliseconds", "interval_ms = 100"),
        "bgp.bfd.multiplier" => h("1–255", "multiplier = 3"),
        "bgp.calico" => h("a table", "[bgp.calico]"),
        "bgp.calico.host_address" => h("an IP address", "host_address = \"127.0.0.1\""),
        "bgp.calico.calico_address" => h("an IP address", "calico_address = \"127.0.0.2\""),
        "bgp.calico.calico_port" => h("a port 1–65535 other than 179", "calico_port = 1179"),
        "bgp.calico.calico_asn" => h("an ASN", "calico_asn = 64512"),
        "bgp.calico.export_default" => h("true or false", "export_default = false"),
        "bgp.readiness" => h("a table", "[bgp.readiness]"),
        "bgp.readiness.min_paths" => h("1 or more", "min_paths = 2"),
        "bgp.readiness.timeout_s" => h("seconds, 1 or more", "timeout_s = 60"),
        "nat" => h("a table", "[nat]"),
        "nat.mode" => h("one of scope-link, snat, none", "mode = \"scope-link\""),
        "nat.guard" => h("a table", "[nat.guard]"),
        "nat.guard.mark" => h("the masquerade mark bits", "mark = 0x4000"),
        "nat.guard.ipip" => h("true or false", "ipip = true"),
        "nat.guard.vxlan_port" => h("a UDP port 1–65535", "vxlan_port = 4789"),
        "hostname" => h("an RFC 1123 host name", "hostname = \"node-a1\""),
        "zone" => h("a zone label", "zone = \"az1\""),
        "rack" => h("a rack label", "rack = \"r01\""),
        "asn" => h("our ASN", "asn = 65101"),
        "service_ipv4" => h("an IPv4 host prefix", "service_ipv4 = \"10.10.0.11/32\""),
        "service_ipv6" => h("an IPv6 host prefix", "service_ipv6 = \"fd00:10::11/128\""),
        "uplinks" => h("an array of tables, one per ToR", "[[uplinks]]"),
        "uplinks.name" => h("a logical name", "name = \"tor-a\""),
        "uplinks.nic" => h(
            "a NIC match",
            "nic = { name = \"eth0\" } or nic = { mac = \"52:54:00:12:34:56\" }",
        ),
        "uplinks.nic.name" => h("an interface name", "nic = { name = \"eth0\" }"),
        "uplinks.nic.mac" => h("a MAC address", "nic = { mac = \"52:54:00:12:34:56\" }"),
        "uplinks.ipv4" => h(
            "our transit address and the ToR's",
            "ipv4 = { address = \"172.30.0.1/31\", peer = \"172.30.0.0\" }",
        ),
        "uplinks.ipv4.address" => h("an IPv4 /31 or /30", "address = \"172.30.0.1/31\""),
        "uplinks.ipv4.peer" => h("the ToR's IPv4 address", "peer = \"172.30.0.0\""),
        "uplinks.ipv6" => h(
            "our transit address and the ToR's",
            "ipv6 = { address = \"fd00:30::1/127\", peer = \"fd00:30::\" }",
        ),
        "uplinks.ipv6.address" => h("an IPv6 prefix /64–/127", "address = \"fd00:30::1/127\""),
        "uplinks.ipv6.peer" => h("the ToR's IPv6 address", "peer = \"fd00:30::\""),
        "uplinks.peer_asn" => h("the ToR's ASN", "peer_asn = 65001"),
        "uplinks.password_file" => h(
            "an absolute path",
            "password_file = \"/etc/underlay/secrets/tor-a\"",
        ),
        _ if path.starts_with("pods.zones.") => {
            h("a CIDR inside pods.cidrs", "az1 = \"10.244.0.0/17\"")
        }
        _ => return None,
    })
}

/// `uplinks[1].nic.mac` → `uplinks.nic.mac`.
fn schema_path(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Serde's names for what it wanted, in words.
fn expected_words(serde: &str) -> String {
    let s = serde.trim();
    let words = match s {
        "u8" => "a whole number 0–255",
        "u16" => "a whole number 0–65535",
        "u32" => "a whole number 0–4294967295",
        "u64" | "i64" | "i32" | "usize" => "a whole number",
        "a boolean" | "bool" => "true or false",
        "a string" | "string" => "a string",
        "a sequence" | "sequence" => "an array",
        "a map" | "map" => "a table",
        _ if s.starts_with("struct ") => "a table",
        _ if s.contains("network address") => "an address with its prefix length, like 10.0.0.0/16",
        _ if s.contains("address") => "an IP address",
        _ if s.starts_with("one of ") || s.starts_with('`') => return s.replace('`', ""),
        _ => "a value of the documented type",
    };
    words.into()
}

/// What TOML text at a span is, for "found …".
fn found_words(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "nothing".into();
    }
    let first = t.lines().next().unwrap_or("").trim();
    if first.starts_with('[') && t.contains('\n') {
        return format!("the table {}", shown(first));
    }
    if t.contains('\n') {
        return format!("{} …", shown(first));
    }
    shown(t)
}

/// Builds the problem for a parser or serde error. `path` is serde's key
/// path (empty for syntax errors: then it is read off the text).
pub(super) fn problem(src: &Source, path: String, e: &toml::de::Error) -> Problem {
    let span = e.span().unwrap_or(0..0);
    let raw = e.message().trim().to_string();
    let found = match src.text.get(span.clone()) {
        Some(t) if !t.trim().is_empty() => found_words(t),
        // A parser error points between characters: show what follows.
        _ => {
            let rest = src.text.get(span.start..).unwrap_or("");
            match rest.lines().next().map(str::trim) {
                Some(l) if !l.is_empty() => shown(l),
                _ if rest.trim().is_empty() => "the end of the file".into(),
                _ => "the end of the line".into(),
            }
        }
    };
    let token = src.text.get(span.clone()).unwrap_or("").trim().to_string();
    let mut key = if path.is_empty() {
        locate_key(&src.text, span.start)
    } else {
        path
    };
    // TOML hands datetimes to serde as a one-key table.
    let raw = if raw.contains("$__toml_private_datetime") {
        key = key.replace(".$__toml_private_datetime", "");
        "invalid type: datetime, expected a value of the documented type".to_string()
    } else if raw.contains("wanted string or table") || raw.contains("wanted exactly 1 element") {
        "invalid type: wrong type, expected a string".to_string()
    } else {
        raw
    };
    let message = if let Some(field) = between(&raw, "missing field `", "`") {
        key = join(&key, field);
        match hint(&schema_path(&key)) {
            Some(h) => format!(
                "missing; expected {}: add it, e.g. {}",
                h.expected, h.example
            ),
            None => "missing; expected this key: add it".into(),
        }
    } else if let Some(field) = between(&raw, "unknown field `", "`") {
        let valid: Vec<&str> = raw
            .split_once(", expected ")
            .map(|(_, rest)| {
                rest.split(", ")
                    .map(|f| f.trim_matches(|c| c == '`' || c == ' '))
                    .collect()
            })
            .unwrap_or_default();
        let valid: Vec<&str> = valid
            .iter()
            .flat_map(|v| v.split(" or "))
            .map(|v| v.trim_start_matches("one of ").trim_matches('`'))
            .filter(|v| !v.is_empty())
            .collect();
        let guess = closest(field, &valid)
            .map(|g| format!(" (did you mean `{g}`?)"))
            .unwrap_or_default();
        let expected = if valid.is_empty() {
            "expected no keys here".to_string()
        } else {
            format!("expected one of: {}", valid.join(", "))
        };
        format!(
            "unknown key `{}`{guess}; {expected}; remove it or fix its spelling",
            shown(field)
        )
    } else if let Some(variant) = between(&raw, "unknown variant `", "`") {
        let expected = raw
            .split_once(", expected ")
            .map(|(_, r)| r.replace("one of ", "").replace('`', ""))
            .unwrap_or_default();
        let example = hint(&schema_path(&key))
            .map(|h| format!(", e.g. {}", h.example))
            .unwrap_or_default();
        format!(
            "found \"{}\", expected one of: {expected}{example}",
            shown(variant)
        )
    } else if raw.starts_with("invalid type:")
        || raw.starts_with("invalid value:")
        || raw.starts_with("invalid length")
    {
        let serde_expected = raw.rsplit_once(", expected ").map_or("", |(_, e)| e);
        let h = hint(&schema_path(&key));
        let expected = h.as_ref().map_or_else(
            || expected_words(serde_expected),
            |h| h.expected.to_string(),
        );
        let example = h
            .map(|h| format!(", e.g. {}", h.example))
            .unwrap_or_default();
        format!("found {found}, expected {expected}{example}")
    } else if raw.starts_with("duplicate key") || raw.starts_with("duplicate field") {
        format!(
            "`{}` is set twice; expected each key once: remove one of them",
            shown(&key)
        )
    } else if raw.contains("invalid IP address syntax") || raw.contains("invalid IP") {
        address_message(&key, &found)
    } else if raw.starts_with("found ") {
        // One of our own TryFrom messages (found …, expected …): keep it.
        single_line(&raw)
    } else {
        syntax_message(&key, &raw, &found, &token)
    };
    src.problem(key, &span, message)
}

fn syntax_message(key: &str, raw: &str, found: &str, token: &str) -> String {
    let what = single_line(raw);
    let sysctl = key.starts_with("sysctl");
    let bare_word = token.starts_with(|c: char| c.is_ascii_alphabetic())
        && !token.contains(['=', '"', '[', '{', ' '])
        && !matches!(token, "true" | "false" | "inf" | "nan");
    if !sysctl
        && bare_word
        && (raw.contains("float") || raw.contains("integer") || raw.contains("quoted"))
    {
        let last = key.rsplit('.').next().unwrap_or(key);
        let last = last.split('[').next().unwrap_or(last);
        return format!(
            "found {found} without quotes; expected a quoted string: {last} = \"{}\"",
            shown(token)
        );
    }
    if let Some(h) = hint(&schema_path(key)).filter(|_| !sysctl && !token.starts_with('[')) {
        return format!(
            "found {found} ({what}); expected {}, e.g. {}",
            h.expected, h.example
        );
    }
    let fix = if sysctl {
        "quote sysctl keys: \"net.ipv4.conf.{uplink}.rp_filter\" = 2"
    } else if raw.contains("unquoted key") {
        "a key of letters, digits, '-' and '_' before `=`, e.g. hostname = \"node-a1\""
    } else if raw.contains("quoted") || raw.contains("string") {
        "put strings in double quotes: hostname = \"node-a1\""
    } else {
        "one `key = value` per line, strings in quotes, [table] and [[array]] headers closed"
    };
    format!("TOML syntax: {what}; found {found}; expected valid TOML here: {fix}")
}

/// For an address key given a value that does not parse: an address without
/// its prefix length is the common case and gets the exact fix.
fn address_message(key: &str, found: &str) -> String {
    let bare = found.trim_matches('"');
    let schema = schema_path(key);
    let (length, example) = match schema.as_str() {
        "service_ipv4" => ("/32", "10.10.0.11/32"),
        "service_ipv6" => ("/128", "fd00:10::11/128"),
        "uplinks.ipv4.address" => ("/31", "172.30.0.1/31"),
        "uplinks.ipv6.address" => ("/127", "fd00:30::1/127"),
        _ if schema.starts_with("pods.") => ("prefix length", "10.244.0.0/16"),
        _ => ("", ""),
    };
    if let Ok(addr) = bare.parse::<std::net::IpAddr>() {
        if !length.is_empty() {
            let fix = if length.starts_with('/') {
                format!("add the {length}: \"{addr}{length}\"")
            } else {
                format!("add the {length}, e.g. \"{example}\"")
            };
            return format!(
                "found {found} without a prefix length; expected an address with one: {fix}"
            );
        }
    }
    let expected = hint(&schema).map_or("an IP address", |h| h.expected);
    let eg = if example.is_empty() {
        hint(&schema)
            .map(|h| h.example.to_string())
            .unwrap_or_default()
    } else {
        format!("\"{example}\"")
    };
    let eg = if eg.is_empty() {
        String::new()
    } else {
        format!(", e.g. {eg}")
    };
    format!("found {found}, which is not a valid address; expected {expected}{eg}")
}

fn single_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    shown_long(&parts.join("; "))
}

/// Messages of our own may be longer than one echoed value, but not unbounded.
fn shown_long(s: &str) -> String {
    if s.chars().count() > 400 {
        let cut: String = s.chars().take(400).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The valid key nearest to a misspelt one (at most two edits away).
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (distance(key, v), *v))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, v)| v)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The key path at a byte offset, read off the text: the enclosing
/// `[table]` / `[[array]]` header (arrays counted) and the key on the line.
/// Used when the parser stops before serde can say where it was.
pub(super) fn locate_key(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut header = String::new();
    for l in text[..line_start].lines() {
        if let Some(h) = header_path(l, &mut arrays) {
            header = h;
        }
    }
    let line = &text[line_start..line_end];
    if let Some(h) = header_path(line, &mut arrays) {
        // `[` alone (a header cut short) names nothing: say where it is.
        return match (h.is_empty(), header.is_empty()) {
            (false, _) => h,
            (true, false) => header,
            (true, true) => "(top level)".into(),
        };
    }
    let key = line_key(line);
    if key.is_empty() {
        return if header.is_empty() {
            "(top level)".into()
        } else {
            header
        };
    }
    // Inside an inline table: `nic = { name = "a", name = "b" }`.
    let col = offset - line_start;
    let inner = line
        .get(..col)
        .and_then(|b| b.rfind('{'))
        .and_then(|brace| {
            let token = line_key(&line[col..]);
            (brace < col && !token.is_empty() && token != key).then_some(token)
        });
    let key = match inner {
        Some(t) => format!("{key}.{t}"),
        None => key,
    };
    if header.starts_with("sysctl") && !key.starts_with('"') {
        // A sysctl key is one name with dots in it, quoted.
        let raw: String = line
            .trim_start()
            .chars()
            .take_while(|c| *c != '=' && !c.is_whitespace())
            .collect();
        return format!("{header}.\"{}\"", shown(&raw));
    }
    join(&header, &key)
}

fn header_path(line: &str, arrays: &mut HashMap<String, usize>) -> Option<String> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix("[[") {
        let name = rest.split("]]").next().unwrap_or(rest).trim().to_string();
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c))
        {
            return Some(format!("[[{}]]", shown(&name)));
        }
        let n = arrays.entry(name.clone()).or_insert(0);
        *n += 1;
        return Some(format!("{name}[{}]", *n - 1));
    }
    let rest = t.strip_prefix('[')?;
    let name = rest.split(']').next().unwrap_or(rest).trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
    if !name.chars().all(bare) {
        // Not a table name TOML could read: show the header as written.
        return Some(format!("[{}]", shown(name)));
    }
    // A sub-table of the latest array element: [[uplinks]] then [uplinks.nic].
    let parent = arrays
        .iter()
        .filter(|(a, _)| name.starts_with(&format!("{a}.")))
        .max_by_key(|(a, _)| a.len());
    Some(match parent {
        Some((a, n)) => format!("{a}[{}]{}", n - 1, &name[a.len()..]),
        None => name.to_string(),
    })
}

/// The key at the start of `line` (quoted keys keep their quotes).
fn line_key(line: &str) -> String {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix('"') {
        return match rest.find('"') {
            Some(end) => format!("\"{}\"", shown(&rest[..end])),
            None => String::new(),
        };
    }
    let key: String = t
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
        .collect();
    shown(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_off_the_text() {
        let t = "version = 1\n[routing]\nprotocol = 1\n[[routing.tables]]\nname = \"a\"\n[[routing.tables]]\nid = x\n";
        assert_eq!(
            locate_key(t, t.find("protocol").unwrap()),
            "routing.protocol"
        );
        assert_eq!(
            locate_key(t, t.find("id = x").unwrap() + 5),
            "routing.tables[1].id"
        );
        let t = "[[uplinks]]\nname = \"a\"\n[[uplinks]]\nnic = { name = \"a\", name = \"b\" }\n";
        assert_eq!(
            locate_key(t, t.rfind("name").unwrap()),
            "uplinks[1].nic.name"
        );
        let t = "[[uplinks]]\n[[uplinks]]\n[uplinks.nic]\nmac = 1\n";
        assert_eq!(locate_key(t, t.find("mac").unwrap()), "uplinks[1].nic.mac");
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        assert_eq!(closest("tabel", &["tables", "rules"]), Some("tables"));
        assert_eq!(closest("zzzzzz", &["tables"]), None);
    }

    #[test]
    fn serde_type_names_become_words() {
        for t in [
            "u8",
            "u16",
            "u32",
            "struct NicInput",
            "a sequence",
            "IPv4 network address",
        ] {
            let w = expected_words(t);
            assert!(
                !w.contains("struct") && !w.contains("u8") && !w.contains("Input"),
                "{w}"
            );
        }
    }
}
