//! `show-sources`: which source won for the role profile and for the host
//! facts, its origin, sha256 and whether the cache stood in for the server;
//! then whether the pair validates. Fetches (pinned, into nothing) but
//! changes nothing, not even the cache.
//!
//! `--json` prints the common document (`report::Document`, command
//! `show-sources`, `converged` null) with one `sources[]` entry per item:
//! `item`, `level` (flag, cmdline, cloud-init, local), `declared`,
//! `origin` (a path, or the URL without its query string), `sha256`,
//! `bytes`, `pinned`, `from_cache`, `cache_reason`.

use std::fmt::Write as _;
use std::process::ExitCode;

use underlay::profile;
use underlay::report::Document;
use underlay::source::{self, Freshness, Loaded};

use super::{init_logs, output, Common, Failed};

const VERB: &str = "show-sources";

pub fn run(c: &Common) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    let started = std::time::Instant::now();
    let f = c.fetch_sources(VERB)?;
    let (role, host) = (&f.loaded[0], &f.loaded[1]);
    let valid = profile::load_bytes(&role.origin, &role.bytes, &host.origin, &host.bytes);
    if !c.json {
        print!("{}", human(&f.loaded));
    }
    let d = valid.map_err(|e| Failed::profile(c, VERB, &e).with_sources(f.docs()))?;
    let msg = format!(
        "profile from {}, host facts from {}{}",
        f.loaded[0].level.describe(),
        f.loaded[1].level.describe(),
        f.msg_suffix()
    );
    if c.json {
        let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let doc = Document::of_sources(Some(&d.hostname), c.netns.as_deref(), msg, f.docs(), ms);
        println!("{}", serde_json::to_string(&doc).unwrap_or_default());
    } else {
        println!("valid: host {} ({})", d.hostname, msg);
    }
    Ok(ExitCode::SUCCESS)
}

fn human(loaded: &[Loaded]) -> String {
    let mut out = String::from("underlay show-sources\n");
    for l in loaded {
        let how = match (&l.freshness, l.pinned) {
            (Freshness::Fetched, _) => "pinned, fetched now".to_string(),
            (Freshness::FromCache { reason }, _) => {
                format!("pinned, FROM THE CACHE: the server could not be reached ({reason})")
            }
            (Freshness::Cached, _) => format!("pinned, from the cache ({})", source::CACHED_REASON),
            (Freshness::Local, true) => "pinned".to_string(),
            (Freshness::Local, false) => "not pinned (local)".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<8} {} ({})\n         {}\n         sha256 {}  {} bytes, {how}",
            l.item.key(),
            l.level.describe(),
            l.declared,
            l.origin,
            l.sha256,
            l.bytes.len()
        );
    }
    out
}
