//! `up` and `down`: the order in which the lab is built and torn down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::agent;
use crate::bird::{self, Bird};
use crate::cmd;
use crate::plan::{Lab, Tor};
use crate::status::{self, LabStatus};
use crate::topology;

pub struct UpOptions {
    pub profile: PathBuf,
    pub timeout: Duration,
}

/// Per-host convergence times, measured from the moment the host BIRDs were
/// started (or reloaded).
pub struct Timing {
    pub host: String,
    pub established: Option<Duration>,
    pub two_nexthops: Option<Duration>,
    /// Also the Calico-role session Established (the pod block is announced).
    pub converged: Option<Duration>,
}

pub fn up(lab: &Lab, opts: &UpOptions) -> Result<(LabStatus, Vec<Timing>)> {
    let mut lab = lab.clone();
    lab.profile = Some(opts.profile.clone());
    let lab = &lab;
    if let Ok(old) = Lab::load(&lab.dir) {
        if old.prefix != lab.prefix || old.hosts != lab.hosts {
            bail!(
                "{} holds a lab with prefix {:?} and {} hosts; run `underlay-lab down --dir {}` first",
                lab.dir.display(),
                old.prefix,
                old.hosts,
                lab.dir.display()
            );
        }
    }
    // Recorded before anything is created, so `down` works after a partial up.
    lab.save()?;
    topology::ensure(lab).context("building the topology")?;

    for tor in Tor::ALL {
        let b = Bird::tor(lab, tor);
        bird::write_if_changed(&b.conf, &bird::render_tor_conf(lab, tor))?;
        b.start_or_reload()?;
    }

    let hosts = lab.hosts();
    let bin = agent::find_agent_bin()?;
    let mut errors = vec![];
    for h in &hosts {
        match agent::apply(lab, h, &bin, &opts.profile) {
            Ok(report) => eprintln!(
                "{}: underlay apply converged the host: {} ({})",
                h.name,
                agent::summarize(&report),
                bin.display()
            ),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "the agent did not converge every host:\n- {}",
            errors.join("\n- ")
        );
    }

    for h in &hosts {
        let c = Bird::calico(lab, h);
        bird::write_if_changed(&c.conf, &bird::render_calico_conf(h, &[]))?;
        c.start_or_reload()?;
    }
    let t0 = Instant::now();
    for h in &hosts {
        // `agent::apply` refused a host whose config the agent did not write.
        eprintln!(
            "{}: using the host BIRD config rendered by the agent ({})",
            h.name,
            h.bird_conf(lab).display()
        );
        Bird::host(lab, h).start_or_reload()?;
    }
    // The agent's readiness gates and the lab's own timings, side by side.
    let mut children = vec![];
    for h in &hosts {
        children.push(agent::spawn_verify_wait(
            lab,
            h,
            &bin,
            &opts.profile,
            opts.timeout,
        )?);
    }
    let timings = wait_converged(lab, t0, opts.timeout);
    let readiness = agent_readiness(lab, &bin, children)?;
    if readiness.is_none() {
        for (h, t) in hosts.iter().zip(&timings) {
            let r = agent::Readiness {
                by: agent::READY_BY_LAB.to_string(),
                passed: t.converged.is_some(),
                elapsed_ms: None,
                gates: vec![],
                note: Some("the agent has no `verify --wait`; the lab waited itself".into()),
            };
            r.save(lab, h)?;
        }
    }
    let st = status::collect(lab);
    if !st.converged() {
        let bad: Vec<String> = st
            .hosts
            .iter()
            .filter(|h| !h.converged)
            .map(|h| {
                let sessions: Vec<String> = h
                    .sessions
                    .iter()
                    .map(|s| format!("{}={}", s.peer, s.state))
                    .collect();
                format!(
                    "{}: sessions [{}], host-table default next hops {} (want 2){}",
                    h.name,
                    sessions.join(" "),
                    h.host_table_nexthops,
                    h.bird_error
                        .as_ref()
                        .map(|e| format!(", {e}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        print!("{}", status::render_table(&st));
        bail!(
            "the lab did not converge within {} s:\n- {}",
            opts.timeout.as_secs(),
            bad.join("\n- ")
        );
    }
    Ok((st, timings))
}

/// Readiness the agent's way: the `underlay verify --wait --json` runs started
/// for every host at once (`children`, in host order). `None` when the agent binary has no `--wait` yet (the caller's own
/// wait then decides). A gate that failed is an error naming it.
fn agent_readiness(
    lab: &Lab,
    bin: &Path,
    children: Vec<std::process::Child>,
) -> Result<Option<Vec<agent::Readiness>>> {
    let hosts = lab.hosts();
    let mut out = vec![];
    let mut unsupported = None;
    let mut failed = vec![];
    for (h, child) in hosts.iter().zip(children) {
        match agent::finish_verify_wait(lab, h, child)? {
            agent::VerifyWait::Unsupported(line) => unsupported = Some(line),
            agent::VerifyWait::Done(r) => {
                r.save(lab, h)?;
                eprintln!(
                    "{}: underlay verify --wait: {} after {} ({})",
                    h.name,
                    if r.passed { "ready" } else { "NOT ready" },
                    r.elapsed_ms
                        .map(|m| format!("{m} ms"))
                        .unwrap_or("? ms".into()),
                    r.gates
                        .iter()
                        .map(|g| format!("{}={}", g.name, if g.passed { "ok" } else { "FAILED" }))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                if !r.passed {
                    failed.push(format!("{}: {}", h.name, r.failures()));
                }
                out.push(r);
            }
        }
    }
    if let Some(line) = unsupported {
        eprintln!(
            "note: {} has no `verify --wait` yet ({line}); the lab waits for sessions and next hops itself",
            bin.display()
        );
        return Ok(None);
    }
    if !failed.is_empty() {
        bail!(
            "readiness gates of `underlay verify --wait` failed:\n- {}",
            failed.join("\n- ")
        );
    }
    Ok(Some(out))
}

fn wait_converged(lab: &Lab, t0: Instant, timeout: Duration) -> Vec<Timing> {
    let hosts = lab.hosts();
    let mut t: Vec<Timing> = hosts
        .iter()
        .map(|h| Timing {
            host: h.name.clone(),
            established: None,
            two_nexthops: None,
            converged: None,
        })
        .collect();
    while t0.elapsed() < timeout {
        let mut all = true;
        for (h, tm) in hosts.iter().zip(t.iter_mut()) {
            let s = status::host_status(lab, h);
            let est = h.tor_peers().iter().all(|p| {
                s.sessions
                    .iter()
                    .any(|x| x.peer == p.to_string() && x.state == "Established")
            });
            if est && tm.established.is_none() {
                tm.established = Some(t0.elapsed());
            }
            if s.host_table_nexthops >= 2 && tm.two_nexthops.is_none() {
                tm.two_nexthops = Some(t0.elapsed());
            }
            if s.converged && tm.converged.is_none() {
                tm.converged = Some(t0.elapsed());
            }
            all &= tm.converged.is_some();
        }
        if all {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    t
}

/// The lab to tear down: the recorded one, else whatever namespaces with the
/// lab's naming scheme and this prefix exist (an `up` that died very early).
pub fn lab_for_down(dir: &Path, prefix: &str) -> Result<Lab> {
    if let Ok(lab) = Lab::load(dir) {
        return Ok(lab);
    }
    crate::plan::validate_prefix(prefix)?;
    let list = cmd::run("ip", &["netns", "list"])?;
    let max = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| n.strip_prefix(prefix)?.strip_prefix('h'))
        .filter_map(|rest| rest.strip_suffix("-pod").unwrap_or(rest).parse::<u8>().ok())
        .max()
        .unwrap_or(0);
    Ok(Lab {
        dir: dir.to_path_buf(),
        prefix: prefix.to_string(),
        hosts: max,
        profile: None,
    })
}

pub fn down(lab: &Lab) -> Result<Vec<String>> {
    let mut report = vec![];
    for b in Bird::all(lab) {
        if b.stop()? {
            report.push(format!("stopped {}", b.label));
        }
    }
    report.extend(crate::fleet::stop_sshds(lab));
    // Anything else still running in a lab namespace (a probe of an
    // interrupted test, a fleet's ansible-playbook) was started by the lab:
    // stop it by pid.
    let mut namespaces = lab.all_netns();
    namespaces.push(lab.mgmt_netns());
    for ns in namespaces {
        if !cmd::netns_exists(&ns) {
            continue;
        }
        let pids = cmd::run("ip", &["netns", "pids", &ns]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            if cmd::succeeds("kill", &["-KILL", pid]) {
                report.push(format!("killed pid {pid} in {ns}"));
            }
        }
    }
    for ns in topology::delete_netns(lab)? {
        report.push(format!("deleted netns {ns}"));
    }
    remove_dir(&lab.dir)?;
    Ok(report)
}

/// Removes the lab dir only when it is a lab dir (has lab.json); otherwise
/// removes only what a lab writes there, never a directory a person pointed
/// `--dir` at by mistake.
fn remove_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if Lab::state_file(dir).exists() {
        return std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()));
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name == "tor-a"
            || name == "tor-b"
            || name
                .strip_prefix('h')
                .is_some_and(|n| n.parse::<u8>().is_ok());
        if ours {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
