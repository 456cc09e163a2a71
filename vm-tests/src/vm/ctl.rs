//! The host end of a VM's control channel: a virtio-serial port
//! (`org.underlay.ctl`) that QEMU exposes as a unix socket. One line each
//! way (see `vm/guest/usr/local/sbin/underlay-vmctl`):
//!
//! ```text
//! host:  <id> <base64 of a bash script>
//! guest: <id> <exit code> <base64 of its stdout and stderr>
//! ```
//!
//! No agent and no network: the guest's NICs stay the agent's alone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn b64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// What a script printed and how it exited.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: i32,
    pub output: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
}

/// Request ids unique across connections and processes: a reply the guest
/// still owes to an earlier client (one that timed out) is never taken for
/// the answer to a new request.
fn unique_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seq = NEXT.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
    ((u64::from(std::process::id()) << 44) ^ nanos ^ seq) & ((1 << 62) - 1)
}

pub struct Ctl {
    path: PathBuf,
    conn: Option<(UnixStream, BufReader<UnixStream>)>,
    next_id: u64,
}

impl Ctl {
    pub fn new(path: &Path) -> Ctl {
        Ctl {
            path: path.to_path_buf(),
            conn: None,
            next_id: unique_id(),
        }
    }

    fn connect(&mut self) -> Result<&mut (UnixStream, BufReader<UnixStream>)> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path)
                .with_context(|| format!("control channel {}", self.path.display()))?;
            let r = BufReader::new(s.try_clone()?);
            self.conn = Some((s, r));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Runs `script` with bash in the guest; waits up to `timeout` for the
    /// reply. A reply to an earlier, timed-out request is skipped.
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("{id} {}\n", b64_encode(script.as_bytes()));
        let deadline = Instant::now() + timeout;
        let result = (|| -> Result<Reply> {
            let (w, r) = self.connect()?;
            w.write_all(line.as_bytes())?;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    bail!("no reply within {} s", timeout.as_secs());
                }
                r.get_ref().set_read_timeout(Some(left))?;
                let mut reply = String::new();
                match r.read_line(&mut reply) {
                    Ok(0) => bail!("the control channel closed"),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        bail!("no reply within {} s", timeout.as_secs())
                    }
                    Err(e) => return Err(e.into()),
                }
                let mut parts = reply.trim_end().splitn(3, ' ');
                let rid: u64 = parts.next().unwrap_or("").parse().unwrap_or(0);
                if rid != id {
                    continue;
                }
                let code: i32 = parts
                    .next()
                    .context("reply without exit code")?
                    .parse()
                    .context("reply with a bad exit code")?;
                let output = b64_decode(parts.next().unwrap_or(""))?;
                return Ok(Reply {
                    code,
                    output: String::from_utf8_lossy(&output).into_owned(),
                });
            }
        })();
        if result.is_err() {
            // A half-read line would confuse the next request: reconnect.
            self.conn = None;
        }
        result.with_context(|| {
            let first = script.lines().next().unwrap_or("");
            format!("in the guest: `{first}`")
        })
    }

    /// Waits until the guest end answers (it starts early in the boot).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let mut last = None;
        while t0.elapsed() < timeout {
            match self.run("echo ready", Duration::from_secs(2)) {
                Ok(r) if r.output.trim() == "ready" => return Ok(t0.elapsed()),
                Ok(r) => last = Some(format!("unexpected reply {:?}", r.output)),
                Err(e) => last = Some(format!("{e:#}")),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the guest's control channel did not answer within {} s (last: {})",
            timeout.as_secs(),
            last.unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "echo ready\n", "ü\0\u{1}"] {
            let e = b64_encode(s.as_bytes());
            assert_eq!(b64_decode(&e).unwrap(), s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode("aGVsbG8=").unwrap(), b"hello");
        assert!(b64_decode("a*b").is_err());
    }
}
