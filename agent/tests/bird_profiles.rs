//! Every valid profile renders a config BIRD accepts. Generates many role
//! profiles and host facts from a fixed seed, varying every documented BGP
//! key (and the related ones: uplinks, families, passwords, pod CIDRs, the
//! log target) over its documented range, then requires each to validate,
//! render and pass the installed BIRD's own parser (`bird -p`). A profile the
//! validator accepts but BIRD refuses is a disagreement between the two
//! layers: this test names the seed, the profile and BIRD's message.
//!
//! Also checks the renderer's name rules against BIRD itself: every word in
//! `bgp::names::keywords()` is refused as a protocol name, and names outside it
//! that the generator uses are accepted.
//!
//! Needs `bird` (vm-tests/setup.sh installs bird2); fails loudly without it.
//! `UNDERLAY_PROFILE_SEED=N` runs another seed, `UNDERLAY_PROFILE_COUNT=N`
//! another count.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use underlay::bgp::{from_desired, names, render};
use underlay::profile::load_str;

const DEFAULT_COUNT: u64 = 600;
const DEFAULT_SEED: u64 = 0x5eed_b1d2;

fn bird() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/bird");
    if sbin.exists() {
        return sbin;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v bird"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match found {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!("`bird` (BIRD 2) is not installed: run vm-tests/setup.sh"),
    }
}

/// `bird -p -c <file>`: `Err` with BIRD's message when it refuses the file.
fn bird_parse(bird: &Path, dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bird)
        .arg("-p")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run bird -p");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// splitmix64: small, deterministic, good enough to spread choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.next() as usize % v.len()]
    }
    /// Edges of a range more often than the middle: that is where layers disagree.
    fn edgy(&mut self, lo: u64, hi: u64) -> u64 {
        match self.next() % 5 {
            0 => lo,
            1 => hi,
            2 => (lo + 1).min(hi),
            _ => self.range(lo, hi),
        }
    }
}

/// One generated case: the two files, what the renderer gets besides them.
struct Case {
    role: String,
    host: String,
    passwords: Vec<Option<String>>,
    in_netns: bool,
}

const UPLINK_BASES: &[&str] = &["tor", "ToR", "leaf", "up", "9rack", "spine_x", "a", "T-1"];
const TABLE_NAMES: &[&str] = &["underlay-host", "host_1", "h", "ULHOST", "7table", "x-y_z"];

fn password(rng: &mut Rng) -> String {
    // Anything printable but the double quote BIRD cannot escape; spaces,
    // backslashes and non-ASCII included.
    const CHARS: &[char] = &[
        'a', 'Z', '0', '9', ' ', '\\', '\'', '{', '}', ';', '#', '$', '%', 'é', '→', '~', '`',
    ];
    let n = rng.range(1, 80);
    (0..n).map(|_| *rng.pick(CHARS)).collect()
}

/// Any ASN the model takes: 0, 65535 and 4294967295 are reserved.
fn asn(rng: &mut Rng) -> u64 {
    match rng.next() % 5 {
        0 => 1,
        1 => 65534,
        2 => 65536,
        3 => 4_294_967_294,
        _ => loop {
            let a = rng.range(1, 4_294_967_294);
            if a != 65535 {
                break a;
            }
        },
    }
}

fn generate(rng: &mut Rng) -> Case {
    let mut role = String::from("version = 1\n\n[routing]\n");
    let table = *rng.pick(TABLE_NAMES);
    let table_id = rng.edgy(256, 2_147_483_647);
    let _ = write!(
        role,
        "[[routing.tables]]\nname = \"{table}\"\nid = {table_id}\n\n\
         [[routing.rules]]\npriority = 30000\ntable = \"main\"\nsuppress_prefixlength = 0\n\n\
         [[routing.rules]]\npriority = 30001\ntable = \"{table}\"\n\n"
    );
    let v6 = rng.chance(40);
    let mut cidrs = vec![format!("10.{}.0.0/16", rng.range(11, 255))];
    if v6 && rng.chance(70) {
        cidrs.push(format!("fd00:{:x}::/56", rng.range(1, 0xffff)));
    }
    if rng.chance(10) {
        cidrs.clear();
    }
    let quoted: Vec<String> = cidrs.iter().map(|c| format!("\"{c}\"")).collect();
    let _ = write!(role, "[pods]\ncidrs = [{}]\n\n", quoted.join(", "));

    // [bgp]
    let mut bgp = format!("[bgp]\nhost_table = \"{table}\"\n");
    let bfd_off = rng.chance(25);
    let hold = match rng.next() % 6 {
        0 if !bfd_off => 0,
        1 => 3,
        2 => 65535,
        3 => 9,
        _ => rng.range(3, 65535),
    };
    let hold_set = hold != 9 || rng.chance(50);
    if hold_set {
        let _ = writeln!(bgp, "hold_time = {hold}");
    }
    if hold == 0 {
        if rng.chance(30) {
            bgp.push_str("keepalive = 0\n");
        }
    } else if rng.chance(60) {
        let _ = writeln!(bgp, "keepalive = {}", rng.edgy(1, hold - 1));
    }
    if rng.chance(50) {
        let _ = writeln!(bgp, "connect_retry = {}", rng.edgy(1, 65535));
    }
    let gr = match rng.next() % 3 {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    if let Some(g) = gr {
        let _ = writeln!(bgp, "graceful_restart = {g}");
    }
    if gr != Some(false) {
        if rng.chance(50) {
            let _ = writeln!(bgp, "graceful_restart_time = {}", rng.edgy(1, 4095));
        }
        match rng.next() % 3 {
            0 => {}
            1 => bgp.push_str("long_lived_graceful_restart = false\n"),
            _ => {
                bgp.push_str("long_lived_graceful_restart = true\n");
                if rng.chance(60) {
                    let _ = writeln!(bgp, "long_lived_stale_time = {}", rng.edgy(1, 16_777_215));
                }
            }
        }
    }
    let in_netns = rng.chance(50);
    match rng.next() % 5 {
        0 => bgp.push_str("log = \"syslog\"\n"),
        1 => bgp.push_str("log = \"stderr\"\n"),
        2 => bgp.push_str("log = \"/var/log/bird/host bird.log\"\n"),
        _ => {}
    }
    if rng.chance(30) {
        bgp.push_str(
            "config_path = \"/etc/bird/bird.conf\"\ncontrol_socket = \"/run/bird/bird.ctl\"\n",
        );
    }
    if bfd_off {
        bgp.push_str("\n[bgp.bfd]\nenabled = false\n");
    } else if rng.chance(70) {
        bgp.push_str("\n[bgp.bfd]\n");
        if rng.chance(70) {
            let _ = writeln!(bgp, "interval_ms = {}", rng.edgy(10, 10_000));
        }
        if rng.chance(70) {
            let _ = writeln!(bgp, "multiplier = {}", rng.edgy(1, 255));
        }
    }
    let host_asn = asn(&mut *rng);
    match rng.next() % 4 {
        0 => {}
        1 => bgp.push_str("\n[bgp.calico]\nenabled = false\n"),
        _ => {
            bgp.push_str("\n[bgp.calico]\n");
            let (h, c) = if v6 && rng.chance(40) {
                (
                    "::1".to_string(),
                    format!("fd00::{:x}", rng.range(2, 0xffff)),
                )
            } else {
                let a = rng.range(1, 254);
                (
                    "127.0.0.1".to_string(),
                    format!("127.0.{}.{}", rng.range(0, 255), a.max(2)),
                )
            };
            if rng.chance(70) || h != "127.0.0.1" {
                let _ = writeln!(bgp, "host_address = \"{h}\"\ncalico_address = \"{c}\"");
            }
            if rng.chance(50) {
                let port = loop {
                    let p = rng.edgy(1, 65535);
                    if p != 179 {
                        break p;
                    }
                };
                let _ = writeln!(bgp, "calico_port = {port}");
            }
            if rng.chance(50) {
                let _ = writeln!(bgp, "calico_asn = {}", asn(rng));
            }
            if rng.chance(50) {
                let _ = writeln!(bgp, "export_default = {}", rng.chance(50));
            }
        }
    }
    if rng.chance(50) {
        let _ = write!(
            bgp,
            "\n[bgp.readiness]\nmin_paths = {}\ntimeout_s = {}\n",
            rng.range(1, 4),
            rng.range(1, 600)
        );
    }
    role.push_str(&bgp);

    // Host facts: 1-4 uplinks, names distinct by construction.
    let mut host = format!(
        "version = 1\nhostname = \"node-{}\"\nasn = {host_asn}\nservice_ipv4 = \"10.10.{}.{}/32\"\n",
        rng.range(1, 999),
        rng.range(0, 255),
        rng.range(1, 254)
    );
    if v6 {
        let _ = writeln!(
            host,
            "service_ipv6 = \"2001:db8:{:x}::1/128\"",
            rng.range(1, 0xffff)
        );
    }
    let n = rng.range(1, 4) as usize;
    let mut passwords = Vec::new();
    for i in 0..n {
        let name = format!("{}-{i}", rng.pick(UPLINK_BASES));
        let _ = write!(
            host,
            "\n[[uplinks]]\nname = \"{name}\"\nnic = {{ name = \"eth{i}\" }}\npeer_asn = {}\n",
            asn(rng)
        );
        let fam = if v6 { rng.range(0, 2) } else { 0 };
        if fam != 1 {
            let (addr, peer) = if rng.chance(50) {
                (format!("172.30.{i}.1/31"), format!("172.30.{i}.0"))
            } else {
                (format!("172.31.{i}.2/30"), format!("172.31.{i}.1"))
            };
            let _ = writeln!(host, "ipv4 = {{ address = \"{addr}\", peer = \"{peer}\" }}");
        }
        if fam != 0 {
            let (addr, peer) = match rng.next() % 3 {
                0 => (format!("fd00:30:{i}::1/127"), format!("fd00:30:{i}::")),
                // Link-local transit: BIRD needs the interface, which the template always
                // gives. Only on the first uplink: the validator refuses a transit subnet
                // (fe80::/64) used twice.
                2 if i == 0 => ("fe80::1/64".to_string(), "fe80::2".to_string()),
                _ => (format!("fd00:31:{i}::1/64"), format!("fd00:31:{i}::2")),
            };
            let _ = writeln!(host, "ipv6 = {{ address = \"{addr}\", peer = \"{peer}\" }}");
        }
        if rng.chance(40) {
            let _ = writeln!(host, "password_file = \"/etc/underlay/secrets/{name}\"");
            passwords.push(Some(password(rng)));
        } else {
            passwords.push(None);
        }
    }
    Case {
        role,
        host,
        passwords,
        in_netns,
    }
}

#[test]
fn every_valid_profile_renders_and_passes_bird() {
    let bird = bird();
    let seed = std::env::var("UNDERLAY_PROFILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let count = std::env::var("UNDERLAY_PROFILE_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_COUNT);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut rng = Rng(seed);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..count {
        let case = generate(&mut rng);
        let d = match load_str("role.toml", &case.role, "host.toml", &case.host) {
            Ok(d) => d,
            Err(e) => panic!(
                "case {i} (seed {seed:#x}): a profile inside every documented range was refused:\n{e}\n--- role.toml\n{}\n--- host.toml\n{}",
                case.role, case.host
            ),
        };
        let bgp = d.bgp.as_ref().expect("every case has [bgp]");
        let ifnames: Vec<String> = (0..d.uplinks.len()).map(|i| format!("eth{i}")).collect();
        let log = from_desired::log_target(&bgp.log, case.in_netns, |p| {
            root.join(p.strip_prefix("/").unwrap_or(p))
                .display()
                .to_string()
        });
        let params = from_desired::params(&d, bgp, &ifnames, &case.passwords, log);
        let text = match render(&params, None) {
            Ok(t) => t,
            Err(e) => panic!(
                "case {i} (seed {seed:#x}): validated but the renderer refused it: {e}\n--- role.toml\n{}\n--- host.toml\n{}",
                case.role, case.host
            ),
        };
        if let Err(msg) = bird_parse(&bird, dir.path(), &format!("case{i}.conf"), &text) {
            panic!(
                "case {i} (seed {seed:#x}): BIRD refused the rendered config: {msg}\n--- role.toml\n{}\n--- host.toml\n{}\n--- bird.conf\n{}",
                case.role,
                case.host,
                underlay::bgp::redact(&text)
            );
        }
        // Coverage evidence: which knobs the run exercised.
        let g = bgp.graceful_restart;
        seen.insert(format!("hold0={}", bgp.hold_time == 0));
        seen.insert(format!("bfd={}", bgp.bfd.is_some()));
        seen.insert(format!("gr={}", g.is_some()));
        seen.insert(format!(
            "llgr={}",
            g.is_some_and(|g| g.long_lived_stale_time.is_some())
        ));
        seen.insert(format!(
            "calico={}",
            bgp.calico
                .map(|c| c.host_address.is_ipv6())
                .map_or("none", |v6| if v6 { "v6" } else { "v4" })
        ));
        seen.insert(format!("v6={}", d.service_ipv6.is_some()));
        seen.insert(format!("uplinks={}", d.uplinks.len()));
        seen.insert(format!(
            "password={}",
            case.passwords.iter().any(Option::is_some)
        ));
        seen.insert(format!("log={:?}", std::mem::discriminant(&params.log)));
    }
    // Every variant of every knob showed up at least once.
    for want in [
        "hold0=true",
        "hold0=false",
        "bfd=true",
        "bfd=false",
        "gr=true",
        "gr=false",
        "llgr=true",
        "llgr=false",
        "calico=none",
        "calico=v4",
        "calico=v6",
        "v6=true",
        "v6=false",
        "uplinks=1",
        "uplinks=2",
        "uplinks=3",
        "uplinks=4",
        "password=true",
        "password=false",
    ] {
        assert!(
            seen.contains(want),
            "{count} cases never had {want}: {seen:?}"
        );
    }
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("log=")).count(),
        3,
        "{seen:?}"
    );
}

#[test]
fn keywords_match_bird() {
    let bird = bird();
    let dir = tempfile::tempdir().unwrap();
    let conf = |name: &str| {
        format!(
            "router id 10.0.0.1;\nprotocol device {{}}\nprotocol bgp {name} {{\n  local 10.0.0.1 as 65000;\n  neighbor 10.0.0.0 as 65001;\n  ipv4 {{ import all; export none; }};\n}}\n"
        )
    };
    let mut accepted = Vec::new();
    for kw in names::keywords() {
        if bird_parse(&bird, dir.path(), "kw.conf", &conf(kw)).is_ok() {
            accepted.push(kw);
        }
    }
    assert!(
        accepted.is_empty(),
        "BIRD accepts these as protocol names; drop them from agent/src/bgp/bird-keywords.txt: {accepted:?}"
    );
    // Names the generator and the shipped profiles use must pass both.
    for base in UPLINK_BASES.iter().chain(["tor-a", "tor-b", "is-a"].iter()) {
        for v6 in [false, true] {
            let id = names::session_name(&format!("{base}-0"), v6);
            assert!(names::reserved(&id).is_none(), "{id}");
            bird_parse(&bird, dir.path(), "ok.conf", &conf(&id))
                .unwrap_or_else(|e| panic!("{id}: BIRD refused a name names.rs allows: {e}"));
        }
    }
}
