//! Raw facts of one host, as collected (or built by hand in tests). Tool
//! output is kept as text and parsed by the checks, so a unit test can feed
//! the exact text `iptables-save` or `conntrack -L` printed on a broken host.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;

use crate::bgp::{BfdSession, BgpDetail};
use crate::observed::{NextHop, Scope};
use crate::state::State;
use crate::system::BirdProtocol;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    /// `(command, stdout)` of `iptables-save` and `ip6tables-save` (and the
    /// legacy variants when legacy tables exist).
    pub iptables: Vec<(String, String)>,
    /// `nft -j list ruleset`; `None` when nft is missing or failed (see notes).
    pub nft_ruleset: Option<serde_json::Value>,
    /// `conntrack -L --src-nat` output (both families); `None` when unavailable.
    pub conntrack: Option<String>,
    /// Listening TCP sockets of this namespace.
    pub listeners: Vec<Listener>,
    /// BIRD processes in this network namespace.
    pub birds: Vec<BirdProcess>,
    /// `/proc/sys` values by dotted key (`net.ipv4.conf.eth0.rp_filter`).
    pub sysctls: BTreeMap<String, String>,
    /// Files below --root by logical path, only those that exist.
    pub files: BTreeMap<PathBuf, String>,
    /// systemd-networkd link state files (`/run/systemd/netif/links/<ifindex>`).
    pub networkd_links: BTreeMap<u32, String>,
    /// NetworkManager device state files (`/run/NetworkManager/devices/<ifindex>`).
    pub nm_devices: BTreeMap<u32, String>,
    /// Default route next hops of the profile's host table (profile only).
    pub host_nexthops: Option<Result<Vec<NextHop>, String>>,
    /// `show protocols` per BIRD control socket.
    pub bird_sessions: Vec<BirdSessions>,
    /// `show bfd sessions` of the profile's BIRD (profile with BFD only).
    pub bfd_sessions: Option<Result<Vec<BfdSession>, String>>,
    /// `show protocols all <name>` of each ToR session of the profile's BIRD.
    pub bgp_details: Vec<(String, Result<BgpDetail, String>)>,
    /// The state file `--state` names and whether a checkpoint waits beside it.
    pub state: Option<StateFacts>,
    /// What could not be collected.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFacts {
    /// Where it is (below --root).
    pub path: PathBuf,
    /// `Ok(None)`: no state file (underlay has not converged this host).
    pub state: Result<Option<State>, String>,
    /// A safe apply's checkpoint waits for confirmation (or a rollback).
    pub checkpoint: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// rtnetlink kind: `vxlan`, `ipip`, `veth`...; `None` for plain NICs and lo.
    pub kind: Option<String>,
    /// VXLAN destination port.
    pub vxlan_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub ifname: String,
    pub prefix: IpNet,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
    /// `(pid, comm)` of the processes holding the socket.
    pub owners: Vec<(u32, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdProcess {
    pub pid: u32,
    /// `comm`: `bird`, `bird6` (BIRD 1.x IPv6), `calico-bird`...
    pub comm: String,
    pub config_path: PathBuf,
    /// `None`: unreadable (the check says so).
    pub config: Option<String>,
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdSessions {
    pub socket: PathBuf,
    /// Whose socket: "profile" or "pid N".
    pub owner: String,
    pub protocols: Result<Vec<BirdProtocol>, String>,
}

/// What the profile says this host should look like, resolved to its NICs.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub uplinks: Vec<ExpectedUplink>,
    pub service_ipv4: Option<Ipv4Addr>,
    pub service_ipv6: Option<Ipv6Addr>,
    /// Host table id and the next hops its default needs.
    pub host_table: Option<(u32, u32)>,
    /// BIRD protocol names of the ToR sessions.
    pub tor_sessions: Vec<String>,
    /// Each ToR session with the ToR's address and our interface.
    pub tor_peers: Vec<TorPeer>,
    /// BFD detection time the profile asks for (interval × multiplier, ms);
    /// `None`: BFD disabled.
    pub bfd_detect_ms: Option<u32>,
    /// The profile's BGP hold time (s).
    pub hold_time: Option<u16>,
    /// `bgp.long_lived_graceful_restart = true`: LLGR on the uplinks is intended.
    pub llgr_intended: bool,
    /// The profile's control socket (logical path).
    pub bird_socket: Option<PathBuf>,
    /// Extra BGP ports (Calico's BIRD port).
    pub bgp_ports: Vec<u16>,
    /// `nat.mode = "snat"` or `"none"`: global transit addresses are intended.
    pub transit_global_intended: bool,
    /// NIC resolution failed (a missing NIC): reported as a failure.
    pub resolve_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorPeer {
    /// BIRD protocol name (`tor_a`).
    pub protocol: String,
    /// Logical uplink name (`tor-a`).
    pub uplink: String,
    pub peer: IpAddr,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedUplink {
    /// Logical name (`tor-a`).
    pub role: String,
    pub ifname: String,
    pub index: u32,
    pub transit: Vec<IpNet>,
}

impl Snapshot {
    pub fn link_name(&self, index: u32) -> String {
        self.links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
    }
}
