//! Address classes that can never work where they are put, and overlaps
//! between the host's address blocks (transit subnets, the service IP, pod
//! CIDRs). A link-local IPv4 transit (169.254.0.0/16, common for BGP
//! peering) and an IPv6 link-local transit are fine; a link-local service IP
//! is not (it is never routed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::input::{HostInput, RoleInput};
use super::{Problem, Source};

fn v4_common(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if o[0] == 0 {
        Some("0.0.0.0/8 means 'this network' and is never a host's address")
    } else if a.is_loopback() {
        Some("127.0.0.0/8 is loopback: it never leaves the host")
    } else if a.is_multicast() {
        Some("224.0.0.0/4 is multicast, a group address")
    } else if a.is_broadcast() {
        Some("255.255.255.255 is the limited broadcast address")
    } else {
        None
    }
}

fn v6_common(a: Ipv6Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some(":: is the unspecified address")
    } else if a.is_loopback() {
        Some("::1 is loopback: it never leaves the host")
    } else if a.is_multicast() {
        Some("ff00::/8 is multicast, a group address")
    } else if a.to_ipv4_mapped().is_some() {
        Some("::ffff:0:0/96 is an IPv4-mapped address; write the IPv4 address in the ipv4 keys")
    } else {
        None
    }
}

/// Why `a` cannot be the service IP (routed, announced to the fabric).
pub(super) fn service_problem(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v4) => v4_common(v4).or_else(|| {
            v4.is_link_local().then_some(
                "169.254.0.0/16 is link-local and never routed; the service IP must be routable",
            )
        }),
        IpAddr::V6(v6) => v6_common(v6).or_else(|| {
            (v6.segments()[0] & 0xffc0 == 0xfe80).then_some(
                "fe80::/10 is link-local and never routed; the service IP must be routable",
            )
        }),
    }
}

/// Why `a` cannot be a transit address (ours or the ToR's).
pub(super) fn transit_problem(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v4) => v4_common(v4),
        IpAddr::V6(v6) => v6_common(v6),
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Transit subnets against each other, the service IP and the pod CIDRs.
pub(super) fn cross_checks(
    role_src: &Source,
    role: &RoleInput,
    host_src: &Source,
    host: &HostInput,
    p: &mut Vec<Problem>,
) {
    let pods: Vec<IpNet> = role
        .pods
        .cidrs
        .iter()
        .map(|c| c.get_ref().trunc())
        .collect();
    let mut service = vec![(
        "service_ipv4",
        IpNet::V4(*host.service_ipv4.get_ref()),
        host.service_ipv4.span(),
    )];
    if let Some(v6) = &host.service_ipv6 {
        service.push(("service_ipv6", IpNet::V6(*v6.get_ref()), v6.span()));
    }
    for (key, s, span) in &service {
        if let Some(pod) = pods.iter().find(|c| c.contains(&s.addr())) {
            p.push(host_src.problem(
                *key,
                span,
                format!(
                    "found {s}, inside the pod CIDR {pod} ({}: pods.cidrs); expected an address outside \
                     the pod CIDRs (Calico could give it to a pod)",
                    role_src.path.display()
                ),
            ));
        }
    }
    let mut seen: Vec<(IpNet, usize)> = Vec::new();
    for (i, u) in host.uplinks.iter().enumerate() {
        let mut transits = Vec::new();
        if let Some(t) = &u.ipv4 {
            transits.push(("ipv4", IpNet::V4(*t.address.get_ref()), t.address.span()));
        }
        if let Some(t) = &u.ipv6 {
            transits.push(("ipv6", IpNet::V6(*t.address.get_ref()), t.address.span()));
        }
        for (fam, addr, span) in transits {
            let key = format!("uplinks[{i}].{fam}.address");
            let net = addr.trunc();
            if let Some((other, j)) = seen.iter().find(|(o, _)| overlaps(o, &net)) {
                let how = if *other == net { "is" } else { "overlaps" };
                p.push(host_src.problem(
                    &key,
                    &span,
                    format!(
                        "found {addr}, whose subnet {net} {how} uplinks[{j}]'s {other}; expected a subnet of its own \
                         (every uplink is its own point-to-point link)"
                    ),
                ));
            }
            seen.push((net, i));
            if let Some((_, s, _)) = service.iter().find(|(_, s, _)| net.contains(&s.addr())) {
                p.push(host_src.problem(
                    &key,
                    &span,
                    format!(
                        "found {addr}, whose subnet {net} holds the service IP {s}; expected a transit subnet \
                         that does not contain the service IP (it lives on lo and is announced, never on a link)"
                    ),
                ));
            }
            if let Some(pod) = pods.iter().find(|c| overlaps(c, &net)) {
                p.push(host_src.problem(
                    &key,
                    &span,
                    format!(
                        "found {addr}, whose subnet {net} overlaps the pod CIDR {pod} ({}: pods.cidrs); \
                         expected a transit subnet outside the pod CIDRs",
                        role_src.path.display()
                    ),
                ));
            }
        }
    }
}

/// Pod CIDRs and zone blocks must not overlap one another: Calico would
/// hand the same address out twice.
pub(super) fn pod_overlaps(src: &Source, role: &RoleInput, p: &mut Vec<Problem>) {
    let mut seen: Vec<(IpNet, usize)> = Vec::new();
    for (i, c) in role.pods.cidrs.iter().enumerate() {
        let net = c.get_ref().trunc();
        if let Some((other, j)) = seen.iter().find(|(o, _)| overlaps(o, &net)) {
            p.push(src.problem(
                format!("pods.cidrs[{i}]"),
                &c.span(),
                format!("found {net}, which overlaps pods.cidrs[{j}] ({other}); expected each pod CIDR once, not overlapping"),
            ));
        }
        seen.push((net, i));
    }
    let mut zones: Vec<(IpNet, &str)> = Vec::new();
    for (zone, c) in &role.pods.zones {
        let net = c.get_ref().trunc();
        if let Some((other, z)) = zones.iter().find(|(o, _)| overlaps(o, &net)) {
            let how = if *other == net { "is also" } else { "overlaps" };
            p.push(src.problem(
                format!("pods.zones.{}", crate::desired::types::shown(zone)),
                &c.span(),
                format!(
                    "found {net}, which {how} zone {z}'s block {other}; expected one block per zone, \
                     not overlapping (one Calico IPPool each)"
                ),
            ));
        }
        zones.push((net, zone));
    }
}
