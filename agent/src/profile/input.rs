//! The serde mirror of the TOML files. Nothing here is the model: validation
//! (validate.rs) turns these into [`crate::desired::Desired`]. Fields whose
//! cross-checks need a location are `Spanned`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use toml::Spanned;

use crate::desired::{Asn, Encapsulation, IfName, MacAddr, ProtocolId, RulePriority, TableId};

/// Only the version key, read first so a later schema can be dispatched on it.
#[derive(Deserialize)]
pub struct VersionOnly {
    pub version: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleInput {
    pub version: u32,
    #[serde(default)]
    pub description: Option<String>,
    pub routing: RoutingInput,
    #[serde(default)]
    pub pods: PodsInput,
    #[serde(default)]
    pub uplinks: UplinkDefaultsInput,
    #[serde(default)]
    pub sysctl: SysctlInput,
    #[serde(default)]
    pub bgp: Option<BgpInput>,
    #[serde(default)]
    pub nat: Option<NatInput>,
    #[serde(default)]
    pub join: Option<super::join::RoleJoinInput>,
}

/// Source NAT correctness (docs/background.md failures 3 and 4).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatInput {
    #[serde(default)]
    pub mode: NatModeInput,
    #[serde(default)]
    pub guard: Option<GuardInput>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatModeInput {
    /// Transit addresses at scope link: every MASQUERADE picks the service IP.
    #[default]
    ScopeLink,
    /// Transit addresses at global scope, explicit SNAT to the service IP.
    Snat,
    /// Neither (transit addresses at global scope, no table).
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardInput {
    /// Default: on when pods.encapsulation is ipip or vxlan.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// kube-proxy's masquerade bit.
    #[serde(default)]
    pub mark: Option<Spanned<u32>>,
    #[serde(default)]
    pub ipip: Option<bool>,
    #[serde(default)]
    pub vxlan_port: Option<Spanned<u16>>,
}

/// The host BGP speaker (BIRD 2), tiered in front of Calico's BIRD.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpInput {
    /// The table the host BIRD syncs (one of routing.tables; never main).
    pub host_table: Spanned<String>,
    #[serde(default)]
    pub config_path: Option<Spanned<String>>,
    /// `user:group` a new config file is created for (default bird:bird).
    #[serde(default)]
    pub config_owner: Option<Spanned<String>>,
    #[serde(default)]
    pub control_socket: Option<Spanned<String>>,
    /// Directory whose bird.conf.j2 replaces the built-in template.
    #[serde(default)]
    pub templates_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub hold_time: Option<Spanned<u16>>,
    #[serde(default)]
    pub keepalive: Option<Spanned<u16>>,
    #[serde(default)]
    pub connect_retry: Option<Spanned<u16>>,
    #[serde(default)]
    pub graceful_restart: Option<bool>,
    #[serde(default)]
    pub bfd: Option<BfdInput>,
    #[serde(default)]
    pub calico: Option<CalicoInput>,
    #[serde(default)]
    pub readiness: Option<ReadinessInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdInput {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub interval_ms: Option<Spanned<u32>>,
    #[serde(default)]
    pub multiplier: Option<Spanned<u8>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalicoInput {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Host BIRD's end of the session (loopback).
    #[serde(default)]
    pub host_address: Option<Spanned<std::net::IpAddr>>,
    /// Calico BIRD's address and port (it must not bind the host BIRD's 179).
    #[serde(default)]
    pub calico_address: Option<Spanned<std::net::IpAddr>>,
    #[serde(default)]
    pub calico_port: Option<Spanned<u16>>,
    /// Calico's ASN; default: the host's (iBGP).
    #[serde(default)]
    pub calico_asn: Option<Asn>,
    /// Send Calico a default route (else export nothing to it).
    #[serde(default)]
    pub export_default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessInput {
    #[serde(default)]
    pub min_paths: Option<Spanned<u32>>,
    #[serde(default)]
    pub timeout_s: Option<Spanned<u32>>,
}

fn default_protocol() -> Spanned<ProtocolId> {
    Spanned::new(
        0..0,
        ProtocolId::try_from(211).expect("211 is a valid protocol"),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingInput {
    #[serde(default = "default_protocol")]
    pub protocol: Spanned<ProtocolId>,
    /// Opt in to table ids 1–250, which Calico Felix uses by default.
    #[serde(default)]
    pub allow_felix_table_ids: bool,
    #[serde(default)]
    pub tables: Vec<TableInput>,
    #[serde(default)]
    pub rules: Vec<RuleInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableInput {
    pub name: Spanned<String>,
    pub id: Spanned<TableId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub priority: Spanned<RulePriority>,
    pub table: Spanned<String>,
    #[serde(default)]
    pub suppress_prefixlength: Option<Spanned<u8>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodsInput {
    #[serde(default)]
    pub cidrs: Vec<Spanned<IpNet>>,
    #[serde(default)]
    pub encapsulation: Encapsulation,
    /// Pod CIDR per availability zone (Calico IPPools with a zone nodeSelector).
    #[serde(default)]
    pub zones: BTreeMap<String, Spanned<IpNet>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkDefaultsInput {
    #[serde(default)]
    pub mtu: Option<Spanned<u32>>,
}

/// Values stay raw TOML here: validation names the key and says what a
/// sysctl value may be (serde would only say which variant failed to match),
/// and an unquoted dotted key (a nested table to TOML) gets its own hint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlInput {
    #[serde(default)]
    pub global: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    pub uplink: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInput {
    pub version: u32,
    pub hostname: Spanned<String>,
    #[serde(default)]
    pub zone: Option<Spanned<String>>,
    #[serde(default)]
    pub rack: Option<Spanned<String>>,
    pub asn: Asn,
    pub service_ipv4: Spanned<Ipv4Net>,
    #[serde(default)]
    pub service_ipv6: Option<Spanned<Ipv6Net>>,
    #[serde(default)]
    pub uplinks: Vec<UplinkInput>,
    #[serde(default)]
    pub join: Option<Spanned<super::join::HostJoinInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkInput {
    pub name: Spanned<String>,
    pub nic: Spanned<NicInput>,
    #[serde(default)]
    pub ipv4: Option<TransitInput<Ipv4Net, Ipv4Addr>>,
    #[serde(default)]
    pub ipv6: Option<TransitInput<Ipv6Net, Ipv6Addr>>,
    pub peer_asn: Asn,
    #[serde(default)]
    pub mtu: Option<Spanned<u32>>,
    /// File (below --root) holding the BGP MD5 password for this session.
    /// The password itself never goes into a profile, a log or an output.
    #[serde(default)]
    pub password_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicInput {
    #[serde(default)]
    pub name: Option<IfName>,
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitInput<N, A> {
    pub address: Spanned<N>,
    pub peer: Spanned<A>,
}
