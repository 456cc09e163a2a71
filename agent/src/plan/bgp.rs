//! The host BIRD's config: written (after BIRD's own parser accepts it) only
//! when the rendered text differs, and reloaded only then. Its content may
//! hold BGP passwords, so plans show line counts and a hash, never the text.

use sha2::{Digest, Sha256};

use super::{Action, Item, Kind, Op, Target};
use crate::observed::{Observed, UnitControl};

pub fn summary(content: &str) -> String {
    let hash = Sha256::digest(content.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{} lines, sha256 {hex}", content.lines().count())
}

pub fn plan_bgp(t: &Target, o: &Observed) -> Vec<Item> {
    let Some(b) = &t.bird else {
        return Vec::new();
    };
    let id = format!("bird config {}", b.config_path.display());
    let cur = o.files.get(&b.config_path).cloned().flatten();
    if cur.as_deref() == Some(b.content.as_str()) {
        let mut items = vec![Item::ok(Kind::Bgp, id, summary(&b.content))];
        items.extend(start_unit(o));
        return items;
    }
    let mut ops = vec![Op::WriteBirdConfig {
        path: b.config_path.clone(),
        owner: b.owner.clone(),
        content: b.content.clone(),
        dirs: b.dirs.clone(),
    }];
    let mut after = summary(&b.content);
    if o.bird_running {
        ops.push(Op::ReloadBird {
            socket: b.socket.clone(),
        });
        after.push_str(", reload");
    } else if o.units != UnitControl::Systemd {
        after.push_str(", BIRD not running: read at its start");
    }
    let mut items = vec![Item {
        kind: Kind::Bgp,
        id,
        action: if cur.is_some() {
            Action::Update
        } else {
            Action::Create
        },
        before: cur.as_deref().map(summary),
        after: Some(after),
        ops,
    }];
    items.extend(start_unit(o));
    items
}

/// A BIRD that does not answer on its socket. On a systemd host (real root)
/// its unit is started over D-Bus and the job awaited, unless systemd already
/// has a start job queued (at boot, ordered after the converge unit) or the
/// unit is ordered after the unit this run executes in (awaiting that job
/// would wait for ourselves). Inside `--netns` or without systemd the caller
/// supervises BIRD. Under a scratch `--root` the machine's bird.service reads
/// the machine's /etc, not the config just written: it is never driven.
fn start_unit(o: &Observed) -> Option<Item> {
    if o.bird_running {
        return None;
    }
    let id = format!("unit {BIRD_UNIT}");
    let start = |wait: bool, after: String| Item {
        kind: Kind::Bgp,
        id: id.clone(),
        action: Action::Update,
        before: Some("not running".into()),
        after: Some(after),
        ops: vec![Op::StartUnit {
            unit: BIRD_UNIT.into(),
            wait,
        }],
    };
    match &o.units {
        UnitControl::Caller => None,
        UnitControl::ScratchRoot(root) => Some(Item::skip(
            Kind::Bgp,
            id,
            format!(
                "not started: --root {} is not this machine's root, and this machine's {BIRD_UNIT} \
                 reads its own /etc; start a BIRD on the config below the root yourself",
                root.display()
            ),
        )),
        UnitControl::Systemd => match &o.bird_unit {
            Some(u) if u.queued_job.is_some() => Some(Item::ok(
                Kind::Bgp,
                id,
                format!(
                    "start queued by systemd (job {}): BIRD starts after this run",
                    u.queued_job.unwrap_or_default()
                ),
            )),
            // Started by systemd a moment ago; its control socket follows.
            Some(u)
                if matches!(
                    u.active_state.as_str(),
                    "active" | "activating" | "reloading"
                ) =>
            {
                Some(Item::ok(
                    Kind::Bgp,
                    id,
                    format!("{}, control socket not answering yet", u.active_state),
                ))
            }
            Some(u) if u.ordered_after_caller.is_some() => Some(start(
                false,
                format!(
                    "start queued: systemd starts it once {} has finished",
                    u.ordered_after_caller.as_deref().unwrap_or_default()
                ),
            )),
            _ => Some(start(true, "started".into())),
        },
    }
}

pub const BIRD_UNIT: &str = "bird.service";
