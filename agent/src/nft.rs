//! The `inet underlay` nftables table: optional pod-egress SNAT and the tunnel mark guard.
//!
//! Pipeline (docs/style.md): [`desired_ruleset`] (pure) and [`observe`] (reads only our table) feed
//! [`plan`] (pure), whose [`NftChange`] [`apply`] carries out in one atomic nft transaction.
//!
//! Why an `inet` table and not `ip`: the mark guard must also see VXLAN over IPv6 outer packets,
//! and one table keeps "the only nft object we create" literally true if IPv6 SNAT is added
//! later. `snat ip to` works in `inet` nat chains (kernel >= 5.2, nft >= 0.9.1).

mod apply;
mod desired;
mod exec;
mod observe;
mod plan;
mod render;
mod restore;

pub use crate::desired::{MarkGuard, NatMode, KUBE_MASQ_MARK, VXLAN_PORT};

use std::net::Ipv4Addr;

pub use apply::{apply, transaction};
pub use desired::{desired_ruleset, fingerprint};
pub use exec::{NftError, NftExec};
pub use observe::{observe, parse_listing, ObservedNat, ObservedRule, TableContent};
pub use plan::{plan, NftChange};
pub use restore::restore;

/// Family of the table we own.
pub const TABLE_FAMILY: &str = "inet";
/// Name of the table we own; nothing else in nftables is ever created or changed.
pub const TABLE_NAME: &str = "underlay";
/// Chain clearing the masquerade bit on outer tunnel packets.
pub const GUARD_CHAIN: &str = "mark_guard";
/// Chain SNATing pod egress and kube-proxy-marked traffic to the service IP (`snat` mode).
pub const SNAT_CHAIN: &str = "pod_snat";

/// `NF_IP_PRI_NAT_SRC`: the priority of the kernel's source-NAT hook ("srcnat"). Every nat
/// chain of postrouting (ours, iptables-nft's `ip nat`, kube-proxy's, Calico's) is run by the
/// NAT core from this one hook, ordered among themselves by their own priority, and the first
/// chain that sets a binding wins.
pub const SRCNAT: i32 = 100;
/// Guard chain priority: `srcnat - 1`, a filter chain that runs immediately before the NAT
/// core hook, so after anything else (mangle at -150, filter at 0) that might set the mark.
/// A filter chain at `srcnat + 1` is too late (verified: the outer entry is still masqueraded).
pub const GUARD_PRIORITY: i32 = SRCNAT - 1;
/// SNAT chain priority: `srcnat - 10`, ahead of kube-proxy's and Calico's nat chains (srcnat),
/// so our binding is the one the NAT core keeps.
pub const SNAT_PRIORITY: i32 = SRCNAT - 10;
/// IP protocol number of IP-in-IP.
pub const IPPROTO_IPIP: u32 = 4;

/// Everything the NAT layer needs to know; built by profile validation, never by hand-parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatParams {
    pub mode: NatMode,
    pub service_ipv4: Ipv4Addr,
    /// Uplink interface names. `snat` mode SNATs only what leaves through these, and the mark
    /// guard clears the bit only on tunnel packets leaving through these (the outer ones).
    pub uplinks: Vec<String>,
    /// Pod CIDRs. Only the IPv4 ones are used (the SNAT target is an IPv4 address).
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// On by default for overlay (ipip/vxlan) profiles.
    pub guard: Option<MarkGuard>,
}
