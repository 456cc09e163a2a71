//! Typed values that validate while they parse: a profile that deserializes
//! holds no malformed table id, ASN, MAC or interface name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many characters of a user's value an error message echoes.
pub const ECHO_LIMIT: usize = 80;

/// A user's value as an error message shows it: control characters escaped
/// (a terminal must not interpret them) and at most [`ECHO_LIMIT`] characters,
/// elided with `…` (a 50 MB hostname is not echoed whole).
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == ECHO_LIMIT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A kernel routing table id. 0 (unspec) and 253–255 (default, main, local)
/// are reserved by the kernel and refused here; the Felix range 1–250 is a
/// cross-check in validation because a profile may opt in to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct TableId(u32);

impl TableId {
    pub const MAIN: TableId = TableId(254);

    pub fn get(self) -> u32 {
        self.0
    }

    /// Ids Calico Felix claims for its own tables by default (routeTableRanges).
    pub fn in_felix_range(self) -> bool {
        (1..=250).contains(&self.0)
    }

    /// The kernel's own tables, which a profile may name but never define.
    pub fn builtin(name: &str) -> Option<TableId> {
        match name {
            "main" => Some(TableId(254)),
            "local" => Some(TableId(255)),
            "default" => Some(TableId(253)),
            _ => None,
        }
    }
}

impl TryFrom<u32> for TableId {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        match v {
            0 => Err(
                "found table id 0, the kernel's 'unspec'; expected an id above 255, e.g. 1001"
                    .into(),
            ),
            253..=255 => Err(format!(
                "found table id {v}, reserved by the kernel (253 default, 254 main, 255 local); expected an id above 255, e.g. 1001"
            )),
            _ => Ok(TableId(v)),
        }
    }
}

impl From<TableId> for u32 {
    fn from(t: TableId) -> u32 {
        t.0
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `ip rule` priority. 0 is the kernel's `local` rule and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RulePriority(u32);

impl RulePriority {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for RulePriority {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if v == 0 {
            Err("found priority 0, the kernel's `local` rule; expected 1–32765, e.g. 30000".into())
        } else {
            Ok(RulePriority(v))
        }
    }
}

impl From<RulePriority> for u32 {
    fn from(p: RulePriority) -> u32 {
        p.0
    }
}

impl fmt::Display for RulePriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A BGP autonomous system number (4-byte). Refused: 0 (RFC 7607), 23456
/// (AS_TRANS, RFC 6793: the stand-in for 4-byte ASNs towards 2-byte speakers),
/// 65535 and 4294967295 (RFC 7300). Private ranges are the usual choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Asn(u32);

impl Asn {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Asn {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        match v {
            0 | 65535 | 4_294_967_295 => Err(format!(
                "found ASN {v}, which is reserved; expected a private ASN (64512–65534 or 4200000000–4294967294) or one assigned to you"
            )),
            23456 => Err(
                "found ASN 23456, which is AS_TRANS (the stand-in 4-byte speakers send to 2-byte ones) and never a real ASN; \
                 expected a private ASN (64512–65534 or 4200000000–4294967294) or one assigned to you"
                    .into(),
            ),
            _ => Ok(Asn(v)),
        }
    }
}

impl From<Asn> for u32 {
    fn from(a: Asn) -> u32 {
        a.0
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An Ethernet MAC address, written `52:54:00:12:34:56` (or with dashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "found '{}', which is not a MAC address; expected six hex pairs like 52:54:00:12:34:56",
                shown(s)
            )
        };
        // One separator throughout; `u8::from_str_radix` alone would accept "+a".
        let sep = if s.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(mac))
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A Linux interface name as the kernel accepts it (`dev_valid_name`: 1–15
/// bytes, no '/', ':' or whitespace, not "." or "..", and not "all" or
/// "default", which the IPv4 sysctl tree reserves), narrowed to what a
/// sysctl key, the sysctl.d file and the BIRD config can carry: printable
/// ASCII without '"', '\\', '=', '#' or '*'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match ifname_problem(&s) {
            None => Ok(IfName(s)),
            Some(why) => Err(format!(
                "found '{}', which is not an interface name: {why}; expected a kernel name such as eth0 or enp1s0f0",
                shown(&s)
            )),
        }
    }
}

/// Why `s` cannot name an uplink NIC, or `None`.
pub fn ifname_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() || s.len() > 15 {
        Some("1–15 characters")
    } else if s == "." || s == ".." {
        Some("'.' and '..' are directory names")
    } else if s == "all" || s == "default" {
        Some("'all' and 'default' are the kernel's sysctl directories, not interfaces")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"/:\"\\=#*".contains(&b))
    {
        Some("printable ASCII only, without '/', ':', '\"', '\\', '=', '#', '*' or spaces")
    } else {
        None
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A kernel routing-protocol number used to mark our rules and routes, and
/// (as IFA_PROTO) our addresses. Values up to 4 belong to the kernel itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ProtocolId(u8);

impl ProtocolId {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for ProtocolId {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        if v <= 4 {
            Err(format!(
                "found protocol {v}, the kernel's own (0–4); expected an unused number above 200, e.g. 211"
            ))
        } else {
            Ok(ProtocolId(v))
        }
    }
}

impl From<ProtocolId> for u8 {
    fn from(p: ProtocolId) -> u8 {
        p.0
    }
}

/// A per-uplink sysctl key, `net.{ipv4,ipv6}.{conf,neigh}.{uplink}.NAME`:
/// the only trees that hold one directory per interface, so a key can never
/// leave the uplink's own directory (or the network namespace) whatever the
/// NIC is called.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UplinkSysctl {
    family: &'static str,
    tree: &'static str,
    name: String,
}

impl UplinkSysctl {
    pub const PLACEHOLDER: &'static str = "{uplink}";

    /// Dotted or slash notation, like [`super::SysctlKey::parse`].
    pub fn parse(s: &str) -> Result<UplinkSysctl, String> {
        let expected = "expected net.ipv4.conf.{uplink}.NAME, net.ipv6.conf.{uplink}.NAME, \
                        net.ipv4.neigh.{uplink}.NAME or net.ipv6.neigh.{uplink}.NAME, e.g. \
                        \"net.ipv4.conf.{uplink}.rp_filter\" (other keys go in [sysctl.global])";
        let parts: Vec<&str> = s.split(if s.contains('/') { '/' } else { '.' }).collect();
        let family = match parts.get(1) {
            Some(&"ipv4") => "ipv4",
            Some(&"ipv6") => "ipv6",
            _ => "",
        };
        let tree = match parts.get(2) {
            Some(&"conf") => "conf",
            Some(&"neigh") => "neigh",
            _ => "",
        };
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !s.contains(Self::PLACEHOLDER) {
            return Err(format!(
                "found '{}' without the {{uplink}} placeholder; {expected}",
                shown(s)
            ));
        }
        if parts.len() == 5
            && parts[0] == "net"
            && !family.is_empty()
            && !tree.is_empty()
            && parts[3] == Self::PLACEHOLDER
            && name_ok(parts[4])
        {
            Ok(UplinkSysctl {
                family,
                tree,
                name: parts[4].to_string(),
            })
        } else {
            Err(format!("found '{}'; {expected}", shown(s)))
        }
    }

    /// The key for one NIC. Refuses a name that would address another
    /// directory ('..', 'all', 'default') or break the sysctl.d syntax.
    pub fn for_ifname(&self, ifname: &str) -> Result<super::SysctlKey, String> {
        match ifname_problem(ifname) {
            Some(why) => Err(format!(
                "NIC name '{}' cannot stand in {self}: {why}",
                shown(ifname)
            )),
            None => Ok(super::SysctlKey::from_parts(vec![
                "net".into(),
                self.family.into(),
                self.tree.into(),
                ifname.into(),
                self.name.clone(),
            ])),
        }
    }
}

impl fmt::Display for UplinkSysctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net.{}.{}.{{uplink}}.{}",
            self.family, self.tree, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids() {
        assert!(TableId::try_from(0).is_err());
        for v in 253..=255 {
            assert!(TableId::try_from(v).is_err());
        }
        assert!(TableId::try_from(1001).is_ok());
        assert!(TableId::try_from(100).unwrap().in_felix_range());
    }

    #[test]
    fn macs() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:zz".parse::<MacAddr>().is_err());
        assert!("5254.00ab.cd0f".parse::<MacAddr>().is_err());
        assert!(
            "+2:54:00:ab:cd:0f".parse::<MacAddr>().is_err(),
            "a sign is not a hex digit"
        );
        assert!("52:54:00:ab:cd:+f".parse::<MacAddr>().is_err());
        assert!(
            "52:54-00:ab:cd:0f".parse::<MacAddr>().is_err(),
            "mixed separators"
        );
        let m: MacAddr = "52-54-00-ab-cd-0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
    }

    #[test]
    fn asns() {
        for v in [0, 23456, 65535, 4_294_967_295] {
            assert!(Asn::try_from(v).is_err(), "{v}");
        }
        for v in [1, 64512, 65534, 4_200_000_000, 4_294_967_294] {
            assert!(Asn::try_from(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn echoes_are_capped_and_escaped() {
        let long = "a".repeat(10_000);
        assert_eq!(shown(&long).chars().count(), ECHO_LIMIT + 1);
        assert!(shown(&long).ends_with('…'));
        assert_eq!(shown("a\u{1b}[31mb"), "a\\u{1b}[31mb");
    }

    #[test]
    fn uplink_sysctls_stay_in_the_uplink_directory() {
        let k = UplinkSysctl::parse("net.ipv4.conf.{uplink}.rp_filter").unwrap();
        assert_eq!(
            k,
            UplinkSysctl::parse("net/ipv4/conf/{uplink}/rp_filter").unwrap()
        );
        assert_eq!(
            k.for_ifname("eth0.100").unwrap().proc_path(),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
        for bad in [
            "kernel.{uplink}",
            "net.core.{uplink}",
            "net.ipv4.conf.{uplink}",
            "net.ipv4.conf.x{uplink}.a",
            "net.ipv4.conf.{uplink}.a.b",
            "net.ipv4.{uplink}.rp_filter",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.{uplink}..",
            "net.ipv4.conf.{uplink}.",
            "net/ipv4/conf/{uplink}/../../x",
        ] {
            assert!(UplinkSysctl::parse(bad).is_err(), "{bad}");
        }
        for nic in [
            "..",
            ".",
            "all",
            "default",
            "a/b",
            "a=b",
            "",
            "0123456789abcdef",
            "a b",
            "a\nb",
        ] {
            assert!(k.for_ifname(nic).is_err(), "{nic:?}");
        }
    }

    #[test]
    fn ifnames() {
        assert!(IfName::try_from("eth0".to_string()).is_ok());
        assert!(IfName::try_from("a-very-long-interface".to_string()).is_err());
        assert!(IfName::try_from("a/b".to_string()).is_err());
        assert!(IfName::try_from(String::new()).is_err());
        for bad in [
            "..", ".", "all", "default", "a\"b", "a\\b", "a=b", "a\u{1}b", "é",
        ] {
            assert!(IfName::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
        assert!(IfName::try_from("eth0.100".to_string()).is_ok());
    }
}
