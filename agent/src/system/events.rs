//! Kernel events as triggers: "look again", never state. The system layer
//! subscribes to netlink notifications and keeps only those that could change
//! a plan ([`Interest`]); watch mode and the readiness gates wait on them
//! through [`Events`]. The real source is `linux::watch::KernelEvents`;
//! [`FakeEvents`] replays a script on a virtual clock for tests.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::desired::{Family, MacAddr, RuleSpec};
use crate::observed::Scope;

use super::SystemError;

/// What a notification must be about to wake anyone. Everything else
/// (routes in `main` and every other table, links and addresses that are
/// not ours) is dropped before it costs an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Our links by index (lo first, then the resolved uplinks).
    pub links: Vec<LinkInterest>,
    /// How an uplink that is not resolved yet (or was replaced) may show
    /// up: a new link with one of these names or MACs wakes.
    pub nic_names: Vec<String>,
    pub nic_macs: Vec<MacAddr>,
    /// Addresses the plan wants, by link index.
    pub addresses: Vec<AddressInterest>,
    /// Our rule and address protocol number.
    pub protocol: u8,
    /// The rules the plan wants (a new rule with our protocol that is not
    /// one of these is ours to delete, so it wakes).
    pub rules: Vec<RuleSpec>,
    /// Per-device IPv4/IPv6 settings the kernel announces (RTM_NEWNETCONF).
    pub netconf: Vec<NetconfInterest>,
    /// Routes in this table wake (the host BGP table); `None`: no route
    /// events are subscribed at all.
    pub host_table: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInterest {
    pub index: u32,
    pub name: String,
    pub want: LinkWant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWant {
    /// Watch mode: wake only on a state the plan would change (admin down,
    /// another MTU, renamed, deleted); carrier flaps are not ours to fix.
    Drift { mtu: Option<u32> },
    /// Readiness gates: any change (carrier included).
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInterest {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub scope: Scope,
}

/// A netconf attribute of one device with the value the profile wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetconfInterest {
    pub family: Family,
    /// Interface index, or [`NETCONF_ALL`] / [`NETCONF_DEFAULT`].
    pub ifindex: i32,
    pub attr: NetconfAttr,
    pub value: i32,
}

pub const NETCONF_ALL: i32 = -2;
pub const NETCONF_DEFAULT: i32 = -1;

/// The per-device settings Linux announces over netlink when they change
/// (linux/netconf.h). Other sysctls have no events: the periodic resync
/// checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetconfAttr {
    Forwarding = 2,
    RpFilter = 3,
    ProxyNeigh = 5,
    IgnoreRoutesWithLinkdown = 6,
}

impl NetconfAttr {
    pub fn from_kernel(v: u16) -> Option<NetconfAttr> {
        Some(match v {
            2 => NetconfAttr::Forwarding,
            3 => NetconfAttr::RpFilter,
            5 => NetconfAttr::ProxyNeigh,
            6 => NetconfAttr::IgnoreRoutesWithLinkdown,
            _ => return None,
        })
    }
}

impl Interest {
    /// The readiness gates: the uplinks' link state (carrier included) and
    /// routes in the host table.
    pub fn for_gates(uplinks: &[(u32, String)], host_table: Option<u32>) -> Interest {
        Interest {
            links: uplinks
                .iter()
                .map(|(index, name)| LinkInterest {
                    index: *index,
                    name: name.clone(),
                    want: LinkWant::Any,
                })
                .collect(),
            host_table: host_table.filter(|t| *t != 0),
            ..Interest::default()
        }
    }

    pub fn link(&self, index: u32) -> Option<&LinkInterest> {
        self.links.iter().find(|l| l.index == index)
    }
}

/// What woke a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// At least one relevant notification; `first` says what it was (logs).
    Changed { first: String, count: u32 },
    /// The kernel dropped notifications (ENOBUFS): anything may have
    /// changed, so look at everything again.
    Overrun,
    /// SIGHUP: read the profile and host facts again now.
    Reload,
    /// The deadline passed.
    Timeout,
    /// SIGTERM or SIGINT: finish up and exit.
    Stop(String),
}

/// Counters of the event source, for `underlay status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventStats {
    /// Notifications that reached this process (the kernel-side filter
    /// drops foreign route churn before it is queued).
    pub received: u64,
    /// Of those, the ones that woke a reconcile.
    pub relevant: u64,
    /// ENOBUFS: times the kernel dropped notifications.
    pub overruns: u64,
    /// Whether route notifications are subscribed (only with a host table).
    pub routes_subscribed: bool,
    /// Whether the route filter runs in the kernel (BPF): foreign routes
    /// are then dropped before they are queued.
    pub kernel_filter: bool,
    /// The receive buffer the kernel granted, in bytes.
    pub rcvbuf: u64,
}

/// A source of triggers with its own clock, so tests run on virtual time.
pub trait Events {
    fn now(&self) -> Instant;
    /// Blocks until a relevant notification, an overrun, a stop signal or
    /// `deadline`. Queued notifications are drained in one call.
    fn wait(&mut self, deadline: Instant) -> Result<Wake, SystemError>;
    /// What to keep from now on (after each reconcile: the target moves).
    fn set_interest(&mut self, interest: &Interest) -> Result<(), SystemError>;
    fn stats(&self) -> EventStats;
}

/// Scripted triggers on a virtual clock: `wait` returns the next scripted
/// wake if it is due before the deadline (advancing the clock to it), else
/// jumps the clock to the deadline and returns `Timeout`.
#[derive(Debug)]
pub struct FakeEvents {
    pub clock: Instant,
    pub script: VecDeque<(Instant, Wake)>,
    pub interest: Option<Interest>,
    pub interests_set: usize,
    pub stats: EventStats,
    /// How many times `wait` was called (to check nothing spins).
    pub waits: usize,
    /// The clock never runs past this (tests step up to a point in time).
    pub horizon: Option<Instant>,
}

impl Default for FakeEvents {
    fn default() -> Self {
        FakeEvents::new()
    }
}

impl FakeEvents {
    pub fn new() -> FakeEvents {
        FakeEvents {
            clock: Instant::now(),
            script: VecDeque::new(),
            interest: None,
            interests_set: 0,
            stats: EventStats::default(),
            waits: 0,
            horizon: None,
        }
    }

    /// Schedules `wake` at `after` from now (virtual time).
    pub fn push(&mut self, after: Duration, wake: Wake) {
        let at = self.clock + after;
        let pos = self
            .script
            .iter()
            .position(|(t, _)| *t > at)
            .unwrap_or(self.script.len());
        self.script.insert(pos, (at, wake));
    }

    pub fn changed(what: &str) -> Wake {
        Wake::Changed {
            first: what.to_string(),
            count: 1,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.clock += d;
    }
}

impl Events for FakeEvents {
    fn now(&self) -> Instant {
        self.clock
    }

    fn wait(&mut self, deadline: Instant) -> Result<Wake, SystemError> {
        self.waits += 1;
        let deadline = self
            .horizon
            .map_or(deadline, |h| deadline.min(h.max(self.clock)));
        match self.script.front() {
            Some((at, _)) if *at <= deadline => {
                let (at, wake) = self.script.pop_front().expect("front exists");
                self.clock = self.clock.max(at);
                if matches!(wake, Wake::Changed { .. }) {
                    self.stats.received += 1;
                    self.stats.relevant += 1;
                }
                if wake == Wake::Overrun {
                    self.stats.overruns += 1;
                }
                Ok(wake)
            }
            _ => {
                self.clock = self.clock.max(deadline);
                Ok(Wake::Timeout)
            }
        }
    }

    fn set_interest(&mut self, interest: &Interest) -> Result<(), SystemError> {
        self.interest = Some(interest.clone());
        self.interests_set += 1;
        Ok(())
    }

    fn stats(&self) -> EventStats {
        self.stats
    }
}
