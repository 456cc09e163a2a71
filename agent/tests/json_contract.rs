//! The `--json` contract, without root: every document (success and failure,
//! every converge verb) has the same top-level shape, validates against
//! `agent/schema/output.schema.json`, and carries an error kind that says
//! what to do next. Success documents from a real kernel are validated by
//! the netns suite's harness too.

use std::process::Command;

use serde_json::Value;
use underlay::engine::{self, Mode};
use underlay::error::ErrorKind;
use underlay::profile::load_str;
use underlay::report::{Context, Document, SCHEMA_VERSION};
use underlay::system::fake::FakeSystem;
use underlay_testkit::schema_check;

const BIN: &str = env!("CARGO_BIN_EXE_underlay");
const ROLE: &str = include_str!("../../profiles/l3-ecmp-calico.toml");
const HOST: &str = include_str!("../../profiles/examples/host.toml");

fn ctx(command: &str) -> Context<'_> {
    Context {
        command,
        host: "node-a1",
        netns: None,
        total_ms: 1.0,
    }
}

fn doc_for(mode: Mode, sys: &mut FakeSystem) -> Value {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).expect("shipped profiles are valid");
    let r = engine::run(sys, &d, mode).expect("the fake converges");
    let name = format!("{mode:?}").to_lowercase();
    serde_json::to_value(Document::of_report(&r, &ctx(&name), None, r.exit_code())).unwrap()
}

/// A fake host whose kernel has every sysctl the profile manages.
fn host() -> FakeSystem {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).unwrap();
    FakeSystem::with_nics(&["eth0", "eth1"]).with_sysctls_of(&d)
}

#[test]
fn every_verb_prints_the_same_shape() {
    let mut sys = host();
    let plan = doc_for(Mode::Plan, &mut sys);
    let apply = doc_for(Mode::Apply, &mut sys);
    let verify = doc_for(Mode::Verify, &mut sys);
    let status = doc_for(Mode::Status, &mut sys);
    for doc in [&plan, &apply, &verify, &status] {
        schema_check::assert_valid(doc);
        assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    }
    assert_eq!(plan["exit_code"], 2, "{plan}");
    assert_eq!(plan["failed"], false, "pending changes are not a failure");
    assert_eq!(apply["changed"], true);
    assert_eq!(apply["failed"], false, "{apply}");
    assert_eq!(apply["converged"], true);
    assert_eq!(verify["changed"], false);
    assert_eq!(verify["exit_code"], 0);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&plan), keys(&apply));
    assert_eq!(keys(&apply), keys(&status));
}

#[test]
fn an_op_the_host_refuses_is_a_system_failure_with_its_resource() {
    let d = load_str("role.toml", ROLE, "host.toml", HOST).unwrap();
    let mut sys = host();
    sys.fail_at = Some(3);
    let r = engine::run(&mut sys, &d, Mode::Apply).unwrap();
    let doc =
        serde_json::to_value(Document::of_report(&r, &ctx("apply"), None, r.exit_code())).unwrap();
    schema_check::assert_valid(&doc);
    assert_eq!(doc["failed"], true);
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["failure"]["kind"], "system");
    assert!(doc["failure"]["resource"].is_string(), "{doc}");
}

fn run_bin(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN).args(args).output().expect("run underlay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON document ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn input_errors_from_the_binary_are_documents_of_kind_input() {
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("role.toml");
    let host = dir.path().join("host.toml");
    std::fs::write(&role, ROLE).unwrap();
    std::fs::write(&host, HOST.replace("172.30.0.1/31", "172.30.0.1/24")).unwrap();
    let missing = dir.path().join("missing.toml");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("invalid value", vec![host.display().to_string()]),
        ("missing file", vec![missing.display().to_string()]),
    ];
    for verb in ["plan", "apply", "verify", "status"] {
        for (what, host_arg) in &cases {
            let root = dir.path().display().to_string();
            let mut args = vec![verb, "--json", "--root", &root];
            let role_s = role.display().to_string();
            args.extend(["--profile", &role_s, "--host", &host_arg[0]]);
            let (code, doc, _) = run_bin(&args);
            schema_check::assert_valid(&doc);
            assert_eq!(code, 1, "{verb} {what}: {doc}");
            assert_eq!(doc["exit_code"], 1);
            assert_eq!(doc["failed"], true);
            assert_eq!(doc["changed"], false);
            assert_eq!(doc["command"], verb);
            assert_eq!(doc["failure"]["kind"], ErrorKind::Input.as_str(), "{doc}");
        }
    }
    // The located problem is in the document, not only in the message.
    let role_s = role.display().to_string();
    let host_s = host.display().to_string();
    let (_, doc, _) = run_bin(&["plan", "--json", "--profile", &role_s, "--host", &host_s]);
    let p = &doc["failure"]["problems"][0];
    assert_eq!(p["key"], "uplinks[0].ipv4.address", "{doc}");
    assert!(p["line"].as_u64().unwrap() > 1);
}

#[test]
fn a_document_missing_a_field_breaks_the_schema() {
    // The schema is a real check, not a formality.
    let mut sys = host();
    let mut doc = doc_for(Mode::Plan, &mut sys);
    doc.as_object_mut().unwrap().remove("failure");
    let result = std::panic::catch_unwind(|| schema_check::assert_valid(&doc));
    assert!(
        result.is_err(),
        "a document without `failure` passed the schema"
    );
}
