//! `--netns NAME`: move this process into a named network namespace (the kind
//! `ip netns add NAME` makes) before any socket is opened or thread started.
//! Netlink sockets and /proc/sys/net then belong to that namespace.

use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};

use super::SystemError;

pub const NETNS_DIR: &str = "/run/netns";

pub fn enter(name: &str) -> Result<(), SystemError> {
    let err = |message: String| SystemError::Netns {
        name: name.to_string(),
        message,
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(err(
            "not a namespace name; expected a name as given to `ip netns add`".into(),
        ));
    }
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = std::fs::File::open(&path).map_err(|e| {
        err(format!(
            "cannot open {}: {e}; create it with `ip netns add {name}` or check the name with `ip netns list`",
            path.display()
        ))
    })?;
    setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        err(format!(
            "setns: {e} (underlay needs root, or CAP_SYS_ADMIN, for --netns)"
        ))
    })
}
