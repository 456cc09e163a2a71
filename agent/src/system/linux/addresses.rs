use std::collections::HashMap;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, AddressScope,
};
use rtnetlink::Handle;

use super::nl;
use crate::observed::{ObservedAddress, Scope};
use crate::system::SystemError;

fn parse(m: &AddressMessage, names: &HashMap<u32, String>) -> Option<ObservedAddress> {
    let mut local = None;
    let mut address = None;
    let mut protocol = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Protocol(p) => protocol = Some(u8::from(*p)),
            _ => {}
        }
    }
    // IFA_LOCAL is our side on IPv4 point-to-point; IPv6 only has IFA_ADDRESS.
    let ip: IpAddr = local.or(address)?;
    let prefix = IpNet::new(ip, m.header.prefix_len).ok()?;
    let ifname = names
        .get(&m.header.index)
        .cloned()
        .unwrap_or_else(|| m.header.index.to_string());
    Some(ObservedAddress {
        index: m.header.index,
        ifname,
        prefix,
        scope: Scope::from_kernel(u8::from(m.header.scope)),
        protocol,
    })
}

/// All addresses: one dump (hosts carry few), filtered in memory.
pub async fn dump(
    h: &Handle,
    names: &HashMap<u32, String>,
) -> Result<Vec<ObservedAddress>, SystemError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("dumping addresses"))?;
    Ok(msgs.iter().filter_map(|m| parse(m, names)).collect())
}

/// IFA_PROTO (the address protocol) arrived in Linux 6.3; older kernels
/// ignore it, and then only the state file marks our addresses.
pub fn kernel_has_ifa_proto() -> bool {
    let uts = nix::sys::utsname::uname();
    let release = uts
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    (major, minor) >= (6, 3)
}

pub async fn add(
    h: &Handle,
    index: u32,
    ifname: &str,
    prefix: IpNet,
    scope: Scope,
    protocol: u8,
) -> Result<(), SystemError> {
    let mut req = h.address().add(index, prefix.addr(), prefix.prefix_len());
    let msg = req.message_mut();
    msg.header.scope = AddressScope::from(scope.to_kernel());
    msg.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(protocol)));
    if prefix.addr().is_ipv6() {
        // A point-to-point transit or a /128 on lo needs no duplicate detection,
        // and a tentative address would not be usable for the BGP session yet.
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .map_err(nl(format!("adding {prefix} scope {scope} to {ifname}")))
}

pub async fn del(h: &Handle, index: u32, ifname: &str, prefix: IpNet) -> Result<(), SystemError> {
    // Ask for the exact address through a filtered dump, then delete that message.
    let mut req = h
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(prefix.addr());
    req.message_mut().header.index = index;
    let found: Vec<AddressMessage> = req
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("looking up {prefix} on {ifname}")))?;
    for m in found
        .into_iter()
        .filter(|m| m.header.prefix_len == prefix.prefix_len())
    {
        h.address()
            .del(m)
            .execute()
            .await
            .map_err(nl(format!("removing {prefix} from {ifname}")))?;
    }
    Ok(())
}
