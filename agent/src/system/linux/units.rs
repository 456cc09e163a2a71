//! systemd units over D-Bus (zbus + zbus_systemd): read a unit's state, start
//! it and wait for its job's result. Used for the host BIRD on a systemd host
//! run on its real root; never inside `--netns` runs (the caller supervises
//! BIRD there) nor under a scratch `--root` (the machine's units read the
//! machine's /etc, not the root's).

use futures_util::StreamExt;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::observed::ObservedUnit;
use crate::system::SystemError;

fn dbus(what: &str) -> impl Fn(zbus::Error) -> SystemError + '_ {
    move |e| SystemError::Other(format!("systemd over D-Bus: {what}: {e}"))
}

/// Whether systemd supervises this machine (the sd_booted() test).
pub fn systemd_booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

async fn manager() -> Result<(zbus::Connection, ManagerProxy<'static>), SystemError> {
    let conn = zbus::Connection::system()
        .await
        .map_err(dbus("connecting to the system bus"))?;
    let manager = ManagerProxy::new(&conn)
        .await
        .map_err(dbus("systemd1 manager"))?;
    Ok((conn, manager))
}

async fn unit_proxy<'a>(
    conn: &zbus::Connection,
    path: zbus::OwnedObjectPath,
) -> Result<UnitProxy<'a>, SystemError> {
    UnitProxy::new(conn, path).await.map_err(dbus("unit proxy"))
}

/// The unit's state, a job already queued for it, and whether it is ordered
/// after the unit this process runs in while that unit is still starting (a
/// start job queued now would wait for this very process).
pub async fn observe(unit: &str) -> Result<ObservedUnit, SystemError> {
    let (conn, manager) = manager().await?;
    let path = manager
        .load_unit(unit.to_string())
        .await
        .map_err(dbus("LoadUnit"))?;
    let u = unit_proxy(&conn, path).await?;
    let active_state = u.active_state().await.map_err(dbus("ActiveState"))?;
    let (job, _) = u.job().await.map_err(dbus("Job"))?;
    let ordered_after_caller = ordered_after_caller(&conn, &manager, &u).await?;
    Ok(ObservedUnit {
        active_state,
        queued_job: (job != 0).then_some(job),
        ordered_after_caller,
    })
}

/// The unit this process runs in, when it is still starting and `u` is
/// ordered after it: a start job for `u` waits for this very process.
async fn ordered_after_caller(
    conn: &zbus::Connection,
    manager: &ManagerProxy<'_>,
    u: &UnitProxy<'_>,
) -> Result<Option<String>, SystemError> {
    // A process outside any service (a login session's scope) gets its
    // scope here, which is never "activating".
    let Ok(own) = manager.get_unit_by_pid(std::process::id()).await else {
        return Ok(None);
    };
    let own = unit_proxy(conn, own).await?;
    let own_id = own.id().await.map_err(dbus("Id"))?;
    let own_state = own.active_state().await.map_err(dbus("ActiveState"))?;
    let after = u.after().await.map_err(dbus("After"))?;
    Ok((own_state == "activating" && after.contains(&own_id)).then_some(own_id))
}

/// How to start a unit that should run, from its state and whether it is
/// ordered after the (still starting) unit this process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAction {
    /// Active already (or on its way).
    Nothing,
    /// Start it and wait for the job's result.
    StartAndWait,
    /// Queue the start job and return: waiting for it here would wait for
    /// ourselves (the job runs when the caller's unit has started).
    Queue { behind: String },
}

pub fn start_action(active_state: &str, ordered_after_caller: Option<&str>) -> StartAction {
    if matches!(active_state, "active" | "activating" | "reloading") {
        return StartAction::Nothing;
    }
    match ordered_after_caller {
        Some(own) => StartAction::Queue {
            behind: own.to_string(),
        },
        None => StartAction::StartAndWait,
    }
}

/// Starts `unit`; with `wait`, until systemd reports its job's result.
pub async fn start(unit: &str, wait: bool) -> Result<(), SystemError> {
    let (_conn, manager) = manager().await?;
    if !wait {
        manager
            .start_unit(unit.to_string(), "replace".to_string())
            .await
            .map_err(dbus("StartUnit"))?;
        return Ok(());
    }
    // Subscribe before starting so the JobRemoved signal cannot be missed.
    manager.subscribe().await.map_err(dbus("subscribing"))?;
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(dbus("JobRemoved"))?;
    let job = manager
        .start_unit(unit.to_string(), "replace".to_string())
        .await
        .map_err(dbus("StartUnit"))?;
    while let Some(signal) = removed.next().await {
        let args = signal.args().map_err(dbus("JobRemoved arguments"))?;
        if args.job == job {
            return match args.result.as_str() {
                "done" => Ok(()),
                other => Err(SystemError::Other(format!(
                    "starting {unit}: systemd job result '{other}' (see journalctl -u {unit})"
                ))),
            };
        }
    }
    Err(SystemError::Other(format!(
        "starting {unit}: the system bus closed before the job finished"
    )))
}

/// What [`enable_and_start`] did.
pub struct Ensured {
    pub enabled_now: bool,
    pub started_now: bool,
    pub active_state: String,
    /// The start was queued, not awaited: the unit is ordered after this
    /// one (the boot's underlay-join.service is Before=kubelet.service).
    pub queued_behind: Option<String>,
}

/// Enables `unit` (when its unit file is not enabled yet) and starts it when
/// it is not active: for the kubelet after a join, which kubeadm restarts but
/// does not enable. From inside a unit the target is ordered after (the
/// boot's join unit, `Before=kubelet.service`) the start job is queued and
/// left to systemd: awaiting it would deadlock until our unit's timeout.
pub async fn enable_and_start(unit: &str) -> Result<Ensured, SystemError> {
    let conn = zbus::Connection::system()
        .await
        .map_err(dbus("connecting to the system bus"))?;
    let manager = ManagerProxy::new(&conn)
        .await
        .map_err(dbus("systemd1 manager"))?;
    let file_state = manager
        .get_unit_file_state(unit.to_string())
        .await
        .map_err(dbus("GetUnitFileState"))?;
    let enabled_now = if matches!(
        file_state.as_str(),
        "enabled" | "enabled-runtime" | "static" | "alias"
    ) {
        false
    } else {
        manager
            .enable_unit_files(vec![unit.to_string()], false, false)
            .await
            .map_err(dbus("EnableUnitFiles"))?;
        manager.reload().await.map_err(dbus("Reload"))?;
        true
    };
    let path = manager
        .load_unit(unit.to_string())
        .await
        .map_err(dbus("LoadUnit"))?;
    let u = zbus_systemd::systemd1::UnitProxy::builder(&conn)
        .path(path)
        .build()
        .await
        .map_err(dbus("unit proxy"))?;
    let active_state = u.active_state().await.map_err(dbus("ActiveState"))?;
    let behind = ordered_after_caller(&conn, &manager, &u).await?;
    let (started_now, queued_behind) = match start_action(&active_state, behind.as_deref()) {
        StartAction::Nothing => (false, None),
        StartAction::StartAndWait => {
            start(unit, true).await?;
            (true, None)
        }
        StartAction::Queue { behind } => {
            start(unit, false).await?;
            (true, Some(behind))
        }
    };
    Ok(Ensured {
        enabled_now,
        started_now,
        active_state,
        queued_behind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_ordered_after_the_caller_is_queued_never_awaited() {
        // The boot's join unit starting the kubelet (Before=kubelet.service):
        // waiting for that job would wait for the join unit itself.
        assert_eq!(
            start_action("inactive", Some("underlay-join.service")),
            StartAction::Queue {
                behind: "underlay-join.service".into()
            }
        );
        assert_eq!(start_action("failed", None), StartAction::StartAndWait);
        for running in ["active", "activating", "reloading"] {
            assert_eq!(
                start_action(running, Some("underlay-join.service")),
                StartAction::Nothing
            );
        }
    }
}
