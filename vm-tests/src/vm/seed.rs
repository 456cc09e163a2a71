//! The NoCloud seed of a VM: a vfat disk labelled `cidata` (mkfs.vfat +
//! mcopy, no loop mounts) with meta-data and user-data. The user-data writes
//! the host facts and the role profile to /etc/underlay/ with cloud-init's
//! `write_files`, which runs in cloud-init.service, before underlay.service.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;

/// One file for cloud-init's write_files.
pub struct SeedFile<'a> {
    pub path: &'a str,
    pub mode: &'a str,
    pub content: &'a str,
}

/// `#cloud-config` user-data with `write_files` (content as YAML block scalars).
pub fn user_data(files: &[SeedFile]) -> String {
    let mut s = String::from("#cloud-config\n# written by underlay-lab vm\nwrite_files:\n");
    for f in files {
        let _ = writeln!(
            s,
            "  - path: {}\n    permissions: '{}'\n    owner: root:root\n    content: |",
            f.path, f.mode
        );
        for line in f.content.lines() {
            if line.is_empty() {
                s.push('\n');
            } else {
                let _ = writeln!(s, "      {line}");
            }
        }
    }
    s
}

pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// Writes `seed.img` (2 MiB vfat, label cidata) with the two files.
pub fn write(dir: &Path, meta_data: &str, user_data: &str) -> Result<std::path::PathBuf> {
    let img = dir.join("seed.img");
    let _ = std::fs::remove_file(&img);
    let md = dir.join("meta-data");
    let ud = dir.join("user-data");
    std::fs::write(&md, meta_data)?;
    std::fs::write(&ud, user_data)?;
    cmd::run(
        "mkfs.vfat",
        &["-n", "cidata", "-C", &img.to_string_lossy(), "2048"],
    )
    .context("mkfs.vfat (package dosfstools)")?;
    cmd::run(
        "mcopy",
        &[
            "-i",
            &img.to_string_lossy(),
            &md.to_string_lossy(),
            &ud.to_string_lossy(),
            "::",
        ],
    )
    .context("mcopy (package mtools)")?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_indents_every_line_as_a_block_scalar() {
        let u = user_data(&[SeedFile {
            path: "/etc/underlay/host.toml",
            mode: "0644",
            content: "version = 1\n\n[[uplinks]]\nname = \"tor-a\"\n",
        }]);
        assert!(u.starts_with("#cloud-config\n"));
        assert!(u.contains("  - path: /etc/underlay/host.toml\n"));
        assert!(u.contains("      version = 1\n\n      [[uplinks]]\n      name = \"tor-a\"\n"));
    }
}
