//! The inverse of an applied op, computed from the observation that planned
//! it (docs/style.md: roll back from what you observed, not from a second model).
//! Used to undo a run that failed part-way and by safe apply. Pure.

use super::Op;
use crate::nft::NftChange;
use crate::observed::Observed;

/// Why an op cannot be undone exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InverseError {
    #[error("{0}: the state before it was not observed, so it cannot be restored")]
    Unobserved(String),
}

/// The ops that put back what `op` changed, as `before` saw it. Undo a run by
/// applying the inverses of its applied ops in reverse order.
pub fn inverse(op: &Op, before: &Observed) -> Result<Vec<Op>, InverseError> {
    Ok(match op {
        Op::SetLink {
            index, ifname, mtu, ..
        } => {
            let l = before
                .link_by_index(*index)
                .ok_or_else(|| InverseError::Unobserved(format!("link {ifname}")))?;
            vec![Op::SetLink {
                index: *index,
                ifname: ifname.clone(),
                mtu: mtu.map(|_| l.mtu),
                up: l.up,
            }]
        }
        Op::AddAddress {
            index,
            ifname,
            prefix,
            ..
        } => {
            // Re-adding an address that was already there (a scope fix)
            // undoes as putting the old one back.
            match before
                .addresses
                .iter()
                .find(|a| a.index == *index && a.prefix == *prefix)
            {
                Some(old) => vec![
                    Op::DelAddress {
                        index: *index,
                        ifname: ifname.clone(),
                        prefix: *prefix,
                    },
                    Op::AddAddress {
                        index: *index,
                        ifname: ifname.clone(),
                        prefix: *prefix,
                        scope: old.scope,
                        protocol: old.protocol.unwrap_or(0),
                    },
                ],
                None => vec![Op::DelAddress {
                    index: *index,
                    ifname: ifname.clone(),
                    prefix: *prefix,
                }],
            }
        }
        Op::DelAddress {
            index,
            ifname,
            prefix,
        } => {
            let old = before
                .addresses
                .iter()
                .find(|a| a.index == *index && a.prefix == *prefix)
                .ok_or_else(|| {
                    InverseError::Unobserved(format!("address {prefix} dev {ifname}"))
                })?;
            vec![Op::AddAddress {
                index: *index,
                ifname: ifname.clone(),
                prefix: *prefix,
                scope: old.scope,
                protocol: old.protocol.unwrap_or(0),
            }]
        }
        Op::AddRule { rule, protocol } => vec![Op::DelRule {
            rule: *rule,
            protocol: *protocol,
        }],
        Op::DelRule { rule, protocol } => vec![Op::AddRule {
            rule: *rule,
            protocol: *protocol,
        }],
        Op::WriteSysctl { key, .. } => match before.sysctls.get(key).cloned().flatten() {
            Some(value) => vec![Op::WriteSysctl {
                key: key.clone(),
                value,
            }],
            None => return Err(InverseError::Unobserved(format!("sysctl {key}"))),
        },
        Op::WriteFile { path, .. } => match before.files.get(path) {
            Some(Some(content)) => vec![Op::WriteFile {
                path: path.clone(),
                content: content.clone(),
            }],
            Some(None) => vec![Op::RemoveFile { path: path.clone() }],
            None => return Err(InverseError::Unobserved(format!("file {}", path.display()))),
        },
        Op::RemoveFile { path } => match before.files.get(path) {
            Some(Some(content)) => vec![Op::WriteFile {
                path: path.clone(),
                content: content.clone(),
            }],
            Some(None) => Vec::new(),
            None => return Err(InverseError::Unobserved(format!("file {}", path.display()))),
        },
        // The old config goes back and, if BIRD was running, is reloaded:
        // the reload belongs to the restore, so the op's own reload undoes
        // to nothing.
        Op::WriteBirdConfig {
            path, owner, dirs, ..
        } => {
            let mut ops = match before.files.get(path) {
                Some(Some(content)) => vec![Op::WriteBirdConfig {
                    path: path.clone(),
                    owner: owner.clone(),
                    dirs: dirs.clone(),
                    content: content.clone(),
                }],
                Some(None) => vec![Op::RemoveFile { path: path.clone() }],
                None => {
                    return Err(InverseError::Unobserved(format!(
                        "BIRD config {}",
                        path.display()
                    )))
                }
            };
            if before.bird_running {
                if let Some(socket) = before.bird_socket.clone() {
                    ops.push(Op::ReloadBird { socket });
                }
            }
            ops
        }
        Op::ReloadBird { .. } => Vec::new(),
        // A BIRD we started keeps running: stopping the speaker is never
        // the safe direction.
        Op::StartUnit { .. } => Vec::new(),
        Op::Nft { change } => {
            let had = before.nft.as_ref().and_then(|n| n.table.clone());
            match (change, had) {
                (NftChange::Ok, _) => Vec::new(),
                (_, None) => vec![Op::Nft {
                    change: NftChange::Delete { diff: Vec::new() },
                }],
                (_, Some(old)) => match crate::nft::restore(&old) {
                    Some(desired) => vec![Op::Nft {
                        change: NftChange::Replace {
                            desired,
                            diff: Vec::new(),
                        },
                    }],
                    None => {
                        return Err(InverseError::Unobserved(
                            "nft table inet underlay (its old content does not load back)".into(),
                        ))
                    }
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Family, RuleSpec, SysctlKey};
    use crate::observed::{ObservedAddress, ObservedLink, Scope};

    fn before() -> Observed {
        let mut o = Observed {
            links: vec![ObservedLink {
                index: 2,
                name: "eth0".into(),
                mac: None,
                perm_mac: None,
                mtu: 1500,
                up: false,
                oper_up: false,
            }],
            addresses: vec![ObservedAddress {
                index: 2,
                ifname: "eth0".into(),
                prefix: "172.30.0.1/31".parse().unwrap(),
                scope: Scope::Global,
                protocol: None,
            }],
            ..Observed::default()
        };
        o.sysctls.insert(
            SysctlKey::parse("net.ipv4.ip_forward").unwrap(),
            Some("0".into()),
        );
        o.files.insert("/etc/new".into(), None);
        o.files.insert("/etc/old".into(), Some("old\n".into()));
        o
    }

    #[test]
    fn each_op_undoes_to_what_was_observed() {
        let o = before();
        let set = Op::SetLink {
            index: 2,
            ifname: "eth0".into(),
            mtu: Some(9000),
            up: true,
        };
        assert_eq!(
            inverse(&set, &o).unwrap(),
            vec![Op::SetLink {
                index: 2,
                ifname: "eth0".into(),
                mtu: Some(1500),
                up: false
            }]
        );
        // A scope fix (delete + add of the same prefix) undoes to the old scope.
        let add = Op::AddAddress {
            index: 2,
            ifname: "eth0".into(),
            prefix: "172.30.0.1/31".parse().unwrap(),
            scope: Scope::Link,
            protocol: 211,
        };
        let inv = inverse(&add, &o).unwrap();
        assert!(
            matches!(
                inv.last(),
                Some(Op::AddAddress {
                    scope: Scope::Global,
                    ..
                })
            ),
            "{inv:?}"
        );
        let sysctl = Op::WriteSysctl {
            key: SysctlKey::parse("net.ipv4.ip_forward").unwrap(),
            value: "1".into(),
        };
        assert!(
            matches!(&inverse(&sysctl, &o).unwrap()[0], Op::WriteSysctl { value, .. } if value == "0")
        );
        let new = Op::WriteFile {
            path: "/etc/new".into(),
            content: "x".into(),
        };
        assert_eq!(
            inverse(&new, &o).unwrap(),
            vec![Op::RemoveFile {
                path: "/etc/new".into()
            }]
        );
        let old = Op::WriteFile {
            path: "/etc/old".into(),
            content: "x".into(),
        };
        assert!(
            matches!(&inverse(&old, &o).unwrap()[0], Op::WriteFile { content, .. } if content == "old\n")
        );
        let rule = RuleSpec {
            family: Family::Ipv4,
            priority: 30000,
            table: 254,
            suppress_prefixlength: Some(0),
        };
        assert_eq!(
            inverse(
                &Op::AddRule {
                    rule,
                    protocol: 211
                },
                &o
            )
            .unwrap(),
            vec![Op::DelRule {
                rule,
                protocol: 211
            }]
        );
    }

    #[test]
    fn an_unobserved_object_is_refused_rather_than_guessed() {
        let o = before();
        let e = inverse(
            &Op::WriteSysctl {
                key: SysctlKey::parse("net.ipv4.conf.all.rp_filter").unwrap(),
                value: "2".into(),
            },
            &o,
        )
        .unwrap_err();
        assert!(e.to_string().contains("rp_filter"));
    }
}
