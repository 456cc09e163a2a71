//! [`Inspect`] on the real host: link kinds over the system's own netlink
//! socket, `/proc` of the calling thread's namespace, the firewall tools.
//!
//! Per-thread views on purpose: `/proc/thread-self/net/*` and
//! `/proc/thread-self/ns/net` follow the calling thread's namespace, so this
//! also works from a thread that entered a namespace with setns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};

use super::{bird, nl, LinuxSystem};
use crate::desired::Family;
use crate::nft::NftExec;
use crate::system::files;
use crate::system::inspect::{Inspect, LinkKind, ProcessInfo};
use crate::system::{BirdProtocol, SystemError};

/// Runs a read-only tool; `Err` carries why it could not (missing, failed).
fn tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netns_id(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = fds
        .filter_map(|f| f.ok())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|t| {
            t.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl Inspect for LinuxSystem {
    fn link_kinds(&mut self) -> Result<Vec<LinkKind>, SystemError> {
        let msgs: Vec<_> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())
            .map_err(nl("dumping links"))?;
        let mut out = Vec::new();
        for m in msgs {
            let mut link = LinkKind {
                index: m.header.index,
                ..LinkKind::default()
            };
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n.clone(),
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            match i {
                                LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                                LinkInfo::Data(InfoData::Vxlan(v)) => {
                                    link.vxlan_port = v.iter().find_map(|x| match x {
                                        InfoVxlan::Port(p) => Some(*p),
                                        _ => None,
                                    });
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            out.push(link);
        }
        out.sort_by_key(|l| l.index);
        Ok(out)
    }

    fn proc_sys(&mut self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.proc_sys.join(rel))
            .ok()
            .map(|v| v.trim().to_string())
    }

    fn iptables_dumps(&mut self) -> Vec<(String, Result<String, String>)> {
        let mut tools = vec!["iptables-save", "ip6tables-save"];
        // Legacy x_tables in use next to iptables-nft: read them too. Checking the
        // names file first avoids loading legacy modules on hosts without them.
        let legacy = std::fs::read_to_string("/proc/thread-self/net/ip_tables_names")
            .is_ok_and(|t| !t.trim().is_empty());
        if legacy {
            tools.push("iptables-legacy-save");
        }
        tools
            .into_iter()
            .map(|t| (t.to_string(), tool(t, &[])))
            .collect()
    }

    fn nft_ruleset(&mut self) -> Result<String, String> {
        crate::system::nft::NftCommand::new()
            .run(&["-j", "list", "ruleset"], None)
            .map_err(|e| e.to_string())
    }

    fn conntrack_snat(&mut self, family: Family) -> Result<String, String> {
        match family {
            Family::Ipv4 => tool("conntrack", &["-L", "--src-nat"]),
            Family::Ipv6 => tool("conntrack", &["-L", "-f", "ipv6", "--src-nat"]),
        }
    }

    fn tcp_table(&mut self, family: Family) -> Result<String, String> {
        let file = match family {
            Family::Ipv4 => "tcp",
            Family::Ipv6 => "tcp6",
        };
        std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))
            .map_err(|e| format!("/proc/net/{file}: {e}"))
    }

    fn processes(&mut self) -> Vec<ProcessInfo> {
        let Ok(me) = std::fs::read_link("/proc/thread-self/ns/net") else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter(|pid| netns_id(*pid).as_ref() == Some(&me))
            .collect();
        pids.sort_unstable();
        pids.into_iter()
            .map(|pid| ProcessInfo {
                pid,
                comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default(),
                cmdline: std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|raw| {
                        raw.split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default(),
                sockets: socket_inodes(pid),
            })
            .collect()
    }

    fn process_file(&mut self, pid: u32, path: &Path) -> Option<String> {
        let via_root =
            PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        std::fs::read_to_string(via_root)
            .or_else(|_| std::fs::read_to_string(path))
            .ok()
    }

    fn list_dir(&mut self, logical: &Path) -> Vec<String> {
        let dir = files::under_root(&self.root, logical);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn same_file(&mut self, a: &Path, b: &Path) -> bool {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }

    fn bird_protocols_at(&mut self, socket: &Path) -> Result<Vec<BirdProtocol>, SystemError> {
        self.rt.block_on(bird::protocols(socket))
    }

    fn state_text(&mut self) -> (PathBuf, Result<Option<String>, SystemError>) {
        let path = self.state_file();
        let text = files::read(&path);
        (path, text)
    }
}
