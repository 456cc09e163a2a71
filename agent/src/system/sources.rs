//! The real [`source::Host`]: files, HTTPS ([`super::https`]), sysfs DMI,
//! the hostname, NIC MACs over netlink (correct inside `--netns`, where
//! /sys/class/net still shows the mounting namespace's links), and cache
//! writes through [`files::write_atomic`].

use std::io::Read;
use std::path::{Path, PathBuf};

use super::files::{self, Durability};
use super::https::{self, FetchSettings, Fetcher};
use super::linux::LinuxSystem;
use super::System;
use crate::desired::MacAddr;
use crate::source::{self, DmiField, FetchError, SourceError};

pub struct LinuxSources {
    sysfs: PathBuf,
    root: PathBuf,
    settings: FetchSettings,
    ca: Option<(PathBuf, Vec<reqwest::Certificate>)>,
    fetcher: Option<Fetcher>,
}

impl LinuxSources {
    /// `sysfs`: usually /sys; tests point it at a directory they wrote.
    /// `root`: --root, for the netlink lookup's state path.
    pub fn new(sysfs: &Path, root: &Path, settings: FetchSettings) -> LinuxSources {
        LinuxSources {
            sysfs: sysfs.to_path_buf(),
            root: root.to_path_buf(),
            settings,
            ca: None,
            fetcher: None,
        }
    }

    /// Trust only the certificates of this PEM bundle for every fetch.
    pub fn use_ca(&mut self, path: &Path) -> Result<(), SourceError> {
        let certs = https::load_ca(path).map_err(|message| SourceError::Ca {
            path: path.to_path_buf(),
            message,
        })?;
        self.ca = Some((path.to_path_buf(), certs));
        self.fetcher = None;
        Ok(())
    }
}

impl source::Host for LinuxSources {
    fn read_file(&mut self, path: &Path, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        f.take(cap as u64 + 1).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    fn fetch(&mut self, url: &url::Url) -> Result<Vec<u8>, FetchError> {
        if self.fetcher.is_none() {
            let f = Fetcher::new(self.settings.clone(), self.ca.clone())
                .map_err(|e| FetchError::Unreachable(format!("starting the HTTPS client: {e}")))?;
            self.fetcher = Some(f);
        }
        self.fetcher.as_ref().expect("built above").get(url)
    }

    fn hostname(&mut self) -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
    }

    fn dmi(&mut self, field: DmiField) -> Option<String> {
        let p = self.sysfs.join("class/dmi/id").join(field.file());
        std::fs::read_to_string(p)
            .ok()
            .map(|v| v.trim().to_string())
    }

    fn nic_mac(&mut self, nic: &str) -> Result<MacAddr, String> {
        let mut sys = LinuxSystem::new(
            &self.root,
            Path::new(super::linux::DEFAULT_STATE_PATH),
            true,
        )
        .map_err(|e| e.to_string())?;
        let links = sys.links().map_err(|e| e.to_string())?;
        let link = links.iter().find(|l| l.name == nic).ok_or_else(|| {
            let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            format!("no NIC named {nic} (this host has: {})", names.join(", "))
        })?;
        link.perm_mac
            .or(link.mac)
            .ok_or_else(|| format!("NIC {nic} has no MAC address"))
    }

    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        files::write_atomic(
            path,
            bytes,
            &files::WriteSpec::new(0o600, Durability::Durable),
        )
        .map_err(|e| e.to_string())
    }
}
