use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::nl;
use crate::desired::{Family, RuleSpec};
use crate::system::SystemError;

/// A rule carrying `protocol`: ours, or (with selectors we never set:
/// source, iif, fwmark...) someone else's that only borrows our number.
enum Parsed {
    Ours(RuleSpec),
    /// Its priority and table as a spec, and what else it matches on.
    Borrowed(RuleSpec, String),
}

fn parse(m: &RuleMessage, protocol: u8) -> Option<Parsed> {
    let mut prio = 0;
    let mut table = u32::from(m.header.table);
    let mut suppress = None;
    let mut proto = None;
    let mut selectors = Vec::new();
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => prio = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::SuppressPrefixLen(s) => suppress = u8::try_from(*s).ok(),
            RuleAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            RuleAttribute::FwMark(v) => selectors.push(format!("fwmark {v:#x}")),
            RuleAttribute::Source(v) => selectors.push(format!("from {v}/{}", m.header.src_len)),
            RuleAttribute::Destination(v) => selectors.push(format!("to {v}/{}", m.header.dst_len)),
            RuleAttribute::Iifname(v) => selectors.push(format!("iif {v}")),
            RuleAttribute::Oifname(v) => selectors.push(format!("oif {v}")),
            RuleAttribute::Goto(v) => selectors.push(format!("goto {v}")),
            _ => {}
        }
    }
    if proto != Some(protocol) || m.header.action != RuleAction::ToTable {
        return None;
    }
    let family = match m.header.family {
        AddressFamily::Inet => Family::Ipv4,
        AddressFamily::Inet6 => Family::Ipv6,
        _ => return None,
    };
    let spec = RuleSpec {
        family,
        priority: prio,
        table,
        suppress_prefixlength: suppress,
    };
    Some(if selectors.is_empty() {
        Parsed::Ours(spec)
    } else {
        Parsed::Borrowed(spec, selectors.join(" "))
    })
}

/// Our rules, and the rules that borrow our protocol number with selectors
/// of their own (never ours; a hazard: see `Observed::borrowed_rules`).
pub async fn dump(
    h: &Handle,
    protocol: u8,
) -> Result<(Vec<RuleSpec>, Vec<(RuleSpec, String)>), SystemError> {
    let mut out = Vec::new();
    let mut borrowed = Vec::new();
    for v in [IpVersion::V4, IpVersion::V6] {
        let msgs: Vec<RuleMessage> = h
            .rule()
            .get(v)
            .execute()
            .try_collect()
            .await
            .map_err(nl("dumping rules"))?;
        for p in msgs.iter().filter_map(|m| parse(m, protocol)) {
            match p {
                Parsed::Ours(r) => out.push(r),
                Parsed::Borrowed(r, what) => borrowed.push((r, what)),
            }
        }
    }
    out.sort();
    Ok((out, borrowed))
}

fn message(r: &RuleSpec, protocol: u8) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = match r.family {
        Family::Ipv4 => AddressFamily::Inet,
        Family::Ipv6 => AddressFamily::Inet6,
    };
    m.header.action = RuleAction::ToTable;
    if r.table > 255 {
        m.header.table = 252; // RT_TABLE_COMPAT: the real id is in FRA_TABLE
    } else {
        m.header.table = r.table as u8;
    }
    m.attributes.push(RuleAttribute::Table(r.table));
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
    if let Some(s) = r.suppress_prefixlength {
        m.attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::from(s)));
    }
    m
}

pub async fn add(h: &Handle, r: &RuleSpec, protocol: u8) -> Result<(), SystemError> {
    let mut req = h.rule().add();
    *req.message_mut() = message(r, protocol);
    req.execute().await.map_err(nl(format!("adding rule {r}")))
}

pub async fn del(h: &Handle, r: &RuleSpec, protocol: u8) -> Result<(), SystemError> {
    h.rule()
        .del(message(r, protocol))
        .execute()
        .await
        .map_err(nl(format!("removing rule {r}")))
}
