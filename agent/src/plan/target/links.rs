//! Links: `lo` first, then each uplink's NIC, matched by name or MAC, each
//! NIC used once.

use super::{LinkTarget, ResolveError, Target};
use crate::desired::{Desired, NicMatch};
use crate::observed::ObservedLink;

fn find_link<'a>(links: &'a [ObservedLink], m: &NicMatch) -> Option<&'a ObservedLink> {
    links.iter().find(|l| match m {
        NicMatch::Name(n) => l.name == n.as_str(),
        NicMatch::Mac(mac) => l.mac.as_ref() == Some(mac) || l.perm_mac.as_ref() == Some(mac),
    })
}

pub(super) fn resolve(
    d: &Desired,
    links: &[ObservedLink],
    t: &mut Target,
) -> Result<(), ResolveError> {
    let lo = links
        .iter()
        .find(|l| l.name == "lo")
        .ok_or(ResolveError::NoLoopback)?;
    t.links.push(LinkTarget {
        index: lo.index,
        ifname: lo.name.clone(),
        role: "loopback".into(),
        mtu: None,
    });
    for u in &d.uplinks {
        let link = find_link(links, &u.nic).ok_or_else(|| {
            let mut present: Vec<String> = links
                .iter()
                .map(|l| match &l.mac {
                    Some(m) => format!("{} ({m})", l.name),
                    None => l.name.clone(),
                })
                .collect();
            present.sort();
            ResolveError::MissingNic {
                uplink: u.name.clone(),
                matcher: u.nic.clone(),
                present,
            }
        })?;
        if let Some(other) = t.links.iter().find(|l| l.index == link.index) {
            return Err(ResolveError::SameNic {
                first: other.role.clone(),
                second: u.name.clone(),
                ifname: link.name.clone(),
            });
        }
        t.links.push(LinkTarget {
            index: link.index,
            ifname: link.name.clone(),
            role: u.name.clone(),
            mtu: u.mtu,
        });
    }
    Ok(())
}
