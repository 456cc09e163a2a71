//! Route reads for readiness gates and diagnostics. Dumps are filtered by
//! table in the kernel (strict checking), so a host with 100 000 routes in
//! main costs nothing when we look at the host table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::nl;
use crate::desired::Family;
use crate::observed::NextHop;
use crate::system::SystemError;

fn gateway(a: &RouteAttribute) -> Option<IpAddr> {
    match a {
        RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        RouteAttribute::Via(v) => match v {
            rtnetlink::packet_route::route::RouteVia::Inet(v4) => Some(IpAddr::V4(*v4)),
            rtnetlink::packet_route::route::RouteVia::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        },
        _ => None,
    }
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// The next hops of the default route in `table` (empty when there is none).
pub async fn default_nexthops(
    h: &Handle,
    table: u32,
    family: Family,
) -> Result<Vec<NextHop>, SystemError> {
    let mut msg = match family {
        Family::Ipv4 => RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .build(),
        Family::Ipv6 => RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(table)
            .build(),
    };
    // Under strict checking a dump filters on every non-zero header field.
    msg.header.protocol = RouteProtocol::Unspec;
    msg.header.kind = RouteType::Unspec;
    msg.header.scope = rtnetlink::packet_route::route::RouteScope::Universe;
    if table > 255 {
        msg.header.table = 252;
    }
    let routes: Vec<RouteMessage> = h
        .route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("dumping table {table}")))?;
    let mut hops = Vec::new();
    for r in routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0 && table_of(r) == table)
    {
        let mut single_oif = None;
        let mut single_gw = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::MultiPath(nhs) => {
                    for nh in nhs {
                        hops.push(NextHop {
                            gateway: nh.attributes.iter().find_map(gateway),
                            oif: nh.interface_index,
                        });
                    }
                }
                RouteAttribute::Oif(o) => single_oif = Some(*o),
                other => single_gw = single_gw.or_else(|| gateway(other)),
            }
        }
        if let Some(oif) = single_oif {
            hops.push(NextHop {
                gateway: single_gw,
                oif,
            });
        }
    }
    Ok(hops)
}
