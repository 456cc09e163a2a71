//! Generated files (rt_tables.d, rt_protos.d, sysctl.d): compared in memory,
//! written only when the content differs.

use super::{Action, Item, Kind, Op, Target};
use crate::observed::Observed;

pub fn plan_files(t: &Target, o: &Observed) -> Vec<Item> {
    let mut items = Vec::new();
    for f in &t.files {
        let id = f.path.display().to_string();
        let cur = o.files.get(&f.path).cloned().flatten();
        let summary = |c: &str| format!("{} lines", c.lines().count());
        match cur {
            Some(c) if c == f.content => items.push(Item::ok(Kind::File, id, summary(&c))),
            cur => items.push(Item {
                kind: Kind::File,
                id,
                action: if cur.is_some() {
                    Action::Update
                } else {
                    Action::Create
                },
                before: cur.as_deref().map(summary),
                after: Some(summary(&f.content)),
                ops: vec![Op::WriteFile {
                    path: f.path.clone(),
                    content: f.content.clone(),
                }],
            }),
        }
    }
    for path in &o.state.files {
        let present = o.files.get(path).is_some_and(Option::is_some);
        if present && !t.files.iter().any(|f| &f.path == path) {
            items.push(Item {
                kind: Kind::File,
                id: path.display().to_string(),
                action: Action::Delete,
                before: Some("present".into()),
                after: None,
                ops: vec![Op::RemoveFile { path: path.clone() }],
            });
        }
    }
    items
}
