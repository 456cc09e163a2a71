//! `doctor`: read-only checks of a live host, with evidence and the fix.

use std::process::ExitCode;

use underlay::system::netns;

use super::{init_logs, output, under_root, Common, Failed};

pub fn run(c: &Common) -> Result<ExitCode, Failed> {
    init_logs(c.verbose);
    output::start_clock();
    // A profile makes the checks sharper; without one (none given, none
    // installed) the generic checks still run.
    let installed = under_root(&c.root, "/etc/underlay/profile.toml").exists()
        && under_root(&c.root, "/etc/underlay/host.toml").exists();
    let desired = if c.profile.is_some() || c.host.is_some() || installed {
        Some(c.load("doctor")?)
    } else {
        None
    };
    if let Some(ns) = &c.netns {
        netns::enter(ns).map_err(|e| Failed::system(c, "doctor", &e))?;
    }
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
