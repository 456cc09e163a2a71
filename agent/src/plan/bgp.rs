//! The host BIRD's config: written (after BIRD's own parser accepts it) only
//! when the rendered text differs, and reloaded only then. Its content may
//! hold BGP passwords, so plans show line counts and a hash, never the text.

use sha2::{Digest, Sha256};

use super::{Action, Item, Kind, Op, Target};
use crate::observed::Observed;

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
    }];
    let mut after = summary(&b.content);
    if o.bird_running {
        ops.push(Op::ReloadBird {
            socket: b.socket.clone(),
        });
        after.push_str(", reload");
    } else if !o.systemd {
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

/// On a systemd host a stopped BIRD is started (after its config is in
/// place); inside `--netns` runs the caller supervises BIRD instead.
fn start_unit(o: &Observed) -> Option<Item> {
    (!o.bird_running && o.systemd).then(|| Item {
        kind: Kind::Bgp,
        id: format!("unit {BIRD_UNIT}"),
        action: Action::Update,
        before: Some("not running".into()),
        after: Some("started".into()),
        ops: vec![Op::StartUnit {
            unit: BIRD_UNIT.into(),
        }],
    })
}

pub const BIRD_UNIT: &str = "bird.service";
