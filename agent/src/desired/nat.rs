//! The NAT part of the model: how transit traffic gets a routable source
//! and the tunnel mark guard. The nft layer builds its ruleset from these.

/// kube-proxy's (and Calico's) default masquerade mark bit.
pub const KUBE_MASQ_MARK: u32 = 0x4000;
/// IANA VXLAN port, the one Calico uses for `vxlan.calico`.
pub const VXLAN_PORT: u16 = 4789;
/// How pod egress and masquerade get a routable source (profile: `nat.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatMode {
    /// Transit addresses carry `scope link` (the engine does that), so MASQUERADE and ordinary
    /// source selection pick the loopback service IP by themselves: no nft rules needed.
    #[default]
    ScopeLink,
    /// Transit addresses stay global; our table SNATs pod egress and kube-proxy-marked traffic
    /// leaving an uplink to the service IP before anyone's MASQUERADE runs.
    Snat,
    /// Neither: the operator handles source addresses elsewhere.
    None,
}

/// Clears the masquerade mark bit on outer tunnel packets (docs/background.md failure 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkGuard {
    /// The masquerade bit(s) to clear, normally [`KUBE_MASQ_MARK`].
    pub mark: u32,
    /// Guard IP-in-IP outer packets (IP protocol 4).
    pub ipip: bool,
    /// Guard VXLAN outer packets to this UDP port, normally [`VXLAN_PORT`].
    pub vxlan_port: Option<u16>,
}

impl Default for MarkGuard {
    fn default() -> Self {
        MarkGuard {
            mark: KUBE_MASQ_MARK,
            ipip: true,
            vxlan_port: Some(VXLAN_PORT),
        }
    }
}
