//! A corpus of malformed profiles and host facts, made from the shipped files
//! by mutation: every `key = value` given a value of each wrong type, out of
//! range or of the wrong shape; every key set twice; an unknown key in every
//! table; wrong versions; files cut at many points. Each rejection must name
//! its file, a key path, the line of the offending value (not 1:1), what was
//! found and what is expected, with no Rust type names, in bounded length.

mod profile_fixtures;

use profile_fixtures::{assert_well_formed, faults, host_full, load, role_full, HOST, ROLE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Role,
    Host,
}

struct Case {
    name: String,
    file: File,
    text: String,
    /// The other file of the pair, unchanged.
    other: String,
    /// The 1-based line the error must point at, and a fragment of the key
    /// path reported there. `None`: anywhere (truncations).
    at: Option<(usize, String)>,
    /// Must be rejected (false: the mutation may happen to be valid).
    must_fail: bool,
}

/// `key = value` lines outside comments, with their 0-based line index, the
/// key as written and the byte range of the value within the line.
fn assignments(text: &str) -> Vec<(usize, String, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with('[') || !t.contains('=') {
            continue;
        }
        let eq = if let Some(rest) = t.strip_prefix('"') {
            let close = rest.find('"').map_or(0, |c| c + 2);
            close + t[close..].find('=').unwrap_or(0)
        } else {
            t.find('=').unwrap()
        };
        let key = t[..eq].trim().to_string();
        let indent = line.len() - t.len();
        let mut start = indent + eq + 1;
        while line[start..].starts_with(' ') {
            start += 1;
        }
        // Up to a trailing comment outside quotes, or the end.
        let mut end = line.len();
        let mut quoted = false;
        for (j, c) in line[start..].char_indices() {
            match c {
                '"' => quoted = !quoted,
                '#' if !quoted => {
                    end = start + j;
                    break;
                }
                _ => {}
            }
        }
        let end = start + line[start..end].trim_end().len();
        out.push((i, key, start..end));
    }
    out
}

fn replace_line(text: &str, index: usize, f: impl Fn(&str) -> String) -> String {
    let mut out: Vec<String> = text.lines().map(str::to_string).collect();
    out[index] = f(&out[index]);
    out.join("\n") + "\n"
}

fn key_name(key: &str) -> String {
    let k = key.trim_matches('"');
    if key.starts_with('"') {
        // sysctl keys are reported quoted, in full.
        k.to_string()
    } else {
        k.rsplit('.').next().unwrap_or(k).to_string()
    }
}

/// Values of the wrong type, range or shape for a value that was `orig`.
fn wrong_values(orig: &str) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("array", "[1, 2]".into()),
        ("table", "{ a = 1 }".into()),
        ("float", "1.5".into()),
        ("datetime", "1979-05-27T07:32:00Z".into()),
        ("huge", "99999999999999".into()),
        ("negative", "-7".into()),
    ];
    if orig.starts_with('"') {
        v.push(("integer for a string", "42".into()));
        v.push(("boolean for a string", "true".into()));
        v.push(("empty string", "\"\"".into()));
        v.push(("long string", format!("\"{}\"", "x".repeat(5000))));
        v.push(("control character", "\"a\\u0007b\"".into()));
    } else if orig.starts_with('{') {
        v.push(("string for a table", "\"eth0\"".into()));
        v.push(("empty table", "{}".into()));
    } else if orig.starts_with('[') {
        v.push(("string for an array", "\"10.0.0.0/8\"".into()));
        v.push(("array of integers", "[1]".into()));
    } else if orig == "true" || orig == "false" {
        v.push(("string for a boolean", "\"yes\"".into()));
        v.push(("integer for a boolean", "1".into()));
    } else {
        v.push(("string for a number", "\"9000\"".into()));
        v.push(("boolean for a number", "true".into()));
        v.push(("zero", "0".into()));
    }
    v
}

/// Inner values of inline tables and arrays: each quoted string replaced.
fn inner_strings(value: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in value.char_indices() {
        if c == '"' {
            match start {
                None => start = Some(i),
                Some(s) => {
                    out.push(s..i + 1);
                    start = None;
                }
            }
        }
    }
    out
}

/// Keys whose values are free-form: any string (or sysctl value) is valid.
fn free_form(key: &str) -> bool {
    key.starts_with('"') || key == "description"
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let (rf, hf) = (role_full(), host_full());
    let sets = [
        (File::Role, ROLE, HOST, "shipped"),
        (File::Host, HOST, ROLE, "shipped"),
        (File::Role, rf.as_str(), hf.as_str(), "full"),
        (File::Host, hf.as_str(), rf.as_str(), "full"),
    ];
    for (file, text, other, set) in sets {
        for (i, key, range) in assignments(text) {
            let orig = &text.lines().nth(i).unwrap()[range.clone()];
            for (what, value) in wrong_values(orig) {
                // A sysctl takes integers, booleans and strings; a bool
                // flipped stays valid.
                let may_pass = free_form(&key)
                    && matches!(what, "integer for a string" | "boolean for a string" | "negative" | "huge" | "zero" | "empty string" | "control character"
                        | "string for a number" | "boolean for a number" | "long string")
                    || (key.ends_with("asn") && what == "huge")
                    || (key == "timeout_s" || key == "min_paths") && what == "huge"
                    // 0: no suppression / no hold timer (RFC 4271), both valid.
                    || (key == "suppress_prefixlength" || key == "hold_time") && what == "zero";
                cases.push(Case {
                    name: format!("{set} {file:?} line {}: {key} = <{what}>", i + 1),
                    file,
                    other: other.to_string(),
                    text: replace_line(text, i, |l| {
                        format!("{}{value}{}", &l[..range.start], &l[range.end..])
                    }),
                    at: Some((i + 1, key_name(&key))),
                    must_fail: !may_pass,
                });
            }
            if orig.starts_with('{') || orig.starts_with('[') {
                for (n, r) in inner_strings(orig).into_iter().enumerate() {
                    for (what, value) in [
                        ("integer", "7"),
                        ("garbage", "\"not/a:thing..\""),
                        ("empty", "\"\""),
                    ] {
                        let (a, b) = (range.start + r.start, range.start + r.end);
                        cases.push(Case {
                            name: format!(
                                "{set} {file:?} line {}: {key} item {n} = <{what}>",
                                i + 1
                            ),
                            file,
                            other: other.to_string(),
                            text: replace_line(text, i, |l| {
                                format!("{}{value}{}", &l[..a], &l[b..])
                            }),
                            at: Some((i + 1, key_name(&key))),
                            must_fail: true,
                        });
                    }
                }
            }
            // Set twice.
            cases.push(Case {
                name: format!("{set} {file:?} line {}: {key} twice", i + 1),
                file,
                other: other.to_string(),
                text: replace_line(text, i, |l| format!("{l}\n{l}")),
                at: Some((i + 2, key_name(&key))),
                must_fail: true,
            });
            // Unquoted string values (a common slip).
            if orig.starts_with('"') && !orig.contains(' ') && !free_form(&key) {
                let bare = orig.trim_matches('"').to_string();
                if bare.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    cases.push(Case {
                        name: format!("{set} {file:?} line {}: {key} unquoted", i + 1),
                        file,
                        other: other.to_string(),
                        text: replace_line(text, i, |l| {
                            format!("{}{bare}{}", &l[..range.start], &l[range.end..])
                        }),
                        at: Some((i + 1, key_name(&key))),
                        must_fail: true,
                    });
                }
            }
        }
        // An unknown key in every table.
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('[') || i == 0 {
                cases.push(Case {
                    name: format!("{set} {file:?} line {}: unknown key after {line}", i + 1),
                    file,
                    other: other.to_string(),
                    text: replace_line(text, i, |l| format!("{l}\nbogus_key = 1")),
                    at: Some((i + 2, "bogus_key".into())),
                    must_fail: true,
                });
            }
        }
        // Wrong versions.
        let v = text.lines().position(|l| l.starts_with("version")).unwrap();
        for bad in ["2", "0", "\"1\"", "-1", "1.0", "[1]"] {
            cases.push(Case {
                name: format!("{set} {file:?}: version = {bad}"),
                file,
                other: other.to_string(),
                text: replace_line(text, v, |_| format!("version = {bad}")),
                at: Some((v + 1, "version".into())),
                must_fail: true,
            });
        }
        // Cut short at many points.
        let step = text.len() / 40;
        for n in 1..40 {
            let mut cut = n * step;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            cases.push(Case {
                name: format!("{set} {file:?} cut at byte {cut}"),
                file,
                other: other.to_string(),
                text: text[..cut].to_string(),
                at: None,
                must_fail: false,
            });
        }
    }
    cases
}

#[test]
fn every_rejection_is_located_and_explained() {
    let cases = cases();
    let (mut rejected, mut accepted, mut bad) = (0, 0, Vec::new());
    for c in &cases {
        let (role, host) = match c.file {
            File::Role => (c.text.as_str(), c.other.as_str()),
            File::Host => (c.other.as_str(), c.text.as_str()),
        };
        let ps = match load(role, host) {
            Ok(_) => {
                if c.must_fail {
                    bad.push(format!("{}: accepted", c.name));
                }
                accepted += 1;
                continue;
            }
            Err(ps) => ps,
        };
        rejected += 1;
        let short =
            |p: &underlay::profile::Problem| p.to_string().chars().take(400).collect::<String>();
        for p in &ps {
            let f = faults(p);
            if !f.is_empty() {
                bad.push(format!("{}: {}: {}", c.name, f.join(", "), short(p)));
            }
        }
        let file = match c.file {
            File::Role => "role.toml",
            File::Host => "host.toml",
        };
        match &c.at {
            Some((line, key)) => {
                if !ps.iter().any(|p| {
                    p.file.to_str() == Some(file) && p.line == *line && p.key.contains(key.as_str())
                }) {
                    bad.push(format!(
                        "{}: nothing at {file}:{line} naming {key:?}: {}",
                        c.name,
                        ps.iter().map(short).collect::<Vec<_>>().join(" | ")
                    ));
                }
                for p in &ps {
                    if *line > 1
                        && (p.line, p.column) == (1, 1)
                        && !p.message.starts_with("missing")
                    {
                        bad.push(format!("{}: at 1:1: {}", c.name, short(p)));
                    }
                }
            }
            None => {
                let lines = c.text.lines().count().max(1);
                for p in &ps {
                    if p.file.to_str() == Some(file)
                        && !p.message.starts_with("missing")
                        && p.line > lines + 1
                    {
                        bad.push(format!(
                            "{}: line {} of {lines}: {}",
                            c.name,
                            p.line,
                            short(p)
                        ));
                    }
                }
            }
        }
    }
    eprintln!(
        "{} cases: {rejected} rejected, {accepted} accepted (valid mutations or cuts), {} faults",
        cases.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} faults:\n{}",
        bad.len(),
        bad.iter().take(60).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(rejected >= 1000, "only {rejected} rejections in the corpus");
}

#[test]
fn full_fixtures_are_valid() {
    load(&role_full(), &host_full()).expect("every optional key set, all valid");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    // One line of 2 MiB: refused by size, not parsed.
    let huge = format!("version = 1\nhostname = \"{}\"\n", "a".repeat(2 << 20));
    let t = std::time::Instant::now();
    let ps = match load(ROLE, &huge) {
        Err(ps) => ps,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(ps[0].message.contains("larger than 1024 KiB"), "{}", ps[0]);
    assert!(ps[0].message.len() < 300);
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn long_values_are_echoed_capped() {
    // Under the size limit but far longer than anyone reads: capped at 80.
    let long = "a".repeat(100_000);
    let host = HOST.replace("hostname = \"node-a1\"", &format!("hostname = \"{long}\""));
    let ps = match load(ROLE, &host) {
        Err(ps) => ps,
        Ok(_) => panic!("accepted"),
    };
    let p = ps
        .iter()
        .find(|p| p.key == "hostname")
        .expect("hostname problem");
    assert!(
        p.message.contains(&format!("{}…", "a".repeat(80))),
        "{}",
        p.message.len()
    );
    assert!(!p.message.contains(&"a".repeat(81)), "{}", p.message.len());
    for p in &ps {
        assert_well_formed(p, "long hostname");
    }
    // A long unknown key and a long wrong-typed value alike.
    let host = HOST.replace("rack = \"r01\"", &format!("rack = 5\n{long} = 1"));
    for p in match load(ROLE, &host) {
        Err(ps) => ps,
        Ok(_) => panic!("accepted"),
    } {
        let n = p.to_string().chars().count();
        assert!(
            n < 800,
            "{n} chars: {}",
            p.to_string().chars().take(300).collect::<String>()
        );
    }
}

#[test]
fn non_utf8_is_located() {
    let mut bytes = HOST.as_bytes().to_vec();
    let at = HOST.find("node-a1").unwrap();
    bytes[at] = 0xff;
    // load_str takes &str; invalid UTF-8 goes through a real file.
    let dir = tempfile::tempdir().unwrap();
    let (role, host) = (dir.path().join("role.toml"), dir.path().join("host.toml"));
    std::fs::write(&role, ROLE).unwrap();
    std::fs::write(&host, &bytes).unwrap();
    let e = underlay::profile::load(&role, &host).unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(p.line, profile_fixtures::line_of(HOST, "node-a1"), "{p}");
    assert_eq!(p.key, "hostname", "{p}");
    assert!(p.message.contains("UTF-8"), "{p}");
}
