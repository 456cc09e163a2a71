//! Running the standard tools (`ip`, `bird`, `birdc`, `sysctl`). Errors carry
//! the command line and its stderr, which is what a person needs to debug.

use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

fn describe(prog: &str, args: &[&str]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

pub fn output(prog: &str, args: &[&str]) -> Result<Output> {
    Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{}` (is it installed?)", describe(prog, args)))
}

/// Runs a command; non-zero exit is an error naming the command and stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = output(prog, args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(prog, args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the command exits 0; output is discarded.
pub fn succeeds(prog: &str, args: &[&str]) -> bool {
    output(prog, args)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `ip -n NS ARGS...`
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// `ip -n NS -j ARGS...` parsed as JSON (empty output is an empty array).
pub fn ip_json(ns: &str, args: &[&str]) -> Result<serde_json::Value> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let text = ip(ns, &a)?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(vec![]));
    }
    serde_json::from_str(&text)
        .with_context(|| format!("ip -n {ns} -j {}: bad JSON", args.join(" ")))
}

/// `ip netns exec NS PROG ARGS...`
pub fn ns_exec(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["netns", "exec", ns, prog];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// Sets a sysctl inside a namespace (the lab's own namespaces only).
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    ns_exec(ns, "sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
}

pub fn read_sysctl(ns: &str, key: &str) -> Result<String> {
    Ok(ns_exec(ns, "sysctl", &["-n", key])?.trim().to_string())
}

pub fn netns_exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

pub fn link_exists(ns: &str, ifname: &str) -> bool {
    succeeds("ip", &["-n", ns, "link", "show", "dev", ifname])
}
