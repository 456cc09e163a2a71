//! The `boot-join` scenario: the join step of the boot path (converge →
//! gates → join → watch) in a real boot. The seed delivers what an operator
//! would: host facts with a `[join]` section, the bootstrap token in a file of
//! mode 0600, and `/etc/default/underlay` naming the kubeadm to run
//! (`UNDERLAY_KUBEADM`: here `kubeadm-standin`, a stand-in for kubeadm that
//! records its argv and config and writes /etc/kubernetes/kubelet.conf; see
//! vm-tests/kubeadm-standin). `kubelet.service` (an alias of the image's
//! kubelet stand-in) is wanted at boot, as kubeadm's kubelet package enables
//! it. Proves: the packaged underlay-join.service invoked the stand-in exactly
//! once, after READY (journal timestamps), with node-ip = the service IP; the
//! kubelet started after the join; the token is in no journal field and no
//! JSON document; after a reboot the stand-in is not invoked again.

use anyhow::Result;

use super::scenarios::{
    boot_one, check_converged, guest, guest_out, journal_mono, reboot_vm, Options, BOOT_TIMEOUT,
    FLAT_PROFILE, UNIT_STARTED, UNIT_STARTING,
};
use super::timing;
use super::{Boot, VmLab};
use crate::join::{facts_section, token, TOKEN_FILE};
use crate::scenarios::Outcome;

/// Where the stand-in records its invocations in the guest.
const RECORDS: &str = "/var/lib/kubeadm-standin";

/// `/etc/default/underlay` of the test: the stand-in as kubeadm, told where to
/// record; its snapshot is the guest's uptime and BIRD's sessions at the
/// moment it was invoked.
fn default_file() -> String {
    format!(
        "# underlay VM tests: kubeadm is the stand-in (vm-tests/kubeadm-standin)\n\
         UNDERLAY_KUBEADM=/usr/local/sbin/kubeadm-standin\n\
         KUBEADM_STANDIN_DIR={RECORDS}\n\
         KUBEADM_STANDIN_ROOT=/\n\
         KUBEADM_STANDIN_SNAPSHOT=\"echo uptime=$(cut -d' ' -f1 /proc/uptime); birdc show protocols\"\n"
    )
}

fn invocations(lab: &VmLab) -> Result<Vec<String>> {
    Ok(
        guest_out(lab, "h1", &format!("ls {RECORDS} 2>/dev/null | sort -n"))?
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

fn pid1_entries(lab: &VmLab) -> Result<Vec<serde_json::Value>> {
    Ok(
        guest_out(lab, "h1", "journalctl -b -o json --no-pager _PID=1")?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

fn join_unit(lab: &VmLab) -> Result<String> {
    guest_out(
        lab,
        "h1",
        "echo $(systemctl show -p ActiveState --value underlay-join.service) $(systemctl show -p Result --value underlay-join.service)",
    )
}

fn join_journal(lab: &VmLab) -> Result<String> {
    guest_out(
        lab,
        "h1",
        "journalctl -b -u underlay-join.service -o cat --no-pager",
    )
}

/// Every journal field of this boot and of the boot before (`-o export`:
/// messages, command lines, environment-bearing fields) and the JSON the
/// agent prints, searched for the token and its secret half.
fn token_leaks(lab: &VmLab, tok: &str, json: &[(&str, &str)]) -> Result<Vec<String>> {
    let secret = tok.split_once('.').map_or(tok, |(_, s)| s);
    let mut leaks = vec![];
    let n = guest_out(
        lab,
        "h1",
        &format!("journalctl -o export --no-pager | grep -a -c -e '{secret}' || true"),
    )?;
    if n.trim() != "0" {
        leaks.push(format!("the journal ({} entries)", n.trim()));
    }
    for (what, text) in json {
        if text.contains(tok) || text.contains(secret) {
            leaks.push(what.to_string());
        }
    }
    Ok(leaks)
}

pub fn boot_join(lab: &mut VmLab, _: &Options) -> Result<Outcome> {
    let mut o = Outcome::new();
    let h = lab.host("h1")?;
    let tok = token(&h);
    let mut b = Boot::converge(FLAT_PROFILE);
    b.host_facts_extra = facts_section();
    b.files = vec![
        (TOKEN_FILE.into(), "0600".into(), format!("{tok}\n")),
        (
            "/etc/default/underlay".into(),
            "0644".into(),
            default_file(),
        ),
    ];
    // kubeadm's kubelet package enables kubelet.service: its start job is
    // queued behind the join unit (Before=kubelet.service).
    b.cmdline.push("systemd.wants=kubelet.service".into());
    boot_one(lab, "h1", &b)?;
    let state = lab.wait_booted("h1", BOOT_TIMEOUT)?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    o.check(
        state == "running",
        format!("systemctl is-system-running: {state} (no job hung on the kubelet's start)"),
    );
    check_converged(&mut o, lab, "h1", "first boot")?;
    let mode = guest_out(lab, "h1", &format!("stat -c '%a %U' {TOKEN_FILE}"))?;
    o.info(format!(
        "token file from the seed: {TOKEN_FILE} mode {mode}"
    ));

    let unit = join_unit(lab)?;
    let journal = join_journal(lab)?;
    let inv = invocations(lab)?;
    o.check(
        unit == "active success" && inv.len() == 1,
        format!(
            "underlay-join.service {unit}; kubeadm-standin invoked {} time(s) (want 1): {}",
            inv.len(),
            journal
                .lines()
                .find(|l| l.contains(" join     "))
                .unwrap_or("")
                .trim()
        ),
    );
    let rec = |f: &str| guest_out(lab, "h1", &format!("cat {RECORDS}/1/{f} 2>/dev/null"));
    let config = rec("config")?;
    let node_ip = format!("- name: \"node-ip\"\n      value: \"{}\"", h.service_ip);
    o.check(
        config.contains(&node_ip),
        format!(
            "the rendered JoinConfiguration has node-ip = {} (the service IP): {:?}",
            h.service_ip,
            config
                .lines()
                .skip_while(|l| !l.contains("name: \"node-ip\""))
                .take(2)
                .map(str::trim)
                .collect::<Vec<_>>()
        ),
    );
    let argv = rec("argv")?;
    let cmode = rec("config.mode")?;
    let gone = guest(lab, "h1", "test ! -e /run/underlay/kubeadm-join.yaml")?.ok();
    o.check(
        argv == "join\n--config\n/run/underlay/kubeadm-join.yaml" && cmode == "600 0" && gone,
        format!(
            "kubeadm argv {:?} (no token in it), config mode {cmode}, config removed after the run: {gone}",
            argv.lines().collect::<Vec<_>>()
        ),
    );
    let snapshot = rec("snapshot")?;
    let established: Vec<&str> = snapshot
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("BGP") && l.contains("Established"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    o.check(
        established.contains(&"tor_a") && established.contains(&"tor_b"),
        format!(
            "both sessions Established when kubeadm was invoked (the guest's BIRD): {}",
            established.join(", ")
        ),
    );
    let kubelet_conf = guest(lab, "h1", "test -s /etc/kubernetes/kubelet.conf")?.ok();
    o.check(
        kubelet_conf,
        "the stand-in wrote /etc/kubernetes/kubelet.conf, as kubeadm does".into(),
    );

    // The order, from the journal: READY, then the join unit and kubeadm,
    // then the kubelet.
    let entries = pid1_entries(lab)?;
    let ready = journal_mono(&entries, "underlay-gates.service", UNIT_STARTED);
    let join_start = journal_mono(&entries, "underlay-join.service", UNIT_STARTING);
    let join_done = journal_mono(&entries, "underlay-join.service", UNIT_STARTED);
    let kubelet = journal_mono(&entries, "kubelet-standin.service", UNIT_STARTING);
    let invoked = snapshot
        .lines()
        .find_map(|l| l.strip_prefix("uptime="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| (s * 1e6) as u64);
    let s = |v: Option<u64>| {
        v.map(|us| format!("{:.2} s", us as f64 / 1e6))
            .unwrap_or("missing".into())
    };
    o.check(
        matches!((ready, join_start, invoked, join_done, kubelet),
            (Some(r), Some(js), Some(i), Some(jd), Some(k)) if r <= js && js <= i && i <= jd && jd <= k),
        format!(
            "journal: READY (underlay-gates started) {} <= underlay-join starting {} <= kubeadm-standin invoked (its uptime) {} <= underlay-join done {} <= kubelet starting {}",
            s(ready),
            s(join_start),
            s(invoked),
            s(join_done),
            s(kubelet)
        ),
    );
    let kubelet_line = journal
        .lines()
        .find(|l| l.contains("kubelet.service"))
        .unwrap_or("")
        .trim()
        .to_string();
    o.check(
        kubelet_line.contains("start queued"),
        format!("the join queued the kubelet's start instead of waiting for it from inside its unit: {kubelet_line:?}"),
    );
    let t = timing::collect(lab.vm("h1")?, Some(true))?;
    for l in timing::table(&[t]).lines() {
        o.info(l.to_string());
    }

    // JSON documents: a second join (already joined), an apply, the status.
    let join_json = guest_out(lab, "h1", "underlay join --json")?;
    let doc: serde_json::Value = serde_json::from_str(&join_json).unwrap_or_default();
    o.check(
        doc["join"]["status"] == "already-joined" && invocations(lab)?.len() == 1,
        format!(
            "`underlay join --json` by hand: {} ({}); still {} invocation(s)",
            doc["join"]["status"],
            doc["join"]["message"].as_str().unwrap_or("?"),
            invocations(lab)?.len()
        ),
    );
    let apply_json = guest_out(lab, "h1", "underlay apply --json")?;
    let status_json = guest_out(lab, "h1", "underlay status --json")?;
    let render = guest_out(lab, "h1", "underlay render join")?;
    let state_file = guest_out(lab, "h1", "cat /var/lib/underlay/state.json")?;

    // A reboot: joined, so never again.
    reboot_vm(&mut o, lab, "h1", "rebooted")?;
    lab.wait_booted("h1", BOOT_TIMEOUT)?;
    lab.wait_ready("h1", BOOT_TIMEOUT)?;
    let unit = join_unit(lab)?;
    let journal = join_journal(lab)?;
    let inv = invocations(lab)?;
    o.check(
        unit == "active success" && journal.contains("already joined") && inv.len() == 1,
        format!(
            "after the reboot: underlay-join.service {unit}, says {:?}; kubeadm-standin invoked {} time(s) in all (want 1)",
            journal
                .lines()
                .find(|l| l.contains(" join     "))
                .unwrap_or("")
                .trim(),
            inv.len()
        ),
    );
    let leaks = token_leaks(
        lab,
        &tok,
        &[
            ("underlay join --json", &join_json),
            ("underlay apply --json", &apply_json),
            ("underlay status --json", &status_json),
            ("underlay render join", &render),
            ("/var/lib/underlay/state.json", &state_file),
        ],
    )?;
    o.check(
        leaks.is_empty(),
        format!(
            "the token is in no journal field of either boot (journalctl -o export) and no JSON document{}",
            if leaks.is_empty() {
                String::new()
            } else {
                format!(": found in {}", leaks.join(", "))
            }
        ),
    );
    Ok(o)
}
