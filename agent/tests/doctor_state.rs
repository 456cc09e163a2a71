//! `underlay doctor` reads the host through the same system as every other
//! verb: the state file `--state` names, below `--root`, inside `--netns`.
//! Root: the test creates (and removes) its own network namespace; every
//! file lives in a scratch root.

use std::path::Path;
use std::process::Command;

/// A namespace of this test's own, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("udst-{tag}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip (iproute2)");
        assert!(st.success(), "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "doctor_state needs root (it creates a network namespace); run the tests as root"
    );
}

/// `underlay doctor --json` with `args`; the finding `underlay-state`.
fn doctor_state(ns: &Netns, root: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
        .args(["doctor", "--json", "--netns", &ns.0, "--root"])
        .arg(root)
        .args(args)
        .output()
        .expect("run underlay");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == "underlay-state")
        .unwrap_or_else(|| panic!("no underlay-state finding: {doc:#}"))
        .clone()
}

#[test]
fn doctor_reads_the_state_file_that_state_and_root_name() {
    require_root();
    let ns = Netns::new("a");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // At the default path below the root: a file converge would refuse.
    let default = root.join("var/lib/underlay/state.json");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::write(&default, "not json").unwrap();
    // At the path --state names: a v1 file as today's code wrote it.
    let custom = root.join("srv/underlay/state.json");
    std::fs::create_dir_all(custom.parent().unwrap()).unwrap();
    std::fs::write(&custom, include_str!("../src/state_testdata/v1.json")).unwrap();

    let f = doctor_state(&ns, root, &["--state", "/srv/underlay/state.json"]);
    assert_eq!(f["severity"], "ok", "{f:#}");
    let saw = f["evidence"][0].as_str().unwrap();
    assert!(
        saw.starts_with(&format!("{}: underlay owns 5 addresses", custom.display())),
        "{f:#}"
    );

    // Without --state: the default path, below --root (not this machine's /var).
    let f = doctor_state(&ns, root, &[]);
    assert_eq!(f["severity"], "failure", "{f:#}");
    assert!(
        f["evidence"][0]
            .as_str()
            .unwrap()
            .starts_with(&default.display().to_string()),
        "{f:#}"
    );

    // A checkpoint beside the named state file: a safe apply in its window.
    std::fs::write(custom.with_file_name("checkpoint.json"), "{}").unwrap();
    let f = doctor_state(&ns, root, &["--state", "/srv/underlay/state.json"]);
    assert_eq!(f["severity"], "warning", "{f:#}");
}
