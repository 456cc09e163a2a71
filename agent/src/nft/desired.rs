//! Pure: profile parameters -> the content of `inet underlay` (or `None`: no table at all).

use std::borrow::Cow;

use nftables::expr::{
    BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
    SetItem,
};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{
    AnonymousCounter, Counter, Mangle, Match, NATFamily, Operator, Statement, NAT,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{
    NatMode, NatParams, GUARD_CHAIN, GUARD_PRIORITY, KUBE_MASQ_MARK, SNAT_CHAIN, SNAT_PRIORITY,
    TABLE_NAME,
};

/// Prefix of every rule comment we write: `underlay:<fingerprint>:<index>`.
pub(crate) const COMMENT_PREFIX: &str = "underlay:";
/// `/etc/protocols` name of IP protocol 4 ([`super::IPPROTO_IPIP`]), as nft prints it.
const IPIP_NAME: &str = "ipencap";

/// The table content (table, chains, rules; no handles) as `nft -j list table` would show it,
/// or `None` when nothing is needed (`scope-link`/`none` without a guard): absent is desired.
///
/// Every rule carries the comment `underlay:<fingerprint>:<n>`, where the fingerprint covers
/// the whole content without comments. [`super::plan`] compares chains, rule order and these
/// comments instead of expressions, because nft rewrites expressions on the way in (adjacent
/// prefixes merge, `4` reads back as `ipencap`, one-element sets flatten).
pub fn desired_ruleset(p: &NatParams) -> Option<Nftables<'static>> {
    let mut chains: Vec<(Chain<'static>, Vec<Vec<Statement<'static>>>)> = Vec::new();

    // The guard matches only what leaves through an uplink: the outer packet of a tunnel
    // always does (also when Calico gives vxlan.calico a local address on lo: the route to the
    // remote VTEP still goes out an uplink), while an inner packet to the same port or
    // protocol leaves through the tunnel device and keeps its mark for kube-proxy's
    // MASQUERADE. Without uplinks there is no outer packet to match, so no guard.
    if let Some(g) = p.guard.filter(|g| g.mark != 0 && !p.uplinks.is_empty()) {
        let mut rules = Vec::new();
        if g.ipip {
            rules.push(guard_rule(
                &p.uplinks,
                // nft reads protocol 4 back as "ipencap"; write it that way so diffs stay quiet.
                eq(meta(MetaKey::L4proto), Expression::String(IPIP_NAME.into())),
                g.mark,
            ));
        }
        if let Some(port) = g.vxlan_port {
            rules.push(guard_rule(
                &p.uplinks,
                eq(payload("udp", "dport"), Expression::Number(port.into())),
                g.mark,
            ));
        }
        if !rules.is_empty() {
            chains.push((
                base_chain(GUARD_CHAIN, NfChainType::Filter, GUARD_PRIORITY),
                rules,
            ));
        }
    }

    if p.mode == NatMode::Snat && !p.uplinks.is_empty() {
        let masq_mark = p.guard.map_or(KUBE_MASQ_MARK, |g| g.mark);
        let mut rules = Vec::new();
        let pods = pod_prefixes(p);
        if let Some(pods) = pods {
            // Pod egress leaving the host: what Calico's natOutgoing would MASQUERADE.
            rules.push(vec![
                eq(meta(MetaKey::Oifname), names(&p.uplinks)),
                eq(payload("ip", "saddr"), pods.clone()),
                Statement::Match(Match {
                    left: payload("ip", "daddr"),
                    right: pods,
                    op: Operator::NEQ,
                }),
                counter(),
                snat(p),
            ]);
        }
        // kube-proxy-marked traffic leaving an uplink (NodePort/external traffic to a remote
        // endpoint, hairpin through the fabric): what KUBE-POSTROUTING would MASQUERADE.
        rules.push(vec![
            eq(meta(MetaKey::Oifname), names(&p.uplinks)),
            eq(meta(MetaKey::Nfproto), Expression::String("ipv4".into())),
            mark_set(masq_mark),
            counter(),
            snat(p),
        ]);
        chains.push((
            base_chain(SNAT_CHAIN, NfChainType::NAT, SNAT_PRIORITY),
            rules,
        ));
    }

    if chains.is_empty() {
        return None;
    }

    let mut objects = vec![NfObject::ListObject(NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE_NAME.into(),
        handle: None,
    }))];
    for (chain, _) in &chains {
        objects.push(NfObject::ListObject(NfListObject::Chain(chain.clone())));
    }
    for (chain, rules) in &chains {
        for expr in rules {
            objects.push(NfObject::ListObject(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: TABLE_NAME.into(),
                chain: chain.name.clone(),
                expr: Cow::Owned(expr.clone()),
                handle: None,
                index: None,
                comment: None,
            })));
        }
    }
    let mut doc = Nftables {
        objects: Cow::Owned(objects),
    };
    let fp = fingerprint(&doc);
    let mut n = 0;
    for obj in doc.objects.to_mut().iter_mut() {
        if let NfObject::ListObject(NfListObject::Rule(r)) = obj {
            r.comment = Some(format!("{COMMENT_PREFIX}{fp}:{n}").into());
            n += 1;
        }
    }
    Some(doc)
}

/// FNV-1a 64 over the canonical (serde) JSON of a content document, ignoring rule comments.
/// Not cryptographic on purpose: it only has to change when the content does, and whoever can
/// forge it can rewrite the table anyway.
pub fn fingerprint(doc: &Nftables) -> String {
    let mut doc = doc.clone();
    for obj in doc.objects.to_mut().iter_mut() {
        if let NfObject::ListObject(NfListObject::Rule(r)) = obj {
            r.comment = None;
            r.handle = None;
        }
    }
    let text = serde_json::to_string(&doc).expect("nftables schema types always serialize");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn base_chain(name: &str, ty: NfChainType, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE_NAME.into(),
        name: name.to_string().into(),
        newname: None,
        handle: None,
        _type: Some(ty),
        hook: Some(NfHook::Postrouting),
        prio: Some(prio),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }
}

/// `oifname <uplinks> <proto match> meta mark & M == M counter meta mark set meta mark & ~M`
fn guard_rule(uplinks: &[String], proto: Statement<'static>, mark: u32) -> Vec<Statement<'static>> {
    vec![
        eq(meta(MetaKey::Oifname), names(uplinks)),
        proto,
        mark_set(mark),
        counter(),
        Statement::Mangle(Mangle {
            key: meta(MetaKey::Mark),
            value: and(meta(MetaKey::Mark), !mark),
        }),
    ]
}

fn mark_set(mark: u32) -> Statement<'static> {
    eq(and(meta(MetaKey::Mark), mark), Expression::Number(mark))
}

fn snat(p: &NatParams) -> Statement<'static> {
    Statement::SNAT(Some(NAT {
        addr: Some(Expression::String(p.service_ipv4.to_string().into())),
        family: Some(NATFamily::IP),
        port: None,
        flags: None,
    }))
}

/// IPv4 pod prefixes, aggregated (nft merges adjacent prefixes of an anonymous set anyway);
/// one prefix stays a plain prefix, more become an anonymous set. `None` without IPv4 CIDRs.
fn pod_prefixes(p: &NatParams) -> Option<Expression<'static>> {
    let v4: Vec<ipnet::Ipv4Net> = p
        .pod_cidrs
        .iter()
        .filter_map(|n| match n {
            ipnet::IpNet::V4(n) => Some(n.trunc()),
            ipnet::IpNet::V6(_) => None,
        })
        .collect();
    let v4 = ipnet::Ipv4Net::aggregate(&v4);
    let prefix = |n: &ipnet::Ipv4Net| {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(Expression::String(n.network().to_string().into())),
            len: n.prefix_len().into(),
        }))
    };
    match v4.as_slice() {
        [] => None,
        [one] => Some(prefix(one)),
        many => Some(Expression::Named(NamedExpression::Set(
            many.iter().map(|n| SetItem::Element(prefix(n))).collect(),
        ))),
    }
}

fn names(list: &[String]) -> Expression<'static> {
    let mut v: Vec<&String> = list.iter().collect();
    v.sort();
    v.dedup();
    match v.as_slice() {
        [one] => Expression::String(one.to_string().into()),
        many => Expression::Named(NamedExpression::Set(
            many.iter()
                .map(|s| SetItem::Element(Expression::String(s.to_string().into())))
                .collect(),
        )),
    }
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn and(left: Expression<'static>, mask: u32) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::AND(
        left,
        Expression::Number(mask),
    )))
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default())))
}
