//! Validates a `--json` document against `agent/schema/output.schema.json`,
//! the published contract. Every test that reads the agent's JSON calls it,
//! so a field the code drops or retypes fails the suite.

use std::sync::OnceLock;

use serde_json::Value;

const SCHEMA: &str = include_str!("../../agent/schema/output.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    })
}

/// Panics with every violation when `doc` does not match the schema.
pub fn assert_valid(doc: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the JSON document breaks agent/schema/output.schema.json:\n  {}\ndocument: {doc}",
        errors.join("\n  ")
    );
}
