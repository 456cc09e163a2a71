//! Loads an observed table's content back as a document nft can apply: the
//! rollback of a change to `inet underlay` (chains and rules as nft printed
//! them, which nft accepts as input).

use nftables::schema::Nftables;
use serde_json::{json, Value};

use super::observe::TableContent;
use super::{TABLE_FAMILY, TABLE_NAME};

/// `None` when the content holds something nft's JSON input cannot take
/// back (then the caller reports the table as not restorable).
pub fn restore(content: &TableContent) -> Option<Nftables<'static>> {
    let mut objects: Vec<Value> = Vec::new();
    for c in &content.chains {
        objects.push(json!({ "chain": c }));
    }
    for r in &content.rules {
        let mut rule = json!({
            "family": TABLE_FAMILY,
            "table": TABLE_NAME,
            "chain": r.chain,
            "expr": r.expr,
        });
        if let Some(c) = &r.comment {
            rule["comment"] = json!(c);
        }
        objects.push(json!({ "rule": rule }));
    }
    objects.extend(content.others.iter().cloned());
    serde_json::from_value(json!({ "nftables": objects })).ok()
}
