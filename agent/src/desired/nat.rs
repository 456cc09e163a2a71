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

/// Clears the masquerade mark bit on outer tunnel packets (docs/background.md failure 4): those
/// leaving through an uplink with the tunnel's protocol or port. Inner packets (they leave
/// through the tunnel device) keep the bit, so kube-proxy still masquerades a Service whose
/// endpoint listens on the tunnel's port.
///
/// Still needed with kube-proxy >= 1.19.0 (and 1.16.x/1.17.9/1.18.6), which clears the bit
/// itself before its MASQUERADE: a NAT rule that binds the inner flow first (Calico's
/// `cali-POSTROUTING` at the top of POSTROUTING, or an nft nat chain registered ahead of
/// kube-proxy's at the same priority) skips kube-proxy's clearing, and the bit rides onto the
/// outer packet. kube-proxy <= 1.18.5 never clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkGuard {
    /// The masquerade bit(s) to clear, normally [`KUBE_MASQ_MARK`].
    pub mark: u32,
    /// Guard IP-in-IP outer packets (IP protocol 4) leaving an uplink.
    pub ipip: bool,
    /// Guard VXLAN outer packets to this UDP port leaving an uplink, normally [`VXLAN_PORT`].
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
