//! An in-memory system for tests without root: it applies [`Op`]s to plain
//! data the way the kernel would, and records them. Convergence proofs run
//! `plan(target, fake.after(ops))` and expect an empty plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::inspect::{Inspect, LinkKind, ProcessInfo};
use super::{BirdProtocol, Query, System, SystemError};
use crate::desired::{Family, RuleSpec, SysctlKey};
use crate::observed::{NextHop, Observed, ObservedAddress, ObservedLink};
use crate::plan::Op;
use crate::state::State;

#[derive(Debug, Clone, Default)]
pub struct FakeSystem {
    pub links: Vec<ObservedLink>,
    pub addresses: Vec<ObservedAddress>,
    /// Every rule with its protocol number, foreign ones included.
    pub rules: Vec<(RuleSpec, u8)>,
    pub sysctls: BTreeMap<SysctlKey, String>,
    pub files: BTreeMap<PathBuf, String>,
    pub state: Option<State>,
    /// Kernels before 6.3 report no IFA_PROTO.
    pub addr_proto: bool,
    pub applied: Vec<Op>,
    /// Fail the nth apply (0-based), to test partial application.
    pub fail_at: Option<usize>,
    /// Default-route next hops per table.
    pub nexthops: BTreeMap<u32, Vec<NextHop>>,
    /// `None`: no BIRD answers on the socket.
    pub bird: Option<Vec<BirdProtocol>>,
    pub exported: BTreeMap<String, Vec<IpNet>>,
    /// `show bfd sessions` of the BIRD (when it answers).
    pub bfd: Vec<crate::bgp::BfdSession>,
    /// `show protocols all <name>` per BGP protocol.
    pub bgp_details: BTreeMap<String, crate::bgp::BgpDetail>,
    /// Directories created for BIRD (WriteBirdConfig).
    pub dirs: Vec<PathBuf>,
    /// `--root` as the fake pretends it (`None`: /).
    pub root: Option<PathBuf>,
    pub in_netns: bool,
    pub reloads: usize,
    /// The run lock is held (`lock` until `unlock`).
    pub locked: bool,
    /// Who supervises BIRD (the real system derives it from systemd, --root and --netns).
    pub units: crate::observed::UnitControl,
    /// What systemd reports for bird.service while BIRD does not answer.
    pub bird_unit: Option<crate::observed::ObservedUnit>,
    /// Every unit start, with its `wait`.
    pub unit_starts: Vec<(String, bool)>,
    /// Our nftables table as nft would list it.
    pub nft: Option<crate::nft::TableContent>,
    pub nft_reads: usize,
    pub checkpoint: Option<String>,
    /// Pids `underlay_running` reports alive.
    pub live_pids: Vec<u32>,
    /// Whether the TCP probe connects.
    pub probe_ok: bool,
    /// What [`Inspect`] reports (the doctor's view of the host).
    pub host: FakeHost,
}

/// The host as `underlay doctor` sees it through [`Inspect`]: the text the
/// real tools and /proc would print.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    pub link_kinds: Vec<LinkKind>,
    /// /proc/sys by relative path.
    pub proc_sys: BTreeMap<String, String>,
    pub iptables: Vec<(String, Result<String, String>)>,
    /// `None`: nft fails as if missing.
    pub nft_ruleset: Option<String>,
    pub conntrack: BTreeMap<Family, String>,
    pub tcp: BTreeMap<Family, String>,
    pub processes: Vec<ProcessInfo>,
    /// Files by (pid, path as the process names it).
    pub process_files: BTreeMap<(u32, PathBuf), String>,
    /// Other BIRDs' control sockets (real paths).
    pub bird_sockets: BTreeMap<PathBuf, Vec<BirdProtocol>>,
    /// The state file's text as stored (a malformed one too); `None`: the
    /// fake's `state`, serialized, or no file when that is `None` too.
    pub state_text: Option<String>,
}

impl FakeSystem {
    /// Gives the fake kernel every sysctl `d` manages (at 0), as a real
    /// kernel has them: a sysctl the kernel lacks is bad input.
    pub fn with_sysctls_of(mut self, d: &crate::desired::Desired) -> FakeSystem {
        if let Ok((target, _)) = crate::engine::observe(&mut self, d, None) {
            for (key, _) in &target.sysctls {
                self.sysctls
                    .entry(key.clone())
                    .or_insert_with(|| "0".into());
            }
        }
        self
    }

    /// A host with `lo` and the given NICs (index from 2, MTU 1500, down).
    pub fn with_nics(nics: &[&str]) -> FakeSystem {
        let mut links = vec![ObservedLink {
            index: 1,
            name: "lo".into(),
            mac: None,
            perm_mac: None,
            mtu: 65536,
            up: true,
            oper_up: true,
        }];
        for (i, n) in nics.iter().enumerate() {
            links.push(ObservedLink {
                index: i as u32 + 2,
                name: (*n).into(),
                mac: Some(crate::desired::MacAddr([0x52, 0x54, 0, 0, 0, i as u8 + 2])),
                perm_mac: None,
                mtu: 1500,
                up: false,
                oper_up: false,
            });
        }
        FakeSystem {
            links,
            addr_proto: true,
            ..FakeSystem::default()
        }
    }
}

impl System for FakeSystem {
    fn links(&mut self) -> Result<Vec<ObservedLink>, SystemError> {
        Ok(self.links.clone())
    }
    fn lock(&mut self, _timeout: std::time::Duration) -> Result<(), SystemError> {
        self.locked = true;
        Ok(())
    }
    fn unlock(&mut self) {
        self.locked = false;
    }

    fn load_state(&mut self) -> Result<State, SystemError> {
        Ok(self.state.clone().unwrap_or_default())
    }

    fn read_file(&mut self, path: &Path) -> Result<Option<String>, SystemError> {
        Ok(self.files.get(path).cloned())
    }

    /// In memory there are no modes or links: the file as stored.
    fn read_secret(&mut self, path: &Path) -> Result<Option<super::Secret>, SystemError> {
        Ok(self.files.get(path).cloned().map(super::Secret::new))
    }

    fn observe(
        &mut self,
        links: Vec<ObservedLink>,
        state: State,
        q: &Query,
    ) -> Result<Observed, SystemError> {
        let mut addresses = self.addresses.clone();
        if !self.addr_proto {
            addresses.iter_mut().for_each(|a| a.protocol = None);
        }
        Ok(Observed {
            links,
            addresses,
            rules: self
                .rules
                .iter()
                .filter(|(_, p)| *p == q.protocol)
                .map(|(r, _)| *r)
                .collect(),
            sysctls: q
                .sysctls
                .iter()
                .map(|k| (k.clone(), self.sysctls.get(k).cloned()))
                .collect(),
            borrowed_rules: Vec::new(),
            files: q
                .files
                .iter()
                .map(|f| (f.clone(), self.files.get(f).cloned()))
                .collect(),
            state,
            addr_proto_supported: self.addr_proto,
            bird_running: q.bird_socket.is_some() && self.bird.is_some(),
            bird_socket: q.bird_socket.clone(),
            units: self.units.clone(),
            bird_unit: match (&self.units, &q.bird_unit) {
                (crate::observed::UnitControl::Systemd, Some(_)) if self.bird.is_none() => Some(
                    self.bird_unit
                        .clone()
                        .unwrap_or_else(|| crate::observed::ObservedUnit {
                            active_state: "inactive".into(),
                            ..Default::default()
                        }),
                ),
                _ => None,
            },
            nft: q.nft.then(|| {
                self.nft_reads += 1;
                crate::nft::ObservedNat {
                    table: self.nft.clone(),
                }
            }),
        })
    }

    fn apply(&mut self, op: &Op) -> Result<(), SystemError> {
        if self.fail_at == Some(self.applied.len()) {
            return Err(SystemError::Other(format!("injected failure at {op:?}")));
        }
        match op {
            Op::SetLink { index, mtu, up, .. } => {
                let l = self
                    .links
                    .iter_mut()
                    .find(|l| l.index == *index)
                    .ok_or_else(|| SystemError::Other(format!("no link {index}")))?;
                if let Some(m) = mtu {
                    l.mtu = *m;
                }
                l.up = *up;
                l.oper_up = *up;
            }
            Op::AddAddress {
                index,
                ifname,
                prefix,
                scope,
                protocol,
            } => {
                if self
                    .addresses
                    .iter()
                    .any(|a| a.index == *index && a.prefix == *prefix)
                {
                    return Err(SystemError::Other(format!(
                        "{prefix} exists on {ifname} (EEXIST)"
                    )));
                }
                self.addresses.push(ObservedAddress {
                    index: *index,
                    ifname: ifname.clone(),
                    prefix: *prefix,
                    scope: *scope,
                    protocol: Some(*protocol),
                });
            }
            Op::DelAddress { index, prefix, .. } => {
                self.addresses
                    .retain(|a| !(a.index == *index && a.prefix == *prefix));
            }
            Op::AddRule { rule, protocol } => self.rules.push((*rule, *protocol)),
            Op::DelRule { rule, protocol } => {
                let pos = self
                    .rules
                    .iter()
                    .position(|(r, p)| r == rule && p == protocol)
                    .ok_or_else(|| SystemError::Other(format!("no rule {rule} (ENOENT)")))?;
                self.rules.remove(pos);
            }
            Op::WriteSysctl { key, value } => {
                if !self.sysctls.contains_key(key) {
                    return Err(SystemError::Other(format!("no sysctl {key}")));
                }
                self.sysctls.insert(key.clone(), value.clone());
            }
            Op::WriteFile { path, content } => {
                self.files.insert(path.clone(), content.clone());
            }
            Op::RemoveFile { path } => {
                self.files.remove(path);
            }
            Op::WriteBirdConfig {
                path,
                content,
                dirs,
                ..
            } => {
                self.dirs.extend(dirs.iter().cloned());
                self.files.insert(path.clone(), content.clone());
            }
            Op::Nft { change } => {
                self.nft = match change {
                    crate::nft::NftChange::Create { desired, .. }
                    | crate::nft::NftChange::Replace { desired, .. } => {
                        Some(crate::nft::TableContent::from_doc(desired))
                    }
                    _ => None,
                };
            }
            Op::StartUnit { unit, wait } => {
                self.unit_starts.push((unit.clone(), *wait));
                if *wait {
                    self.bird = Some(Vec::new());
                } else {
                    // Queued behind the unit this run executes in.
                    let u = self.bird_unit.get_or_insert_with(Default::default);
                    u.queued_job = Some(42);
                }
            }
            Op::ReloadBird { .. } => {
                if self.bird.is_none() {
                    return Err(SystemError::Other("no BIRD to reload".into()));
                }
                self.reloads += 1;
            }
        }
        self.applied.push(op.clone());
        Ok(())
    }

    fn save_state(&mut self, state: &State) -> Result<(), SystemError> {
        self.state = Some(state.clone());
        Ok(())
    }

    fn load_checkpoint(&mut self) -> Result<Option<String>, SystemError> {
        Ok(self.checkpoint.clone())
    }

    fn save_checkpoint(&mut self, text: Option<&str>) -> Result<(), SystemError> {
        self.checkpoint = text.map(str::to_string);
        Ok(())
    }

    fn underlay_running(&mut self, pid: u32) -> bool {
        self.live_pids.contains(&pid)
    }

    fn tcp_probe(
        &mut self,
        addr: std::net::SocketAddr,
        _timeout: std::time::Duration,
    ) -> Result<(), String> {
        if self.probe_ok {
            Ok(())
        } else {
            Err(format!("connect {addr}: connection timed out"))
        }
    }

    fn default_nexthops(
        &mut self,
        table: u32,
        _family: Family,
    ) -> Result<Vec<NextHop>, SystemError> {
        Ok(self.nexthops.get(&table).cloned().unwrap_or_default())
    }

    fn bird_protocols(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError> {
        self.bird
            .clone()
            .ok_or_else(|| SystemError::Other(format!("no BIRD answers on {}", socket.display())))
    }

    fn bird_exported(&mut self, _socket: &Path, protocol: &str) -> Result<Vec<IpNet>, SystemError> {
        Ok(self.exported.get(protocol).cloned().unwrap_or_default())
    }

    fn bird_bfd_sessions(
        &mut self,
        socket: &Path,
    ) -> Result<Vec<crate::bgp::BfdSession>, SystemError> {
        self.bird_protocols(socket)?;
        Ok(self.bfd.clone())
    }

    fn bird_bgp_detail(
        &mut self,
        socket: &Path,
        protocol: &str,
    ) -> Result<crate::bgp::BgpDetail, SystemError> {
        self.bird_protocols(socket)?;
        self.bgp_details
            .get(protocol)
            .cloned()
            .ok_or_else(|| SystemError::BirdControl {
                socket: socket.to_path_buf(),
                message: format!("BIRD has no protocol named {protocol}"),
            })
    }

    fn real_path(&self, logical: &Path) -> PathBuf {
        super::files::under_root(self.root.as_deref().unwrap_or(Path::new("/")), logical)
    }

    fn in_netns(&self) -> bool {
        self.in_netns
    }

    fn inspect(&mut self) -> &mut dyn Inspect {
        self
    }
}

impl Inspect for FakeSystem {
    fn link_kinds(&mut self) -> Result<Vec<LinkKind>, SystemError> {
        if !self.host.link_kinds.is_empty() {
            return Ok(self.host.link_kinds.clone());
        }
        Ok(self
            .links
            .iter()
            .map(|l| LinkKind {
                index: l.index,
                name: l.name.clone(),
                ..LinkKind::default()
            })
            .collect())
    }

    fn proc_sys(&mut self, rel: &str) -> Option<String> {
        self.host.proc_sys.get(rel).cloned()
    }

    fn iptables_dumps(&mut self) -> Vec<(String, Result<String, String>)> {
        self.host.iptables.clone()
    }

    fn nft_ruleset(&mut self) -> Result<String, String> {
        self.host
            .nft_ruleset
            .clone()
            .ok_or_else(|| "cannot run nft: No such file or directory (fake)".into())
    }

    fn conntrack_snat(&mut self, family: Family) -> Result<String, String> {
        self.host
            .conntrack
            .get(&family)
            .cloned()
            .ok_or_else(|| "cannot run conntrack: No such file or directory (fake)".into())
    }

    fn tcp_table(&mut self, family: Family) -> Result<String, String> {
        Ok(self.host.tcp.get(&family).cloned().unwrap_or_default())
    }

    fn processes(&mut self) -> Vec<ProcessInfo> {
        self.host.processes.clone()
    }

    fn process_file(&mut self, pid: u32, path: &Path) -> Option<String> {
        self.host
            .process_files
            .get(&(pid, path.to_path_buf()))
            .cloned()
    }

    fn list_dir(&mut self, logical: &Path) -> Vec<String> {
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(logical))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    fn same_file(&mut self, a: &Path, b: &Path) -> bool {
        a == b
    }

    fn bird_protocols_at(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError> {
        self.host
            .bird_sockets
            .get(socket)
            .cloned()
            .ok_or_else(|| SystemError::BirdControl {
                socket: socket.to_path_buf(),
                message: "connecting: No such file or directory (fake)".into(),
            })
    }

    fn state_text(&mut self) -> (PathBuf, Result<Option<String>, SystemError>) {
        let path = self.real_path(Path::new(crate::system::linux::DEFAULT_STATE_PATH));
        let text = match &self.host.state_text {
            Some(t) => Some(t.clone()),
            None => self.state.as_ref().map(State::to_text),
        };
        (path, Ok(text))
    }
}
