//! Running tools, and failing loudly when the machine cannot run a test.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `cmd args`; panics only when it cannot be started.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} {args:?}: {e}"))
}

/// Runs `cmd args`, panics with its stderr unless it succeeds; its stdout.
pub fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Root is required (network namespaces, nftables, BIRD): a test says so and
/// fails instead of passing vacuously.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (uid 0: network namespaces, nftables, BIRD); run the README's \
         test command as root (`sudo -E cargo test`), or only the unprivileged tests"
    );
}

/// Fails unless every tool is installed (a name is looked up in PATH, an
/// absolute path must exist). `vm-tests/setup.sh` installs them all.
pub fn require_tools(tools: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        let found = if tool.contains('/') {
            Path::new(tool).exists()
        } else {
            std::env::split_paths(&path).any(|d| d.join(tool).is_file())
        };
        assert!(
            found,
            "this test needs `{tool}` installed (vm-tests/setup.sh installs every tool the tests use)"
        );
    }
}
