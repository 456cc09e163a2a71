//! Carries out an [`NftChange`] in one atomic nft transaction.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::schema::{NfListObject, NfObject, Nftables, Table};
use nftables::types::NfFamily;

use super::exec::{NftError, NftExec};
use super::plan::NftChange;
use super::TABLE_NAME;

/// The nft batch for a change, or `None` for [`NftChange::Ok`].
///
/// Create/replace: `add table; delete table; add table; add chain...; add rule...`. The first
/// `add` makes the `delete` valid whether or not the table exists; nft sends the whole batch as
/// one netlink transaction, so packets see either the old table or the new one, never a gap,
/// and a rejected rule leaves the old table in place. Delete: `add table; delete table` (nft
/// 1.0.6 has no `destroy`). Only `inet underlay` is ever named: other tables are untouched.
pub fn transaction(change: &NftChange) -> Option<Nftables<'static>> {
    let ours = || {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: TABLE_NAME.into(),
            handle: None,
        })
    };
    let mut batch = Batch::new();
    match change {
        NftChange::Ok => return None,
        NftChange::Delete { .. } => {
            batch.add(ours());
            batch.delete(ours());
        }
        NftChange::Create { desired, .. } | NftChange::Replace { desired, .. } => {
            batch.add(ours());
            batch.delete(ours());
            for obj in desired.objects.iter() {
                if let NfObject::ListObject(o) = obj {
                    batch.add(o.clone());
                }
            }
        }
    }
    let doc = batch.to_nftables();
    Some(Nftables {
        objects: Cow::Owned(doc.objects.into_owned()),
    })
}

/// Applies a planned change; returns whether nft was run. `Ok` runs nothing.
pub fn apply(runner: &dyn NftExec, change: &NftChange) -> Result<bool, NftError> {
    let Some(doc) = transaction(change) else {
        return Ok(false);
    };
    let json = serde_json::to_string(&doc).expect("nftables schema types always serialize");
    runner.run(&["-j", "-f", "-"], Some(&json))?;
    Ok(true)
}
