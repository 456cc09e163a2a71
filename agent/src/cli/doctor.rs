//! `doctor`: read-only checks of a live host, with evidence and the fix.

use std::process::ExitCode;

use super::{init_logs, output, Common, Failed};

pub fn run(c: &Common) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    // A profile makes the checks sharper; without one (none given, none
    // on the kernel command line, in cloud-init or installed) the generic
    // checks still run.
    let desired = if c.profile.is_some() || c.host.is_some() || c.sources_declared("doctor")? {
        Some(c.load("doctor")?.0)
    } else {
        None
    };
    c.enter_netns("doctor")?;
    let r = underlay::doctor::run(&underlay::doctor::DoctorOptions {
        root: c.root.clone(),
        desired,
        in_netns: c.netns.is_some(),
    });
    if c.json {
        println!("{}", r.json());
    } else if c.verbose > 0 {
        print!("{}", r.human_verbose());
    } else {
        print!("{}", r.human());
    }
    Ok(ExitCode::from(r.exit_code() as u8))
}
