//! The raw-byte filter against messages serialized by netlink-packet-route
//! (the same crate that speaks to the kernel elsewhere), and the BPF program
//! run by the real kernel on a Unix socket pair (no root needed).

use std::net::IpAddr;

use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::*;
use crate::system::events::{AddressInterest, LinkInterest, NetconfInterest};

fn bytes(m: RouteNetlinkMessage) -> Vec<u8> {
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m));
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn interest() -> Interest {
    Interest {
        links: vec![
            LinkInterest {
                index: 1,
                name: "lo".into(),
                want: LinkWant::Drift { mtu: None },
            },
            LinkInterest {
                index: 2,
                name: "eth0".into(),
                want: LinkWant::Drift { mtu: Some(9000) },
            },
        ],
        nic_names: vec!["eth0".into(), "eth1".into()],
        nic_macs: vec![MacAddr([0x52, 0x54, 0, 0, 0, 9])],
        addresses: vec![
            AddressInterest {
                index: 1,
                addr: "10.10.0.11".parse().unwrap(),
                prefix_len: 32,
                scope: Scope::Global,
            },
            AddressInterest {
                index: 2,
                addr: "172.30.0.1".parse().unwrap(),
                prefix_len: 31,
                scope: Scope::Link,
            },
        ],
        protocol: 211,
        rules: vec![RuleSpec {
            family: Family::Ipv4,
            priority: 30001,
            table: 1001,
            suppress_prefixlength: None,
        }],
        netconf: vec![NetconfInterest {
            family: Family::Ipv4,
            ifindex: 2,
            attr: NetconfAttr::RpFilter,
            value: 2,
        }],
        host_table: Some(1001),
    }
}

fn hit(m: RouteNetlinkMessage) -> Option<Hit> {
    let v = classify(&bytes(m), &interest());
    assert_eq!(v.messages, 1);
    v.first
}

fn route(table: u32) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.destination_prefix_length = 24;
    r.header.protocol = RouteProtocol::Static;
    r.header.table = if table > 255 { 252 } else { table as u8 };
    r.attributes.push(RouteAttribute::Table(table));
    r.attributes.push(RouteAttribute::Oif(7));
    r
}

#[test]
fn routes_wake_only_in_the_host_table() {
    assert_eq!(
        hit(RouteNetlinkMessage::NewRoute(route(1001))),
        Some(Hit::Route {
            table: 1001,
            deleted: false
        })
    );
    assert!(hit(RouteNetlinkMessage::DelRoute(route(1001))).is_some());
    for foreign in [254, 255, 100, 1002, 252] {
        assert_eq!(
            hit(RouteNetlinkMessage::NewRoute(route(foreign))),
            None,
            "table {foreign}"
        );
    }
    let mut i = interest();
    i.host_table = None;
    assert_eq!(
        classify(&bytes(RouteNetlinkMessage::NewRoute(route(1001))), &i).first,
        None
    );
}

fn link(index: u32, name: &str, up: bool, mtu: u32) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = index;
    if up {
        l.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
    }
    l.attributes.push(LinkAttribute::IfName(name.into()));
    l.attributes.push(LinkAttribute::Mtu(mtu));
    l.attributes.push(LinkAttribute::Address(vec![
        0x52,
        0x54,
        0,
        0,
        0,
        index as u8,
    ]));
    l
}

#[test]
fn links_wake_on_drift_not_on_our_own_writes_or_carrier() {
    let new = RouteNetlinkMessage::NewLink;
    // What our repair leaves: up, MTU 9000. Carrier changes look the same.
    assert_eq!(hit(new(link(2, "eth0", true, 9000))), None);
    assert_eq!(
        hit(new(link(2, "eth0", false, 9000))),
        Some(Hit::Link {
            index: 2,
            what: "set down"
        })
    );
    assert_eq!(
        hit(new(link(2, "eth0", true, 1500))),
        Some(Hit::Link {
            index: 2,
            what: "MTU changed"
        })
    );
    assert_eq!(
        hit(new(link(2, "uplink0", true, 9000))),
        Some(Hit::Link {
            index: 2,
            what: "renamed"
        })
    );
    assert_eq!(
        hit(RouteNetlinkMessage::DelLink(link(2, "eth0", true, 9000))),
        Some(Hit::Link {
            index: 2,
            what: "deleted"
        })
    );
    // lo has no MTU in the profile.
    assert_eq!(hit(new(link(1, "lo", true, 1500))), None);
    // Calico's veths come and go unnoticed; a NIC that matches an uplink wakes.
    assert_eq!(hit(new(link(40, "cali1234abcd", true, 1500))), None);
    assert_eq!(
        hit(RouteNetlinkMessage::DelLink(link(40, "cali1", true, 1500))),
        None
    );
    assert_eq!(
        hit(new(link(41, "eth1", false, 1500))),
        Some(Hit::NewLink { index: 41 })
    );
    assert_eq!(
        hit(new(link(9, "enp3s0", false, 1500))),
        Some(Hit::NewLink { index: 9 })
    );
}

#[test]
fn gates_want_every_change_of_an_uplink() {
    let i = Interest::for_gates(&[(2, "eth0".into())], Some(1001));
    let v = classify(
        &bytes(RouteNetlinkMessage::NewLink(link(2, "eth0", true, 9000))),
        &i,
    );
    assert_eq!(
        v.first,
        Some(Hit::Link {
            index: 2,
            what: "changed"
        })
    );
    let v = classify(&bytes(RouteNetlinkMessage::NewRoute(route(1001))), &i);
    assert!(v.first.is_some());
}

fn addr(index: u32, ip: &str, len: u8, scope: AddressScope, proto: Option<u8>) -> AddressMessage {
    let mut a = AddressMessage::default();
    let ip: IpAddr = ip.parse().unwrap();
    a.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    a.header.prefix_len = len;
    a.header.scope = scope;
    a.header.index = index;
    a.attributes.push(AddressAttribute::Address(ip));
    if ip.is_ipv4() {
        a.attributes.push(AddressAttribute::Local(ip));
    }
    if let Some(p) = proto {
        a.attributes.push(AddressAttribute::Protocol(p.into()));
    }
    a
}

#[test]
fn addresses_wake_when_ours_go_or_change_scope() {
    use RouteNetlinkMessage::{DelAddress as DelAddr, NewAddress as NewAddr};
    let svc = || addr(1, "10.10.0.11", 32, AddressScope::Universe, Some(211));
    assert!(matches!(
        hit(DelAddr(svc())),
        Some(Hit::Address { deleted: true, .. })
    ));
    // Our own add (right scope) is quiet.
    assert_eq!(hit(NewAddr(svc())), None);
    // Same address, other scope, or other prefix length.
    assert!(hit(NewAddr(addr(
        2,
        "172.30.0.1",
        31,
        AddressScope::Universe,
        None
    )))
    .is_some());
    assert_eq!(
        hit(NewAddr(addr(2, "172.30.0.1", 31, AddressScope::Link, None))),
        None
    );
    assert_eq!(
        hit(DelAddr(addr(
            1,
            "10.10.0.11",
            24,
            AddressScope::Universe,
            None
        ))),
        None
    );
    // IPv6 link-local and DAD updates on our links are not ours.
    assert_eq!(
        hit(NewAddr(addr(2, "fe80::1", 64, AddressScope::Link, None))),
        None
    );
    // An address with our protocol that the plan does not want: to delete.
    assert!(hit(NewAddr(addr(
        2,
        "192.0.2.1",
        32,
        AddressScope::Universe,
        Some(211)
    )))
    .is_some());
    // Addresses on links that are not ours.
    assert_eq!(
        hit(DelAddr(addr(
            40,
            "10.10.0.11",
            32,
            AddressScope::Universe,
            Some(211)
        ))),
        None
    );
}

fn rule(prio: u32, table: u32, proto: u8) -> RuleMessage {
    let mut r = RuleMessage::default();
    r.header.family = AddressFamily::Inet;
    r.header.action = RuleAction::ToTable;
    r.header.table = 252;
    r.attributes.push(RuleAttribute::Table(table));
    r.attributes.push(RuleAttribute::Priority(prio));
    r.attributes.push(RuleAttribute::Protocol(proto.into()));
    r
}

#[test]
fn rules_wake_for_our_protocol_only() {
    use RouteNetlinkMessage::{DelRule, NewRule};
    assert_eq!(
        hit(DelRule(rule(30001, 1001, 211))),
        Some(Hit::Rule {
            deleted: true,
            priority: 30001
        })
    );
    // Our own add.
    assert_eq!(hit(NewRule(rule(30001, 1001, 211))), None);
    // A rule of ours that the profile does not want.
    assert!(hit(NewRule(rule(30002, 1001, 211))).is_some());
    // Foreign rules (Calico's, the admin's).
    assert_eq!(hit(DelRule(rule(30001, 1001, 4))), None);
    assert_eq!(hit(NewRule(rule(100, 200, 3))), None);
    // A selector we do not model: not ours as written.
    let mut m = rule(30001, 1001, 211);
    m.attributes.push(RuleAttribute::FwMark(1));
    assert_eq!(hit(DelRule(m)), None);
}

fn netconf(family: u8, ifindex: i32, attr: u16, value: i32) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    for (t, v) in [(NETCONFA_IFINDEX, ifindex), (attr, value)] {
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&t.to_ne_bytes());
        body.extend_from_slice(&v.to_ne_bytes());
    }
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_NEWNETCONF.to_ne_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(&body);
    m
}

#[test]
fn netconf_wakes_when_a_setting_we_own_moves_away() {
    let i = interest();
    let rp = NetconfAttr::RpFilter as u16;
    assert_eq!(
        classify(&netconf(AF_INET, 2, rp, 1), &i).first,
        Some(Hit::Netconf { ifindex: 2 })
    );
    // Our own write.
    assert_eq!(classify(&netconf(AF_INET, 2, rp, 2), &i).first, None);
    // Another device (a new Calico veth announces its settings), family, attribute.
    assert_eq!(classify(&netconf(AF_INET, 40, rp, 1), &i).first, None);
    assert_eq!(classify(&netconf(AF_INET6, 2, rp, 1), &i).first, None);
    assert_eq!(
        classify(&netconf(AF_INET, 2, NetconfAttr::Forwarding as u16, 0), &i).first,
        None
    );
}

#[test]
fn a_datagram_with_several_messages_counts_each() {
    let mut d = bytes(RouteNetlinkMessage::NewRoute(route(254)));
    d.extend(bytes(RouteNetlinkMessage::DelRule(rule(30001, 1001, 211))));
    d.extend(bytes(RouteNetlinkMessage::NewRoute(route(1001))));
    let v = classify(&d, &interest());
    assert_eq!(v.messages, 3);
    assert_eq!(v.hits, 2);
    assert!(matches!(v.first, Some(Hit::Rule { .. })));
    // Truncated garbage stops the walk without a panic.
    assert_eq!(classify(&d[..d.len() - 3], &interest()).messages, 2);
    assert_eq!(classify(&[1, 2, 3], &interest()).messages, 0);
}

/// The BPF program as the kernel runs it: attached to one end of a Unix
/// datagram pair, messages sent from the other end arrive or not.
#[test]
fn bpf_drops_foreign_routes_in_the_kernel() {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recv, send, socketpair, AddressFamily as Af, MsgFlags, SockFlag, SockType,
    };

    let (tx, rx) = socketpair(Af::Unix, SockType::Datagram, None, SockFlag::SOCK_NONBLOCK)
        .expect("socketpair");
    super::super::attach_filter(rx.as_raw_fd(), &route_bpf(1001)).expect("attach");
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "main",
            bytes(RouteNetlinkMessage::NewRoute(route(254))),
            false,
        ),
        (
            "local",
            bytes(RouteNetlinkMessage::DelRoute(route(255))),
            false,
        ),
        (
            "felix 100",
            bytes(RouteNetlinkMessage::NewRoute(route(100))),
            false,
        ),
        (
            "other 1002",
            bytes(RouteNetlinkMessage::NewRoute(route(1002))),
            false,
        ),
        (
            "host",
            bytes(RouteNetlinkMessage::NewRoute(route(1001))),
            true,
        ),
        (
            "host del",
            bytes(RouteNetlinkMessage::DelRoute(route(1001))),
            true,
        ),
        (
            "link",
            bytes(RouteNetlinkMessage::NewLink(link(2, "eth0", true, 9000))),
            true,
        ),
        (
            "rule",
            bytes(RouteNetlinkMessage::DelRule(rule(30001, 1001, 211))),
            true,
        ),
    ];
    for (name, msg, keep) in &cases {
        send(tx.as_raw_fd(), msg, MsgFlags::empty()).expect("send");
        let mut buf = [0u8; 4096];
        let got = recv(rx.as_raw_fd(), &mut buf, MsgFlags::empty());
        assert_eq!(got.is_ok(), *keep, "{name}: {got:?}");
        if let Ok(n) = got {
            assert_eq!(&buf[..n], &msg[..], "{name} arrives whole");
        }
    }
}
