//! Rules: the lookup split (main without its default, then the host table).
//! Only rules with our protocol number are observed, so foreign rules are
//! invisible here and can never be deleted.

use super::{Action, Item, Kind, Op, Target};
use crate::observed::Observed;

pub fn plan_rules(t: &Target, o: &Observed) -> Vec<Item> {
    let mut items = Vec::new();
    for r in o.rules.iter().filter(|r| !t.rules.contains(r)) {
        items.push(Item {
            kind: Kind::Rule,
            id: r.to_string(),
            action: Action::Delete,
            before: Some(r.to_string()),
            after: None,
            ops: vec![Op::DelRule {
                rule: *r,
                protocol: t.protocol,
            }],
        });
    }
    for r in &t.rules {
        if o.rules.contains(r) {
            items.push(Item::ok(Kind::Rule, r.to_string(), r.to_string()));
        } else {
            items.push(Item {
                kind: Kind::Rule,
                id: r.to_string(),
                action: Action::Create,
                before: None,
                after: Some(r.to_string()),
                ops: vec![Op::AddRule {
                    rule: *r,
                    protocol: t.protocol,
                }],
            });
        }
    }
    items
}
