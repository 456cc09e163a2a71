//! The workspace's `rust-version` is what its dependencies really need: the
//! highest `rust-version` among the crates a build of underlay compiles
//! (normal and build dependencies, not dev-only ones), read from `cargo
//! metadata` against Cargo.lock. A dependency bump that raises the floor, or
//! a stale declared value, fails here.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// `1.89` and `1.89.0` are the same floor.
fn version(s: &str) -> Vec<u64> {
    let mut v: Vec<u64> = s.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    v.resize(3, 0);
    v
}

#[test]
fn declared_rust_version_is_the_dependencies_floor() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: HashMap<&str, &Value> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: HashMap<&str, &Value> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let members: Vec<&str> = m["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Crates a build compiles: members, then normal/build dependencies.
    let mut seen = BTreeSet::new();
    let mut stack = members.clone();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for d in nodes[id]["deps"].as_array().unwrap() {
            let kinds = d["dep_kinds"].as_array().unwrap();
            if kinds.iter().any(|k| k["kind"].as_str() != Some("dev")) {
                stack.push(d["pkg"].as_str().unwrap());
            }
        }
    }
    let (floor, by) = seen
        .iter()
        .filter(|id| !members.contains(id))
        .filter_map(|id| {
            let p = packages[*id];
            p["rust_version"]
                .as_str()
                .map(|v| (version(v), p["name"].as_str().unwrap().to_string()))
        })
        .max()
        .expect("dependencies declare rust-version");
    for id in &members {
        let declared = packages[*id]["rust_version"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} declares no rust-version"));
        assert_eq!(
            version(declared),
            floor,
            "{id}: rust-version {declared}, but {by} needs {floor:?}: set the workspace's rust-version to it"
        );
    }
}
