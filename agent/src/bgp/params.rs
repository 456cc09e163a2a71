//! Input of the BIRD 2 renderer: plain data, no I/O.
//!
//! The engine builds a [`BirdParams`] from its validated `Desired` model; [`crate::bgp::render`]
//! re-checks only what BIRD's syntax cannot express (identifiers, quoting: the rules of
//! [`crate::bgp::names`], which the profile validator applies too) and turns it into a
//! configuration file. Semantic limits (timers, prefix lengths, address families) are the
//! profile validator's; BIRD's own parser (`bird -p`) checks every rendered file before it is
//! written.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Everything the host BIRD configuration depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdParams {
    /// BIRD router id; the service IPv4 address.
    pub router_id: Ipv4Addr,
    pub local_asn: u32,
    /// Kernel name of the host table (`underlay-host`); BIRD table names are derived from it
    /// with [`crate::bgp::render::bird_identifier`] plus a `4`/`6` suffix.
    pub host_table_name: String,
    /// Kernel table id the host BIRD syncs. Never 254 (main), 255 (local) or 253 (default).
    pub host_table_id: u32,
    /// The service address, a /32 on `lo`.
    pub service_ipv4: Ipv4Net,
    /// Optional IPv6 service address, a /128 on `lo`. Enables the IPv6 table, kernel protocol
    /// and the IPv6 uplink sessions.
    pub service_ipv6: Option<Ipv6Net>,
    /// One eBGP session per uplink and address family.
    pub uplinks: Vec<BirdUplink>,
    pub timers: BgpTimers,
    /// BFD on the uplink sessions; `None` disables it.
    pub bfd: Option<BfdParams>,
    /// Graceful restart on the uplink sessions; `None`: off.
    pub graceful_restart: Option<GracefulRestartParams>,
    /// The `log` statement's target.
    pub log: LogTarget,
    /// Pod ranges: prefixes inside these (any length) may be learned from Calico and are
    /// announced to the ToRs.
    pub pod_cidrs: Vec<IpNet>,
    /// The session to Calico's BIRD, tiered behind the host BIRD.
    pub calico: Option<CalicoPeer>,
}

/// One uplink to a top-of-rack switch.
#[derive(Clone, PartialEq, Eq)]
pub struct BirdUplink {
    /// Logical name (`tor-a`); the BGP protocol is named after it (`tor_a`, `tor_a_v6`).
    pub name: String,
    /// Kernel interface carrying the session.
    pub ifname: String,
    pub local_v4: Option<Ipv4Addr>,
    /// Peer transit address; `None` means no IPv4 session on this uplink.
    pub peer_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// Peer transit address (global or link-local); `None` means no IPv6 session.
    pub peer_v6: Option<Ipv6Addr>,
    pub peer_asn: u32,
    /// TCP MD5 password; written into the config, never printed by `Debug`.
    pub password: Option<String>,
}

impl fmt::Debug for BirdUplink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BirdUplink")
            .field("name", &self.name)
            .field("ifname", &self.ifname)
            .field("local_v4", &self.local_v4)
            .field("peer_v4", &self.peer_v4)
            .field("local_v6", &self.local_v6)
            .field("peer_v6", &self.peer_v6)
            .field("peer_asn", &self.peer_asn)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Graceful restart as announced to the ToRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartParams {
    /// `graceful restart time`: how long a ToR keeps our routes while we restart.
    pub restart_time: u16,
    /// `long lived stale time` with LLGR on; `None` renders `long lived graceful restart off`
    /// (BIRD's default with GR on is `aware`, which lets an expired hold timer count as a
    /// restart and keeps a dead ToR's routes for its restart time).
    pub long_lived_stale_time: Option<u32>,
}

impl Default for GracefulRestartParams {
    fn default() -> Self {
        GracefulRestartParams {
            restart_time: 120,
            long_lived_stale_time: None,
        }
    }
}

/// Where BIRD logs (`log <target> all;`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    #[default]
    Syslog,
    Stderr,
    /// The path BIRD opens (already below --root); its directory must exist when BIRD starts.
    File(String),
}

/// BGP timers in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgpTimers {
    /// 0: no hold timer and no keepalives (BIRD then refuses any keepalive time).
    pub hold: u16,
    pub keepalive: u16,
    /// Delay between protocol start and the first connect attempt (BIRD default 5 s, which
    /// alone delays the second ECMP path by seconds).
    pub connect_delay: u16,
    pub connect_retry: u16,
    /// Back-off after an error: starts at `error_wait_min`, doubles up to `error_wait_max`.
    pub error_wait_min: u16,
    pub error_wait_max: u16,
}

impl Default for BgpTimers {
    /// Fast timers for a point-to-point data-centre link.
    fn default() -> Self {
        BgpTimers {
            hold: 9,
            keepalive: 3,
            connect_delay: 1,
            connect_retry: 2,
            error_wait_min: 1,
            error_wait_max: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdParams {
    /// Transmit and receive interval.
    pub interval_ms: u32,
    pub multiplier: u8,
}

impl Default for BfdParams {
    fn default() -> Self {
        BfdParams {
            interval_ms: 100,
            multiplier: 3,
        }
    }
}

/// The session from the host BIRD to Calico's BIRD. Both ends must use different addresses
/// (a next hop equal to the neighbour's own address is rejected) and Calico's BIRD another
/// port, so that the host BIRD keeps 179.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalicoPeer {
    /// Host BIRD side, e.g. 127.0.0.1. Its family selects the channel (ipv4 or ipv6).
    pub local_address: IpAddr,
    /// Calico BIRD side, e.g. 127.0.0.2.
    pub peer_address: IpAddr,
    /// Calico's BGPConfiguration `listenPort`, e.g. 1179.
    pub peer_port: u16,
    pub peer_asn: u32,
    /// Port the host BIRD listens on for this session; `None` keeps 179.
    pub local_port: Option<u16>,
    /// Send Calico a default route (learned from the ToRs); otherwise export nothing.
    pub export_default: bool,
}
