//! Timing one tool run: the children are started inside the namespace (the
//! way `ip netns exec` does it: setns, private mount namespace, fresh /sys),
//! and reaped with wait4 for their peak RSS. Every tool is started the same
//! way, so the start-up cost is the same for all of them.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// A network namespace made by the bench, deleted when dropped (also on error).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Netns> {
        if !name.starts_with(super::NS_PREFIX) {
            bail!(
                "refusing namespace {name}: bench namespaces start with {}",
                super::NS_PREFIX
            );
        }
        cmd::run("ip", &["netns", "add", &name])?;
        Ok(Netns { name })
    }

    /// `ip -n NAME -batch FILE`, untimed (setup and loads).
    pub fn batch(&self, file: &Path) -> Result<()> {
        cmd::ip(&self.name, &["-batch", &file.to_string_lossy()]).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::output("ip", &["netns", "del", &self.name]);
    }
}

/// One process of a tool run.
#[derive(Clone, Debug)]
pub struct Step {
    pub prog: PathBuf,
    pub args: Vec<String>,
    /// Exit codes that count as success.
    pub ok_codes: Vec<i32>,
}

impl Step {
    pub fn new(prog: impl Into<PathBuf>, args: &[&str]) -> Step {
        Step {
            prog: prog.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ok_codes: vec![0],
        }
    }
    pub fn ok_codes(mut self, codes: &[i32]) -> Step {
        self.ok_codes = codes.to_vec();
        self
    }
    fn describe(&self) -> String {
        format!("{} {}", self.prog.display(), self.args.join(" "))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub wall: Duration,
    pub maxrss_kb: u64,
}

/// Runs the steps one after the other inside `ns`; wall time is the sum
/// (fork to reap, each), peak RSS the largest. A step outside its `ok_codes`
/// is an error carrying its stderr.
pub fn run(ns: &Netns, steps: &[Step], scratch: &Path) -> Result<Sample> {
    let nsfile = File::open(Path::new("/run/netns").join(&ns.name))
        .with_context(|| format!("open namespace {}", ns.name))?;
    let mut total = Sample {
        wall: Duration::ZERO,
        maxrss_kb: 0,
    };
    for step in steps {
        let errpath = scratch.join("stderr");
        let err = File::create(&errpath)?;
        let (wall, code, rss) = spawn_timed(step, nsfile.as_raw_fd(), err)?;
        if !step.ok_codes.contains(&code) {
            let stderr = std::fs::read_to_string(&errpath).unwrap_or_default();
            bail!(
                "`{}` in {} exited {code}: {}",
                step.describe(),
                ns.name,
                stderr.lines().take(3).collect::<Vec<_>>().join(" / ")
            );
        }
        total.wall += wall;
        total.maxrss_kb = total.maxrss_kb.max(rss);
    }
    Ok(total)
}

fn spawn_timed(step: &Step, nsfd: i32, stderr: File) -> Result<(Duration, i32, u64)> {
    let root = CString::new("/").unwrap();
    let sys = CString::new("/sys").unwrap();
    let sysfs = CString::new("sysfs").unwrap();
    let mut c = Command::new(&step.prog);
    c.args(&step.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
    unsafe {
        c.pre_exec(move || {
            let e = std::io::Error::last_os_error;
            if libc::setns(nsfd, libc::CLONE_NEWNET) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(e());
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                return Err(e());
            }
            // As `ip netns exec`: /sys shows the namespace's interfaces.
            libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
            if libc::mount(
                sysfs.as_ptr(),
                sys.as_ptr(),
                sysfs.as_ptr(),
                0,
                std::ptr::null(),
            ) != 0
            {
                return Err(e());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = c
        .spawn()
        .with_context(|| format!("cannot start `{}`", step.describe()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4 `{}`: {err}", step.describe());
        }
    }
    let wall = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((wall, code, ru.ru_maxrss as u64))
}

/// This process's resident set (a forked child starts with a copy of it).
pub fn self_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
