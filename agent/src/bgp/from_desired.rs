//! Maps the validated model onto the BIRD template's parameters, once the
//! uplinks are bound to interfaces.

use std::path::Path;

use super::params::{
    BfdParams, BgpTimers, BirdParams, BirdUplink, CalicoPeer, GracefulRestartParams, LogTarget,
};
use crate::desired::{Bgp, BirdLog, Desired};

/// Default log file inside `--netns`, where there may be no syslog and no
/// unit that keeps BIRD's stderr (a logical path, below --root).
pub const NETNS_LOG_FILE: &str = "/var/log/bird/bird.log";

/// The `log` target for this run. `in_netns`: running inside `--netns`;
/// `real_path`: maps a logical path onto the one BIRD opens (below --root).
pub fn log_target(log: &BirdLog, in_netns: bool, real_path: impl Fn(&Path) -> String) -> LogTarget {
    match log {
        BirdLog::Syslog => LogTarget::Syslog,
        BirdLog::Stderr => LogTarget::Stderr,
        BirdLog::File(p) => LogTarget::File(real_path(p)),
        BirdLog::Auto if in_netns => LogTarget::File(real_path(Path::new(NETNS_LOG_FILE))),
        BirdLog::Auto => LogTarget::Syslog,
    }
}

/// Directories BIRD needs inside `--netns`, where no unit prepares them
/// (Debian's bird.service makes /run/bird): the control socket's and the
/// log file's (logical paths).
pub fn netns_dirs(bgp: &Bgp) -> Vec<std::path::PathBuf> {
    let log = match &bgp.log {
        BirdLog::File(p) => Some(p.clone()),
        BirdLog::Auto => Some(NETNS_LOG_FILE.into()),
        BirdLog::Syslog | BirdLog::Stderr => None,
    };
    let mut dirs: Vec<std::path::PathBuf> = [Some(bgp.control_socket.clone()), log]
        .into_iter()
        .flatten()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    dirs.dedup();
    dirs
}

/// `ifnames`: the resolved interface name of each uplink, in profile order;
/// `passwords`: each uplink's BGP password, read from its password_file;
/// `log`: from [`log_target`].
pub fn params(
    d: &Desired,
    bgp: &Bgp,
    ifnames: &[String],
    passwords: &[Option<String>],
    log: LogTarget,
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
        graceful_restart: bgp.graceful_restart.map(|g| GracefulRestartParams {
            restart_time: g.restart_time,
            long_lived_stale_time: g.long_lived_stale_time,
        }),
        log,
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
