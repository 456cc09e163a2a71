//! Addresses: the service IP(s) on `lo` at global scope, each uplink's
//! transit address on its NIC.

use ipnet::IpNet;

use super::{AddressTarget, Target};
use crate::desired::{Desired, NatMode};
use crate::observed::Scope;

pub(super) fn resolve(d: &Desired, t: &mut Target) {
    let lo = t.links[0].clone();
    for prefix in d.service_addresses() {
        t.addresses.push(AddressTarget {
            index: lo.index,
            ifname: lo.ifname.clone(),
            prefix,
            scope: Scope::Global,
        });
    }
    let uplinks = t.uplinks().to_vec();
    for (u, link) in d.uplinks.iter().zip(&uplinks) {
        if let Some(v4) = &u.ipv4 {
            // Scope link: the kernel's source selection (and so MASQUERADE)
            // skips the transit address and picks the service IP on lo. The
            // snat and none modes keep it global (snat translates explicitly).
            t.addresses.push(AddressTarget {
                index: link.index,
                ifname: link.ifname.clone(),
                prefix: IpNet::V4(v4.address),
                scope: match d.nat.mode {
                    NatMode::ScopeLink => Scope::Link,
                    NatMode::Snat | NatMode::None => Scope::Global,
                },
            });
        }
        if let Some(v6) = &u.ipv6 {
            // IPv6 derives the scope from the address itself; asking for
            // another would never converge.
            let scope = if v6.address.addr().segments()[0] & 0xffc0 == 0xfe80 {
                Scope::Link
            } else {
                Scope::Global
            };
            t.addresses.push(AddressTarget {
                index: link.index,
                ifname: link.ifname.clone(),
                prefix: IpNet::V6(v6.address),
                scope,
            });
        }
    }
}
