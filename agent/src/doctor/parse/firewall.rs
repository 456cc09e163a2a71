//! Pure parsers for the firewall and conntrack text the collectors gather:
//! `iptables-save`, `nft -j list ruleset` and `conntrack -L`.
//!
//! Besides the flat lists of MASQUERADE and mark rules, both firewall parsers
//! walk every source-NAT base chain of postrouting the way a packet does
//! (jumps, gotos, `return`), tracking whether only packets carrying the
//! masquerade bit get this far and whether the bit was cleared on the way.
//! That is what tells kube-proxy <= 1.18.5 (`-m mark --mark 0x4000/0x4000 -j
//! MASQUERADE`, the bit never cleared) from 1.19.0+ and the nftables mode
//! (return unless the bit is set, clear it, then MASQUERADE), and what shows a
//! NAT rule that runs ahead of kube-proxy's clearing.

use std::collections::HashMap;

use serde_json::Value;

/// The masquerade bit kube-proxy and Calico use.
pub const MASQ_BIT: u32 = crate::nft::KUBE_MASQ_MARK;

/// Priority of the iptables nat table's POSTROUTING (legacy x_tables and
/// iptables-nft both register it at `NF_IP_PRI_NAT_SRC`).
pub const IPTABLES_NAT_PRIO: i64 = crate::nft::SRCNAT as i64;

/// An interface match of a rule: `-o eth0`, `! -o eth+`, `oifname "eth*"`,
/// `oifname { "up1", "up2" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    /// Any of these (iptables: exactly one); a trailing `+` or `*` is a prefix match.
    pub patterns: Vec<String>,
    pub negated: bool,
}

impl IfMatch {
    pub fn one(pattern: &str, negated: bool) -> IfMatch {
        IfMatch {
            patterns: vec![pattern.to_string()],
            negated,
        }
    }

    pub fn matches(&self, ifname: &str) -> bool {
        let hit = self.patterns.iter().any(|pattern| {
            let p = pattern.trim_end_matches(['+', '*']);
            if p.len() < pattern.len() {
                ifname.starts_with(p)
            } else {
                ifname == pattern
            }
        });
        hit != self.negated
    }

    /// Written for this interface: a positive match naming it (not "everything but X").
    pub fn names(&self, ifname: &str) -> bool {
        !self.negated && self.matches(ifname)
    }
}

/// A MASQUERADE rule, from iptables or nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqRule {
    /// Where it was seen, e.g. `iptables-save: -A POSTROUTING -o eth0 -j MASQUERADE`.
    pub text: String,
    pub out_if: Option<IfMatch>,
    /// Only packets carrying the masquerade bit reach it: its own mark match
    /// (kube-proxy <= 1.18.5) or a `return` of unmarked packets ahead of it in
    /// its chain (kube-proxy >= 1.19.0, nftables mode).
    pub by_mark: bool,
    /// The bit is cleared in its chain before it (kube-proxy >= 1.19.0, nftables mode).
    pub clears_first: bool,
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
    /// nft only: its output interface match (underlay's guard: the uplinks).
    pub out_if: Option<IfMatch>,
    /// From iptables' nat table (kube-proxy's own clearing).
    pub iptables_nat: bool,
}

/// A source-NAT base chain of postrouting with the NAT rules reachable from
/// it, in the order a packet meets them. The kernel runs these chains (of
/// every table, iptables' and nftables') from one hook in priority order; the
/// first rule that binds a connection ends the walk for it. Of chains with
/// equal priority the one registered last runs first (measured in
/// `tests/nat_vxlan_mark_guard.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatChain {
    /// `iptables-save *nat POSTROUTING`, `nft ip kube-proxy nat-postrouting`.
    pub name: String,
    /// `ip`, `ip6` or `inet`.
    pub family: String,
    pub prio: i64,
    pub steps: Vec<NatStep>,
}

impl NatChain {
    /// Both can see the same packets.
    pub fn shares_family(&self, other: &NatChain) -> bool {
        self.family == other.family || self.family == "inet" || other.family == "inet"
    }
}

/// A MASQUERADE or SNAT rule as met on the walk from its base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatStep {
    pub text: String,
    /// Chains from the base chain to the rule's own.
    pub path: Vec<String>,
    pub out_if: Option<IfMatch>,
    pub masquerade: bool,
    /// Only packets carrying the masquerade bit get here.
    pub by_mark: bool,
    /// The bit was cleared on the way here.
    pub cleared: bool,
}

impl NatStep {
    pub fn applies_to(&self, ifname: &str) -> bool {
        self.out_if.as_ref().is_none_or(|m| m.matches(ifname))
    }

    pub fn via(&self) -> String {
        self.path.join(" > ")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    pub masquerade: Vec<MasqRule>,
    pub marks: Vec<MarkRule>,
    pub nat_chains: Vec<NatChain>,
}

/// One rule reduced to what the walk needs.
#[derive(Debug, Clone)]
struct Rule {
    text: String,
    out_if: Option<IfMatch>,
    /// `Some(true)`: only packets carrying the bit; `Some(false)`: only those without.
    mark: Option<bool>,
    /// Conditions the walk cannot evaluate (addresses, protocols, sets...).
    other: bool,
    action: Action,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Return,
    Jump(String),
    Goto(String),
    Nat {
        masquerade: bool,
    },
    /// Changes the mark; `keeps`: the bit is still set afterwards if it was.
    Mark {
        keeps: bool,
    },
    /// accept, drop, reject: the packet leaves the walk.
    Verdict,
    None,
}

/// A table's chains by name, and their names in listing order.
type Table = (HashMap<String, Vec<Rule>>, Vec<String>);

/// What the walk knows about packets at a point of a chain.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// Only packets that carried the bit on entry get here.
    by_mark: bool,
    /// ...and it was cleared since.
    cleared: bool,
}

/// Walks `chain` as a packet would. With `follow`, jumps and gotos are
/// followed (depth-limited); without, each chain is read on its own.
fn walk(
    chains: &HashMap<String, Vec<Rule>>,
    chain: &str,
    mut st: State,
    path: &mut Vec<String>,
    follow: bool,
    out: &mut Vec<NatStep>,
) {
    let Some(rules) = chains.get(chain) else {
        return;
    };
    if path.len() > 16 || path.iter().any(|c| c == chain) {
        return;
    }
    path.push(chain.to_string());
    for r in rules {
        // The bit's value on this path, where the walk knows it.
        let bit = match (st.by_mark, st.cleared) {
            (_, true) => Some(false),
            (true, false) => Some(true),
            (false, false) => None,
        };
        if let (Some(want), Some(have)) = (r.mark, bit) {
            if want != have {
                continue;
            }
        }
        let needs_bit = st.by_mark || r.mark == Some(true);
        let unconditional = !r.other && r.mark.is_none() && r.out_if.is_none();
        match &r.action {
            Action::Return => {
                if unconditional {
                    break;
                }
                // `! --mark 0x4000/0x4000 -j RETURN`, `mark & 0x4000 == 0 return`.
                if !r.other && r.out_if.is_none() && r.mark == Some(false) {
                    st.by_mark = true;
                }
            }
            Action::Jump(to) | Action::Goto(to) => {
                if follow {
                    let inner = State {
                        by_mark: needs_bit,
                        cleared: st.cleared,
                    };
                    walk(chains, to, inner, path, follow, out);
                }
                if matches!(r.action, Action::Goto(_)) && unconditional {
                    break;
                }
            }
            Action::Nat { masquerade } => {
                out.push(NatStep {
                    text: r.text.clone(),
                    path: path.clone(),
                    out_if: r.out_if.clone(),
                    masquerade: *masquerade,
                    by_mark: needs_bit,
                    cleared: st.cleared,
                });
                if unconditional {
                    break;
                }
            }
            Action::Mark { keeps } => {
                // Only a rule that surely runs for every packet carrying the bit
                // here changes what the walk knows.
                if !r.other && r.out_if.is_none() && r.mark != Some(false) && !keeps {
                    st.cleared = true;
                }
            }
            Action::Verdict => {
                if unconditional {
                    break;
                }
            }
            Action::None => {}
        }
    }
    path.pop();
}

/// MASQUERADE rules of every chain, each chain read on its own.
fn masquerade_rules(chains: &HashMap<String, Vec<Rule>>, order: &[String]) -> Vec<MasqRule> {
    let mut out = Vec::new();
    for c in order {
        let mut steps = Vec::new();
        walk(
            chains,
            c,
            State::default(),
            &mut Vec::new(),
            false,
            &mut steps,
        );
        out.extend(
            steps
                .into_iter()
                .filter(|s| s.masquerade)
                .map(|s| MasqRule {
                    text: s.text,
                    out_if: s.out_if,
                    by_mark: s.by_mark,
                    clears_first: s.cleared,
                }),
        );
    }
    out
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

/// Splits an iptables-save rule into words; `"..."` (comments) stays one word.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One `-A CHAIN ...` rule of iptables-save: (chain, rule).
fn iptables_rule(tool: &str, table: &str, rule: &str) -> Option<(String, Rule)> {
    let w = words(rule);
    let chain = w.first()?.clone();
    let mut out_if = None;
    let mut mark = None;
    let mut other = false;
    let mut target: Option<(&str, bool)> = None;
    let mut set_xmark = None;
    let mut i = 1;
    while i < w.len() {
        let negated = w[i] == "!";
        if negated {
            i += 1;
            if i >= w.len() {
                break;
            }
        }
        let arg = w.get(i + 1).map(String::as_str);
        if target.is_some() {
            // Target options: only MARK's value matters.
            if let ("--set-xmark" | "--set-mark", Some(a)) = (w[i].as_str(), arg) {
                set_xmark = xmark(a);
                i += 1;
            }
            i += 1;
            continue;
        }
        match (w[i].as_str(), arg) {
            ("-o" | "--out-interface", Some(a)) => {
                out_if = Some(IfMatch::one(a, negated));
                i += 1;
            }
            ("-m" | "--match", Some("mark" | "comment")) => i += 1,
            ("--comment", Some(_)) => i += 1,
            ("--mark", Some(a)) => {
                match xmark(a) {
                    // `--mark V/M` with the bit in M: only packets with (or without) it.
                    Some((v, m)) if m & MASQ_BIT != 0 => {
                        mark = Some((v & MASQ_BIT != 0) != negated)
                    }
                    _ => other = true,
                }
                i += 1;
            }
            ("-j" | "--jump", Some(t)) => {
                target = Some((t, false));
                i += 1;
            }
            ("-g" | "--goto", Some(t)) => {
                target = Some((t, true));
                i += 1;
            }
            _ => other = true,
        }
        i += 1;
    }
    let action = match target {
        None => Action::None,
        Some(("RETURN", _)) => Action::Return,
        Some(("MASQUERADE", _)) => Action::Nat { masquerade: true },
        Some(("SNAT", _)) => Action::Nat { masquerade: false },
        Some(("ACCEPT" | "DROP" | "REJECT", _)) => Action::Verdict,
        Some(("MARK", _)) => match set_xmark {
            Some((v, m)) if (v | m) & MASQ_BIT != 0 => Action::Mark {
                keeps: xmark_keeps_bit(v, m),
            },
            _ => Action::None,
        },
        // Another chain, or a target the walk does not follow (DNAT, LOG...: not a chain).
        Some((t, true)) => Action::Goto(t.to_string()),
        Some((t, false)) => Action::Jump(t.to_string()),
    };
    let text = format!("{tool} *{table}: -A {rule}");
    Some((
        chain,
        Rule {
            text,
            out_if,
            mark,
            other,
            action,
        },
    ))
}

/// Parses `iptables-save` output: MASQUERADE rules of the nat table, MARK
/// rules touching the masquerade bit in any table, and the walk from the nat
/// table's POSTROUTING.
pub fn iptables_save(tool: &str, text: &str, fw: &mut Firewall) {
    let mut table = String::new();
    let mut tables: HashMap<String, Table> = HashMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
            continue;
        }
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        let Some((chain, r)) = iptables_rule(tool, &table, rule) else {
            continue;
        };
        if let Action::Mark { keeps } = r.action {
            fw.marks.push(MarkRule {
                text: r.text.clone(),
                sets: keeps,
                before_srcnat: false,
                matches: Vec::new(),
                out_if: r.out_if.clone(),
                iptables_nat: table == "nat",
            });
        }
        let (chains, order) = tables.entry(table.clone()).or_default();
        if !chains.contains_key(&chain) {
            order.push(chain.clone());
        }
        chains.entry(chain).or_default().push(r);
    }
    let Some((chains, order)) = tables.get("nat") else {
        return;
    };
    fw.masquerade.extend(masquerade_rules(chains, order));
    let mut steps = Vec::new();
    walk(
        chains,
        "POSTROUTING",
        State::default(),
        &mut Vec::new(),
        true,
        &mut steps,
    );
    fw.nat_chains.push(NatChain {
        name: format!("{tool} *nat POSTROUTING"),
        family: if tool.starts_with("ip6") { "ip6" } else { "ip" }.to_string(),
        prio: IPTABLES_NAT_PRIO,
        steps,
    });
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
        Value::Object(o) if o.contains_key("set") => {
            let items: Vec<String> = o["set"]
                .as_array()
                .map(|a| a.iter().map(value_text).collect())
                .unwrap_or_default();
            format!("{{{}}}", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The interface names of an `oifname` match's right side: `"eth0"` or `{"set": [...]}`.
fn names_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(o) => o
            .get("set")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
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

/// `meta mark & M == V` (or `!=`) with the bit in M: whether it needs the bit set.
fn mark_condition(m: &Value) -> Option<bool> {
    let and = m["left"].get("&")?.as_array()?;
    if key_of(and.first()?) != "meta mark" {
        return None;
    }
    let mask = and.get(1)?.as_u64()? as u32;
    if mask & MASQ_BIT == 0 {
        return None;
    }
    let set = m["right"].as_u64()? as u32 & MASQ_BIT != 0;
    Some(set != (m["op"].as_str() == Some("!=")))
}

/// One nft rule: the walk's view, plus the flat parse's matches and mark change.
fn nft_rule(text_head: &str, expr: &[Value]) -> (Rule, Vec<String>, Option<u32>) {
    let mut matches = Vec::new();
    let mut out_if = None;
    let mut mark = None;
    let mut other = false;
    let mut action = Action::None;
    let mut mark_set = None;
    for e in expr {
        if let Some(m) = e.get("match") {
            let key = key_of(&m["left"]);
            let op = m["op"].as_str().unwrap_or("==");
            let right = value_text(&m["right"]);
            if key == "meta oifname" {
                out_if = Some(IfMatch {
                    patterns: names_of(&m["right"]),
                    negated: op == "!=",
                });
            } else if let Some(c) = mark_condition(m) {
                mark = Some(c);
            } else {
                other = true;
            }
            matches.push(format!(
                "{key}{}{right}",
                if op == "!=" { "!=" } else { "=" }
            ));
        }
        if e.get("masquerade").is_some() {
            action = Action::Nat { masquerade: true };
        } else if e.get("snat").is_some() {
            action = Action::Nat { masquerade: false };
        } else if e.get("return").is_some() {
            action = Action::Return;
        } else if let Some(t) = e.pointer("/jump/target").and_then(Value::as_str) {
            action = Action::Jump(t.to_string());
        } else if let Some(t) = e.pointer("/goto/target").and_then(Value::as_str) {
            action = Action::Goto(t.to_string());
        } else if ["accept", "drop", "reject"]
            .iter()
            .any(|k| e.get(k).is_some())
        {
            action = Action::Verdict;
        } else if e.get("vmap").is_some() || e.get("xt").is_some() {
            other = true;
        } else if let Some(mg) = e.get("mangle") {
            if key_of(&mg["key"]) == "meta mark" {
                mark_set = eval_mark(&mg["value"]);
                if let Some(after) = mark_set {
                    action = Action::Mark {
                        keeps: after & MASQ_BIT != 0,
                    };
                }
            }
        }
    }
    let text = format!(
        "{text_head}: {}",
        if matches.is_empty() {
            "(every packet)".to_string()
        } else {
            matches.join(" ")
        }
    );
    (
        Rule {
            text,
            out_if,
            mark,
            other,
            action,
        },
        matches,
        mark_set,
    )
}

/// Parses `nft -j list ruleset`: native masquerade rules, mark rules, and the
/// walk from every nat base chain of postrouting.
pub fn nft_ruleset(doc: &Value, iptables: &[(String, String)], fw: &mut Firewall) {
    let objects = doc
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // (family, table, chain) -> chain object
    let mut chain_objs: Vec<&Value> = Vec::new();
    let mut hooks = HashMap::new();
    for o in &objects {
        if let Some(c) = o.get("chain") {
            let id = (
                c["family"].as_str().unwrap_or_default().to_string(),
                c["table"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
            );
            let hook = c.get("hook").and_then(Value::as_str).map(str::to_string);
            let prio = c.get("prio").and_then(Value::as_i64);
            hooks.insert(id, (hook, prio));
            chain_objs.push(c);
        }
    }
    // (family, table) -> chain -> rules
    let mut tables: HashMap<(String, String), Table> = HashMap::new();
    for o in &objects {
        let Some(r) = o.get("rule") else { continue };
        let family = r["family"].as_str().unwrap_or_default();
        let table = r["table"].as_str().unwrap_or_default();
        let chain = r["chain"].as_str().unwrap_or_default();
        if is_iptables_table(family, table, iptables) {
            continue;
        }
        let expr = r["expr"].as_array().cloned().unwrap_or_default();
        let head = format!("nft {family} {table} {chain}");
        let (mut rule, matches, mark_set) = nft_rule(&head, &expr);
        if let Action::Nat { masquerade: true } = rule.action {
            rule.text.push_str(" masquerade");
        } else if let Action::Nat { masquerade: false } = rule.action {
            rule.text.push_str(" snat");
        } else if let Some(after) = mark_set {
            let (hook, prio) = hooks
                .get(&(family.to_string(), table.to_string(), chain.to_string()))
                .cloned()
                .unwrap_or((None, None));
            let before_srcnat = match hook.as_deref() {
                Some("postrouting") => prio.is_some_and(|p| p < i64::from(crate::nft::SRCNAT)),
                Some("prerouting" | "forward" | "output") => true,
                _ => false,
            };
            rule.text.push_str(" meta mark set ...");
            fw.marks.push(MarkRule {
                text: rule.text.clone(),
                sets: after & MASQ_BIT != 0,
                before_srcnat,
                matches,
                out_if: rule.out_if.clone(),
                iptables_nat: false,
            });
        }
        let (chains, order) = tables
            .entry((family.to_string(), table.to_string()))
            .or_default();
        if !chains.contains_key(chain) {
            order.push(chain.to_string());
        }
        chains.entry(chain.to_string()).or_default().push(rule);
    }
    let mut keys: Vec<&(String, String)> = tables.keys().collect();
    keys.sort();
    for key in keys {
        let (chains, order) = &tables[key];
        fw.masquerade.extend(masquerade_rules(chains, order));
    }
    for c in chain_objs {
        let family = c["family"].as_str().unwrap_or_default();
        let table = c["table"].as_str().unwrap_or_default();
        let name = c["name"].as_str().unwrap_or_default();
        if c["type"].as_str() != Some("nat")
            || c["hook"].as_str() != Some("postrouting")
            || is_iptables_table(family, table, iptables)
        {
            continue;
        }
        let Some((chains, _)) = tables.get(&(family.to_string(), table.to_string())) else {
            continue;
        };
        let mut steps = Vec::new();
        walk(
            chains,
            name,
            State::default(),
            &mut Vec::new(),
            true,
            &mut steps,
        );
        fw.nat_chains.push(NatChain {
            name: format!("nft {family} {table} {name}"),
            family: family.to_string(),
            prio: c["prio"].as_i64().unwrap_or(IPTABLES_NAT_PRIO),
            steps,
        });
    }
}

/// One conntrack entry's original and reply tuples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub line: String,
    pub proto: u8,
    pub orig_src: String,
    pub orig_dst: String,
    pub orig_sport: Option<u16>,
    pub orig_dport: Option<u16>,
    pub reply_src: String,
    pub reply_dst: String,
    pub reply_dport: Option<u16>,
}

impl CtEntry {
    /// The reply goes to another address than the sender's: source NAT.
    pub fn source_natted(&self) -> bool {
        self.reply_dst != self.orig_src
    }

    /// The reply goes to the sender's address but another port: source NAT
    /// that rewrote only the port (MASQUERADE --random-fully that picked the
    /// address the packet already had).
    pub fn source_port_natted(&self) -> bool {
        !self.source_natted()
            && self.orig_sport.is_some()
            && self.reply_dport.is_some()
            && self.orig_sport != self.reply_dport
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
            let mut sport = Vec::new();
            let mut dport = Vec::new();
            for w in &words {
                if let Some((k, v)) = w.split_once('=') {
                    match k {
                        "src" => src.push(v.to_string()),
                        "dst" => dst.push(v.to_string()),
                        "sport" => sport.push(v.parse::<u16>().ok()),
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
                orig_sport: sport.first().copied().flatten(),
                orig_dport: dport.first().copied().flatten(),
                reply_src: src[1].clone(),
                reply_dst: dst[1].clone(),
                reply_dport: dport.get(1).copied().flatten(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
