//! The host BIRD's config, rendered for the resolved uplinks, and the BGP
//! sessions the gates read.

use super::{BgpInputs, BirdTarget, ResolveError, Target};
use crate::desired::Desired;

pub(super) fn resolve(d: &Desired, inputs: &BgpInputs, t: &mut Target) -> Result<(), ResolveError> {
    if let Some(bgp) = &d.bgp {
        let ifnames: Vec<String> = t.uplinks().iter().map(|l| l.ifname.clone()).collect();
        let mut passwords = inputs.passwords.clone();
        passwords.resize(d.uplinks.len(), None);
        let params =
            crate::bgp::from_desired::params(d, bgp, &ifnames, &passwords, inputs.log.clone());
        let template = inputs.template.as_ref();
        let content = crate::bgp::render(
            &params,
            template.map(|t| (t.label.as_str(), t.text.as_str())),
        )
        .map_err(|e| ResolveError::Render(e.to_string()))?;
        let sessions = params
            .uplinks
            .iter()
            .map(|u| {
                let mut v = Vec::new();
                if u.peer_v4.is_some() {
                    v.push(crate::bgp::render::session_name(u, false));
                }
                if u.peer_v6.is_some() {
                    v.push(crate::bgp::render::session_name(u, true));
                }
                (u.name.clone(), v)
            })
            .collect();
        t.bird = Some(BirdTarget {
            config_path: bgp.config_path.clone(),
            owner: bgp.config_owner.clone(),
            socket: bgp.control_socket.clone(),
            content,
            sessions,
            dirs: inputs.bird_dirs.clone(),
        });
    }
    Ok(())
}
