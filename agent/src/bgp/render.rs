//! Renders the host BIRD 2 configuration from [`BirdParams`].
//!
//! The template ships inside the binary; an operator may replace it with
//! `<templates_dir>/bird.conf.j2`, which the caller reads and passes in (no I/O here). Rendering is strict: a template that names an unknown
//! variable fails with the template and line instead of silently printing nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::bgp::names;
use crate::bgp::params::{BirdParams, BirdUplink, LogTarget};

pub use crate::bgp::names::bird_identifier;

/// File name of the template, embedded and in an override directory.
pub const TEMPLATE_NAME: &str = "bird.conf.j2";

pub const EMBEDDED_TEMPLATE: &str = include_str!("templates/bird.conf.j2");

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("bird params: {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("template {template}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        /// `embedded bird.conf.j2` or the override's path.
        template: String,
        line: Option<usize>,
        message: String,
    },
}

/// BIRD protocol name of an uplink's session for one family: `tor_a` (IPv4), `tor_a_v6`.
pub fn session_name(uplink: &BirdUplink, v6: bool) -> String {
    names::session_name(&uplink.name, v6)
}

/// BIRD protocol name of the Calico session.
pub const CALICO_PROTOCOL: &str = "calico";

/// Every BGP protocol to the ToRs the rendered config contains, in config order: what the
/// readiness gate waits on.
pub fn uplink_sessions(p: &BirdParams) -> Vec<String> {
    sessions(p).into_iter().map(|s| s.name).collect()
}

/// Renders the configuration. `template`, `Some((label, text))`, replaces the
/// embedded template: the caller reads the operator's override (the engine
/// does, through the system layer, below `--root`), so rendering stays pure.
pub fn render(p: &BirdParams, template: Option<(&str, &str)>) -> Result<String, RenderError> {
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
    graceful_restart: Option<GracefulRestart>,
    /// The `log` statement's target: `syslog`, `stderr` or a quoted path.
    log: String,
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
struct GracefulRestart {
    restart_time: u16,
    long_lived_stale_time: Option<u32>,
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
    if names::quotable(s) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be non-empty and contain no double quote or line break",
        ))
    }
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

/// Only what BIRD's syntax cannot express: symbols derived from names (the
/// rules of [`names`], which the profile validator applies to the same
/// names) and values BIRD reads between quotes. From a validated profile
/// only a kernel-resolved interface name (a NIC matched by MAC) or a password
/// file's content can still fail here. Semantic limits are the profile's, and
/// `bird -p` checks every rendered file before it is written.
fn validate(p: &BirdParams) -> Result<(), RenderError> {
    for (i, u) in p.uplinks.iter().enumerate() {
        let field = |f: &str| format!("uplinks[{i}] ({}).{f}", u.name);
        quotable(&field("name"), &u.name)?;
        quotable(&field("ifname"), &u.ifname)?;
        if let Some(pw) = &u.password {
            quotable(&field("password"), pw)?;
        }
    }
    if let LogTarget::File(path) = &p.log {
        quotable("log", path)?;
    }
    let v6 = p.service_ipv6.is_some();
    let uplinks: Vec<names::UplinkNames> = p
        .uplinks
        .iter()
        .map(|u| names::UplinkNames {
            name: &u.name,
            v4: u.peer_v4.is_some(),
            v6: v6 && u.peer_v6.is_some(),
        })
        .collect();
    if let Some(problem) = names::check(&p.host_table_name, &uplinks).first() {
        let field = match problem.uplink() {
            Some(i) => format!("uplinks[{i}] ({}).name", p.uplinks[i].name),
            None => "host_table_name".to_string(),
        };
        return Err(invalid(field, problem.message(&uplinks)));
    }
    Ok(())
}

fn context(p: &BirdParams) -> Result<Context, RenderError> {
    validate(p)?;
    let [table4, table6] = names::table_names(&p.host_table_name);
    let table6 = p.service_ipv6.map(|_| table6);
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
        graceful_restart: p.graceful_restart.map(|g| GracefulRestart {
            restart_time: g.restart_time,
            long_lived_stale_time: g.long_lived_stale_time,
        }),
        log: match &p.log {
            LogTarget::Syslog => "syslog".to_string(),
            LogTarget::Stderr => "stderr".to_string(),
            LogTarget::File(path) => format!("\"{path}\""),
        },
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
                std::fs::write(std::path::Path::new(GOLDEN_DIR).join(name), &text).unwrap();
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
            ("name", |p| p.uplinks[0].name = "hold".into()),
            ("ifname", |p| p.uplinks[0].ifname = "a\"b".into()),
            ("log", |p| p.log = LogTarget::File("/var/log/a\"b".into())),
            ("host_table_name", |p| p.host_table_name = "as".into()),
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
    fn hold_time_zero_renders_no_keepalive() {
        let mut p = fixtures::with_calico();
        p.timers.hold = 0;
        p.timers.keepalive = 0;
        let text = render(&p, None).unwrap();
        assert!(text.contains("  hold time 0;\n"), "{text}");
        assert!(!text.contains("keepalive time"), "{text}");
    }

    #[test]
    fn llgr_off_unless_asked_and_log_rendered() {
        let p = fixtures::two_uplinks_v4();
        let text = render(&p, None).unwrap();
        assert_eq!(text.matches("long lived graceful restart off;").count(), 2);
        assert_eq!(text.matches("graceful restart time 120;").count(), 2);
        assert!(text.contains("\nlog syslog all;\n"), "{text}");
        let mut p = fixtures::two_uplinks_v4();
        p.graceful_restart = Some(crate::bgp::params::GracefulRestartParams {
            restart_time: 60,
            long_lived_stale_time: Some(30),
        });
        p.log = LogTarget::File("/tmp/x/var/log/bird/bird.log".into());
        let text = render(&p, None).unwrap();
        assert_eq!(text.matches("long lived graceful restart on;").count(), 2);
        assert_eq!(text.matches("long lived stale time 30;").count(), 2);
        assert!(text.contains("log \"/tmp/x/var/log/bird/bird.log\" all;"));
        let text = render(&fixtures::bfd_off(), None).unwrap();
        assert_eq!(text.matches("  graceful restart off;").count(), 2);
        assert!(!text.contains("graceful restart time"));
    }

    #[test]
    fn strict_undefined_names_template_and_line() {
        let label = "/etc/underlay/templates/bird.conf.j2";
        let text = "# ok\nrouter id {{ router_id }};\n{{ no_such_var }}\n";
        let e = render(&fixtures::two_uplinks_v4(), Some((label, text))).unwrap_err();
        match &e {
            RenderError::Template { template, line, .. } => {
                assert_eq!(template, label);
                assert_eq!(*line, Some(3));
            }
            other => panic!("expected Template, got {other:?}"),
        }
        assert!(e.to_string().contains("line 3"), "{e}");
        // Attribute lookups on known objects are strict too.
        assert!(matches!(
            render(
                &fixtures::two_uplinks_v4(),
                Some((label, "{{ timers.nope }}\n"))
            ),
            Err(RenderError::Template { line: Some(1), .. })
        ));
    }

    #[test]
    fn a_given_template_replaces_the_embedded_one() {
        let p = fixtures::two_uplinks_v4();
        assert_eq!(
            render(&p, Some(("override", "router id {{ router_id }};\n"))).unwrap(),
            "router id 10.9.0.1;\n"
        );
        assert_eq!(
            render(&p, Some(("override", EMBEDDED_TEMPLATE))).unwrap(),
            render(&p, None).unwrap()
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
