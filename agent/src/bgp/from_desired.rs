//! Maps the validated model onto the BIRD template's parameters, once the
//! uplinks are bound to interfaces.

use super::params::{BfdParams, BgpTimers, BirdParams, BirdUplink, CalicoPeer};
use crate::desired::{Bgp, Desired};

/// `ifnames`: the resolved interface name of each uplink, in profile order;
/// `passwords`: each uplink's BGP password, read from its password_file.
pub fn params(
    d: &Desired,
    bgp: &Bgp,
    ifnames: &[String],
    passwords: &[Option<String>],
) -> BirdParams {
    BirdParams {
        router_id: d.service_ipv4.addr(),
        local_asn: d.asn.get(),
        host_table_name: bgp.host_table.name.clone(),
        host_table_id: bgp.host_table.id.get(),
        service_ipv4: d.service_ipv4,
        service_ipv6: d.service_ipv6,
        uplinks: d
            .uplinks
            .iter()
            .zip(ifnames)
            .zip(passwords)
            .map(|((u, ifname), password)| BirdUplink {
                name: u.name.clone(),
                ifname: ifname.clone(),
                local_v4: u.ipv4.as_ref().map(|t| t.address.addr()),
                peer_v4: u.ipv4.as_ref().map(|t| t.peer),
                local_v6: u.ipv6.as_ref().map(|t| t.address.addr()),
                peer_v6: u.ipv6.as_ref().map(|t| t.peer),
                peer_asn: u.peer_asn.get(),
                password: password.clone(),
            })
            .collect(),
        timers: BgpTimers {
            hold: bgp.hold_time,
            keepalive: bgp.keepalive,
            connect_retry: bgp.connect_retry,
            ..BgpTimers::default()
        },
        bfd: bgp.bfd.map(|b| BfdParams {
            interval_ms: b.interval_ms,
            multiplier: b.multiplier,
        }),
        graceful_restart: bgp.graceful_restart,
        pod_cidrs: d.pods.cidrs.clone(),
        calico: bgp.calico.map(|c| CalicoPeer {
            local_address: c.host_address,
            peer_address: c.calico_address,
            peer_port: c.calico_port,
            peer_asn: c.calico_asn.get(),
            local_port: None,
            export_default: c.export_default,
        }),
    }
}
