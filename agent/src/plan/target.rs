//! Resolution: the desired model bound to this host's NICs. Pure: it needs the
//! observed links (to match NICs by name or MAC) and nothing else.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::desired::{Desired, NicMatch, RuleSpec, SysctlKey};
use crate::nft::NatMode;
use crate::observed::{ObservedLink, Scope};
use crate::state::State;

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
}

impl std::fmt::Debug for BirdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BirdTarget")
            .field("config_path", &self.config_path)
            .field("socket", &self.socket)
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .field("sessions", &self.sessions)
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
}

impl std::fmt::Debug for BgpInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpInputs")
            .field("template", &self.template)
            .field(
                "passwords",
                &format_args!("<{} redacted>", self.passwords.iter().flatten().count()),
            )
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

fn find_link<'a>(links: &'a [ObservedLink], m: &NicMatch) -> Option<&'a ObservedLink> {
    links.iter().find(|l| match m {
        NicMatch::Name(n) => l.name == n.as_str(),
        NicMatch::Mac(mac) => l.mac.as_ref() == Some(mac) || l.perm_mac.as_ref() == Some(mac),
    })
}

pub fn resolve(
    d: &Desired,
    links: &[ObservedLink],
    inputs: &BgpInputs,
) -> Result<Target, ResolveError> {
    let lo = links
        .iter()
        .find(|l| l.name == "lo")
        .ok_or(ResolveError::NoLoopback)?;
    let mut t = Target {
        protocol: d.protocol.get(),
        ..Target::default()
    };
    t.links.push(LinkTarget {
        index: lo.index,
        ifname: lo.name.clone(),
        role: "loopback".into(),
        mtu: None,
    });
    for prefix in d.service_addresses() {
        t.addresses.push(AddressTarget {
            index: lo.index,
            ifname: lo.name.clone(),
            prefix,
            scope: Scope::Global,
        });
    }

    let mut sysctls: Vec<(SysctlKey, String)> = d.sysctl_global.clone();
    for u in &d.uplinks {
        let link = find_link(links, &u.nic).ok_or_else(|| {
            let mut present: Vec<String> = links
                .iter()
                .map(|l| match &l.mac {
                    Some(m) => format!("{} ({m})", l.name),
                    None => l.name.clone(),
                })
                .collect();
            present.sort();
            ResolveError::MissingNic {
                uplink: u.name.clone(),
                matcher: u.nic.clone(),
                present,
            }
        })?;
        if let Some(other) = t.links.iter().find(|l| l.index == link.index) {
            return Err(ResolveError::SameNic {
                first: other.role.clone(),
                second: u.name.clone(),
                ifname: link.name.clone(),
            });
        }
        t.links.push(LinkTarget {
            index: link.index,
            ifname: link.name.clone(),
            role: u.name.clone(),
            mtu: u.mtu,
        });
        if let Some(v4) = &u.ipv4 {
            // Scope link: the kernel's source selection (and so MASQUERADE)
            // skips the transit address and picks the service IP on lo. The
            // snat and none modes keep it global (snat translates explicitly).
            t.addresses.push(AddressTarget {
                index: link.index,
                ifname: link.name.clone(),
                prefix: IpNet::V4(v4.address),
                scope: match d.nat.mode {
                    NatMode::ScopeLink => Scope::Link,
                    NatMode::Snat | NatMode::None => Scope::Global,
                },
            });
        }
        if let Some(v6) = &u.ipv6 {
            // IPv6 derives the scope from the address itself; asking for
            // another would never converge.
            let scope = if v6.address.addr().segments()[0] & 0xffc0 == 0xfe80 {
                Scope::Link
            } else {
                Scope::Global
            };
            t.addresses.push(AddressTarget {
                index: link.index,
                ifname: link.name.clone(),
                prefix: IpNet::V6(v6.address),
                scope,
            });
        }
        for (template, value) in &d.sysctl_uplink {
            // A NIC matched by MAC is named only now: its name must not lead
            // the key out of the uplink's directory.
            let key =
                template
                    .for_ifname(&link.name)
                    .map_err(|message| ResolveError::BadSysctl {
                        uplink: u.name.clone(),
                        message,
                    })?;
            sysctls.push((key, value.clone()));
        }
    }
    // A later entry for the same key wins (uplink keys over global ones).
    let mut seen = BTreeSet::new();
    sysctls.reverse();
    sysctls.retain(|(k, _)| seen.insert(k.clone()));
    sysctls.sort();
    t.sysctls = sysctls;

    t.rules = d.rules.clone();
    t.files = files(d, &t.sysctls);
    t.nft = crate::nft::desired_ruleset(&crate::nft::NatParams {
        mode: d.nat.mode,
        service_ipv4: d.service_ipv4.addr(),
        uplinks: t.uplinks().iter().map(|l| l.ifname.clone()).collect(),
        pod_cidrs: d.pods.cidrs.clone(),
        guard: d.nat.guard,
    });
    if let Some(bgp) = &d.bgp {
        let ifnames: Vec<String> = t.uplinks().iter().map(|l| l.ifname.clone()).collect();
        let mut passwords = inputs.passwords.clone();
        passwords.resize(d.uplinks.len(), None);
        let params = crate::bgp::from_desired::params(d, bgp, &ifnames, &passwords);
        let template = inputs.template.as_ref();
        let content = crate::bgp::render_with(
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
        });
    }
    Ok(t)
}

fn files(d: &Desired, sysctls: &[(SysctlKey, String)]) -> Vec<FileTarget> {
    const HEADER: &str = "# generated by underlay; do not edit (changes are overwritten)\n";
    let mut tables = String::from(HEADER);
    for tb in &d.tables {
        tables.push_str(&format!("{}\t{}\n", tb.id, tb.name));
    }
    let proto = format!("{HEADER}{}\tunderlay\n", d.protocol.get());
    let mut sysctl = String::from(HEADER);
    for (k, v) in sysctls {
        sysctl.push_str(&format!("{k} = {v}\n"));
    }
    vec![
        FileTarget {
            path: RT_TABLES_FILE.into(),
            content: tables,
        },
        FileTarget {
            path: RT_PROTOS_FILE.into(),
            content: proto.clone(),
        },
        FileTarget {
            path: RT_ADDRPROTOS_FILE.into(),
            content: proto,
        },
        FileTarget {
            path: SYSCTL_FILE.into(),
            content: sysctl,
        },
    ]
}
