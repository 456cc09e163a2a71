//! Reads our table, and only our table: `nft -j list table inet underlay`.

use nftables::schema::Nftables;
use serde_json::Value;

use super::exec::{NftError, NftExec};
use super::{TABLE_FAMILY, TABLE_NAME};

/// What is in `inet underlay` right now; `table: None` means the table does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedNat {
    pub table: Option<TableContent>,
}

/// Chains, rules and anything else in one table, handles removed, in nft's listing order.
/// Kept as JSON values rather than `nftables` schema types so a hand-added expression the
/// crate does not model is still observed (and then replaced) instead of failing the run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableContent {
    /// Chain objects without `handle`.
    pub chains: Vec<Value>,
    pub rules: Vec<ObservedRule>,
    /// Sets, maps, counters, flowtables...: never desired, so their presence means a hand edit.
    pub others: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    pub chain: String,
    pub comment: Option<String>,
    /// The rule's `expr` array as nft printed it.
    pub expr: Value,
}

impl TableContent {
    /// Content of a document of list objects (our desired document, or nft's listing).
    pub fn from_doc(doc: &Nftables) -> TableContent {
        let value = serde_json::to_value(doc).expect("nftables schema types always serialize");
        Self::from_value(&value)
    }

    fn from_value(doc: &Value) -> TableContent {
        let mut content = TableContent::default();
        let objects = doc
            .get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for obj in objects {
            let Some((kind, body)) = obj.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let mut body = body.clone();
            if let Some(map) = body.as_object_mut() {
                map.remove("handle");
            }
            match kind.as_str() {
                "metainfo" | "table" => {}
                "chain" => content.chains.push(body),
                "rule" => content.rules.push(ObservedRule {
                    chain: str_field(&body, "chain"),
                    comment: body
                        .get("comment")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    expr: body.get("expr").cloned().unwrap_or(Value::Null),
                }),
                _ => content
                    .others
                    .push(serde_json::json!({ kind.clone(): body })),
            }
        }
        content
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Parses the output of `nft -j list table inet underlay`.
pub fn parse_listing(command: &str, stdout: &str) -> Result<TableContent, NftError> {
    let value: Value = serde_json::from_str(stdout).map_err(|source| NftError::Json {
        command: command.to_string(),
        source,
    })?;
    Ok(TableContent::from_value(&value))
}

/// Observes `inet underlay`. A missing table is `table: None`, not an error.
pub fn observe(runner: &dyn NftExec) -> Result<ObservedNat, NftError> {
    let args = ["-j", "list", "table", TABLE_FAMILY, TABLE_NAME];
    match runner.run(&args, None) {
        Ok(stdout) => Ok(ObservedNat {
            table: Some(parse_listing(&args.join(" "), &stdout)?),
        }),
        Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            Ok(ObservedNat { table: None })
        }
        Err(e) => Err(e),
    }
}
