//! Sample parameters shared by the render and namespace tests.

use std::net::{IpAddr, Ipv4Addr};

use crate::bgp::params::*;

/// Host side of the lab: service 10.9.0.1, uplinks up-a (10.0.0.1/31) and up-b (10.0.0.3/31).
pub fn two_uplinks_v4() -> BirdParams {
    BirdParams {
        router_id: Ipv4Addr::new(10, 9, 0, 1),
        local_asn: 65101,
        host_table_name: "underlay-host".into(),
        host_table_id: 1001,
        service_ipv4: "10.9.0.1/32".parse().unwrap(),
        service_ipv6: None,
        uplinks: vec![
            BirdUplink {
                name: "tor-a".into(),
                ifname: "up-a".into(),
                local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
                peer_v4: Some(Ipv4Addr::new(10, 0, 0, 0)),
                local_v6: None,
                peer_v6: None,
                peer_asn: 65001,
                password: Some("s3cret".into()),
            },
            BirdUplink {
                name: "tor-b".into(),
                ifname: "up-b".into(),
                local_v4: Some(Ipv4Addr::new(10, 0, 0, 3)),
                peer_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
                local_v6: None,
                peer_v6: None,
                peer_asn: 65002,
                password: None,
            },
        ],
        timers: BgpTimers::default(),
        bfd: Some(BfdParams::default()),
        graceful_restart: Some(GracefulRestartParams::default()),
        log: LogTarget::Syslog,
        pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        calico: None,
    }
}

pub fn with_v6() -> BirdParams {
    let mut p = two_uplinks_v4();
    p.service_ipv6 = Some("2001:db8:9::1/128".parse().unwrap());
    p.uplinks[0].local_v6 = Some("2001:db8:a::1".parse().unwrap());
    p.uplinks[0].peer_v6 = Some("2001:db8:a::".parse().unwrap());
    // Link-local peer on the second uplink: BIRD needs the interface, which we always give.
    p.uplinks[1].peer_v6 = Some("fe80::2".parse().unwrap());
    p.pod_cidrs.push("fd00:244::/56".parse().unwrap());
    p
}

pub fn with_calico() -> BirdParams {
    let mut p = two_uplinks_v4();
    p.calico = Some(CalicoPeer {
        local_address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        peer_address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        peer_port: 1179,
        peer_asn: 65101,
        local_port: None,
        export_default: false,
    });
    p
}

pub fn bfd_off() -> BirdParams {
    let mut p = two_uplinks_v4();
    p.bfd = None;
    p.graceful_restart = None;
    p
}

/// Every golden variant, by golden file name.
pub fn variants() -> Vec<(&'static str, BirdParams)> {
    let mut calico_default = with_calico();
    if let Some(c) = calico_default.calico.as_mut() {
        c.export_default = true;
        c.local_port = Some(1180);
    }
    vec![
        ("two_uplinks_v4.conf", two_uplinks_v4()),
        ("with_v6.conf", with_v6()),
        ("with_calico.conf", with_calico()),
        ("calico_export_default.conf", calico_default),
        ("bfd_off.conf", bfd_off()),
    ]
}
