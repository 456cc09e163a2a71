//! `underlay-lab fleet up|run|down`: the lab's hosts as an Ansible fleet.
//!
//! ```text
//!   ul-mgmt: bridge mgmt (192.168.200.254/24), ansible-playbook runs here
//!     |  mgmt0 192.168.200.<i>/24 in every host namespace: sshd listens here
//!   ul-hI: sshd -f <lab>/hI/ssh/sshd_config (own host key, own authorized_keys)
//!          host BIRD running on a placeholder config (as the bird2 package
//!          leaves one), which the module's first run replaces
//! ```
//!
//! `up` builds the fabric (ToRs, hosts, pods, Calico-role BIRDs) but leaves
//! the hosts unconverged: converging them is the playbook's job. The
//! management network is foreign to underlay (never touched, never rolled
//! back), so a host a bad profile takes off the fabric stays reachable.
//! Everything SSH is under `<lab>/fleet`: a client key, `ssh_config` (used
//! with `ssh -F`, so ~/.ssh and /etc/ssh are never read), `known_hosts`
//! built from the hosts' own keys, the inventory, the playbook. The
//! controller is ansible-core from PyPI in the venv vm-tests/ansible-venv.sh
//! creates, run inside the management namespace, never in the root one.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::agent;
use crate::bird::{self, Bird};
use crate::cmd;
use crate::plan::{Host, Lab, Tor};
use crate::topology;

/// Management subnet: host i is .i, the controller .254.
pub const MGMT_CONTROLLER: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 254);
pub const MGMT_IF: &str = "mgmt0";
const MGMT_BRIDGE: &str = "mgmt";

pub fn mgmt_addr(h: &Host) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, h.index)
}

pub fn fleet_dir(lab: &Lab) -> PathBuf {
    lab.dir.join("fleet")
}

fn ssh_dir(lab: &Lab, h: &Host) -> PathBuf {
    h.dir(lab).join("ssh")
}

fn sshd_pidfile(lab: &Lab, h: &Host) -> PathBuf {
    ssh_dir(lab, h).join("sshd.pid")
}

/// The facts file a fleet host gets; `broken` gives it a wrong peer ASN on
/// every uplink (valid input, so it applies, but no session establishes).
pub fn facts_file(lab: &Lab, h: &Host, broken: bool) -> PathBuf {
    if broken {
        h.dir(lab).join("host-broken.toml")
    } else {
        h.facts_file(lab)
    }
}

pub fn broken_facts(h: &Host) -> String {
    let mut text = agent::render_host_facts(h);
    for tor in Tor::ALL {
        text = text.replace(
            &format!("peer_asn = {}", tor.asn()),
            &format!("peer_asn = {}", tor.asn() + 900),
        );
    }
    text
}

/// The host BIRD before underlay: the kind of config the bird2 package
/// ships (a router id and the device protocol, no sessions).
fn placeholder_bird_conf(h: &Host) -> String {
    format!(
        "# placeholder written by underlay-lab fleet: the host BIRD before underlay converges {}\n\
         router id {};\nprotocol device {{ }}\n",
        h.name, h.service_ip
    )
}

pub struct UpOptions {
    pub profile: PathBuf,
}

pub fn up(lab: &Lab, opts: &UpOptions) -> Result<()> {
    let mut lab = lab.clone();
    lab.profile = Some(opts.profile.clone());
    let lab = &lab;
    if let Ok(old) = Lab::load(&lab.dir) {
        if old.prefix != lab.prefix || old.hosts != lab.hosts {
            bail!(
                "{} holds a lab with prefix {:?} and {} hosts; run `underlay-lab fleet down --dir {}` first",
                lab.dir.display(),
                old.prefix,
                old.hosts,
                lab.dir.display()
            );
        }
    } else if cmd::netns_exists(&lab.mgmt_netns()) || cmd::netns_exists(&lab.tor_netns(Tor::A)) {
        // Another lab (another --dir) owns namespaces with this prefix: its
        // sshds and keys would clash with ours.
        bail!(
            "namespaces with prefix {:?} exist but {} holds no lab: another lab uses this prefix; \
             pick another --prefix or take that lab down first",
            lab.prefix,
            lab.dir.display()
        );
    }
    for tool in ["/usr/sbin/sshd", "ssh", "ssh-keygen", "python3"] {
        if !cmd::succeeds("sh", &["-c", &format!("command -v {tool}")]) {
            bail!(
                "`{tool}` is not installed (run vm-tests/setup.sh: openssh-server, python3-venv)"
            );
        }
    }
    lab.save()?;
    topology::ensure(lab).context("building the topology")?;
    ensure_mgmt(lab)?;
    for tor in Tor::ALL {
        let b = Bird::tor(lab, tor);
        bird::write_if_changed(&b.conf, &bird::render_tor_conf(lab, tor))?;
        b.start_or_reload()?;
    }
    let fd = fleet_dir(lab);
    std::fs::create_dir_all(fd.join("results"))?;
    let key = fd.join("id_ed25519");
    if !key.exists() {
        keygen(&key, "underlay-lab fleet controller")?;
    }
    let pubkey = std::fs::read_to_string(key.with_extension("pub"))?;
    let mut known_hosts = String::new();
    for h in lab.hosts() {
        std::fs::create_dir_all(h.root(lab))?;
        bird::write_if_changed(&h.facts_file(lab), &agent::render_host_facts(&h))?;
        bird::write_if_changed(&facts_file(lab, &h, true), &broken_facts(&h))?;
        let host_bird = Bird::host(lab, &h);
        if !host_bird.conf.exists() {
            bird::write_if_changed(&host_bird.conf, &placeholder_bird_conf(&h))?;
        }
        host_bird.start_or_reload()?;
        let c = Bird::calico(lab, &h);
        bird::write_if_changed(&c.conf, &bird::render_calico_conf(&h, &[]))?;
        c.start_or_reload()?;
        let host_key = start_sshd(lab, &h, &pubkey)?;
        let _ = writeln!(known_hosts, "{} {}", mgmt_addr(&h), host_key.trim());
    }
    std::fs::write(fd.join("known_hosts"), known_hosts)?;
    std::fs::write(fd.join("ssh_config"), ssh_config(lab))?;
    std::fs::write(fd.join("site.yml"), PLAYBOOK)?;
    std::fs::write(fd.join("ansible.cfg"), ansible_cfg(lab))?;
    // Every sshd answers (with its own key, checked against known_hosts).
    for h in lab.hosts() {
        wait_ssh(lab, &h, Duration::from_secs(10))?;
    }
    // IPv6 link-locals (pod veth, mgmt0) finish duplicate detection, so a
    // before/after snapshot of a host shows only what a run changed.
    for h in lab.hosts() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cmd::ip(&h.netns, &["-6", "addr", "show", "tentative"])?
            .trim()
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("{}: IPv6 addresses still tentative after 10 s", h.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    cmd::run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// The management namespace with a bridge, and one veth per host into it.
/// The host end (`mgmt0`) is configured by the lab: to underlay it is a
/// foreign interface it never touches.
fn ensure_mgmt(lab: &Lab) -> Result<()> {
    let m = lab.mgmt_netns();
    if !cmd::netns_exists(&m) {
        cmd::run("ip", &["netns", "add", &m])?;
    }
    cmd::ip(&m, &["link", "set", "lo", "up"])?;
    if !cmd::link_exists(&m, MGMT_BRIDGE) {
        cmd::ip(&m, &["link", "add", MGMT_BRIDGE, "type", "bridge"])?;
    }
    cmd::ip(
        &m,
        &[
            "addr",
            "replace",
            &format!("{MGMT_CONTROLLER}/24"),
            "dev",
            MGMT_BRIDGE,
        ],
    )?;
    cmd::ip(&m, &["link", "set", MGMT_BRIDGE, "up"])?;
    for h in lab.hosts() {
        let port = format!("m{}", h.name);
        topology::ensure_veth(&h.netns, MGMT_IF, &m, &port, 1500)?;
        // No duplicate address detection: a link-local address turning from
        // tentative to valid would show up as a change in before/after
        // snapshots that has nothing to do with underlay.
        cmd::sysctl(
            &h.netns,
            &format!("net.ipv6.conf.{MGMT_IF}.accept_dad"),
            "0",
        )?;
        cmd::ip(&m, &["link", "set", &port, "master", MGMT_BRIDGE, "up"])?;
        cmd::ip(
            &h.netns,
            &[
                "addr",
                "replace",
                &format!("{}/24", mgmt_addr(&h)),
                "dev",
                MGMT_IF,
            ],
        )?;
        cmd::ip(&h.netns, &["link", "set", MGMT_IF, "up"])?;
    }
    Ok(())
}

/// Starts (once) the host's own sshd on its management address; returns its
/// public host key for known_hosts.
fn start_sshd(lab: &Lab, h: &Host, authorized: &str) -> Result<String> {
    let d = ssh_dir(lab, h);
    std::fs::create_dir_all(&d)?;
    let key = d.join("ssh_host_ed25519_key");
    if !key.exists() {
        keygen(&key, &format!("{} host key", h.name))?;
    }
    std::fs::write(d.join("authorized_keys"), authorized)?;
    let conf = d.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "# written by underlay-lab fleet: {name}'s own sshd (never /etc/ssh)\n\
             ListenAddress {addr}:22\n\
             HostKey {key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {auth}\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             # The lab dir is below /tmp (world-writable): the path check would refuse it.\n\
             StrictModes no\n\
             MaxStartups 200\n\
             MaxSessions 100\n\
             Subsystem sftp internal-sftp\n\
             LogLevel ERROR\n",
            name = h.name,
            addr = mgmt_addr(h),
            key = key.display(),
            pid = sshd_pidfile(lab, h).display(),
            auth = d.join("authorized_keys").display(),
        ),
    )?;
    if sshd_pid(lab, h).is_none() {
        // sshd's compiled-in privilege separation directory; the
        // openssh-server package normally creates it at boot. Empty, ours
        // to create, never removed (another sshd may use it).
        std::fs::create_dir_all("/run/sshd")?;
        cmd::ns_exec(&h.netns, "/usr/sbin/sshd", &["-f", &conf.to_string_lossy()])
            .with_context(|| format!("start {}'s sshd", h.name))?;
    }
    Ok(std::fs::read_to_string(key.with_extension("pub"))?
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// The pid of this host's sshd when it runs (its command line names our config).
fn sshd_pid(lab: &Lab, h: &Host) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(sshd_pidfile(lab, h))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // sshd rewrites its process title ("sshd: /usr/sbin/sshd -f CONF
    // [listener] ..."), so the config path is looked for anywhere in it.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = ssh_dir(lab, h).join("sshd_config");
    String::from_utf8_lossy(&cmdline)
        .contains(&*conf.to_string_lossy())
        .then_some(pid)
}

pub fn stop_sshds(lab: &Lab) -> Vec<String> {
    let mut out = vec![];
    for h in lab.hosts() {
        if let Some(pid) = sshd_pid(lab, &h) {
            if cmd::succeeds("kill", &["-TERM", &pid.to_string()]) {
                out.push(format!("stopped {}'s sshd (pid {pid})", h.name));
            }
        }
    }
    out
}

fn ssh_config(lab: &Lab) -> String {
    let fd = fleet_dir(lab);
    let mut s = String::from(
        "# written by underlay-lab fleet; used with `ssh -F` (no ~/.ssh, no /etc/ssh)\n",
    );
    for h in lab.hosts() {
        let _ = writeln!(s, "Host {}\n  HostName {}", h.name, mgmt_addr(&h));
    }
    let _ = write!(
        s,
        "Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
         BatchMode yes\n  ConnectTimeout 5\n  LogLevel ERROR\n",
        key = fd.join("id_ed25519").display(),
        kh = fd.join("known_hosts").display(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recap_failed_and_unreachable_hosts() {
        let out = "PLAY RECAP *****\n\
            h1                         : ok=1    changed=0    unreachable=0    failed=0    skipped=0\n\
            h2                         : ok=0    changed=0    unreachable=0    failed=1    skipped=0\n\
            h3                         : ok=0    changed=0    unreachable=1    failed=0    skipped=0\n";
        let m = parse_recap(out);
        assert!(!m["h1"]);
        assert!(m["h2"]);
        assert!(m["h3"]);
    }

    #[test]
    fn broken_facts_change_only_the_peer_asns() {
        let lab = Lab::new(Path::new("/tmp/x"), "ul-", 2).unwrap();
        let h = lab.host(1);
        let good = agent::render_host_facts(&h);
        let bad = broken_facts(&h);
        assert!(bad.contains("peer_asn = 65901") && bad.contains("peer_asn = 65902"));
        assert_eq!(good.lines().count(), bad.lines().count());
        let differ = good
            .lines()
            .zip(bad.lines())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 2);
    }
}

fn ansible_cfg(lab: &Lab) -> String {
    let fd = fleet_dir(lab);
    format!(
        "# written by underlay-lab fleet\n[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n\
         deprecation_warnings = False\nremote_tmp = {rt}\nlocal_tmp = {lt}\n\
         [ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n",
        rt = fd.join("remote-tmp").display(),
        lt = fd.join("local-tmp").display(),
        cp = fd.join("cp").display(),
    )
}

fn wait_ssh(lab: &Lab, h: &Host, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let cfg = fleet_dir(lab).join("ssh_config");
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.mgmt_netns(), "ssh", "-F"])
            .arg(&cfg)
            .args([&h.name, "true"])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: ssh to {} did not work within {} s: {}",
                h.name,
                mgmt_addr(h),
                timeout.as_secs(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The playbook: one task, the module. Results are read from Ansible's own
/// per-host dump (the `tree` callback), so no extra task skews the timing.
pub const PLAYBOOK: &str = r#"---
# written by underlay-lab fleet: converge every lab host over SSH
- name: converge the fabric side of every host
  hosts: fabric
  gather_facts: false
  tasks:
    - name: underlay
      underlay.fabric.converge:
        profile: "{{ ul_profile }}"
        host: "{{ ul_host }}"
        netns: "{{ ul_netns }}"
        root: "{{ ul_root }}"
        binary: "{{ ul_binary }}"
        safe: "{{ ul_safe | bool }}"
        confirm_timeout: "{{ ul_confirm | int }}"
"#;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub forks: u32,
    pub check: bool,
    pub diff: bool,
    /// Safe apply with this confirm window (seconds).
    pub safe: Option<u64>,
    /// Hosts given the broken host facts (wrong peer ASN).
    pub broken: Vec<String>,
    /// Only these hosts (`--limit`).
    pub limit: Option<String>,
}

fn inventory(lab: &Lab, opts: &RunOptions, bin: &Path, profile: &Path) -> String {
    let mut s = String::from("# written by underlay-lab fleet run\n[fabric]\n");
    for h in lab.hosts() {
        let broken = opts.broken.iter().any(|b| b == &h.name);
        let _ = writeln!(
            s,
            "{name} ansible_host={addr} ul_netns={ns} ul_root={root} ul_host={facts}",
            name = h.name,
            addr = mgmt_addr(&h),
            ns = h.netns,
            root = h.root(lab).display(),
            facts = facts_file(lab, &h, broken).display(),
        );
    }
    let _ = write!(
        s,
        "\n[fabric:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n\
         ansible_ssh_common_args=-F {cfg}\nul_profile={profile}\nul_binary={bin}\n\
         ul_safe={safe}\nul_confirm={confirm}\n",
        cfg = fleet_dir(lab).join("ssh_config").display(),
        profile = profile.display(),
        bin = bin.display(),
        safe = opts.safe.is_some(),
        confirm = opts.safe.unwrap_or(60),
    );
    s
}

/// What the module returned for one host (from the tree dump).
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub host: String,
    pub changed: bool,
    pub failed: bool,
    pub rolled_back: bool,
    /// The agent's exit code (4: a safe apply rolled back).
    pub exit_code: Option<i64>,
    pub msg: String,
    /// The agent's own total (durations_ms.total).
    pub agent_ms: Option<f64>,
    /// The agent process as the module timed it.
    pub module_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetRun {
    pub code: Option<i32>,
    pub wall_ms: f64,
    pub hosts: Vec<HostResult>,
    #[serde(skip)]
    pub output: String,
}

/// ansible-core's bin directory (the venv vm-tests/ansible-venv.sh makes).
pub fn ansible_bin() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible-venv.sh");
    let out = Command::new(&script)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} could not make the ansible-core venv (python3-venv, PyPI): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin"))
}

pub fn collections_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ansible")
}

/// Runs the playbook from the management namespace over SSH.
pub fn run(lab: &Lab, opts: &RunOptions) -> Result<FleetRun> {
    let fd = fleet_dir(lab);
    if !fd.join("ssh_config").exists() {
        bail!(
            "{}: no fleet here (run `underlay-lab fleet up` first)",
            fd.display()
        );
    }
    let bin = agent::find_agent_bin()?;
    let profile = lab.profile.clone().unwrap_or_else(agent::default_profile);
    let ansible = ansible_bin()?;
    std::fs::write(
        fd.join("inventory.ini"),
        inventory(lab, opts, &bin, &profile),
    )?;
    let tree = fd.join("results");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.mgmt_netns()])
        .arg(ansible.join("ansible-playbook"))
        .arg("-i")
        .arg(fd.join("inventory.ini"))
        .arg("--forks")
        .arg(opts.forks.to_string())
        .arg(fd.join("site.yml"));
    if opts.check {
        c.arg("--check");
    }
    if opts.diff {
        c.arg("--diff");
    }
    if let Some(l) = &opts.limit {
        c.args(["--limit", l]);
    }
    c.env("ANSIBLE_CONFIG", fd.join("ansible.cfg"))
        .env("ANSIBLE_HOME", fd.join("ansible-home"))
        .env("ANSIBLE_COLLECTIONS_PATH", collections_path())
        .env("ANSIBLE_CALLBACKS_ENABLED", "tree")
        .env("ANSIBLE_CALLBACK_TREE_DIR", &tree)
        .env("ANSIBLE_NOCOLOR", "1");
    let t0 = Instant::now();
    let out = c.output().context("run ansible-playbook")?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let recap = parse_recap(&output);
    let mut hosts = vec![];
    for h in lab.hosts() {
        let Ok(text) = std::fs::read_to_string(tree.join(&h.name)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        hosts.push(HostResult {
            host: h.name.clone(),
            changed: v["changed"].as_bool().unwrap_or(false),
            // The dump drops Ansible's own `failed` flag: the recap has it.
            failed: recap.get(&h.name).copied().unwrap_or(true),
            rolled_back: v["rolled_back"].as_bool().unwrap_or(false),
            exit_code: v["exit_code"].as_i64(),
            msg: v["msg"].as_str().unwrap_or_default().to_string(),
            agent_ms: v["durations_ms"]["total"].as_f64(),
            module_ms: v["durations_ms"]["module_wall"].as_f64(),
        });
    }
    Ok(FleetRun {
        code: out.status.code(),
        wall_ms,
        hosts,
        output,
    })
}

/// Per host, whether PLAY RECAP counts it failed or unreachable.
pub fn parse_recap(output: &str) -> std::collections::BTreeMap<String, bool> {
    let mut m = std::collections::BTreeMap::new();
    let Some(start) = output.find("PLAY RECAP") else {
        return m;
    };
    for line in output[start..].lines().skip(1) {
        let Some((host, counts)) = line.split_once(" : ") else {
            continue;
        };
        let bad = counts.split_whitespace().any(
            |kv| matches!(kv.split_once('='), Some(("failed" | "unreachable", n)) if n != "0"),
        );
        m.insert(host.trim().to_string(), bad);
    }
    m
}

pub fn render_run(r: &FleetRun) -> String {
    let mut s = format!(
        "{:<6} {:<8} {:<7} {:<12} {:>9}  MSG\n",
        "HOST", "CHANGED", "FAILED", "ROLLED-BACK", "AGENT-MS"
    );
    for h in &r.hosts {
        let _ = writeln!(
            s,
            "{:<6} {:<8} {:<7} {:<12} {:>9}  {}",
            h.host,
            h.changed,
            h.failed,
            h.rolled_back,
            h.agent_ms.map(|m| format!("{m:.1}")).unwrap_or("-".into()),
            h.msg
        );
    }
    let _ = writeln!(
        s,
        "ansible-playbook exit {} in {:.0} ms",
        r.code.map(|c| c.to_string()).unwrap_or("by signal".into()),
        r.wall_ms
    );
    s
}

/// The reference for the benchmark: a plain shell loop of `underlay apply`
/// over the same SSH (sequential, or `parallel` at a time with xargs -P).
/// `persist`: reuse one SSH connection per host across loops (ControlMaster,
/// as Ansible's ssh connection does by default), so the comparison with the
/// playbook is not just a comparison of SSH handshakes.
pub fn shell_loop(lab: &Lab, parallel: u32, persist: bool) -> Result<(f64, bool)> {
    let fd = fleet_dir(lab);
    let bin = agent::find_agent_bin()?;
    let profile = lab.profile.clone().unwrap_or_else(agent::default_profile);
    let mut lines = String::new();
    for h in lab.hosts() {
        let _ = writeln!(
            lines,
            "{} {} apply --json --profile {} --host {} --netns {} --root {}",
            h.name,
            bin.display(),
            profile.display(),
            h.facts_file(lab).display(),
            h.netns,
            h.root(lab).display()
        );
    }
    std::fs::write(fd.join("hosts.lines"), lines)?;
    let cfg = fd.join("ssh_config");
    let mux = if persist {
        format!(
            "-o ControlMaster=auto -o ControlPersist=120s -o ControlPath={}/loop-%C",
            fd.display()
        )
    } else {
        String::new()
    };
    let script = format!(
        "<{list} xargs -P {parallel} -L 1 sh -c 'ssh -F {cfg} {mux} \"$0\" \"$@\" >/dev/null'",
        list = fd.join("hosts.lines").display(),
        cfg = cfg.display()
    );
    let t0 = Instant::now();
    let ok = Command::new("ip")
        .args(["netns", "exec", &lab.mgmt_netns(), "bash", "-c", &script])
        .status()?
        .success();
    Ok((t0.elapsed().as_secs_f64() * 1e3, ok))
}
