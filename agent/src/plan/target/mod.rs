//! Resolution: the desired model bound to this host's NICs. Pure: it needs the
//! observed links (to match NICs by name or MAC) and nothing else.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::desired::{Desired, NicMatch, RuleSpec, SysctlKey};
use crate::observed::{ObservedLink, Scope};
use crate::state::State;

mod addresses;
mod bird;
mod files;
mod links;
mod nft;
mod sysctls;

pub const RT_TABLES_FILE: &str = "/etc/iproute2/rt_tables.d/underlay.conf";
pub const RT_PROTOS_FILE: &str = "/etc/iproute2/rt_protos.d/underlay.conf";
pub const RT_ADDRPROTOS_FILE: &str = "/etc/iproute2/rt_addrprotos.d/underlay.conf";
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-underlay.conf";

/// Kernel objects we want, with interface names and indexes resolved.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub protocol: u8,
    pub links: Vec<LinkTarget>,
    pub addresses: Vec<AddressTarget>,
    pub rules: Vec<RuleSpec>,
    pub sysctls: Vec<(SysctlKey, String)>,
    pub files: Vec<FileTarget>,
    pub bird: Option<BirdTarget>,
    /// Our nftables table (`inet underlay`); `None`: no table wanted.
    pub nft: Option<nftables::schema::Nftables<'static>>,
}

/// The host BIRD's rendered config and where it goes.
#[derive(Clone, PartialEq, Eq)]
pub struct BirdTarget {
    pub config_path: PathBuf,
    pub owner: crate::desired::FileOwner,
    pub socket: PathBuf,
    /// May hold BGP passwords: never printed, only summarized.
    pub content: String,
    /// BGP sessions to the ToRs (BIRD protocol names), per uplink in order.
    pub sessions: Vec<(String, Vec<String>)>,
    /// Directories BIRD needs (logical), see [`super::Op::WriteBirdConfig`].
    pub dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for BirdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BirdTarget")
            .field("config_path", &self.config_path)
            .field("socket", &self.socket)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("sessions", &self.sessions)
            .field("dirs", &self.dirs)
            .finish()
    }
}

/// A template override read from `<templates_dir>/bird.conf.j2`.
#[derive(Debug, Clone)]
pub struct Template {
    pub label: String,
    pub text: String,
}

/// What rendering the BIRD config needs from files: read during observation,
/// so resolving and planning stay pure.
#[derive(Clone, Default)]
pub struct BgpInputs {
    pub template: Option<Template>,
    /// Per uplink, in profile order: the password from its password_file.
    pub passwords: Vec<Option<String>>,
    /// The `log` target, resolved for this run (`--netns`, `--root`).
    pub log: crate::bgp::LogTarget,
    /// Directories BIRD needs, created with its config (logical paths).
    pub bird_dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for BgpInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpInputs")
            .field("template", &self.template)
            .field(
                "passwords",
                &format_args!("<{} redacted>", self.passwords.iter().flatten().count()),
            )
            .field("log", &self.log)
            .field("bird_dirs", &self.bird_dirs)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    pub index: u32,
    pub ifname: String,
    /// The uplink's logical name, or "loopback".
    pub role: String,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTarget {
    pub index: u32,
    pub ifname: String,
    pub prefix: IpNet,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTarget {
    pub path: PathBuf,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "uplink '{uplink}': no NIC matches {matcher}; NICs present: {}. Fix the uplink's nic in the host facts or cable the NIC",
        present.join(", ")
    )]
    MissingNic {
        uplink: String,
        matcher: NicMatch,
        present: Vec<String>,
    },
    #[error(
        "uplinks '{first}' and '{second}' both match NIC {ifname}; each uplink needs its own NIC"
    )]
    SameNic {
        first: String,
        second: String,
        ifname: String,
    },
    #[error("no loopback interface 'lo' found; the service IP lives on lo")]
    NoLoopback,
    #[error("uplink '{uplink}': {message}; rename the NIC (udev/systemd .link file) or drop the [sysctl.uplink] key")]
    BadSysctl { uplink: String, message: String },
    #[error("rendering the BIRD config: {0}")]
    Render(String),
}

impl Target {
    /// The uplinks' links, in profile order (`links` starts with lo).
    pub fn uplinks(&self) -> &[LinkTarget] {
        self.links.get(1..).unwrap_or_default()
    }

    /// Sysctl keys and file paths the observer must read for this target,
    /// plus those the state file says we manage (to plan their removal).
    pub fn observe_scope(&self, state: &State) -> (BTreeSet<SysctlKey>, BTreeSet<PathBuf>) {
        let mut keys: BTreeSet<SysctlKey> = self.sysctls.iter().map(|(k, _)| k.clone()).collect();
        keys.extend(state.sysctls.keys().cloned());
        let mut files: BTreeSet<PathBuf> = self.files.iter().map(|f| f.path.clone()).collect();
        files.extend(state.files.iter().cloned());
        files.extend(self.bird.iter().map(|b| b.config_path.clone()));
        (keys, files)
    }
}

/// Binds the validated model to this host's NICs, one resource kind at a
/// time; a new kind adds its module here and one line below.
pub fn resolve(
    d: &Desired,
    links: &[ObservedLink],
    inputs: &BgpInputs,
) -> Result<Target, ResolveError> {
    let mut t = Target {
        protocol: d.protocol.get(),
        ..Target::default()
    };
    self::links::resolve(d, links, &mut t)?;
    addresses::resolve(d, &mut t);
    sysctls::resolve(d, &mut t)?;
    t.rules = d.rules.clone();
    files::resolve(d, &mut t);
    nft::resolve(d, &mut t);
    bird::resolve(d, inputs, &mut t)?;
    Ok(t)
}
