//! Sysctls: read first, write only when different (whitespace-normalized, as
//! the kernel prints vectors with tabs). A sysctl the profile drops keeps its
//! live value; it only leaves the persisted file.

use super::{Action, Item, Kind, Op, Target};
use crate::observed::Observed;

pub fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn plan_sysctls(t: &Target, o: &Observed) -> Vec<Item> {
    let mut items = Vec::new();
    for (key, value) in &t.sysctls {
        let cur = o.sysctls.get(key).cloned().flatten();
        let id = key.to_string();
        match cur {
            Some(c) if normalize(&c) == *value => {
                items.push(Item::ok(Kind::Sysctl, id, value.clone()))
            }
            cur => items.push(Item {
                kind: Kind::Sysctl,
                id,
                action: Action::Update,
                before: Some(cur.map_or_else(|| "(no such key)".to_string(), |c| normalize(&c))),
                after: Some(value.clone()),
                ops: vec![Op::WriteSysctl {
                    key: key.clone(),
                    value: value.clone(),
                }],
            }),
        }
    }
    for (key, set) in &o.state.sysctls {
        if !t.sysctls.iter().any(|(k, _)| k == key) {
            items.push(Item {
                kind: Kind::Sysctl,
                id: key.to_string(),
                action: Action::Delete,
                before: Some(set.clone()),
                after: None,
                // Nothing to do in the kernel: the value before ours is unknown,
                // so the live value stays; the persisted file drops the key.
                ops: Vec::new(),
            });
        }
    }
    items
}
