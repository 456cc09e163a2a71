//! The whole lab as one cargo test: `underlay-lab up`, `test`, `down`, in a
//! directory and with a namespace prefix of its own, so it never collides
//! with a lab a person has up (default prefix `ul-`, dir /tmp/underlay-lab).
//!
//! Needs root and BIRD 2 (vm-tests/setup.sh installs it); without them it
//! fails with the reason, never passing vacuously. Hosts are converged by the `underlay`
//! agent found next to `underlay-lab` (or `UNDERLAY_BIN`), which also renders
//! the host BIRD config. The scenarios include `no-table-fight` with its
//! default 60 s of churn and the 15 s `table-fight-shared-main` demo.

use std::path::{Path, PathBuf};
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_underlay-lab");

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn skip_reason() -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("not root (network namespaces need it)".into());
    }
    for tool in ["ip", "bird", "birdc", "nft", "sysctl"] {
        let found = Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed (run vm-tests/setup.sh)"));
        }
    }
    None
}

/// Tears the lab down even when an assertion failed.
struct Lab {
    dir: PathBuf,
    prefix: String,
}

impl Lab {
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(LAB)
            .args(args)
            .args([
                "--dir",
                &self.dir.to_string_lossy(),
                "--prefix",
                &self.prefix,
            ])
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
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

fn leftover_netns(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lab_up_test_down() {
    if let Some(reason) = skip_reason() {
        panic!("lab_up_test_down cannot run: {reason}; run vm-tests/run-tests.sh as root");
    }
    let id = std::process::id();
    let lab = Lab {
        dir: Path::new("/tmp").join(format!("underlay-lab-test-{id}")),
        prefix: format!("ult{}-", id % 100_000),
    };
    let up = ["up", "--hosts", "2"];
    let (ok, out) = lab.run(&up);
    assert!(ok, "underlay-lab up failed:\n{out}");
    // A second up must detect the running lab and change nothing.
    let (ok, out) = lab.run(&up);
    assert!(ok, "second underlay-lab up failed:\n{out}");

    let (ok, out) = lab.run(&["status", "--json"]);
    assert!(ok, "status reports a lab that is not converged:\n{out}");

    let (ok, out) = lab.run(&["test"]);
    assert!(ok, "scenarios failed:\n{out}");
    assert!(out.contains(" passed, 0 failed"), "no summary line:\n{out}");

    let (ok, out) = lab.run(&["down"]);
    assert!(ok, "down failed:\n{out}");
    assert!(
        leftover_netns(&lab.prefix).is_empty(),
        "namespaces left: {:?}",
        leftover_netns(&lab.prefix)
    );
    assert!(!lab.dir.exists(), "{} still exists", lab.dir.display());
}
