//! The lab's naming and addressing plan: pure, no I/O. Every other module asks
//! this one for names, addresses and paths so the scheme lives in one place.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Largest lab: transit /31s use 172.30.<2i>.0 and 172.30.<2i+1>.0.
pub const MAX_HOSTS: u8 = 100;
/// MTU of every veth in the lab (the role profile asks for 9000 on uplinks;
/// the ToR ends match so nothing is dropped by an MTU mismatch).
pub const LINK_MTU: u32 = 9000;
/// The host BIRD syncs this kernel table (the profile's `underlay-host`).
pub const HOST_TABLE: u32 = 1001;
/// Protocol number of the agent's rules.
pub const RULE_PROTOCOL: u32 = 211;
/// Rules the agent creates: (priority, table as `ip -j rule` prints it).
pub const EXPECTED_RULES: [(u32, &str); 2] = [(30000, "main"), (30001, "1001")];

/// The client's own address (on its `lo`) inside the client subnet that both
/// ToRs announce to the hosts.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 99, 1);
pub const CLIENT_SUBNET: &str = "192.168.99.0/24";
/// The ToR-to-ToR link (tor-a .0, tor-b .1): it carries an eBGP session so a
/// ToR that lost its link to a host still reaches it through the other ToR.
/// Without it, the client (which has a static ECMP default, no BGP) would keep
/// hashing half of its flows into the ToR that lost the host.
pub const TOR_PEER_NET: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 0);

/// What `up` records in `<dir>/lab.json` before it creates anything, so that
/// `status`, `test` and `down` (also after a partial `up`) know the lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lab {
    pub dir: PathBuf,
    pub prefix: String,
    pub hosts: u8,
    /// The role profile `up` gave to `underlay apply` (scenarios re-run the
    /// agent with it).
    #[serde(default)]
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tor {
    A,
    B,
}

impl Tor {
    pub const ALL: [Tor; 2] = [Tor::A, Tor::B];

    /// Short name: namespace suffix, directory name, BGP protocol name stem.
    pub fn name(self) -> &'static str {
        match self {
            Tor::A => "tor-a",
            Tor::B => "tor-b",
        }
    }
    pub fn asn(self) -> u32 {
        match self {
            Tor::A => 65001,
            Tor::B => 65002,
        }
    }
    pub fn router_id(self) -> Ipv4Addr {
        match self {
            Tor::A => Ipv4Addr::new(10, 255, 0, 1),
            Tor::B => Ipv4Addr::new(10, 255, 0, 2),
        }
    }
    /// Index of the uplink (eth0/eth1) on each host and client.
    pub fn index(self) -> u8 {
        match self {
            Tor::A => 0,
            Tor::B => 1,
        }
    }
    pub fn other(self) -> Tor {
        match self {
            Tor::A => Tor::B,
            Tor::B => Tor::A,
        }
    }
    /// ToR side (.0) and client side (.1) of the client transit /31.
    pub fn client_link(self) -> (Ipv4Addr, Ipv4Addr) {
        let third = 100 + self.index();
        (
            Ipv4Addr::new(192, 168, third, 0),
            Ipv4Addr::new(192, 168, third, 1),
        )
    }
    /// This ToR's address on the ToR-to-ToR link.
    pub fn peer_link_addr(self) -> Ipv4Addr {
        let o = TOR_PEER_NET.octets();
        Ipv4Addr::new(o[0], o[1], o[2], self.index())
    }
}

/// One uplink of a host: the veth `host_if` in the host namespace and its
/// peer `tor_if` in the ToR namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub tor: Tor,
    pub host_if: String,
    pub tor_if: String,
    pub host_addr: Ipv4Addr,
    pub tor_addr: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub index: u8,
    /// `h<i>`: directory name, hostname, ToR-side interface name.
    pub name: String,
    pub netns: String,
    pub pod_netns: String,
    pub service_ip: Ipv4Addr,
    pub asn: u32,
    pub zone: String,
    pub rack: String,
    pub pod_block: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
    pub uplinks: [Uplink; 2],
    /// Router id of the Calico-role BIRD (must differ from the host BIRD's).
    pub calico_router_id: Ipv4Addr,
}

pub const POD_BLOCK_LEN: u8 = 26;
/// The host-side veth of the pod, named like Calico's `cali*` interfaces.
pub const POD_HOST_IF: &str = "calipod0";
/// Calico's fixed pod gateway, answered by proxy ARP on the host side.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

impl Lab {
    pub fn new(dir: &Path, prefix: &str, hosts: u8) -> Result<Lab> {
        if hosts == 0 || hosts > MAX_HOSTS {
            bail!("--hosts {hosts}: the lab supports 1 to {MAX_HOSTS} hosts");
        }
        validate_prefix(prefix)?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            hosts,
            profile: None,
        })
    }

    pub fn state_file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    pub fn load(dir: &Path) -> Result<Lab> {
        let path = Lab::state_file(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: no lab here (run `underlay-lab up` first)",
                path.display()
            )
        })?;
        let lab: Lab = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a lab state file", path.display()))?;
        Ok(lab)
    }

    pub fn save(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create lab dir {}", self.dir.display()))?;
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(Lab::state_file(&self.dir), text + "\n")
            .with_context(|| format!("write {}", Lab::state_file(&self.dir).display()))
    }

    pub fn tor_netns(&self, tor: Tor) -> String {
        format!("{}{}", self.prefix, tor.name())
    }
    pub fn client_netns(&self) -> String {
        format!("{}client", self.prefix)
    }
    /// The fleet's management namespace (`underlay-lab fleet`): sshd on
    /// every host is reached from here, and ansible-playbook runs here.
    pub fn mgmt_netns(&self) -> String {
        format!("{}mgmt", self.prefix)
    }
    pub fn tor_dir(&self, tor: Tor) -> PathBuf {
        self.dir.join(tor.name())
    }

    pub fn host(&self, index: u8) -> Host {
        let name = format!("h{index}");
        let uplink = |tor: Tor| {
            let third = 2 * index + tor.index();
            Uplink {
                tor,
                host_if: format!("eth{}", tor.index()),
                tor_if: name.clone(),
                host_addr: Ipv4Addr::new(172, 30, third, 1),
                tor_addr: Ipv4Addr::new(172, 30, third, 0),
            }
        };
        Host {
            index,
            netns: format!("{}{}", self.prefix, name),
            pod_netns: format!("{}{}-pod", self.prefix, name),
            service_ip: Ipv4Addr::new(10, 10, 0, 10 + index),
            asn: 65100 + u32::from(index),
            zone: "az1".to_string(),
            rack: format!("r{index:02}"),
            pod_block: Ipv4Addr::new(10, 244, index, 0),
            pod_ip: Ipv4Addr::new(10, 244, index, 1),
            uplinks: [uplink(Tor::A), uplink(Tor::B)],
            calico_router_id: Ipv4Addr::new(10, 255, 1, index),
            name,
        }
    }

    pub fn hosts(&self) -> Vec<Host> {
        (1..=self.hosts).map(|i| self.host(i)).collect()
    }

    /// Every namespace of the lab, in the order `up` creates them.
    pub fn all_netns(&self) -> Vec<String> {
        let mut v = vec![
            self.tor_netns(Tor::A),
            self.tor_netns(Tor::B),
            self.client_netns(),
        ];
        for h in self.hosts() {
            v.push(h.netns.clone());
            v.push(h.pod_netns.clone());
        }
        v
    }
}

impl Host {
    pub fn dir(&self, lab: &Lab) -> PathBuf {
        lab.dir.join(&self.name)
    }
    /// The agent's `--root`: every file it writes lands below it.
    pub fn root(&self, lab: &Lab) -> PathBuf {
        self.dir(lab).join("root")
    }
    pub fn facts_file(&self, lab: &Lab) -> PathBuf {
        self.dir(lab).join("host.toml")
    }
    pub fn bird_conf(&self, lab: &Lab) -> PathBuf {
        self.root(lab).join("etc/bird/bird.conf")
    }
    pub fn bird_run_dir(&self, lab: &Lab) -> PathBuf {
        self.root(lab).join("run/bird")
    }
    pub fn calico_dir(&self, lab: &Lab) -> PathBuf {
        self.dir(lab).join("calico")
    }
    pub fn pod_block_cidr(&self) -> String {
        format!("{}/{}", self.pod_block, POD_BLOCK_LEN)
    }
    /// The block after the pod block (10.244.<i>.64/26): the route the
    /// Calico-role BIRD announces and withdraws in the table-fight scenarios.
    pub fn churn_block_cidr(&self) -> String {
        let o = self.pod_block.octets();
        format!(
            "{}/{}",
            Ipv4Addr::new(o[0], o[1], o[2], o[3] + (1u8 << (32 - POD_BLOCK_LEN))),
            POD_BLOCK_LEN
        )
    }
    /// Where `underlay apply` reads a BIRD template override (profile default
    /// `bgp.templates_dir` = /etc/underlay/templates, below `--root`).
    pub fn bird_template_override(&self, lab: &Lab) -> PathBuf {
        self.root(lab).join("etc/underlay/templates/bird.conf.j2")
    }
    pub fn tor_peers(&self) -> Vec<Ipv4Addr> {
        self.uplinks.iter().map(|u| u.tor_addr).collect()
    }
}

/// Namespace names end up in /run/netns and in `ip` arguments: keep them tame.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 24
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("--prefix {prefix:?}: use 1-24 characters from [A-Za-z0-9_-], e.g. `ul-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Lab {
        Lab::new(Path::new("/tmp/x"), "ul-", 2).unwrap()
    }

    #[test]
    fn host_plan_matches_the_conventions() {
        let h = lab().host(1);
        assert_eq!(h.netns, "ul-h1");
        assert_eq!(h.pod_netns, "ul-h1-pod");
        assert_eq!(h.service_ip, Ipv4Addr::new(10, 10, 0, 11));
        assert_eq!(h.asn, 65101);
        assert_eq!(h.rack, "r01");
        assert_eq!(h.pod_block_cidr(), "10.244.1.0/26");
        assert_eq!(h.churn_block_cidr(), "10.244.1.64/26");
        assert_eq!(h.uplinks[0].host_if, "eth0");
        assert_eq!(h.uplinks[0].tor_addr, Ipv4Addr::new(172, 30, 2, 0));
        assert_eq!(h.uplinks[0].host_addr, Ipv4Addr::new(172, 30, 2, 1));
        assert_eq!(h.uplinks[1].host_if, "eth1");
        assert_eq!(h.uplinks[1].tor_addr, Ipv4Addr::new(172, 30, 3, 0));
        assert_eq!(
            h.bird_conf(&lab()),
            Path::new("/tmp/x/h1/root/etc/bird/bird.conf")
        );
    }

    #[test]
    fn transit_nets_never_overlap_the_tor_peer_link() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", MAX_HOSTS).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(TOR_PEER_NET);
        for h in lab.hosts() {
            for u in &h.uplinks {
                assert!(seen.insert(u.tor_addr), "{} reused", u.tor_addr);
            }
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(Lab::new(Path::new("/tmp/x"), "ul-", 0).is_err());
        assert!(Lab::new(Path::new("/tmp/x"), "ul-", MAX_HOSTS + 1).is_err());
        assert!(Lab::new(Path::new("/tmp/x"), "ul /", 2).is_err());
    }

    #[test]
    fn all_netns_carry_the_prefix() {
        let lab = Lab::new(Path::new("/tmp/x"), "ult42-", 2).unwrap();
        assert!(lab.all_netns().iter().all(|n| n.starts_with("ult42-")));
        assert_eq!(lab.all_netns().len(), 3 + 2 * 2);
    }
}
