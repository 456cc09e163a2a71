//! [`Lab`]: the namespaces, cables, daemons and scratch directory of one test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::cmd::{must, require_root, require_tools, run};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// What one test built: named network namespaces, background processes
/// inside them, and a scratch directory. Dropping it kills the processes (by
/// the pids it started), deletes the namespaces and removes the directory,
/// also when the test panics.
pub struct Lab {
    id: String,
    namespaces: Vec<String>,
    daemons: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// An empty lab; fails the test unless it runs as root with iproute2.
    #[allow(clippy::new_without_default)] // it needs root: not a value to default to
    pub fn new() -> Lab {
        require_root();
        require_tools(&["ip"]);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Lab {
            id: format!("{}-{n}", std::process::id()),
            namespaces: Vec::new(),
            daemons: Vec::new(),
            dir: tempfile::tempdir().expect("a scratch directory"),
        }
    }

    /// `<pid>-<n>`: unique to this lab among all running tests.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Creates the namespace `<prefix>-<pid>-<n>` and returns its name. It is
    /// bare (even `lo` is down): each fixture sets up what its test expects.
    pub fn netns(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", self.id);
        // Only a killed earlier process with our pid can have left this name.
        if Path::new("/run/netns").join(&name).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
        must("ip", &["netns", "add", &name]);
        self.namespaces.push(name.clone());
        name
    }

    /// The scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `rel` below the scratch directory (a leading `/` is
    /// ignored: `/etc/x` lands in `<dir>/etc/x`), creating its parents.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().expect("a file below the directory")).unwrap();
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }

    /// Lets other users into the scratch directory (mode 0755): a daemon
    /// running as its own user (BIRD as `bird`) reads files below it.
    pub fn open_dir(&self) {
        std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `ip -n NS ARGS`, which must succeed; its stdout.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// `ip -j -n NS ARGS` parsed; `[]` when ip prints nothing.
    pub fn ip_json(&self, ns: &str, args: &[&str]) -> Value {
        let mut full = vec!["-j", "-n", ns];
        full.extend_from_slice(args);
        let s = must("ip", &full);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip {args:?}: {e}: {s}"))
    }

    /// `ip netns exec NS sh -ec SCRIPT`, which must succeed; its stdout.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        must("ip", &["netns", "exec", ns, "sh", "-ec", script])
    }

    /// `ip netns exec NS sh -c SCRIPT`: (success, stdout, stderr).
    pub fn try_sh(&self, ns: &str, script: &str) -> (bool, String, String) {
        let out = run("ip", &["netns", "exec", ns, "sh", "-c", script]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Sets sysctls (`key=value`) inside `ns`.
    pub fn sysctl_set(&self, ns: &str, settings: &[&str]) {
        let mut args = vec!["netns", "exec", ns, "sysctl", "-qw"];
        args.extend_from_slice(settings);
        must("ip", &args);
    }

    /// A sysctl's value inside `ns` (read from /proc/sys, as the kernel has it).
    pub fn sysctl(&self, ns: &str, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        must("ip", &["netns", "exec", ns, "cat", &path])
            .trim()
            .to_string()
    }

    /// A veth pair: `a` created inside `a_ns`, its peer `b` moved straight
    /// into `b_ns` (neither end is ever in the machine's own namespace).
    /// Both ends stay down: [`Lab::link_up`] what the test needs up.
    pub fn veth(&self, a_ns: &str, a: &str, b_ns: &str, b: &str) {
        self.ip(
            a_ns,
            &[
                "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
            ],
        );
    }

    pub fn link_up(&self, ns: &str, dev: &str) {
        self.ip(ns, &["link", "set", dev, "up"]);
    }

    /// Starts `argv` inside `ns` in the background, its stdout and stderr in
    /// `<dir>/<name>.log`; stopped (by its own pid) on drop or [`Lab::kill`].
    pub fn spawn(&mut self, name: &str, ns: &str, argv: &[&str]) -> u32 {
        assert!(
            self.daemons.iter().all(|(n, _)| n != name),
            "two background processes named {name}"
        );
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {argv:?} in {ns}: {e}"));
        let pid = child.id();
        self.daemons.push((name.to_string(), child));
        pid
    }

    /// `Some(status)` once the background process `name` has exited.
    pub fn exited(&mut self, name: &str) -> Option<ExitStatus> {
        let (_, child) = self
            .daemons
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no background process {name}"));
        child.try_wait().ok().flatten()
    }

    /// Stops the background process `name` (SIGKILL to its pid) and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.daemons.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the background process `name` printed so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }
}

/// Moves the calling thread into the named namespace (setns); the rest of the
/// process stays where it is. For threads the test spawns for that purpose.
pub fn enter(ns: &str) {
    let path = Path::new("/run/netns").join(ns);
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
}

/// Runs `f` on a new thread inside the named namespace and returns its
/// result; a panic in `f` is the caller's panic.
pub fn on_thread<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}
