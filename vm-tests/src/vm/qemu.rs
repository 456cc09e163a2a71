//! QEMU: the accelerator probe, tap devices inside the ToR namespaces, one
//! VM process (overlay disk, seed disk, two NICs, the control channel, the
//! serial console with a log, QMP), and stopping it.
//!
//! Wiring: each uplink of a VM is a tap device created *inside its ToR's
//! namespace* (the ToR-side interface is the tap itself, named like the
//! namespace lab's veth, `h<i>`). The harness opens `/dev/net/tun` from a
//! thread that entered that namespace, and hands the descriptors to QEMU
//! (`-netdev tap,fd=N`). QEMU itself runs in the root namespace without any
//! network of its own; nothing is created in the root namespace, and the taps
//! disappear with the QEMU process that holds them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::ctl::Ctl;
use super::image::Image;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Opens (creating) tap `name` inside network namespace `netns`.
pub fn open_tap(netns: &str, name: &str) -> Result<OwnedFd> {
    if name.len() >= 16 {
        bail!("tap name {name:?} is longer than 15 characters");
    }
    let (netns, name) = (netns.to_string(), name.to_string());
    std::thread::spawn(move || -> Result<OwnedFd> {
        let ns = File::open(format!("/run/netns/{netns}"))
            .with_context(|| format!("network namespace {netns}"))?;
        // SAFETY: setns on a descriptor we own; it changes this thread only,
        // which ends right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {netns}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: plain open(2); the descriptor is owned right below.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!("open /dev/net/tun: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // struct ifreq: 16 bytes of name, then the flags (a short).
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which fits in 40 bytes.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) } != 0 {
            bail!(
                "TUNSETIFF {name} in {netns}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(fd)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("tap thread panicked"))?
}

/// Which accelerator guests get here, and how that was decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accel {
    /// `kvm` or `tcg`.
    pub name: String,
    pub reason: String,
}

impl Accel {
    pub fn qemu_arg(&self) -> String {
        if self.name == "kvm" {
            "kvm".into()
        } else {
            // QEMU's default translation cache costs 1.1-1.4 GiB per guest.
            "tcg,tb-size=256".into()
        }
    }
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn qemu_version() -> String {
    crate::cmd::run("qemu-system-x86_64", &["--version"])
        .ok()
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_default()
}

#[derive(Serialize, Deserialize)]
struct ProbeRecord {
    host_kernel: String,
    qemu: String,
    kernel: PathBuf,
    accel: Accel,
}

/// KVM only when `/dev/kvm` opens *and* a probe guest boots: on some machines
/// KVM opens but guests hang. The probe boots the image's kernel without a
/// root file system; a working accelerator reaches the kernel's
/// "VFS: Unable to mount root fs" panic in a second or two and QEMU exits
/// (-no-reboot). The result is kept in the cache per host kernel and QEMU
/// version. `UNDERLAY_VM_ACCEL=kvm|tcg` overrides.
pub fn choose_accel(cache: &Path, img: &Image) -> Result<Accel> {
    if let Ok(a) = std::env::var("UNDERLAY_VM_ACCEL") {
        if a != "kvm" && a != "tcg" {
            bail!("UNDERLAY_VM_ACCEL={a}: use kvm or tcg");
        }
        return Ok(Accel {
            name: a,
            reason: "UNDERLAY_VM_ACCEL".into(),
        });
    }
    let record = cache.join("accel-probe.json");
    if let Ok(text) = std::fs::read_to_string(&record) {
        if let Ok(r) = serde_json::from_str::<ProbeRecord>(&text) {
            if r.host_kernel == host_kernel() && r.qemu == qemu_version() {
                let mut a = r.accel;
                a.reason = format!("{} (probe result cached in {})", a.reason, record.display());
                return Ok(a);
            }
        }
    }
    let accel = probe_kvm(cache, img)?;
    let r = ProbeRecord {
        host_kernel: host_kernel(),
        qemu: qemu_version(),
        kernel: img.kernel.clone(),
        accel: accel.clone(),
    };
    let _ = std::fs::write(&record, serde_json::to_string_pretty(&r)?);
    Ok(accel)
}

fn probe_kvm(cache: &Path, img: &Image) -> Result<Accel> {
    if let Err(e) = File::options().read(true).write(true).open("/dev/kvm") {
        return Ok(Accel {
            name: "tcg".into(),
            reason: format!("/dev/kvm does not open ({e})"),
        });
    }
    let log = cache.join("accel-probe.serial.log");
    let _ = std::fs::remove_file(&log);
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "256",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-no-reboot", "-kernel"])
        .arg(&img.kernel)
        .args([
            "-append",
            "console=ttyS0 panic=-1 root=/dev/underlay-probe-no-such-disk",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("qemu-system-x86_64 (package qemu-system-x86)")?;
    let limit = Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            let serial = std::fs::read_to_string(&log).unwrap_or_default();
            let secs = t0.elapsed().as_secs_f64();
            if serial.contains("Kernel panic") || serial.contains("Unable to mount root") {
                return Ok(Accel {
                    name: "kvm".into(),
                    reason: format!(
                        "a KVM probe guest booted to its expected panic in {secs:.1} s"
                    ),
                });
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Ok(Accel {
                name: "tcg".into(),
                reason: format!(
                    "the KVM probe guest exited ({status}) without booting: {}",
                    err.trim()
                ),
            });
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let serial = std::fs::read_to_string(&log).unwrap_or_default();
            return Ok(Accel {
                name: "tcg".into(),
                reason: format!(
                    "/dev/kvm opens but a KVM probe guest made no progress in {} s ({} bytes of console output)",
                    limit.as_secs(),
                    serial.len()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One NIC of a VM: its tap (in a ToR namespace) and the MAC the guest sees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nic {
    pub netns: String,
    pub tap: String,
    pub mac: String,
}

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub dir: PathBuf,
    pub nics: Vec<Nic>,
    pub seed: PathBuf,
    /// Added to the kernel command line (systemd.mask=, systemd.wants=).
    pub cmdline_extra: Vec<String>,
    pub mem_mb: u32,
}

/// A running VM (its QEMU process) and the files it uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub dir: PathBuf,
    pub pid: u32,
    pub nics: Vec<Nic>,
    pub accel: Accel,
    /// Unix time (s, fractional) just before QEMU was started.
    pub started_unix: f64,
}

impl VmRecord {
    pub fn ctl_sock(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn qmp_sock(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn ctl(&self) -> Ctl {
        Ctl::new(&self.ctl_sock())
    }

    /// Is our QEMU (by pid, with our pidfile-less check: its command line
    /// names this VM's directory) still running?
    pub fn alive(&self) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // A zombie (exited, not yet reaped) is not running.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        !zombie && cmdline.contains(&*self.dir.to_string_lossy())
    }

    /// The last `n` lines of the serial console log.
    pub fn serial_tail(&self, n: usize) -> String {
        let text = std::fs::read(self.serial_log()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| l.replace('\r', ""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops QEMU: quit over QMP, then SIGTERM, then SIGKILL.
    pub fn stop(&self) {
        if !self.alive() {
            return;
        }
        let _ = qmp(&self.qmp_sock(), "quit", None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            if !self.alive() {
                break;
            }
            // SAFETY: kill(2) on the pid alive() just matched to this VM.
            unsafe { libc::kill(self.pid as i32, sig) };
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        reap(self.pid);
    }
}

/// Collects our child's exit status if it is ours to collect.
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid; harmless if it is not our child.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
}

pub fn kernel_cmdline(extra: &[String]) -> String {
    let mut v = vec![
        "console=ttyS0,115200n8".to_string(),
        "root=/dev/vda".into(),
        "rw".into(),
        // Kernel warnings and errors on the console, not every driver line.
        "loglevel=4".into(),
        // The unit starts and failures on the console (and so in serial.log).
        "systemd.show_status=1".into(),
        "panic=0".into(),
    ];
    v.extend(extra.iter().cloned());
    v.join(" ")
}

/// Starts QEMU for `spec` (overlay and seed already in place). The taps are
/// opened here, in their namespaces, and passed as descriptors 3, 4, ...
pub fn start(img: &Image, accel: &Accel, spec: &VmSpec) -> Result<VmRecord> {
    let mut taps = vec![];
    for n in &spec.nics {
        taps.push(open_tap(&n.netns, &n.tap)?);
    }
    for f in ["ctl.sock", "console.sock", "qmp.sock"] {
        let _ = std::fs::remove_file(spec.dir.join(f));
    }
    let _ = std::fs::remove_file(spec.dir.join("serial.log"));
    let d = |f: &str| spec.dir.join(f).to_string_lossy().into_owned();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-name", &spec.name, "-nodefaults", "-no-user-config"])
        .args(["-machine", "q35", "-accel", &accel.qemu_arg()])
        .args(["-cpu", if accel.name == "kvm" { "host" } else { "max" }])
        .args([
            "-smp",
            "1",
            "-m",
            &spec.mem_mb.to_string(),
            "-display",
            "none",
        ])
        .arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&img.initrd)
        .args(["-append", &kernel_cmdline(&spec.cmdline_extra)])
        .args([
            "-drive",
            &format!(
                "file={},format=qcow2,if=virtio,cache=unsafe,discard=unmap",
                d("disk.qcow2")
            ),
        ])
        .args([
            "-drive",
            &format!(
                "file={},format=raw,if=virtio,readonly=on",
                spec.seed.display()
            ),
        ])
        .args(["-device", "virtio-rng-pci"])
        .args(["-device", "virtio-serial-pci"])
        .args([
            "-chardev",
            &format!("socket,id=ctl,path={},server=on,wait=off", d("ctl.sock")),
        ])
        .args([
            "-device",
            "virtserialport,chardev=ctl,name=org.underlay.ctl",
        ])
        .args([
            "-chardev",
            &format!(
                "socket,id=con,path={},server=on,wait=off,logfile={},logappend=on",
                d("console.sock"),
                d("serial.log")
            ),
        ])
        .args(["-serial", "chardev:con"])
        .args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", d("qmp.sock")),
        ]);
    for (i, n) in spec.nics.iter().enumerate() {
        c.args(["-netdev", &format!("tap,id=up{i},fd={}", 3 + i)]);
        c.args([
            "-device",
            &format!("virtio-net-pci,netdev=up{i},mac={},romfile=", n.mac),
        ]);
    }
    let log = File::create(spec.dir.join("qemu.log"))?;
    c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let raw: Vec<i32> = taps.iter().map(|t| t.as_raw_fd()).collect();
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (the VM outlives a `--keep` command), dup (to descriptors above any
    // target) and dup2 (which clears close-on-exec on the targets).
    unsafe {
        c.pre_exec(move || {
            libc::setsid();
            let mut high = vec![];
            for fd in &raw {
                let h = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*h);
            }
            Ok(())
        });
    }
    let started_unix = unix_now();
    let child = c
        .spawn()
        .context("qemu-system-x86_64 (package qemu-system-x86)")?;
    let rec = VmRecord {
        name: spec.name.clone(),
        dir: spec.dir.clone(),
        pid: child.id(),
        nics: spec.nics.clone(),
        accel: accel.clone(),
        started_unix,
    };
    // The child is reaped in stop(); its handle is not needed. QEMU holds the
    // taps now: they vanish with it.
    std::mem::forget(child);
    drop(taps);
    // QEMU creates its sockets once it is up; an early exit is an error.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(rec.ctl_sock().exists() && rec.qmp_sock().exists()) {
        if !rec.alive() {
            reap(rec.pid);
            bail!(
                "{}: QEMU exited at start: {}",
                spec.name,
                std::fs::read_to_string(spec.dir.join("qemu.log"))
                    .unwrap_or_default()
                    .trim()
            );
        }
        if Instant::now() > deadline {
            rec.stop();
            bail!("{}: QEMU made no sockets in 15 s", spec.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(rec)
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One QMP command; returns its `return` value.
pub fn qmp(
    sock: &Path,
    command: &str,
    args: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let s = UnixStream::connect(sock).with_context(|| format!("QMP {}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?; // greeting
    writeln!(w, "{}", serde_json::json!({"execute": "qmp_capabilities"}))?;
    let mut cmd = serde_json::json!({"execute": command});
    if let Some(a) = args {
        cmd["arguments"] = a;
    }
    let mut sent_cmd = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            if command == "quit" {
                return Ok(serde_json::Value::Null);
            }
            bail!("QMP {command}: connection closed");
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())?;
        if v.get("event").is_some() {
            continue;
        }
        if let Some(e) = v.get("error") {
            bail!("QMP {command}: {e}");
        }
        if !sent_cmd {
            writeln!(w, "{cmd}")?;
            sent_cmd = true;
            continue;
        }
        return Ok(v.get("return").cloned().unwrap_or_default());
    }
}
