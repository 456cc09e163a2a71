//! The host BIRD: its own parser for checks (`bird -p -c`), its control
//! socket for reloads and readings (no birdc subprocess).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use super::bird_ctl::BirdClient;
use crate::bgp::check::{parse_bird_error, CHECK_TIMEOUT};
use crate::bgp::{BfdSession, BgpDetail, CheckError, ConfigureOutcome};
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

pub async fn bfd_sessions(socket: &Path) -> Result<Vec<BfdSession>, SystemError> {
    let mut c = connect(socket).await?;
    c.bfd_sessions().await.map_err(control(socket))
}

pub async fn bgp_detail(socket: &Path, protocol: &str) -> Result<BgpDetail, SystemError> {
    let mut c = connect(socket).await?;
    c.bgp_detail(protocol).await.map_err(control(socket))
}

pub async fn exported(socket: &Path, protocol: &str) -> Result<Vec<IpNet>, SystemError> {
    let mut c = connect(socket).await?;
    c.exported_prefixes(protocol).await.map_err(control(socket))
}

/// Runs `bird -p -c <tmp>` on `text`, with the temporary copy at `tmp`
/// (beside the real config, so a password never lands outside the root).
pub async fn parse_check(bird_bin: &Path, text: &str, tmp: &Path) -> Result<(), CheckError> {
    let tmp = TempConf::create(tmp, text)?;
    let mut cmd = tokio::process::Command::new(bird_bin);
    cmd.arg("-p")
        .arg("-c")
        .arg(&tmp.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = |source| CheckError::Run {
        bin: bird_bin.to_path_buf(),
        source,
    };
    let child = cmd.spawn().map_err(run)?;
    let out = tokio::time::timeout(CHECK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CheckError::Timeout {
            bin: bird_bin.to_path_buf(),
            timeout: CHECK_TIMEOUT,
        })?
        .map_err(run)?;
    if out.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stdout));
    if msg.trim().is_empty() {
        msg = format!("bird -p exited with {} and printed nothing", out.status);
    }
    Err(parse_bird_error(&msg, &tmp.path.to_string_lossy(), text).into())
}

/// A private (0600: it may hold BGP passwords) temporary copy of the config, removed on drop
/// (and, after a kill, replaced by the next run's copy under the same name).
struct TempConf {
    path: PathBuf,
}

impl TempConf {
    fn create(path: &Path, text: &str) -> Result<Self, CheckError> {
        let err = |source| CheckError::TempFile {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let _ = fs::remove_file(path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        let conf = TempConf {
            path: path.to_path_buf(),
        };
        f.write_all(text.as_bytes()).map_err(err)?;
        Ok(conf)
    }
}

impl Drop for TempConf {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
