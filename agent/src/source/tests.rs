//! Precedence, pins, templates and the cache over an in-memory [`Host`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::discover::{discover, Settings};
use super::*;

#[derive(Default)]
struct FakeHost {
    files: BTreeMap<PathBuf, Vec<u8>>,
    remote: BTreeMap<String, Result<Vec<u8>, FetchError>>,
    fetched: Vec<String>,
    written: Vec<PathBuf>,
    dmi: BTreeMap<&'static str, String>,
    macs: BTreeMap<String, MacAddr>,
}

impl Host for FakeHost {
    fn read_file(&mut self, path: &Path, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self
            .files
            .get(path)
            .map(|b| b[..b.len().min(cap + 1)].to_vec()))
    }
    fn fetch(&mut self, url: &url::Url) -> Result<Vec<u8>, FetchError> {
        self.fetched.push(url.to_string());
        self.remote
            .get(url.as_str())
            .cloned()
            .unwrap_or(Err(FetchError::Status(404)))
    }
    fn hostname(&mut self) -> Option<String> {
        Some("kernel-name".into())
    }
    fn dmi(&mut self, field: DmiField) -> Option<String> {
        self.dmi.get(field.file()).cloned()
    }
    fn nic_mac(&mut self, nic: &str) -> Result<MacAddr, String> {
        self.macs
            .get(nic)
            .copied()
            .ok_or(format!("no NIC named {nic}"))
    }
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        self.written.push(path.to_path_buf());
        self.files.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }
}

const CACHE: &str = "/root/var/lib/underlay/cache";
const PROFILE: &[u8] = b"version = 1\n# the role\n";

fn ctx() -> Context<'static> {
    Context {
        cache_dir: Path::new(CACHE),
        cache_first: false,
        bootif: None,
        cloud_hostname: None,
    }
}

fn url_candidate(url: &str, pin: Option<Sha256>) -> Candidate {
    Candidate {
        level: Level::Cmdline,
        location: Location::Url(url.into()),
        pin,
        declared: "/proc/cmdline underlay.profile=".into(),
    }
}

fn settings() -> Settings {
    Settings {
        flag_profile: None,
        flag_profile_sha256: None,
        flag_host: None,
        flag_host_sha256: None,
        cmdline: "/proc/cmdline".into(),
        cloud_init_dir: "/var/lib/cloud/instance".into(),
        instance_data: "/run/cloud-init/instance-data.json".into(),
        local_dir: "/root/etc/underlay".into(),
    }
}

/// Every subset of the four levels, for each item: the highest declared
/// level wins, and with none declared the error lists where it looked.
#[test]
fn precedence_table_case_by_case() {
    let pin = Sha256::of(b"x");
    for mask in 0u8..16 {
        for item in Item::BOTH {
            let k = item.key();
            let mut s = settings();
            let mut h = FakeHost::default();
            let mut cmdline = String::from("ro quiet");
            if mask & 1 != 0 {
                let flag = format!("/flag/{k}.toml");
                match item {
                    Item::Profile => s.flag_profile = Some(flag),
                    Item::Host => s.flag_host = Some(flag),
                }
            }
            if mask & 2 != 0 {
                cmdline.push_str(&format!(
                    " underlay.{k}=https://cmdline/{k}.toml underlay.{k}.sha256={pin}"
                ));
            }
            if mask & 4 != 0 {
                h.files.insert(
                    "/var/lib/cloud/instance/cloud-config.txt".into(),
                    format!("#cloud-config\nunderlay:\n  {k}:\n    toml: cloud\n").into_bytes(),
                );
            }
            if mask & 8 != 0 {
                h.files.insert(
                    format!("/root/etc/underlay/{k}.toml").into(),
                    b"local".to_vec(),
                );
            }
            h.files.insert("/proc/cmdline".into(), cmdline.into_bytes());
            let d = discover(&s, &mut h).unwrap();
            let got = choose(&d, item);
            let expected = match mask.trailing_zeros() {
                0 => Some((
                    Level::Flag,
                    Location::File(format!("/flag/{k}.toml").into()),
                )),
                1 => Some((
                    Level::Cmdline,
                    Location::Url(format!("https://cmdline/{k}.toml")),
                )),
                2 => Some((Level::CloudInit, Location::Inline("cloud".into()))),
                3 => Some((
                    Level::Local,
                    Location::File(format!("/root/etc/underlay/{k}.toml").into()),
                )),
                _ => None,
            };
            match (got, expected) {
                (Ok(c), Some((level, loc))) => {
                    assert_eq!(
                        (c.level, &c.location),
                        (level, &loc),
                        "mask {mask:04b} {item}"
                    );
                    if level == Level::Cmdline {
                        assert_eq!(c.pin, Some(pin));
                    }
                }
                (Err(SourceError::NotFound { looked, .. }), None) => {
                    let all = looked.join("; ");
                    for place in [
                        "--profile",
                        "/proc/cmdline",
                        "cloud-init",
                        "/root/etc/underlay",
                    ] {
                        assert!(all.contains(place), "{all}");
                    }
                }
                (got, expected) => {
                    panic!("mask {mask:04b} {item}: got {got:?}, expected {expected:?}")
                }
            }
        }
    }
}

#[test]
fn both_flags_given_skip_cloud_init_and_local_files() {
    let mut s = settings();
    s.flag_profile = Some("/p.toml".into());
    s.flag_host = Some("https://h/x.toml".into());
    let mut h = FakeHost::default();
    // A broken cloud-config does not matter when nothing needs it.
    h.files.insert(
        "/var/lib/cloud/instance/cloud-config.txt".into(),
        b"underlay: [".to_vec(),
    );
    let d = discover(&s, &mut h).unwrap();
    assert_eq!(d.candidates.len(), 2);
    assert!(matches!(
        choose(&d, Item::Host).unwrap().location,
        Location::Url(_)
    ));
}

#[test]
fn vendor_data_and_raw_user_data_count_as_cloud_init() {
    let mut h = FakeHost::default();
    h.files.insert(
        "/var/lib/cloud/instance/user-data.txt".into(),
        b"#cloud-config\nunderlay:\n  host: {toml: raw}\n".to_vec(),
    );
    h.files.insert(
        "/var/lib/cloud/instance/vendor-cloud-config.txt".into(),
        b"#cloud-config\nunderlay:\n  host: {toml: vendor}\n  profile: {toml: vendor}\n".to_vec(),
    );
    h.files.insert(
        "/run/cloud-init/instance-data.json".into(),
        br#"{"v1": {"local_hostname": "node-c1"}}"#.to_vec(),
    );
    let d = discover(&settings(), &mut h).unwrap();
    assert_eq!(
        choose(&d, Item::Host).unwrap().location,
        Location::Inline("raw".into())
    );
    let p = choose(&d, Item::Profile).unwrap();
    assert_eq!(p.location, Location::Inline("vendor".into()));
    assert_eq!(p.declared, "cloud-init vendor-data underlay.profile.toml");
    assert_eq!(d.cloud_hostname.as_deref(), Some("node-c1"));
}

#[test]
fn a_malformed_cmdline_is_an_input_error_naming_the_file() {
    let mut h = FakeHost::default();
    h.files.insert(
        "/proc/cmdline".into(),
        b"underlay.profile.sha256=zz".to_vec(),
    );
    let e = discover(&settings(), &mut h).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(
        e.to_string()
            .starts_with("kernel command line /proc/cmdline:"),
        "{e}"
    );
}

#[test]
fn an_unpinned_or_plain_http_url_is_refused_before_any_fetch() {
    let mut h = FakeHost::default();
    let mut errors = Vec::new();
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", None),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(matches!(e, SourceError::Unpinned { .. }), "{e}");
    assert!(e.to_string().contains("underlay.profile.sha256="), "{e}");
    errors.push(e);
    let pin = Some(Sha256::of(PROFILE));
    let e = load(
        Item::Profile,
        &url_candidate("http://p/r.toml", pin),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("plain http is refused"), "{e}");
    errors.push(e);
    let e = load(
        Item::Profile,
        &url_candidate("ftp://p/r.toml", pin),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("scheme 'ftp'"), "{e}");
    errors.push(e);
    for e in errors {
        assert_eq!(e.kind(), ErrorKind::Input, "{e}");
    }
    assert!(h.fetched.is_empty(), "nothing was fetched: {:?}", h.fetched);
}

#[test]
fn a_good_pin_loads_and_a_bad_pin_is_refused_with_both_hashes() {
    let mut h = FakeHost::default();
    h.remote
        .insert("https://p/r.toml?t=secret".into(), Ok(PROFILE.to_vec()));
    let good = Sha256::of(PROFILE);
    let l = load(
        Item::Profile,
        &url_candidate("https://p/r.toml?t=secret", Some(good)),
        &mut h,
        &ctx(),
    )
    .unwrap();
    assert_eq!(l.bytes, PROFILE);
    assert_eq!(l.sha256, good);
    assert_eq!(
        l.origin, "https://p/r.toml",
        "no query string in the origin"
    );
    assert_eq!(l.freshness, Freshness::Fetched);

    let bad = Sha256::of(b"another");
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml?t=secret", Some(bad)),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains(&bad.to_string()) && m.contains(&good.to_string()),
        "{m}"
    );
    assert!(!m.contains("secret"), "{m}");
    assert_eq!(e.kind(), ErrorKind::Input);
    assert!(h.written.is_empty(), "the cache is untouched");
}

fn cached_host(bytes: &[u8]) -> FakeHost {
    let mut h = FakeHost::default();
    h.remote
        .insert("https://p/r.toml".into(), Ok(bytes.to_vec()));
    let pin = Sha256::of(bytes);
    let l = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(pin)),
        &mut h,
        &ctx(),
    )
    .unwrap();
    assert!(cache::store(&mut h, Path::new(CACHE), &l).unwrap());
    assert!(
        !cache::store(&mut h, Path::new(CACHE), &l).unwrap(),
        "an unchanged copy is not rewritten"
    );
    assert_eq!(h.written.len(), 2);
    h
}

#[test]
fn server_down_with_a_cache_serves_the_cached_copy_and_says_why() {
    let mut h = cached_host(PROFILE);
    h.remote.insert(
        "https://p/r.toml".into(),
        Err(FetchError::Unreachable("connection refused".into())),
    );
    let l = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(Sha256::of(PROFILE))),
        &mut h,
        &ctx(),
    )
    .unwrap();
    assert_eq!(l.bytes, PROFILE);
    assert_eq!(
        l.freshness,
        Freshness::FromCache {
            reason: "connection refused".into()
        }
    );
    assert!(l.doc().from_cache);
    // A server error status falls back too.
    h.remote
        .insert("https://p/r.toml".into(), Err(FetchError::Status(503)));
    assert!(load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(Sha256::of(PROFILE))),
        &mut h,
        &ctx()
    )
    .unwrap()
    .from_cache());
}

#[test]
fn server_down_without_a_usable_cache_is_a_transient_error_that_says_what_the_cache_had() {
    let pin = Sha256::of(PROFILE);
    let down = Err(FetchError::Unreachable("connection refused".into()));
    // No cache at all.
    let mut h = FakeHost::default();
    h.remote.insert("https://p/r.toml".into(), down.clone());
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(pin)),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(e.to_string().contains("no cached copy"), "{e}");
    // A corrupt entry: bytes changed behind the recorded hash.
    let mut h = cached_host(PROFILE);
    h.remote.insert("https://p/r.toml".into(), down.clone());
    h.files.insert(
        format!("{CACHE}/profile.toml").into(),
        b"version = 1\n# tampered\n".to_vec(),
    );
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(pin)),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Transient);
    // A good entry, but for another pin.
    let mut h = cached_host(b"version = 1\n# old\n");
    h.remote.insert("https://p/r.toml".into(), down);
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(pin)),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not the pinned"), "{e}");
    // A 404 says the URL is wrong: input, not transient.
    let mut h = FakeHost::default();
    let e = load(
        Item::Profile,
        &url_candidate("https://p/missing.toml", Some(pin)),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Input, "{e}");
}

#[test]
fn unsafe_answers_are_refused_even_with_a_cache() {
    for refused in [
        FetchError::TooLarge { limit: MAX_BYTES },
        FetchError::InsecureRedirect {
            to: "http://p/r.toml".into(),
        },
        FetchError::TooManyRedirects(5),
    ] {
        let mut h = cached_host(PROFILE);
        h.remote
            .insert("https://p/r.toml".into(), Err(refused.clone()));
        let e = load(
            Item::Profile,
            &url_candidate("https://p/r.toml", Some(Sha256::of(PROFILE))),
            &mut h,
            &ctx(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, SourceError::Refused { error, .. } if *error == refused),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::Input);
    }
    // A body over the cap that the host returned anyway is refused too.
    let mut h = FakeHost::default();
    let big = vec![b'#'; MAX_BYTES + 1];
    h.remote.insert("https://p/r.toml".into(), Ok(big.clone()));
    let e = load(
        Item::Profile,
        &url_candidate("https://p/r.toml", Some(Sha256::of(&big))),
        &mut h,
        &ctx(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
}

#[test]
fn templates_resolve_from_bootif_nics_and_dmi() {
    let body = b"version = 1\n".to_vec();
    let pin = Some(Sha256::of(&body));
    let mut h = FakeHost::default();
    h.macs
        .insert("eth1".into(), "52:54:00:00:00:e1".parse().unwrap());
    h.dmi.insert("product_serial", "CZ 123".into());
    h.dmi.insert("product_uuid", "4C4C4544-0042".into());
    h.remote.insert(
        "https://p/52:54:00:aa:bb:01/52:54:00:00:00:e1/CZ%20123/4c4c4544-0042/node-c1.toml".into(),
        Ok(body.clone()),
    );
    let c = Context {
        cache_dir: Path::new(CACHE),
        cache_first: false,
        bootif: Some("52:54:00:aa:bb:01".parse().unwrap()),
        cloud_hostname: Some("node-c1"),
    };
    let cand = url_candidate(
        "https://p/${mac}/${mac:eth1}/${serial}/${uuid}/${hostname}.toml",
        pin,
    );
    let l = load(Item::Host, &cand, &mut h, &c).unwrap();
    assert_eq!(
        l.origin,
        "https://p/52:54:00:aa:bb:01/52:54:00:00:00:e1/CZ%20123/4c4c4544-0042/node-c1.toml"
    );

    // ${mac} without BOOTIF, an unknown NIC, a placeholder serial.
    h.dmi
        .insert("product_serial", "To Be Filled By O.E.M.".into());
    for (tpl, wants) in [
        ("https://p/${mac}.toml", "BOOTIF="),
        ("https://p/${mac:eth9}.toml", "no NIC named eth9"),
        ("https://p/${serial}.toml", "vendor placeholder"),
    ] {
        let e = load(Item::Host, &url_candidate(tpl, pin), &mut h, &ctx()).unwrap_err();
        assert!(e.to_string().contains(wants), "{tpl}: {e}");
        assert_eq!(e.kind(), ErrorKind::Input);
    }
}

#[test]
fn local_and_inline_sources_check_an_optional_pin_and_the_cap() {
    let mut h = FakeHost::default();
    h.files.insert("/p.toml".into(), PROFILE.to_vec());
    let mut c = Candidate::from_value(
        Level::Flag,
        "/p.toml",
        Some(Sha256::of(PROFILE)),
        "--profile".into(),
    );
    let l = load(Item::Profile, &c, &mut h, &ctx()).unwrap();
    assert_eq!(
        (l.origin.as_str(), l.freshness.clone()),
        ("/p.toml", Freshness::Local)
    );
    c.pin = Some(Sha256::of(b"other"));
    assert!(matches!(
        load(Item::Profile, &c, &mut h, &ctx()),
        Err(SourceError::PinMismatch { .. })
    ));
    h.files
        .insert("/big.toml".into(), vec![b'#'; MAX_BYTES + 10]);
    let c = Candidate::from_value(Level::Flag, "/big.toml", None, "--profile".into());
    assert!(matches!(
        load(Item::Profile, &c, &mut h, &ctx()),
        Err(SourceError::TooLarge { .. })
    ));
    let c = Candidate::from_value(Level::Flag, "/missing.toml", None, "--profile".into());
    let e = load(Item::Profile, &c, &mut h, &ctx()).unwrap_err();
    assert!(
        e.to_string().contains("no such file (named by --profile)"),
        "{e}"
    );
}

#[test]
fn cache_first_takes_a_matching_cached_copy_without_asking_the_server() {
    let mut h = cached_host(PROFILE);
    let before = h.fetched.len();
    let pin = Sha256::of(PROFILE);
    let cand = url_candidate("https://p/r.toml", Some(pin));
    let c = Context {
        cache_first: true,
        ..ctx()
    };
    let l = load(Item::Profile, &cand, &mut h, &c).unwrap();
    assert_eq!(l.bytes, PROFILE);
    assert_eq!(l.freshness, Freshness::Cached);
    assert_eq!(h.fetched.len(), before, "no fetch: {:?}", h.fetched);
    let doc = l.doc();
    assert!(doc.from_cache && doc.cache_reason.as_deref() == Some(CACHED_REASON));
    // Without cache_first the server is asked, as apply does.
    let l = load(Item::Profile, &cand, &mut h, &ctx()).unwrap();
    assert_eq!(l.freshness, Freshness::Fetched);
    assert_eq!(h.fetched.len(), before + 1);
    // A pin the cache does not hold is fetched (and checked) even so.
    let other = b"version = 1\n# another role\n";
    h.remote
        .insert("https://p/r.toml".into(), Ok(other.to_vec()));
    let cand = url_candidate("https://p/r.toml", Some(Sha256::of(other)));
    let l = load(Item::Profile, &cand, &mut h, &c).unwrap();
    assert_eq!(
        (l.bytes.as_slice(), &l.freshness),
        (&other[..], &Freshness::Fetched)
    );
    assert_eq!(h.fetched.len(), before + 2);
}
