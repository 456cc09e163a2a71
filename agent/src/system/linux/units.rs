//! systemd units over D-Bus (zbus + zbus_systemd): start a unit and wait for
//! its job's result. Used to start the host BIRD on a systemd host when it is
//! not running; never inside `--netns` runs, where the caller supervises BIRD.

use futures_util::StreamExt;
use zbus_systemd::systemd1::ManagerProxy;

use crate::system::SystemError;

fn dbus(what: &str) -> impl Fn(zbus::Error) -> SystemError + '_ {
    move |e| SystemError::Other(format!("systemd over D-Bus: {what}: {e}"))
}

/// Whether systemd supervises this machine (the sd_booted() test).
pub fn systemd_booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

pub async fn start(unit: &str) -> Result<(), SystemError> {
    let conn = zbus::Connection::system()
        .await
        .map_err(dbus("connecting to the system bus"))?;
    let manager = ManagerProxy::new(&conn)
        .await
        .map_err(dbus("systemd1 manager"))?;
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
}

/// Enables `unit` (when its unit file is not enabled yet) and starts it when
/// it is not active: for the kubelet after a join, which kubeadm restarts but
/// does not enable.
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
    let started_now = if matches!(active_state.as_str(), "active" | "activating" | "reloading") {
        false
    } else {
        start(unit).await?;
        true
    };
    Ok(Ensured {
        enabled_now,
        started_now,
        active_state,
    })
}
