//! What the kernel filter keeps for watch mode, derived from the resolved
//! target: a notification wakes only if the plan could differ because of it.

use crate::desired::{Desired, Family, NicMatch};
use crate::plan::Target;
use crate::system::events::{
    AddressInterest, Interest, LinkInterest, LinkWant, NetconfAttr, NetconfInterest, NETCONF_ALL,
    NETCONF_DEFAULT,
};

/// `target`: the last resolved one (`None` before the first resolve, or
/// while an uplink's NIC is missing: then new links matching an uplink wake).
pub fn interest(d: &Desired, target: Option<&Target>) -> Interest {
    let mut i = Interest {
        protocol: d.protocol.get(),
        host_table: d.bgp.as_ref().map(|b| b.host_table.id.get()),
        ..Interest::default()
    };
    for u in &d.uplinks {
        match &u.nic {
            NicMatch::Name(n) => i.nic_names.push(n.as_str().to_string()),
            NicMatch::Mac(m) => i.nic_macs.push(*m),
        }
    }
    let Some(t) = target else {
        return i;
    };
    i.links = t
        .links
        .iter()
        .map(|l| LinkInterest {
            index: l.index,
            name: l.ifname.clone(),
            want: LinkWant::Drift { mtu: l.mtu },
        })
        .collect();
    i.addresses = t
        .addresses
        .iter()
        .map(|a| AddressInterest {
            index: a.index,
            addr: a.prefix.addr(),
            prefix_len: a.prefix.prefix_len(),
            scope: a.scope,
        })
        .collect();
    i.rules = t.rules.clone();
    for (key, value) in &t.sysctls {
        let parts: Vec<&str> = key.parts().iter().map(String::as_str).collect();
        let Some((family, dev, attr)) = netconf_of(&parts) else {
            continue;
        };
        let ifindex = match dev {
            "all" => NETCONF_ALL,
            "default" => NETCONF_DEFAULT,
            name => match t.links.iter().find(|l| l.ifname == name) {
                Some(l) => l.index as i32,
                None => continue,
            },
        };
        if let Ok(value) = value.trim().parse() {
            i.netconf.push(NetconfInterest {
                family,
                ifindex,
                attr,
                value,
            });
        }
    }
    i
}

/// The sysctls the kernel announces with RTM_NEWNETCONF when they change.
fn netconf_of<'a>(parts: &[&'a str]) -> Option<(Family, &'a str, NetconfAttr)> {
    match parts {
        ["net", "ipv4", "ip_forward"] => Some((Family::Ipv4, "all", NetconfAttr::Forwarding)),
        ["net", fam, "conf", dev, setting] => {
            let family = match *fam {
                "ipv4" => Family::Ipv4,
                "ipv6" => Family::Ipv6,
                _ => return None,
            };
            let attr = match (family, *setting) {
                (_, "forwarding") => NetconfAttr::Forwarding,
                (Family::Ipv4, "rp_filter") => NetconfAttr::RpFilter,
                (Family::Ipv4, "proxy_arp") | (Family::Ipv6, "proxy_ndp") => {
                    NetconfAttr::ProxyNeigh
                }
                (_, "ignore_routes_with_linkdown") => NetconfAttr::IgnoreRoutesWithLinkdown,
                _ => return None,
            };
            Some((family, dev, attr))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_announced_sysctls_become_netconf_interest() {
        fn p(s: &str) -> Vec<&str> {
            s.split('.').collect()
        }
        assert_eq!(
            netconf_of(&p("net.ipv4.ip_forward")),
            Some((Family::Ipv4, "all", NetconfAttr::Forwarding))
        );
        assert_eq!(
            netconf_of(&p("net.ipv4.conf.eth0.rp_filter")),
            Some((Family::Ipv4, "eth0", NetconfAttr::RpFilter))
        );
        assert_eq!(
            netconf_of(&p("net.ipv6.conf.all.forwarding")),
            Some((Family::Ipv6, "all", NetconfAttr::Forwarding))
        );
        assert_eq!(netconf_of(&p("net.ipv6.conf.eth0.rp_filter")), None);
        assert_eq!(netconf_of(&p("net.ipv4.conf.all.arp_ignore")), None);
        assert_eq!(netconf_of(&p("net.ipv4.fib_multipath_hash_policy")), None);
    }
}
