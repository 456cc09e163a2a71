//! `render bird|calico|join`: the generated configuration, secrets redacted
//! unless `--show-secrets`.

use std::process::ExitCode;

use underlay::engine;
use underlay::error::ErrorKind;

use super::{init_logs, output, Common, Failed, RenderWhat};

pub fn run(what: RenderWhat, show_secrets: bool, c: &Common) -> Result<ExitCode, Failed> {
    init_logs(c);
    output::start_clock();
    let (desired, _) = c.load("render")?;
    let text = match what {
        RenderWhat::Calico => underlay::render::calico::render(&desired)
            .map_err(|e| Failed::new(c, "render", ErrorKind::Input, e.to_string()))?,
        RenderWhat::Join => {
            let Some(j) = &desired.join else {
                let e = underlay::join::JoinError::NoJoin;
                return Err(Failed::new(c, "render", e.kind(), e.to_string()));
            };
            // The token only when asked for (the file may not exist yet).
            let token = if show_secrets {
                let mut sys = c.open("render", &desired)?;
                Some(
                    underlay::join::run::read_token(&mut sys, j)
                        .map_err(|e| Failed::new(c, "render", e.kind(), e.to_string()))?,
                )
            } else {
                None
            };
            underlay::join::render::render(j, &j.api_servers[0], token.as_ref())
        }
        RenderWhat::Bird => {
            if desired.bgp.is_none() {
                return Err(Failed::new(
                    c,
                    "render",
                    ErrorKind::Input,
                    "the role profile has no [bgp] section".into(),
                ));
            }
            let mut sys = c.open("render", &desired)?;
            let (target, _) = engine::observe(&mut sys, &desired, None)
                .map_err(|e| Failed::engine(c, "render", &e))?;
            let text = target.bird.map(|b| b.content).unwrap_or_default();
            // BGP passwords stay out of terminals and logs unless asked for.
            if show_secrets {
                text
            } else {
                underlay::bgp::redact(&text)
            }
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
