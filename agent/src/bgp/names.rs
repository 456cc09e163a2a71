//! The BIRD symbols the rendered config derives from operator-chosen names
//! (uplinks, the host table): each must be a BIRD identifier, unique, and
//! neither a BIRD keyword nor a name the template uses for its own
//! protocols. Pure, and shared by the profile validator and the renderer, so
//! a validated profile never renders a config BIRD refuses over a name.

/// Names the embedded template gives its own protocols, tables and filters.
pub const FIXED_NAMES: &[&str] = &[
    "device1",
    "direct_lo",
    "kernel_host4",
    "kernel_host6",
    "bfd1",
    "tor_export4",
    "tor_export6",
    "tor_import4",
    "tor_import6",
    "calico",
    "calico_nh",
    "calico_igp4",
    "calico_igp6",
    "master4",
    "master6",
];

/// Every word BIRD 2.0.12 refuses as a protocol name: its keywords and
/// predefined symbols. Found by running `bird -p` on `protocol bgp <word>`
/// for every word of the CF_KEYWORDS, CF_CLI and CF_ENUM lists in the 2.0.12
/// sources and every identifier-like string in Debian 12's `/usr/sbin/bird`,
/// keeping those it rejected; `keywords_match_bird` re-checks the list
/// against the installed BIRD. Newer BIRDs add keywords: re-run that test.
pub const KEYWORDS: &[&str] = &[
    "accept",
    "action",
    "add",
    "address",
    "administrative",
    "advertise",
    "after",
    "aigp",
    "algorithm",
    "all",
    "allow",
    "always",
    "area",
    "as",
    "as4",
    "asn",
    "attribute",
    "attributes",
    "auth",
    "authentication",
    "autonomous",
    "aware",
    "babel",
    "babel_metric",
    "base",
    "bcast",
    "bfd",
    "bgp",
    "bgp_aggregator",
    "bgp_aigp",
    "bgp_atomic_aggr",
    "bgp_cluster_list",
    "bgp_community",
    "bgp_ext_community",
    "bgp_large_community",
    "bgp_local_pref",
    "bgp_med",
    "bgp_next_hop",
    "bgp_origin",
    "bgp_originator_id",
    "bgp_otc",
    "bgp_path",
    "bgpmask",
    "bgppath",
    "bind",
    "bird",
    "blackhole",
    "blake2b256",
    "blake2b512",
    "blake2s128",
    "blake2s256",
    "block",
    "bool",
    "broadcast",
    "bt_assert",
    "bt_check_assign",
    "bt_test_same",
    "bt_test_suite",
    "buffer",
    "bug",
    "by",
    "capabilities",
    "case",
    "cease",
    "change",
    "channels",
    "check",
    "circuit",
    "class",
    "client",
    "clist",
    "cluster",
    "code",
    "collision",
    "commands",
    "communities",
    "confederation",
    "config",
    "configuration",
    "configure",
    "confirm",
    "connect",
    "connection",
    "contains",
    "cost",
    "cost2",
    "count",
    "cryptographic",
    "current",
    "data",
    "data1",
    "data2",
    "dead",
    "debug",
    "deconfigured",
    "default",
    "define",
    "defined",
    "delay",
    "delete",
    "demand",
    "description",
    "dest",
    "deterministic",
    "dev",
    "device",
    "digits",
    "direct",
    "disable",
    "disabled",
    "dnssl",
    "do",
    "domain",
    "dont_fragment",
    "down",
    "dport",
    "drop",
    "dscp",
    "dst",
    "dump",
    "dynamic",
    "ebgp",
    "ec",
    "echo",
    "eclist",
    "ecmp",
    "eligible",
    "else",
    "empty",
    "enable",
    "enforce",
    "entries",
    "error",
    "eval",
    "events",
    "exit",
    "exp",
    "expire",
    "export",
    "exported",
    "extended",
    "external",
    "false",
    "fatal",
    "filename",
    "filter",
    "filtered",
    "filters",
    "first",
    "first_fragment",
    "flags",
    "flow4",
    "flow6",
    "flush",
    "for",
    "forget",
    "format",
    "fragment",
    "free",
    "from",
    "function",
    "garbage",
    "gateway",
    "gc",
    "generate",
    "generic",
    "global",
    "graceful",
    "gw",
    "gw_mpls",
    "header",
    "hello",
    "help",
    "hidden",
    "high",
    "hit",
    "hmac",
    "hold",
    "hop",
    "horizon",
    "hostname",
    "ibgp",
    "icmp",
    "id",
    "idle",
    "if",
    "ifindex",
    "ifname",
    "ignore",
    "igp",
    "igp_metric",
    "import",
    "in",
    "infinity",
    "info",
    "instance",
    "int",
    "interface",
    "interfaces",
    "internal",
    "interpret",
    "interval",
    "ip",
    "ipv4",
    "ipv4_mc",
    "ipv4_mpls",
    "ipv6",
    "ipv6_mc",
    "ipv6_mpls",
    "ipv6_sadr",
    "is_fragment",
    "is_v4",
    "is_v6",
    "iso",
    "keep",
    "keepalive",
    "kernel",
    "key",
    "keyed",
    "krt_advmss",
    "krt_cwnd",
    "krt_feature_allfrag",
    "krt_feature_ecn",
    "krt_hoplimit",
    "krt_initcwnd",
    "krt_initrwnd",
    "krt_lock_advmss",
    "krt_lock_cwnd",
    "krt_lock_hoplimit",
    "krt_lock_mtu",
    "krt_lock_reordering",
    "krt_lock_rto_min",
    "krt_lock_rtt",
    "krt_lock_rttvar",
    "krt_lock_sstresh",
    "krt_lock_window",
    "krt_metric",
    "krt_mtu",
    "krt_prefsrc",
    "krt_quickack",
    "krt_realm",
    "krt_reordering",
    "krt_rto_min",
    "krt_rtt",
    "krt_rttvar",
    "krt_scope",
    "krt_source",
    "krt_sstresh",
    "krt_window",
    "label",
    "large",
    "last",
    "last_fragment",
    "last_nonaggregated",
    "latency",
    "lc",
    "lclist",
    "learn",
    "len",
    "length",
    "lifetime",
    "limit",
    "linger",
    "link",
    "lived",
    "lladdr",
    "local",
    "log",
    "long",
    "low",
    "lsa",
    "lsadb",
    "lsid",
    "mac",
    "managed",
    "mandatory",
    "mask",
    "master4",
    "master6",
    "match",
    "max",
    "maxlen",
    "md5",
    "med",
    "medium",
    "member",
    "memory",
    "merge",
    "messages",
    "meticulous",
    "metric",
    "min",
    "missing",
    "mode",
    "mpls",
    "mrt",
    "mrtdump",
    "ms",
    "mtu",
    "mult",
    "multicast",
    "multihop",
    "multiplier",
    "name",
    "nbma",
    "neighbor",
    "neighbors",
    "net",
    "netlink",
    "netmask",
    "networks",
    "next",
    "ng",
    "no",
    "noexport",
    "nonbroadcast",
    "none",
    "normal",
    "ns",
    "nssa",
    "of",
    "off",
    "offset",
    "older",
    "on",
    "onlink",
    "only",
    "originate",
    "ospf",
    "ospf_metric1",
    "ospf_metric2",
    "ospf_router_id",
    "ospf_tag",
    "other",
    "out",
    "packets",
    "pair",
    "passive",
    "password",
    "passwords",
    "path",
    "paths",
    "pe",
    "perf",
    "period",
    "permissive",
    "persist",
    "pipe",
    "plaintext",
    "pointomultipoint",
    "pointopoint",
    "poison",
    "poll",
    "port",
    "preexport",
    "prefer",
    "preference",
    "preferred",
    "prefix",
    "prepend",
    "pri",
    "primary",
    "print",
    "printn",
    "priority",
    "private",
    "prohibit",
    "propagate",
    "proto",
    "protocol",
    "protocols",
    "ptmp",
    "ptp",
    "public",
    "quad",
    "quit",
    "ra",
    "ra_lifetime",
    "ra_preference",
    "radv",
    "randomize",
    "range",
    "rd",
    "rdnss",
    "reachable",
    "real",
    "receive",
    "recursive",
    "refresh",
    "reject",
    "rejected",
    "reload",
    "remote",
    "repeat",
    "require",
    "reset",
    "resources",
    "restart",
    "restrict",
    "retrans",
    "retransmit",
    "retry",
    "return",
    "reverse",
    "rfc1583compat",
    "rfc5838",
    "rip",
    "rip_metric",
    "rip_tag",
    "ro",
    "roa4",
    "roa6",
    "roa_check",
    "roles",
    "route",
    "router",
    "routes",
    "rpki",
    "rr",
    "rs",
    "rt",
    "rx",
    "rxcost",
    "s",
    "sadr",
    "scan",
    "scope",
    "sec",
    "secondary",
    "security",
    "self",
    "sensitive",
    "sessions",
    "set",
    "setkey",
    "sets",
    "settle",
    "sha1",
    "sha256",
    "sha384",
    "sha512",
    "short",
    "show",
    "shutdown",
    "simple",
    "skip",
    "sockets",
    "soft",
    "solicited",
    "sorted",
    "source",
    "split",
    "sport",
    "src",
    "ssh",
    "stability",
    "stale",
    "start",
    "startup",
    "state",
    "states",
    "static",
    "stats",
    "status",
    "stderr",
    "strict",
    "string",
    "stub",
    "stubnet",
    "summary",
    "suppression",
    "symbols",
    "syslog",
    "table",
    "tag",
    "tcp",
    "template",
    "then",
    "threshold",
    "tick",
    "time",
    "timeformat",
    "timeout",
    "timer",
    "to",
    "topology",
    "trace",
    "translator",
    "transmit",
    "transport",
    "trie",
    "trigger",
    "true",
    "ttl",
    "tx",
    "type",
    "undo",
    "unicast",
    "unknown",
    "unreachable",
    "unset",
    "update",
    "us",
    "user",
    "v2",
    "v3",
    "valid",
    "validate",
    "version",
    "via",
    "virtual",
    "vpn",
    "vpn4",
    "vpn4_mc",
    "vpn4_mpls",
    "vpn6",
    "vpn6_mc",
    "vpn6_mpls",
    "vrf",
    "wait",
    "warn",
    "warning",
    "watchdog",
    "weight",
    "where",
    "wired",
    "wireless",
    "yes",
    "zero",
];

/// Maps a logical or kernel name onto a BIRD symbol: lower case, `[a-z0-9_]`, not starting
/// with a digit (`underlay-host` -> `underlay_host`, `1tor` -> `p_1tor`).
pub fn bird_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "p_");
    }
    out
}

/// BIRD protocol name of an uplink's session for one family: `tor_a` (IPv4), `tor_a_v6`.
pub fn session_name(uplink: &str, v6: bool) -> String {
    let base = bird_identifier(uplink);
    if v6 {
        format!("{base}_v6")
    } else {
        base
    }
}

/// BIRD table names of the host table: `underlay_host4`, `underlay_host6`.
pub fn table_names(host_table: &str) -> [String; 2] {
    let t = bird_identifier(host_table);
    [format!("{t}4"), format!("{t}6")]
}

/// Why a derived symbol cannot be used, if it cannot.
pub fn reserved(id: &str) -> Option<&'static str> {
    if KEYWORDS.binary_search(&id).is_ok() {
        Some("a BIRD keyword")
    } else if FIXED_NAMES.contains(&id) {
        Some("a name the rendered config uses for its own protocols")
    } else {
        None
    }
}

/// A value BIRD reads between double quotes: its lexer has no escapes, so a
/// quote or a line break cannot be written at all.
pub fn quotable(s: &str) -> bool {
    !s.is_empty() && !s.contains(['"', '\n', '\r', '\0'])
}

/// An uplink as far as naming goes: its logical name and which sessions it gets.
#[derive(Debug, Clone, Copy)]
pub struct UplinkNames<'a> {
    pub name: &'a str,
    pub v4: bool,
    pub v6: bool,
}

/// A derived name BIRD would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// The host table's BIRD name is reserved.
    Table { id: String, why: &'static str },
    /// Uplink `index` maps to a reserved symbol.
    Reserved {
        index: usize,
        id: String,
        why: &'static str,
    },
    /// Uplink `index` maps to a symbol the host table or an earlier uplink (`other`) has.
    Duplicate {
        index: usize,
        id: String,
        other: Option<usize>,
    },
}

impl NameProblem {
    /// The uplink the problem is about (`None`: the host table).
    pub fn uplink(&self) -> Option<usize> {
        match self {
            NameProblem::Table { .. } => None,
            NameProblem::Reserved { index, .. } | NameProblem::Duplicate { index, .. } => {
                Some(*index)
            }
        }
    }

    /// What is wrong and the fix, for a person.
    pub fn message(&self, uplinks: &[UplinkNames]) -> String {
        let name = |i: usize| uplinks.get(i).map_or("", |u| u.name);
        match self {
            NameProblem::Table { id, why } => format!(
                "maps to BIRD table name {id}, which is {why}; choose another table name, e.g. underlay-host"
            ),
            NameProblem::Reserved { index, id, why } => format!(
                "'{}' maps to BIRD protocol name {id}, which is {why}; choose another uplink name, e.g. tor-{}",
                name(*index),
                name(*index)
            ),
            NameProblem::Duplicate { index, id, other } => match other {
                Some(o) => format!(
                    "'{}' maps to BIRD protocol name {id}, as uplinks[{o}] ('{}') does (BIRD names are lower case, '-' becomes '_'); give the uplinks names that differ in letters or digits",
                    name(*index),
                    name(*o)
                ),
                None => format!(
                    "'{}' maps to BIRD name {id}, which the host table already uses; choose another uplink name",
                    name(*index)
                ),
            },
        }
    }
}

/// Every naming problem of a config with this host table and these uplinks.
pub fn check(host_table: &str, uplinks: &[UplinkNames]) -> Vec<NameProblem> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, Option<usize>)> = Vec::new();
    for id in table_names(host_table) {
        if let Some(why) = reserved(&id) {
            out.push(NameProblem::Table {
                id: id.clone(),
                why,
            });
        }
        seen.push((id, None));
    }
    for (index, u) in uplinks.iter().enumerate() {
        let ids = [
            u.v4.then(|| session_name(u.name, false)),
            u.v6.then(|| session_name(u.name, true)),
        ];
        for id in ids.into_iter().flatten() {
            if let Some(why) = reserved(&id) {
                out.push(NameProblem::Reserved { index, id, why });
                continue;
            }
            if let Some((_, other)) = seen.iter().find(|(s, _)| *s == id) {
                out.push(NameProblem::Duplicate {
                    index,
                    id,
                    other: *other,
                });
                continue;
            }
            seen.push((id, Some(index)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str) -> UplinkNames<'_> {
        UplinkNames {
            name,
            v4: true,
            v6: true,
        }
    }

    #[test]
    fn keywords_are_sorted_for_binary_search() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn identifiers() {
        assert_eq!(bird_identifier("underlay-host"), "underlay_host");
        assert_eq!(bird_identifier("tor-a"), "tor_a");
        assert_eq!(bird_identifier("ToR.B 2"), "tor_b_2");
        assert_eq!(bird_identifier("1tor"), "p_1tor");
        assert_eq!(bird_identifier(""), "p_");
        assert_eq!(session_name("tor-a", true), "tor_a_v6");
    }

    #[test]
    fn finds_every_kind_of_clash() {
        assert!(check("underlay-host", &[up("tor-a"), up("tor-b")]).is_empty());
        let p = check("underlay-host", &[up("tor-a"), up("TOR_A")]);
        assert!(
            matches!(
                &p[..],
                [
                    NameProblem::Duplicate {
                        index: 1,
                        other: Some(0),
                        ..
                    },
                    ..
                ]
            ),
            "{p:?}"
        );
        let p = check("underlay-host", &[up("hold")]);
        assert!(
            matches!(&p[..], [NameProblem::Reserved { index: 0, .. }]),
            "{p:?}"
        );
        // `is` is fine for IPv4, but its IPv6 session would be `is_v6`, a BIRD keyword.
        let p = check("underlay-host", &[up("is")]);
        assert!(
            matches!(&p[..], [NameProblem::Reserved { id, .. }] if id == "is_v6"),
            "{p:?}"
        );
        let p = check("underlay-host", &[up("underlay-host4")]);
        assert!(
            matches!(&p[..], [NameProblem::Duplicate { other: None, .. }]),
            "{p:?}"
        );
        let p = check("as", &[up("tor-a")]);
        assert!(
            matches!(&p[..], [NameProblem::Table { id, .. }] if id == "as4"),
            "{p:?}"
        );
        let p = check("calico-igp", &[]);
        assert!(!p.is_empty(), "calico_igp4 is the template's");
    }
}
