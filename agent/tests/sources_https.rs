//! Remote sources against a real HTTPS server, as root, in namespaces the
//! test creates: the "ToR" namespace hosts the provisioning server on
//! 192.0.2.1 (a test CA made by openssl), the host namespace has only a
//! provisioning address 192.0.2.10/24 on eth0, as DHCP would leave it. The
//! agent fetches with --netns over that address, converges, and must leave
//! the address alone (it is foreign).

mod common;
mod https_server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{host_facts, Lab, ROLE};
use https_server::{Reply, Server, TestCa};
use serde_json::Value;

use common::schema_check;

const SERVER_IP: &str = "192.0.2.1";
const BASE: &str = "https://192.0.2.1:8443";

fn sha256(b: &[u8]) -> String {
    underlay::source::Sha256::of(b).to_string()
}

struct Prov {
    lab: Lab,
    ca: TestCa,
    role: Vec<u8>,
    host: Vec<u8>,
    host_file: PathBuf,
}

impl Prov {
    fn new() -> Prov {
        let lab = Lab::new();
        // The provisioning network: a foreign address on the host's eth0, the
        // server's on the ToR side.
        lab.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
        // No IPv6 link-local appearing mid-test, and carrier up before the
        // first snapshot: "nothing changed" compares like with like.
        lab.ip(&["link", "set", "eth0", "addrgenmode", "none"]);
        lab.ip(&["link", "set", "eth0", "up"]);
        let t = Instant::now();
        while common::must("ip", &["-n", &lab.host, "link", "show", "eth0"]).contains("NO-CARRIER")
        {
            assert!(t.elapsed().as_secs() < 5, "eth0 never got carrier");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        common::must(
            "ip",
            &[
                "-n",
                &lab.tor,
                "addr",
                "add",
                "192.0.2.1/24",
                "dev",
                "tora0",
            ],
        );
        common::must("ip", &["-n", &lab.tor, "link", "set", "lo", "up"]);
        let host = host_facts(&["tor-a", "tor-b"]).into_bytes();
        let host_file = lab.write_host("host.toml", std::str::from_utf8(&host).unwrap());
        Prov {
            ca: TestCa::new(SERVER_IP),
            role: std::fs::read(ROLE).unwrap(),
            host,
            host_file,
            lab,
        }
    }

    fn serve(&self, routes: &[(&str, Reply)]) -> Server {
        let routes: BTreeMap<String, Reply> = routes
            .iter()
            .map(|(p, r)| (p.to_string(), r.clone()))
            .collect();
        let addr: SocketAddr = format!("{SERVER_IP}:8443").parse().unwrap();
        Server::start(&self.lab.tor, addr, &self.ca, routes)
    }

    fn cmdline(&self, text: &str) -> PathBuf {
        self.lab.write_host("cmdline", text)
    }

    /// Runs the binary in the host namespace with the scratch root, an
    /// explicit kernel command line and no cloud-init, so nothing of the
    /// machine running the test is read.
    fn run(&self, args: &[&str], cmdline: Option<&Path>) -> (i32, Value, String, f64) {
        let empty = self.lab.write_host("cmdline-empty", "");
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
            .args(args)
            .args(["--json", "--netns", &self.lab.host, "--root"])
            .arg(self.lab.root())
            .arg("--cmdline")
            .arg(cmdline.unwrap_or(&empty))
            .arg("--cloud-init-dir")
            .arg(self.lab.root().join("no-cloud-init"))
            .arg("--instance-data")
            .arg(self.lab.root().join("no-instance-data.json"))
            .output()
            .expect("run underlay");
        let secs = t.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}\nstderr: {stderr}"));
        schema_check::assert_valid(&json);
        (out.status.code().unwrap_or(-1), json, stderr, secs)
    }

    fn apply_profile_url(
        &self,
        path: &str,
        pin: &str,
        extra: &[&str],
    ) -> (i32, Value, String, f64) {
        let url = format!("{BASE}{path}");
        let ca = self.ca.ca_pem();
        let host = self.host_file.to_str().unwrap().to_string();
        let mut args = vec![
            "apply",
            "--profile",
            &url,
            "--profile-sha256",
            pin,
            "--host",
            &host,
            "--ca-file",
            ca.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.run(&args, None)
    }

    /// The namespace's state once the kernel settled (operstate turns from
    /// UNKNOWN to UP some milliseconds after a link is set up).
    fn snapshot(&self) -> String {
        let mut last = self.lab.snapshot(&[]);
        for _ in 0..30 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = self.lab.snapshot(&[]);
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    fn cache_file(&self, name: &str) -> PathBuf {
        self.lab.root().join("var/lib/underlay/cache").join(name)
    }

    fn has_provisioning_address(&self) -> bool {
        let addrs = self.lab.ip_json(&["addr", "show", "dev", "eth0"]);
        addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == "192.0.2.10" && a["prefixlen"] == 24)
    }
}

fn failure(doc: &Value) -> (&str, &str) {
    (
        doc["failure"]["kind"].as_str().unwrap_or_default(),
        doc["failure"]["message"].as_str().unwrap_or_default(),
    )
}

#[test]
fn a_bad_pin_changes_nothing_then_a_good_pin_converges_and_keeps_the_provisioning_address() {
    let p = Prov::new();
    let _server = p.serve(&[("/profile.toml", Reply::Body(p.role.clone()))]);
    let good = sha256(&p.role);
    let bad = sha256(b"some other file");
    let before = p.snapshot();

    let (code, doc, stderr, _) = p.apply_profile_url("/profile.toml?token=s3cret", &bad, &[]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let (kind, msg) = failure(&doc);
    assert_eq!(kind, "input");
    assert!(
        msg.contains(&good) && msg.contains(&bad),
        "both hashes: {msg}"
    );
    assert!(
        msg.contains("sha256 mismatch") && msg.contains(&format!("{BASE}/profile.toml:")),
        "{msg}"
    );
    assert!(
        !doc.to_string().contains("s3cret") && !stderr.contains("s3cret"),
        "no query string anywhere"
    );
    assert_eq!(p.snapshot(), before, "a refused pin changes nothing");
    assert!(!p.cache_file("profile.toml").exists(), "and caches nothing");

    let (code, doc, stderr, _) = p.apply_profile_url("/profile.toml?token=s3cret", &good, &[]);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["converged"], true);
    let src = &doc["sources"][0];
    assert_eq!(src["item"], "profile");
    assert_eq!(src["level"], "flag");
    assert_eq!(src["origin"], format!("{BASE}/profile.toml"));
    assert_eq!(src["sha256"], good);
    assert_eq!(src["from_cache"], false);
    assert_eq!(doc["sources"][1]["level"], "flag");
    assert!(
        p.has_provisioning_address(),
        "the foreign provisioning address survives the converge"
    );
    // The last good copy is kept, with its hash.
    assert_eq!(std::fs::read(p.cache_file("profile.toml")).unwrap(), p.role);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(p.cache_file("profile.json")).unwrap()).unwrap();
    assert_eq!(meta["sha256"], good);
    assert_eq!(meta["origin"], format!("{BASE}/profile.toml"));

    // A bad pin later leaves the cache exactly as it was.
    let cached = std::fs::read(p.cache_file("profile.json")).unwrap();
    let mtime = std::fs::metadata(p.cache_file("profile.toml"))
        .unwrap()
        .modified()
        .unwrap();
    let converged = p.snapshot();
    let (code, doc, _, _) = p.apply_profile_url("/profile.toml", &bad, &[]);
    assert_eq!((code, failure(&doc).0), (1, "input"), "{doc}");
    assert_eq!(std::fs::read(p.cache_file("profile.json")).unwrap(), cached);
    assert_eq!(
        std::fs::metadata(p.cache_file("profile.toml"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    assert_eq!(p.snapshot(), converged);
}

#[test]
fn server_down_converges_from_the_cache_and_says_so_and_without_one_is_transient() {
    let p = Prov::new();
    let good = sha256(&p.role);
    let fast = ["--fetch-timeout", "2", "--fetch-attempts", "2"];

    // No cache yet and nothing listening: a clear transient error.
    let (code, doc, _, _) = p.apply_profile_url("/profile.toml", &good, &fast);
    assert_eq!(code, 1, "{doc}");
    let (kind, msg) = failure(&doc);
    assert_eq!(kind, "transient", "{msg}");
    assert!(
        msg.contains("fetch failed") && msg.contains("no cached copy"),
        "{msg}"
    );
    assert!(msg.contains("after 2 attempts"), "{msg}");

    let server = p.serve(&[("/profile.toml", Reply::Body(p.role.clone()))]);
    let (code, doc, _, _) = p.apply_profile_url("/profile.toml", &good, &fast);
    assert_eq!(code, 0, "{doc}");
    server.stop();

    // The server is down: converge from the cached copy, and say so.
    let (code, doc, stderr, _) = p.apply_profile_url("/profile.toml", &good, &fast);
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["converged"], true);
    assert_eq!(doc["changed"], false, "the same profile: nothing to do");
    assert_eq!(doc["sources"][0]["from_cache"], true);
    assert!(
        doc["sources"][0]["cache_reason"]
            .as_str()
            .unwrap()
            .contains("after 2 attempts"),
        "{doc}"
    );
    assert!(
        doc["msg"]
            .as_str()
            .unwrap()
            .contains("profile from the cache"),
        "{}",
        doc["msg"]
    );
    // And in the human output.
    let out = p.lab.underlay_raw(
        &[
            "verify",
            "--ca-file",
            p.ca.ca_pem().to_str().unwrap(),
            "--profile-sha256",
            &good,
            "--cmdline",
            "/dev/null",
            "--fetch-timeout",
            "1",
            "--fetch-attempts",
            "1",
        ],
        Path::new(&format!("{BASE}/profile.toml")),
        &p.host_file,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("note: profile from the cache"), "{text}");

    // A corrupt cache entry is detected and ignored.
    let mut bytes = p.role.clone();
    bytes.extend_from_slice(b"\n# tampered\n");
    std::fs::write(p.cache_file("profile.toml"), &bytes).unwrap();
    let before = p.snapshot();
    let (code, doc, _, _) = p.apply_profile_url("/profile.toml", &good, &fast);
    assert_eq!(code, 1, "{doc}");
    let (kind, msg) = failure(&doc);
    assert_eq!(kind, "transient");
    assert!(msg.contains("corrupt") && msg.contains("ignored"), "{msg}");
    assert_eq!(p.snapshot(), before);
}

#[test]
fn a_slow_server_times_out_within_the_configured_bound() {
    let p = Prov::new();
    let _server = p.serve(&[("/profile.toml", Reply::Hang)]);
    // 2 attempts of 1 s, one backoff of at most 1 s: at most 3 s of fetching.
    let (code, doc, _, secs) = p.apply_profile_url(
        "/profile.toml",
        &sha256(&p.role),
        &["--fetch-timeout", "1", "--fetch-attempts", "2"],
    );
    assert_eq!(code, 1, "{doc}");
    let (kind, msg) = failure(&doc);
    assert_eq!(kind, "transient");
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        secs >= 2.0,
        "both attempts waited their timeout: {secs:.2} s"
    );
    // Generous hang bound for process start and namespace entry on a loaded CI machine.
    assert!(
        secs < 3.0 + 3.0,
        "bounded by attempts x timeout + backoff: {secs:.2} s"
    );
}

#[test]
fn a_redirect_to_http_an_oversize_body_and_plain_http_are_refused() {
    let p = Prov::new();
    let big = vec![b'#'; 2 * 1024 * 1024];
    let _server = p.serve(&[
        ("/profile.toml", Reply::Body(p.role.clone())),
        ("/moved", Reply::Redirect(format!("{BASE}/profile.toml"))),
        (
            "/to-http",
            Reply::Redirect(format!("http://{SERVER_IP}:8080/profile.toml")),
        ),
        ("/big", Reply::Body(big.clone())),
        ("/big-unsized", Reply::Unsized(big.clone())),
    ]);
    let good = sha256(&p.role);
    let before = p.snapshot();

    let (code, doc, _, _) = p.apply_profile_url("/to-http", &good, &[]);
    assert_eq!((code, failure(&doc).0), (1, "input"), "{doc}");
    assert!(
        failure(&doc)
            .1
            .contains("redirected to http://192.0.2.1:8080/profile.toml, which is not https"),
        "{doc}"
    );

    for path in ["/big", "/big-unsized"] {
        let (code, doc, _, _) = p.apply_profile_url(path, &sha256(&big), &[]);
        assert_eq!((code, failure(&doc).0), (1, "input"), "{path}: {doc}");
        assert!(
            failure(&doc).1.contains("larger than 1048576 bytes"),
            "{path}: {doc}"
        );
    }

    let plain = format!("http://{SERVER_IP}:8443/profile.toml");
    let (code, doc, _, _) = p.run(
        &[
            "plan",
            "--profile",
            &plain,
            "--profile-sha256",
            &good,
            "--host",
            p.host_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!((code, failure(&doc).0), (1, "input"), "{doc}");
    assert!(failure(&doc).1.contains("plain http is refused"), "{doc}");
    assert_eq!(p.snapshot(), before, "nothing changed by any refusal");

    // An https redirect is followed.
    let (code, doc, _, _) = p.apply_profile_url("/moved", &good, &[]);
    assert_eq!(code, 0, "{doc}");
}

#[test]
fn a_kernel_command_line_with_a_bootif_template_provisions_the_host() {
    let p = Prov::new();
    let _server = p.serve(&[
        ("/profile.toml", Reply::Body(p.role.clone())),
        ("/hosts/52:54:00:aa:bb:01.toml", Reply::Body(p.host.clone())),
    ]);
    let cmdline = p.cmdline(&format!(
        "BOOT_IMAGE=/vmlinuz ro console=ttyS0 BOOTIF=01-52-54-00-aa-bb-01 \
         underlay.profile={BASE}/profile.toml underlay.profile.sha256={} \
         underlay.host={BASE}/hosts/${{mac}}.toml underlay.host.sha256={} underlay.ca={}\n",
        sha256(&p.role),
        sha256(&p.host),
        p.ca.ca_pem().display()
    ));
    let (code, doc, stderr, _) = p.run(&["show-sources"], Some(&cmdline));
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["command"], "show-sources");
    assert_eq!(doc["host"], "node-t");
    let host = &doc["sources"][1];
    assert_eq!(host["level"], "cmdline");
    assert_eq!(
        host["origin"],
        format!("{BASE}/hosts/52:54:00:aa:bb:01.toml")
    );
    assert_eq!(host["sha256"], sha256(&p.host));
    assert!(
        !p.cache_file("host.toml").exists(),
        "show-sources keeps no cache"
    );

    let (code, doc, stderr, _) = p.run(&["apply"], Some(&cmdline));
    assert_eq!(code, 0, "{doc}\n{stderr}");
    assert_eq!(doc["converged"], true);
    assert_eq!(doc["sources"][0]["level"], "cmdline");
    assert!(p.has_provisioning_address());
    assert_eq!(std::fs::read(p.cache_file("host.toml")).unwrap(), p.host);
}

#[test]
fn cloud_init_user_data_as_cloud_init_processed_it_provisions_the_host() {
    let p = Prov::new();
    let _server = p.serve(&[("/profile.toml", Reply::Body(p.role.clone()))]);
    // cloud-config.txt as cloud-init 22.4.2 wrote it from a two-part MIME
    // user-data (fixtures/cloud-init/make-cloud-config.py): the profile by
    // URL and pin, the host facts inline (profiles/examples/host.toml, eth0/eth1).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloud-init");
    let instance = p.lab.root().join("cloud-instance");
    std::fs::create_dir_all(&instance).unwrap();
    std::fs::copy(
        fixture.join("cloud-config.txt"),
        instance.join("cloud-config.txt"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_underlay"))
        .args(["apply", "--json", "--netns", &p.lab.host, "--root"])
        .arg(p.lab.root())
        .args(["--cmdline", "/dev/null", "--cloud-init-dir"])
        .arg(&instance)
        .arg("--instance-data")
        .arg(instance.join("none.json"))
        .arg("--ca-file")
        .arg(p.ca.ca_pem())
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    schema_check::assert_valid(&doc);
    assert_eq!(doc["exit_code"], 0, "{doc}");
    assert_eq!(doc["host"], "node-a1");
    assert_eq!(doc["sources"][0]["level"], "cloud-init");
    assert_eq!(doc["sources"][0]["origin"], format!("{BASE}/profile.toml"));
    assert_eq!(
        doc["sources"][1]["declared"],
        "cloud-init user-data underlay.host.toml"
    );
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/examples/host.toml"))
            .unwrap();
    assert_eq!(
        doc["sources"][1]["sha256"],
        sha256(&example),
        "the inline TOML survives cloud-init's YAML round trip byte for byte"
    );
}
