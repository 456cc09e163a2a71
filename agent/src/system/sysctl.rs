//! Live sysctls through /proc/sys (never the `sysctl` binary). Inside
//! `--netns`, /proc/sys/net shows the namespace this process entered.

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};

use super::SystemError;
use crate::desired::SysctlKey;

pub fn path(proc_sys: &Path, key: &SysctlKey) -> PathBuf {
    proc_sys.join(key.proc_path())
}

pub fn read(proc_sys: &Path, key: &SysctlKey) -> Result<Option<String>, SystemError> {
    let p = path(proc_sys, key);
    match std::fs::read_to_string(&p) {
        Ok(v) => Ok(Some(v.trim_end().to_string())),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(source) => Err(SystemError::Io {
            what: "reading sysctl",
            path: p,
            source,
        }),
    }
}

pub fn write(proc_sys: &Path, key: &SysctlKey, value: &str) -> Result<(), SystemError> {
    let p = path(proc_sys, key);
    std::fs::write(&p, format!("{value}\n")).map_err(|source| SystemError::Io {
        what: if source.kind() == IoKind::NotFound {
            "no such sysctl in this kernel or namespace (is the module loaded, or IPv6 disabled?):"
        } else {
            "writing sysctl"
        },
        path: p,
        source,
    })
}
