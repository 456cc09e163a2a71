//! Typed values that validate while they parse: a profile that deserializes
//! holds no malformed table id, ASN, MAC or interface name.

use std::fmt;

use serde::{Deserialize, Serialize};

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
            0 => Err("table id 0 is the kernel's 'unspec'; pick an id above 250, e.g. 1001".into()),
            253..=255 => Err(format!(
                "table id {v} is reserved by the kernel (253 default, 254 main, 255 local); pick an id above 255, e.g. 1001"
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
            Err("priority 0 belongs to the kernel's `local` rule; use 1–32765".into())
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

/// A BGP autonomous system number (4-byte). 0 and 65535/4294967295 are reserved.
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
                "ASN {v} is reserved; use a private ASN (64512–65534 or 4200000000–4294967294)"
            )),
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
        let bad =
            || format!("'{s}' is not a MAC address; expected six hex pairs like 52:54:00:12:34:56");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
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

/// A Linux interface name: 1–15 bytes, no '/', ':' or whitespace, not "." or "..".
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
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "."
            && s != ".."
            && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
        if ok {
            Ok(IfName(s))
        } else {
            Err(format!(
                "'{s}' is not a valid interface name (1–15 characters, no '/', ':' or spaces)"
            ))
        }
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
                "protocol {v} is the kernel's own (0–4); pick an unused number above 200, e.g. 211"
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
    }

    #[test]
    fn ifnames() {
        assert!(IfName::try_from("eth0".to_string()).is_ok());
        assert!(IfName::try_from("a-very-long-interface".to_string()).is_err());
        assert!(IfName::try_from("a/b".to_string()).is_err());
        assert!(IfName::try_from(String::new()).is_err());
    }
}
