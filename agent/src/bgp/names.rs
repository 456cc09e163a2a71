//! The BIRD symbols the rendered config derives from operator-chosen names
//! (uplinks, the host table): each must be a BIRD identifier, unique, and
//! neither a BIRD keyword nor a name the template uses for its own
//! protocols. Pure, and shared by the profile validator and the renderer, so
//! a validated profile never renders a config BIRD refuses over a name.

/// Names the embedded template gives its own protocols, tables and filters.
pub const FIXED_NAMES: &[&str] = &[
    "device1",
    "direct_lo",
    "kernel_host4",
    "kernel_host6",
    "bfd1",
    "tor_export4",
    "tor_export6",
    "tor_import4",
    "tor_import6",
    "calico",
    "calico_nh",
    "calico_igp4",
    "calico_igp6",
    "master4",
    "master6",
];

/// Every word BIRD 2.0.12 refuses as a protocol name: its keywords and
/// predefined symbols, one per line in `bird-keywords.txt`. Found by running
/// `bird -p` on `protocol bgp <word>` for every word of the CF_KEYWORDS,
/// CF_CLI and CF_ENUM lists in the 2.0.12 sources and every identifier-like
/// string in Debian 12's `/usr/sbin/bird`, keeping those it rejected;
/// `tests/bird_profiles.rs` re-checks the list against the installed BIRD.
/// Newer BIRDs add keywords: re-run that test.
const KEYWORDS: &str = include_str!("bird-keywords.txt");

/// The words of [`KEYWORDS`] (comment lines skipped).
pub fn keywords() -> impl Iterator<Item = &'static str> {
    KEYWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Maps a logical or kernel name onto a BIRD symbol: lower case, `[a-z0-9_]`, not starting
/// with a digit (`underlay-host` -> `underlay_host`, `1tor` -> `p_1tor`).
pub fn bird_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "p_");
    }
    out
}

/// BIRD protocol name of an uplink's session for one family: `tor_a` (IPv4), `tor_a_v6`.
pub fn session_name(uplink: &str, v6: bool) -> String {
    let base = bird_identifier(uplink);
    if v6 {
        format!("{base}_v6")
    } else {
        base
    }
}

/// BIRD table names of the host table: `underlay_host4`, `underlay_host6`.
pub fn table_names(host_table: &str) -> [String; 2] {
    let t = bird_identifier(host_table);
    [format!("{t}4"), format!("{t}6")]
}

/// Why a derived symbol cannot be used, if it cannot.
pub fn reserved(id: &str) -> Option<&'static str> {
    if keywords().any(|k| k == id) {
        Some("a BIRD keyword")
    } else if FIXED_NAMES.contains(&id) {
        Some("a name the rendered config uses for its own protocols")
    } else {
        None
    }
}

/// A value BIRD reads between double quotes: its lexer has no escapes, so a
/// quote or a line break cannot be written at all.
pub fn quotable(s: &str) -> bool {
    !s.is_empty() && !s.contains(['"', '\n', '\r', '\0'])
}

/// An uplink as far as naming goes: its logical name and which sessions it gets.
#[derive(Debug, Clone, Copy)]
pub struct UplinkNames<'a> {
    pub name: &'a str,
    pub v4: bool,
    pub v6: bool,
}

/// A derived name BIRD would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// The host table's BIRD name is reserved.
    Table { id: String, why: &'static str },
    /// Uplink `index` maps to a reserved symbol.
    Reserved {
        index: usize,
        id: String,
        why: &'static str,
    },
    /// Uplink `index` maps to a symbol the host table or an earlier uplink (`other`) has.
    Duplicate {
        index: usize,
        id: String,
        other: Option<usize>,
    },
}

impl NameProblem {
    /// The uplink the problem is about (`None`: the host table).
    pub fn uplink(&self) -> Option<usize> {
        match self {
            NameProblem::Table { .. } => None,
            NameProblem::Reserved { index, .. } | NameProblem::Duplicate { index, .. } => {
                Some(*index)
            }
        }
    }

    /// What is wrong and the fix, for a person.
    pub fn message(&self, uplinks: &[UplinkNames]) -> String {
        let name = |i: usize| uplinks.get(i).map_or("", |u| u.name);
        match self {
            NameProblem::Table { id, why } => format!(
                "found a name that maps to BIRD table name {id}, which is {why}; expected another table name, e.g. underlay-host"
            ),
            NameProblem::Reserved { index, id, why } => format!(
                "found '{}', which maps to BIRD protocol name {id}, {why}; expected another uplink name, e.g. tor-{}",
                name(*index),
                name(*index)
            ),
            NameProblem::Duplicate { index, id, other } => match other {
                Some(o) => format!(
                    "found '{}', which maps to BIRD protocol name {id}, already taken by uplinks[{o}] ('{}') (BIRD names are lower case, '-' becomes '_'); expected uplink names that differ in letters or digits",
                    name(*index),
                    name(*o)
                ),
                None => format!(
                    "found '{}', which maps to BIRD name {id}, already taken by the host table; expected another uplink name",
                    name(*index)
                ),
            },
        }
    }
}

/// Every naming problem of a config with this host table and these uplinks.
pub fn check(host_table: &str, uplinks: &[UplinkNames]) -> Vec<NameProblem> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, Option<usize>)> = Vec::new();
    for id in table_names(host_table) {
        if let Some(why) = reserved(&id) {
            out.push(NameProblem::Table {
                id: id.clone(),
                why,
            });
        }
        seen.push((id, None));
    }
    for (index, u) in uplinks.iter().enumerate() {
        let ids = [
            u.v4.then(|| session_name(u.name, false)),
            u.v6.then(|| session_name(u.name, true)),
        ];
        for id in ids.into_iter().flatten() {
            if let Some(why) = reserved(&id) {
                out.push(NameProblem::Reserved { index, id, why });
                continue;
            }
            if let Some((_, other)) = seen.iter().find(|(s, _)| *s == id) {
                out.push(NameProblem::Duplicate {
                    index,
                    id,
                    other: *other,
                });
                continue;
            }
            seen.push((id, Some(index)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str) -> UplinkNames<'_> {
        UplinkNames {
            name,
            v4: true,
            v6: true,
        }
    }

    #[test]
    fn keyword_list_is_sorted_and_has_the_obvious_ones() {
        let k: Vec<&str> = keywords().collect();
        assert!(k.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        for w in ["as", "bgp", "hold", "kernel", "table", "master4", "is_v6"] {
            assert!(k.contains(&w), "{w}");
        }
        assert!(!k.contains(&"tor_a"));
    }

    #[test]
    fn identifiers() {
        assert_eq!(bird_identifier("underlay-host"), "underlay_host");
        assert_eq!(bird_identifier("tor-a"), "tor_a");
        assert_eq!(bird_identifier("ToR.B 2"), "tor_b_2");
        assert_eq!(bird_identifier("1tor"), "p_1tor");
        assert_eq!(bird_identifier(""), "p_");
        assert_eq!(session_name("tor-a", true), "tor_a_v6");
    }

    #[test]
    fn finds_every_kind_of_clash() {
        assert!(check("underlay-host", &[up("tor-a"), up("tor-b")]).is_empty());
        let p = check("underlay-host", &[up("tor-a"), up("TOR_A")]);
        assert!(
            matches!(
                &p[..],
                [
                    NameProblem::Duplicate {
                        index: 1,
                        other: Some(0),
                        ..
                    },
                    ..
                ]
            ),
            "{p:?}"
        );
        let p = check("underlay-host", &[up("hold")]);
        assert!(
            matches!(&p[..], [NameProblem::Reserved { index: 0, .. }]),
            "{p:?}"
        );
        // `is` is fine for IPv4, but its IPv6 session would be `is_v6`, a BIRD keyword.
        let p = check("underlay-host", &[up("is")]);
        assert!(
            matches!(&p[..], [NameProblem::Reserved { id, .. }] if id == "is_v6"),
            "{p:?}"
        );
        let p = check("underlay-host", &[up("underlay-host4")]);
        assert!(
            matches!(&p[..], [NameProblem::Duplicate { other: None, .. }]),
            "{p:?}"
        );
        let p = check("as", &[up("tor-a")]);
        assert!(
            matches!(&p[..], [NameProblem::Table { id, .. }] if id == "as4"),
            "{p:?}"
        );
        let p = check("calico-igp", &[]);
        assert!(!p.is_empty(), "calico_igp4 is the template's");
    }
}
