//! Renders the host BIRD 2 configuration from [`BirdParams`].
//!
//! The template ships inside the binary; an operator may replace it with
//! `<override_dir>/bird.conf.j2`. Rendering is strict: a template that names an unknown
//! variable fails with the template and line instead of silently printing nothing.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::bgp::params::{BirdParams, BirdUplink};

/// File name of the template, embedded and in an override directory.
pub const TEMPLATE_NAME: &str = "bird.conf.j2";

pub const EMBEDDED_TEMPLATE: &str = include_str!("templates/bird.conf.j2");

/// Names the embedded template gives to its own protocols, tables and filters; an uplink must
/// not map onto one of them.
const FIXED_NAMES: &[&str] = &[
    "device1",
    "direct_lo",
    "kernel_host4",
    "kernel_host6",
    "bfd1",
    "tor_export4",
    "tor_export6",
    "tor_import4",
    "tor_import6",
    "calico",
    "calico_nh",
    "calico_igp4",
    "calico_igp6",
    "master4",
    "master6",
];

/// BIRD keywords that are plausible as logical names; BIRD rejects them as protocol names.
const KEYWORDS: &[&str] = &[
    "all",
    "as",
    "babel",
    "bfd",
    "bgp",
    "debug",
    "define",
    "device",
    "direct",
    "else",
    "export",
    "false",
    "filter",
    "function",
    "if",
    "import",
    "include",
    "interface",
    "ipv4",
    "ipv6",
    "kernel",
    "local",
    "log",
    "neighbor",
    "net",
    "no",
    "none",
    "off",
    "on",
    "ospf",
    "pipe",
    "proto",
    "protocol",
    "rip",
    "router",
    "source",
    "static",
    "table",
    "template",
    "then",
    "true",
    "yes",
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("bird params: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("reading template override {path}: {source}")]
    Override { path: PathBuf, source: io::Error },
    #[error("template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        /// `embedded bird.conf.j2` or the override's path.
        template: String,
        line: Option<usize>,
        message: String,
    },
}

/// Maps a logical or kernel name onto a BIRD symbol: lower case, `[a-z0-9_]`, not starting
/// with a digit (`underlay-host` -> `underlay_host`, `1tor` -> `p_1tor`).
pub fn bird_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "p_");
    }
    out
}

/// A BIRD name the embedded template or BIRD itself claims (validation refuses uplinks
/// that map onto one, with the profile's line and column).
pub fn reserved_identifier(id: &str) -> bool {
    FIXED_NAMES.contains(&id) || KEYWORDS.contains(&id)
}

/// BIRD protocol name of an uplink's session for one family: `tor_a` (IPv4), `tor_a_v6`.
pub fn session_name(uplink: &BirdUplink, v6: bool) -> String {
    let base = bird_identifier(&uplink.name);
    if v6 {
        format!("{base}_v6")
    } else {
        base
    }
}

/// BIRD protocol name of the Calico session.
pub const CALICO_PROTOCOL: &str = "calico";

/// Every BGP protocol to the ToRs the rendered config contains, in config order: what the
/// readiness gate waits on.
pub fn uplink_sessions(p: &BirdParams) -> Vec<String> {
    sessions(p).into_iter().map(|s| s.name).collect()
}

/// Renders the configuration; `override_dir/bird.conf.j2`, when present, replaces the embedded
/// template.
pub fn render(p: &BirdParams, override_dir: Option<&Path>) -> Result<String, RenderError> {
    let ctx = context(p)?;
    let (source, label) = match override_dir.map(|d| d.join(TEMPLATE_NAME)) {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Override {
                path: path.clone(),
                source,
            })?;
            (text, path.display().to_string())
        }
        _ => (
            EMBEDDED_TEMPLATE.to_string(),
            format!("embedded {TEMPLATE_NAME}"),
        ),
    };
    render_template(&label, source, &ctx)
}

/// Renders with a template the caller already read (the engine reads the
/// override below `--root` during observation, keeping planning pure):
/// `Some((label, text))` replaces the embedded template.
pub fn render_with(p: &BirdParams, template: Option<(&str, &str)>) -> Result<String, RenderError> {
    let ctx = context(p)?;
    match template {
        Some((label, text)) => render_template(label, text.to_string(), &ctx),
        None => render_template(
            &format!("embedded {TEMPLATE_NAME}"),
            EMBEDDED_TEMPLATE.to_string(),
            &ctx,
        ),
    }
}

fn render_template(label: &str, source: String, ctx: &Context) -> Result<String, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    let template_error = |e: minijinja::Error| RenderError::Template {
        template: label.to_string(),
        line: e.line(),
        message: e.to_string(),
    };
    env.add_template_owned(TEMPLATE_NAME, source)
        .map_err(template_error)?;
    env.get_template(TEMPLATE_NAME)
        .and_then(|t| t.render(ctx))
        .map_err(template_error)
}

#[derive(Serialize)]
struct Context {
    router_id: String,
    local_asn: u32,
    host_table_name: String,
    kernel_table_id: u32,
    table4: String,
    table6: Option<String>,
    service4: String,
    service4_net: String,
    service6: Option<String>,
    service6_net: Option<String>,
    uplink_match4: String,
    uplink_match6: String,
    sessions: Vec<Session>,
    timers: Timers,
    bfd: Option<Bfd>,
    graceful_restart: bool,
    pod_set4: Option<String>,
    pod_set6: Option<String>,
    calico: Option<Calico>,
}

#[derive(Serialize)]
struct Session {
    name: String,
    uplink: String,
    family: &'static str,
    ifname: String,
    local: Option<String>,
    peer: String,
    peer_asn: u32,
    password: Option<String>,
}

#[derive(Serialize)]
struct Timers {
    hold: u16,
    keepalive: u16,
    connect_delay: u16,
    connect_retry: u16,
    error_wait_min: u16,
    error_wait_max: u16,
}

#[derive(Serialize)]
struct Bfd {
    interfaces: String,
    interval_ms: u32,
    multiplier: u8,
}

#[derive(Serialize)]
struct Calico {
    name: &'static str,
    family: &'static str,
    table: String,
    igp_table: String,
    nh_static: &'static str,
    local: String,
    local_port: Option<u16>,
    peer: String,
    peer_host: String,
    peer_port: u16,
    peer_asn: u32,
    pod_set: Option<String>,
    export_default: bool,
    default_net: &'static str,
    uplink_match: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RenderError {
    RenderError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A value BIRD reads between double quotes: its lexer has no escapes.
fn quotable(field: &str, s: &str) -> Result<(), RenderError> {
    if s.is_empty() || s.contains(['"', '\n', '\r', '\0']) {
        return Err(invalid(
            field,
            "must be non-empty and contain no double quote or line break",
        ));
    }
    Ok(())
}

fn sessions(p: &BirdParams) -> Vec<Session> {
    let mut out = Vec::new();
    for u in &p.uplinks {
        if let Some(peer) = u.peer_v4 {
            out.push(Session {
                name: session_name(u, false),
                uplink: u.name.clone(),
                family: "ipv4",
                ifname: u.ifname.clone(),
                local: u.local_v4.map(|a| a.to_string()),
                peer: peer.to_string(),
                peer_asn: u.peer_asn,
                password: u.password.clone(),
            });
        }
    }
    if p.service_ipv6.is_some() {
        for u in &p.uplinks {
            if let Some(peer) = u.peer_v6 {
                out.push(Session {
                    name: session_name(u, true),
                    uplink: u.name.clone(),
                    family: "ipv6",
                    ifname: u.ifname.clone(),
                    local: u.local_v6.map(|a| a.to_string()),
                    peer: peer.to_string(),
                    peer_asn: u.peer_asn,
                    password: u.password.clone(),
                });
            }
        }
    }
    out
}

fn proto_match(sessions: &[Session], family: &str) -> String {
    let names: Vec<String> = sessions
        .iter()
        .filter(|s| s.family == family)
        .map(|s| format!("proto = \"{}\"", s.name))
        .collect();
    if names.is_empty() {
        "false".to_string()
    } else {
        names.join(" || ")
    }
}

/// BIRD prefix set of every listed range and its more-specifics, e.g. `[ 10.244.0.0/16+ ]`.
fn prefix_set(nets: &[IpNet], v6: bool) -> Option<String> {
    let items: Vec<String> = nets
        .iter()
        .filter(|n| matches!(n, IpNet::V6(_)) == v6)
        .map(|n| format!("{}+", n.trunc()))
        .collect();
    (!items.is_empty()).then(|| format!("[ {} ]", items.join(", ")))
}

fn validate(p: &BirdParams) -> Result<(), RenderError> {
    if p.service_ipv4.prefix_len() != 32 {
        return Err(invalid("service_ipv4", "must be a /32"));
    }
    if let Some(v6) = p.service_ipv6 {
        if v6.prefix_len() != 128 {
            return Err(invalid("service_ipv6", "must be a /128"));
        }
    }
    if matches!(p.host_table_id, 0 | 253..=255) {
        return Err(invalid(
            "host_table_id",
            format!(
                "{} is reserved (0 unspec, 253 default, 254 main, 255 local)",
                p.host_table_id
            ),
        ));
    }
    if p.local_asn == 0 {
        return Err(invalid("local_asn", "must not be 0"));
    }
    let t = p.timers;
    if t.hold < 3 || t.keepalive == 0 || t.keepalive >= t.hold {
        return Err(invalid(
            "timers",
            format!(
                "need hold >= 3 and 0 < keepalive < hold (got hold {}, keepalive {})",
                t.hold, t.keepalive
            ),
        ));
    }
    if t.connect_retry == 0 || t.error_wait_min == 0 || t.error_wait_min > t.error_wait_max {
        return Err(invalid(
            "timers",
            "need connect_retry > 0 and 0 < error_wait_min <= error_wait_max",
        ));
    }
    if let Some(b) = p.bfd {
        if b.interval_ms == 0 || b.multiplier == 0 {
            return Err(invalid("bfd", "interval_ms and multiplier must be > 0"));
        }
    }
    if p.uplinks.is_empty() {
        return Err(invalid("uplinks", "at least one uplink is needed"));
    }
    let table = bird_identifier(&p.host_table_name);
    let mut seen = BTreeSet::from([format!("{table}4"), format!("{table}6")]);
    for (i, u) in p.uplinks.iter().enumerate() {
        let field = |f: &str| format!("uplinks[{i}] ({}).{f}", u.name);
        quotable(&field("name"), &u.name)?;
        quotable(&field("ifname"), &u.ifname)?;
        if let Some(pw) = &u.password {
            quotable(&field("password"), pw)?;
        }
        if u.peer_asn == 0 {
            return Err(invalid(field("peer_asn"), "must not be 0"));
        }
        if u.peer_v4.is_none() && u.peer_v6.is_none() {
            return Err(invalid(field("peer_v4"), "an uplink needs a peer address"));
        }
        if u.peer_v6.is_some() && p.service_ipv6.is_none() {
            return Err(invalid(
                field("peer_v6"),
                "an IPv6 session needs service_ipv6 (the source of IPv6 host routes)",
            ));
        }
        let id = bird_identifier(&u.name);
        if reserved_identifier(&id) {
            return Err(invalid(
                field("name"),
                format!("maps to BIRD name {id}, which is reserved; choose another name"),
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid(
                field("name"),
                format!(
                    "maps to BIRD name {id}, which another uplink or the host table already uses"
                ),
            ));
        }
    }
    for s in sessions(p) {
        if !seen.insert(s.name.clone()) && s.family == "ipv6" {
            return Err(invalid(
                "uplinks",
                format!("IPv6 session name {} collides with an uplink name", s.name),
            ));
        }
    }
    if let Some(c) = &p.calico {
        if c.local_address.is_ipv4() != c.peer_address.is_ipv4() {
            return Err(invalid(
                "calico",
                "local_address and peer_address must be of one family",
            ));
        }
        if c.local_address == c.peer_address {
            return Err(invalid(
                "calico",
                "local_address and peer_address must differ (BIRD rejects a next hop equal to the neighbour's address)",
            ));
        }
        if c.peer_asn == 0 {
            return Err(invalid("calico.peer_asn", "must not be 0"));
        }
        if c.local_address.is_ipv6() && p.service_ipv6.is_none() {
            return Err(invalid(
                "calico",
                "an IPv6 Calico session needs service_ipv6",
            ));
        }
    }
    Ok(())
}

fn context(p: &BirdParams) -> Result<Context, RenderError> {
    validate(p)?;
    let table = bird_identifier(&p.host_table_name);
    let table4 = format!("{table}4");
    let table6 = p.service_ipv6.map(|_| format!("{table}6"));
    let sessions = sessions(p);
    let uplink_match4 = proto_match(&sessions, "ipv4");
    let uplink_match6 = proto_match(&sessions, "ipv6");
    let pod_set4 = prefix_set(&p.pod_cidrs, false);
    let pod_set6 = prefix_set(&p.pod_cidrs, true);
    let bfd = p.bfd.map(|b| {
        let ifnames: BTreeSet<&str> = p.uplinks.iter().map(|u| u.ifname.as_str()).collect();
        Bfd {
            interfaces: ifnames
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", "),
            interval_ms: b.interval_ms,
            multiplier: b.multiplier,
        }
    });
    let calico = p.calico.as_ref().map(|c| {
        let v6 = c.peer_address.is_ipv6();
        let peer_host = match c.peer_address {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        };
        Calico {
            name: CALICO_PROTOCOL,
            family: if v6 { "ipv6" } else { "ipv4" },
            table: if v6 {
                table6.clone().unwrap_or_default()
            } else {
                table4.clone()
            },
            igp_table: if v6 { "calico_igp6" } else { "calico_igp4" }.to_string(),
            nh_static: "calico_nh",
            local: c.local_address.to_string(),
            local_port: c.local_port,
            peer: c.peer_address.to_string(),
            peer_host,
            peer_port: c.peer_port,
            peer_asn: c.peer_asn,
            pod_set: if v6 {
                pod_set6.clone()
            } else {
                pod_set4.clone()
            },
            export_default: c.export_default,
            default_net: if v6 { "::/0" } else { "0.0.0.0/0" },
            uplink_match: if v6 {
                uplink_match6.clone()
            } else {
                uplink_match4.clone()
            },
        }
    });
    Ok(Context {
        router_id: p.router_id.to_string(),
        local_asn: p.local_asn,
        host_table_name: p.host_table_name.clone(),
        kernel_table_id: p.host_table_id,
        table4,
        table6,
        service4: p.service_ipv4.addr().to_string(),
        service4_net: p.service_ipv4.trunc().to_string(),
        service6: p.service_ipv6.map(|n| n.addr().to_string()),
        service6_net: p.service_ipv6.map(|n| n.trunc().to_string()),
        uplink_match4,
        uplink_match6,
        sessions,
        timers: Timers {
            hold: p.timers.hold,
            keepalive: p.timers.keepalive,
            connect_delay: p.timers.connect_delay,
            connect_retry: p.timers.connect_retry,
            error_wait_min: p.timers.error_wait_min,
            error_wait_max: p.timers.error_wait_max,
        },
        bfd,
        graceful_restart: p.graceful_restart,
        pod_set4,
        pod_set6,
        calico,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::fixtures;

    /// Where the golden files live; `UPDATE_GOLDEN=1 cargo test` rewrites them.
    const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bgp/testdata");

    fn golden(name: &str) -> &'static str {
        match name {
            "two_uplinks_v4.conf" => include_str!("testdata/two_uplinks_v4.conf"),
            "with_v6.conf" => include_str!("testdata/with_v6.conf"),
            "with_calico.conf" => include_str!("testdata/with_calico.conf"),
            "calico_export_default.conf" => include_str!("testdata/calico_export_default.conf"),
            "bfd_off.conf" => include_str!("testdata/bfd_off.conf"),
            other => panic!("no golden file {other}"),
        }
    }

    #[test]
    fn golden_configs() {
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for (name, p) in fixtures::variants() {
            let text = render(&p, None).unwrap();
            if update {
                std::fs::write(Path::new(GOLDEN_DIR).join(name), &text).unwrap();
            } else {
                assert_eq!(text, golden(name), "{name} differs from its golden file");
            }
        }
    }

    #[test]
    fn deterministic_with_header() {
        for (name, p) in fixtures::variants() {
            let a = render(&p, None).unwrap();
            let b = render(&p.clone(), None).unwrap();
            assert_eq!(a, b, "{name}");
            assert!(a.starts_with("# generated by underlay; do not edit\n"));
        }
    }

    #[test]
    fn never_syncs_main_and_merges_paths() {
        for (name, p) in fixtures::variants() {
            let text = render(&p, None).unwrap();
            assert!(!text.contains("kernel table 254"), "{name}");
            let kernels = text.matches("protocol kernel").count();
            assert_eq!(
                text.matches("kernel table 1001;").count(),
                kernels,
                "{name}"
            );
            assert_eq!(text.matches("merge paths on;").count(), kernels, "{name}");
        }
    }

    #[test]
    fn identifiers() {
        assert_eq!(bird_identifier("underlay-host"), "underlay_host");
        assert_eq!(bird_identifier("tor-a"), "tor_a");
        assert_eq!(bird_identifier("ToR.B 2"), "tor_b_2");
        assert_eq!(bird_identifier("1tor"), "p_1tor");
        assert_eq!(bird_identifier(""), "p_");
        assert_eq!(bird_identifier("rack7/tor-ä"), "rack7_tor__");
        let p = fixtures::with_v6();
        assert_eq!(
            uplink_sessions(&p),
            ["tor_a", "tor_b", "tor_a_v6", "tor_b_v6"]
        );
    }

    #[test]
    fn password_in_config_not_in_debug() {
        let p = fixtures::two_uplinks_v4();
        assert!(render(&p, None).unwrap().contains("password \"s3cret\";"));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn rejects_what_bird_cannot_express() {
        type Edit = fn(&mut BirdParams);
        let cases: Vec<(&str, Edit)> = vec![
            ("password", |p| p.uplinks[0].password = Some("a\"b".into())),
            ("name", |p| p.uplinks[1].name = "tor_a".into()),
            ("name", |p| p.uplinks[1].name = "kernel".into()),
            ("name", |p| p.uplinks[1].name = "underlay-host4".into()),
            ("host_table_id", |p| p.host_table_id = 254),
            ("service_ipv4", |p| {
                p.service_ipv4 = "10.9.0.0/24".parse().unwrap()
            }),
            ("peer_v6", |p| {
                p.uplinks[0].peer_v6 = Some("fe80::1".parse().unwrap())
            }),
            ("timers", |p| p.timers.keepalive = 9),
            ("uplinks", |p| p.uplinks.clear()),
        ];
        for (field, edit) in cases {
            let mut p = fixtures::with_calico();
            edit(&mut p);
            match render(&p, None) {
                Err(RenderError::Invalid { field: f, .. }) => {
                    assert!(f.contains(field), "{f} should name {field}")
                }
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn strict_undefined_names_template_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TEMPLATE_NAME),
            "# ok\nrouter id {{ router_id }};\n{{ no_such_var }}\n",
        )
        .unwrap();
        let e = render(&fixtures::two_uplinks_v4(), Some(dir.path())).unwrap_err();
        match &e {
            RenderError::Template { template, line, .. } => {
                assert!(template.ends_with("bird.conf.j2"), "{template}");
                assert_eq!(*line, Some(3));
            }
            other => panic!("expected Template, got {other:?}"),
        }
        assert!(e.to_string().contains("line 3"), "{e}");
        // Attribute lookups on known objects are strict too.
        std::fs::write(dir.path().join(TEMPLATE_NAME), "{{ timers.nope }}\n").unwrap();
        assert!(matches!(
            render(&fixtures::two_uplinks_v4(), Some(dir.path())),
            Err(RenderError::Template { line: Some(1), .. })
        ));
    }

    #[test]
    fn override_replaces_embedded_and_missing_override_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = fixtures::two_uplinks_v4();
        assert_eq!(
            render(&p, Some(dir.path())).unwrap(),
            render(&p, None).unwrap()
        );
        std::fs::write(
            dir.path().join(TEMPLATE_NAME),
            "router id {{ router_id }};\n",
        )
        .unwrap();
        assert_eq!(
            render(&p, Some(dir.path())).unwrap(),
            "router id 10.9.0.1;\n"
        );
    }
}

/// The config with every `password "…"` replaced by `password "<redacted>"`:
/// for anything a person or a log may see (`render bird`, BIRD's error
/// excerpts). The file BIRD reads keeps the real value.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.find("password \"") {
            Some(start) => {
                let open = start + "password \"".len();
                let close = line[open..].find('"').map_or(line.len(), |c| open + c);
                out.push_str(&line[..open]);
                out.push_str("<redacted>");
                out.push_str(&line[close..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn passwords_are_redacted_and_nothing_else_changes() {
        let text =
            "protocol bgp tor_a {\n  password \"s3cr\\x65t\";\n  neighbor 10.0.0.0 as 65001;\n}\n";
        let r = super::redact(text);
        assert!(!r.contains("s3cr"), "{r}");
        assert!(r.contains("  password \"<redacted>\";\n"), "{r}");
        assert!(r.contains("neighbor 10.0.0.0 as 65001;"));
        assert_eq!(r.lines().count(), text.lines().count());
    }
}
