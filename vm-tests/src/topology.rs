//! Namespaces, veth pairs, addresses and static routes of the lab. Everything
//! here is an "ensure": run twice, it detects what exists and repairs the rest.
//! Nothing is ever created in the root namespace: veth pairs are created with
//! both ends directly inside lab namespaces (`ip link add .. netns ..`).

use anyhow::{Context, Result};

use crate::cmd::{self, ip};
use crate::plan::{Host, Lab, Tor, CLIENT_IP, CLIENT_SUBNET, LINK_MTU, POD_GATEWAY, POD_HOST_IF};

/// Builds (or repairs) everything but the host's own configuration, which is
/// the agent's job: host uplinks are created down and without addresses.
pub fn ensure(lab: &Lab) -> Result<()> {
    for ns in lab.all_netns() {
        ensure_netns(&ns)?;
    }
    ensure_fabric(lab)?;
    for h in lab.hosts() {
        ensure_host_uplinks(lab, &h)?;
        ensure_pod(&h)?;
    }
    Ok(())
}

/// The fabric alone: both ToRs, the link between them and the client. The
/// QEMU tier attaches VMs to it instead of host namespaces.
pub fn ensure_fabric(lab: &Lab) -> Result<()> {
    for ns in [
        lab.tor_netns(Tor::A),
        lab.tor_netns(Tor::B),
        lab.client_netns(),
    ] {
        ensure_netns(&ns)?;
    }
    for tor in Tor::ALL {
        let ns = lab.tor_netns(tor);
        ensure_router_sysctls(&ns)?;
        clear_stale_fault(&ns)?;
    }
    ensure_router_sysctls(&lab.client_netns())?;
    ensure_tor_peer_link(lab)?;
    ensure_client(lab)
}

fn ensure_netns(ns: &str) -> Result<()> {
    if !cmd::netns_exists(ns) {
        cmd::run("ip", &["netns", "add", ns])?;
    }
    ip(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// A test interrupted during the silent-failure scenario leaves its nftables
/// table in the ToR namespace; `up` repairs that too.
fn clear_stale_fault(ns: &str) -> Result<()> {
    let table = crate::scenarios::FAULT_TABLE;
    if cmd::succeeds(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", "inet", table],
    ) {
        cmd::ns_exec(ns, "nft", &["delete", "table", "inet", table])?;
    }
    Ok(())
}

/// ToRs and the client forward, hash on L4 ports and do not filter by reverse
/// path: with ECMP and the ToR-to-ToR link, replies legitimately come back on
/// another interface.
fn ensure_router_sysctls(ns: &str) -> Result<()> {
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.fib_multipath_hash_policy", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        cmd::sysctl(ns, k, v)?;
    }
    Ok(())
}

/// A veth pair between two lab namespaces. A half pair (one end left by an
/// interrupted run) is deleted and recreated.
pub fn ensure_veth(ns_a: &str, if_a: &str, ns_b: &str, if_b: &str, mtu: u32) -> Result<()> {
    let a = cmd::link_exists(ns_a, if_a);
    let b = cmd::link_exists(ns_b, if_b);
    if a && b && peer_matches(ns_a, if_a, ns_b, if_b) {
        return Ok(());
    }
    if a {
        ip(ns_a, &["link", "del", "dev", if_a])?;
    }
    if b && cmd::link_exists(ns_b, if_b) {
        ip(ns_b, &["link", "del", "dev", if_b])?;
    }
    let mtu = mtu.to_string();
    cmd::run(
        "ip",
        &[
            "link", "add", if_a, "netns", ns_a, "mtu", &mtu, "type", "veth", "peer", "name", if_b,
            "netns", ns_b, "mtu", &mtu,
        ],
    )
    .with_context(|| format!("create veth {ns_a}/{if_a} <-> {ns_b}/{if_b}"))?;
    Ok(())
}

/// Both ends exist; check they are each other's peer (same pair) by comparing
/// the peer ifindex each end reports.
fn peer_matches(ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) -> bool {
    let idx = |ns: &str, ifname: &str| -> Option<(u64, u64)> {
        let v = cmd::ip_json(ns, &["link", "show", "dev", ifname]).ok()?;
        let l = v.get(0)?;
        Some((l.get("ifindex")?.as_u64()?, l.get("link_index")?.as_u64()?))
    };
    match (idx(ns_a, if_a), idx(ns_b, if_b)) {
        (Some((ia, pa)), Some((ib, pb))) => pa == ib && pb == ia,
        _ => false,
    }
}

fn addr_replace(ns: &str, cidr: &str, dev: &str, scope_link: bool) -> Result<()> {
    let mut a = vec!["addr", "replace", cidr, "dev", dev];
    if scope_link {
        a.extend_from_slice(&["scope", "link"]);
    }
    ip(ns, &a).map(|_| ())
}

fn link_up(ns: &str, dev: &str) -> Result<()> {
    ip(ns, &["link", "set", "dev", dev, "up"]).map(|_| ())
}

fn ensure_tor_peer_link(lab: &Lab) -> Result<()> {
    let (na, nb) = (lab.tor_netns(Tor::A), lab.tor_netns(Tor::B));
    ensure_veth(&na, "peer", &nb, "peer", LINK_MTU)?;
    for tor in Tor::ALL {
        let ns = lab.tor_netns(tor);
        addr_replace(&ns, &format!("{}/31", tor.peer_link_addr()), "peer", false)?;
        link_up(&ns, "peer")?;
    }
    Ok(())
}

/// The outside client: one link to each ToR, its address on `lo`, a static
/// ECMP default over both ToRs (it speaks no BGP).
fn ensure_client(lab: &Lab) -> Result<()> {
    let cns = lab.client_netns();
    for tor in Tor::ALL {
        let tns = lab.tor_netns(tor);
        let cif = format!("eth{}", tor.index());
        ensure_veth(&tns, "client", &cns, &cif, LINK_MTU)?;
        let (tor_addr, client_addr) = tor.client_link();
        addr_replace(&tns, &format!("{tor_addr}/31"), "client", false)?;
        addr_replace(&cns, &format!("{client_addr}/31"), &cif, true)?;
        link_up(&tns, "client")?;
        link_up(&cns, &cif)?;
        // The ToR's kernel route to the client subnet; BIRD announces it.
        ip(
            &tns,
            &[
                "route",
                "replace",
                CLIENT_SUBNET,
                "via",
                &client_addr.to_string(),
                "dev",
                "client",
            ],
        )?;
    }
    addr_replace(&cns, &format!("{CLIENT_IP}/32"), "lo", false)?;
    let (a, _) = Tor::A.client_link();
    let (b, _) = Tor::B.client_link();
    ip(
        &cns,
        &[
            "route",
            "replace",
            "default",
            "src",
            &CLIENT_IP.to_string(),
            "nexthop",
            "via",
            &a.to_string(),
            "dev",
            "eth0",
            "nexthop",
            "via",
            &b.to_string(),
            "dev",
            "eth1",
        ],
    )?;
    Ok(())
}

/// Host uplinks: the ToR end is configured here; the host end (eth0/eth1) is
/// left to the agent (address, MTU, up).
fn ensure_host_uplinks(lab: &Lab, h: &Host) -> Result<()> {
    for u in &h.uplinks {
        let tns = lab.tor_netns(u.tor);
        ensure_veth(&h.netns, &u.host_if, &tns, &u.tor_if, LINK_MTU)?;
        addr_replace(&tns, &format!("{}/31", u.tor_addr), &u.tor_if, false)?;
        link_up(&tns, &u.tor_if)?;
    }
    Ok(())
}

/// The pod behind the host, wired the way Calico (Felix) does it: the pod has
/// a /32 and a default via 169.254.1.1 onlink, the host side has no address,
/// answers ARP by proxy and routes the pod /32 in `main`.
fn ensure_pod(h: &Host) -> Result<()> {
    ensure_veth(&h.netns, POD_HOST_IF, &h.pod_netns, "eth0", 1500)?;
    cmd::sysctl(
        &h.netns,
        &format!("net.ipv4.conf.{POD_HOST_IF}.proxy_arp"),
        "1",
    )?;
    // Calico answers at once; the kernel's default delays proxy ARP up to 0.8 s.
    cmd::sysctl(
        &h.netns,
        &format!("net.ipv4.neigh.{POD_HOST_IF}.proxy_delay"),
        "0",
    )?;
    link_up(&h.netns, POD_HOST_IF)?;
    let pod = &h.pod_netns;
    addr_replace(pod, &format!("{}/32", h.pod_ip), "eth0", false)?;
    link_up(pod, "eth0")?;
    let gw = POD_GATEWAY.to_string();
    ip(
        pod,
        &["route", "replace", &gw, "dev", "eth0", "scope", "link"],
    )?;
    ip(
        pod,
        &[
            "route", "replace", "default", "via", &gw, "dev", "eth0", "onlink",
        ],
    )?;
    ip(
        &h.netns,
        &[
            "route",
            "replace",
            &format!("{}/32", h.pod_ip),
            "dev",
            POD_HOST_IF,
            "scope",
            "link",
        ],
    )?;
    Ok(())
}

/// Deletes the lab's namespaces (after the BIRDs inside were stopped).
/// Returns the names it deleted; missing ones are skipped.
pub fn delete_netns(lab: &Lab) -> Result<Vec<String>> {
    let mut deleted = vec![];
    let mut errors = vec![];
    let mut namespaces = lab.all_netns();
    // The fleet's management namespace, when `fleet up` made one.
    namespaces.push(lab.mgmt_netns());
    for ns in namespaces.into_iter().rev() {
        if !cmd::netns_exists(&ns) {
            continue;
        }
        match cmd::run("ip", &["netns", "del", &ns]) {
            Ok(_) => deleted.push(ns),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("could not delete: {}", errors.join("; "));
    }
    Ok(deleted)
}
