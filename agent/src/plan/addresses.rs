//! Addresses: service IPs on lo (global scope), transit addresses on the
//! uplinks (scope link). Foreign addresses are never touched, even on our NICs.

use super::{Action, Item, Kind, Op, Target};
use crate::observed::{Observed, ObservedAddress};

fn describe(ifname: &str, a: &ObservedAddress) -> String {
    format!("{} dev {ifname} scope {}", a.prefix, a.scope)
}

pub fn plan_addresses(t: &Target, o: &Observed) -> Vec<Item> {
    let mut items = Vec::new();
    let owned = |a: &ObservedAddress| {
        a.protocol == Some(t.protocol) || o.state.owns_address(&a.ifname, &a.prefix)
    };

    // Ours but no longer wanted (a dropped uplink or service IP): delete first,
    // so a re-addressed uplink never holds both the old and the new prefix.
    for a in o.addresses.iter().filter(|a| owned(a)) {
        let wanted = t
            .addresses
            .iter()
            .any(|d| d.index == a.index && d.prefix == a.prefix);
        if !wanted {
            items.push(Item {
                kind: Kind::Address,
                id: format!("{} dev {}", a.prefix, a.ifname),
                action: Action::Delete,
                before: Some(describe(&a.ifname, a)),
                after: None,
                ops: vec![Op::DelAddress {
                    index: a.index,
                    ifname: a.ifname.clone(),
                    prefix: a.prefix,
                }],
            });
        }
    }

    for d in &t.addresses {
        let id = format!("{} dev {}", d.prefix, d.ifname);
        let after = format!("{} dev {} scope {}", d.prefix, d.ifname, d.scope);
        let add = Op::AddAddress {
            index: d.index,
            ifname: d.ifname.clone(),
            prefix: d.prefix,
            scope: d.scope,
            protocol: t.protocol,
        };
        let found = o
            .addresses
            .iter()
            .find(|a| a.index == d.index && a.prefix == d.prefix);
        items.push(match found {
            None => Item {
                kind: Kind::Address,
                id,
                action: Action::Create,
                before: None,
                after: Some(after),
                ops: vec![add],
            },
            // Same address, wrong scope: replace it (and own it from now on).
            // A global-scope transit address is exactly the MASQUERADE bug.
            Some(a) if a.scope != d.scope => Item {
                kind: Kind::Address,
                id,
                action: Action::Update,
                before: Some(describe(&a.ifname, a)),
                after: Some(after),
                ops: vec![
                    Op::DelAddress {
                        index: a.index,
                        ifname: a.ifname.clone(),
                        prefix: a.prefix,
                    },
                    add,
                ],
            },
            Some(_) => Item::ok(Kind::Address, id, after),
        });
    }
    items
}
