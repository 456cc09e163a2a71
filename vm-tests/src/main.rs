//! `underlay-lab`: a network-namespace lab for the `underlay` agent.
//!
//! ```text
//!                       ul-client  (192.168.99.1 on lo, static ECMP default)
//!                   eth0 /      \ eth1        192.168.100.0/31, 192.168.101.0/31
//!            ul-tor-a (AS 65001) ---peer--- ul-tor-b (AS 65002)   172.30.0.0/31, eBGP
//!               | h1 .. hN                      | h1 .. hN
//!   eth0 172.30.<2i>.1/31                 eth1 172.30.<2i+1>.1/31
//!            ul-hI (AS 65100+i, 10.10.0.<10+i>/32 on lo)
//!              host BIRD  <-iBGP 127.0.0.1:179 / 127.0.0.2:1179->  Calico-role BIRD
//!              calipod0 --- ul-hI-pod (10.244.<i>.1, default via 169.254.1.1 onlink)
//! ```
//!
//! - ToRs run BIRD 2: eBGP + BFD to every host, `merge paths on`, announce a
//!   default and the client subnet 192.168.99.0/24, accept host /32s and pod
//!   /26s only.
//! - The ToR-to-ToR link carries an eBGP session with host routes only. The
//!   client has no BGP: without the link, the flows it hashes to the ToR that
//!   lost a host would be dropped during a failover.
//! - Hosts are converged by `underlay apply --netns ul-hI --root <dir>/hI/root`,
//!   which also renders the host BIRD config `<root>/etc/bird/bird.conf`; the
//!   lab starts the host BIRD on it (control socket `<root>/run/bird/bird.ctl`)
//!   and `up` fails when the agent did not write it. Readiness comes from
//!   `underlay verify --wait --json` (its gates), or from the lab's own wait
//!   when the agent binary has no `--wait`.
//! - The Calico-role BIRD uses the kernel settings of Calico's bird.cfg
//!   (`learn`, `persist`, `scan time 2`) and syncs `main`; the host BIRD syncs
//!   table 1001. The `no-table-fight` and `table-fight-shared-main` scenarios
//!   show why (docs/background.md failure 2).
//! - Everything lives in namespaces named `--prefix` + name (default `ul-`) and
//!   files below `--dir`; the root namespace and /etc are never touched.
//!
//! Modules: `plan` (names and addresses, pure), `topology` (namespaces, veths),
//! `bird` (configs, processes, `birdc`), `agent` (host facts, `underlay
//! apply`), `lifecycle` (up/down), `status`, `scenarios`, `join` (the
//! cluster join against `kubeadm-standin`), `probe` (ICMP/TCP probes the lab
//! runs inside namespaces by re-executing itself).

mod agent;
mod bench;
mod bgpfail;
mod bird;
mod cmd;
mod fleet;
mod fleetbench;
mod join;
mod lifecycle;
mod outcome;
mod overrides;
mod plan;
mod probe;
mod scenarios;
mod status;
mod tablefight;
mod topology;
mod vm;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use plan::Lab;

#[derive(Parser)]
#[command(
    name = "underlay-lab",
    about = "Network-namespace lab for the underlay agent"
)]
struct Cli {
    /// Lab directory: configs, sockets, pidfiles, host roots.
    #[arg(long, global = true, default_value = "/tmp/underlay-lab")]
    dir: PathBuf,
    /// Prefix of every namespace the lab creates (tests use their own).
    #[arg(long, global = true, default_value = "ul-")]
    prefix: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or repair) the lab, converge the hosts, wait for BGP and ECMP.
    Up {
        /// Number of hosts (1-100), each with two uplinks, a pod and a Calico-role BIRD.
        #[arg(long, default_value_t = 2)]
        hosts: u8,
        /// Role profile given to `underlay apply`.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Seconds to wait for sessions and next hops (also `underlay verify --wait-timeout`).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Per-host BGP sessions, host-table next hops, rules.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove everything `up` made (also after a partial up).
    Down,
    /// Run scenario checks against a lab that is up.
    Test {
        /// Run only these scenarios (default: all).
        #[arg(long = "only")]
        only: Vec<String>,
        /// List the scenarios and exit.
        #[arg(long)]
        list: bool,
        /// Seconds of route churn in `no-table-fight` (split tables).
        #[arg(long, default_value_t = 60)]
        churn_secs: u64,
        /// Seconds of route churn in `table-fight-shared-main` (both BIRDs
        /// syncing main; the fight shows within a few seconds).
        #[arg(long, default_value_t = 15)]
        fight_secs: u64,
        /// Run `failover-silent-no-bfd` on the host BIRD config underlay
        /// rendered before LLGR was turned off on the uplinks (BIRD's default
        /// LLGR `aware`): it then measures the dead path LLGR keeps (about
        /// two minutes) and fails.
        #[arg(long)]
        llgr: bool,
    },
    /// Benchmark underlay against ip -batch, an ip/sysctl script and nmstatectl,
    /// in namespaces it creates: median wall time, peak RSS, ratios.
    Bench(bench::BenchArgs),
    /// The QEMU tier: Debian 12 VMs (the .deb installed, real first boots)
    /// against the lab's ToRs. `vm test --list` shows the scenarios.
    Vm {
        #[command(subcommand)]
        cmd: vm::VmCmd,
    },
    /// The hosts as an Ansible fleet: sshd in every host namespace, the
    /// underlay.fabric.converge module run by ansible-playbook over SSH.
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
    /// Traffic probes, run by the lab inside namespaces.
    #[command(hide = true)]
    Probe {
        #[command(subcommand)]
        probe: ProbeCmd,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Build the fabric and a management network with an sshd per host; the
    /// hosts stay unconverged (the playbook converges them).
    Up {
        /// Number of hosts (1-100).
        #[arg(long, default_value_t = 4)]
        hosts: u8,
        /// Role profile the playbook gives the module.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Run the playbook over SSH from the management namespace; print each
    /// host's result. Exit status: ansible-playbook's.
    Run {
        #[arg(long, default_value_t = 16)]
        forks: u32,
        /// Ansible check mode (underlay plan).
        #[arg(long)]
        check: bool,
        /// Ansible diff mode (before/after per changed resource).
        #[arg(long)]
        diff: bool,
        /// Safe apply: roll back a host whose gates do not pass in SECS.
        #[arg(long, value_name = "SECS")]
        safe: Option<u64>,
        /// Give these hosts broken host facts (a wrong peer ASN: valid input
        /// that takes the host off the fabric), e.g. `--broken h2`.
        #[arg(long, value_delimiter = ',')]
        broken: Vec<String>,
        /// Print the per-host results as JSON.
        #[arg(long)]
        json: bool,
        /// Also print ansible-playbook's own output.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Playbook wall time for 4, 16 and 32 hosts (first and no-op run) against
    /// a plain shell loop of `underlay apply` over the same SSH. Builds and
    /// removes its own fleets (below --dir, namespaces --prefix + `fb<N>-`).
    Bench(fleetbench::Args),
    /// Remove the fleet and the lab (same as `underlay-lab down`).
    Down,
}

#[derive(Subcommand)]
enum ProbeCmd {
    Ping {
        dst: Ipv4Addr,
        #[arg(long, default_value_t = 3)]
        count: u32,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    Serve {
        listen: SocketAddr,
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
    },
    Connect {
        dst: SocketAddr,
        #[arg(long, default_value_t = 1)]
        flows: u32,
        #[arg(long, default_value_t = 1000)]
        bytes: usize,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("underlay-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Up {
            hosts,
            profile,
            timeout,
        } => {
            let lab = Lab::new(&cli.dir, &cli.prefix, hosts)?;
            let opts = lifecycle::UpOptions {
                profile: profile.unwrap_or_else(agent::default_profile),
                timeout: Duration::from_secs(timeout),
            };
            let (st, timings) = lifecycle::up(&lab, &opts)?;
            print!("{}", status::render_table(&st));
            for t in timings {
                let ms = |d: Option<Duration>| {
                    d.map(|d| format!("{} ms", d.as_millis()))
                        .unwrap_or("-".into())
                };
                println!(
                    "{}: both ToR sessions Established after {}, 2 next hops after {}, all converged (incl. Calico session) after {}",
                    t.host,
                    ms(t.established),
                    ms(t.two_nexthops),
                    ms(t.converged)
                );
            }
            for h in &st.hosts {
                if let Some(line) = status::readiness_line(h) {
                    println!("{}: {line}", h.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let lab = Lab::load(&cli.dir)?;
            let st = status::collect(&lab);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", status::render_table(&st));
            }
            Ok(if st.converged() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Down => {
            let lab = lifecycle::lab_for_down(&cli.dir, &cli.prefix)?;
            for line in lifecycle::down(&lab)? {
                println!("{line}");
            }
            println!("lab {} ({}*) is down", lab.dir.display(), lab.prefix);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test {
            only,
            list,
            churn_secs,
            fight_secs,
            llgr,
        } => {
            if list {
                for (name, what, _) in scenarios::SCENARIOS {
                    println!("{name:<24} {what}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let lab = Lab::load(&cli.dir)?;
            let opts = scenarios::TestOptions {
                churn: Duration::from_secs(churn_secs),
                fight: Duration::from_secs(fight_secs),
                llgr,
            };
            let (passed, failed) = scenarios::run(&lab, &only, &opts)?;
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Bench(args) => bench::main(args),
        Cmd::Vm { cmd } => vm::main(cmd),
        Cmd::Fleet { cmd } => run_fleet(&cli.dir, &cli.prefix, cmd),
        Cmd::Probe { probe } => run_probe(probe),
    }
}

fn run_fleet(dir: &std::path::Path, prefix: &str, cmd: FleetCmd) -> Result<ExitCode> {
    match cmd {
        FleetCmd::Up { hosts, profile } => {
            let lab = Lab::new(dir, prefix, hosts)?;
            let opts = fleet::UpOptions {
                profile: profile.unwrap_or_else(agent::default_profile),
            };
            fleet::up(&lab, &opts)?;
            println!(
                "fleet of {hosts} hosts is up: inventory and ssh_config in {}; sshd on 192.168.200.1-{hosts}, controller namespace {}",
                fleet::fleet_dir(&lab).display(),
                lab.mgmt_netns()
            );
            Ok(ExitCode::SUCCESS)
        }
        FleetCmd::Run {
            forks,
            check,
            diff,
            safe,
            broken,
            json,
            verbose,
        } => {
            let lab = Lab::load(dir)?;
            let opts = fleet::RunOptions {
                forks,
                check,
                diff,
                safe,
                broken,
                limit: None,
            };
            let r = fleet::run(&lab, &opts)?;
            if verbose {
                print!("{}", r.output);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", fleet::render_run(&r));
            }
            Ok(if r.code == Some(0) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FleetCmd::Bench(args) => fleetbench::main(dir, prefix, &args),
        FleetCmd::Down => {
            let lab = lifecycle::lab_for_down(dir, prefix)?;
            for line in lifecycle::down(&lab)? {
                println!("{line}");
            }
            println!("fleet {} ({}*) is down", lab.dir.display(), lab.prefix);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_probe(p: ProbeCmd) -> Result<ExitCode> {
    match p {
        ProbeCmd::Ping {
            dst,
            count,
            timeout_ms,
        } => {
            let r = probe::ping(dst, count, Duration::from_millis(timeout_ms))?;
            println!("{}", serde_json::to_string(&r)?);
        }
        ProbeCmd::Serve { listen, idle_secs } => {
            probe::serve(listen, Duration::from_secs(idle_secs))?
        }
        ProbeCmd::Connect {
            dst,
            flows,
            bytes,
            timeout_ms,
        } => {
            let r = probe::connect(dst, flows, bytes, Duration::from_millis(timeout_ms));
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
