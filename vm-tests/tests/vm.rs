//! The QEMU tier, one test per scenario: `underlay-lab vm test --only NAME`
//! in a directory and with a namespace prefix of its own. Each boots Debian
//! 12 VMs from the cached image with the project's .deb installed (built by
//! vm-tests/run-tests.sh with `cargo deb -p underlay`, or UNDERLAY_DEB), two
//! VMs at a time at most across all tests. A failure prints the serial console
//! tail and journal of every VM of the scenario.
//!
//! Needs root, QEMU, mmdebstrap, the vfat tools and BIRD (vm-tests/setup.sh);
//! without them each test fails with the reason, never passing vacuously.

use std::path::PathBuf;
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_underlay-lab");

fn scenario(name: &str, tag: char) {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("underlay-vm-test-{pid}"));
    let prefix = format!("uv{}{tag}-", pid % 100_000);
    let mut cmd = Command::new(LAB);
    cmd.args(["vm", "test", "--only", name])
        .arg("--dir")
        .arg(&dir)
        .args(["--prefix", &prefix]);
    if name == "boot-timings" {
        let json = std::env::var_os("UNDERLAY_VM_TIMINGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/vm-tests/timings.json")
            });
        if let Some(d) = json.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        cmd.arg("--timings-json").arg(&json);
    }
    let out = cmd.output().expect("run underlay-lab");
    let text = format!(
        "$ underlay-lab vm test --only {name} --dir {} --prefix {prefix}\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "scenario {name} failed:\n{text}");
    let _ = std::fs::remove_dir_all(dir.join(name));
    // The last scenario to finish removes the (then empty) run directory.
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn first_boot() {
    scenario("first-boot", 'a');
}

#[test]
fn reboot() {
    scenario("reboot", 'b');
}

#[test]
fn uplink_failure() {
    scenario("uplink-failure", 'c');
}

#[test]
fn readiness_order() {
    scenario("readiness-order", 'd');
}

#[test]
fn ipip_mark_leak() {
    scenario("ipip-mark-leak", 'e');
}

#[test]
fn scratch_root() {
    scenario("scratch-root", 'f');
}

#[test]
fn boot_timings() {
    scenario("boot-timings", 'g');
}

#[test]
fn pxe_boot() {
    scenario("pxe-boot", 'h');
}

#[test]
fn watch() {
    scenario("watch", 'j');
}

#[test]
fn boot_join() {
    scenario("boot-join", 'i');
}
