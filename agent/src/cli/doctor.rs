//! `doctor`: read-only checks of a live host, with evidence and the fix.

use std::process::ExitCode;

use underlay::system::linux::LinuxSystem;

use super::{init_logs, output, Common, Failed};

const VERB: &str = "doctor";

pub fn run(c: &Common) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    // A profile makes the checks sharper; without one (none given, none
    // on the kernel command line, in cloud-init or installed) the generic
    // checks still run.
    let desired = if c.profile.is_some() || c.host.is_some() || c.sources_declared(VERB)? {
        Some(c.load(VERB)?.0)
    } else {
        None
    };
    c.enter_netns(VERB)?;
    // The same system every verb opens: --root, --state, the namespace.
    // Read-only: doctor takes no lock and writes nothing.
    let mut sys = LinuxSystem::new(&c.root, &c.state, c.netns.is_some())
        .map_err(|e| Failed::system(c, VERB, &e))?;
    let r = underlay::doctor::run(&mut sys, desired.as_ref());
    if c.json {
        println!("{}", r.json());
    } else if c.verbose > 0 {
        print!("{}", r.human_verbose());
    } else {
        print!("{}", r.human());
    }
    Ok(ExitCode::from(r.exit_code() as u8))
}
