//! Our one nftables table (`inet underlay`): compared with what is there and
//! replaced in one transaction only when it differs; deleted only if the
//! state file says we created it. Other tables are never read or touched.

use super::{Action, Item, Kind, Op, Target};
use crate::nft::{self, NftChange};
use crate::observed::Observed;

pub fn plan_nft(t: &Target, o: &Observed) -> Vec<Item> {
    let Some(observed) = &o.nft else {
        // Not observed: neither wanted nor ever created by us.
        return Vec::new();
    };
    let id = format!("table {} {}", nft::TABLE_FAMILY, nft::TABLE_NAME);
    let change = nft::plan(t.nft.as_ref(), observed);
    let rules = |n: usize| format!("{n} rules");
    let have = observed.table.as_ref().map(|c| rules(c.rules.len()));
    match &change {
        NftChange::Ok if t.nft.is_none() => Vec::new(),
        NftChange::Ok => vec![Item::ok(Kind::Nft, id, have.unwrap_or_default())],
        NftChange::Delete { .. } if !o.state.nft_table => Vec::new(),
        c => {
            let action = match c {
                NftChange::Create { .. } => Action::Create,
                NftChange::Replace { .. } => Action::Update,
                _ => Action::Delete,
            };
            let after = (action != Action::Delete).then(|| c.diff().join("\n"));
            vec![Item {
                kind: Kind::Nft,
                id,
                action,
                before: have,
                after,
                ops: vec![Op::Nft {
                    change: change.clone(),
                }],
            }]
        }
    }
}
