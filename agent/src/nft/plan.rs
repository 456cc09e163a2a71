//! Pure: desired content vs observed content -> what (if anything) to do with our table.

use nftables::schema::Nftables;

use super::desired::COMMENT_PREFIX;
use super::observe::{ObservedNat, TableContent};
use super::render;

/// What [`super::apply`] must do. Every variant but `Ok` carries a human diff (`+`/`-` lines
/// of nft-like text, unchanged lines prefixed with two spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftChange {
    /// The table is as desired (or absent and not desired): nothing to run.
    Ok,
    /// The table is absent and needed.
    Create {
        desired: Nftables<'static>,
        diff: Vec<String>,
    },
    /// The table exists but differs (changed parameters or a hand edit).
    Replace {
        desired: Nftables<'static>,
        diff: Vec<String>,
    },
    /// The table exists and is not needed.
    Delete { diff: Vec<String> },
}

impl NftChange {
    pub fn is_change(&self) -> bool {
        !matches!(self, NftChange::Ok)
    }

    pub fn diff(&self) -> &[String] {
        match self {
            NftChange::Ok => &[],
            NftChange::Create { diff, .. }
            | NftChange::Replace { diff, .. }
            | NftChange::Delete { diff } => diff,
        }
    }
}

/// Decides whether the observed table matches the desired one.
///
/// Equal means: the same chains (name, type, hook, priority, policy), the same number of
/// rules in the same chains in the same order, every rule carrying exactly the comment
/// `underlay:<fingerprint>:<n>` that [`super::desired_ruleset`] put there, and nothing else in
/// the table. The fingerprint covers the whole desired content, so any parameter change
/// changes every comment; a hand edit (`nft add/insert/delete/replace rule`, a new chain or set,
/// `flush chain`) changes a count, a chain, or drops a comment. Expressions themselves are not
/// compared: nft normalises them on the way in, and comparing them would make every run a
/// "change" whenever nft's rendering moves.
pub fn plan(desired: Option<&Nftables<'static>>, observed: &ObservedNat) -> NftChange {
    let want = desired.map(TableContent::from_doc);
    match (want, &observed.table) {
        (None, None) => NftChange::Ok,
        (None, Some(have)) => NftChange::Delete {
            diff: render::diff(Some(have), None),
        },
        (Some(want), None) => NftChange::Create {
            desired: desired.expect("want comes from desired").clone(),
            diff: render::diff(None, Some(&want)),
        },
        (Some(want), Some(have)) => {
            if same(&want, have) {
                NftChange::Ok
            } else {
                NftChange::Replace {
                    desired: desired.expect("want comes from desired").clone(),
                    diff: render::diff(Some(have), Some(&want)),
                }
            }
        }
    }
}

fn same(want: &TableContent, have: &TableContent) -> bool {
    want.chains == have.chains
        && have.others.is_empty()
        && want.rules.len() == have.rules.len()
        && want.rules.iter().zip(&have.rules).all(|(w, h)| {
            w.chain == h.chain
                && w.comment.is_some()
                && w.comment == h.comment
                && w.comment
                    .as_deref()
                    .is_some_and(|c| c.starts_with(COMMENT_PREFIX))
        })
}
