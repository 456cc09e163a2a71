//! Real kernel, real binary: `underlay apply --wait --join` and `underlay
//! join` inside a network namespace with a scratch root, against
//! `vm-tests/kubeadm-standin` (a stand-in for kubeadm that records its argv,
//! environment and config file and never contacts a cluster). The role has
//! no [bgp], so the gate is `uplinks-up`: taking a ToR-side link down fails
//! it. (BGP gates with real BIRD: the lab's `join` scenario.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{host_facts, schema_check, Lab, JOIN_ROLE, JOIN_SECRET, JOIN_TOKEN, STANDIN};
use serde_json::Value;

const TOKEN_FILE: &str = "etc/underlay/secrets/join-token";

fn join_facts(extra: &str) -> String {
    format!(
        "{}\n[join]\napi_servers = [\"10.10.255.1:6443\"]\n\
         ca_cert_hashes = [\"sha256:{}\"]\ntoken_file = \"/{TOKEN_FILE}\"\n{extra}",
        host_facts(&["tor-a", "tor-b"]).replacen(
            "version = 1\n",
            "version = 1\nzone = \"az1\"\nrack = \"r07\"\n",
            1
        ),
        "ab".repeat(32)
    )
}

/// Everything a run printed, for the token grep.
#[derive(Default)]
struct Streams(Vec<(String, String)>);

impl Streams {
    fn add(&mut self, what: &str, text: &str) {
        self.0.push((what.to_string(), text.to_string()));
    }
    fn assert_no_token(&self) {
        assert!(!self.0.is_empty());
        for (what, text) in &self.0 {
            assert!(
                !text.contains(JOIN_TOKEN) && !text.contains(JOIN_SECRET),
                "the token appears in {what}:\n{text}"
            );
        }
    }
}

struct JoinLab {
    lab: Lab,
    role: PathBuf,
    host: PathBuf,
    records: PathBuf,
    streams: Streams,
}

impl JoinLab {
    fn new(facts_extra: &str) -> JoinLab {
        let lab = Lab::new();
        let role = lab.write_host("role.toml", JOIN_ROLE);
        let host = lab.write_host("host.toml", &join_facts(facts_extra));
        let records = lab.root().join("standin");
        let token = lab.root().join(TOKEN_FILE);
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, format!("{JOIN_TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        JoinLab {
            lab,
            role,
            host,
            records,
            streams: Streams::default(),
        }
    }

    /// `underlay <args> --netns --root --profile --host --json -vv`, with the
    /// stand-in told where to record and what to exit with.
    fn run(&mut self, args: &[&str], standin_exit: i32) -> (i32, Value) {
        let mut full = args.to_vec();
        full.extend(["--json", "-vv"]);
        let out = self
            .lab
            .underlay_cmd(&full, &self.role, &self.host)
            .env("KUBEADM_STANDIN_DIR", &self.records)
            .env("KUBEADM_STANDIN_ROOT", self.lab.root())
            .env("KUBEADM_STANDIN_EXIT", standin_exit.to_string())
            .output()
            .expect("run underlay");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.streams.add(&format!("stdout of {args:?}"), &stdout);
        self.streams.add(&format!("stderr of {args:?}"), &stderr);
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}\nstderr: {stderr}"));
        schema_check::assert_valid(&json);
        (out.status.code().unwrap_or(-1), json)
    }

    fn apply_join(&mut self, wait_timeout: &str, standin_exit: i32) -> (i32, Value) {
        self.run(
            &[
                "apply",
                "--wait",
                "--wait-timeout",
                wait_timeout,
                "--join",
                "--kubeadm",
                STANDIN,
            ],
            standin_exit,
        )
    }

    /// The stand-in's records, in invocation order.
    fn invocations(&self) -> Vec<PathBuf> {
        let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.records)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().parse().ok()?;
                        Some((n, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }

    fn record(&mut self, inv: &Path, file: &str) -> String {
        let text = std::fs::read_to_string(inv.join(file)).unwrap_or_default();
        self.streams
            .add(&format!("the stand-in's recorded {file}"), &text);
        text
    }

    fn state(&mut self) -> Value {
        let text =
            std::fs::read_to_string(self.lab.root().join("var/lib/underlay/state.json")).unwrap();
        self.streams.add("the state file", &text);
        serde_json::from_str(&text).unwrap()
    }

    fn tor_link(&self, up: bool) {
        common::must(
            "ip",
            &[
                "-n",
                &self.lab.tor,
                "link",
                "set",
                "tora0",
                if up { "up" } else { "down" },
            ],
        );
    }
}

#[test]
fn a_failing_gate_never_runs_kubeadm_then_once_then_never_again() {
    let mut l = JoinLab::new("");
    l.tor_link(false);
    let (code, doc) = l.apply_join("1", 0);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(doc["join"]["status"], "not-attempted", "{doc}");
    assert!(
        doc["join"]["message"]
            .as_str()
            .unwrap()
            .contains("uplinks-up"),
        "{doc}"
    );
    assert!(
        l.invocations().is_empty(),
        "kubeadm ran although a gate failed"
    );

    l.tor_link(true);
    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["changed"], true);
    assert_eq!(doc["join"]["status"], "joined", "{doc}");
    assert_eq!(doc["gates"]["passed"], true);
    assert_eq!(doc["join"]["node_ip"], "10.10.0.11,fd00:10::11");
    let inv = l.invocations();
    assert_eq!(inv.len(), 1, "kubeadm must run exactly once");
    let config_path = l.lab.root().join("run/underlay/kubeadm-join.yaml");
    assert_eq!(
        l.record(&inv[0], "argv"),
        format!("join\n--config\n{}\n", config_path.display())
    );
    assert_eq!(l.record(&inv[0], "config.mode").trim(), "600 0");
    let config = std::fs::read_to_string(inv[0].join("config")).unwrap();
    assert!(
        config.contains("apiVersion: kubeadm.k8s.io/v1beta4"),
        "{config}"
    );
    assert!(
        config.contains("- name: \"node-ip\"\n      value: \"10.10.0.11,fd00:10::11\""),
        "{config}"
    );
    assert!(
        config.contains("topology.kubernetes.io/zone=az1"),
        "{config}"
    );
    assert!(
        config.contains(&format!("token: \"{JOIN_TOKEN}\"")),
        "kubeadm got the token"
    );
    assert!(
        !config_path.exists(),
        "the config (with the token) stays behind"
    );
    assert!(l.lab.root().join("etc/kubernetes/kubelet.conf").is_file());
    let st = l.state();
    assert_eq!(st["joined"]["node_ip"], "10.10.0.11,fd00:10::11", "{st}");
    l.record(&inv[0], "env");

    // The next run, and the join verb: joined already, kubeadm not run.
    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["join"]["status"], "already-joined", "{doc}");
    assert_eq!(doc["changed"], false);
    let (code, doc) = l.run(&["join", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["join"]["status"], "already-joined", "{doc}");
    // Our marker alone also says joined.
    std::fs::remove_file(l.lab.root().join("etc/kubernetes/kubelet.conf")).unwrap();
    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["join"]["status"], "already-joined", "{doc}");
    assert!(doc["join"]["message"]
        .as_str()
        .unwrap()
        .contains("--rejoin"));
    assert_eq!(
        l.invocations().len(),
        1,
        "kubeadm ran again on a joined node"
    );
    l.streams.assert_no_token();
}

#[test]
fn a_failed_join_is_reported_and_retried_on_the_next_run() {
    let mut l = JoinLab::new("");
    let (code, doc) = l.apply_join("10", 7);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failed"], true);
    assert_eq!(doc["failure"]["kind"], "transient", "{doc}");
    assert_eq!(doc["failure"]["resource"], "join node-t");
    assert_eq!(doc["join"]["status"], "failed");
    let attempt = &doc["join"]["attempts"][0];
    assert_eq!(attempt["exit_code"], 7, "{doc}");
    let tail: Vec<&str> = attempt["output_tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // The stand-in quotes the token in its error; the report must not.
    assert!(
        tail.iter()
            .any(|l| l.contains("token \"<redacted>\" (secret <redacted>)")),
        "{tail:?}"
    );
    assert!(doc["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("exited 7"));
    assert!(!l.lab.root().join("run/underlay/kubeadm-join.yaml").exists());
    assert!(
        l.state().get("joined").is_none(),
        "a failed join is not recorded"
    );

    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["join"]["status"], "joined", "{doc}");
    assert_eq!(l.invocations().len(), 2);
    l.streams.assert_no_token();
}

/// Every file below the scratch root, and the namespace's state.
fn everything(l: &JoinLab) -> (Vec<PathBuf>, String) {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(l.lab.root(), &mut files);
    files.sort();
    (files, l.lab.snapshot(&[]))
}

#[test]
fn a_label_a_kubelet_may_not_set_is_an_input_error_and_changes_nothing() {
    let mut l = JoinLab::new("labels = { \"node-role.kubernetes.io/worker\" = \"\" }\n");
    let before = everything(&l);
    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failure"]["kind"], "input", "{doc}");
    let p = &doc["failure"]["problems"][0];
    assert_eq!(
        p["key"], "join.labels.\"node-role.kubernetes.io/worker\"",
        "{doc}"
    );
    assert!(p["line"].as_u64().unwrap() > 1);
    assert_eq!(everything(&l), before, "an input error changed the host");
    assert!(l.invocations().is_empty());
}

#[test]
fn a_token_file_others_can_read_is_an_input_error_and_changes_nothing() {
    let mut l = JoinLab::new("");
    let token = l.lab.root().join(TOKEN_FILE);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = everything(&l);
    let (code, doc) = l.apply_join("10", 0);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failure"]["kind"], "input", "{doc}");
    assert!(
        doc["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("chmod 0600"),
        "{doc}"
    );
    assert_eq!(everything(&l), before, "a bad token file changed the host");
    assert!(l.invocations().is_empty());
    l.streams.assert_no_token();
}

#[test]
fn the_join_verb_needs_a_converged_host_then_joins_it() {
    let mut l = JoinLab::new("");
    let (code, doc) = l.run(&["join", "--wait-timeout", "1", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(doc["join"]["status"], "not-attempted", "{doc}");
    assert!(doc["join"]["message"]
        .as_str()
        .unwrap()
        .contains("underlay apply"));
    assert!(l.invocations().is_empty());
    let (code, doc) = l.run(&["apply"], 0);
    assert_eq!(code, 0, "{doc}");
    assert!(doc["join"].is_null(), "plain apply never joins");
    let (code, doc) = l.run(&["join", "--wait-timeout", "10", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["command"], "join");
    assert_eq!(doc["join"]["status"], "joined", "{doc}");
    assert_eq!(l.invocations().len(), 1);
    // --rejoin is refused while kubelet.conf exists...
    let (code, doc) = l.run(&["join", "--rejoin", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failure"]["kind"], "input");
    // ...and after a deliberate reset joins again, once.
    std::fs::remove_file(l.lab.root().join("etc/kubernetes/kubelet.conf")).unwrap();
    let (code, doc) = l.run(&["join", "--rejoin", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["join"]["status"], "joined", "{doc}");
    assert_eq!(l.invocations().len(), 2);
    l.streams.assert_no_token();
}

#[test]
fn render_join_redacts_the_token_unless_asked() {
    let l = JoinLab::new("");
    let out = l.lab.underlay_raw(&["render", "join"], &l.role, &l.host);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("token: \"<redacted>\""), "{text}");
    assert!(!text.contains(JOIN_SECRET));
    let out = l
        .lab
        .underlay_raw(&["render", "join", "--show-secrets"], &l.role, &l.host);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("token: \"{JOIN_TOKEN}\"")), "{text}");
}

#[test]
fn the_boot_units_join_is_a_no_op_without_a_join_section_and_finds_kubeadm_in_the_environment() {
    // underlay-join.service runs `underlay join --if-configured`, enabled on
    // every host: one without [join] is left alone, exit 0.
    let mut l = JoinLab::new("");
    let with_join = l.host.clone();
    l.host = l
        .lab
        .write_host("plain.toml", &host_facts(&["tor-a", "tor-b"]));
    let (code, doc) = l.run(&["apply"], 0);
    assert_eq!(code, 0, "{doc}");
    // The uplinks the apply just set up go from UNKNOWN to UP on their own.
    let mut before = everything(&l);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = everything(&l);
        if now == before {
            break;
        }
        before = now;
    }
    let (code, doc) = l.run(&["join", "--if-configured", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["command"], "join");
    assert!(
        doc["msg"].as_str().unwrap().contains("nothing to join"),
        "{doc}"
    );
    assert!(doc["join"].is_null(), "{doc}");
    assert_eq!(everything(&l), before, "nothing to join changed the host");
    // Without the flag it stays an input error that says what to add.
    let (code, doc) = l.run(&["join", "--kubeadm", STANDIN], 0);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["failure"]["kind"], "input", "{doc}");
    assert!(doc["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("[join]"));
    assert!(l.invocations().is_empty());

    // Every unit reads /etc/default/underlay: its UNDERLAY_KUBEADM must not
    // turn the boot unit's plain `apply` into a usage error.
    let out = l
        .lab
        .underlay_cmd(&["apply"], &l.role, &l.host)
        .env("UNDERLAY_KUBEADM", STANDIN)
        .output()
        .expect("run underlay");
    assert_eq!(
        out.status.code(),
        Some(0),
        "apply with UNDERLAY_KUBEADM set: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With [join]: the flag changes nothing, and kubeadm comes from
    // UNDERLAY_KUBEADM (what /etc/default/underlay sets for the unit).
    l.host = with_join;
    let out = l
        .lab
        .underlay_cmd(
            &["join", "--if-configured", "--wait-timeout", "10", "--json"],
            &l.role,
            &l.host,
        )
        .env("UNDERLAY_KUBEADM", STANDIN)
        .env("KUBEADM_STANDIN_DIR", &l.records)
        .env("KUBEADM_STANDIN_ROOT", l.lab.root())
        .output()
        .expect("run underlay");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    l.streams.add("stdout of join --if-configured", &stdout);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    schema_check::assert_valid(&doc);
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(doc["join"]["status"], "joined", "{doc}");
    assert_eq!(l.invocations().len(), 1);
    l.streams.assert_no_token();
}
