//! Validation of the `[bgp]` section: the host BIRD's table, timers, BFD,
//! the Calico tier and the readiness gates.

use std::net::{IpAddr, Ipv4Addr};

use super::input::{BgpInput, HostInput};
use super::{Problem, Source};
use crate::bgp::names;
use crate::desired::{Bfd, Bgp, BirdLog, CalicoPeer, GracefulRestart, Table, TableId};

pub const DEFAULT_CONFIG: &str = "/etc/bird/bird.conf";
pub const DEFAULT_SOCKET: &str = "/run/bird/bird.ctl";
pub const DEFAULT_TEMPLATES: &str = "/etc/underlay/templates";

fn absolute(
    src: &Source,
    key: &str,
    v: &Option<toml::Spanned<String>>,
    default: &str,
    p: &mut Vec<Problem>,
) -> std::path::PathBuf {
    let kind = if key.ends_with("_dir") {
        super::paths::Kind::Dir
    } else {
        super::paths::Kind::File
    };
    v.as_ref()
        .and_then(|s| super::paths::logical(src, key, s, kind, default, p))
        .unwrap_or_else(|| default.into())
}

/// A POSIX user or group name as `useradd` accepts it.
fn posix_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn owner(
    src: &Source,
    v: Option<&toml::Spanned<String>>,
    p: &mut Vec<Problem>,
) -> crate::desired::FileOwner {
    let mut o = crate::desired::FileOwner::bird();
    let Some(v) = v else {
        return o;
    };
    match v.get_ref().split_once(':') {
        Some((u, g)) if posix_name(u) && posix_name(g) => {
            o.user = u.into();
            o.group = g.into();
        }
        _ => p.push(src.problem(
            "bgp.config_owner",
            &v.span(),
            format!(
                "found '{}', expected user:group as BIRD runs, e.g. \"bird:bird\" (Debian's bird.service runs `bird -u bird -g bird` and reads its config after dropping privileges)",
                crate::profile::clip(v.get_ref())
            ),
        )),
    }
    o
}

/// BIRD's limits on what we announce: the graceful restart capability's
/// restart time is 12 bits, the long-lived stale time 24 bits (BIRD 2.0.12
/// accepts larger values and sends them truncated).
const GR_TIME_MAX: u32 = 4095;
const LLGR_STALE_MAX: u32 = 16_777_215;

/// `host_src`/`host`: the host facts, whose uplink and NIC names end up in
/// BIRD's config; `uplinks`: how many uplinks validated.
pub(super) fn validate(
    src: &Source,
    b: &BgpInput,
    tables: &[Table],
    host_src: &Source,
    host: &HostInput,
    uplinks: usize,
    p: &mut Vec<Problem>,
) -> Option<Bgp> {
    let host_asn = host.asn;
    let before = p.len();
    let name = b.host_table.get_ref();
    let host_table = tables.iter().find(|t| &t.name == name).cloned();
    if host_table.is_none() {
        let why = if TableId::builtin(name).is_some() {
            format!("found '{name}', a kernel table; expected a table of its own for the host BIRD (Calico's BIRD owns main)")
        } else {
            let known: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
            format!(
                "found '{}', which is not one of routing.tables; expected one of: {}",
                crate::desired::types::shown(name),
                crate::desired::types::shown(&known.join(", "))
            )
        };
        p.push(src.problem("bgp.host_table", &b.host_table.span(), why));
    }
    let num = |key: &str,
               v: &Option<toml::Spanned<u16>>,
               default: u16,
               ok: fn(u16) -> bool,
               expect: &str,
               p: &mut Vec<Problem>| {
        match v {
            Some(s) if !ok(*s.get_ref()) => {
                p.push(src.problem(
                    key,
                    &s.span(),
                    format!("found {}, expected {expect}", s.get_ref()),
                ));
                default
            }
            Some(s) => *s.get_ref(),
            None => default,
        }
    };
    let hold_time = num(
        "bgp.hold_time",
        &b.hold_time,
        9,
        |v| v == 0 || v >= 3,
        "0 (no hold timer) or 3–65535 seconds",
        p,
    );
    let bfd_on = b.bfd.as_ref().is_none_or(|f| f.enabled);
    let keepalive = if hold_time == 0 {
        // BIRD sends no keepalives without a hold timer and refuses any
        // keepalive time then; only BFD can notice a dead peer.
        if let Some(k) = b.keepalive.as_ref().filter(|k| *k.get_ref() != 0) {
            // Named at the hold time: that is the value that rules keepalives out.
            let span = b.hold_time.as_ref().map_or_else(|| k.span(), |h| h.span());
            p.push(src.problem(
                "bgp.hold_time",
                &span,
                format!(
                    "found 0 (no hold timer) with keepalive = {}, expected a hold time of 3 or more, or no keepalive (BIRD refuses keepalives without a hold timer); remove bgp.keepalive or set a hold time",
                    k.get_ref()
                ),
            ));
        }
        if !bfd_on {
            let span = b.hold_time.as_ref().map_or(0..0, |h| h.span());
            p.push(src.problem(
                "bgp.hold_time",
                &span,
                "found 0 (no hold timer) with BFD disabled: nothing would ever notice a dead ToR; enable [bgp.bfd] or set a hold time such as 9",
            ));
        }
        0
    } else {
        // Unset: a third of the hold time, as BIRD and RFC 4271 suggest.
        let default = (hold_time / 3).max(1);
        let keepalive = num(
            "bgp.keepalive",
            &b.keepalive,
            default,
            |v| v >= 1,
            "1 or more seconds",
            p,
        );
        if let Some(k) = b.keepalive.as_ref().filter(|_| keepalive >= hold_time) {
            p.push(src.problem(
                "bgp.keepalive",
                &k.span(),
                format!("found {keepalive}, expected less than hold_time ({hold_time}), typically a third of it"),
            ));
        }
        keepalive
    };
    let connect_retry = num(
        "bgp.connect_retry",
        &b.connect_retry,
        5,
        |v| v >= 1,
        "1 or more seconds",
        p,
    );

    let bfd = match &b.bfd {
        Some(f) if !f.enabled => None,
        f => {
            let interval_ms = match f.as_ref().and_then(|f| f.interval_ms.as_ref()) {
                Some(i) if !(10..=10_000).contains(i.get_ref()) => {
                    p.push(src.problem(
                        "bgp.bfd.interval_ms",
                        &i.span(),
                        format!("found {}, expected 10–10000 ms", i.get_ref()),
                    ));
                    100
                }
                Some(i) => *i.get_ref(),
                None => 100,
            };
            let multiplier = match f.as_ref().and_then(|f| f.multiplier.as_ref()) {
                Some(m) if *m.get_ref() == 0 => {
                    p.push(src.problem(
                        "bgp.bfd.multiplier",
                        &m.span(),
                        "found 0, expected 1–255 (3 is usual)",
                    ));
                    3
                }
                Some(m) => *m.get_ref(),
                None => 3,
            };
            Some(Bfd {
                interval_ms,
                multiplier,
            })
        }
    };

    let calico = match &b.calico {
        Some(c) if !c.enabled => None,
        c => {
            let host_address = c
                .as_ref()
                .and_then(|c| c.host_address.as_ref())
                .map_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), |a| *a.get_ref());
            let calico_address = c
                .as_ref()
                .and_then(|c| c.calico_address.as_ref())
                .map_or(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), |a| *a.get_ref());
            // Mixed families are refused where the Calico section is read.
            if host_address.is_ipv6() && host.service_ipv6.is_none() {
                let span = c
                    .as_ref()
                    .and_then(|c| c.host_address.as_ref().or(c.calico_address.as_ref()))
                    .map_or(0..0, |a| a.span());
                p.push(src.problem(
                    "bgp.calico.host_address",
                    &span,
                    format!(
                        "found {host_address} without service_ipv6, expected an IPv4 address or a host with service_ipv6: an IPv6 Calico session needs it (the next hop of the pod routes it learns); add service_ipv6 or use IPv4 addresses"
                    ),
                ));
            }
            if host_address == calico_address {
                let span = c
                    .as_ref()
                    .and_then(|c| c.calico_address.as_ref().or(c.host_address.as_ref()))
                    .map_or(0..0, |a| a.span());
                p.push(src.problem(
                    "bgp.calico.calico_address",
                    &span,
                    format!(
                        "found {calico_address} for both ends; expected two different session addresses \
                         (BIRD rejects a next hop equal to the neighbour's address), e.g. 127.0.0.1 and 127.0.0.2"
                    ),
                ));
            } else if host_address.is_ipv4() != calico_address.is_ipv4() {
                let span = c
                    .as_ref()
                    .and_then(|c| c.host_address.as_ref().or(c.calico_address.as_ref()))
                    .map_or(0..0, |a| a.span());
                p.push(src.problem(
                    "bgp.calico.host_address",
                    &span,
                    format!(
                        "found {host_address} and calico_address {calico_address}; expected one address family for both ends \
                         of the session, e.g. 127.0.0.1 and 127.0.0.2 (or ::1 and an IPv6 calico_address)"
                    ),
                ));
            }
            let calico_port = match c.as_ref().and_then(|c| c.calico_port.as_ref()) {
                Some(port) if *port.get_ref() == 179 || *port.get_ref() == 0 => {
                    p.push(src.problem(
                        "bgp.calico.calico_port",
                        &port.span(),
                        format!(
                            "found {}, expected a port other than 179 (the host BIRD's), e.g. 1179",
                            port.get_ref()
                        ),
                    ));
                    1179
                }
                Some(port) => *port.get_ref(),
                None => 1179,
            };
            Some(CalicoPeer {
                host_address,
                calico_address,
                calico_port,
                calico_asn: c.as_ref().and_then(|c| c.calico_asn).unwrap_or(host_asn),
                export_default: c.as_ref().is_some_and(|c| c.export_default),
            })
        }
    };

    let readiness = b.readiness.as_ref();
    // A role profile wants N paths; a host with fewer uplinks (one ToR in
    // maintenance, say) can have at most one per uplink.
    let min_paths = match readiness.and_then(|r| r.min_paths.as_ref()) {
        Some(m) if *m.get_ref() == 0 => {
            p.push(src.problem(
                "bgp.readiness.min_paths",
                &m.span(),
                "found 0, expected 1 or more (usually 2)",
            ));
            1
        }
        Some(m) => (*m.get_ref()).min(uplinks.max(1) as u32),
        None => uplinks.clamp(1, 2) as u32,
    };
    let timeout_s = match readiness.and_then(|r| r.timeout_s.as_ref()) {
        Some(t) if *t.get_ref() == 0 => {
            p.push(src.problem(
                "bgp.readiness.timeout_s",
                &t.span(),
                "found 0, expected a timeout in seconds, e.g. 60",
            ));
            60
        }
        Some(t) => *t.get_ref(),
        None => 60,
    };
    let config_path = absolute(src, "bgp.config_path", &b.config_path, DEFAULT_CONFIG, p);
    let control_socket = absolute(
        src,
        "bgp.control_socket",
        &b.control_socket,
        DEFAULT_SOCKET,
        p,
    );
    let templates_dir = absolute(
        src,
        "bgp.templates_dir",
        &b.templates_dir,
        DEFAULT_TEMPLATES,
        p,
    );

    let config_owner = owner(src, b.config_owner.as_ref(), p);
    let graceful_restart = graceful_restart(src, b, p);
    let log = log(src, b, p);
    names_in_bird(src, b, host_src, host, p);

    if p.len() != before {
        return None;
    }
    Some(Bgp {
        host_table: host_table?,
        config_path,
        config_owner,
        control_socket,
        templates_dir,
        hold_time,
        keepalive,
        connect_retry,
        graceful_restart,
        bfd,
        log,
        calico,
        min_paths,
        timeout_s,
    })
}

fn graceful_restart(src: &Source, b: &BgpInput, p: &mut Vec<Problem>) -> Option<GracefulRestart> {
    let on = b.graceful_restart.as_ref().is_none_or(|g| *g.get_ref());
    let llgr = b.long_lived_graceful_restart.as_ref();
    let llgr_on = llgr.is_some_and(|l| *l.get_ref());
    let restart_time = match &b.graceful_restart_time {
        Some(t) if !(1..=GR_TIME_MAX).contains(t.get_ref()) => {
            p.push(src.problem(
                "bgp.graceful_restart_time",
                &t.span(),
                format!(
                    "found {}, expected 1–{GR_TIME_MAX} seconds (the graceful restart capability's restart time is 12 bits); 120 is usual",
                    t.get_ref()
                ),
            ));
            120
        }
        Some(t) => *t.get_ref() as u16,
        None => 120,
    };
    let stale = match &b.long_lived_stale_time {
        Some(s) if !(1..=LLGR_STALE_MAX).contains(s.get_ref()) => {
            p.push(src.problem(
                "bgp.long_lived_stale_time",
                &s.span(),
                format!(
                    "found {}, expected 1–{LLGR_STALE_MAX} seconds (24 bits in the capability)",
                    s.get_ref()
                ),
            ));
            3600
        }
        Some(s) => *s.get_ref(),
        None => 3600,
    };
    if !on {
        if let Some(l) = llgr.filter(|_| llgr_on) {
            p.push(src.problem(
                "bgp.long_lived_graceful_restart",
                &l.span(),
                "found true with graceful_restart = false: long-lived graceful restart extends graceful restart; enable graceful_restart or drop this key",
            ));
        }
        if let Some(t) = &b.graceful_restart_time {
            p.push(src.problem(
                "bgp.graceful_restart_time",
                &t.span(),
                "has no effect with graceful_restart = false; drop it or enable graceful_restart",
            ));
        }
        return None;
    }
    if !llgr_on {
        if let Some(s) = &b.long_lived_stale_time {
            p.push(src.problem(
                "bgp.long_lived_stale_time",
                &s.span(),
                "has no effect unless long_lived_graceful_restart = true; drop it, or enable LLGR knowing that a ToR whose hold timer expires then keeps its routes for its restart time",
            ));
        }
    }
    Some(GracefulRestart {
        restart_time,
        long_lived_stale_time: llgr_on.then_some(stale),
    })
}

fn log(src: &Source, b: &BgpInput, p: &mut Vec<Problem>) -> BirdLog {
    let Some(l) = &b.log else {
        return BirdLog::Auto;
    };
    match l.get_ref().as_str() {
        "syslog" => BirdLog::Syslog,
        "stderr" => BirdLog::Stderr,
        path if path.starts_with('/') && names::quotable(path) && !path.ends_with('/') => {
            BirdLog::File(path.into())
        }
        other => {
            p.push(src.problem(
                "bgp.log",
                &l.span(),
                format!(
                    "found '{}', expected \"syslog\", \"stderr\" or an absolute file path (below --root, no '\"'), e.g. /var/log/bird/bird.log",
                    other.escape_debug()
                ),
            ));
            BirdLog::Auto
        }
    }
}

/// Uplink names become BIRD protocol names and NIC names are quoted in
/// BIRD's config: refuse here what BIRD would refuse there.
fn names_in_bird(
    src: &Source,
    b: &BgpInput,
    host_src: &Source,
    host: &HostInput,
    p: &mut Vec<Problem>,
) {
    let uplinks: Vec<names::UplinkNames> = host
        .uplinks
        .iter()
        .map(|u| names::UplinkNames {
            name: u.name.get_ref(),
            v4: u.ipv4.is_some(),
            v6: u.ipv6.is_some(),
        })
        .collect();
    for problem in names::check(b.host_table.get_ref(), &uplinks) {
        let message = problem.message(&uplinks);
        match problem.uplink() {
            Some(i) => p.push(host_src.problem(
                format!("uplinks[{i}].name"),
                &host.uplinks[i].name.span(),
                message,
            )),
            None => p.push(src.problem("bgp.host_table", &b.host_table.span(), message)),
        }
    }
    for (i, u) in host.uplinks.iter().enumerate() {
        if let Some(n) = &u.nic.get_ref().name {
            if !names::quotable(n.as_str()) {
                p.push(host_src.problem(
                    format!("uplinks[{i}].nic.name"),
                    &u.nic.span(),
                    format!(
                        "found '{}', expected an interface name without '\"': BIRD's config quotes interface names and cannot escape a quote",
                        n.as_str().escape_debug()
                    ),
                ));
            }
        }
    }
}
