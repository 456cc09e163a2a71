//! Failures BFD normally hides: a ToR whose BFD is off for a host (BGP still
//! Established), a silent link failure then (only the hold timer can notice),
//! and long-lived graceful restart, which turns an expired hold timer into a
//! two-minute dead path. The lab's ToRs offer GR and LLGR as FRR's datacenter
//! defaults do (`bird::TOR_GRACEFUL_RESTART`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::agent::{self, AgentRun};
use crate::bird::{self, Bird};
use crate::plan::{Host, Lab, Tor};
use crate::scenarios::{wait_nexthops, Fault, Outcome, TestOptions};
use crate::status;

/// The profile's hold time (profiles/l3-ecmp-calico.toml) and what the host
/// table may keep a dead path beyond it: BIRD's hold timer runs from the last
/// keepalive (every 3 s), then the kernel protocol removes the route.
const HOLD: Duration = Duration::from_secs(9);
const MARGIN: Duration = Duration::from_secs(3);
/// How long the scenario keeps measuring a path that is not gone in time:
/// long enough to see LLGR's 120 s restart time run out.
const MEASURE_UP_TO: Duration = Duration::from_secs(180);

/// Sets BFD on `tor`'s session to `h` (off: BGP without BFD) and reloads the ToR.
fn set_tor_bfd(lab: &Lab, tor: Tor, h: &Host, on: bool) -> Result<()> {
    let no_bfd = if on { vec![] } else { vec![h.name.clone()] };
    let b = Bird::tor(lab, tor);
    bird::write_if_changed(&b.conf, &bird::render_tor_conf_with(lab, tor, &no_bfd))?;
    b.start_or_reload()
}

/// The host BIRD's BFD state towards `peer` (`None`: no such session).
fn host_bfd_state(lab: &Lab, h: &Host, peer: Ipv4Addr) -> Result<Option<String>> {
    let text = Bird::host(lab, h).birdc(&["show", "bfd", "sessions"])?;
    Ok(parse_bfd_state(&text, peer))
}

/// The State column of the `birdc show bfd sessions` row for `peer`.
pub fn parse_bfd_state(text: &str, peer: Ipv4Addr) -> Option<String> {
    let peer = peer.to_string();
    text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&peer.as_str()) && cols.len() >= 3).then(|| cols[2].to_string())
    })
}

fn established(lab: &Lab, h: &Host, protocol: &str) -> bool {
    Bird::host(lab, h)
        .bgp_sessions()
        .map(|ss| {
            ss.iter()
                .any(|s| s.name == protocol && s.state == "Established")
        })
        .unwrap_or(false)
}

/// BIRD protocol name of the host's session to `tor` (uplink `tor-a` -> `tor_a`).
fn protocol(tor: Tor) -> String {
    tor.name().replace('-', "_")
}

/// Waits until the host's session to `tor` is Established with BFD in the
/// wanted state (`Up` or anything else), both ECMP paths in the host table.
fn wait_state(lab: &Lab, h: &Host, tor: Tor, bfd_up: bool, timeout: Duration) -> Result<Duration> {
    let peer = h.uplinks[tor.index() as usize].tor_addr;
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let bfd = host_bfd_state(lab, h, peer)?;
        let est = established(lab, h, &protocol(tor));
        let paths = status::host_table_nexthops(&h.netns).unwrap_or(0);
        if est && paths >= 2 && (bfd.as_deref() == Some("Up")) == bfd_up {
            return Ok(start.elapsed());
        }
        last = format!(
            "BGP {} {}, BFD {}, {paths} next hops",
            protocol(tor),
            if est {
                "Established"
            } else {
                "not Established"
            },
            bfd.unwrap_or("no session".into())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "{}: not (Established, BFD {}, 2 next hops) within {timeout:?}: {last}",
        h.name,
        if bfd_up { "Up" } else { "not Up" }
    )
}

fn profile_of(lab: &Lab) -> PathBuf {
    lab.profile.clone().unwrap_or_else(agent::default_profile)
}

/// The lab's profile with long-lived graceful restart on the uplinks: the
/// host then negotiates LLGR with the ToRs, as every host did before LLGR
/// was rendered off (BIRD's default with `graceful restart on` is LLGR
/// `aware`, which is enough to keep a dead ToR's routes).
fn llgr_profile(lab: &Lab) -> Result<PathBuf> {
    let base = profile_of(lab);
    let text =
        std::fs::read_to_string(&base).with_context(|| format!("read {}", base.display()))?;
    anyhow::ensure!(
        text.contains("\n[bgp]\n"),
        "{} has no [bgp] section",
        base.display()
    );
    let path = lab.dir.join("profile-llgr.toml");
    std::fs::write(
        &path,
        text.replacen(
            "\n[bgp]\n",
            "\n[bgp]\nlong_lived_graceful_restart = true\n",
            1,
        ),
    )?;
    Ok(path)
}

/// Converges `h` with the config underlay rendered before LLGR was turned
/// off on the uplinks: today's rendering without `long lived graceful
/// restart off;`, as a template override (it has no template syntax).
fn old_rendering(lab: &Lab, h: &Host) -> Result<()> {
    let path = h.bird_template_override(lab);
    anyhow::ensure!(
        !path.exists(),
        "{} exists already; --llgr does not overwrite a template it did not write",
        path.display()
    );
    let conf = std::fs::read_to_string(h.bird_conf(lab))?;
    let old: String = conf
        .lines()
        .filter(|l| l.trim() != "long lived graceful restart off;")
        .map(|l| format!("{l}\n"))
        .collect();
    anyhow::ensure!(
        old != conf,
        "the agent's config has no `long lived graceful restart off`"
    );
    std::fs::create_dir_all(path.parent().context("override path")?)?;
    std::fs::write(&path, old)?;
    apply(lab, h, &profile_of(lab))
}

/// Runs `underlay doctor --json` until `check`'s finding satisfies `pred`
/// (sessions restart after a reconfiguration), or returns the last run.
fn doctor_until(
    lab: &Lab,
    h: &Host,
    profile: &Path,
    check: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Result<AgentRun> {
    let bin = agent::find_agent_bin()?;
    let start = Instant::now();
    loop {
        let d = agent::run_agent(lab, h, &bin, profile, "doctor", &["--json"])?;
        if finding(&d, check).is_some_and(&pred) || start.elapsed() > Duration::from_secs(30) {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Converges `h` with `profile` (the host BIRD is reloaded when its config changes).
fn apply(lab: &Lab, h: &Host, profile: &Path) -> Result<()> {
    agent::apply(lab, h, &agent::find_agent_bin()?, profile).map(|_| ())
}

fn gate<'a>(run: &'a AgentRun, name: &str) -> Option<&'a serde_json::Value> {
    run.json["gates"]["gates"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == name)
}

fn finding<'a>(run: &'a AgentRun, check: &str) -> Option<&'a serde_json::Value> {
    run.json["findings"]
        .as_array()?
        .iter()
        .find(|f| f["check"] == check)
}

fn short(v: Option<&serde_json::Value>) -> String {
    v.map_or("missing".into(), |v| {
        format!(
            "{} ({})",
            v["severity"]
                .as_str()
                .or(v["passed"]
                    .as_bool()
                    .map(|p| if p { "passed" } else { "failed" }))
                .unwrap_or("?"),
            v["title"].as_str().or(v["evidence"].as_str()).unwrap_or("")
        )
    })
}

/// A ToR with BFD off for a host, then a silent failure of that link: the
/// host must drop the dead path after the hold time, not keep it for the
/// ToR's GR restart time (which it does while LLGR is negotiated).
pub fn failover_silent_no_bfd(lab: &Lab, opts: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let h = lab.host(1);
    let tor = Tor::A;
    let uplink = &h.uplinks[tor.index() as usize];
    let tns = lab.tor_netns(tor);
    let profile = profile_of(lab);
    let override_path = h.bird_template_override(lab);
    if opts.llgr {
        old_rendering(lab, &h)?;
        o.info(format!(
            "{}: --llgr: host BIRD config as underlay rendered it before (no `long lived graceful restart off`, so BIRD's default LLGR `aware`), via {}",
            h.name,
            override_path.display()
        ));
    }
    set_tor_bfd(lab, tor, &h, false)?;
    let result = (|| -> Result<()> {
        let took = wait_state(lab, &h, tor, false, Duration::from_secs(30))?;
        o.check(
            true,
            format!(
                "{}: {} BFD off: session Established again without BFD after {} ms",
                h.name,
                tor.name(),
                took.as_millis()
            ),
        );
        let t0 = Instant::now();
        Fault::Silent.inject(lab, &tns, &uplink.tor_if)?;
        let gone = wait_nexthops(&h.netns, MEASURE_UP_TO, |n| n <= 1).map(|_| t0.elapsed());
        Fault::Silent.clear(&tns, &uplink.tor_if)?;
        let bound = HOLD + MARGIN;
        o.check(
            gone.is_some_and(|d| d <= bound),
            match gone {
                Some(d) => format!(
                    "{}: {}/{} silently dropping, no BFD: the host table dropped the dead path after {} ms (hold time {} s + {} s margin)",
                    h.name,
                    tor.name(),
                    uplink.tor_if,
                    d.as_millis(),
                    HOLD.as_secs(),
                    MARGIN.as_secs()
                ),
                None => format!(
                    "{}: the host table still had the dead path after {} s",
                    h.name,
                    MEASURE_UP_TO.as_secs()
                ),
            },
        );
        Ok(())
    })();
    // Always restore: BFD on, the lab's profile.
    set_tor_bfd(lab, tor, &h, true)?;
    if opts.llgr {
        std::fs::remove_file(&override_path)?;
        apply(lab, &h, &profile)?;
    }
    result?;
    let back = wait_state(lab, &h, tor, true, Duration::from_secs(60));
    o.check(
        back.is_ok(),
        match back {
            Ok(d) => format!(
                "{}: BFD back on: Up with 2 next hops after {} ms",
                h.name,
                d.as_millis()
            ),
            Err(e) => format!("{e:#}"),
        },
    );
    Ok(o)
}

/// BGP Established, BFD off on the ToR: the `bfd-up` gate fails (the other
/// gates pass), the doctor names the session, status shows it; with BFD
/// back on the gate passes and the doctor is satisfied.
pub fn bfd_gate(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let h = lab.host(1);
    let tor = Tor::A;
    let bin = agent::find_agent_bin()?;
    let profile = profile_of(lab);
    let peer = h.uplinks[tor.index() as usize].tor_addr;
    set_tor_bfd(lab, tor, &h, false)?;
    let result = (|| -> Result<()> {
        wait_state(lab, &h, tor, false, Duration::from_secs(30))?;
        let v = agent::run_agent(
            lab,
            &h,
            &bin,
            &profile,
            "verify",
            &["--wait", "--wait-timeout", "3", "--json"],
        )?;
        let bfd = gate(&v, "bfd-up");
        let others_pass = v.json["gates"]["gates"].as_array().is_some_and(|g| {
            g.iter()
                .filter(|g| g["name"] != "bfd-up")
                .all(|g| g["passed"] == true)
        });
        let evidence = bfd.and_then(|g| g["evidence"].as_str()).unwrap_or("");
        o.check(
            v.code == Some(3)
                && bfd.is_some_and(|g| g["passed"] == false)
                && others_pass
                && evidence.contains(&format!("{} ({peer} on ", protocol(tor))),
            format!(
                "{}: {} BFD off, BGP Established: verify --wait exit {:?}, bfd-up {}, every other gate passed: {others_pass}",
                h.name,
                tor.name(),
                v.code,
                short(bfd)
            ),
        );
        let d = doctor_until(lab, &h, &profile, "bfd-sessions", |f| {
            f["severity"] == "failure"
        })?;
        let f = finding(&d, "bfd-sessions");
        o.check(
            f.is_some_and(|f| f["severity"] == "failure")
                && f.and_then(|f| f["evidence"][0].as_str())
                    .is_some_and(|e| e.starts_with(&format!("{} (", protocol(tor)))),
            format!("{}: doctor bfd-sessions: {}", h.name, short(f)),
        );
        let s = agent::run_agent(lab, &h, &bin, &profile, "status", &[])?;
        let line = s
            .stdout
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "session  {} -> BIRD {}",
                    tor.name(),
                    protocol(tor)
                ))
            })
            .unwrap_or("")
            .trim()
            .to_string();
        o.check(
            line.contains("BGP Established") && line.contains("BFD ") && !line.contains("BFD Up"),
            format!("{}: status: {line:?}", h.name),
        );
        Ok(())
    })();
    set_tor_bfd(lab, tor, &h, true)?;
    result?;
    wait_state(lab, &h, tor, true, Duration::from_secs(60))?;
    let v = agent::run_agent(
        lab,
        &h,
        &bin,
        &profile,
        "verify",
        &["--wait", "--wait-timeout", "30", "--json"],
    )?;
    o.check(
        v.code == Some(0) && gate(&v, "bfd-up").is_some_and(|g| g["passed"] == true),
        format!(
            "{}: BFD back on: verify --wait exit {:?}, bfd-up {}",
            h.name,
            v.code,
            short(gate(&v, "bfd-up"))
        ),
    );
    let d = doctor_until(lab, &h, &profile, "bfd-sessions", |f| f["severity"] == "ok")?;
    let f = finding(&d, "bfd-sessions");
    o.check(
        f.is_some_and(|f| f["severity"] == "ok"),
        format!("{}: doctor bfd-sessions: {}", h.name, short(f)),
    );
    Ok(o)
}

/// A host that negotiates LLGR with the ToRs (the profile knob on): the
/// doctor reports it as intended with that profile, as a risk with the
/// default one, and not at all once the host is converged without it.
pub fn llgr_doctor(lab: &Lab, _: &TestOptions) -> Result<Outcome> {
    let mut o = Outcome::new();
    let h = lab.host(lab.hosts);
    let bin = agent::find_agent_bin()?;
    let profile = profile_of(lab);
    let llgr = llgr_profile(lab)?;
    apply(lab, &h, &llgr)?;
    let result = (|| -> Result<()> {
        for tor in Tor::ALL {
            wait_state(lab, &h, tor, true, Duration::from_secs(60))?;
        }
        let asked = |f: &serde_json::Value| {
            f["severity"] == "ok"
                && f["title"]
                    .as_str()
                    .unwrap_or("")
                    .contains("as the profile asks")
        };
        let d = doctor_until(lab, &h, &llgr, "bgp-llgr-uplinks", asked)?;
        let f = finding(&d, "bgp-llgr-uplinks");
        o.check(
            f.is_some_and(asked),
            format!(
                "{}: LLGR on, doctor with that profile: {}",
                h.name,
                short(f)
            ),
        );
        let d = agent::run_agent(lab, &h, &bin, &profile, "doctor", &["--json"])?;
        let f = finding(&d, "bgp-llgr-uplinks");
        let ev = f
            .and_then(|f| f["evidence"].as_array())
            .map(|e| {
                e.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        o.check(
            f.is_some_and(|f| f["severity"] == "warning") && ev.contains("restart time 120 s"),
            format!(
                "{}: doctor with the lab profile: {} [{ev}]",
                h.name,
                short(f)
            ),
        );
        Ok(())
    })();
    apply(lab, &h, &profile)?;
    result?;
    for tor in Tor::ALL {
        wait_state(lab, &h, tor, true, Duration::from_secs(60))?;
    }
    let gone = |f: &serde_json::Value| {
        f["severity"] == "ok"
            && f["title"]
                .as_str()
                .unwrap_or("")
                .starts_with("no ToR session")
    };
    let d = doctor_until(lab, &h, &profile, "bgp-llgr-uplinks", gone)?;
    let f = finding(&d, "bgp-llgr-uplinks");
    o.check(
        f.is_some_and(gone),
        format!(
            "{}: converged with the lab profile again: {}",
            h.name,
            short(f)
        ),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bfd_state_rows() {
        let text = "BIRD 2.0.12 ready.\nbfd1:\nIP address                Interface  State      Since         Interval  Timeout\n172.30.2.0                eth0       Down       10:00:00.000    1.000    0.000\n172.30.3.0                eth1       Up         10:00:00.000    0.100    0.300\n";
        assert_eq!(
            parse_bfd_state(text, "172.30.2.0".parse().unwrap()).as_deref(),
            Some("Down")
        );
        assert_eq!(
            parse_bfd_state(text, "172.30.3.0".parse().unwrap()).as_deref(),
            Some("Up")
        );
        assert_eq!(parse_bfd_state(text, "172.30.4.0".parse().unwrap()), None);
    }
}
