//! `underlay join`, and the join step of `apply --join`: kubeadm runs only
//! when the host converged and every readiness gate passed, and never on a
//! node that has joined. What can be wrong with the input (no `[join]`, the
//! token file, kubeadm missing) is found before anything changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use underlay::desired::join::Join;
use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::error::ErrorKind;
use underlay::gates::Outcome;
use underlay::join::{self, JoinError, JoinReport, JoinStatus, Prepared};
use underlay::report::{self, Context, Document, FailureDoc};
use underlay::system::linux::LinuxSystem;
use underlay::system::System;

use super::{init_logs, output, Common, Failed};

/// `apply --join`.
#[derive(Args)]
pub struct JoinFlags {
    /// Then join the Kubernetes cluster (`kubeadm join`), only once the host converged and every
    /// readiness gate passed; never on a node that has /etc/kubernetes/kubelet.conf or that
    /// underlay joined before. Needs the host facts' [join] section
    #[arg(long, requires = "wait")]
    pub join: bool,
    /// The kubeadm executable (a path, or a name looked up in PATH)
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kubeadm",
        requires = "join"
    )]
    pub kubeadm: PathBuf,
}

#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds to wait for the readiness gates [default: the profile's bgp.readiness.timeout_s, else 60]
    #[arg(long, value_name = "SECS")]
    wait_timeout: Option<u64>,
    /// The kubeadm executable (a path, or a name looked up in PATH). Only `join` reads
    /// UNDERLAY_KUBEADM (set in /etc/default/underlay for underlay-join.service): every
    /// underlay unit reads that file, and `apply --kubeadm` without --join is an error
    #[arg(
        long,
        value_name = "PATH",
        default_value = "kubeadm",
        env = "UNDERLAY_KUBEADM"
    )]
    kubeadm: PathBuf,
    /// Exit 0 doing nothing when the host facts have no [join] section (a host that does not
    /// join); without it that is an input error. The packaged underlay-join.service uses it, so
    /// it can be enabled on every host
    #[arg(long)]
    if_configured: bool,
    /// Join again although the state file records that underlay joined this node (after a
    /// deliberate `kubeadm reset`); refused while /etc/kubernetes/kubelet.conf exists
    #[arg(long)]
    rejoin: bool,
}

/// The join step as found before anything changed.
pub enum Pre {
    Already(Box<JoinReport>),
    Ready(Prepared),
}

fn the_join<'a>(c: &Common, verb: &'static str, d: &'a Desired) -> Result<&'a Join, Failed> {
    d.join
        .as_ref()
        .ok_or_else(|| Failed::new(c, verb, ErrorKind::Input, JoinError::NoJoin.to_string()))
}

fn failed(c: &Common, verb: &'static str, e: &JoinError) -> Failed {
    Failed::new(c, verb, e.kind(), e.to_string())
}

/// Joined already? Else the token and kubeadm, or an input error.
pub fn before(
    c: &Common,
    verb: &'static str,
    sys: &mut LinuxSystem,
    d: &Desired,
    kubeadm: &Path,
    rejoin: bool,
) -> Result<Pre, Failed> {
    let j = the_join(c, verb, d)?;
    let state = sys.load_state().map_err(|e| Failed::system(c, verb, &e))?;
    let marker = state.joined.as_ref().filter(|_| !rejoin);
    if let Some(a) = join::already_joined(sys, marker).map_err(|e| failed(c, verb, &e))? {
        if rejoin && a.kubelet_conf {
            return Err(Failed::new(
                c,
                verb,
                ErrorKind::Input,
                format!(
                    "--rejoin refused: {} exists, so this node is joined; `kubeadm reset` it first if you mean to",
                    underlay::desired::join::KUBELET_CONF
                ),
            ));
        }
        return Ok(Pre::Already(Box::new(join::run::report_already(j, &a))));
    }
    join::prepare(sys, j, kubeadm)
        .map(Pre::Ready)
        .map_err(|e| failed(c, verb, &e))
}

/// The join step after converging (`code`: the converge's exit code,
/// before the gates) and the gates (`gates`).
pub fn after(
    sys: &mut LinuxSystem,
    d: &Desired,
    pre: Pre,
    code: i32,
    gates: Option<&Outcome>,
) -> JoinReport {
    let Some(j) = d.join.as_ref() else {
        unreachable!("before() checked the [join] section")
    };
    let p = match pre {
        Pre::Already(r) => return *r,
        Pre::Ready(p) => p,
    };
    let Some(gates) = gates.filter(|_| code == 0) else {
        return join::not_attempted(
            j,
            format!(
                "not joined: the host does not match the profile (exit {code}; `underlay apply` converges it); \
                 kubeadm was not run"
            ),
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    let mut r = join::join(sys, j, &p, gates, now);
    if let Some(rec) = r.new_record.clone() {
        // kubelet.conf says "joined" too; the marker also covers a node whose
        // TLS bootstrap is still running.
        let saved = sys.load_state().and_then(|mut st| {
            st.joined = Some(rec);
            sys.save_state(&st)
        });
        if let Err(e) = saved {
            r.warnings
                .push(format!("recording the join in the state file: {e}"));
            r.failure_kind.get_or_insert(e.kind());
        }
    }
    r
}

/// The exit code after the join step.
pub fn exit_code(code: i32, r: &JoinReport) -> i32 {
    if r.failure_kind.is_some() {
        1
    } else {
        code
    }
}

/// The join in the document: `changed`, and a failure of its own kind.
pub fn annotate(doc: &mut Document, r: &JoinReport, code: i32) {
    doc.changed |= r.changed();
    doc.exit_code = code;
    doc.failed = code == 1 || code == 3;
    if let Some(kind) = r.failure_kind {
        doc.failure = Some(FailureDoc {
            kind,
            message: r.message.clone(),
            resource: Some(format!("join {}", r.node_name)),
            problems: Vec::new(),
        });
        doc.msg = r.message.clone();
    } else {
        doc.msg = format!("{}; {}", doc.msg, r.message);
    }
    doc.join = Some(r.clone());
}

pub fn human(r: &JoinReport) -> String {
    let mut out = String::new();
    let verdict = match (r.status, r.failure_kind) {
        (_, Some(_)) => "FAILED",
        (JoinStatus::Joined, None) => "joined",
        (JoinStatus::AlreadyJoined, None) => "ok",
        (JoinStatus::NotAttempted | JoinStatus::Failed, None) => "skipped",
    };
    let _ = writeln!(out, "{verdict:<7} join     {}: {}", r.node_name, r.message);
    if r.failure_kind.is_some() {
        for a in &r.attempts {
            let _ = writeln!(
                out,
                "          kubeadm through {} (exit {}), last lines:",
                a.api_server,
                a.exit_code.map_or("by signal".into(), |c| c.to_string())
            );
            for l in &a.output_tail {
                let _ = writeln!(out, "            | {l}");
            }
        }
    }
    if let Some(k) = &r.kubelet {
        let _ = writeln!(out, "          {}: {}", k.unit, k.note);
    }
    for w in &r.warnings {
        let _ = writeln!(out, "          warning: {w}");
    }
    out
}

/// `join --if-configured` on a host whose facts have no `[join]`: nothing
/// observed, nothing changed, exit 0.
fn nothing_to_join(
    c: &Common,
    d: &Desired,
    fetched: &super::sources::Fetched,
    started: Instant,
) -> ExitCode {
    let msg = format!(
        "nothing to join: the host facts of {} have no [join] section (--if-configured); kubeadm was not run",
        d.hostname
    );
    if c.json {
        let mut doc = Document::of_sources(
            Some(&d.hostname),
            c.netns.as_deref(),
            msg,
            fetched.docs(),
            super::converge::ms(started),
        );
        doc.command = "join".into();
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        println!("{:<7} join     {}: {msg}", "skip", d.hostname);
    }
    ExitCode::SUCCESS
}

/// `underlay join`: verify, wait for the gates, join.
pub fn run(a: &JoinArgs) -> Result<ExitCode, Failed> {
    const VERB: &str = "join";
    let c = &a.common;
    init_logs(c);
    output::start_clock();
    let started = Instant::now();
    let (desired, fetched) = c.load(VERB)?;
    if desired.join.is_none() && a.if_configured {
        return Ok(nothing_to_join(c, &desired, &fetched, started));
    }
    the_join(c, VERB, &desired)?;
    let mut sys = c.open(VERB, &desired)?;
    let pre = before(c, VERB, &mut sys, &desired, &a.kubeadm, a.rejoin)?;
    let report =
        engine::run(&mut sys, &desired, Mode::Verify).map_err(|e| Failed::engine(c, VERB, &e))?;
    let converge_code = report.exit_code();
    let mut code = converge_code;
    let converge_ms = super::converge::ms(started);
    let mut outcome = None;
    if matches!(pre, Pre::Ready(_)) && code == 0 {
        let o = super::converge::wait_for_gates(
            &mut sys,
            &desired,
            &report.target,
            a.wait_timeout,
            c.json,
        )
        .map_err(|e| Failed::system(c, VERB, &e))?;
        if !o.passed {
            code = 3;
        }
        outcome = Some(o);
    }
    let r = after(&mut sys, &desired, pre, converge_code, outcome.as_ref());
    let code = exit_code(code, &r);
    let ctx = Context {
        command: VERB,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code);
        annotate(&mut doc, &r, code);
        doc.durations_ms.total = super::converge::ms(started);
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        if let Some(g) = &outcome {
            print!("{}", report::gates_human(g, true));
        }
        print!("{}", human(&r));
    }
    Ok(ExitCode::from(code as u8))
}
