//! The host BIRD: its own parser for checks (`bird -p -c`), its control
//! socket for reloads and readings (no birdc subprocess).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::bgp::{parse_check, BirdClient, CheckError, ConfigureOutcome};
use crate::system::{BirdProtocol, SystemError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `UNDERLAY_BIRD` names another BIRD binary; else /usr/sbin/bird, else PATH.
pub fn bird_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("UNDERLAY_BIRD") {
        return p.into();
    }
    let sbin = PathBuf::from("/usr/sbin/bird");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("bird")
    }
}

fn control(socket: &Path) -> impl Fn(crate::bgp::ControlError) -> SystemError + '_ {
    move |e| SystemError::BirdControl {
        socket: socket.to_path_buf(),
        message: e.to_string(),
    }
}

async fn connect(socket: &Path) -> Result<BirdClient, SystemError> {
    BirdClient::connect_with_timeout(socket, CONNECT_TIMEOUT)
        .await
        .map_err(control(socket))
}

pub async fn alive(socket: &Path) -> bool {
    socket.exists() && connect(socket).await.is_ok()
}

/// `bird -p` on `content`, its temporary copy beside `config` (below the
/// root, mode 0600), never in /tmp: it may hold BGP passwords.
pub async fn check(content: &str, config: &Path) -> Result<(), SystemError> {
    let tmp = crate::system::files::temp_path(config).with_extension("check");
    match parse_check(&bird_binary(), content, &tmp).await {
        Ok(()) => Ok(()),
        // BIRD's excerpt quotes rendered lines, which may hold a password.
        Err(CheckError::Rejected(e)) => Err(SystemError::BirdRejected(crate::bgp::redact(
            &e.to_string(),
        ))),
        Err(other) => Err(SystemError::Other(format!(
            "checking the BIRD config: {other}"
        ))),
    }
}

pub async fn reload(socket: &Path) -> Result<(), SystemError> {
    let mut c = connect(socket).await?;
    match c.configure().await.map_err(control(socket))? {
        ConfigureOutcome::ShuttingDown => Err(SystemError::BirdControl {
            socket: socket.to_path_buf(),
            message: "BIRD is shutting down".into(),
        }),
        _ => Ok(()),
    }
}

pub async fn protocols(socket: &Path) -> Result<Vec<BirdProtocol>, SystemError> {
    let mut c = connect(socket).await?;
    let ps = c.show_protocols().await.map_err(control(socket))?;
    Ok(ps
        .into_iter()
        .map(|p| BirdProtocol {
            name: p.name,
            proto: p.proto,
            state: p.state,
            info: p.info,
        })
        .collect())
}

pub async fn exported(socket: &Path, protocol: &str) -> Result<Vec<IpNet>, SystemError> {
    let mut c = connect(socket).await?;
    c.exported_prefixes(protocol).await.map_err(control(socket))
}
