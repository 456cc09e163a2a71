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
