//! Pure parsers for the text and JSON the collectors gather: iptables-save,
//! `nft -j list ruleset`, `conntrack -L`, /proc/net/tcp, BIRD configs,
//! systemd-style INI files and kubelet flags.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::desired::Family;

/// The masquerade bit kube-proxy and Calico use.
pub const MASQ_BIT: u32 = crate::nft::KUBE_MASQ_MARK;

/// An interface match of a rule: `-o eth0`, `! -o eth+`, `oifname "eth*"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    pub pattern: String,
    pub negated: bool,
}

impl IfMatch {
    pub fn matches(&self, ifname: &str) -> bool {
        let p = self.pattern.trim_end_matches(['+', '*']);
        let hit = if p.len() < self.pattern.len() {
            ifname.starts_with(p)
        } else {
            ifname == self.pattern
        };
        hit != self.negated
    }
}

/// A MASQUERADE rule, from iptables or nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRule {
    /// Where it was seen, e.g. `iptables-save: -A POSTROUTING -o eth0 -j MASQUERADE`.
    pub text: String,
    pub out_if: Option<IfMatch>,
    /// Only packets carrying the masquerade bit (kube-proxy's KUBE-POSTROUTING).
    pub by_mark: bool,
}

impl MasqRule {
    pub fn applies_to(&self, ifname: &str) -> bool {
        self.out_if.as_ref().is_none_or(|m| m.matches(ifname))
    }
}

/// A rule changing the masquerade bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRule {
    pub text: String,
    /// Sets the bit (kube-proxy's KUBE-MARK-MASQ) or clears it.
    pub sets: bool,
    /// nft only: the chain runs before the NAT core's srcnat hook (a guard).
    pub before_srcnat: bool,
    /// nft only: what the rule matches on, as `key=value` (`meta l4proto=ipencap`).
    pub matches: Vec<String>,
    /// From iptables' nat table (kube-proxy's own clearing).
    pub iptables_nat: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    pub masquerade: Vec<MasqRule>,
    pub marks: Vec<MarkRule>,
}

/// Value of `mark` after `(mark & !mask) ^ value`, starting from the masquerade bit set.
fn xmark_keeps_bit(value: u32, mask: u32) -> bool {
    ((MASQ_BIT & !mask) ^ value) & MASQ_BIT != 0
}

fn parse_hex(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `--set-xmark V/M` (what iptables-save prints for every MARK flavour).
fn xmark(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('/').unwrap_or((v, "0xffffffff"));
    Some((parse_hex(a)?, parse_hex(b)?))
}

/// Parses `iptables-save` output: MASQUERADE rules of the nat table and MARK
/// rules touching the masquerade bit in any table.
pub fn iptables_save(tool: &str, text: &str, fw: &mut Firewall) {
    let mut table = "";
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
            continue;
        }
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let words: Vec<&str> = rule.split_whitespace().collect();
        let mut out_if = None;
        let mut target = None;
        let mut mark_match = false;
        let mut set_xmark = None;
        let mut i = 0;
        while i < words.len() {
            let negated = i > 0 && words[i - 1] == "!";
            match words[i] {
                "-o" | "--out-interface" if i + 1 < words.len() => {
                    out_if = Some(IfMatch {
                        pattern: words[i + 1].to_string(),
                        negated,
                    });
                }
                "--mark" if i + 1 < words.len() && !negated => {
                    if let Some((v, m)) = xmark(words[i + 1]) {
                        mark_match |= v & m & MASQ_BIT != 0;
                    }
                }
                "-j" if i + 1 < words.len() => target = Some(words[i + 1]),
                "--set-xmark" | "--set-mark" if i + 1 < words.len() => {
                    set_xmark = xmark(words[i + 1]);
                }
                _ => {}
            }
            i += 1;
        }
        let text = format!("{tool} *{table}: -A {rule}");
        match target {
            Some("MASQUERADE") if table == "nat" => fw.masquerade.push(MasqRule {
                text,
                out_if,
                by_mark: mark_match,
            }),
            Some("MARK") => {
                if let Some((v, m)) = set_xmark {
                    let touches = (v | m) & MASQ_BIT != 0;
                    if touches {
                        fw.marks.push(MarkRule {
                            text,
                            sets: xmark_keeps_bit(v, m),
                            before_srcnat: false,
                            matches: Vec::new(),
                            iptables_nat: table == "nat",
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// iptables-nft keeps its tables in nftables too, with `xt` expressions nft
/// cannot show; those are read from iptables-save instead.
fn is_iptables_table(family: &str, name: &str, iptables: &[(String, String)]) -> bool {
    let fam_tool = match family {
        "ip" => "iptables",
        "ip6" => "ip6tables",
        _ => return false,
    };
    ["nat", "filter", "mangle", "raw", "security"].contains(&name)
        && iptables
            .iter()
            .any(|(tool, text)| tool.starts_with(fam_tool) && text.contains(&format!("*{name}")))
}

fn key_of(left: &Value) -> String {
    if let Some(m) = left
        .get("meta")
        .and_then(|m| m.get("key"))
        .and_then(Value::as_str)
    {
        return format!("meta {m}");
    }
    if let Some(p) = left.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("?");
        let field = p.get("field").and_then(Value::as_str).unwrap_or("?");
        return format!("{proto} {field}");
    }
    if let Some(and) = left.get("&").and_then(Value::as_array) {
        if let Some(first) = and.first() {
            return format!("{} &", key_of(first));
        }
    }
    left.to_string()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluates a `meta mark set ...` value with the mark holding only the masquerade bit.
fn eval_mark(v: &Value) -> Option<u32> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).ok();
    }
    if v.get("meta")
        .and_then(|m| m.get("key"))
        .and_then(Value::as_str)
        == Some("mark")
    {
        return Some(MASQ_BIT);
    }
    let obj = v.as_object()?;
    let (op, args) = obj.iter().next()?;
    let args = args.as_array()?;
    let a = eval_mark(args.first()?)?;
    let b = eval_mark(args.get(1)?)?;
    match op.as_str() {
        "&" => Some(a & b),
        "|" => Some(a | b),
        "^" => Some(a ^ b),
        _ => None,
    }
}

/// Parses `nft -j list ruleset`: native masquerade rules and mark rules.
pub fn nft_ruleset(doc: &Value, iptables: &[(String, String)], fw: &mut Firewall) {
    let objects = doc
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // (family, table, chain) -> (hook, prio)
    let mut chains = std::collections::HashMap::new();
    for o in &objects {
        if let Some(c) = o.get("chain") {
            let id = (
                c["family"].as_str().unwrap_or_default().to_string(),
                c["table"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
            );
            let hook = c.get("hook").and_then(Value::as_str).map(str::to_string);
            let prio = c.get("prio").and_then(Value::as_i64);
            chains.insert(id, (hook, prio));
        }
    }
    for o in &objects {
        let Some(r) = o.get("rule") else { continue };
        let family = r["family"].as_str().unwrap_or_default();
        let table = r["table"].as_str().unwrap_or_default();
        let chain = r["chain"].as_str().unwrap_or_default();
        if is_iptables_table(family, table, iptables) {
            continue;
        }
        let expr = r["expr"].as_array().cloned().unwrap_or_default();
        let mut matches = Vec::new();
        let mut out_if = None;
        let mut by_mark = false;
        let mut masq = false;
        let mut mark_set = None;
        for e in &expr {
            if let Some(m) = e.get("match") {
                let key = key_of(&m["left"]);
                let op = m["op"].as_str().unwrap_or("==");
                let right = value_text(&m["right"]);
                if key == "meta oifname" {
                    out_if = Some(IfMatch {
                        pattern: right.clone(),
                        negated: op == "!=",
                    });
                }
                if key.starts_with("meta mark") && op == "==" {
                    by_mark |= m["right"]
                        .as_u64()
                        .is_some_and(|v| v as u32 & MASQ_BIT != 0);
                }
                matches.push(format!(
                    "{key}{}{right}",
                    if op == "!=" { "!=" } else { "=" }
                ));
            }
            if e.get("masquerade").is_some() {
                masq = true;
            }
            if let Some(mg) = e.get("mangle") {
                if mg["key"]
                    .get("meta")
                    .and_then(|m| m.get("key"))
                    .and_then(Value::as_str)
                    == Some("mark")
                {
                    mark_set = eval_mark(&mg["value"]);
                }
            }
        }
        let text = format!(
            "nft {family} {table} {chain}: {}",
            if matches.is_empty() {
                "(every packet)".to_string()
            } else {
                matches.join(" ")
            }
        );
        if masq {
            fw.masquerade.push(MasqRule {
                text: format!("{text} masquerade"),
                out_if,
                by_mark,
            });
        } else if let Some(after) = mark_set {
            let (hook, prio) = chains
                .get(&(family.to_string(), table.to_string(), chain.to_string()))
                .cloned()
                .unwrap_or((None, None));
            let before_srcnat = match hook.as_deref() {
                Some("postrouting") => prio.is_some_and(|p| p < i64::from(crate::nft::SRCNAT)),
                Some("prerouting" | "forward" | "output") => true,
                _ => false,
            };
            fw.marks.push(MarkRule {
                text: format!("{text} meta mark set ..."),
                sets: after & MASQ_BIT != 0,
                before_srcnat,
                matches,
                iptables_nat: false,
            });
        }
    }
}

/// One conntrack entry's original and reply tuples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub line: String,
    pub proto: u8,
    pub orig_src: String,
    pub orig_dst: String,
    pub orig_dport: Option<u16>,
    pub reply_src: String,
    pub reply_dst: String,
}

impl CtEntry {
    /// The reply goes to another address than the sender's: source NAT.
    pub fn source_natted(&self) -> bool {
        self.reply_dst != self.orig_src
    }
}

/// Parses `conntrack -L` lines: `udp 17 29 src=.. dst=.. sport=.. dport=.. [UNREPLIED] src=.. ...`.
pub fn conntrack(text: &str) -> Vec<CtEntry> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // The protocol number follows the protocol name (`ipv4 2 udp 17` with -o extended).
            let proto = words.windows(2).take(4).find_map(|w| {
                (w[0].chars().all(|c| c.is_ascii_alphabetic()) && w[0] != "ipv4" && w[0] != "ipv6")
                    .then(|| w[1].parse::<u8>().ok())
                    .flatten()
            })?;
            let mut src = Vec::new();
            let mut dst = Vec::new();
            let mut dport = Vec::new();
            for w in &words {
                if let Some((k, v)) = w.split_once('=') {
                    match k {
                        "src" => src.push(v.to_string()),
                        "dst" => dst.push(v.to_string()),
                        "dport" => dport.push(v.parse::<u16>().ok()),
                        _ => {}
                    }
                }
            }
            if src.len() < 2 || dst.len() < 2 {
                return None;
            }
            Some(CtEntry {
                line: line.trim().to_string(),
                proto,
                orig_src: src[0].clone(),
                orig_dst: dst[0].clone(),
                orig_dport: dport.first().copied().flatten(),
                reply_src: src[1].clone(),
                reply_dst: dst[1].clone(),
            })
        })
        .collect()
}

/// Listening sockets (state 0A) of /proc/net/tcp or tcp6: `(addr, port, inode)`.
pub fn proc_net_tcp(text: &str, family: Family) -> Vec<(IpAddr, u16, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 10 || w[3] != "0A" {
            continue;
        }
        let Some((addr, port)) = w[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let Ok(inode) = w[9].parse::<u64>() else {
            continue;
        };
        let ip = match family {
            // The kernel prints each 32-bit word in host (little-endian) order.
            Family::Ipv4 => match u32::from_str_radix(addr, 16) {
                Ok(v) => IpAddr::V4(Ipv4Addr::from(v.swap_bytes())),
                Err(_) => continue,
            },
            Family::Ipv6 => {
                if addr.len() != 32 {
                    continue;
                }
                let mut bytes = [0u8; 16];
                let mut ok = true;
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    match u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16) {
                        Ok(v) => chunk.copy_from_slice(&v.swap_bytes().to_be_bytes()),
                        Err(_) => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            }
        };
        out.push((ip, port, inode));
    }
    out
}

/// A `protocol kernel` block of a BIRD config: which kernel table it syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSync {
    /// Protocol name, or `kernelN` when unnamed.
    pub name: String,
    pub table: u32,
    /// `None`: no channel named (BIRD 1.x: the binary's family).
    pub family: Option<Family>,
    /// `export none` (or no export at all in BIRD 2): it never writes routes.
    pub exports: bool,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else if rest.starts_with('#') {
            rest = rest.split_once('\n').map_or("", |(_, r)| r);
            out.push('\n');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The `protocol kernel` blocks of a BIRD 1.x or 2.x config (includes are not followed).
pub fn bird_kernel_syncs(config: &str) -> Vec<KernelSync> {
    let text = strip_comments(config);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    let mut n = 0;
    while let Some(pos) = rest.find("protocol") {
        let after = &rest[pos + "protocol".len()..];
        rest = after;
        let head: Vec<&str> = after.split_whitespace().take(2).collect();
        if head.first().map(|w| w.trim_end_matches('{')) != Some("kernel") {
            continue;
        }
        n += 1;
        let Some(open) = after.find('{') else { break };
        let name = head
            .get(1)
            .filter(|w| !w.starts_with('{'))
            .map_or_else(|| format!("kernel{n}"), |w| w.to_string());
        // The block up to its matching brace.
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let block = &after[open + 1..end];
        let words: Vec<&str> = block
            .split(|c: char| c.is_whitespace() || c == ';' || c == '{' || c == '}')
            .filter(|w| !w.is_empty())
            .collect();
        let mut table = 254;
        let mut family = None;
        let mut exports = false;
        for (i, w) in words.iter().enumerate() {
            match *w {
                "kernel" if words.get(i + 1) == Some(&"table") => {
                    if let Some(t) = words.get(i + 2).and_then(|t| t.parse().ok()) {
                        table = t;
                    }
                }
                "ipv4" if i == 0 || words[i - 1] != "table" => family = Some(Family::Ipv4),
                "ipv6" if i == 0 || words[i - 1] != "table" => family = Some(Family::Ipv6),
                "export" => exports = words.get(i + 1) != Some(&"none"),
                _ => {}
            }
        }
        // BIRD 1.x exports nothing by default too; an absent export means none.
        out.push(KernelSync {
            name,
            table,
            family,
            exports,
        });
        rest = &after[end.min(after.len())..];
    }
    out
}

/// `Key=value` of a systemd-style INI file, last one wins; section ignored.
pub fn ini_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') || l.starts_with(';') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
        .next()
}

/// systemd's boolean parsing.
pub fn ini_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "y" | "t" => Some(true),
        "0" | "no" | "false" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

/// `--node-ip` from kubelet flags files (`KUBELET_KUBEADM_ARGS="... --node-ip=X"`),
/// or `nodeIP`/`address`-less KubeletConfiguration (which has no node IP field).
pub fn kubelet_node_ip(text: &str) -> Option<String> {
    let words = text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    let mut prev_flag = false;
    for w in words {
        if prev_flag && !w.is_empty() {
            return Some(w.to_string());
        }
        // `KUBELET_EXTRA_ARGS=--node-ip=X`: the flag may follow a variable name.
        if let Some(i) = w.find("--node-ip=") {
            return Some(w[i + "--node-ip=".len()..].to_string());
        }
        prev_flag = w.ends_with("--node-ip");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_masquerade_and_marks() {
        let text = "*mangle\n-A POSTROUTING -j MARK --set-xmark 0x10/0x10\n*nat\n\
            -A POSTROUTING -o eth+ -j MASQUERADE --random-fully\n\
            -A KP -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
            -A KP -j MARK --set-xmark 0x4000/0x0\n\
            -A KP -m mark --mark 0x4000/0x4000 -j MASQUERADE\n\
            -A X ! -o lo -j MASQUERADE\n\
            -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n";
        let mut fw = Firewall::default();
        iptables_save("iptables-save", text, &mut fw);
        assert_eq!(fw.masquerade.len(), 3);
        assert!(fw.masquerade[0].applies_to("eth0"));
        assert!(!fw.masquerade[0].applies_to("bond0"));
        assert!(!fw.masquerade[0].by_mark);
        assert!(fw.masquerade[1].by_mark);
        assert!(fw.masquerade[2].applies_to("eth0") && !fw.masquerade[2].applies_to("lo"));
        assert_eq!(fw.marks.len(), 2, "{:?}", fw.marks);
        assert!(!fw.marks[0].sets, "xor 0x4000 clears the bit");
        assert!(fw.marks[1].sets);
        assert!(fw.marks.iter().all(|m| m.iptables_nat));
    }

    #[test]
    fn nft_guard_masquerade_and_iptables_tables_skipped() {
        let doc: Value = serde_json::from_str(
            r#"{"nftables":[
            {"table":{"family":"ip","name":"nat"}},
            {"chain":{"family":"ip","table":"nat","name":"POSTROUTING","type":"nat","hook":"postrouting","prio":100}},
            {"rule":{"family":"ip","table":"nat","chain":"POSTROUTING","expr":[{"xt":{"type":"target","name":"MASQUERADE"}}]}},
            {"chain":{"family":"inet","table":"underlay","name":"mark_guard","type":"filter","hook":"postrouting","prio":99}},
            {"rule":{"family":"inet","table":"underlay","chain":"mark_guard","expr":[
              {"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"ipencap"}},
              {"mangle":{"key":{"meta":{"key":"mark"}},"value":{"&":[{"meta":{"key":"mark"}},4294950911]}}}]}},
            {"chain":{"family":"inet","table":"k","name":"post","type":"nat","hook":"postrouting","prio":100}},
            {"rule":{"family":"inet","table":"k","chain":"post","expr":[
              {"match":{"op":"==","left":{"&":[{"meta":{"key":"mark"}},16384]},"right":16384}},
              {"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"eth*"}},
              {"masquerade":null}]}}
            ]}"#,
        )
        .unwrap();
        let ipt = vec![("iptables-save".to_string(), "*nat\nCOMMIT\n".to_string())];
        let mut fw = Firewall::default();
        nft_ruleset(&doc, &ipt, &mut fw);
        assert_eq!(fw.masquerade.len(), 1, "{fw:?}");
        assert!(fw.masquerade[0].by_mark);
        assert!(fw.masquerade[0].applies_to("eth1"));
        assert_eq!(fw.marks.len(), 1);
        assert!(!fw.marks[0].sets && fw.marks[0].before_srcnat);
        assert_eq!(fw.marks[0].matches, ["meta l4proto=ipencap"]);
    }

    #[test]
    fn conntrack_lines() {
        let text = "udp      17 29 src=10.10.0.11 dst=10.10.0.12 sport=41234 dport=4789 [UNREPLIED] src=10.10.0.12 dst=172.30.0.1 sport=4789 dport=41234 mark=16384 use=1\n\
            unknown  4 599 src=10.10.0.11 dst=10.10.0.12 src=10.10.0.12 dst=10.10.0.11 mark=0 use=1\n\
            conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n";
        let e = conntrack(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].proto, 17);
        assert_eq!(e[0].orig_dport, Some(4789));
        assert!(e[0].source_natted());
        assert_eq!(e[1].proto, 4);
        assert!(!e[1].source_natted());
    }

    #[test]
    fn proc_tcp_listeners() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0B000A0A:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
           1: 0B000A0A:00B3 0100000A:1234 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(
            proc_net_tcp(v4, Family::Ipv4),
            [("10.10.0.11".parse().unwrap(), 179, 12345)]
        );
        let v6 = "header\n   0: 00000000000000000000000001000000:00B3 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        assert_eq!(
            proc_net_tcp(v6, Family::Ipv6),
            [("::1".parse().unwrap(), 179, 777)]
        );
    }

    #[test]
    fn bird_kernel_tables() {
        let conf = "# host\nprotocol device {}\nprotocol kernel kernel_host {\n  ipv4 { export filter { accept; }; };\n  kernel table 1001; # ours\n  merge paths on;\n}\n\
            /* protocol kernel old { kernel table 5; } */\nprotocol kernel { ipv6 { export none; }; }\n\
            protocol bgp tor_a { ipv4 { table master4; }; }\n";
        let k = bird_kernel_syncs(conf);
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(k[0].name, "kernel_host");
        assert_eq!(
            (k[0].table, k[0].family, k[0].exports),
            (1001, Some(Family::Ipv4), true)
        );
        assert_eq!(
            (k[1].table, k[1].family, k[1].exports),
            (254, Some(Family::Ipv6), false)
        );
        // BIRD 1.x (Calico): no channels, export all, main.
        let k = bird_kernel_syncs("protocol kernel {\n  learn;\n  persist;\n  export all;\n}\n");
        assert_eq!((k[0].table, k[0].family, k[0].exports), (254, None, true));
    }

    #[test]
    fn ini_and_kubelet() {
        let t = "[Network]\n#ManageForeignRoutes=yes\nManageForeignRoutes=no\n";
        assert_eq!(
            ini_value(t, "ManageForeignRoutes").and_then(ini_bool),
            Some(false)
        );
        assert_eq!(ini_value(t, "ManageForeignRoutingPolicyRules"), None);
        assert_eq!(
            kubelet_node_ip(
                "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=x --node-ip=10.10.0.11\"\n"
            )
            .as_deref(),
            Some("10.10.0.11")
        );
        assert_eq!(
            kubelet_node_ip("KUBELET_EXTRA_ARGS=--node-ip 172.30.0.1").as_deref(),
            Some("172.30.0.1")
        );
        assert_eq!(kubelet_node_ip("KUBELET_EXTRA_ARGS="), None);
    }
}
