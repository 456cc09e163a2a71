//! Gathers every declared source: flags, the kernel command line, cloud-init
//! and the local directory. Reads through [`Host`], decides nothing: the
//! winner is [`super::choose`]'s.

use std::path::PathBuf;

use super::{
    cloudinit, cmdline, Candidate, Discovered, Host, Item, Level, Location, Sha256, SourceError,
    MAX_BYTES,
};

/// Where to look. Paths are as the operator gave them (tests point them at
/// files they wrote); `local_dir` is already below `--root`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flag_profile: Option<String>,
    pub flag_profile_sha256: Option<Sha256>,
    pub flag_host: Option<String>,
    pub flag_host_sha256: Option<Sha256>,
    pub cmdline: PathBuf,
    pub cloud_init_dir: PathBuf,
    pub instance_data: PathBuf,
    pub local_dir: PathBuf,
}

pub fn discover(s: &Settings, host: &mut dyn Host) -> Result<Discovered, SourceError> {
    let mut d = Discovered::default();
    for (item, flag, pin) in [
        (Item::Profile, &s.flag_profile, s.flag_profile_sha256),
        (Item::Host, &s.flag_host, s.flag_host_sha256),
    ] {
        if let Some(v) = flag {
            d.candidates.push((
                item,
                Candidate::from_value(Level::Flag, v, pin, item.flag().to_string()),
            ));
        }
    }
    d.looked.push("--profile/--host".into());

    // The kernel command line: absent (a container, a chroot) is empty.
    let cmdline_text = read_text(host, &s.cmdline)?;
    d.looked.push(format!(
        "{} underlay.profile=/underlay.host=",
        s.cmdline.display()
    ));
    if let Some(text) = cmdline_text {
        let c = cmdline::parse(&text).map_err(|message| SourceError::Cmdline {
            path: s.cmdline.clone(),
            message,
        })?;
        for (item, value, pin) in [
            (Item::Profile, &c.profile, c.profile_sha256),
            (Item::Host, &c.host, c.host_sha256),
        ] {
            if let Some(v) = value {
                let declared = format!("{} underlay.{}=", s.cmdline.display(), item.key());
                d.candidates.push((
                    item,
                    Candidate::from_value(Level::Cmdline, v, pin, declared),
                ));
            }
        }
        d.cmdline = c;
    }

    // Lower levels are read only for what is still undecided: with both
    // flags given, an unreadable cloud-init directory does not matter.
    let undecided = |d: &Discovered| -> Vec<Item> {
        Item::BOTH
            .into_iter()
            .filter(|i| !d.candidates.iter().any(|(c, _)| c == i))
            .collect()
    };
    if !undecided(&d).is_empty() {
        // cloud-init: the processed cloud-config, else a plain raw user-data.
        let dir = &s.cloud_init_dir;
        d.looked.push(format!(
            "cloud-init user-data/vendor-data in {}",
            dir.display()
        ));
        let cc = dir.join("cloud-config.txt");
        let user = match read_raw(host, &cc)? {
            Some(b) => parse_cloud(&cc, cloudinit::Part::UserData, &b)?,
            None => {
                let raw = dir.join("user-data.txt");
                match read_raw(host, &raw)? {
                    Some(b) if cloudinit::is_plain_cloud_config(&b) => {
                        parse_cloud(&raw, cloudinit::Part::UserData, &b)?
                    }
                    _ => Vec::new(),
                }
            }
        };
        let vcc = dir.join("vendor-cloud-config.txt");
        let vendor = match read_raw(host, &vcc)? {
            Some(b) => parse_cloud(&vcc, cloudinit::Part::VendorData, &b)?,
            None => Vec::new(),
        };
        let open = undecided(&d);
        d.candidates.extend(
            cloudinit::merge(user, vendor)
                .into_iter()
                .filter(|(i, _)| open.contains(i)),
        );
    }
    // ${hostname} may be needed by a flag's template too.
    if let Ok(Some(b)) = host.read_file(&s.instance_data, MAX_BYTES) {
        d.cloud_hostname = cloudinit::local_hostname(&b);
    }

    for item in undecided(&d) {
        let path = s.local_dir.join(format!("{}.toml", item.key()));
        if read_raw(host, &path)?.is_some() {
            d.candidates.push((
                item,
                Candidate {
                    level: Level::Local,
                    location: Location::File(path.clone()),
                    pin: None,
                    declared: path.display().to_string(),
                },
            ));
        }
    }
    d.looked
        .push(format!("{}/{{profile,host}}.toml", s.local_dir.display()));
    Ok(d)
}

fn read_raw(host: &mut dyn Host, path: &std::path::Path) -> Result<Option<Vec<u8>>, SourceError> {
    match host.read_file(path, MAX_BYTES) {
        Ok(Some(b)) if b.len() > MAX_BYTES => Err(SourceError::Read {
            path: path.to_path_buf(),
            message: format!("larger than {MAX_BYTES} bytes"),
        }),
        Ok(b) => Ok(b),
        Err(e) => Err(SourceError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

fn read_text(host: &mut dyn Host, path: &std::path::Path) -> Result<Option<String>, SourceError> {
    Ok(read_raw(host, path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn parse_cloud(
    path: &std::path::Path,
    part: cloudinit::Part,
    bytes: &[u8],
) -> Result<Vec<(Item, Candidate)>, SourceError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SourceError::CloudInit {
        path: path.to_path_buf(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    cloudinit::parse(path, part, text).map_err(|message| SourceError::CloudInit {
        path: path.to_path_buf(),
        message,
    })
}
