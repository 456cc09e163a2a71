//! BIRD 2's control socket protocol (the line protocol birdc speaks): the
//! commands, and the parsing of BIRD's replies. Pure: the socket itself is
//! the system layer's (`system::linux::bird_ctl::BirdClient`).
//!
//! Every reply line is `NNNN-text` (more follow), `NNNN text` (last line of the reply), or
//! ` text` (continuation: same code as the line before). Codes 0xxx are command results,
//! 1xxx table rows, 2xxx table headers, 8xxx run-time errors, 9xxx parse errors. On connect
//! BIRD greets with `0001 BIRD 2.0.12 ready.`.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// Reply codes used below (BIRD's doc/reply_codes).
const CODE_WELCOME: u16 = 1;
const CODE_PROTOCOL_ROW: u16 = 1002;
const CODE_PROTOCOL_DETAIL: u16 = 1006;
const CODE_ROUTE_ROW: u16 = 1007;
const CODE_BFD_ROW: u16 = 1020;
const CODE_NO_PROTOCOLS_MATCH: u16 = 8003;
const CODE_PARSE_ERROR: u16 = 9001;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connecting to BIRD control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("BIRD control socket: {0}")]
    Io(#[from] io::Error),
    #[error("BIRD control socket: no answer to {what} within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("BIRD control socket: unexpected reply line {0:?}")]
    Protocol(String),
    #[error("BIRD control socket closed while waiting for the reply to {0}")]
    Closed(String),
    #[error("BIRD refused {command:?}: {code:04} {text}")]
    Bird {
        command: String,
        code: u16,
        text: String,
    },
    #[error("BIRD has no protocol named {0}")]
    NoSuchProtocol(String),
    #[error("not a BIRD command or symbol: {0:?}")]
    InvalidArgument(String),
}

impl ControlError {
    /// A `configure` that BIRD rejected because the config file does not parse (code 8002).
    pub fn is_config_error(&self) -> bool {
        matches!(self, ControlError::Bird { code: 8002, .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// Every line with its code; continuation lines carry the code of the line before.
    pub lines: Vec<(u16, String)>,
}

impl Reply {
    /// The texts of the lines with `code`.
    pub fn texts(&self, code: u16) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(move |(c, _)| *c == code)
            .map(|(_, t)| t.as_str())
    }

    /// Code of the last line (the one that closed the reply).
    pub fn final_code(&self) -> Option<u16> {
        self.lines.last().map(|(c, _)| *c)
    }
}

/// One line of a reply as read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyLine {
    /// `NNNN-text` or `NNNN text`.
    Coded { code: u16, text: String, last: bool },
    /// ` text`.
    Continuation(String),
}

/// Parses one line (without its newline).
pub fn parse_reply_line(line: &str) -> Result<ReplyLine, ControlError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if let Some(rest) = line.strip_prefix(' ') {
        return Ok(ReplyLine::Continuation(rest.to_string()));
    }
    let bytes = line.as_bytes();
    if bytes.len() < 5 || !bytes[..4].iter().all(u8::is_ascii_digit) {
        return Err(ControlError::Protocol(line.to_string()));
    }
    let last = match bytes[4] {
        b' ' => true,
        b'-' => false,
        _ => return Err(ControlError::Protocol(line.to_string())),
    };
    Ok(ReplyLine::Coded {
        code: line[..4].parse().expect("four ASCII digits"),
        text: line[5..].to_string(),
        last,
    })
}

/// Collects parsed lines into a [`Reply`]; `push` returns true once the reply is complete.
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    reply: Reply,
    code: Option<u16>,
}

impl ReplyBuilder {
    pub fn push(&mut self, line: ReplyLine) -> Result<bool, ControlError> {
        match line {
            ReplyLine::Continuation(text) => {
                let code = self
                    .code
                    .ok_or_else(|| ControlError::Protocol(format!(" {text}")))?;
                self.reply.lines.push((code, text));
                Ok(false)
            }
            ReplyLine::Coded { code, text, last } => {
                self.code = Some(code);
                self.reply.lines.push((code, text));
                Ok(last)
            }
        }
    }

    pub fn finish(self) -> Reply {
        self.reply
    }
}

/// Parses a whole captured reply (for tests and tools).
pub fn parse_reply(text: &str) -> Result<Reply, ControlError> {
    let mut b = ReplyBuilder::default();
    for line in text.lines() {
        if b.push(parse_reply_line(line)?)? {
            break;
        }
    }
    Ok(b.finish())
}

/// One row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolStatus {
    pub name: String,
    /// `BGP`, `Kernel`, `Device`, `Direct`, `Static`, `BFD`, ...
    pub proto: String,
    /// `---` when the protocol has several channels or none.
    pub table: String,
    /// `up`, `down`, `start`, `stop`, `flush`.
    pub state: String,
    pub since: String,
    /// For BGP: the BGP state, then optional detail (`Active  Socket: Connection refused`).
    pub info: String,
}

impl ProtocolStatus {
    /// BGP state of a BGP protocol; `None` for other protocols.
    pub fn bgp_state(&self) -> Option<BgpState> {
        (self.proto == "BGP").then(|| BgpState::from_info(&self.state, &self.info))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpState {
    /// Protocol down (disabled or shut down): BIRD prints no BGP state.
    Down,
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    Close,
    Other(String),
}

impl BgpState {
    fn from_info(state: &str, info: &str) -> BgpState {
        match info.split_whitespace().next() {
            None if state == "down" => BgpState::Down,
            None => BgpState::Other(String::new()),
            Some(w) => w.parse().unwrap_or_else(|_| BgpState::Other(w.to_string())),
        }
    }
}

impl FromStr for BgpState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "Idle" => BgpState::Idle,
            "Connect" => BgpState::Connect,
            "Active" => BgpState::Active,
            "OpenSent" => BgpState::OpenSent,
            "OpenConfirm" => BgpState::OpenConfirm,
            "Established" => BgpState::Established,
            "Close" => BgpState::Close,
            _ => return Err(()),
        })
    }
}

impl fmt::Display for BgpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BgpState::Other(s) => f.write_str(s),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What `configure` did. Errors (a config that does not parse: code 8002) are `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigureOutcome {
    /// 0003: applied.
    Reconfigured,
    /// 0004: accepted; protocols are restarting or flushing (e.g. changed BGP timers).
    InProgress,
    /// 0005/0017: another reconfiguration is running; this one is queued.
    Queued,
    /// 0006: BIRD is shutting down and ignored it.
    ShuttingDown,
    /// 0019.
    NothingToDo,
    Other {
        code: u16,
        text: String,
    },
}

impl ConfigureOutcome {
    pub fn from_reply(reply: &Reply) -> ConfigureOutcome {
        let (code, text) = reply.lines.last().cloned().unwrap_or_default();
        match code {
            3 => ConfigureOutcome::Reconfigured,
            4 => ConfigureOutcome::InProgress,
            5 | 17 => ConfigureOutcome::Queued,
            6 => ConfigureOutcome::ShuttingDown,
            19 => ConfigureOutcome::NothingToDo,
            _ => ConfigureOutcome::Other { code, text },
        }
    }
}

/// Parses the 1002 rows of a `show protocols` reply.
pub fn parse_protocols(reply: &Reply) -> Vec<ProtocolStatus> {
    reply
        .texts(CODE_PROTOCOL_ROW)
        .filter_map(parse_protocol_row)
        .collect()
}

fn parse_protocol_row(row: &str) -> Option<ProtocolStatus> {
    let mut words = row.split_whitespace();
    let name = words.next()?.to_string();
    let proto = words.next()?.to_string();
    let table = words.next()?.to_string();
    let state = words.next()?.to_string();
    let mut since = words.next().unwrap_or("").to_string();
    // `timeformat protocol iso long` prints `YYYY-MM-DD HH:MM:SS`: two words.
    let mut rest: Vec<&str> = words.collect();
    if is_date(&since) && rest.first().is_some_and(|w| is_time(w)) {
        since = format!("{since} {}", rest.remove(0));
    }
    Some(ProtocolStatus {
        name,
        proto,
        table,
        state,
        since,
        info: rest.join(" "),
    })
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-'
}

fn is_time(s: &str) -> bool {
    s.len() >= 8 && s.as_bytes()[2] == b':' && s.as_bytes()[5] == b':'
}

/// Prefixes of the route rows in a `show route` reply (each network once, in reply order).
pub fn parse_route_prefixes(reply: &Reply) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for text in reply.texts(CODE_ROUTE_ROW) {
        // Rows start at column 0 with the network; alternative routes and next hops are
        // indented; `Table x:` headers do not parse as a prefix.
        if text.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some(net) = text
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<IpNet>().ok())
        {
            if !out.contains(&net) {
                out.push(net);
            }
        }
    }
    out
}

/// One row of `show bfd sessions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdSession {
    /// BFD protocol instance the session belongs to.
    pub protocol: String,
    pub address: IpAddr,
    pub interface: String,
    /// `Up`, `Down`, `Init`, `AdminDown`.
    pub state: String,
    pub since: String,
}

/// Parses the 1020 rows of a `show bfd sessions` reply: a `name:` line per BFD protocol, a
/// header, then `address interface state since interval timeout` rows.
pub fn parse_bfd_sessions(reply: &Reply) -> Vec<BfdSession> {
    let mut out = Vec::new();
    let mut protocol = String::new();
    for text in reply.texts(CODE_BFD_ROW) {
        let words: Vec<&str> = text.split_whitespace().collect();
        if let [name] = words.as_slice() {
            if let Some(name) = name.strip_suffix(':') {
                protocol = name.to_string();
            }
            continue;
        }
        let Some(address) = words.first().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.len() < 4 {
            continue;
        }
        out.push(BfdSession {
            protocol: protocol.clone(),
            address,
            interface: words[1].to_string(),
            state: words[2].to_string(),
            since: words[3].to_string(),
        });
    }
    out
}

/// What `show protocols all <bgp protocol>` says about a session: its state and the
/// capabilities both ends announced (listed only while a connection exists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpDetail {
    /// `BGP state:` (Established, Active, ...).
    pub state: String,
    /// `Neighbor address:` without the `%interface` suffix.
    pub neighbor_address: Option<String>,
    pub local_caps: Capabilities,
    pub neighbor_caps: Capabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub graceful_restart: Option<RestartCapability>,
    pub long_lived_graceful_restart: Option<RestartCapability>,
}

/// The graceful restart or long-lived graceful restart capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartCapability {
    /// `Restart time:` (GR) or `LL stale time:` (LLGR), seconds.
    pub time: Option<u32>,
    /// `AF supported:`: the families the sender can keep routes for (empty for a speaker that
    /// is only aware of the capability).
    pub families: Vec<String>,
}

impl BgpDetail {
    /// Whether BIRD would treat an expired hold timer as the neighbour restarting: we announced
    /// LLGR (aware or on) and the neighbour announced it for some family. BIRD then keeps the
    /// neighbour's routes for its restart time (and LL stale time) instead of dropping them.
    pub fn llgr_negotiated(&self) -> bool {
        self.local_caps.long_lived_graceful_restart.is_some()
            && self
                .neighbor_caps
                .long_lived_graceful_restart
                .as_ref()
                .is_some_and(|c| !c.families.is_empty())
    }
}

/// Parses the 1006 lines of a `show protocols all` reply for one BGP protocol.
pub fn parse_bgp_detail(reply: &Reply) -> BgpDetail {
    #[derive(Clone, Copy, PartialEq)]
    enum Side {
        Local,
        Neighbor,
    }
    let mut d = BgpDetail::default();
    // (side, indent of its header), then the capability being read (its indent).
    let mut side: Option<(Side, usize)> = None;
    let mut cap: Option<(bool, usize)> = None;
    for line in reply.texts(CODE_PROTOCOL_DETAIL) {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if side.is_some_and(|(_, i)| indent <= i) {
            side = None;
            cap = None;
        }
        if cap.is_some_and(|(_, i)| indent <= i) {
            cap = None;
        }
        match text {
            "Local capabilities" => {
                side = Some((Side::Local, indent));
                continue;
            }
            "Neighbor capabilities" => {
                side = Some((Side::Neighbor, indent));
                continue;
            }
            _ => {}
        }
        let Some((s, _)) = side else {
            if let Some(v) = text.strip_prefix("BGP state:") {
                d.state = v.trim().to_string();
            } else if let Some(v) = text.strip_prefix("Neighbor address:") {
                let v = v.trim();
                d.neighbor_address = Some(v.split('%').next().unwrap_or(v).to_string());
            }
            continue;
        };
        let caps = match s {
            Side::Local => &mut d.local_caps,
            Side::Neighbor => &mut d.neighbor_caps,
        };
        match text {
            "Graceful restart" => {
                caps.graceful_restart = Some(RestartCapability::default());
                cap = Some((false, indent));
                continue;
            }
            "Long-lived graceful restart" => {
                caps.long_lived_graceful_restart = Some(RestartCapability::default());
                cap = Some((true, indent));
                continue;
            }
            _ => {}
        }
        let Some((long_lived, _)) = cap else {
            continue;
        };
        let c = if long_lived {
            caps.long_lived_graceful_restart.as_mut()
        } else {
            caps.graceful_restart.as_mut()
        };
        let Some(c) = c else { continue };
        if let Some(v) = text
            .strip_prefix("Restart time:")
            .or_else(|| text.strip_prefix("LL stale time:"))
        {
            c.time = v.trim().parse().ok();
        } else if let Some(v) = text.strip_prefix("AF supported:") {
            c.families = v.split_whitespace().map(str::to_string).collect();
        }
    }
    d
}

/// A protocol or table name we are about to splice into a command.
pub fn check_symbol(s: &str) -> Result<(), ControlError> {
    let ok = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::InvalidArgument(s.to_string()))
    }
}

/// A command fit to send: one line, not empty.
pub fn check_command(cmd: &str) -> Result<(), ControlError> {
    if cmd.contains(['\n', '\r']) || cmd.trim().is_empty() {
        return Err(ControlError::InvalidArgument(cmd.to_string()));
    }
    Ok(())
}

/// The greeting text of BIRD's first reply (`BIRD 2.0.12 ready.`).
pub fn greeting(hello: &Reply) -> Result<String, ControlError> {
    match hello.lines.first() {
        Some((CODE_WELCOME, text)) => Ok(text.clone()),
        _ => Err(ControlError::Protocol(format!("{:?}", hello.lines))),
    }
}

/// A reply containing a code >= 8000 is an error carrying BIRD's text.
pub fn reply_result(cmd: &str, reply: Reply) -> Result<Reply, ControlError> {
    if let Some((code, text)) = reply.lines.iter().find(|(c, _)| *c >= 8000) {
        return Err(ControlError::Bird {
            command: cmd.to_string(),
            code: *code,
            text: text.clone(),
        });
    }
    Ok(reply)
}

/// `show protocols "<name>"`: the quoted form is a pattern, so an unknown
/// name gives 8003 instead of a parse error.
pub fn protocol_command(name: &str) -> Result<String, ControlError> {
    check_symbol(name)?;
    Ok(format!("show protocols \"{name}\""))
}

/// `show protocols all "<name>"`.
pub fn protocol_detail_command(name: &str) -> Result<String, ControlError> {
    check_symbol(name)?;
    Ok(format!("show protocols all \"{name}\""))
}

/// `show route export <p>` (`keyword` = `export`) or `show route protocol <p>`.
pub fn routes_command(keyword: &str, protocol: &str) -> Result<String, ControlError> {
    check_symbol(protocol)?;
    Ok(format!("show route {keyword} {protocol}"))
}

/// The row of `name` in a `show protocols` reply.
pub fn find_protocol(reply: &Reply, name: &str) -> Result<ProtocolStatus, ControlError> {
    parse_protocols(reply)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ControlError::NoSuchProtocol(name.to_string()))
}

/// BIRD's way of saying a protocol does not exist, as [`ControlError::NoSuchProtocol`].
pub fn no_such_protocol(e: ControlError, name: &str) -> ControlError {
    match e {
        ControlError::Bird { code, ref text, .. }
            if code == CODE_NO_PROTOCOLS_MATCH
                || (code == CODE_PARSE_ERROR && text.contains("CF_SYM_UNDEFINED")) =>
        {
            ControlError::NoSuchProtocol(name.to_string())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Replies captured from BIRD 2.0.12 on its control socket (raw, not through birdc).
    const SHOW_PROTOCOLS: &str = "\
2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     16:12:51.247  
 lo4        Direct     ---        up     16:12:51.247  
 kernel4    Kernel     underlay_host4 up     16:12:51.247  
 bfd1       BFD        ---        up     16:12:51.247  
 tor_a      BGP        ---        up     16:12:52.168  Established   
 tor_b      BGP        ---        flush  16:13:06.878  
 calico_nh4 Static     calico_igp4 up     16:12:51.247  
 calico4    BGP        ---        start  16:12:51.247  Active        Socket: Connection refused
0000 
";

    const SHOW_ROUTE_TABLE: &str = "\
1007-Table underlay_host4:
 0.0.0.0/0            unicast [tor_a 16:12:52.214] * (100) [AS65001i]
 \tvia 10.0.0.0 on up-a
                      unicast [tor_b 16:12:52.168] (100) [AS65002i]
 \tvia 10.0.0.2 on up-b
 10.9.0.1/32          unicast [lo4 16:12:51.252] * (240)
 \tdev lo
0000 
";

    const CONFIGURE_OK: &str = "0002-Reading configuration from host.conf\n0003 Reconfigured\n";
    const CONFIGURE_RESTART: &str =
        "0002-Reading configuration from host.conf\n0004 Reconfiguration in progress\n";
    const CONFIGURE_BAD: &str = "0002-Reading configuration from host.conf\n8002 host.conf:108:1 syntax error, unexpected GARBAGE\n";

    #[test]
    fn parses_line_kinds() {
        assert_eq!(
            parse_reply_line("0001 BIRD 2.0.12 ready.").unwrap(),
            ReplyLine::Coded {
                code: 1,
                text: "BIRD 2.0.12 ready.".into(),
                last: true
            }
        );
        assert_eq!(
            parse_reply_line("1002-device1    Device").unwrap(),
            ReplyLine::Coded {
                code: 1002,
                text: "device1    Device".into(),
                last: false
            }
        );
        assert_eq!(
            parse_reply_line(" \tvia 10.0.0.0 on up-a").unwrap(),
            ReplyLine::Continuation("\tvia 10.0.0.0 on up-a".into())
        );
        assert!(parse_reply_line("BIRD").is_err());
        assert!(parse_reply_line("12ab text").is_err());
    }

    #[test]
    fn continuation_takes_previous_code() {
        let r = parse_reply(SHOW_PROTOCOLS).unwrap();
        assert_eq!(r.final_code(), Some(0));
        assert_eq!(r.texts(1002).count(), 8);
        assert_eq!(r.texts(2002).count(), 1);
    }

    #[test]
    fn parses_show_protocols() {
        let ps = parse_protocols(&parse_reply(SHOW_PROTOCOLS).unwrap());
        assert_eq!(ps.len(), 8);
        assert_eq!(
            ps[2],
            ProtocolStatus {
                name: "kernel4".into(),
                proto: "Kernel".into(),
                table: "underlay_host4".into(),
                state: "up".into(),
                since: "16:12:51.247".into(),
                info: String::new(),
            }
        );
        assert_eq!(ps[4].bgp_state(), Some(BgpState::Established));
        assert_eq!(ps[5].bgp_state(), Some(BgpState::Other(String::new())));
        assert_eq!(ps[7].bgp_state(), Some(BgpState::Active));
        assert_eq!(ps[7].info, "Active Socket: Connection refused");
        assert_eq!(ps[0].bgp_state(), None);
    }

    #[test]
    fn parses_iso_long_since() {
        let p = parse_protocol_row("tor_a      BGP        ---        down   2026-11-25 10:00:00  ")
            .unwrap();
        assert_eq!(p.since, "2026-11-25 10:00:00");
        assert_eq!(p.bgp_state(), Some(BgpState::Down));
    }

    #[test]
    fn parses_route_prefixes() {
        let r = parse_reply(SHOW_ROUTE_TABLE).unwrap();
        let nets = parse_route_prefixes(&r);
        assert_eq!(
            nets,
            vec![
                "0.0.0.0/0".parse::<IpNet>().unwrap(),
                "10.9.0.1/32".parse().unwrap()
            ]
        );
        let v6 = parse_reply(
            "1007-Table underlay_host6:\n 2001:db8::1/128      unicast [direct_lo 16:12:51.252] * (240)\n \tdev lo\n0000 \n",
        )
        .unwrap();
        assert_eq!(
            parse_route_prefixes(&v6),
            vec!["2001:db8::1/128".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn parses_bfd_sessions() {
        let r = parse_reply(
            "1020-bfd1:\n IP address                Interface  State      Since         Interval  Timeout\n fe80::3                   dn-b       Up         16:24:06.374    0.100    0.300\n 10.0.0.3                  dn-b       Init       16:24:06.374    1.000    0.000\n0000 \n",
        )
        .unwrap();
        let s = parse_bfd_sessions(&r);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].protocol, "bfd1");
        assert_eq!(s[0].address, "fe80::3".parse::<IpAddr>().unwrap());
        assert_eq!(s[0].interface, "dn-b");
        assert_eq!(s[0].state, "Up");
        assert_eq!(s[1].state, "Init");
    }

    /// `show protocols all tor_a` on the host BIRD (rendered config, GR on, LLGR aware as
    /// BIRD defaults to) against a ToR with GR and LLGR on, captured from BIRD 2.0.12's socket.
    const SHOW_PROTOCOLS_ALL_LLGR: &str = "2002-Name       Proto      Table      State  Since         Info\n1002-tor_a      BGP        ---        up     09:53:07.440  Established   \n1006-  BGP state:          Established\n     Neighbor address: 172.30.0.0%bx20633a\n     Neighbor AS:      65001\n     Local AS:         65100\n     Neighbor ID:      10.9.0.2\n     Local capabilities\n       Multiprotocol\n         AF announced: ipv4\n       Route refresh\n       Graceful restart\n         Restart time: 120\n         AF supported: ipv4\n         AF preserved:\n       4-octet AS numbers\n       Enhanced refresh\n       Long-lived graceful restart\n     Neighbor capabilities\n       Multiprotocol\n         AF announced: ipv4\n       Route refresh\n       Graceful restart\n         Restart time: 120\n         AF supported: ipv4\n         AF preserved:\n       4-octet AS numbers\n       Enhanced refresh\n       Long-lived graceful restart\n         LL stale time: 1\n         AF supported: ipv4\n         AF preserved:\n     Session:          external AS4\n     Source address:   172.30.0.1\n     Hold timer:       7.006/9\n     Keepalive timer:  1.166/3\n   Channel ipv4\n     State:          UP\n     Table:          master4\n     BGP Next hop:   172.30.0.1\n \n0000 \n";

    #[test]
    fn parses_bgp_detail_and_llgr() {
        let d = parse_bgp_detail(&parse_reply(SHOW_PROTOCOLS_ALL_LLGR).unwrap());
        assert_eq!(d.state, "Established");
        assert_eq!(d.neighbor_address.as_deref(), Some("172.30.0.0"));
        let gr = d.neighbor_caps.graceful_restart.as_ref().unwrap();
        assert_eq!(gr.time, Some(120));
        assert_eq!(gr.families, ["ipv4"]);
        let ll = d
            .neighbor_caps
            .long_lived_graceful_restart
            .as_ref()
            .unwrap();
        assert_eq!(ll.time, Some(1));
        assert_eq!(ll.families, ["ipv4"]);
        let local_ll = d.local_caps.long_lived_graceful_restart.as_ref().unwrap();
        assert!(local_ll.families.is_empty(), "aware only: {local_ll:?}");
        assert!(d.llgr_negotiated());
        // Our side with `long lived graceful restart off` announces no LLGR capability.
        let off = SHOW_PROTOCOLS_ALL_LLGR.replacen(
            "       Long-lived graceful restart\n     Neighbor",
            "     Neighbor",
            1,
        );
        let d = parse_bgp_detail(&parse_reply(&off).unwrap());
        assert!(d.local_caps.long_lived_graceful_restart.is_none());
        assert!(!d.llgr_negotiated());
        assert_eq!(
            d.local_caps.graceful_restart.as_ref().unwrap().time,
            Some(120)
        );
    }

    #[test]
    fn configure_outcomes() {
        let ok = parse_reply(CONFIGURE_OK).unwrap();
        assert_eq!(
            ConfigureOutcome::from_reply(&ok),
            ConfigureOutcome::Reconfigured
        );
        let restart = parse_reply(CONFIGURE_RESTART).unwrap();
        assert_eq!(
            ConfigureOutcome::from_reply(&restart),
            ConfigureOutcome::InProgress
        );
        let bad = parse_reply(CONFIGURE_BAD).unwrap();
        assert_eq!(bad.final_code(), Some(8002));
    }

    #[test]
    fn rejects_symbols_that_would_inject() {
        assert!(check_symbol("tor_a").is_ok());
        assert!(check_symbol("tor_a\nshutdown").is_err());
        assert!(check_symbol("tor a").is_err());
        assert!(check_symbol("1tor").is_err());
    }

    #[test]
    fn greeting_errors_and_commands_without_a_socket() {
        let hello = parse_reply("0001 BIRD 2.0.12 ready.\n").unwrap();
        assert_eq!(greeting(&hello).unwrap(), "BIRD 2.0.12 ready.");
        assert!(matches!(
            greeting(&parse_reply("0003 Reconfigured\n").unwrap()),
            Err(ControlError::Protocol(_))
        ));
        let bad = parse_reply(CONFIGURE_BAD).unwrap();
        match reply_result("configure", bad) {
            Err(ControlError::Bird {
                code: 8002, text, ..
            }) => {
                assert!(text.contains("syntax error"), "{text}")
            }
            other => panic!("expected 8002, got {other:?}"),
        }
        assert!(reply_result("configure", parse_reply(CONFIGURE_OK).unwrap()).is_ok());
        assert!(check_command("show protocols\nshutdown").is_err());
        assert!(check_command("  ").is_err());
        assert_eq!(
            protocol_command("tor_a").unwrap(),
            "show protocols \"tor_a\""
        );
        assert!(protocol_detail_command("tor_a\"; down").is_err());
        assert_eq!(
            routes_command("export", "tor_b").unwrap(),
            "show route export tor_b"
        );
        let all = parse_reply(SHOW_PROTOCOLS).unwrap();
        assert_eq!(find_protocol(&all, "tor_b").unwrap().state, "flush");
        assert!(matches!(
            find_protocol(&all, "tor_c"),
            Err(ControlError::NoSuchProtocol(_))
        ));
    }

    #[test]
    fn maps_unknown_protocol_errors() {
        let e = ControlError::Bird {
            command: "show route export x".into(),
            code: 9001,
            text: "syntax error, unexpected CF_SYM_UNDEFINED, expecting CF_SYM_KNOWN or TABLE"
                .into(),
        };
        assert!(matches!(
            no_such_protocol(e, "x"),
            ControlError::NoSuchProtocol(_)
        ));
    }
}
