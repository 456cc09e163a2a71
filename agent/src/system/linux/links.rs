use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::{Handle, LinkUnspec};

use super::nl;
use crate::desired::MacAddr;
use crate::observed::ObservedLink;
use crate::system::SystemError;

fn mac(bytes: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(bytes)
        .ok()
        .filter(|b| b != &[0; 6])
        .map(MacAddr)
}

fn parse(m: &LinkMessage) -> Option<ObservedLink> {
    let mut name = None;
    let mut addr = None;
    let mut perm = None;
    let mut mtu = 0;
    let mut oper_up = false;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(b) => addr = mac(b),
            LinkAttribute::PermAddress(b) => perm = mac(b),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::OperState(s) => oper_up = matches!(s, State::Up | State::Unknown),
            _ => {}
        }
    }
    Some(ObservedLink {
        index: m.header.index,
        name: name?,
        mac: addr,
        perm_mac: perm.filter(|p| Some(*p) != addr),
        mtu,
        up: m.header.flags.contains(LinkFlags::Up),
        // IFF_LOWER_UP too: a link just set up reports operstate UNKNOWN
        // until the kernel's linkwatch runs, carrier or not.
        oper_up: oper_up
            && m.header.flags.contains(LinkFlags::Up)
            && m.header.flags.contains(LinkFlags::LowerUp),
    })
}

pub async fn dump(h: &Handle) -> Result<Vec<ObservedLink>, SystemError> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("dumping links"))?;
    let mut links: Vec<ObservedLink> = msgs.iter().filter_map(parse).collect();
    links.sort_by_key(|l| l.index);
    Ok(links)
}

pub async fn set(
    h: &Handle,
    index: u32,
    ifname: &str,
    mtu: Option<u32>,
    up: bool,
) -> Result<(), SystemError> {
    let mut b = LinkUnspec::new_with_index(index);
    if let Some(m) = mtu {
        b = b.mtu(m);
    }
    b = if up { b.up() } else { b.down() };
    h.link()
        .set(b.build())
        .execute()
        .await
        .map_err(nl(format!("setting link {ifname} (mtu {mtu:?}, up {up})")))
}
