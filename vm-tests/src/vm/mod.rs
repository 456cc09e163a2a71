//! The QEMU tier: real first boots of a real Debian 12 image (the project's
//! .deb installed, Debian's own bird.service, cloud-init) against the
//! namespace lab's ToRs and client.
//!
//! ```text
//!            <prefix>client (192.168.99.1, static ECMP default)
//!             /                 \
//!   <prefix>tor-a (BIRD) --- <prefix>tor-b (BIRD)     the namespace lab's fabric
//!        | tap h1                  | tap h1             taps inside the ToR namespaces
//!   [ QEMU VM h1: enp0s* (MAC 52:54:00:10:01:00/01), underlay.service, bird.service ]
//!        control channel: virtio-serial org.underlay.ctl  ->  <dir>/h1/ctl.sock
//!        serial console (logged to <dir>/h1/serial.log)   ->  <dir>/h1/console.sock
//! ```
//!
//! Modules: `image` (mmdebstrap, cache, the .deb, overlays), `qemu` (the
//! accelerator probe, taps, the VM process, QMP), `ctl` (control channel),
//! `seed` (NoCloud), `fabric` (ToRs and client), `scenarios`, `timing`,
//! `watch` and `join` (the boot path's last two steps, one scenario each).

pub mod ctl;
pub mod fabric;
pub mod image;
pub mod join;
pub mod pxe;
pub mod qemu;
pub mod scenarios;
pub mod seed;
pub mod timing;
pub mod watch;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::plan::{Host, Lab};
use ctl::Ctl;
use image::Image;
use qemu::{Accel, VmRecord, VmSpec};

/// Options every `underlay-lab vm` verb shares.
#[derive(Args, Clone)]
pub struct VmArgs {
    /// Lab directory (VM disks, sockets, logs).
    #[arg(long, default_value = "/tmp/underlay-vm-lab")]
    pub dir: PathBuf,
    /// Prefix of the lab's namespaces (ToRs, client).
    #[arg(long, default_value = "ulvm-")]
    pub prefix: String,
    /// Image cache [default: UNDERLAY_VM_CACHE, $XDG_CACHE_HOME/underlay-vm-tests, /var/cache/underlay-vm-tests]
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The underlay .deb to install into the image [default: UNDERLAY_DEB, else the newest target/debian/underlay_*.deb]
    #[arg(long)]
    pub deb: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum VmCmd {
    /// Build (or find in the cache) the image with the .deb installed; print what it holds.
    Image {
        #[command(flatten)]
        args: VmArgs,
    },
    /// Boot VMs against the fabric, wait until they are converged and READY,
    /// print their status and boot timings; then shut everything down unless --keep.
    Up {
        #[command(flatten)]
        args: VmArgs,
        /// Number of VMs (1-2).
        #[arg(long, default_value_t = 1)]
        hosts: u8,
        /// Role profile written to the VMs by the seed.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Leave the VMs and the fabric running (`vm console`, `vm exec`, `vm down`).
        #[arg(long)]
        keep: bool,
    },
    /// The serial console of a running VM (root shell; Ctrl-] then q to leave).
    Console {
        #[command(flatten)]
        args: VmArgs,
        /// VM name (h1, h2, ...).
        vm: String,
    },
    /// Run a shell command in a running VM over the control channel.
    Exec {
        #[command(flatten)]
        args: VmArgs,
        vm: String,
        /// The command (one shell script).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Stop every VM and remove the fabric of a lab that is up.
    Down {
        #[command(flatten)]
        args: VmArgs,
    },
    /// Run scenarios (each boots its own VMs on its own fabric).
    Test {
        #[command(flatten)]
        args: VmArgs,
        /// Run only these scenarios (default: all).
        #[arg(long = "only")]
        only: Vec<String>,
        /// List the scenarios and exit.
        #[arg(long)]
        list: bool,
        /// Keep the VMs of a failed scenario running to poke at them.
        #[arg(long)]
        keep: bool,
        /// Write the boot timings here as JSON (boot-timings scenario).
        #[arg(long)]
        timings_json: Option<PathBuf>,
    },
}

pub fn main(cmd: VmCmd) -> Result<ExitCode> {
    match cmd {
        VmCmd::Image { args } => {
            let deb = image::find_deb(args.deb.as_deref())?;
            let cache = image::cache_dir(args.cache.as_deref());
            let t0 = Instant::now();
            let img = image::ensure(&cache, &deb)?;
            let accel = qemu::choose_accel(&cache, &img)?;
            println!("image     {}", img.dir.display());
            println!(
                "base key  {} (built now: {})",
                img.base_key,
                secs(img.base_build_s)
            );
            println!(
                "deb       {} (sha256 {})",
                img.deb.display(),
                &img.deb_sha256[..16]
            );
            println!("installed now: {}", secs(img.image_build_s));
            for v in &img.versions {
                println!("  {v}");
            }
            println!("accelerator: {} ({})", accel.name, accel.reason);
            println!("total {:.1} s", t0.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Up {
            args,
            hosts,
            profile,
            keep,
        } => {
            if !(1..=VM_SLOTS as u8).contains(&hosts) {
                bail!("--hosts {hosts}: 1 to {VM_SLOTS} VMs (at most {VM_SLOTS} run at once)");
            }
            let profile = profile.unwrap_or_else(crate::agent::default_profile);
            let profile_text = std::fs::read_to_string(&profile)
                .with_context(|| format!("read {}", profile.display()))?;
            let mut lab = VmLab::create(&args, hosts)?;
            let result = (|| -> Result<()> {
                let mut names = vec![];
                for h in lab.lab.hosts() {
                    lab.boot(&h, &Boot::converge(&profile_text))?;
                    names.push(h.name.clone());
                }
                let mut rows = vec![];
                for h in lab.lab.hosts() {
                    lab.wait_ready(&h.name, Duration::from_secs(600))?;
                    rows.push(timing::collect(lab.vm(&h.name)?, None)?);
                }
                print!("{}", scenarios::status_table(&lab)?);
                print!("{}", timing::table(&rows));
                Ok(())
            })();
            if let Err(e) = &result {
                eprintln!("underlay-lab vm up: {e:#}");
                lab.print_failure_report();
            }
            if keep {
                println!(
                    "kept running: underlay-lab vm console h1 | vm exec h1 -- CMD | vm down   (--dir {} --prefix {})",
                    args.dir.display(),
                    args.prefix
                );
            } else {
                lab.down()?;
            }
            Ok(if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        VmCmd::Console { args, vm } => {
            let lab = VmLab::load(&args.dir)?;
            let rec = lab.vm(&vm)?;
            eprintln!(
                "console of {vm} ({}); Ctrl-] then q to leave",
                rec.console_sock().display()
            );
            use std::io::IsTerminal;
            let local = if std::io::stdin().is_terminal() {
                "-,raw,echo=0,escape=0x1d"
            } else {
                "-"
            };
            let status = std::process::Command::new("socat")
                .arg(local)
                .arg(format!("UNIX-CONNECT:{}", rec.console_sock().display()))
                .status()
                .context("socat (package socat)")?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        VmCmd::Exec { args, vm, command } => {
            let lab = VmLab::load(&args.dir)?;
            let r = lab
                .vm(&vm)?
                .ctl()
                .run(&command.join(" "), Duration::from_secs(600))?;
            print!("{}", r.output);
            if !r.output.ends_with('\n') && !r.output.is_empty() {
                println!();
            }
            Ok(ExitCode::from(r.code.clamp(0, 255) as u8))
        }
        VmCmd::Down { args } => {
            let lab = VmLab::load(&args.dir)?;
            for line in lab.down()? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Test {
            args,
            only,
            list,
            keep,
            timings_json,
        } => {
            if list {
                for s in scenarios::SCENARIOS {
                    println!("{:<20} {}", s.name, s.what);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let opts = scenarios::Options { keep, timings_json };
            let failed = scenarios::run(&args, &only, &opts)?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1} s"))
        .unwrap_or_else(|| "no, cached".into())
}

/// How a VM is booted.
#[derive(Clone)]
pub struct Boot {
    /// The role profile the seed writes to /etc/underlay/profile.toml.
    pub profile: String,
    /// False: the same image with underlay's units masked (the baseline).
    pub agent: bool,
    /// Kernel command line additions (systemd.wants=kubelet-standin.service).
    pub cmdline: Vec<String>,
    /// Bring the ToR side of the VM's taps up at start (false: the scenario does).
    pub links_up: bool,
    /// Appended to the host facts (a `[join]` section).
    pub host_facts_extra: String,
    /// More files for the seed's write_files: (path, mode, content).
    pub files: Vec<(String, String, String)>,
}

impl Boot {
    pub fn converge(profile: &str) -> Boot {
        Boot {
            profile: profile.to_string(),
            agent: true,
            cmdline: vec![],
            links_up: true,
            host_facts_extra: String::new(),
            files: vec![],
        }
    }
}

/// At most this many VMs run at once on the machine (two cores, TCG).
pub const VM_SLOTS: usize = 2;

/// A slot held for as long as a VM runs (a flock'ed file in the cache, so two
/// test processes share the limit too).
struct Slot(#[allow(dead_code)] File);

/// `n` slots at once or none (a lab needing two never holds one while waiting
/// for the other, so two such labs cannot deadlock).
fn acquire_slots(cache: &Path, label: &str, n: usize) -> Result<Vec<Slot>> {
    if n > VM_SLOTS {
        bail!("{label}: {n} VMs, but at most {VM_SLOTS} run at once");
    }
    std::fs::create_dir_all(cache)?;
    let t0 = Instant::now();
    let mut said = false;
    loop {
        let mut got = vec![];
        for i in 0..VM_SLOTS {
            if got.len() == n {
                break;
            }
            let f = File::create(cache.join(format!("vm-slot-{i}.lock")))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                got.push(Slot(f));
            }
        }
        if got.len() == n {
            if said {
                eprintln!(
                    "{label}: got {n} VM slot(s) after {:.0} s",
                    t0.elapsed().as_secs_f64()
                );
            }
            return Ok(got);
        }
        drop(got);
        if !said {
            eprintln!("{label}: waiting for {n} of the {VM_SLOTS} VM slots");
            said = true;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("{label}: no {n} VM slots free within an hour");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A VM lab: the fabric, the image, the VMs. Saved as `<dir>/vmlab.json`.
#[derive(Serialize, Deserialize)]
pub struct VmLab {
    pub lab: Lab,
    pub cache: PathBuf,
    pub image: Image,
    pub accel: Accel,
    pub vms: Vec<VmRecord>,
    /// Held (not read) while the lab lives; dropping it frees the slots.
    #[serde(skip)]
    #[allow(dead_code)]
    slots: Vec<Slot>,
}

impl VmLab {
    fn state_file(dir: &Path) -> PathBuf {
        dir.join("vmlab.json")
    }

    pub fn load(dir: &Path) -> Result<VmLab> {
        let p = VmLab::state_file(dir);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{}: no VM lab here (underlay-lab vm up --keep)",
                p.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a VM lab record", p.display()))
    }

    fn save(&self) -> Result<()> {
        std::fs::write(
            VmLab::state_file(&self.lab.dir),
            serde_json::to_string_pretty(self)? + "\n",
        )
        .context("write vmlab.json")
    }

    /// The image (cached), the accelerator decision, the fabric.
    pub fn create(args: &VmArgs, hosts: u8) -> Result<VmLab> {
        preflight()?;
        let lab = Lab::new(&args.dir, &args.prefix, hosts)?;
        if let Ok(old) = VmLab::load(&args.dir) {
            if old.vms.iter().any(|v| v.alive()) {
                bail!(
                    "{} has running VMs; `underlay-lab vm down --dir {}` first",
                    args.dir.display(),
                    args.dir.display()
                );
            }
            let _ = fabric::down(&old.lab);
        }
        std::fs::create_dir_all(&args.dir)?;
        let deb = image::find_deb(args.deb.as_deref())?;
        let cache = image::cache_dir(args.cache.as_deref());
        let image = image::ensure(&cache, &deb)?;
        let accel = qemu::choose_accel(&cache, &image)?;
        println!("accelerator: {} ({})", accel.name, accel.reason);
        let slots = acquire_slots(&cache, &args.dir.display().to_string(), hosts.into())?;
        let vl = VmLab {
            lab,
            cache,
            image,
            accel,
            vms: vec![],
            slots,
        };
        vl.save()?;
        fabric::up(&vl.lab)?;
        Ok(vl)
    }

    pub fn vm(&self, name: &str) -> Result<&VmRecord> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .with_context(|| format!("no VM {name} in this lab"))
    }

    pub fn host(&self, name: &str) -> Result<Host> {
        self.lab
            .hosts()
            .into_iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name}"))
    }

    pub fn ctl(&self, name: &str) -> Result<Ctl> {
        Ok(self.vm(name)?.ctl())
    }

    /// Overlay, seed, QEMU, the ToR side of its taps.
    pub fn boot(&mut self, h: &Host, b: &Boot) -> Result<()> {
        let dir = self.lab.dir.join(&h.name);
        std::fs::create_dir_all(&dir)?;
        image::overlay(&self.image, &dir.join("disk.qcow2"))?;
        let facts = fabric::host_facts(h) + &b.host_facts_extra;
        let mut files = vec![
            seed::SeedFile {
                path: "/etc/underlay/host.toml",
                mode: "0644",
                content: &facts,
            },
            seed::SeedFile {
                path: "/etc/underlay/profile.toml",
                mode: "0644",
                content: &b.profile,
            },
        ];
        files.extend(b.files.iter().map(|(path, mode, content)| seed::SeedFile {
            path,
            mode,
            content,
        }));
        let user_data = seed::user_data(&files);
        let instance = format!("{}-{}", h.name, std::process::id());
        let seed = seed::write(&dir, &seed::meta_data(&instance, &h.name), &user_data)?;
        let mut cmdline = b.cmdline.clone();
        if !b.agent {
            cmdline.push("systemd.mask=underlay.service".into());
            cmdline.push("systemd.mask=underlay-gates.service".into());
        }
        let spec = VmSpec {
            name: h.name.clone(),
            dir,
            nics: fabric::nics(&self.lab, h),
            seed,
            cmdline_extra: cmdline,
            mem_mb: 1024,
        };
        let rec = qemu::start(&self.image, &self.accel, &spec)?;
        self.vms.retain(|v| v.name != h.name);
        self.vms.push(rec);
        self.save()?;
        fabric::attach(&self.lab, h)?;
        if !b.links_up {
            self.set_tor_links(h, false)?;
        }
        Ok(())
    }

    /// Sets the ToR side of a VM's taps up or down (the guest keeps carrier).
    pub fn set_tor_links(&self, h: &Host, up: bool) -> Result<()> {
        for u in &h.uplinks {
            crate::cmd::ip(
                &self.lab.tor_netns(u.tor),
                &[
                    "link",
                    "set",
                    "dev",
                    &u.tor_if,
                    if up { "up" } else { "down" },
                ],
            )?;
        }
        Ok(())
    }

    /// Waits for the control channel, then for systemd to finish starting
    /// (`systemctl is-system-running --wait`); returns the state it reports.
    pub fn wait_booted(&self, name: &str, timeout: Duration) -> Result<String> {
        let t0 = Instant::now();
        let vm = self.vm(name)?;
        let mut c = vm.ctl();
        c.wait_ready(timeout)
            .with_context(|| format!("{name}: booting"))?;
        let left = timeout
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(5));
        let r = c.run(
            &format!(
                "timeout {} systemctl is-system-running --wait",
                left.as_secs()
            ),
            left + Duration::from_secs(5),
        )?;
        Ok(r.output.trim().to_string())
    }

    /// Booted, and underlay-gates.service active (READY=1 was sent).
    pub fn wait_ready(&self, name: &str, timeout: Duration) -> Result<()> {
        let state = self.wait_booted(name, timeout)?;
        let mut c = self.ctl(name)?;
        let r = c.run(
            "systemctl show -p ActiveState --value underlay-gates.service",
            Duration::from_secs(30),
        )?;
        if r.output.trim() != "active" {
            let j = c
                .run(
                    "systemctl status --no-pager underlay.service underlay-gates.service bird.service 2>&1 | tail -40",
                    Duration::from_secs(30),
                )
                .map(|r| r.output)
                .unwrap_or_default();
            bail!(
                "{name}: booted ({state}) but underlay-gates.service is {}:\n{j}",
                r.output.trim()
            );
        }
        Ok(())
    }

    /// The serial log tail of every VM, and its journal's if it answers.
    pub fn print_failure_report(&self) {
        for v in &self.vms {
            eprintln!(
                "\n===== {}: last 60 lines of the serial console ({}) =====",
                v.name,
                v.serial_log().display()
            );
            eprintln!("{}", v.serial_tail(60));
            if v.alive() {
                if let Ok(r) = v.ctl().run(
                    "journalctl -b --no-pager -n 60 -u underlay.service -u underlay-gates.service -u bird.service -u cloud-init.service; systemctl --failed --no-pager",
                    Duration::from_secs(20),
                ) {
                    eprintln!("----- {}: journal (underlay, bird, cloud-init) -----\n{}", v.name, r.output);
                }
            }
        }
    }

    /// Stops every VM, the ToR BIRDs, removes the namespaces and disks.
    pub fn down(&self) -> Result<Vec<String>> {
        let mut out = vec![];
        for v in &self.vms {
            if v.alive() {
                v.stop();
                out.push(format!("stopped VM {} (pid {})", v.name, v.pid));
            }
            let disk = v.dir.join("disk.qcow2");
            if disk.exists() {
                let _ = std::fs::remove_file(&disk);
            }
        }
        out.extend(fabric::down(&self.lab)?);
        let _ = std::fs::remove_file(VmLab::state_file(&self.lab.dir));
        Ok(out)
    }
}

/// Fails loudly (never vacuously) when something the tier needs is missing.
pub fn preflight() -> Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        bail!("the VM tier needs root (namespaces, taps, chroot dpkg -i)");
    }
    let mut missing = vec![];
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("mmdebstrap", "mmdebstrap"),
        ("mke2fs", "e2fsprogs"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("systemd-analyze", "systemd"),
        ("bird", "bird2"),
        ("birdc", "bird2"),
        ("ip", "iproute2"),
    ] {
        let found = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            missing.push(format!("{tool} ({pkg})"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".into());
    }
    if !missing.is_empty() {
        bail!(
            "the VM tier needs {}: run vm-tests/setup.sh",
            missing.join(", ")
        );
    }
    Ok(())
}
