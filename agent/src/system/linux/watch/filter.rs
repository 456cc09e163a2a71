//! Which netlink notifications matter, decided on the raw bytes: a foreign
//! route costs a header read and no allocation. Two layers:
//!
//! 1. [`route_bpf`]: a classic BPF socket filter, run by the kernel before a
//!    notification is queued, drops route messages outside the host table.
//!    Calico's churn in `main` and Felix's tables then never wakes this
//!    process nor fills its receive buffer.
//! 2. [`classify`]: the authoritative check in user space for what passes
//!    (links, addresses, rules, netconf, routes), against the [`Interest`].
//!
//! Layouts are the kernel's (linux/netlink.h, rtnetlink.h, if_link.h,
//! if_addr.h, fib_rules.h, netconf.h); integers are in host byte order.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::desired::{Family, MacAddr, RuleSpec};
use crate::observed::Scope;
use crate::system::events::{Interest, LinkWant, NetconfAttr};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;

const IFF_UP: u32 = 1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_PERM_ADDRESS: u16 = 54;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_PROTO: u16 = 11;
const RTA_TABLE: u16 = 15;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_GOTO: u16 = 4;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_TABLE: u16 = 15;
const FRA_OIFNAME: u16 = 17;
const FRA_PROTOCOL: u16 = 21;
const FR_ACT_TO_TBL: u8 = 1;
const NETCONFA_IFINDEX: u16 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Type bits of an attribute header (the top two are flags).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A notification that wakes a reconcile; `Display` is for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Link {
        index: u32,
        what: &'static str,
    },
    NewLink {
        index: u32,
    },
    Address {
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
        deleted: bool,
    },
    Rule {
        deleted: bool,
        priority: u32,
    },
    Netconf {
        ifindex: i32,
    },
    Route {
        table: u32,
        deleted: bool,
    },
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hit::Link { index, what } => write!(f, "link {index} {what}"),
            Hit::NewLink { index } => write!(f, "new link {index} matching an uplink"),
            Hit::Address {
                index,
                addr,
                prefix_len,
                deleted,
            } => write!(
                f,
                "address {addr}/{prefix_len} on link {index} {}",
                if *deleted { "deleted" } else { "changed" }
            ),
            Hit::Rule { deleted, priority } => write!(
                f,
                "rule pref {priority} {}",
                if *deleted { "deleted" } else { "added" }
            ),
            Hit::Netconf { ifindex } => write!(f, "netconf of link {ifindex} changed"),
            Hit::Route { table, deleted } => write!(
                f,
                "route in table {table} {}",
                if *deleted { "deleted" } else { "added" }
            ),
        }
    }
}

/// What one datagram held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub messages: u32,
    pub hits: u32,
    pub first: Option<Hit>,
    pub overrun: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Attributes (type, payload) of a message body after its fixed header.
fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u16_at(body, at)? as usize;
        let kind = u16_at(body, at + 2)? & NLA_TYPE_MASK;
        if len < 4 || at + len > body.len() {
            return None;
        }
        let payload = &body[at + 4..at + len];
        at += align4(len);
        Some((kind, payload))
    })
}

fn ip(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Classifies every message of one received datagram.
pub fn classify(datagram: &[u8], interest: &Interest) -> Verdict {
    let mut v = Verdict::default();
    let mut at = 0;
    while let Some(len) = u32_at(datagram, at) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        let kind = u16_at(datagram, at + 4).unwrap_or(0);
        let body = &datagram[at + NLMSG_HDRLEN..at + len];
        v.messages += 1;
        if kind == NLMSG_OVERRUN {
            v.overrun = true;
        } else if let Some(hit) = message(kind, body, interest) {
            v.hits += 1;
            v.first.get_or_insert(hit);
        }
        at += align4(len);
    }
    v
}

fn message(kind: u16, body: &[u8], i: &Interest) -> Option<Hit> {
    match kind {
        RTM_NEWROUTE | RTM_DELROUTE => route(body, i, kind == RTM_DELROUTE),
        RTM_NEWLINK | RTM_DELLINK => link(body, i, kind == RTM_DELLINK),
        RTM_NEWADDR | RTM_DELADDR => address(body, i, kind == RTM_DELADDR),
        RTM_NEWRULE | RTM_DELRULE => rule(body, i, kind == RTM_DELRULE),
        RTM_NEWNETCONF | RTM_DELNETCONF => netconf(body, i),
        _ => None,
    }
}

/// rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
fn route(body: &[u8], i: &Interest, deleted: bool) -> Option<Hit> {
    let host = i.host_table?;
    let mut table = u32::from(*body.get(4)?);
    if let Some((_, p)) = attrs(body.get(12..)?).find(|(t, _)| *t == RTA_TABLE) {
        table = u32_of(p)?;
    }
    (table == host).then_some(Hit::Route { table, deleted })
}

/// ifinfomsg: family, pad, type(2), index(4), flags(4), change(4).
fn link(body: &[u8], i: &Interest, deleted: bool) -> Option<Hit> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut name: Option<&[u8]> = None;
    let mut mtu = None;
    let mut macs: [Option<&[u8]>; 2] = [None, None];
    for (t, p) in attrs(body.get(16..)?) {
        match t {
            IFLA_IFNAME => name = Some(p.split(|b| *b == 0).next().unwrap_or(p)),
            IFLA_MTU => mtu = u32_of(p),
            IFLA_ADDRESS => macs[0] = Some(p),
            IFLA_PERM_ADDRESS => macs[1] = Some(p),
            _ => {}
        }
    }
    match i.link(index) {
        Some(ours) => {
            let what = if deleted {
                "deleted"
            } else if let LinkWant::Any = ours.want {
                "changed"
            } else if flags & IFF_UP == 0 {
                "set down"
            } else if name.is_some_and(|n| n != ours.name.as_bytes()) {
                "renamed"
            } else if matches!(ours.want, LinkWant::Drift { mtu: Some(want) } if mtu.is_some_and(|m| m != want))
            {
                "MTU changed"
            } else {
                return None;
            };
            Some(Hit::Link { index, what })
        }
        None if !deleted => {
            let by_name = name.is_some_and(|n| i.nic_names.iter().any(|w| w.as_bytes() == n));
            let by_mac = macs
                .iter()
                .flatten()
                .any(|m| <[u8; 6]>::try_from(*m).is_ok_and(|m| i.nic_macs.contains(&MacAddr(m))));
            (by_name || by_mac).then_some(Hit::NewLink { index })
        }
        None => None,
    }
}

/// ifaddrmsg: family, prefixlen, flags, scope, index(4).
fn address(body: &[u8], i: &Interest, deleted: bool) -> Option<Hit> {
    let family = *body.first()?;
    let prefix_len = *body.get(1)?;
    let scope = Scope::from_kernel(*body.get(3)?);
    let index = u32_at(body, 4)?;
    i.link(index)?;
    let (mut local, mut address, mut proto) = (None, None, None);
    for (t, p) in attrs(body.get(8..)?) {
        match t {
            IFA_LOCAL => local = ip(family, p),
            IFA_ADDRESS => address = ip(family, p),
            IFA_PROTO => proto = p.first().copied(),
            _ => {}
        }
    }
    // As the observer reads it: IFA_LOCAL is our side of a peer address.
    let addr = local.or(address)?;
    let hit = Hit::Address {
        index,
        addr,
        prefix_len,
        deleted,
    };
    match i
        .addresses
        .iter()
        .find(|a| a.index == index && a.addr == addr && a.prefix_len == prefix_len)
    {
        // Ours deleted, or re-added with another scope.
        Some(want) => (deleted || want.scope != scope).then_some(hit),
        // Carrying our protocol but not wanted: the plan deletes it.
        None => (!deleted && proto == Some(i.protocol)).then_some(hit),
    }
}

/// fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags(4).
fn rule(body: &[u8], i: &Interest, deleted: bool) -> Option<Hit> {
    let family = match *body.first()? {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let action = *body.get(7)?;
    let mut spec = RuleSpec {
        family,
        priority: 0,
        table: u32::from(*body.get(4)?),
        suppress_prefixlength: None,
    };
    let mut proto = None;
    for (t, p) in attrs(body.get(12..)?) {
        match t {
            FRA_PRIORITY => spec.priority = u32_of(p)?,
            FRA_TABLE => spec.table = u32_of(p)?,
            FRA_SUPPRESS_PREFIXLEN => {
                spec.suppress_prefixlength = u32_of(p).and_then(|s| u8::try_from(s).ok())
            }
            FRA_PROTOCOL => proto = p.first().copied(),
            // Selectors we do not model: never ours as written (as the observer).
            FRA_DST | FRA_SRC | FRA_IIFNAME | FRA_OIFNAME | FRA_GOTO | FRA_FWMARK => return None,
            _ => {}
        }
    }
    if proto != Some(i.protocol) || action != FR_ACT_TO_TBL {
        return None;
    }
    let wanted = i.rules.contains(&spec);
    // Ours deleted, or a rule of ours appeared that the plan would delete.
    (deleted == wanted).then_some(Hit::Rule {
        deleted,
        priority: spec.priority,
    })
}

/// netconfmsg: family (padded to 4), then attributes.
fn netconf(body: &[u8], i: &Interest) -> Option<Hit> {
    let family = match *body.first()? {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let mut ifindex = None;
    let mut values: [(u16, Option<i32>); 8] = [(0, None); 8];
    let mut n = 0;
    for (t, p) in attrs(body.get(4..)?) {
        let v = u32_of(p).map(|x| x as i32);
        if t == NETCONFA_IFINDEX {
            ifindex = v;
        } else if n < values.len() {
            values[n] = (t, v);
            n += 1;
        }
    }
    let ifindex = ifindex?;
    let drifted = values[..n].iter().any(|(t, v)| {
        let Some(attr) = NetconfAttr::from_kernel(*t) else {
            return false;
        };
        i.netconf.iter().any(|w| {
            w.family == family && w.ifindex == ifindex && w.attr == attr && Some(w.value) != *v
        })
    });
    drifted.then_some(Hit::Netconf { ifindex })
}

/// One classic BPF instruction (linux/filter.h `struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

/// BPF loads read big-endian; netlink is host order. The value a load of
/// `v`'s bytes yields.
fn be16(v: u16) -> u32 {
    u32::from(u16::from_be_bytes(v.to_ne_bytes()))
}

fn be32(v: u32) -> u32 {
    u32::from_be_bytes(v.to_ne_bytes())
}

/// Keeps non-route messages and routes of `host_table`; drops every other
/// route. The kernel puts RTA_TABLE first after the rtmsg header (IPv4
/// `fib_dump_info`, IPv6 `rt6_fill_node`); a message laid out otherwise
/// passes, and user space decides.
pub fn route_bpf(host_table: u32) -> Vec<SockFilter> {
    let ins = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let first_attr = (NLMSG_HDRLEN + 12) as u32;
    vec![
        /* 0 */ ins(BPF_LD_H_ABS, 0, 0, 4), // nlmsg_type
        /* 1 */ ins(BPF_JEQ_K, 1, 0, be16(RTM_NEWROUTE)),
        /* 2 */ ins(BPF_JEQ_K, 0, 4, be16(RTM_DELROUTE)),
        /* 3 */ ins(BPF_LD_H_ABS, 0, 0, first_attr + 2), // its type
        /* 4 */ ins(BPF_JEQ_K, 0, 2, be16(RTA_TABLE)),
        /* 5 */ ins(BPF_LD_W_ABS, 0, 0, first_attr + 4), // the table id
        /* 6 */ ins(BPF_JEQ_K, 0, 1, be32(host_table)),
        /* 7 */ ins(BPF_RET_K, 0, 0, u32::MAX), // keep
        /* 8 */ ins(BPF_RET_K, 0, 0, 0), // drop
    ]
}

#[cfg(test)]
mod tests;
