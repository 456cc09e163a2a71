//! The fleet and safe apply, end to end on the namespace lab with real BIRD
//! ToRs, real sshd per host and real ansible-playbook over SSH:
//!
//! 1. `fleet up --hosts 4`; check mode over the fleet changes nothing;
//! 2. the playbook (safe apply) twice: every host changed, then none;
//! 3. one host given broken host facts (a wrong peer ASN): that host is
//!    rolled back within the confirm window and reported failed, the others
//!    stay converged; afterwards its sessions are Established again and the
//!    host is exactly as before (addresses, rules, routes, BIRD config);
//! 4. `underlay apply --confirm` killed with SIGKILL inside its window: the
//!    checkpoint stays, and the next `underlay apply` rolls it back first;
//! 5. `--probe`: every gate passes but a TCP connection through the fabric
//!    to the client does not: rolled back; with a listener, kept.
//!
//! Needs root, BIRD 2, openssh-server, python3-venv and PyPI (or an existing
//! venv, vm-tests/ansible-venv.sh); fails loudly without them. Run it as
//! `flock /tmp/underlay-lab.lock cargo test -p underlay-vm-tests --test fleet`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LAB: &str = env!("CARGO_BIN_EXE_underlay-lab");
const HOSTS: u8 = 4;

fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    assert_eq!(
        uid, "0",
        "the fleet test needs root (network namespaces, sshd); run vm-tests/run-tests.sh as root"
    );
    for tool in [
        "bird",
        "birdc",
        "/usr/sbin/sshd",
        "ssh",
        "ssh-keygen",
        "python3",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is not installed: run vm-tests/setup.sh (bird2, openssh-server, python3-venv)"
        );
    }
}

struct Fleet {
    dir: PathBuf,
    prefix: String,
}

impl Fleet {
    fn lab(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(LAB)
            .args([
                "--dir",
                &self.dir.to_string_lossy(),
                "--prefix",
                &self.prefix,
            ])
            .args(args)
            .output()
            .expect("run underlay-lab");
        let text = format!(
            "$ underlay-lab {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        (out.status.success(), text)
    }

    /// `fleet run --json`: the per-host results and ansible-playbook's output.
    fn run(&self, extra: &[&str]) -> (bool, Value, String) {
        let mut args = vec!["fleet", "run", "--json", "--verbose"];
        args.extend_from_slice(extra);
        let (ok, text) = self.lab(&args);
        let start = text.rfind("\n{").expect("no JSON from fleet run");
        let json: Value = serde_json::from_str(&text[start..]).expect("fleet run JSON");
        (ok, json, text)
    }

    fn host_dir(&self, h: &str) -> PathBuf {
        self.dir.join(h)
    }

    fn netns(&self, h: &str) -> String {
        format!("{}{h}", self.prefix)
    }

    fn birdc(&self, h: &str, args: &[&str]) -> String {
        let ctl = self.host_dir(h).join("root/run/bird/bird.ctl");
        let out = Command::new("birdc")
            .arg("-s")
            .arg(ctl)
            .args(args)
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tor_sessions_established(&self, h: &str) -> bool {
        let p = self.birdc(h, &["show", "protocols"]);
        ["tor_a", "tor_b"].iter().all(|s| {
            p.lines()
                .any(|l| l.starts_with(s) && l.contains("Established"))
        })
    }

    fn wait_established(&self, h: &str, timeout: Duration) {
        let t0 = Instant::now();
        while !self.tor_sessions_established(h) {
            assert!(
                t0.elapsed() < timeout,
                "{h}: ToR sessions not Established again within {timeout:?}:\n{}",
                self.birdc(h, &["show", "protocols"])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Everything underlay could change on a host (and BGP's routes).
    fn snapshot(&self, h: &str) -> String {
        let ns = self.netns(h);
        let mut s = String::new();
        for args in [
            vec!["-d", "addr"],
            vec!["rule"],
            vec!["route", "show", "table", "all"],
        ] {
            let out = Command::new("ip")
                .args(["-n", &ns])
                .args(&args)
                .output()
                .unwrap();
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        for key in [
            "net/ipv4/ip_forward",
            "net/ipv4/conf/eth0/rp_filter",
            "net/ipv4/conf/all/arp_ignore",
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "cat", &format!("/proc/sys/{key}")])
                .output()
                .unwrap();
            s.push_str(&format!("{key}={}", String::from_utf8_lossy(&out.stdout)));
        }
        let root = self.host_dir(h).join("root");
        for f in [
            "etc/bird/bird.conf",
            "etc/sysctl.d/90-underlay.conf",
            "etc/iproute2/rt_tables.d/underlay.conf",
        ] {
            s.push_str(&format!(
                "== {f}\n{}",
                std::fs::read_to_string(root.join(f)).unwrap_or_else(|_| "(absent)\n".into())
            ));
        }
        s
    }

    /// Polls until the snapshot equals `want` (BGP routes come back a few
    /// seconds after the sessions).
    fn wait_snapshot(&self, h: &str, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let now = self.snapshot(h);
            if now == want {
                return;
            }
            if t0.elapsed() > timeout {
                panic!("{h} is not as before the apply:\n--- before\n{want}\n--- now\n{now}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn underlay(&self, h: &str, facts: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(agent_bin());
        c.arg("apply")
            .args(extra)
            .arg("--profile")
            .arg(profile())
            .arg("--host")
            .arg(self.host_dir(h).join(facts))
            .args(["--netns", &self.netns(h), "--root"])
            .arg(self.host_dir(h).join("root"));
        c
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.lab(&["fleet", "down"]);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn profile() -> PathBuf {
    repo().join("profiles/l3-ecmp-calico.toml")
}

/// The agent underlay-lab uses (next to it, as cargo builds the workspace).
fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNDERLAY_BIN") {
        return p.into();
    }
    let p = Path::new(LAB).with_file_name("underlay");
    assert!(
        p.is_file(),
        "{} not built: run `cargo build -p underlay` (cargo test --workspace does)",
        p.display()
    );
    p
}

fn hosts(v: &Value) -> Vec<Value> {
    v["hosts"].as_array().cloned().unwrap_or_default()
}

fn host<'a>(v: &'a [Value], name: &str) -> &'a Value {
    v.iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no result for {name}: {v:?}"))
}

#[test]
fn fleet_playbook_and_safe_apply() {
    require_root_and_tools();
    let id = std::process::id();
    let fleet = Fleet {
        dir: Path::new("/tmp").join(format!("underlay-fleet-test-{id}")),
        prefix: format!("ulf{}-", id % 100_000),
    };
    let n = HOSTS.to_string();
    let (ok, out) = fleet.lab(&["fleet", "up", "--hosts", &n]);
    assert!(ok, "fleet up failed:\n{out}");

    // 1. Check mode over SSH: every host would change; none did.
    let before: Vec<String> = (1..=HOSTS)
        .map(|i| fleet.snapshot(&format!("h{i}")))
        .collect();
    let (ok, r, out) = fleet.run(&["--check"]);
    assert!(ok, "{out}");
    let rs = hosts(&r);
    assert_eq!(rs.len(), usize::from(HOSTS), "{out}");
    assert!(
        rs.iter()
            .all(|h| h["changed"] == true && h["failed"] == false),
        "{out}"
    );
    for (i, b) in before.iter().enumerate() {
        assert_eq!(
            &fleet.snapshot(&format!("h{}", i + 1)),
            b,
            "check mode changed h{}",
            i + 1
        );
    }

    // 2. The playbook twice, as safe applies: changed everywhere, then nowhere.
    let (ok, r, out) = fleet.run(&["--safe", "40"]);
    assert!(ok, "first fleet run failed:\n{out}");
    let rs = hosts(&r);
    assert_eq!(rs.len(), usize::from(HOSTS));
    for h in &rs {
        assert_eq!(h["changed"], true, "{h}\n{out}");
        assert_eq!(h["failed"], false, "{h}\n{out}");
        assert_eq!(h["rolled_back"], false, "{h}\n{out}");
    }
    // A confirmed change leaves no checkpoint behind.
    for i in 1..=HOSTS {
        let cp = fleet
            .host_dir(&format!("h{i}"))
            .join("root/var/lib/underlay/checkpoint.json");
        assert!(
            !cp.exists(),
            "{} kept after a confirmed apply",
            cp.display()
        );
        assert!(fleet.tor_sessions_established(&format!("h{i}")));
    }
    let (ok, r, out) = fleet.run(&["--safe", "40"]);
    assert!(ok, "second fleet run failed:\n{out}");
    assert!(
        hosts(&r)
            .iter()
            .all(|h| h["changed"] == false && h["failed"] == false),
        "second run changed something:\n{out}"
    );
    assert!(out.contains("changed=0"), "{out}");

    // 3. One host with a wrong peer ASN: rolled back and failed; the rest fine.
    let converged = fleet.snapshot("h2");
    let confirm = 12;
    let (ok, r, out) = fleet.run(&["--safe", &confirm.to_string(), "--broken", "h2"]);
    assert!(!ok, "a fleet run with a broken host must fail:\n{out}");
    let rs = hosts(&r);
    let h2 = host(&rs, "h2");
    assert_eq!(h2["failed"], true, "{out}");
    assert_eq!(h2["rolled_back"], true, "{out}");
    assert_eq!(
        h2["exit_code"], 4,
        "the documented exit code of a rollback: {out}"
    );
    let msg = h2["msg"].as_str().unwrap();
    assert!(
        msg.contains("rolled back") && msg.contains("bgp-established"),
        "{msg}"
    );
    // Within the window (plus the rollback itself and the module's start).
    let agent_ms = h2["agent_ms"].as_f64().unwrap();
    assert!(
        agent_ms < f64::from(confirm) * 1e3 + 5e3,
        "h2 took {agent_ms} ms for a {confirm} s window"
    );
    for other in ["h1", "h3", "h4"] {
        let h = host(&rs, other);
        assert!(h["failed"] == false && h["changed"] == false, "{h}\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("h2 ") && l.contains("failed=1")),
        "{out}"
    );
    fleet.wait_established("h2", Duration::from_secs(30));
    fleet.wait_snapshot("h2", &converged, Duration::from_secs(30));

    // 4. kill -9 inside the confirm window: the next apply rolls back first.
    let h = "h3";
    let converged = fleet.snapshot(h);
    let conf = fleet.host_dir(h).join("root/etc/bird/bird.conf");
    let good_conf = std::fs::read_to_string(&conf).unwrap();
    let checkpoint = fleet
        .host_dir(h)
        .join("root/var/lib/underlay/checkpoint.json");
    let mut child = fleet
        .underlay(h, "host-broken.toml", &["--confirm", "60", "--json"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(&conf).unwrap() == good_conf {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the broken config never landed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(checkpoint.exists(), "no checkpoint during the window");
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(checkpoint.exists(), "the checkpoint must survive the crash");
    assert_ne!(
        fleet.snapshot(h),
        converged,
        "the crash left nothing to roll back"
    );
    // plan says a checkpoint is pending (and changes nothing).
    let out = Command::new(agent_bin())
        .arg("plan")
        .arg("--json")
        .arg("--profile")
        .arg(profile())
        .arg("--host")
        .arg(fleet.host_dir(h).join("host.toml"))
        .args(["--netns", &fleet.netns(h), "--root"])
        .arg(fleet.host_dir(h).join("root"))
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert!(
        doc["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {pid}) left a checkpoint")),
        "{doc}"
    );
    assert!(checkpoint.exists(), "plan must not touch the checkpoint");
    let out = fleet
        .underlay(h, "host.toml", &["--json"])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("apply JSON");
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(doc["rollback"]["checkpoint"]["pid"], pid, "{doc}");
    assert_eq!(doc["rollback"]["complete"], true, "{doc}");
    assert!(
        doc["rolled_back"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("BIRD config")),
        "{doc}"
    );
    // The rollback put everything back: the good apply itself had nothing to do.
    assert_eq!(doc["summary"]["create"], 0);
    assert_eq!(doc["summary"]["update"], 0);
    assert!(!checkpoint.exists(), "the checkpoint was not removed");
    fleet.wait_established(h, Duration::from_secs(30));
    fleet.wait_snapshot(h, &converged, Duration::from_secs(30));

    // 5. --probe: the gates pass but a TCP connection through the fabric
    // does not: rolled back; with a listener there, the change is kept.
    let h = "h4";
    let ns = fleet.netns(h);
    let rule = ["rule", "del", "pref", "30001"];
    let del_rule = || {
        let ok = Command::new("ip")
            .args(["-n", &ns])
            .args(rule)
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not delete our rule in {ns}");
    };
    del_rule(); // something for the apply to change
    let diverged = fleet.snapshot(h);
    let probe = "192.168.99.1:9079"; // the client's address, behind both ToRs
    let out = fleet
        .underlay(
            h,
            "host.toml",
            &["--confirm", "5", "--probe", probe, "--json"],
        )
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("apply JSON");
    assert_eq!(out.status.code(), Some(4), "{doc}");
    let reason = doc["rollback"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("probe") && reason.contains(probe),
        "{reason}"
    );
    assert!(
        doc["gates"]["gates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["passed"] == true || g["name"] == "probe"),
        "only the probe may fail here: {doc}"
    );
    fleet.wait_snapshot(h, &diverged, Duration::from_secs(10));
    let mut server = Command::new("ip")
        .args(["netns", "exec", &format!("{}client", fleet.prefix), LAB])
        .args(["probe", "serve", probe, "--idle-secs", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let out = fleet
        .underlay(
            h,
            "host.toml",
            &["--confirm", "10", "--probe", probe, "--json"],
        )
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("apply JSON");
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert!(doc["rollback"].is_null(), "{doc}");
    assert!(doc["changed"] == true, "{doc}");
    assert!(!fleet
        .host_dir(h)
        .join("root/var/lib/underlay/checkpoint.json")
        .exists());

    let (ok, out) = fleet.lab(&["fleet", "down"]);
    assert!(ok, "{out}");
    assert!(!fleet.dir.exists(), "{} left", fleet.dir.display());
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&fleet.prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
