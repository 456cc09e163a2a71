//! Cross-checks that serde cannot express, and the merge of role profile and
//! host facts into [`Desired`]. Collects every problem before returning.

use std::collections::{BTreeMap, HashMap};

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::input::{HostInput, NicInput, RoleInput, SysctlValueInput, TransitInput};
use super::{Problem, Source};
use crate::desired::{
    Desired, Family, NicMatch, Pods, RuleSpec, SysctlKey, Table, TableId, Transit, Uplink,
};

const UPLINK_PLACEHOLDER: &str = "{uplink}";
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
    let (sysctl_global, sysctl_uplink) = sysctls(role_src, role, &mut p);
    let default_mtu = role
        .uplinks
        .mtu
        .as_ref()
        .and_then(|m| mtu(role_src, "uplinks.mtu", m, &mut p));

    let hostname = host.hostname.get_ref().trim().to_string();
    if hostname.is_empty()
        || hostname.len() > 253
        || !hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        p.push(host_src.problem(
            "hostname",
            &host.hostname.span(),
            format!(
                "found '{}', expected a DNS name (letters, digits, '-' and '.')",
                host.hostname.get_ref()
            ),
        ));
    }
    let service_ipv4 = *host.service_ipv4.get_ref();
    if service_ipv4.prefix_len() != 32 {
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
        if v6.prefix_len() != 128 {
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

    let uplinks = uplinks(host_src, host, default_mtu, &mut p);
    if role.bgp.is_some() && service_ipv6.is_none() {
        for (i, u) in host.uplinks.iter().enumerate() {
            if let Some(v6) = &u.ipv6 {
                p.push(host_src.problem(
                    format!("uplinks[{i}].ipv6"),
                    &v6.address.span(),
                    "an IPv6 BGP session needs service_ipv6 (the /128 it announces); add service_ipv6 or drop the uplink's ipv6",
                ));
            }
        }
    }
    let bgp = role.bgp.as_ref().and_then(|b| {
        super::bgp::validate(role_src, b, &tables, host_src, host, uplinks.len(), &mut p)
    });
    if uplinks.is_empty() && p.is_empty() {
        p.push(host_src.problem(
            "uplinks",
            &(0..0),
            "no uplinks; expected at least one [[uplinks]] table (one per top-of-rack switch)",
        ));
    }

    let nat = nat(role_src, role, &mut p);
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Desired {
        hostname,
        zone: host.zone.clone(),
        rack: host.rack.clone(),
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
            "snat needs pods.cidrs: it translates pod egress to the service IP",
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
                format!("found '{name}', expected a name of letters, digits, '-' and '_' (not only digits), e.g. underlay-host"),
            ));
        } else if TableId::builtin(name).is_some() {
            p.push(src.problem(
                format!("routing.tables[{i}].name"),
                &t.name.span(),
                format!(
                    "'{name}' is a kernel table; define a table of your own, e.g. underlay-host"
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
                format!("duplicate table id {id}: routing.tables[{j}] already uses it; every table needs its own id"),
            ));
        }
        if let Some(j) = by_name.insert(name, i) {
            p.push(src.problem(
                format!("routing.tables[{i}].name"),
                &t.name.span(),
                format!("duplicate table name '{name}': routing.tables[{j}] already uses it"),
            ));
        }
        out.push(Table {
            name: name.to_string(),
            id,
        });
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
                format!("duplicate rule priority {prio}: routing.rules[{j}] already uses it; give every rule its own priority"),
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
                    "unknown table '{name}', expected one of: {}",
                    known.join(", ")
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
        if !cidrs.iter().any(|p: &IpNet| p.contains(&net)) {
            p.push(src.problem(
                format!("pods.zones.{zone}"),
                &c.span(),
                format!(
                    "found {net}, expected a block inside one of pods.cidrs ({})",
                    fmt_list(&cidrs)
                ),
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

type Sysctls = (Vec<(SysctlKey, String)>, Vec<(String, String)>);

fn sysctls(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) -> Sysctls {
    let mut global = Vec::new();
    for (k, v) in &role.sysctl.global {
        let key = format!("sysctl.global.\"{}\"", k.get_ref());
        if k.get_ref().contains(UPLINK_PLACEHOLDER) {
            p.push(src.problem(
                key,
                &k.span(),
                "a global key cannot use {uplink}; move it to [sysctl.uplink]",
            ));
            continue;
        }
        match SysctlKey::parse(k.get_ref()) {
            Ok(parsed) => global.push((parsed, v.to_kernel())),
            Err(e) => p.push(src.problem(key, &k.span(), e)),
        }
        check_value(src, k, v, p);
    }
    let mut uplink = Vec::new();
    for (k, v) in &role.sysctl.uplink {
        let key = format!("sysctl.uplink.\"{}\"", k.get_ref());
        if !k.get_ref().contains(UPLINK_PLACEHOLDER) {
            p.push(src.problem(
                key,
                &k.span(),
                format!(
                    "found '{}', expected a key with the {{uplink}} placeholder, e.g. net.ipv4.conf.{{uplink}}.rp_filter",
                    k.get_ref()
                ),
            ));
            continue;
        }
        if let Err(e) = SysctlKey::parse(&k.get_ref().replace(UPLINK_PLACEHOLDER, "eth0")) {
            p.push(src.problem(key, &k.span(), e));
            continue;
        }
        uplink.push((k.get_ref().clone(), v.to_kernel()));
        check_value(src, k, v, p);
    }
    (global, uplink)
}

fn check_value(
    src: &Source,
    k: &toml::Spanned<String>,
    v: &SysctlValueInput,
    p: &mut Vec<Problem>,
) {
    if let SysctlValueInput::Str(s) = v {
        if s.trim().is_empty() || s.contains('\n') {
            p.push(src.problem(
                format!("sysctl.\"{}\"", k.get_ref()),
                &k.span(),
                "empty or multi-line value; expected a number or a single-line string",
            ));
        }
    }
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
    p: &mut Vec<Problem>,
) -> Vec<Uplink> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut nics: HashMap<NicMatch, usize> = HashMap::new();
    let mut subnets: BTreeMap<IpNet, usize> = BTreeMap::new();
    for (i, u) in host.uplinks.iter().enumerate() {
        let name = u.name.get_ref().as_str();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            p.push(src.problem(
                format!("uplinks[{i}].name"),
                &u.name.span(),
                format!("found '{name}', expected a short name of letters, digits, '-' and '_', e.g. tor-a"),
            ));
        }
        if let Some(j) = names.insert(name, i) {
            p.push(src.problem(
                format!("uplinks[{i}].name"),
                &u.name.span(),
                format!("duplicate uplink name '{name}': uplinks[{j}] already uses it"),
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
                    "expected exactly one of nic.name or nic.mac, e.g. nic = { name = \"eth0\" }",
                ));
                None
            }
        };
        if let Some(nic) = &nic {
            if let Some(j) = nics.insert(nic.clone(), i) {
                p.push(src.problem(
                    format!("uplinks[{i}].nic"),
                    &u.nic.span(),
                    format!("duplicate NIC match ({nic}): uplinks[{j}] already matches it; each uplink needs its own NIC"),
                ));
            }
        }
        let ipv4 = u.ipv4.as_ref().map(|t| transit_v4(src, i, t, p));
        let ipv6 = u.ipv6.as_ref().map(|t| transit_v6(src, i, t, p));
        if ipv4.is_none() && ipv6.is_none() {
            p.push(src.problem(
                format!("uplinks[{i}]"),
                &u.name.span(),
                "no transit address; expected ipv4 = { address = \"172.30.0.1/31\", peer = \"172.30.0.0\" } and/or ipv6",
            ));
        }
        for (fam, net, span) in [
            (
                "ipv4",
                u.ipv4
                    .as_ref()
                    .map(|t| IpNet::V4(t.address.get_ref().trunc())),
                u.ipv4.as_ref().map(|t| t.address.span()),
            ),
            (
                "ipv6",
                u.ipv6
                    .as_ref()
                    .map(|t| IpNet::V6(t.address.get_ref().trunc())),
                u.ipv6.as_ref().map(|t| t.address.span()),
            ),
        ] {
            if let (Some(net), Some(span)) = (net, span) {
                if let Some(j) = subnets.insert(net, i) {
                    p.push(src.problem(
                        format!("uplinks[{i}].{fam}.address"),
                        &span,
                        format!("transit subnet {net} is already used by uplinks[{j}]; every uplink is its own point-to-point link"),
                    ));
                }
            }
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
                    if f.get_ref().starts_with('/') {
                        Some(f.get_ref().into())
                    } else {
                        p.push(src.problem(
                            format!("uplinks[{i}].password_file"),
                            &f.span(),
                            format!("found '{}', expected an absolute path such as /etc/underlay/secrets/{name}.password", f.get_ref()),
                        ));
                        None
                    }
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
    if !matches!(addr.prefix_len(), 30 | 31) {
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
            format!("found {addr}, which is the network or broadcast address of its /30; use .1 or .2 of the block"),
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
    if !(64..=127).contains(&addr.prefix_len()) {
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
