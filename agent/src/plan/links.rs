//! Links: admin state up and MTU. We never create, rename or delete links,
//! and leave a link as it is when a profile drops its uplink.

use super::{Action, Item, Kind, Op, Target};
use crate::observed::Observed;

pub fn plan_links(t: &Target, o: &Observed) -> Vec<Item> {
    t.links
        .iter()
        .filter_map(|l| {
            let cur = o.link_by_index(l.index)?;
            let id = format!("{} ({})", l.ifname, l.role);
            let show = |mtu: u32, up: bool| format!("mtu {mtu} {}", if up { "up" } else { "down" });
            let want_mtu = l.mtu.unwrap_or(cur.mtu);
            let before = show(cur.mtu, cur.up);
            let after = show(want_mtu, true);
            if cur.up && cur.mtu == want_mtu {
                return Some(Item::ok(Kind::Link, id, after));
            }
            Some(Item {
                kind: Kind::Link,
                id,
                action: Action::Update,
                before: Some(before),
                after: Some(after),
                ops: vec![Op::SetLink {
                    index: l.index,
                    ifname: l.ifname.clone(),
                    mtu: (cur.mtu != want_mtu).then_some(want_mtu),
                    up: true,
                }],
            })
        })
        .collect()
}
