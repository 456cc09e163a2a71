//! The checks: pure functions of a [`Snapshot`] and the optional profile view
//! ([`Expect`]). Each returns exactly one [`Finding`] (ok and skipped
//! included), so the report always lists every check and why it passed.

mod bgp;
mod host;
mod nat;

use ipnet::IpNet;

use super::parse::{self, Firewall};
use super::{Finding, Severity};
use crate::doctor::snapshot::{Expect, Snapshot};
use bgp::{
    bfd_sessions, bgp_listeners, bgp_llgr, bgp_sessions, bird_shared_table, host_table_paths,
};
use host::{kubelet_node_ip, network_manager, networkd, rp_filter, underlay_state};
use nat::{conntrack_tunnel_nat, masquerade_transit, transit_global, tunnel_mark};

pub const PROFILE_UPLINKS: &str = "profile-uplinks";
pub const MASQUERADE_TRANSIT: &str = "masquerade-transit-source";
pub const TRANSIT_GLOBAL: &str = "transit-global-scope";
pub const TUNNEL_MARK: &str = "tunnel-mark-unguarded";
pub const CONNTRACK_TUNNEL_NAT: &str = "conntrack-tunnel-nat";
pub const BGP_LISTENERS: &str = "bgp-listener-conflict";
pub const BIRD_SHARED_TABLE: &str = "bird-kernel-table-shared";
pub const RP_FILTER: &str = "rp-filter-strict";
pub const NETWORKD: &str = "networkd-foreign-routes";
pub const NETWORK_MANAGER: &str = "networkmanager-uplink";
pub const KUBELET_NODE_IP: &str = "kubelet-node-ip";
pub const HOST_TABLE_PATHS: &str = "host-table-paths";
pub const BGP_SESSIONS: &str = "bgp-sessions";
pub const BFD_SESSIONS: &str = "bfd-sessions";
pub const BGP_LLGR: &str = "bgp-llgr-uplinks";
pub const UNDERLAY_STATE: &str = "underlay-state";

/// Every check id, in report order.
pub const ALL: &[&str] = &[
    PROFILE_UPLINKS,
    MASQUERADE_TRANSIT,
    TRANSIT_GLOBAL,
    TUNNEL_MARK,
    CONNTRACK_TUNNEL_NAT,
    BGP_LISTENERS,
    BIRD_SHARED_TABLE,
    RP_FILTER,
    NETWORKD,
    NETWORK_MANAGER,
    KUBELET_NODE_IP,
    HOST_TABLE_PATHS,
    BGP_SESSIONS,
    BFD_SESSIONS,
    BGP_LLGR,
    UNDERLAY_STATE,
];

/// Default VXLAN ports: IANA (Calico) and the Linux/flannel default.
pub(super) const VXLAN_DEFAULT_PORTS: [u16; 2] = [4789, 8472];

pub const NETWORKD_CONF: &str = "/etc/systemd/networkd.conf";
pub const NETWORKD_CONF_D: &str = "/etc/systemd/networkd.conf.d";
pub const KUBELET_FILES: &[&str] = &[
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
    "/var/lib/kubelet/config.yaml",
];

pub(super) fn finding(
    check: &'static str,
    severity: Severity,
    title: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        title: title.into(),
        evidence: Vec::new(),
        fix: String::new(),
    }
}

impl Finding {
    fn with(mut self, evidence: Vec<String>) -> Finding {
        self.evidence = evidence;
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }
}

pub fn run_checks(s: &Snapshot, e: Option<&Expect>) -> Vec<Finding> {
    let fw = firewall(s);
    vec![
        profile_uplinks(e),
        masquerade_transit(s, e, &fw),
        transit_global(s, e),
        tunnel_mark(s, e, &fw),
        conntrack_tunnel_nat(s),
        bgp_listeners(s, e),
        bird_shared_table(s),
        rp_filter(s, e),
        networkd(s, e),
        network_manager(s, e),
        kubelet_node_ip(s, e),
        host_table_paths(s, e),
        bgp_sessions(s, e),
        bfd_sessions(s, e),
        bgp_llgr(s, e),
        underlay_state(s),
    ]
}

pub fn firewall(s: &Snapshot) -> Firewall {
    let mut fw = Firewall::default();
    for (tool, text) in &s.iptables {
        parse::iptables_save(tool, text, &mut fw);
    }
    if let Some(doc) = &s.nft_ruleset {
        parse::nft_ruleset(doc, &s.iptables, &mut fw);
    }
    fw
}

/// An uplink as the checks see it.
#[derive(Debug, Clone)]
pub struct UplinkView {
    pub index: u32,
    pub ifname: String,
    /// Its transit prefixes (profile) or its IPv4 /31 and /30 addresses (generic).
    pub transit: Vec<IpNet>,
}

pub(super) fn is_transit_len(p: &IpNet) -> bool {
    matches!(p, IpNet::V4(v4) if v4.prefix_len() == 31 || v4.prefix_len() == 30)
}

/// The profile's uplinks, or without one every link holding an IPv4 /31 or /30.
pub fn uplinks(s: &Snapshot, e: Option<&Expect>) -> Vec<UplinkView> {
    if let Some(e) = e.filter(|e| e.resolve_error.is_none()) {
        return e
            .uplinks
            .iter()
            .map(|u| UplinkView {
                index: u.index,
                ifname: u.ifname.clone(),
                transit: u.transit.clone(),
            })
            .collect();
    }
    let mut out: Vec<UplinkView> = Vec::new();
    for a in s.addresses.iter().filter(|a| is_transit_len(&a.prefix)) {
        if a.ifname == "lo" {
            continue;
        }
        match out.iter_mut().find(|u| u.index == a.index) {
            Some(u) => u.transit.push(a.prefix),
            None => out.push(UplinkView {
                index: a.index,
                ifname: a.ifname.clone(),
                transit: vec![a.prefix],
            }),
        }
    }
    out
}

pub(super) fn no_uplinks(check: &'static str, e: Option<&Expect>) -> Finding {
    let why = if e.is_some() {
        "the profile's uplinks matched no NIC"
    } else {
        "no profile, and no link holds an IPv4 /31 or /30 (how uplinks are found without one)"
    };
    finding(check, Severity::Skipped, format!("no uplinks: {why}"))
}

fn profile_uplinks(e: Option<&Expect>) -> Finding {
    match e {
        None => finding(
            PROFILE_UPLINKS,
            Severity::Skipped,
            "no profile given: generic checks only (uplinks = links with an IPv4 /31 or /30)",
        ),
        Some(e) => match &e.resolve_error {
            Some(err) => finding(
                PROFILE_UPLINKS,
                Severity::Failure,
                "the profile's uplinks do not match this host's NICs",
            )
            .with(vec![err.clone()])
            .fix("Cable or rename the NIC, or fix the uplink's nic match in the host facts; uplink checks ran generically"),
            None => finding(
                PROFILE_UPLINKS,
                Severity::Ok,
                "every uplink of the profile matches a NIC",
            )
            .with(
                e.uplinks
                    .iter()
                    .map(|u| format!("{}: {} (ifindex {})", u.role, u.ifname, u.index))
                    .collect(),
            ),
        },
    }
}

#[cfg(test)]
mod tests;
