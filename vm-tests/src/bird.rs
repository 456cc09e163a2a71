//! BIRD 2 in the lab: the ToR and Calico-role configs (the lab's own; the host
//! BIRD's config is rendered by `underlay apply`), process start/reload/stop
//! by pidfile, and reading session state over the control socket with `birdc`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cmd;
use crate::plan::{Host, Lab, Tor, CLIENT_SUBNET, POD_BLOCK_LEN};

/// First line of every BIRD config the lab writes (ToRs, Calico role).
pub const LAB_MARKER: &str = "# written by underlay-lab";

/// Timers shared by every BGP session in the lab: hold 9/keepalive 3, and short
/// connect/error delays (BIRD's defaults of 5 s connect delay and 60 s error
/// wait made the second ECMP path appear late and failover recovery slow).
const BGP_TIMERS: &str = "  hold time 9;
  keepalive time 3;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 4;
";

/// BFD: 100 ms x 3, so a dead link is detected in about 300 ms.
const BFD_PROTOCOL: &str = "\
protocol bfd {
  interface \"*\" {
    min rx interval 100 ms;
    min tx interval 100 ms;
    idle tx interval 300 ms;
    multiplier 3;
  };
}
";

/// A BIRD process of the lab: where its files are and which namespace it runs in.
#[derive(Debug, Clone)]
pub struct Bird {
    pub label: String,
    pub netns: String,
    pub conf: PathBuf,
    pub ctl: PathBuf,
    pub pidfile: PathBuf,
}

impl Bird {
    pub fn tor(lab: &Lab, tor: Tor) -> Bird {
        let d = lab.tor_dir(tor);
        Bird {
            label: tor.name().to_string(),
            netns: lab.tor_netns(tor),
            conf: d.join("bird.conf"),
            ctl: d.join("bird.ctl"),
            pidfile: d.join("bird.pid"),
        }
    }
    /// The host BIRD, at the paths the agent uses below its `--root`.
    pub fn host(lab: &Lab, h: &Host) -> Bird {
        let run = h.bird_run_dir(lab);
        Bird {
            label: format!("{} host BIRD", h.name),
            netns: h.netns.clone(),
            conf: h.bird_conf(lab),
            ctl: run.join("bird.ctl"),
            pidfile: run.join("bird.pid"),
        }
    }
    pub fn calico(lab: &Lab, h: &Host) -> Bird {
        let d = h.calico_dir(lab);
        Bird {
            label: format!("{} calico-role BIRD", h.name),
            netns: h.netns.clone(),
            conf: d.join("bird.conf"),
            ctl: d.join("bird.ctl"),
            pidfile: d.join("bird.pid"),
        }
    }

    /// Every BIRD a lab may have started (used by `down`).
    pub fn all(lab: &Lab) -> Vec<Bird> {
        let mut v: Vec<Bird> = Tor::ALL.iter().map(|t| Bird::tor(lab, *t)).collect();
        for h in lab.hosts() {
            v.push(Bird::host(lab, &h));
            v.push(Bird::calico(lab, &h));
        }
        v
    }

    /// The pid of a live BIRD started with our pidfile, if any. The process's
    /// command line must name our pidfile, so a recycled pid is never signalled.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = cmdline.split('\0').any(|a| Path::new(a) == self.pidfile)
            && cmdline
                .split('\0')
                .next()
                .is_some_and(|p| p.ends_with("bird"));
        ours.then_some(pid)
    }

    /// Checks the config with BIRD's own parser, then starts BIRD or, when it
    /// already runs, reloads it through the control socket.
    pub fn start_or_reload(&self) -> Result<()> {
        let conf = self.conf.to_string_lossy().into_owned();
        cmd::run("bird", &["-p", "-c", &conf])
            .with_context(|| format!("{}: {} does not parse", self.label, self.conf.display()))?;
        if self.running_pid().is_some() {
            let out = self.birdc(&["configure"])?;
            if !(out.contains("Reconfigured") || out.contains("Reconfiguration in progress")) {
                bail!("{}: `birdc configure` said: {}", self.label, out.trim());
            }
            return Ok(());
        }
        if let Some(dir) = self.ctl.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(&self.ctl);
        let ctl = self.ctl.to_string_lossy().into_owned();
        let pid = self.pidfile.to_string_lossy().into_owned();
        cmd::ns_exec(&self.netns, "bird", &["-c", &conf, "-s", &ctl, "-P", &pid])
            .with_context(|| format!("start {}", self.label))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.ctl.exists() {
            if Instant::now() > deadline {
                bail!(
                    "{}: started but no control socket at {}",
                    self.label,
                    self.ctl.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let ctl = self.ctl.to_string_lossy().into_owned();
        let mut a = vec!["-s", ctl.as_str()];
        a.extend_from_slice(args);
        cmd::run("birdc", &a)
    }

    /// Stops this BIRD if it runs (SIGTERM, then SIGKILL after 3 s).
    /// Returns whether there was a process to stop.
    pub fn stop(&self) -> Result<bool> {
        let Some(pid) = self.running_pid() else {
            return Ok(false);
        };
        let p = pid.to_string();
        let _ = cmd::run("kill", &["-TERM", &p]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() > deadline {
                let _ = cmd::run("kill", &["-KILL", &p]);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&self.pidfile);
        let _ = std::fs::remove_file(&self.ctl);
        Ok(true)
    }

    /// BGP sessions as BIRD reports them (`show protocols all`).
    pub fn bgp_sessions(&self) -> Result<Vec<BgpSession>> {
        Ok(parse_show_protocols_all(&self.birdc(&[
            "show",
            "protocols",
            "all",
        ])?))
    }
}

/// Writes a config only when its content changed; returns whether it did.
/// Through the agent's one atomic writer, so BIRD never reads half a file.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    use underlay::system::files::{write_atomic, Durability, WriteSpec};
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    write_atomic(
        path,
        text.as_bytes(),
        &WriteSpec::new(0o644, Durability::Derived),
    )
    .with_context(|| format!("write {}", path.display()))?;
    Ok(true)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BgpSession {
    /// BIRD protocol name.
    pub name: String,
    pub peer: String,
    pub peer_asn: Option<u32>,
    /// BIRD's BGP state name: Idle, Connect, Active, OpenSent, OpenConfirm,
    /// Established (or `Down` when the protocol is disabled).
    pub state: String,
}

/// Parses `birdc show protocols all`, keeping BGP protocols only.
pub fn parse_show_protocols_all(text: &str) -> Vec<BgpSession> {
    let mut out = vec![];
    let mut cur: Option<BgpSession> = None;
    for line in text.lines() {
        // A protocol header starts in column 0: "name  BGP  ---  up  since  info".
        if !line.starts_with(' ') && !line.is_empty() {
            if let Some(s) = cur.take() {
                out.push(s);
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 4 && cols[1] == "BGP" {
                let state = if cols[3] == "down" { "Down" } else { "Idle" };
                cur = Some(BgpSession {
                    name: cols[0].to_string(),
                    peer: String::new(),
                    peer_asn: None,
                    state: state.to_string(),
                });
            }
            continue;
        }
        let Some(s) = cur.as_mut() else { continue };
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "BGP state" => s.state = v.to_string(),
            "Neighbor address" => s.peer = v.split('%').next().unwrap_or(v).to_string(),
            "Neighbor AS" => s.peer_asn = v.parse().ok(),
            _ => {}
        }
    }
    out.extend(cur);
    out
}

pub fn render_tor_conf(lab: &Lab, tor: Tor) -> String {
    let (_, client_addr) = tor.client_link();
    let other = tor.other();
    let mut c = String::new();
    let _ = write!(
        c,
        "{LAB_MARKER}: ToR {name} (AS {asn})\n\
         router id {rid};\n\
         log stderr all;\n\n\
         protocol device {{ scan time 10; }}\n\n\
         {BFD_PROTOCOL}\n\
         # ECMP towards hosts; only BGP-learned routes enter the kernel.\n\
         protocol kernel {{\n  merge paths on;\n  ipv4 {{ import none; export where source = RTS_BGP; }};\n}}\n\n\
         # What the fabric announces to hosts: a default and the client subnet.\n\
         protocol static fabric {{\n  ipv4;\n  route 0.0.0.0/0 blackhole;\n  route {CLIENT_SUBNET} via {client_addr};\n}}\n\n\
         filter from_hosts {{\n  if net ~ [ 10.10.0.0/16{{32,32}}, 10.244.0.0/16{{{POD_BLOCK_LEN},{POD_BLOCK_LEN}}} ] then accept;\n  reject;\n}}\n\n\
         filter to_hosts {{\n  if proto = \"fabric\" then accept;\n  reject;\n}}\n\n\
         template bgp host_peer {{\n  local as {asn};\n{BGP_TIMERS}  bfd on;\n  ipv4 {{ import filter from_hosts; export filter to_hosts; }};\n}}\n\n\
         # The other ToR: host routes only, as a detour when a host link is down.\n\
         protocol bgp {other_proto} {{\n  local {my_peer} as {asn};\n  neighbor {other_peer} as {other_asn};\n{BGP_TIMERS}  ipv4 {{ import filter from_hosts; export filter from_hosts; }};\n}}\n",
        name = tor.name(),
        asn = tor.asn(),
        rid = tor.router_id(),
        other_proto = other.name().replace('-', "_"),
        my_peer = tor.peer_link_addr(),
        other_peer = other.peer_link_addr(),
        other_asn = other.asn(),
    );
    for h in lab.hosts() {
        let u = &h.uplinks[tor.index() as usize];
        let _ = write!(
            c,
            "\nprotocol bgp {} from host_peer {{\n  local {} as {};\n  neighbor {} as {};\n}}\n",
            h.name,
            u.tor_addr,
            tor.asn(),
            u.host_addr,
            h.asn
        );
    }
    c
}

/// Calico's BIRD, as far as the host BIRD can tell: its own router id, listens
/// on 127.0.0.2:1179, syncs `main` (kernel protocol without a table option)
/// with the kernel settings of Calico's own bird.cfg template (`learn`,
/// `persist`, `scan time 2`), announces the pod block from a blackhole static
/// route, peers only with the host BIRD (iBGP, same ASN). `extra` are more
/// blackhole routes in `pod_blocks` (the churn of the table-fight scenarios,
/// like Calico IPAM allocating and releasing blocks).
pub fn render_calico_conf(h: &Host, extra: &[String]) -> String {
    let mut routes = format!("  route {} blackhole;\n", h.pod_block_cidr());
    for r in extra {
        let _ = writeln!(routes, "  route {r} blackhole;");
    }
    format!(
        "{LAB_MARKER}: Calico-role BIRD of {name}\n\
         router id {rid};\n\
         log stderr all;\n\n\
         protocol device {{ scan time 10; }}\n\n\
         # Like Calico (its bird.cfg template): syncs main, learns alien routes,\n\
         # keeps routes on exit, scans every 2 s; exports only our blackhole routes.\n\
         protocol kernel {{\n  learn;\n  persist;\n  scan time 2;\n  ipv4 {{ import all; export where proto = \"pod_blocks\"; }};\n}}\n\n\
         protocol static pod_blocks {{\n  ipv4;\n{routes}}}\n\n\
         protocol bgp host_bird {{\n  local 127.0.0.2 port 1179 as {asn};\n  neighbor 127.0.0.1 port 179 as {asn};\n  multihop;\n{BGP_TIMERS}  ipv4 {{ import none; export where proto = \"pod_blocks\"; next hop self; }};\n}}\n",
        name = h.name,
        rid = h.calico_router_id,
        asn = h.asn,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     16:30:00.000
tor_a      BGP        ---        up     16:30:01.123  Established
  BGP state:          Established
    Neighbor address: 172.30.2.0
    Neighbor AS:      65001
    Local AS:         65101
  Channel ipv4
    State:          UP

tor_b      BGP        ---        start  16:30:01.123  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 172.30.3.0
    Neighbor AS:      65002
calico     BGP        ---        down   16:30:01.123
  BGP state:          Down
    Neighbor address: 127.0.0.2
    Neighbor AS:      65101
";

    #[test]
    fn parses_bgp_sessions() {
        let s = parse_show_protocols_all(SAMPLE);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "tor_a");
        assert_eq!(s[0].peer, "172.30.2.0");
        assert_eq!(s[0].peer_asn, Some(65001));
        assert_eq!(s[0].state, "Established");
        assert_eq!(s[1].state, "Active");
        assert_eq!(s[2].state, "Down");
    }

    #[test]
    fn tor_conf_peers_with_every_host() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", 3).unwrap();
        let c = render_tor_conf(&lab, Tor::B);
        assert!(c.starts_with(LAB_MARKER));
        assert!(c.contains("neighbor 172.30.7.1 as 65103;"));
        assert!(c.contains("neighbor 172.30.0.0 as 65001;"));
        assert!(c.contains("merge paths on"));
    }

    #[test]
    fn calico_conf_is_like_calico_and_churns() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", 2).unwrap();
        let h = lab.host(2);
        let c = render_calico_conf(&h, &[]);
        assert!(c.contains("learn;") && c.contains("persist;") && c.contains("scan time 2;"));
        assert!(c.contains("route 10.244.2.0/26 blackhole;"));
        assert!(!c.contains("10.244.2.64/26"));
        assert!(!c.contains("kernel table"));
        let c = render_calico_conf(&h, &[h.churn_block_cidr()]);
        assert!(c.contains("route 10.244.2.64/26 blackhole;"));
        assert!(c.contains("\n  hold time 9;"));
    }
}
