//! The Ansible module `underlay.fabric.converge` run through the real
//! `ansible-playbook` (ansible-core from PyPI in a venv that
//! vm-tests/ansible-venv.sh creates), never by importing it: check mode,
//! a real run, a no-op second run, --diff, and a bad profile, against a
//! network namespace and a scratch root. Needs root, python3-venv and PyPI
//! (or an existing venv); fails loudly without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{host_facts, Lab, JOIN_ROLE, JOIN_SECRET, JOIN_TOKEN, PROFILE_SYSCTLS, ROLE, STANDIN};
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The venv's bin directory, created on first use (shared by every test that
/// needs ansible-core; the script serializes with flock).
fn ansible_bin() -> PathBuf {
    let out = Command::new(format!("{REPO}/vm-tests/ansible-venv.sh"))
        .output()
        .expect("run vm-tests/ansible-venv.sh");
    assert!(
        out.status.success(),
        "cannot create the ansible-core venv (needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin")
}

const PLAYBOOK: &str = r#"---
- name: converge one namespace host with underlay.fabric.converge
  hosts: all
  gather_facts: false
  tasks:
    - block:
        - name: converge
          underlay.fabric.converge:
            profile: "{{ ul_profile }}"
            host: "{{ ul_host }}"
            netns: "{{ ul_netns }}"
            root: "{{ ul_root }}"
            binary: "{{ ul_binary }}"
            profile_sha256: "{{ ul_profile_sha256 | default(omit) }}"
            wait: "{{ ul_wait | default(false) }}"
            wait_timeout: "{{ ul_wait_timeout | default(omit) }}"
            join: "{{ ul_join | default(false) }}"
            kubeadm: "{{ ul_kubeadm | default(omit) }}"
            join_token: "{{ ul_join_token | default(omit) }}"
            join_token_file: "{{ ul_join_token_file | default(omit) }}"
          register: result
      always:
        - name: keep the module's result for the test
          ansible.builtin.copy:
            content: "{{ result | to_nice_json }}"
            dest: "{{ ul_out }}"
            mode: "0600"
          check_mode: false
          diff: false
          changed_when: false
"#;

struct Play {
    code: i32,
    stdout: String,
    result: Value,
}

fn run_playbook(lab: &Lab, bin: &Path, role: &Path, host: &Path, extra: &[&str]) -> Play {
    run_playbook_with(lab, bin, role, host, extra, serde_json::json!({}))
}

fn run_playbook_with(
    lab: &Lab,
    bin: &Path,
    role: &Path,
    host: &Path,
    extra: &[&str],
    more_vars: Value,
) -> Play {
    run_playbook_env(lab, bin, role, host, extra, more_vars, &[])
}

fn run_playbook_env(
    lab: &Lab,
    bin: &Path,
    role: &Path,
    host: &Path,
    extra: &[&str],
    more_vars: Value,
    env: &[(&str, &Path)],
) -> Play {
    let dir = lab.root().join("ansible");
    std::fs::create_dir_all(&dir).unwrap();
    let playbook = dir.join("site.yml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    let out_file = dir.join("result.json");
    let _ = std::fs::remove_file(&out_file);
    let root = lab.root().join("hostroot");
    std::fs::create_dir_all(&root).unwrap();
    let mut vars = serde_json::json!({
        "ul_profile": role,
        "ul_host": host,
        "ul_netns": lab.host,
        "ul_root": root,
        "ul_binary": env!("CARGO_BIN_EXE_underlay"),
        "ul_out": out_file,
        "ansible_connection": "local",
        "ansible_python_interpreter": bin.join("python3"),
    });
    if let (Some(v), Some(more)) = (vars.as_object_mut(), more_vars.as_object()) {
        v.extend(more.clone());
    }
    let out = Command::new(bin.join("ansible-playbook"))
        .arg("-i")
        .arg("nshost,")
        .arg(&playbook)
        .arg("-e")
        .arg(vars.to_string())
        .args(extra)
        // Everything Ansible keeps goes below the test's directory, never ~/.ansible.
        .env("ANSIBLE_HOME", dir.join("home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", dir.join("remote-tmp"))
        .env(
            "ANSIBLE_COLLECTIONS_PATH",
            format!("{REPO}/packaging/ansible"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .expect("run ansible-playbook");
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).unwrap_or_else(|e| {
        panic!(
            "no module result in {} ({e}):\n{stdout}",
            out_file.display()
        )
    });
    Play {
        code: out.status.code().unwrap_or(-1),
        result: serde_json::from_str(&text).unwrap(),
        stdout,
    }
}

fn state_file(lab: &Lab) -> PathBuf {
    lab.root().join("hostroot/var/lib/underlay/state.json")
}

#[test]
fn module_check_apply_noop_diff_and_bad_profile() {
    let lab = Lab::new();
    let bin = ansible_bin();
    let role = Path::new(ROLE);
    let host = lab.write_host("host.toml", &host_facts(&["tor-a", "tor-b"]));

    // Check mode on a fresh host: would change, changes nothing.
    let before = lab.snapshot(PROFILE_SYSCTLS);
    let p = run_playbook(&lab, &bin, role, &host, &["--check"]);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["changed"], true, "{}", p.result);
    assert!(p.result["summary"]["create"].as_u64().unwrap() > 0);
    assert_eq!(p.result["cmd"][1], "plan", "check mode must run plan");
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        before,
        "check mode changed the host"
    );
    assert!(
        !state_file(&lab).exists(),
        "check mode wrote the state file"
    );
    assert!(
        !lab.root().join("hostroot/etc").exists(),
        "check mode wrote files"
    );

    // A real run with --diff: converged, and the diff shows before/after.
    let p = run_playbook(&lab, &bin, role, &host, &["--diff"]);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["changed"], true, "{}", p.result);
    assert_eq!(p.result["converged"], true, "{}", p.result);
    assert_eq!(p.result["cmd"][1], "apply");
    let diff = p.result["diff"].as_array().expect("diff in --diff mode");
    let lo = diff
        .iter()
        .find(|d| d["before_header"] == "address 10.10.0.11/32 dev lo (absent)")
        .unwrap_or_else(|| panic!("no diff for the service IP: {diff:#?}"));
    assert_eq!(lo["before"], "");
    assert_eq!(lo["after"], "10.10.0.11/32 dev lo scope global\n");
    // The default callback renders it as a unified diff.
    assert!(
        p.stdout
            .contains("+++ after: address 10.10.0.11/32 dev lo (create)"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("+10.10.0.11/32 dev lo scope global"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout.contains("-0\n+1") || p.stdout.contains("net.ipv4.ip_forward (before)"),
        "no sysctl before/after in the diff: {}",
        p.stdout
    );
    assert!(p.result["durations_ms"]["total"].as_f64().unwrap() > 0.0);
    let addrs = lab.ip_json(&["addr", "show", "dev", "lo"]).to_string();
    assert!(addrs.contains("10.10.0.11"), "{addrs}");
    // The uplinks were just set up: their carrier comes a moment later, and
    // would otherwise show up as a difference in the next snapshots.
    let t0 = std::time::Instant::now();
    while lab
        .ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .any(|l| {
            l["ifname"].as_str().is_some_and(|n| n.starts_with("eth")) && l["operstate"] != "UP"
        })
    {
        assert!(t0.elapsed().as_secs() < 10, "uplinks never got a carrier");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let converged = lab.snapshot(PROFILE_SYSCTLS);

    // Second run: nothing to do.
    let p = run_playbook(&lab, &bin, role, &host, &["--diff"]);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["changed"], false, "{}", p.result);
    assert_eq!(p.result["converged"], true);
    assert!(p.result.get("diff").is_none(), "{}", p.result);
    assert!(p.stdout.contains("changed=0"), "{}", p.stdout);

    // A bad profile: failed, the message names file:line:col, nothing changed.
    let text = std::fs::read_to_string(role).unwrap();
    let bad_text = text.replacen("protocol = 211", "protocol = \"two-eleven\"", 1);
    let line = bad_text
        .lines()
        .position(|l| l.contains("two-eleven"))
        .unwrap()
        + 1;
    let bad = lab.write_host("bad-profile.toml", &bad_text);
    let p = run_playbook(&lab, &bin, &bad, &host, &[]);
    assert_ne!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["failed"], true, "{}", p.result);
    assert_eq!(p.result["changed"], false);
    assert_eq!(p.result["failure"]["kind"], "input");
    let msg = p.result["msg"].as_str().unwrap();
    let loc = format!("{}:{line}:12", bad.display());
    assert!(msg.contains(&loc), "msg {msg:?} does not name {loc}");
    assert!(p.stdout.contains("failed=1"), "{}", p.stdout);
    assert_eq!(
        lab.snapshot(PROFILE_SYSCTLS),
        converged,
        "a bad profile changed the host"
    );

    // profile_sha256 reaches the agent: a pin the profile does not match
    // fails the task and changes nothing.
    let wrong = "0".repeat(64);
    let p = run_playbook_with(
        &lab,
        &bin,
        role,
        &host,
        &[],
        serde_json::json!({ "ul_profile_sha256": wrong }),
    );
    assert_eq!(p.result["failed"], true, "{}", p.result);
    assert!(
        p.result["cmd"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--profile-sha256"),
        "{}",
        p.result
    );
    assert!(
        p.result["msg"].as_str().unwrap().contains("sha256"),
        "{}",
        p.result["msg"]
    );
    assert_eq!(lab.snapshot(PROFILE_SYSCTLS), converged);
}

/// DOCUMENTATION, EXAMPLES and RETURN parse the way Ansible reads them
/// (`ansible-doc`), and document every option the module takes.
#[test]
fn module_documentation_parses() {
    let bin = ansible_bin();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin.join("ansible-doc"))
        .args(["--json", "underlay.fabric.converge"])
        .env("ANSIBLE_HOME", home.path())
        .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
        .env(
            "ANSIBLE_COLLECTIONS_PATH",
            format!("{REPO}/packaging/ansible"),
        )
        .output()
        .expect("run ansible-doc");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ansible-doc failed: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).expect("ansible-doc JSON");
    let m = &v["underlay.fabric.converge"];
    let options = m["doc"]["options"].as_object().expect("options");
    for o in [
        "profile",
        "profile_sha256",
        "host",
        "host_sha256",
        "ca_file",
        "wait",
        "wait_timeout",
        "join",
        "kubeadm",
        "join_token",
        "join_token_file",
        "safe",
        "confirm_timeout",
        "probe",
        "netns",
        "root",
        "binary",
    ] {
        assert!(options.contains_key(o), "option {o} is not documented");
    }
    assert_eq!(options.len(), 17, "an option is documented but not handled");
    for r in ["changed", "diff", "rolled_back", "failure", "durations_ms"] {
        assert!(
            m["return"].get(r).is_some(),
            "return value {r} undocumented"
        );
    }
    assert!(!m["examples"].as_str().unwrap_or_default().is_empty());
}

/// `join: true` with `join_token`: the module puts the token where the host
/// facts' token_file points (0600), the agent joins once through
/// `kubeadm-standin` (a stand-in: no kubeadm package on the test machines),
/// never again on the next run, and the token is in no output.
#[test]
fn module_joins_once_with_the_token_it_placed() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let bin = ansible_bin();
    let role = lab.write_host("join-role.toml", JOIN_ROLE);
    let facts = format!(
        "{}\n[join]\napi_servers = [\"10.10.255.1:6443\"]\nca_cert_hashes = [\"sha256:{}\"]\ntoken_file = \"/etc/underlay/secrets/join-token\"\n",
        host_facts(&["tor-a", "tor-b"]).replacen(
            "version = 1\n",
            "version = 1\nzone = \"az1\"\nrack = \"r07\"\n",
            1
        ),
        "ab".repeat(32)
    );
    let host = lab.write_host("join-host.toml", &facts);
    let records = lab.root().join("standin");
    let hostroot = lab.root().join("hostroot");
    let vars = serde_json::json!({
        "ul_wait": true,
        "ul_wait_timeout": 20,
        "ul_join": true,
        "ul_kubeadm": STANDIN,
        "ul_join_token": JOIN_TOKEN,
        "ul_join_token_file": "/etc/underlay/secrets/join-token",
    });
    let env = [
        ("KUBEADM_STANDIN_DIR", records.as_path()),
        ("KUBEADM_STANDIN_ROOT", hostroot.as_path()),
    ];
    let invocations = || std::fs::read_dir(&records).map_or(0, |d| d.count());

    let p = run_playbook_env(&lab, &bin, &role, &host, &[], vars.clone(), &env);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["changed"], true, "{}", p.result);
    assert_eq!(invocations(), 1, "kubeadm ran {} times", invocations());
    let token_file = hostroot.join("etc/underlay/secrets/join-token");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        JOIN_TOKEN
    );
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!p.stdout.contains(JOIN_SECRET), "token in ansible's output");
    assert!(
        !p.result.to_string().contains(JOIN_SECRET),
        "token in the result"
    );

    // Joined: the next run changes nothing and never runs kubeadm again.
    let p = run_playbook_env(&lab, &bin, &role, &host, &[], vars, &env);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.result["changed"], false, "{}", p.result);
    assert_eq!(invocations(), 1);
    assert!(!p.stdout.contains(JOIN_SECRET));
}
