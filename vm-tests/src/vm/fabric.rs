//! The VM tier's fabric: the namespace lab's two ToRs (BIRD 2, same configs)
//! and client, with VMs in place of the host namespaces. A VM's uplink to a
//! ToR is a tap in the ToR's namespace named like the lab's veth (`h<i>`),
//! with the ToR's transit address on it; the VM's host facts match its NICs
//! by MAC (Debian's kernel names them enp0s*, as a real fleet's would be).

use std::fmt::Write as _;

use anyhow::{Context, Result};

use crate::bird::{self, Bird};
use crate::cmd::{self, ip};
use crate::plan::{Host, Lab, Tor, LINK_MTU};
use crate::topology;

use super::qemu::Nic;

/// The MAC of host `h`'s NIC towards `tor`: 52:54:00:10:<host>:<tor>.
pub fn mac(h: &Host, tor: Tor) -> String {
    format!("52:54:00:10:{:02x}:{:02x}", h.index, tor.index())
}

pub fn nics(lab: &Lab, h: &Host) -> Vec<Nic> {
    h.uplinks
        .iter()
        .map(|u| Nic {
            netns: lab.tor_netns(u.tor),
            tap: u.tor_if.clone(),
            mac: mac(h, u.tor),
        })
        .collect()
}

/// Namespaces of a VM lab: the ToRs and the client (the hosts are VMs).
pub fn netns(lab: &Lab) -> Vec<String> {
    vec![
        lab.tor_netns(Tor::A),
        lab.tor_netns(Tor::B),
        lab.client_netns(),
    ]
}

/// ToRs, their link, the client, and the ToR BIRDs (configured for every host).
pub fn up(lab: &Lab) -> Result<()> {
    lab.save()?;
    topology::ensure_fabric(lab).context("building the fabric")?;
    for tor in Tor::ALL {
        let b = Bird::tor(lab, tor);
        bird::write_if_changed(&b.conf, &bird::render_tor_conf(lab, tor))?;
        b.start_or_reload()?;
    }
    Ok(())
}

/// The ToR side of a VM's taps (which exist once its QEMU runs): MTU,
/// the ToR's transit address, up.
pub fn attach(lab: &Lab, h: &Host) -> Result<()> {
    for u in &h.uplinks {
        let ns = lab.tor_netns(u.tor);
        let mtu = LINK_MTU.to_string();
        ip(&ns, &["link", "set", "dev", &u.tor_if, "mtu", &mtu, "up"])?;
        ip(
            &ns,
            &[
                "addr",
                "replace",
                &format!("{}/31", u.tor_addr),
                "dev",
                &u.tor_if,
            ],
        )?;
    }
    Ok(())
}

/// Stops the ToR BIRDs and deletes the namespaces (the VMs are stopped first,
/// so their taps are gone already).
pub fn down(lab: &Lab) -> Result<Vec<String>> {
    let mut out = vec![];
    for tor in Tor::ALL {
        if Bird::tor(lab, tor).stop()? {
            out.push(format!("stopped the {} BIRD", tor.name()));
        }
    }
    for ns in netns(lab).into_iter().rev() {
        if cmd::netns_exists(&ns) {
            cmd::run("ip", &["netns", "del", &ns])?;
            out.push(format!("deleted namespace {ns}"));
        }
    }
    Ok(out)
}

/// Host facts for a VM: the namespace lab's addressing, NICs matched by MAC.
pub fn host_facts(h: &Host) -> String {
    let mut s = format!(
        "# written by underlay-lab vm: host facts of VM {name}\n\
         version = 1\n\n\
         hostname = \"{name}\"\n\
         zone = \"{zone}\"\n\
         rack = \"{rack}\"\n\
         asn = {asn}\n\n\
         service_ipv4 = \"{sip}/32\"\n",
        name = h.name,
        zone = h.zone,
        rack = h.rack,
        asn = h.asn,
        sip = h.service_ip,
    );
    for u in &h.uplinks {
        let _ = write!(
            s,
            "\n[[uplinks]]\nname = \"{}\"\nnic = {{ mac = \"{}\" }}\nipv4 = {{ address = \"{}/31\", peer = \"{}\" }}\npeer_asn = {}\n",
            u.tor.name(),
            mac(h, u.tor),
            u.host_addr,
            u.tor_addr,
            u.tor.asn()
        );
    }
    s
}

/// BGP state of host `h`'s session on each ToR, as the ToR's BIRD reports it.
pub fn tor_sessions(lab: &Lab, h: &Host) -> Vec<(Tor, String)> {
    Tor::ALL
        .iter()
        .map(|t| {
            let state = Bird::tor(lab, *t)
                .bgp_sessions()
                .ok()
                .and_then(|v| v.into_iter().find(|s| s.name == h.name))
                .map(|s| s.state)
                .unwrap_or_else(|| "unknown".into());
            (*t, state)
        })
        .collect()
}
