//! The PXE-style boot scenario: what a host installed and booted over PXE
//! sees, with no cloud-init host facts and no local profile.
//!
//! ```text
//!   <prefix>prov: HTTPS 10.99.1.1:443 (python3 http.server + ssl, a lab CA)
//!        | veth 10.99.1.1/31 -- 10.99.1.0/31 (ToR A routes between; ToR B via the ToR link)
//!   <prefix>tor-a: dnsmasq on tap h1 (10.99.0.1/24, range 10.99.0.100-149, router 10.99.0.1)
//!        | tap h1 (also the transit /31)
//!   [ VM h1: BOOTIF NIC -> ifupdown + dhclient -> 10.99.0.1xx/24 (the provisioning address) ]
//! ```
//!
//! How the provisioning address comes to be before underlay runs, as on a
//! Debian host installed over PXE: the installer (netcfg, which honours
//! BOOTIF=) writes an ifupdown stanza with DHCP on the boot NIC; at every boot
//! ifupdown's networking.service runs dhclient on it, which holds
//! network.target until it has a lease; underlay.service is After=
//! network.target and fetches over that address, then converges around it (the
//! address is foreign and stays). The test image has no installer, so
//! `pxe-installer-standin.service` (vm/guest, pulled in only by this scenario)
//! writes that stanza from BOOTIF= on the first boot. The DHCP server runs in
//! the ToR namespace, where a ToR's DHCP relay would forward to one.
//!
//! The kernel command line is the PXELINUX/iPXE one from README "First boot":
//! `BOOTIF=01-<mac>`, `underlay.profile=https://...` + `.sha256=`,
//! `underlay.host=https://.../hosts/${mac}.toml` + `.sha256=` and
//! `underlay.ca=/etc/underlay/prov-ca.pem`; the lab CA file reaches the disk
//! through the NoCloud seed's write_files (the operator's image would carry
//! it). The seed has no host facts and no profile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::qemu::{self, VmSpec};
use super::scenarios::{
    check_converged, guest, guest_out, reboot_vm, wait_until, Options, BOOT_TIMEOUT, FLAT_PROFILE,
};
use super::{fabric, image, seed, VmLab};
use crate::cmd;
use crate::plan::{Host, Tor};
use crate::scenarios::Outcome;

/// The ToR A side of the provisioning subnet (what a relay's SVI would be).
const PROV_GW: &str = "10.99.0.1";
const PROV_SUBNET_LEN: u8 = 24;
const DHCP_RANGE: (&str, &str) = ("10.99.0.100", "10.99.0.149");
/// The provisioning server, one routed hop behind ToR A.
const SERVER: &str = "10.99.1.1";
const SERVER_TOR_SIDE: &str = "10.99.1.0";
/// Where the seed puts the lab CA, and what `underlay.ca=` names.
const CA_PATH: &str = "/etc/underlay/prov-ca.pem";
const PROFILE_PATH: &str = "profiles/l3-ecmp-calico.toml";

/// The HTTPS server: serves `root`, logs each request (client address first).
const HTTPS_PY: &str = r#"import functools, http.server, ssl, sys
root, cert, key, addr, log = sys.argv[1:6]
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        with open(log, "a") as f:
            f.write("%s %s\n" % (self.client_address[0], fmt % args))
srv = http.server.ThreadingHTTPServer((addr, 443), functools.partial(H, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// The provisioning side of the lab: the server namespace and its HTTPS
/// server, the DHCP server in ToR A. Stopped and removed on drop.
struct Prov {
    dir: PathBuf,
    netns: String,
    tor_netns: String,
    https: Option<Child>,
    dhcp: Option<Child>,
    ca_pem: String,
}

impl Prov {
    fn create(lab: &VmLab, h: &Host) -> Result<Prov> {
        let dir = lab.lab.dir.join("prov");
        let www = dir.join("www");
        std::fs::create_dir_all(www.join("profiles"))?;
        std::fs::create_dir_all(www.join("hosts"))?;
        make_ca(&dir)?;
        let mut p = Prov {
            netns: format!("{}prov", lab.lab.prefix),
            tor_netns: lab.lab.tor_netns(Tor::A),
            ca_pem: std::fs::read_to_string(dir.join("ca.pem"))?,
            dir,
            https: None,
            dhcp: None,
        };
        std::fs::write(www.join(PROFILE_PATH), FLAT_PROFILE)?;
        std::fs::write(
            www.join(format!("hosts/{}.toml", fabric::mac(h, Tor::A))),
            fabric::host_facts(h),
        )?;
        if cmd::netns_exists(&p.netns) {
            cmd::run("ip", &["netns", "del", &p.netns])?;
        }
        cmd::run("ip", &["netns", "add", &p.netns])?;
        cmd::ip(
            &p.tor_netns,
            &[
                "link", "add", "prov", "type", "veth", "peer", "name", "srv", "netns", &p.netns,
            ],
        )?;
        cmd::ip(
            &p.tor_netns,
            &[
                "addr",
                "add",
                &format!("{SERVER_TOR_SIDE}/31"),
                "dev",
                "prov",
            ],
        )?;
        cmd::ip(&p.tor_netns, &["link", "set", "dev", "prov", "up"])?;
        cmd::ip(&p.netns, &["link", "set", "lo", "up"])?;
        cmd::ip(
            &p.netns,
            &["addr", "add", &format!("{SERVER}/31"), "dev", "srv"],
        )?;
        cmd::ip(&p.netns, &["link", "set", "dev", "srv", "up"])?;
        cmd::ip(
            &p.netns,
            &["route", "add", "default", "via", SERVER_TOR_SIDE],
        )?;
        // The provisioning network is routed in the fabric, not only behind
        // the ToR the DHCP came from: once converged, the host reaches it over
        // its ECMP default, through either ToR (ToR B via the ToR link).
        let via_a = Tor::A.peer_link_addr().to_string();
        cmd::ip(
            &lab.lab.tor_netns(Tor::B),
            &[
                "route",
                "add",
                &format!("{SERVER_TOR_SIDE}/31"),
                "via",
                &via_a,
            ],
        )?;
        p.start_https()?;
        Ok(p)
    }

    fn www(&self) -> PathBuf {
        self.dir.join("www")
    }

    fn https_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("https.log")).unwrap_or_default()
    }

    fn start_https(&mut self) -> Result<()> {
        let py = self.dir.join("https.py");
        std::fs::write(&py, HTTPS_PY)?;
        let d = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "/usr/bin/python3"])
            .arg(&py)
            .arg(self.www())
            .args([
                d("server.pem"),
                d("server.key"),
                SERVER.into(),
                d("https.log"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("https.stderr"))?)
            .spawn()
            .context("python3 (package python3) for the HTTPS server")?;
        self.https = Some(child);
        let probe = format!("exec 3<>/dev/tcp/{SERVER}/443");
        let up = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            cmd::succeeds("ip", &["netns", "exec", &self.netns, "bash", "-c", &probe])
        });
        if up.is_none() {
            bail!(
                "the HTTPS server in {} did not listen on {SERVER}:443 within 20 s: {}",
                self.netns,
                std::fs::read_to_string(self.dir.join("https.stderr")).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn stop_https(&mut self) {
        stop_child(&mut self.https);
    }

    /// dnsmasq on ToR A's side of the VM's tap (which exists once QEMU runs
    /// and goes with it: called after every QEMU start).
    fn start_dhcp(&mut self, tap: &str) -> Result<()> {
        stop_child(&mut self.dhcp);
        cmd::ip(
            &self.tor_netns,
            &[
                "addr",
                "replace",
                &format!("{PROV_GW}/{PROV_SUBNET_LEN}"),
                "dev",
                tap,
            ],
        )?;
        let d = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.tor_netns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                // DHCP only: no DNS, no hosts, no resolv.conf.
                "--port=0",
                "--no-hosts",
                "--no-resolv",
                "--user=root",
                "--bind-interfaces",
                &format!("--interface={tap}"),
                "--except-interface=lo",
                &format!(
                    "--dhcp-range={},{},255.255.255.0,10m",
                    DHCP_RANGE.0, DHCP_RANGE.1
                ),
                &format!("--dhcp-option=option:router,{PROV_GW}"),
                "--dhcp-authoritative",
                &format!("--dhcp-leasefile={}", d("dnsmasq.leases")),
                &format!("--pid-file={}", d("dnsmasq.pid")),
                "--log-dhcp",
                &format!("--log-facility={}", d("dnsmasq.log")),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("dnsmasq.stderr"))?)
            .spawn()
            .context("dnsmasq (package dnsmasq-base: vm-tests/setup.sh)")?;
        self.dhcp = Some(child);
        std::thread::sleep(Duration::from_millis(300));
        if let Some(Ok(Some(status))) = self.dhcp.as_mut().map(|c| c.try_wait()) {
            bail!(
                "dnsmasq in {} exited at start ({status}): {}",
                self.tor_netns,
                std::fs::read_to_string(self.dir.join("dnsmasq.stderr")).unwrap_or_default()
            );
        }
        Ok(())
    }

    fn dhcp_acks(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("dnsmasq.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("DHCPACK"))
            .map(|l| l.split_once("dnsmasq").map_or(l, |(_, r)| r).to_string())
            .collect()
    }
}

fn stop_child(c: &mut Option<Child>) {
    if let Some(mut child) = c.take() {
        // Our own child (ip netns exec execs the server): kill by its pid.
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Prov {
    fn drop(&mut self) {
        stop_child(&mut self.https);
        stop_child(&mut self.dhcp);
        if cmd::netns_exists(&self.netns) {
            let _ = cmd::run("ip", &["netns", "del", &self.netns]);
        }
    }
}

/// A lab CA and a server certificate for SERVER (IP SAN), by openssl.
fn make_ca(dir: &Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("openssl (package openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=underlay VM lab provisioning CA",
    ]);
    run(&a)?;
    let mut a = vec!["req", "-new"];
    a.extend(ec);
    let cn = format!("/CN={SERVER}");
    a.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", &cn]);
    run(&a)?;
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:{SERVER}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
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
    ])
}

/// The PXELINUX/iPXE kernel command line for `h` with this profile pin.
fn pxe_cmdline(h: &Host, profile_pin: &str, host_pin: &str) -> Vec<String> {
    let bootif = fabric::mac(h, Tor::A).replace(':', "-");
    vec![
        format!("BOOTIF=01-{bootif}"),
        format!("underlay.profile=https://{SERVER}/{PROFILE_PATH}"),
        format!("underlay.profile.sha256={profile_pin}"),
        // ${mac} is underlay's template (the BOOTIF NIC), not a shell's.
        format!("underlay.host=https://{SERVER}/hosts/${{mac}}.toml"),
        format!("underlay.host.sha256={host_pin}"),
        format!("underlay.ca={CA_PATH}"),
        "systemd.wants=pxe-installer-standin.service".into(),
        "systemd.wants=kubelet-standin.service".into(),
    ]
}

/// Starts QEMU for `h` with this kernel command line and a seed that carries
/// only the lab CA. `fresh_disk` false keeps the disk of the last boot (the
/// operator fixed the PXE config and power-cycled the same machine).
fn boot_pxe(
    lab: &mut VmLab,
    prov: &mut Prov,
    h: &Host,
    cmdline: Vec<String>,
    fresh_disk: bool,
) -> Result<()> {
    if let Ok(v) = lab.vm(&h.name) {
        // A clean power-off: pulling the plug (QMP quit) loses what the
        // guest had not written back, e.g. cloud-init's files of this boot
        // (zero-length after ext4's delayed allocation), as on real hardware.
        if v.alive() {
            let _ = v.ctl().run(
                "systemd-run --quiet --on-active=1 systemctl poweroff",
                Duration::from_secs(30),
            );
            let off = wait_until(Duration::from_secs(180), Duration::from_millis(500), || {
                !v.alive()
            });
            if off.is_none() {
                eprintln!("{}: no power-off within 180 s; stopping QEMU", h.name);
            }
        }
        v.stop();
    }
    let dir = lab.lab.dir.join(&h.name);
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.qcow2");
    if fresh_disk || !disk.exists() {
        image::overlay(&lab.image, &disk)?;
    }
    let user_data = seed::user_data(&[seed::SeedFile {
        path: CA_PATH,
        mode: "0644",
        content: &prov.ca_pem,
    }]);
    let instance = format!("{}-{}", h.name, std::process::id());
    let seed = seed::write(&dir, &seed::meta_data(&instance, &h.name), &user_data)?;
    let spec = VmSpec {
        name: h.name.clone(),
        dir,
        nics: fabric::nics(&lab.lab, h),
        seed,
        cmdline_extra: cmdline,
        mem_mb: 1024,
    };
    let rec = qemu::start(&lab.image, &lab.accel, &spec)?;
    lab.vms.retain(|v| v.name != h.name);
    lab.vms.push(rec);
    lab.save()?;
    fabric::attach(&lab.lab, h)?;
    let tap = &h
        .uplinks
        .iter()
        .find(|u| u.tor == Tor::A)
        .context("h1 has no ToR A uplink")?
        .tor_if;
    prov.start_dhcp(tap)
}

/// Inside the VM: what underlay would have changed, one `key=value` a line.
const UNTOUCHED: &str = r#"echo "lo=$(ip -4 -o addr show dev lo | awk '{print $4}' | paste -sd,)"
echo "transit=$(ip -4 -o addr show | awk '$4 ~ /^172\.30\./ {print $2" "$4}' | paste -sd,)"
echo "rules=$(ip rule show | paste -sd'|')"
echo "table1001=$(ip route show table 1001 2>/dev/null | wc -l)"
echo "nft=$(nft list tables 2>/dev/null | grep -c underlay)"
echo "cache=$(ls /var/lib/underlay/cache 2>/dev/null | paste -sd,)""#;

const DEFAULT_RULES: &str =
    "0:\tfrom all lookup local|32766:\tfrom all lookup main|32767:\tfrom all lookup default";

fn kv(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
        .to_string()
}

fn prov_address(lab: &VmLab) -> Result<String> {
    guest_out(
        lab,
        "h1",
        r#"ip -4 -o addr show | awk '$4 ~ /^10\.99\.0\./ {print $2" "$4}' | paste -sd,"#,
    )
}

/// Monotonic µs at which `unit` became active (0: never).
fn active_at(lab: &VmLab, unit: &str) -> u64 {
    guest_out(
        lab,
        "h1",
        &format!("systemctl show -p ActiveEnterTimestampMonotonic --value {unit}"),
    )
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0)
}

/// underlay.service converged, then underlay-gates READY, then the kubelet
/// stand-in (the kubelet's ordering point) started.
fn check_kubelet_order(o: &mut Outcome, lab: &VmLab, what: &str) {
    let conv = active_at(lab, "underlay.service");
    let ready = active_at(lab, "underlay-gates.service");
    let kubelet = guest_out(
        lab,
        "h1",
        "systemctl show -p InactiveExitTimestampMonotonic --value kubelet-standin.service",
    )
    .ok()
    .and_then(|s| s.parse::<u64>().ok())
    .unwrap_or(0);
    let s = |us: u64| format!("{:.2} s", us as f64 / 1e6);
    o.check(
        conv > 0 && ready >= conv && kubelet >= ready,
        format!(
            "{what}: underlay.service converged at {}, READY at {}, kubelet-standin started at {} (monotonic)",
            s(conv),
            s(ready),
            s(kubelet)
        ),
    );
}

pub(super) fn pxe_boot(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let t_all = Instant::now();
    let mut o = Outcome::new();
    let r = steps(lab, &mut o);
    o.info(format!(
        "scenario wall clock: {:.0} s",
        t_all.elapsed().as_secs_f64()
    ));
    if let Err(e) = r {
        o.check(false, format!("error: {e:#}"));
    }
    Ok(o)
}

fn steps(lab: &mut VmLab, o: &mut Outcome) -> Result<()> {
    let h = lab.host("h1")?;
    let mut prov = Prov::create(lab, &h)?;
    let profile_sha = sha256(FLAT_PROFILE.as_bytes());
    let host_sha = sha256(fabric::host_facts(&h).as_bytes());
    // The pin of an older revision of the profile: the server has moved on.
    let stale_pin = sha256(format!("{FLAT_PROFILE}# an older revision\n").as_bytes());
    o.info(format!(
        "provisioning server https://{SERVER}/ in {} (lab CA), DHCP in {} on the tap to h1",
        prov.netns, prov.tor_netns
    ));

    // 1. A wrong profile pin: refused, nothing changed.
    let t0 = Instant::now();
    boot_pxe(
        lab,
        &mut prov,
        &h,
        pxe_cmdline(&h, &stale_pin, &host_sha),
        true,
    )?;
    let state = lab.wait_booted("h1", BOOT_TIMEOUT)?;
    o.info(format!(
        "boot with the stale pin: systemd {state} after {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    let addr = prov_address(lab)?;
    o.check(
        !addr.is_empty(),
        format!(
            "the BOOTIF NIC has a provisioning address from the ToR's DHCP: {addr:?} ({})",
            prov.dhcp_acks().join(" | ")
        ),
    );
    let stanza = guest_out(lab, "h1", "cat /etc/network/interfaces.d/provisioning")?;
    o.info(format!(
        "ifupdown stanza (installer stand-in): {}",
        stanza.replace('\n', " | ")
    ));
    let unit = guest_out(
        lab,
        "h1",
        "echo $(systemctl show -p ActiveState --value underlay.service) $(systemctl show -p Result --value underlay.service)",
    )?;
    o.check(
        unit == "failed exit-code",
        format!("underlay.service: {unit} (want failed exit-code)"),
    );
    let journal = guest_out(
        lab,
        "h1",
        "journalctl -b -u underlay.service -o cat --no-pager",
    )?;
    let line = journal
        .lines()
        .find(|l| l.contains("sha256 mismatch"))
        .unwrap_or("")
        .to_string();
    o.check(
        line.contains(&stale_pin) && line.contains(&profile_sha),
        format!(
            "its journal names both hashes (pinned {}..., served {}...): {line:?}",
            &stale_pin[..12],
            &profile_sha[..12]
        ),
    );
    let fetched = prov
        .https_log()
        .lines()
        .filter(|l| l.starts_with("10.99.0.") && l.contains(PROFILE_PATH))
        .count();
    o.check(
        fetched > 0,
        format!(
            "the HTTPS server logged {fetched} GET(s) of the profile from the provisioning address"
        ),
    );
    let u = guest_out(lab, "h1", UNTOUCHED)?;
    o.check(
        kv(&u, "lo") == "127.0.0.1/8"
            && kv(&u, "transit").is_empty()
            && kv(&u, "rules") == DEFAULT_RULES
            && kv(&u, "table1001") == "0"
            && kv(&u, "nft") == "0"
            && kv(&u, "cache").is_empty(),
        format!("the host's network is untouched: {}", u.replace('\n', "; ")),
    );
    let after = guest_out(
        lab,
        "h1",
        "echo gates=$(systemctl is-active underlay-gates.service) kubelet=$(systemctl is-active kubelet-standin.service)",
    )?;
    o.check(
        after.contains("gates=failed") || after.contains("gates=inactive"),
        format!("no READY and no kubelet: {after}"),
    );

    // 2. The pin fixed in the PXE config, the same machine power-cycled.
    let t0 = Instant::now();
    boot_pxe(
        lab,
        &mut prov,
        &h,
        pxe_cmdline(&h, &profile_sha, &host_sha),
        false,
    )?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    o.info(format!(
        "boot with the right pin: READY after {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    check_converged(o, lab, "h1", "right pin")?;
    check_kubelet_order(o, lab, "right pin");
    let sources = guest(lab, "h1", "underlay show-sources --json 2>/dev/null")?;
    let doc: serde_json::Value = serde_json::from_str(sources.output.trim()).unwrap_or_default();
    let srcs: Vec<String> = doc["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{} {} {} from_cache={}",
                        s["item"].as_str().unwrap_or("?"),
                        s["level"].as_str().unwrap_or("?"),
                        s["origin"].as_str().unwrap_or("?"),
                        s["from_cache"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    o.check(
        srcs.len() == 2
            && srcs
                .iter()
                .all(|s| s.contains(" cmdline https://") && s.ends_with("from_cache=false")),
        format!("both sources from the kernel command line over HTTPS: {srcs:?}"),
    );
    let addr = prov_address(lab)?;
    o.check(
        !addr.is_empty(),
        format!("the provisioning address is left alone (foreign): {addr:?}"),
    );

    // 3. Reboot with the provisioning server down: from the cache.
    prov.stop_https();
    let t0 = reboot_vm(o, lab, "h1", "HTTPS server stopped, the VM rebooted")?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    o.info(format!(
        "back to READY {:.0} s after `systemctl reboot`",
        t0.elapsed().as_secs_f64()
    ));
    let journal = guest_out(
        lab,
        "h1",
        "journalctl -b -u underlay.service -o cat --no-pager",
    )?;
    let cached: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("from the cache"))
        .collect();
    o.check(
        cached
            .iter()
            .any(|l| l.contains("role profile") || l.contains("profile"))
            && cached.iter().any(|l| l.contains("host")),
        format!("underlay.service used the cached profile and host facts: {cached:?}"),
    );
    let unit = guest_out(
        lab,
        "h1",
        "echo $(systemctl show -p ActiveState --value underlay.service) $(systemctl show -p Result --value underlay.service)",
    )?;
    o.check(
        unit == "active success",
        format!("underlay.service after the reboot: {unit}"),
    );
    check_kubelet_order(o, lab, "after the reboot");
    check_converged(o, lab, "h1", "after the reboot")?;
    let apply = guest(lab, "h1", "underlay apply --json 2>/dev/null")?;
    let doc: serde_json::Value = serde_json::from_str(apply.output.trim()).unwrap_or_default();
    o.check(
        apply.code == 0 && doc["changed"] == serde_json::Value::Bool(false),
        format!(
            "a later `underlay apply` (server still down) changes nothing: exit {}, changed={}, msg {}",
            apply.code, doc["changed"], doc["msg"]
        ),
    );
    Ok(())
}
