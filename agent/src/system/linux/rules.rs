use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::nl;
use crate::desired::{Family, RuleSpec};
use crate::system::SystemError;

/// Our rules: the ones carrying `protocol`. Rules with selectors we do not
/// model (source, iif, fwmark...) are skipped: they cannot be ours as written.
fn parse(m: &RuleMessage, protocol: u8) -> Option<RuleSpec> {
    let mut prio = 0;
    let mut table = u32::from(m.header.table);
    let mut suppress = None;
    let mut proto = None;
    for a in &m.attributes {
        match a {
            RuleAttribute::Priority(p) => prio = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::SuppressPrefixLen(s) => suppress = u8::try_from(*s).ok(),
            RuleAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            RuleAttribute::FwMark(_)
            | RuleAttribute::Source(_)
            | RuleAttribute::Destination(_)
            | RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_) => return None,
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
    Some(RuleSpec {
        family,
        priority: prio,
        table,
        suppress_prefixlength: suppress,
    })
}

pub async fn dump(h: &Handle, protocol: u8) -> Result<Vec<RuleSpec>, SystemError> {
    let mut out = Vec::new();
    for v in [IpVersion::V4, IpVersion::V6] {
        let msgs: Vec<RuleMessage> = h
            .rule()
            .get(v)
            .execute()
            .try_collect()
            .await
            .map_err(nl("dumping rules"))?;
        out.extend(msgs.iter().filter_map(|m| parse(m, protocol)));
    }
    out.sort();
    Ok(out)
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
