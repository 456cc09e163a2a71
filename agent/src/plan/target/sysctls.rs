//! Sysctls: the global keys, then the per-uplink keys with `{uplink}` made
//! the NIC's name; a later entry for the same key wins.

use std::collections::BTreeSet;

use super::{ResolveError, Target};
use crate::desired::{Desired, SysctlKey};

pub(super) fn resolve(d: &Desired, t: &mut Target) -> Result<(), ResolveError> {
    let mut sysctls: Vec<(SysctlKey, String)> = d.sysctl_global.clone();
    for (u, link) in d.uplinks.iter().zip(t.uplinks()) {
        for (template, value) in &d.sysctl_uplink {
            // A NIC matched by MAC is named only now: its name must not lead
            // the key out of the uplink's directory.
            let key =
                template
                    .for_ifname(&link.ifname)
                    .map_err(|message| ResolveError::BadSysctl {
                        uplink: u.name.clone(),
                        message,
                    })?;
            sysctls.push((key, value.clone()));
        }
    }
    // A later entry for the same key wins (uplink keys over global ones).
    let mut seen = BTreeSet::new();
    sysctls.reverse();
    sysctls.retain(|(k, _)| seen.insert(k.clone()));
    sysctls.sort();
    t.sysctls = sysctls;
    Ok(())
}
