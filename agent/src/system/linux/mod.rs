//! The real system: rtnetlink for links, addresses and rules; /proc/sys for
//! sysctls; files below the `--root` prefix. A private current-thread tokio
//! runtime keeps async inside this module.

mod addresses;
pub(crate) mod bird;
pub mod bird_ctl;
mod inspect;
mod join;
mod links;
mod lock;
mod routes;
mod rules;
pub mod secret;
mod units;
pub mod watch;

use std::path::{Path, PathBuf};

use rtnetlink::Handle;
use tokio::runtime::Runtime;

use ipnet::IpNet;

use std::collections::HashSet;
use std::time::Duration;

use super::files::{Durability, WriteSpec};
use super::{files, sysctl, BirdProtocol, Query, System, SystemError};
use crate::desired::Family;
use crate::observed::{NextHop, Observed, ObservedLink, UnitControl};
use crate::plan::Op;
use crate::state::State;

pub const DEFAULT_STATE_PATH: &str = "/var/lib/underlay/state.json";
/// The safe apply's checkpoint, in the state file's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

pub struct LinuxSystem {
    rt: Runtime,
    handle: Handle,
    root: PathBuf,
    proc_sys: PathBuf,
    /// Logical path of the state file (below `root`).
    state_path: PathBuf,
    /// The run lock, held until this system is dropped.
    lock: Option<nix::fcntl::Flock<std::fs::File>>,
    /// BIRD configs `bird -p` accepted in this run (by sha256).
    checked_bird: HashSet<[u8; 32]>,
    in_netns: bool,
    /// Whether this run drives the machine's units (systemd, real root, no --netns).
    units: UnitControl,
}

pub(super) fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> SystemError {
    let what = what.into();
    move |source| SystemError::Netlink { what, source }
}

impl LinuxSystem {
    /// Opens a strict-checking netlink socket in the current network
    /// namespace (enter `--netns` before calling this).
    /// `in_netns`: running inside `--netns`, where no systemd supervises BIRD.
    /// A `root` other than `/` never drives the machine's units: they read
    /// the machine's files, not the ones below the root.
    pub fn new(root: &Path, state_path: &Path, in_netns: bool) -> Result<LinuxSystem, SystemError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SystemError::Other(format!("starting the runtime: {e}")))?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection_with_strict_check()
                .map_err(|e| SystemError::Other(format!("opening a netlink socket: {e}")))?;
            tokio::spawn(conn);
            Ok::<_, SystemError>(handle)
        })?;
        Ok(LinuxSystem {
            rt,
            handle,
            root: root.to_path_buf(),
            proc_sys: PathBuf::from("/proc/sys"),
            state_path: state_path.to_path_buf(),
            lock: None,
            checked_bird: HashSet::new(),
            in_netns,
            units: unit_control(root, in_netns, units::systemd_booted()),
        })
    }

    fn state_file(&self) -> PathBuf {
        files::under_root(&self.root, &self.state_path)
    }

    /// `checkpoint.json` beside the state file.
    fn checkpoint_file(&self) -> PathBuf {
        self.state_file().with_file_name(CHECKPOINT_FILE)
    }
}

/// Who supervises BIRD for a run with this root.
pub fn unit_control(root: &Path, in_netns: bool, systemd_booted: bool) -> UnitControl {
    if in_netns || !systemd_booted {
        return UnitControl::Caller;
    }
    // `--root /.`, `//` and a symlink to / are the machine's root too.
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if real == Path::new("/") {
        UnitControl::Systemd
    } else {
        UnitControl::ScratchRoot(root.to_path_buf())
    }
}

impl System for LinuxSystem {
    fn links(&mut self) -> Result<Vec<ObservedLink>, SystemError> {
        self.rt.block_on(links::dump(&self.handle))
    }

    fn load_state(&mut self) -> Result<State, SystemError> {
        let path = self.state_file();
        let Some(text) = files::read(&path)? else {
            return Ok(State::new());
        };
        State::parse(&text).map_err(|e| SystemError::State {
            path,
            message: e.to_string(),
        })
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<String>, SystemError> {
        files::read(&files::under_root(&self.root, path))
    }

    fn read_secret(&mut self, path: &Path) -> Result<Option<super::Secret>, SystemError> {
        secret::read(&self.root, path)
    }

    fn observe(
        &mut self,
        links: Vec<ObservedLink>,
        state: State,
        q: &Query,
    ) -> Result<Observed, SystemError> {
        let names = links.iter().map(|l| (l.index, l.name.clone())).collect();
        let (addresses, (rules, borrowed_rules)) = self.rt.block_on(async {
            let a = addresses::dump(&self.handle, &names).await?;
            let r = rules::dump(&self.handle, q.protocol).await?;
            Ok::<_, SystemError>((a, r))
        })?;
        let mut sysctls = std::collections::BTreeMap::new();
        for k in &q.sysctls {
            sysctls.insert(k.clone(), sysctl::read(&self.proc_sys, k)?);
        }
        let mut file_map = std::collections::BTreeMap::new();
        for f in &q.files {
            file_map.insert(f.clone(), files::read(&files::under_root(&self.root, f))?);
        }
        let bird_running = match &q.bird_socket {
            Some(sock) => self
                .rt
                .block_on(bird::alive(&files::under_root(&self.root, sock))),
            None => false,
        };
        let bird_unit = match &q.bird_unit {
            Some(unit) if !bird_running && self.units == UnitControl::Systemd => {
                Some(self.rt.block_on(units::observe(unit))?)
            }
            _ => None,
        };
        Ok(Observed {
            links,
            addresses,
            rules,
            borrowed_rules,
            sysctls,
            files: file_map,
            state,
            addr_proto_supported: addresses::kernel_has_ifa_proto(),
            bird_running,
            units: self.units.clone(),
            bird_unit,
            bird_socket: q.bird_socket.clone(),
            nft: if q.nft {
                Some(crate::nft::observe(&crate::system::nft::NftCommand::new())?)
            } else {
                None
            },
        })
    }

    fn apply(&mut self, op: &Op) -> Result<(), SystemError> {
        let h = &self.handle;
        match op {
            Op::SetLink {
                index,
                ifname,
                mtu,
                up,
            } => self.rt.block_on(links::set(h, *index, ifname, *mtu, *up)),
            Op::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            } => self.rt.block_on(addresses::add(
                h, *index, ifname, *prefix, *scope, *protocol,
            )),
            Op::DelAddress {
                index,
                ifname,
                prefix,
            } => self.rt.block_on(addresses::del(h, *index, ifname, *prefix)),
            Op::AddRule { rule, protocol } => self.rt.block_on(rules::add(h, rule, *protocol)),
            Op::DelRule { rule, protocol } => self.rt.block_on(rules::del(h, rule, *protocol)),
            Op::WriteSysctl { key, value } => sysctl::write(&self.proc_sys, key, value),
            Op::WriteFile { path, content } => files::write_atomic(
                &files::under_root(&self.root, path),
                content.as_bytes(),
                &WriteSpec::new(0o644, Durability::Derived),
            ),
            Op::RemoveFile { path } => files::remove(&files::under_root(&self.root, path)),
            Op::WriteBirdConfig {
                path,
                content,
                owner,
                dirs,
            } => {
                let real = files::under_root(&self.root, path);
                // Checked by preflight already (before any kernel change);
                // a caller that skipped it still gets BIRD's verdict first.
                if !self.checked_bird.contains(&digest(content)) {
                    self.rt.block_on(bird::check(content, &real))?;
                }
                let ids = resolve_owner(owner)?;
                for d in dirs {
                    let real = files::under_root(&self.root, d);
                    if real.exists() {
                        continue;
                    }
                    let io = |source| SystemError::Io {
                        what: "creating BIRD's directory",
                        path: real.clone(),
                        source,
                    };
                    std::fs::create_dir_all(&real).map_err(io)?;
                    // BIRD, as its own user, writes its socket and log there.
                    std::os::unix::fs::chown(&real, Some(ids.0), Some(ids.1)).map_err(io)?;
                }
                let spec = WriteSpec {
                    mode: owner.mode,
                    owner: Some(ids),
                    durability: Durability::Durable,
                };
                files::write_atomic(&real, content.as_bytes(), &spec)
            }
            Op::Nft { change } => crate::nft::apply(&crate::system::nft::NftCommand::new(), change)
                .map(|_| ())
                .map_err(Into::into),
            Op::StartUnit { unit, wait } => self.rt.block_on(units::start(unit, *wait)),
            Op::ReloadBird { socket } => self
                .rt
                .block_on(bird::reload(&files::under_root(&self.root, socket))),
        }
    }

    fn default_nexthops(
        &mut self,
        table: u32,
        family: Family,
    ) -> Result<Vec<NextHop>, SystemError> {
        self.rt
            .block_on(routes::default_nexthops(&self.handle, table, family))
    }

    fn bird_protocols(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError> {
        self.rt
            .block_on(bird::protocols(&files::under_root(&self.root, socket)))
    }

    fn bird_exported(&mut self, socket: &Path, protocol: &str) -> Result<Vec<IpNet>, SystemError> {
        self.rt.block_on(bird::exported(
            &files::under_root(&self.root, socket),
            protocol,
        ))
    }

    fn bird_bfd_sessions(
        &mut self,
        socket: &Path,
    ) -> Result<Vec<crate::bgp::BfdSession>, SystemError> {
        self.rt
            .block_on(bird::bfd_sessions(&files::under_root(&self.root, socket)))
    }

    fn bird_bgp_detail(
        &mut self,
        socket: &Path,
        protocol: &str,
    ) -> Result<crate::bgp::BgpDetail, SystemError> {
        self.rt.block_on(bird::bgp_detail(
            &files::under_root(&self.root, socket),
            protocol,
        ))
    }

    fn real_path(&self, logical: &Path) -> PathBuf {
        files::under_root(&self.root, logical)
    }

    fn in_netns(&self) -> bool {
        self.in_netns
    }

    fn inspect(&mut self) -> &mut dyn super::inspect::Inspect {
        self
    }

    fn load_checkpoint(&mut self) -> Result<Option<String>, SystemError> {
        files::read(&self.checkpoint_file())
    }

    fn save_checkpoint(&mut self, text: Option<&str>) -> Result<(), SystemError> {
        let path = self.checkpoint_file();
        match text {
            Some(t) => files::write_atomic(
                &path,
                t.as_bytes(),
                &WriteSpec::new(0o600, Durability::Durable),
            ),
            None => {
                files::remove(&path)?;
                // The removal must survive a power cut too, or the next boot
                // rolls back a change that was confirmed.
                if let Some(dir) = path.parent() {
                    if let Ok(d) = std::fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                Ok(())
            }
        }
    }

    fn underlay_running(&mut self, pid: u32) -> bool {
        // A recycled pid is not ours: its executable must be underlay.
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
            exe.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("underlay"))
        })
    }

    fn tcp_probe(
        &mut self,
        addr: std::net::SocketAddr,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        // This thread is in --netns: the connection leaves through its fabric.
        std::net::TcpStream::connect_timeout(&addr, timeout)
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}"))
    }

    fn save_state(&mut self, state: &State) -> Result<(), SystemError> {
        files::write_atomic(
            &self.state_file(),
            state.to_text().as_bytes(),
            &WriteSpec::new(0o600, Durability::Durable),
        )
    }

    fn lock(&mut self, timeout: Duration) -> Result<(), SystemError> {
        if self.lock.is_none() {
            self.lock = Some(lock::acquire(&self.state_file(), timeout)?);
        }
        Ok(())
    }

    fn unlock(&mut self) {
        self.lock = None;
    }

    fn preflight(&mut self, op: &Op) -> Result<(), SystemError> {
        match op {
            Op::WriteBirdConfig {
                path,
                content,
                owner,
                ..
            } => {
                let real = files::under_root(&self.root, path);
                files::remove_stale_temp(&real);
                not_a_directory(&real)?;
                resolve_owner(owner)?;
                self.rt.block_on(bird::check(content, &real))?;
                self.checked_bird.insert(digest(content));
                Ok(())
            }
            Op::WriteFile { path, .. } | Op::RemoveFile { path } => {
                let real = files::under_root(&self.root, path);
                files::remove_stale_temp(&real);
                not_a_directory(&real)
            }
            _ => Ok(()),
        }
    }
}

fn digest(content: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(content.as_bytes()).into()
}

fn not_a_directory(path: &Path) -> Result<(), SystemError> {
    if path.is_dir() {
        return Err(SystemError::Refused(format!(
            "{} is a directory; a generated file goes there. Point the profile's path at a file",
            path.display()
        )));
    }
    Ok(())
}

/// The uid and gid of a file owner named in the profile, from this host's
/// user database.
fn resolve_owner(o: &crate::desired::FileOwner) -> Result<(u32, u32), SystemError> {
    use nix::unistd::{Group, User};
    let user = User::from_name(&o.user)
        .ok()
        .flatten()
        .ok_or_else(|| SystemError::Refused(format!(
            "user '{}' (bgp.config_owner) does not exist on this host; install bird2 (it creates user bird) or set bgp.config_owner to the user BIRD runs as",
            o.user
        )))?;
    let group = Group::from_name(&o.group)
        .ok()
        .flatten()
        .ok_or_else(|| SystemError::Refused(format!(
            "group '{}' (bgp.config_owner) does not exist on this host; set bgp.config_owner to the group BIRD runs as",
            o.group
        )))?;
    Ok((user.uid.as_raw(), group.gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_real_root_drives_the_machines_units() {
        let sd =
            |root: &str, netns: bool, booted: bool| unit_control(Path::new(root), netns, booted);
        assert_eq!(sd("/", false, true), UnitControl::Systemd);
        assert_eq!(sd("/.", false, true), UnitControl::Systemd);
        assert_eq!(
            sd("/tmp", false, true),
            UnitControl::ScratchRoot(PathBuf::from("/tmp"))
        );
        assert_eq!(sd("/", true, true), UnitControl::Caller, "--netns");
        assert_eq!(sd("/", false, false), UnitControl::Caller, "no systemd");
        assert_eq!(sd("/tmp", false, false), UnitControl::Caller);
    }
}
