//! Cross-checks that serde cannot express, and the merge of role profile and
//! host facts into [`Desired`]. Collects every problem before returning.

use std::collections::HashMap;

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::input::{HostInput, NicInput, RoleInput, TransitInput};
use super::paths::{Kind, Named};
use super::{addresses, names, paths, Problem, Source};
use crate::desired::types::shown;
use crate::desired::{
    Desired, Family, NicMatch, Pods, RuleSpec, Table, TableId, Transit, Uplink, UplinkSysctl,
};

const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=65535;

pub(super) fn validate(
    role_src: &Source,
    role: &RoleInput,
    host_src: &Source,
    host: &HostInput,
) -> Result<Desired, Vec<Problem>> {
    let mut p = Vec::new();

    let tables = tables(role_src, role, &mut p);
    let has_ipv6 = host.service_ipv6.is_some() || host.uplinks.iter().any(|u| u.ipv6.is_some());
    let rules = rules(role_src, role, &tables, has_ipv6, &mut p);
    let pods = pods(role_src, role, &mut p);
    let (sysctl_global, sysctl_uplink) = super::sysctl::sysctls(role_src, role, &mut p);
    let default_mtu = role
        .uplinks
        .mtu
        .as_ref()
        .and_then(|m| mtu(role_src, "uplinks.mtu", m, &mut p));

    names::hostname(host_src, &host.hostname, &mut p);
    let hostname = host.hostname.get_ref().clone();
    for (key, v) in [("zone", &host.zone), ("rack", &host.rack)] {
        if let Some(v) = v {
            names::label(host_src, key, v, &mut p);
        }
    }
    names::uplinks(host_src, host, &mut p);
    let service_ipv4 = *host.service_ipv4.get_ref();
    if let Some(why) = addresses::service_problem(IpAddr::V4(service_ipv4.addr())) {
        p.push(host_src.problem(
            "service_ipv4",
            &host.service_ipv4.span(),
            format!("found {service_ipv4}: {why}; expected the host's routable address, e.g. 10.10.0.11/32"),
        ));
    } else if service_ipv4.prefix_len() != 32 {
        p.push(host_src.problem(
            "service_ipv4",
            &host.service_ipv4.span(),
            format!(
                "found {service_ipv4}, expected a host prefix (/32): the service IP is one address on lo, e.g. {}/32",
                service_ipv4.addr()
            ),
        ));
    }
    let service_ipv6 = host.service_ipv6.as_ref().map(|s| {
        let v6 = *s.get_ref();
        if let Some(why) = addresses::service_problem(IpAddr::V6(v6.addr())) {
            p.push(host_src.problem(
                "service_ipv6",
                &s.span(),
                format!("found {v6}: {why}; expected the host's routable IPv6 address, e.g. fd00:10::11/128"),
            ));
        } else if v6.prefix_len() != 128 {
            p.push(host_src.problem(
                "service_ipv6",
                &s.span(),
                format!(
                    "found {v6}, expected a host prefix (/128), e.g. {}/128",
                    v6.addr()
                ),
            ));
        }
        v6
    });

    let uplinks = uplinks(host_src, host, default_mtu, &sysctl_uplink, &mut p);
    addresses::cross_checks(role_src, role, host_src, host, &mut p);
    addresses::pod_overlaps(role_src, role, &mut p);
    if role.bgp.is_some() && service_ipv6.is_none() {
        for (i, u) in host.uplinks.iter().enumerate() {
            if let Some(v6) = &u.ipv6 {
                p.push(host_src.problem(
                    format!("uplinks[{i}].ipv6"),
                    &v6.address.span(),
                    "found an IPv6 transit without service_ipv6; expected service_ipv6 too (the /128 an IPv6 BGP session announces): add service_ipv6 or drop the uplink's ipv6",
                ));
            }
        }
    }
    let bgp = role.bgp.as_ref().and_then(|b| {
        super::bgp::validate(role_src, b, &tables, host_src, host, uplinks.len(), &mut p)
    });
    // An IPv6 Calico session without service_ipv6: checked by profile::bgp.
    if uplinks.is_empty() && p.is_empty() {
        p.push(host_src.problem(
            "uplinks",
            &(0..0),
            "found no uplinks; expected at least one [[uplinks]] table (one per top-of-rack switch)",
        ));
    }

    if let Some(b) = &bgp {
        path_collisions(role_src, role, host_src, host, b, &uplinks, &mut p);
    }
    let nat = nat(role_src, role, &mut p);
    let join = super::join::validate(
        role_src,
        role.join.as_ref(),
        host_src,
        host.join.as_ref(),
        &super::join::HostIdentity {
            hostname: &hostname,
            zone: host.zone.as_ref(),
            rack: host.rack.as_ref(),
            node_ips: std::iter::once(IpAddr::V4(service_ipv4.addr()))
                .chain(service_ipv6.map(|v6| IpAddr::V6(v6.addr())))
                .collect(),
        },
        &pods,
        &mut p,
    );
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Desired {
        hostname,
        zone: host.zone.as_ref().map(|z| z.get_ref().clone()),
        rack: host.rack.as_ref().map(|r| r.get_ref().clone()),
        asn: host.asn,
        protocol: *role.routing.protocol.get_ref(),
        service_ipv4,
        service_ipv6,
        uplinks,
        tables,
        rules,
        pods,
        sysctl_global,
        sysctl_uplink,
        bgp,
        nat,
        join,
    })
}

fn nat(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) -> crate::desired::Nat {
    use super::input::NatModeInput;
    use crate::desired::Encapsulation;
    use crate::desired::{MarkGuard, NatMode};
    let overlay = role.pods.encapsulation != Encapsulation::None;
    let Some(n) = &role.nat else {
        return crate::desired::Nat {
            mode: NatMode::ScopeLink,
            guard: overlay.then(MarkGuard::default),
        };
    };
    let mode = match n.mode {
        NatModeInput::ScopeLink => NatMode::ScopeLink,
        NatModeInput::Snat => NatMode::Snat,
        NatModeInput::None => NatMode::None,
    };
    let g = n.guard.as_ref();
    let enabled = g.and_then(|g| g.enabled).unwrap_or(overlay);
    let mut guard = MarkGuard::default();
    if let Some(m) = g.and_then(|g| g.mark.as_ref()) {
        if m.get_ref().count_ones() == 0 {
            p.push(src.problem(
                "nat.guard.mark",
                &m.span(),
                "found 0, expected the masquerade mark bit(s), e.g. 0x4000 (kube-proxy's)",
            ));
        }
        guard.mark = *m.get_ref();
    }
    if let Some(ipip) = g.and_then(|g| g.ipip) {
        guard.ipip = ipip;
    }
    if let Some(port) = g.and_then(|g| g.vxlan_port.as_ref()) {
        if *port.get_ref() == 0 {
            p.push(src.problem(
                "nat.guard.vxlan_port",
                &port.span(),
                "found 0, expected the VXLAN UDP port (Calico and Linux: 4789)",
            ));
        }
        guard.vxlan_port = Some(*port.get_ref());
    }
    if mode == NatMode::Snat && role.pods.cidrs.is_empty() {
        p.push(src.problem(
            "nat.mode",
            &(0..0),
            "found mode snat without pods.cidrs; expected pods.cidrs too (snat translates pod egress to the service IP), or another mode",
        ));
    }
    crate::desired::Nat {
        mode,
        guard: enabled.then_some(guard),
    }
}

fn tables(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut by_id: HashMap<TableId, usize> = HashMap::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, t) in role.routing.tables.iter().enumerate() {
        let name = t.name.get_ref().as_str();
        let id = *t.id.get_ref();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !name.chars().all(|c| c.is_ascii_digit());
        if !valid_name {
            p.push(src.problem(
                format!("routing.tables[{i}].name"),
                &t.name.span(),
                format!("found '{}', expected a name of 1–64 letters, digits, '-' and '_' (not only digits), e.g. underlay-host", shown(name)),
            ));
        } else if TableId::builtin(name).is_some() {
            p.push(src.problem(
                format!("routing.tables[{i}].name"),
                &t.name.span(),
                format!(
                    "found '{name}', a kernel table; expected a table of your own, e.g. underlay-host"
                ),
            ));
        }
        if id.in_felix_range() && !role.routing.allow_felix_table_ids {
            p.push(src.problem(
                format!("routing.tables[{i}].id"),
                &t.id.span(),
                format!(
                    "found {id}, expected an id above 255: ids 1–250 are Calico Felix's route tables by default \
                     (set routing.allow_felix_table_ids = true only if Felix's routeTableRanges excludes it)"
                ),
            ));
        }
        if let Some(j) = by_id.insert(id, i) {
            p.push(src.problem(
                format!("routing.tables[{i}].id"),
                &t.id.span(),
                format!("found table id {id}, a duplicate: routing.tables[{j}] already uses it; expected an id of its own"),
            ));
        }
        if let Some(j) = by_name.insert(name, i) {
            p.push(src.problem(
                format!("routing.tables[{i}].name"),
                &t.name.span(),
                format!("found table name '{}', a duplicate: routing.tables[{j}] already uses it; expected a name of its own", shown(name)),
            ));
        }
        if valid_name {
            out.push(Table {
                name: name.to_string(),
                id,
            });
        }
    }
    out
}

fn rules(
    src: &Source,
    role: &RoleInput,
    tables: &[Table],
    has_ipv6: bool,
    p: &mut Vec<Problem>,
) -> Vec<RuleSpec> {
    let mut out = Vec::new();
    let mut by_prio: HashMap<u32, usize> = HashMap::new();
    for (i, r) in role.routing.rules.iter().enumerate() {
        let prio = r.priority.get_ref().get();
        if let Some(j) = by_prio.insert(prio, i) {
            p.push(src.problem(
                format!("routing.rules[{i}].priority"),
                &r.priority.span(),
                format!("found priority {prio}, a duplicate: routing.rules[{j}] already uses it; expected a priority of its own"),
            ));
        }
        if (32766..=32767).contains(&prio) {
            p.push(src.problem(
                format!("routing.rules[{i}].priority"),
                &r.priority.span(),
                format!("found {prio}, expected a priority below 32766 (32766/32767 are the kernel's main/default rules)"),
            ));
        }
        let name = r.table.get_ref();
        let table = match name.as_str() {
            "main" => Some(TableId::MAIN.get()),
            other => tables.iter().find(|t| t.name == other).map(|t| t.id.get()),
        };
        let Some(table) = table else {
            let known: Vec<&str> = std::iter::once("main")
                .chain(tables.iter().map(|t| t.name.as_str()))
                .collect();
            p.push(src.problem(
                format!("routing.rules[{i}].table"),
                &r.table.span(),
                format!(
                    "found '{}', which is not a table; expected one of: {}",
                    shown(name),
                    shown(&known.join(", "))
                ),
            ));
            continue;
        };
        let suppress = r.suppress_prefixlength.as_ref().map(|s| *s.get_ref());
        if let Some(s) = &r.suppress_prefixlength {
            if *s.get_ref() > 32 {
                p.push(src.problem(
                    format!("routing.rules[{i}].suppress_prefixlength"),
                    &s.span(),
                    format!(
                        "found {}, expected 0–32 (the rule is installed for IPv4 too)",
                        s.get_ref()
                    ),
                ));
            }
        }
        let families: &[Family] = if has_ipv6 {
            &[Family::Ipv4, Family::Ipv6]
        } else {
            &[Family::Ipv4]
        };
        for &family in families {
            out.push(RuleSpec {
                family,
                priority: prio,
                table,
                suppress_prefixlength: suppress,
            });
        }
    }
    out
}

fn pods(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) -> Pods {
    let mut cidrs = Vec::new();
    for (i, c) in role.pods.cidrs.iter().enumerate() {
        let net = *c.get_ref();
        if net.trunc() != net {
            p.push(src.problem(
                format!("pods.cidrs[{i}]"),
                &c.span(),
                format!(
                    "found {net}, expected a network address: did you mean {}?",
                    net.trunc()
                ),
            ));
        }
        cidrs.push(net);
    }
    let mut zones = Vec::new();
    for (zone, c) in &role.pods.zones {
        let net = *c.get_ref();
        if let Some(why) = names::label_problem(zone) {
            p.push(src.problem(
                format!("pods.zones.{}", shown(zone)),
                &c.span(),
                format!(
                    "found zone name '{}': {why}; expected a Kubernetes label value (hosts carry it as topology.kubernetes.io/zone), e.g. az1",
                    shown(zone)
                ),
            ));
        }
        if !cidrs.iter().any(|p: &IpNet| p.contains(&net)) {
            p.push(src.problem(
                format!("pods.zones.{}", shown(zone)),
                &c.span(),
                if cidrs.is_empty() {
                    format!("found {net}, expected a block inside one of pods.cidrs, which is empty: add the pod CIDR to pods.cidrs")
                } else {
                    format!(
                        "found {net}, expected a block inside one of pods.cidrs ({})",
                        fmt_list(&cidrs)
                    )
                },
            ));
        }
        zones.push((zone.clone(), net));
    }
    Pods {
        cidrs,
        encapsulation: role.pods.encapsulation,
        zones,
    }
}

fn fmt_list(v: &[IpNet]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn mtu(src: &Source, key: &str, m: &toml::Spanned<u32>, p: &mut Vec<Problem>) -> Option<u32> {
    if MTU_RANGE.contains(m.get_ref()) {
        Some(*m.get_ref())
    } else {
        p.push(src.problem(
            key,
            &m.span(),
            format!(
                "found {}, expected an MTU in {}–{}",
                m.get_ref(),
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ),
        ));
        None
    }
}

fn uplinks(
    src: &Source,
    host: &HostInput,
    default_mtu: Option<u32>,
    sysctl_uplink: &[(UplinkSysctl, String)],
    p: &mut Vec<Problem>,
) -> Vec<Uplink> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut nics: HashMap<NicMatch, usize> = HashMap::new();
    for (i, u) in host.uplinks.iter().enumerate() {
        let name = u.name.get_ref().as_str();
        if let Some(j) = names.insert(name, i) {
            p.push(src.problem(
                format!("uplinks[{i}].name"),
                &u.name.span(),
                format!(
                    "found '{}', which uplinks[{j}] already uses; expected a name of its own",
                    shown(name)
                ),
            ));
        }
        let nic = match u.nic.get_ref() {
            NicInput {
                name: Some(n),
                mac: None,
            } => Some(NicMatch::Name(n.clone())),
            NicInput {
                name: None,
                mac: Some(m),
            } => Some(NicMatch::Mac(*m)),
            _ => {
                p.push(src.problem(
                    format!("uplinks[{i}].nic"),
                    &u.nic.span(),
                    "found neither or both of nic.name and nic.mac; expected exactly one, e.g. nic = { name = \"eth0\" }",
                ));
                None
            }
        };
        if let (Some(NicMatch::Name(n)), Some((template, _))) = (&nic, sysctl_uplink.first()) {
            // A NIC matched by MAC is checked once it is found (plan::resolve).
            if let Err(e) = template.for_ifname(n.as_str()) {
                p.push(src.problem(
                    format!("uplinks[{i}].nic.name"),
                    &u.nic.span(),
                    format!("{e}; expected a NIC name that is a plain sysctl directory name"),
                ));
            }
        }
        if let Some(nic) = &nic {
            if let Some(j) = nics.insert(nic.clone(), i) {
                p.push(src.problem(
                    format!("uplinks[{i}].nic"),
                    &u.nic.span(),
                    format!("found NIC match {nic}, a duplicate: uplinks[{j}] already uses it; expected a NIC of its own per uplink"),
                ));
            }
        }
        let ipv4 = u.ipv4.as_ref().map(|t| transit_v4(src, i, t, p));
        let ipv6 = u.ipv6.as_ref().map(|t| transit_v6(src, i, t, p));
        if ipv4.is_none() && ipv6.is_none() {
            p.push(src.problem(
                format!("uplinks[{i}]"),
                &u.name.span(),
                "found no transit address; expected ipv4 = { address = \"172.30.0.1/31\", peer = \"172.30.0.0\" } and/or ipv6",
            ));
        }
        let mtu = u
            .mtu
            .as_ref()
            .and_then(|m| mtu(src, &format!("uplinks[{i}].mtu"), m, p))
            .or(default_mtu);
        if let Some(nic) = nic {
            out.push(Uplink {
                name: name.to_string(),
                nic,
                mtu,
                ipv4: ipv4.flatten(),
                ipv6: ipv6.flatten(),
                peer_asn: u.peer_asn,
                password_file: u.password_file.as_ref().and_then(|f| {
                    paths::logical(
                        src,
                        &format!("uplinks[{i}].password_file"),
                        f,
                        Kind::File,
                        &format!("/etc/underlay/secrets/{}.password", shown(name)),
                        p,
                    )
                }),
            });
        }
    }
    out
}

fn transit_v4(
    src: &Source,
    i: usize,
    t: &TransitInput<Ipv4Net, std::net::Ipv4Addr>,
    p: &mut Vec<Problem>,
) -> Option<Transit<Ipv4Net, std::net::Ipv4Addr>> {
    let addr = *t.address.get_ref();
    let peer = *t.peer.get_ref();
    let before = p.len();
    if let Some(why) = addresses::transit_problem(IpAddr::V4(addr.addr())) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv4.address"),
            &t.address.span(),
            format!("found {addr}: {why}; expected a unicast transit address, e.g. 172.30.0.1/31"),
        ));
    } else if let Some(why) = addresses::transit_problem(IpAddr::V4(peer)) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv4.peer"),
            &t.peer.span(),
            format!("found {peer}: {why}; expected the ToR's unicast address, e.g. 172.30.0.0"),
        ));
    } else if !matches!(addr.prefix_len(), 30 | 31) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv4.address"),
            &t.address.span(),
            format!(
                "found {addr}, expected a /31 or /30: a transit link is point-to-point (got /{})",
                addr.prefix_len()
            ),
        ));
    } else if addr.prefix_len() == 30
        && (addr.addr() == addr.network() || addr.addr() == addr.broadcast())
    {
        p.push(src.problem(
            format!("uplinks[{i}].ipv4.address"),
            &t.address.span(),
            format!("found {addr}, which is the network or broadcast address of its /30; expected .1 or .2 of the block"),
        ));
    } else if let Some(why) = peer_problem(IpNet::V4(addr), IpAddr::V4(peer)) {
        p.push(src.problem(format!("uplinks[{i}].ipv4.peer"), &t.peer.span(), why));
    } else if addr.prefix_len() == 30 && (peer == addr.network() || peer == addr.broadcast()) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv4.peer"),
            &t.peer.span(),
            format!("found {peer}, the network or broadcast address of {}; expected the ToR's host address", addr.trunc()),
        ));
    }
    (p.len() == before).then_some(Transit {
        address: addr,
        peer,
    })
}

/// The ToR's address must be inside the transit subnet and not ours.
fn peer_problem(net: IpNet, peer: IpAddr) -> Option<String> {
    if !net.contains(&peer) {
        Some(format!(
            "found {peer}, expected the ToR's address inside {}",
            net.trunc()
        ))
    } else if peer == net.addr() {
        Some(format!(
            "found {peer}, which is our own transit address; expected the ToR's address in {}",
            net.trunc()
        ))
    } else {
        None
    }
}

fn transit_v6(
    src: &Source,
    i: usize,
    t: &TransitInput<ipnet::Ipv6Net, std::net::Ipv6Addr>,
    p: &mut Vec<Problem>,
) -> Option<Transit<ipnet::Ipv6Net, std::net::Ipv6Addr>> {
    let addr = *t.address.get_ref();
    let peer = *t.peer.get_ref();
    let before = p.len();
    if let Some(why) = addresses::transit_problem(IpAddr::V6(addr.addr())) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv6.address"),
            &t.address.span(),
            format!("found {addr}: {why}; expected a unicast transit address, e.g. fd00:30::1/127"),
        ));
    } else if let Some(why) = addresses::transit_problem(IpAddr::V6(peer)) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv6.peer"),
            &t.peer.span(),
            format!("found {peer}: {why}; expected the ToR's unicast address, e.g. fd00:30::"),
        ));
    } else if !(64..=127).contains(&addr.prefix_len()) {
        p.push(src.problem(
            format!("uplinks[{i}].ipv6.address"),
            &t.address.span(),
            format!("found {addr}, expected a prefix length between /64 and /127 for a point-to-point link"),
        ));
    } else if let Some(why) = peer_problem(IpNet::V6(addr), IpAddr::V6(peer)) {
        p.push(src.problem(format!("uplinks[{i}].ipv6.peer"), &t.peer.span(), why));
    }
    (p.len() == before).then_some(Transit {
        address: addr,
        peer,
    })
}

/// The BGP paths and password files against each other and underlay's own
/// files (written: the BIRD config and socket; read: the template, secrets).
fn path_collisions(
    role_src: &Source,
    role: &RoleInput,
    host_src: &Source,
    host: &HostInput,
    b: &crate::desired::Bgp,
    uplinks: &[Uplink],
    p: &mut Vec<Problem>,
) {
    let input = role.bgp.as_ref();
    let at = |v: Option<&toml::Spanned<String>>| v.map(|s| (role_src, s.span()));
    let mut named = vec![
        Named {
            key: "bgp.config_path".into(),
            path: b.config_path.clone(),
            at: at(input.and_then(|i| i.config_path.as_ref())),
            written: true,
            secret: false,
        },
        Named {
            key: "bgp.control_socket".into(),
            path: b.control_socket.clone(),
            at: at(input.and_then(|i| i.control_socket.as_ref())),
            written: true,
            secret: false,
        },
        Named {
            key: "bgp.templates_dir".into(),
            path: b.templates_dir.join(crate::bgp::render::TEMPLATE_NAME),
            at: at(input.and_then(|i| i.templates_dir.as_ref())),
            written: false,
            secret: false,
        },
    ];
    for (i, (u, input)) in uplinks.iter().zip(&host.uplinks).enumerate() {
        if let (Some(f), Some(given)) = (&u.password_file, &input.password_file) {
            named.push(Named {
                key: format!("uplinks[{i}].password_file"),
                path: f.clone(),
                at: Some((host_src, given.span())),
                written: false,
                secret: true,
            });
        }
    }
    paths::collisions(&named, role_src, p);
}
