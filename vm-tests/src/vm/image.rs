//! The VM image, in two cached layers:
//!
//! 1. **base**: Debian 12 from packages only: `mmdebstrap` into a directory
//!    (the machine's own apt sources, so CI and a laptop use the same
//!    mirror), with the test image's hooks (`vm/hooks/`: a lean initramfs,
//!    the control channel, the kubelet stand-in). Keyed by a hash of every
//!    input (packages, suite, sources, hooks, guest files), so it is rebuilt
//!    only when one changes.
//! 2. **image**: a copy of the base with the project's `.deb` installed by
//!    `dpkg -i` in a chroot, as an operator would, the units checked with
//!    `systemd-analyze verify` against the image's real Debian units, then
//!    `mke2fs -t ext4 -d DIR` (no loop mounts). Keyed by base + the .deb's
//!    sha256.
//!
//! Each VM boots a qcow2 overlay of the image with the image's own kernel and
//! initrd (`-kernel/-initrd`). Cache: `UNDERLAY_VM_CACHE`, else
//! `$XDG_CACHE_HOME/underlay-vm-tests`, else `/var/cache/underlay-vm-tests`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmd;

/// Debian packages of the base image (and what needs each).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    // zbus talks to systemd over the system bus.
    "dbus",
    // Debian's BIRD 2 with its stock bird.service (runs as user bird).
    "bird2",
    "nftables",
    "iptables",
    "iproute2",
    "conntrack",
    "cloud-init",
    "openssh-server",
    "linux-image-cloud-amd64",
    // Debian's `networking.service`: the boot order cloud-init-local ->
    // networking -> cloud-init.service is part of what the units are tested on.
    "ifupdown",
    "kmod",
    "procps",
    "iputils-ping",
];
pub const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
/// Bump when the way an image is assembled changes.
const FORMAT: &str = "underlay-vm-image-1";
/// Free space left in the guest's root file system.
const FREE_MB: u64 = 1024;

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn hooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/hooks")
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/guest")
}

pub fn cache_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("UNDERLAY_VM_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("underlay-vm-tests");
    }
    PathBuf::from("/var/cache/underlay-vm-tests")
}

/// The apt sources the image is built from: the machine's own (Debian's
/// deb822 file, else sources.list), or `UNDERLAY_VM_MIRROR` (a file or URL).
fn sources() -> Result<(String, String)> {
    if let Some(m) = std::env::var_os("UNDERLAY_VM_MIRROR") {
        let m = m.to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&m).unwrap_or_else(|_| m.clone());
        return Ok((m, content));
    }
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        if let Ok(text) = std::fs::read_to_string(f) {
            if text.lines().any(|l| {
                let l = l.trim();
                !l.is_empty() && !l.starts_with('#')
            }) {
                return Ok((f.to_string(), text));
            }
        }
    }
    bail!(
        "no apt sources for the image: neither /etc/apt/sources.list.d/debian.sources nor \
         /etc/apt/sources.list lists a mirror; set UNDERLAY_VM_MIRROR to a sources file or URL"
    )
}

fn hash_tree(h: &mut Sha256, dir: &Path) -> Result<()> {
    let mut files = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        h.update(
            f.strip_prefix(dir)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(std::fs::read(&f).with_context(|| format!("read {}", f.display()))?);
        h.update([0]);
    }
    Ok(())
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The base image's key: a hash of everything that goes into it.
pub fn base_key() -> Result<String> {
    let (_, sources) = sources()?;
    let mut h = Sha256::new();
    for part in [FORMAT, SUITE, VARIANT, &PACKAGES.join(","), &sources] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hash_tree(&mut h, &hooks_dir())?;
    hash_tree(&mut h, &guest_dir())?;
    // Installed by the customize hook as /usr/local/sbin/kubeadm-standin.
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("kubeadm-standin");
    h.update(std::fs::read(&standin).with_context(|| format!("read {}", standin.display()))?);
    Ok(hex(&h.finalize())[..16].to_string())
}

pub fn sha256_file(p: &Path) -> Result<String> {
    let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
    Ok(hex(&Sha256::digest(&data)))
}

/// An exclusive lock on a file in the cache (two runs never build at once).
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(path: &Path) -> Result<Lock> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(Lock(f))
}

/// What a VM boots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub dir: PathBuf,
    /// Raw ext4 root file system (the overlays' backing file).
    pub rootfs: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub base_key: String,
    pub deb: PathBuf,
    pub deb_sha256: String,
    /// Seconds spent building the base now (None: it came from the cache).
    pub base_build_s: Option<f64>,
    /// Seconds spent installing the .deb and making the file system (None: cached).
    pub image_build_s: Option<f64>,
    /// `dpkg-query` versions of the packages that matter.
    pub versions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BaseMeta {
    key: String,
    built_s: f64,
    built_at: u64,
    mirror: String,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn run_logged(c: &mut Command, log: &Path, what: &str) -> Result<()> {
    let out = c
        .output()
        .with_context(|| format!("{what}: cannot run (installed?)"))?;
    let mut text = out.stdout.clone();
    text.extend_from_slice(&out.stderr);
    let _ = std::fs::write(log, &text);
    if !out.status.success() {
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        bail!(
            "{what} failed ({}); log {}; its last lines:\n{}",
            out.status,
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// The base directory, built when missing.
fn ensure_base(cache: &Path, key: &str) -> Result<(PathBuf, Option<f64>)> {
    let dir = cache.join(format!("base-{key}"));
    let root = dir.join("root");
    if dir.join("base.json").is_file() && root.join("boot").is_dir() {
        return Ok((root, None));
    }
    let (mirror, _) = sources()?;
    let tmp = cache.join(format!("base-{key}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let t0 = Instant::now();
    eprintln!(
        "vm image: building the base image {key} with mmdebstrap ({SUITE}, {VARIANT}, {} packages, sources {mirror}) ...",
        PACKAGES.len()
    );
    let mut c = Command::new("mmdebstrap");
    c.arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--hook-directory={}", hooks_dir().display()))
        // Man pages and translations: a smaller file system to copy and write.
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg(SUITE)
        .arg(tmp.join("root"))
        .arg(&mirror);
    run_logged(&mut c, &tmp.join("mmdebstrap.log"), "mmdebstrap")?;
    let built_s = t0.elapsed().as_secs_f64();
    let meta = BaseMeta {
        key: key.to_string(),
        built_s,
        built_at: now_unix(),
        mirror,
    };
    std::fs::write(tmp.join("base.json"), serde_json::to_string_pretty(&meta)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    eprintln!("vm image: base built in {built_s:.1} s");
    Ok((root, Some(built_s)))
}

fn boot_file(root: &Path, prefix: &str) -> Result<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    v.sort();
    v.pop()
        .with_context(|| format!("no {prefix}* in {}/boot", root.display()))
}

fn du_mb(dir: &Path) -> Result<u64> {
    let out = cmd::run("du", &["-sm", "--apparent-size", &dir.to_string_lossy()])?;
    out.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("du output")
}

/// Removes image directories of other .debs, and bases of other keys, not
/// used for an hour (a run in progress keeps its own fresh).
fn prune(cache: &Path, keep: &[&Path]) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if keep.contains(&p.as_path()) || !(name.starts_with("image-") || name.starts_with("base-"))
        {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// `systemd-analyze verify` of the package's units inside the image: against
/// Debian's real bird.service, cloud-init and networking units.
fn verify_units(root: &Path) -> Result<()> {
    let units = [
        "underlay.service",
        "underlay-gates.service",
        "underlay-reconcile.service",
        "underlay-reconcile.timer",
        "underlay-join.service",
        "underlay-watch.service",
    ];
    let mut args = vec![
        "verify".to_string(),
        format!("--root={}", root.display()),
        "--man=no".to_string(),
    ];
    args.extend(units.iter().map(|u| u.to_string()));
    let out = Command::new("systemd-analyze")
        .args(&args)
        .output()
        .context("systemd-analyze (package systemd)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.trim().is_empty() {
        bail!(
            "systemd-analyze verify of the packaged units in the image is not clean:\n{}",
            text.trim()
        );
    }
    Ok(())
}

/// The image for `deb`: from the cache, or built now (base first if needed).
pub fn ensure(cache: &Path, deb: &Path) -> Result<Image> {
    std::fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let _lock = lock(&cache.join("build.lock"))?;
    let key = base_key()?;
    let (base_root, base_build_s) = ensure_base(cache, &key)?;
    let _ = filetime_touch(base_root.parent().unwrap_or(&base_root));
    let deb_sha256 = sha256_file(deb)?;
    let dir = cache.join(format!("image-{key}-{}", &deb_sha256[..12]));
    let meta = dir.join("image.json");
    if meta.is_file() {
        let mut img: Image = serde_json::from_str(&std::fs::read_to_string(&meta)?)
            .with_context(|| format!("{}: bad image record", meta.display()))?;
        img.base_build_s = base_build_s;
        img.image_build_s = None;
        // In use: not to be pruned by another run.
        let _ = filetime_touch(&dir);
        return Ok(img);
    }
    let t0 = Instant::now();
    let tmp = cache.join(format!("image-{key}-{}.tmp", &deb_sha256[..12]));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let root = tmp.join("root");
    cmd::run(
        "cp",
        &[
            "-a",
            "--reflink=auto",
            &base_root.to_string_lossy(),
            &root.to_string_lossy(),
        ],
    )
    .context("copying the base image")?;
    // Installed the way an operator installs it: dpkg -i, in the image.
    let in_image = root.join("tmp/underlay.deb");
    std::fs::copy(deb, &in_image)
        .with_context(|| format!("copy {} into the image", deb.display()))?;
    let mut c = Command::new("chroot");
    c.arg(&root)
        .args(["dpkg", "-i", "/tmp/underlay.deb"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_logged(
        &mut c,
        &tmp.join("dpkg.log"),
        "dpkg -i underlay.deb in the image",
    )?;
    std::fs::remove_file(&in_image)?;
    verify_units(&root)?;
    let versions = cmd::run(
        "chroot",
        &[
            &root.to_string_lossy(),
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version}\\n",
            "underlay",
            "systemd",
            "bird2",
            "cloud-init",
            "linux-image-cloud-amd64",
            "nftables",
            "iptables",
        ],
    )
    .unwrap_or_default()
    .lines()
    .map(str::to_string)
    .collect();
    let kernel = tmp.join("vmlinuz");
    let initrd = tmp.join("initrd.img");
    std::fs::copy(boot_file(&root, "vmlinuz-")?, &kernel)?;
    std::fs::copy(boot_file(&root, "initrd.img-")?, &initrd)?;
    let size_mb = du_mb(&root)? + FREE_MB;
    let rootfs = tmp.join("rootfs.ext4");
    cmd::run(
        "truncate",
        &["-s", &format!("{size_mb}M"), &rootfs.to_string_lossy()],
    )?;
    let mut c = Command::new("mke2fs");
    c.args(["-q", "-F", "-t", "ext4", "-L", "underlay-root", "-d"])
        .arg(&root)
        .arg(&rootfs);
    run_logged(&mut c, &tmp.join("mke2fs.log"), "mke2fs -d")?;
    std::fs::remove_dir_all(&root)?;
    let image_build_s = t0.elapsed().as_secs_f64();
    let mut img = Image {
        dir: dir.clone(),
        rootfs: dir.join("rootfs.ext4"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        base_key: key,
        deb: deb.to_path_buf(),
        deb_sha256,
        base_build_s: None,
        image_build_s: Some(image_build_s),
        versions,
    };
    std::fs::write(tmp.join("image.json"), serde_json::to_string_pretty(&img)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    prune(cache, &[&dir, base_root.parent().unwrap_or(&base_root)]);
    img.base_build_s = base_build_s;
    eprintln!(
        "vm image: {} with {} installed, in {image_build_s:.1} s",
        dir.display(),
        deb.display()
    );
    Ok(img)
}

fn filetime_touch(p: &Path) -> Result<()> {
    cmd::run("touch", &[&p.to_string_lossy()]).map(|_| ())
}

/// A qcow2 overlay on the image's root file system: every VM writes only its own.
pub fn overlay(img: &Image, path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    cmd::run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            &img.rootfs.to_string_lossy(),
            &path.to_string_lossy(),
        ],
    )
    .context("qemu-img (package qemu-utils)")?;
    Ok(())
}

/// The project's .deb: `UNDERLAY_DEB`, else the newest target/debian/underlay_*.deb.
pub fn find_deb(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("UNDERLAY_DEB").map(PathBuf::from))
    {
        if !p.is_file() {
            bail!("{}: no such .deb", p.display());
        }
        return Ok(p);
    }
    let dir = repo_dir().join("target/debian");
    let mut debs: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("underlay_") && n.ends_with(".deb")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    debs.sort();
    match debs.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no underlay .deb in {} (build it: `cargo deb -p underlay`, which \
             vm-tests/run-tests.sh does; or set UNDERLAY_DEB)",
            dir.display()
        ),
    }
}
