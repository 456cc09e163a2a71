//! Traffic probes. The lab re-executes itself inside a namespace
//! (`ip netns exec NS underlay-lab probe ...`) instead of depending on
//! iputils/netcat being installed: ICMP echo over a raw socket, a TCP echo
//! server and a TCP client that opens many flows (different source ports, so
//! L4 ECMP hashing spreads them). Every probe is bounded by timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
    pub rtt_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectResult {
    pub flows: u32,
    pub ok: u32,
    pub errors: Vec<String>,
    pub elapsed_ms: u128,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP echo from the current namespace (run inside it).
pub fn ping(dst: Ipv4Addr, count: u32, timeout: Duration) -> Result<PingResult> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("raw ICMP socket (needs root)")?;
    let id = (std::process::id() & 0xffff) as u16;
    let to = SocketAddr::V4(SocketAddrV4::new(dst, 0)).into();
    let mut res = PingResult {
        sent: 0,
        received: 0,
        rtt_ms: vec![],
    };
    for seq in 1..=count as u16 {
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(b"underlay-lab-ping-probe");
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        let start = Instant::now();
        sock.send_to(&pkt, &to)?;
        res.sent += 1;
        let deadline = start + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            sock.set_read_timeout(Some(deadline - now))?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => break,
            };
            // SAFETY: recv_from initialised the first n bytes.
            let data: Vec<u8> = buf[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
            let Some(icmp) = data.get(ihl..) else {
                continue;
            };
            let from_ip = from.as_socket_ipv4().map(|a| *a.ip());
            if icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
                && from_ip == Some(dst)
            {
                res.received += 1;
                res.rtt_ms.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        if seq < count as u16 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(res)
}

/// TCP echo server: prints `ready` once listening, echoes every connection
/// until EOF, exits after `idle` without a new connection (so a lost probe
/// never outlives the lab for long).
pub fn serve(listen: SocketAddr, idle: Duration) -> Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    l.set_nonblocking(true)?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut last = Instant::now();
    loop {
        match l.accept() {
            Ok((mut s, _)) => {
                last = Instant::now();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 16384];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if last.elapsed() > idle {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Opens `flows` TCP connections one after another; each sends `bytes` and
/// expects them echoed back.
pub fn connect(dst: SocketAddr, flows: u32, bytes: usize, timeout: Duration) -> ConnectResult {
    let start = Instant::now();
    let mut ok = 0;
    let mut errors = vec![];
    for i in 0..flows {
        match one_flow(dst, bytes, i, timeout) {
            Ok(()) => ok += 1,
            Err(e) => {
                if errors.len() < 5 {
                    errors.push(format!("flow {i}: {e:#}"));
                }
            }
        }
    }
    ConnectResult {
        flows,
        ok,
        errors,
        elapsed_ms: start.elapsed().as_millis(),
    }
}

fn one_flow(dst: SocketAddr, bytes: usize, i: u32, timeout: Duration) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&dst, timeout).context("connect")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let payload: Vec<u8> = (0..bytes).map(|b| (b as u32 ^ i) as u8).collect();
    s.write_all(&payload).context("send")?;
    s.shutdown(Shutdown::Write)?;
    let mut back = vec![];
    s.read_to_end(&mut back).context("receive")?;
    if back != payload {
        bail!(
            "echo mismatch: sent {} bytes, got {}",
            payload.len(),
            back.len()
        );
    }
    Ok(())
}

// ---- running probes in a namespace from the lab ----

fn self_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("path of underlay-lab")
}

fn run_in_ns<T: for<'de> Deserialize<'de>>(ns: &str, args: &[String]) -> Result<T> {
    let exe = self_exe()?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&exe)
        .arg("probe")
        .args(args)
        .output()
        .with_context(|| format!("probe in {ns}"))?;
    if !out.status.success() {
        bail!(
            "probe {} in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("probe {} in {ns}: bad output", args.join(" ")))
}

pub fn ping_from(ns: &str, dst: Ipv4Addr, count: u32, timeout_ms: u64) -> Result<PingResult> {
    run_in_ns(
        ns,
        &[
            "ping".into(),
            dst.to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout-ms".into(),
            timeout_ms.to_string(),
        ],
    )
}

pub fn connect_from(
    ns: &str,
    dst: SocketAddr,
    flows: u32,
    bytes: usize,
    timeout_ms: u64,
) -> Result<ConnectResult> {
    run_in_ns(
        ns,
        &[
            "connect".into(),
            dst.to_string(),
            "--flows".into(),
            flows.to_string(),
            "--bytes".into(),
            bytes.to_string(),
            "--timeout-ms".into(),
            timeout_ms.to_string(),
        ],
    )
}

/// A TCP echo server running in a namespace; killed (by its own pid) on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(ns: &str, addr: SocketAddr, idle_secs: u64) -> Result<Server> {
        let exe = self_exe()?;
        // `ip netns exec` execs the probe, so the child pid is the server's.
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .args([
                "probe",
                "serve",
                &addr.to_string(),
                "--idle-secs",
                &idle_secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start echo server in {ns}"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "echo server in {ns} on {addr} did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_checksum_of_a_known_packet() {
        // Echo request, id 1, seq 1, no payload: checksum 0xf7fd.
        let pkt = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&pkt), 0xf7fd);
    }

    #[test]
    fn echo_server_and_client_on_loopback() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let l = TcpListener::bind(addr).unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        std::thread::spawn(move || serve(listen, Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(100));
        let r = connect(listen, 4, 3000, Duration::from_secs(2));
        assert_eq!(r.ok, 4, "{:?}", r.errors);
    }
}
