//! `plan`, `apply`, `verify` and `status`: the pipeline, then the readiness
//! gates when asked (`--wait`) or as they stand (`status`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use underlay::desired::Desired;
use underlay::engine::{self, Mode};
use underlay::gates;
use underlay::plan::Target;
use underlay::report::{self, Context, Document};
use underlay::system::{System, SystemError};

use super::{init_logs, output, Common, Failed, WithWait};

pub fn run(
    mode: Mode,
    verb: &'static str,
    c: &Common,
    wait: Option<&WithWait>,
) -> Result<ExitCode, Failed> {
    init_logs(c.verbose);
    output::start_clock();
    let started = Instant::now();
    // Validate everything before the first syscall that could change anything.
    let desired = c.load(verb)?;
    let mut sys = c.open(verb, &desired)?;
    let report = engine::run(&mut sys, &desired, mode).map_err(|e| Failed::engine(c, verb, &e))?;
    let mut code = report.exit_code();
    let converge_ms = ms(started);
    let mut outcome = None;
    if let Some(w) = wait.filter(|w| w.wait && code == 0) {
        let o = wait_for_gates(&mut sys, &desired, &report.target, w)
            .map_err(|e| Failed::system(c, verb, &e))?;
        if !o.passed {
            code = 3;
        }
        outcome = Some(o);
    } else if mode == Mode::Status {
        // Status shows the gates as they stand now, without waiting.
        let spec = gates::spec(&desired, &report.target, Some(Duration::ZERO));
        outcome =
            Some(gates::wait(&mut sys, &spec, |_, _| {}).map_err(|e| Failed::system(c, verb, &e))?);
    }
    let ctx = Context {
        command: verb,
        host: &desired.hostname,
        netns: c.netns.as_deref(),
        total_ms: converge_ms,
    };
    if c.json {
        let mut doc = Document::of_report(&report, &ctx, outcome.as_ref(), code);
        doc.durations_ms.total = ms(started);
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        print!("{}", report::human(&report, &ctx, c.verbose > 0));
        if let Some(g) = &outcome {
            print!("{}", report::gates_human(g));
        }
    }
    Ok(ExitCode::from(code as u8))
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn wait_for_gates(
    sys: &mut dyn System,
    desired: &Desired,
    target: &Target,
    w: &WithWait,
) -> Result<gates::Outcome, SystemError> {
    let spec = gates::spec(desired, target, w.wait_timeout.map(Duration::from_secs));
    let tty = std::io::stderr().is_terminal() && !w.common.json;
    let mut last_status = String::new();
    let outcome = gates::wait(sys, &spec, |gates, elapsed| {
        let passed = gates.iter().filter(|g| g.passed).count();
        let pending = gates.iter().find(|g| !g.passed);
        let status = match pending {
            Some(g) => format!(
                "waiting for {} ({passed}/{} gates passed): {}",
                g.name,
                gates.len(),
                g.evidence
            ),
            None => format!("all {} readiness gates passed", gates.len()),
        };
        if tty {
            eprint!("\r\x1b[K{status} [{:.1} s]", elapsed.as_secs_f64());
        }
        if status != last_status {
            // Without NOTIFY_SOCKET this is a no-op.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
    })?;
    if tty {
        eprintln!();
    }
    if outcome.passed {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    Ok(outcome)
}
