//! A real HTTPS server for source tests: rustls over TCP, bound to an
//! address inside a network namespace the test created (its listening
//! thread enters the namespace before it binds, so nothing listens on the
//! machine's own network). A test CA and server certificate are made with
//! the `openssl` CLI in a temporary directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What a path answers.
#[derive(Clone)]
pub enum Reply {
    Body(Vec<u8>),
    /// A body sent without Content-Length (read to EOF): the size cap must
    /// hold while streaming, not only from the header.
    Unsized(Vec<u8>),
    Redirect(String),
    /// Accept, read the request, never answer (until the server stops).
    Hang,
    Status(u16),
}

/// A test CA and a server certificate for `ip`, made by `openssl`.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new(ip: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl (install it: vm-tests/setup.sh)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=underlay test CA",
        ]);
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={ip}"),
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            format!(
                "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa { dir }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Server {
    /// Serves `routes` on `addr` inside network namespace `netns`.
    pub fn start(
        netns: &str,
        addr: SocketAddr,
        ca: &TestCa,
        routes: BTreeMap<String, Reply>,
    ) -> Server {
        let d = ca.dir.path();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(d.join("server.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(d.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = Arc::new(config);
        let routes = Arc::new(routes);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = netns.to_string();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            underlay_testkit::enter(&netns);
            let l = TcpListener::bind(addr).expect("bind inside the namespace");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (config, routes, stop) =
                            (config.clone(), routes.clone(), stop2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(s, config, &routes, &stop);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the server started");
        Server {
            stop,
            thread: Some(thread),
            addr,
        }
    }

    /// Stops listening: connections are refused from now on.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

fn handle(
    s: TcpStream,
    config: Arc<rustls::ServerConfig>,
    routes: &BTreeMap<String, Reply>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut reader = BufReader::new(&mut tls);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    drop(reader);
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = path.split('?').next().unwrap_or("/").to_string();
    let reply = routes.get(&path).cloned().unwrap_or(Reply::Status(404));
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n")
    };
    match reply {
        Reply::Body(b) => {
            tls.write_all(head("200 OK", &format!("Content-Length: {}\r\n", b.len())).as_bytes())?;
            tls.write_all(&b)?;
        }
        Reply::Unsized(b) => {
            tls.write_all(head("200 OK", "").as_bytes())?;
            for chunk in b.chunks(64 * 1024) {
                if tls.write_all(chunk).is_err() {
                    break; // the client hung up at its cap
                }
            }
        }
        Reply::Redirect(to) => {
            tls.write_all(
                head(
                    "302 Found",
                    &format!("Location: {to}\r\nContent-Length: 0\r\n"),
                )
                .as_bytes(),
            )?;
        }
        Reply::Status(code) => {
            tls.write_all(head(&format!("{code} X"), "Content-Length: 0\r\n").as_bytes())?;
        }
        Reply::Hang => {
            let t = Instant::now();
            while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(())
}
