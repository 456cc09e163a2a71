//! Our nftables table: SNAT (snat mode) and the tunnel mark guard on the
//! resolved uplinks.

use super::Target;
use crate::desired::Desired;

pub(super) fn resolve(d: &Desired, t: &mut Target) {
    t.nft = crate::nft::desired_ruleset(&crate::nft::NatParams {
        mode: d.nat.mode,
        service_ipv4: d.service_ipv4.addr(),
        uplinks: t.uplinks().iter().map(|l| l.ifname.clone()).collect(),
        pod_cidrs: d.pods.cidrs.clone(),
        guard: d.nat.guard,
    });
}
