//! Human-readable, nft-like text for plan diffs. Display only: never parsed, never compared.

use serde_json::Value;

use super::desired::COMMENT_PREFIX;
use super::observe::TableContent;
use super::{TABLE_FAMILY, TABLE_NAME};

/// Line diff between two table contents (`None` = table absent).
pub fn diff(have: Option<&TableContent>, want: Option<&TableContent>) -> Vec<String> {
    let old = have.map(lines).unwrap_or_default();
    let new = want.map(lines).unwrap_or_default();
    let mut out = vec![format!(
        "table {TABLE_FAMILY} {TABLE_NAME}: {} -> {}",
        have.map_or("absent".to_string(), fingerprint_of),
        want.map_or("absent".to_string(), fingerprint_of),
    )];
    out.extend(lcs_diff(&old, &new));
    out
}

fn fingerprint_of(t: &TableContent) -> String {
    let fps: Vec<&str> = t
        .rules
        .iter()
        .filter_map(|r| r.comment.as_deref()?.strip_prefix(COMMENT_PREFIX))
        .filter_map(|c| c.split(':').next())
        .collect();
    match fps.first() {
        Some(fp) if fps.iter().all(|f| f == fp) && fps.len() == t.rules.len() => {
            format!("fingerprint {fp}")
        }
        _ => "hand-edited or foreign".to_string(),
    }
}

fn lines(t: &TableContent) -> Vec<String> {
    let mut out = Vec::new();
    for c in &t.chains {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
        let mut head = format!("chain {name} {{");
        if let (Some(ty), Some(hook)) = (c.get("type"), c.get("hook")) {
            head.push_str(&format!(
                " type {} hook {} priority {}; policy {};",
                plain(ty),
                plain(hook),
                c.get("prio").map_or("?".to_string(), plain),
                c.get("policy").map_or("accept".to_string(), plain),
            ));
        }
        head.push_str(" }");
        out.push(head);
        for r in t.rules.iter().filter(|r| r.chain == name) {
            out.push(rule_line(name, &r.expr, r.comment.as_deref()));
        }
    }
    // Rules in chains that are not listed (cannot come from nft, but keep the diff honest).
    for r in &t.rules {
        if !t
            .chains
            .iter()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(&r.chain))
        {
            out.push(rule_line(&r.chain, &r.expr, r.comment.as_deref()));
        }
    }
    for o in &t.others {
        out.push(format!("other {o}"));
    }
    out
}

fn rule_line(chain: &str, expr: &Value, comment: Option<&str>) -> String {
    let mut text = format!("  {chain}: ");
    let stmts: Vec<String> = expr
        .as_array()
        .map(|a| a.iter().map(statement).collect())
        .unwrap_or_else(|| vec![expr.to_string()]);
    text.push_str(&stmts.join(" "));
    match comment {
        // Our own comments only carry the fingerprint, shown in the header line.
        Some(c) if c.starts_with(COMMENT_PREFIX) => {}
        Some(c) => text.push_str(&format!(" comment {c:?}")),
        None => text.push_str(" (no underlay comment)"),
    }
    text
}

fn statement(s: &Value) -> String {
    let Some((kind, body)) = s.as_object().and_then(|o| o.iter().next()) else {
        return s.to_string();
    };
    match kind.as_str() {
        "match" => {
            let left = body.get("left").unwrap_or(&Value::Null);
            let hex = is_binop(left);
            let op = match body.get("op").and_then(Value::as_str) {
                Some("==") if hex => "== ".to_string(),
                Some("==") | None => String::new(),
                Some(op) => format!("{op} "),
            };
            format!(
                "{} {op}{}",
                expr(left, false),
                expr(body.get("right").unwrap_or(&Value::Null), hex)
            )
        }
        "counter" => "counter".to_string(),
        "mangle" => format!(
            "{} set {}",
            expr(body.get("key").unwrap_or(&Value::Null), false),
            expr(body.get("value").unwrap_or(&Value::Null), false)
        ),
        "snat" | "dnat" => {
            let fam = body
                .get("family")
                .and_then(Value::as_str)
                .map(|f| format!("{f} "))
                .unwrap_or_default();
            let addr = body.get("addr").map(|a| expr(a, false)).unwrap_or_default();
            format!("{kind} {fam}to {addr}")
        }
        "masquerade" | "accept" | "drop" | "return" => kind.clone(),
        _ => s.to_string(),
    }
}

fn is_binop(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.contains_key("&") || o.contains_key("|") || o.contains_key("^"))
}

fn expr(v: &Value, hex: bool) -> String {
    match v {
        Value::Number(n) if hex => n.as_u64().map_or(n.to_string(), |n| format!("{n:#x}")),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.parse::<std::net::IpAddr>().is_ok() => s.clone(),
        Value::String(s) if s.chars().all(|c| c.is_ascii_lowercase()) => s.clone(),
        Value::String(s) => format!("{s:?}"),
        Value::Object(o) => {
            let Some((kind, body)) = o.iter().next() else {
                return v.to_string();
            };
            match kind.as_str() {
                "meta" => {
                    let key = body.get("key").map_or("?".into(), plain);
                    match key.as_str() {
                        "iif" | "oif" | "iifname" | "oifname" => key,
                        _ => format!("meta {key}"),
                    }
                }
                "payload" => format!(
                    "{} {}",
                    body.get("protocol").map_or("?".into(), plain),
                    body.get("field").map_or("?".into(), plain)
                ),
                "prefix" => format!(
                    "{}/{}",
                    body.get("addr").map_or("?".into(), plain),
                    body.get("len").map_or("?".into(), plain)
                ),
                "set" => {
                    let items: Vec<String> = body
                        .as_array()
                        .map(|a| a.iter().map(|i| expr(i, hex)).collect())
                        .unwrap_or_default();
                    format!("{{ {} }}", items.join(", "))
                }
                "&" | "|" | "^" => {
                    let items: Vec<String> = body
                        .as_array()
                        .map(|a| a.iter().map(|i| expr(i, true)).collect())
                        .unwrap_or_default();
                    items.join(&format!(" {kind} "))
                }
                _ => v.to_string(),
            }
        }
        _ => v.to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Longest-common-subsequence line diff; tables are a handful of lines.
fn lcs_diff(old: &[String], new: &[String]) -> Vec<String> {
    let (n, m) = (old.len(), new.len());
    let mut l = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if old[i] == new[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push(format!("  {}", old[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || l[i][j + 1] >= l[i + 1][j]) {
            out.push(format!("+ {}", new[j]));
            j += 1;
        } else {
            out.push(format!("- {}", old[i]));
            i += 1;
        }
    }
    out
}
