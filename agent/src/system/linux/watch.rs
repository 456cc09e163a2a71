//! The kernel's netlink notifications as triggers ([`Events`]): one
//! non-blocking multicast socket (the groups of `ip monitor`: links, IPv4 and
//! IPv6 addresses, rules and netconf, and routes when a host table is
//! watched), a BPF filter that keeps foreign route churn out of the socket,
//! a large receive buffer, and optionally SIGTERM/SIGINT/SIGHUP through a
//! signalfd so a wait ends the moment a stop is asked for.
//!
//! Synchronous on purpose: a `poll` on two file descriptors needs no runtime,
//! and nothing is parsed beyond the few header fields [`filter::classify`]
//! reads.

mod filter;

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recv, setsockopt, sockopt, MsgFlags};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use rtnetlink::MulticastGroup;

pub use filter::{classify, route_bpf, Hit, SockFilter};

use crate::system::events::{EventStats, Events, Interest, Wake};
use crate::system::SystemError;

/// Receive buffer asked for: a burst of ~20 000 notifications fits before
/// the kernel drops any (ENOBUFS).
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// At most this many datagrams are read per wait, so a flood of relevant
/// events cannot starve the stop signal or the deadline.
const DRAIN_BUDGET: usize = 2048;

#[derive(Debug, Clone)]
pub struct Options {
    /// Receive buffer to ask for (SO_RCVBUFFORCE as root, else SO_RCVBUF,
    /// which `net.core.rmem_max` caps). Tests shrink it to provoke overruns.
    pub rcvbuf: usize,
    /// Run the route filter in the kernel (BPF). Off only to measure what
    /// it saves: user space then sees and drops every foreign route.
    pub kernel_filter: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rcvbuf: DEFAULT_RCVBUF,
            kernel_filter: true,
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP, blocked and readable from a file descriptor.
/// Create it before any thread starts (threads inherit the mask; an
/// unblocked thread would take the default action: exit mid-apply).
pub struct StopSignals {
    fd: SignalFd,
}

impl StopSignals {
    pub fn block() -> Result<StopSignals, SystemError> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            set.add(s);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .map_err(|e| SystemError::Other(format!("blocking SIGTERM/SIGINT: {e}")))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| SystemError::Other(format!("signalfd: {e}")))?;
        Ok(StopSignals { fd })
    }

    /// A pending signal, if any: SIGHUP asks for a reload, the others to stop.
    fn take(&self) -> Option<Wake> {
        let info = self.fd.read_signal().ok().flatten()?;
        let sig = Signal::try_from(info.ssi_signo as i32).ok()?;
        Some(match sig {
            Signal::SIGHUP => Wake::Reload,
            s => Wake::Stop(s.as_str().to_string()),
        })
    }
}

pub struct KernelEvents {
    sock: Socket,
    buf: Vec<u8>,
    interest: Interest,
    signals: Option<StopSignals>,
    options: Options,
    stats: EventStats,
    routes_subscribed: bool,
    /// The table the route filter was set up for (`None`: not yet).
    filtered_table: Option<Option<u32>>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> SystemError + '_ {
    move |e| SystemError::Other(format!("netlink events: {what}: {e}"))
}

fn errno(what: &str) -> impl FnOnce(nix::Error) -> SystemError + '_ {
    move |e| SystemError::Other(format!("netlink events: {what}: {e}"))
}

/// Attaches a classic BPF program (SO_ATTACH_FILTER); replaces any before.
pub(crate) fn attach_filter(fd: RawFd, prog: &[SockFilter]) -> std::io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel
    // copies the program and validates every instruction before use.
    let r = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::SOL_SOCKET,
            nix::libc::SO_ATTACH_FILTER,
            (&fprog as *const SockFprog).cast(),
            std::mem::size_of::<SockFprog>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn detach_filter(fd: RawFd) {
    let zero: nix::libc::c_int = 0;
    // SAFETY: SO_DETACH_FILTER reads an int we own; failure (no filter) is fine.
    unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::SOL_SOCKET,
            nix::libc::SO_DETACH_FILTER,
            (&zero as *const nix::libc::c_int).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        );
    }
}

const BASE_GROUPS: [MulticastGroup; 7] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
    MulticastGroup::Ipv4Netconf,
    MulticastGroup::Ipv6Netconf,
];
const ROUTE_GROUPS: [MulticastGroup; 2] = [MulticastGroup::Ipv4Route, MulticastGroup::Ipv6Route];

impl KernelEvents {
    /// Opens the socket in the current network namespace (enter `--netns`
    /// first). The filter is in place before the first group is joined, so
    /// no foreign notification is ever queued.
    pub fn open(
        interest: &Interest,
        options: Options,
        signals: Option<StopSignals>,
    ) -> Result<KernelEvents, SystemError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io("opening a netlink socket"))?;
        // As root, past net.core.rmem_max; else as much as it allows.
        let size = options.rcvbuf.min(i32::MAX as usize / 2);
        if setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &size).is_err() {
            sock.set_rx_buf_sz(size as nix::libc::c_int)
                .map_err(io("setting the receive buffer"))?;
        }
        let mut ev = KernelEvents {
            buf: vec![0; 64 * 1024],
            interest: Interest::default(),
            signals,
            stats: EventStats {
                rcvbuf: sock.get_rx_buf_sz().unwrap_or(0) as u64,
                ..EventStats::default()
            },
            options,
            routes_subscribed: false,
            filtered_table: None,
            sock: {
                let mut groups = 0u32;
                for g in BASE_GROUPS {
                    groups |= 1 << (g as u32 - 1);
                }
                sock.bind(&SocketAddr::new(0, groups))
                    .map_err(io("joining the link, address, rule and netconf groups"))?;
                sock.set_non_blocking(true)
                    .map_err(io("setting non-blocking"))?;
                sock
            },
        };
        ev.set_interest(interest)?;
        Ok(ev)
    }

    fn set_route_filter(&mut self, table: Option<u32>) -> Result<(), SystemError> {
        let fd = self.sock.as_raw_fd();
        match table {
            Some(t) if self.options.kernel_filter => {
                // A kernel that refuses the program still gets every event
                // right, through the user-space filter (at more CPU): the
                // status shows kernel_filter false.
                self.stats.kernel_filter = attach_filter(fd, &route_bpf(t)).is_ok();
            }
            _ => {
                detach_filter(fd);
                self.stats.kernel_filter = false;
            }
        }
        let want = table.is_some();
        if want != self.routes_subscribed {
            for g in ROUTE_GROUPS {
                if want {
                    self.sock
                        .add_membership(g as u32)
                        .map_err(io("joining the route groups"))?;
                } else {
                    self.sock
                        .drop_membership(g as u32)
                        .map_err(io("leaving the route groups"))?;
                }
            }
            self.routes_subscribed = want;
        }
        self.stats.routes_subscribed = want;
        self.filtered_table = Some(table);
        Ok(())
    }

    /// Reads what is queued (up to the budget) and says whether any of it
    /// matters. `None`: nothing relevant.
    fn drain(&mut self) -> Result<Option<Wake>, SystemError> {
        let mut overrun = false;
        let mut hits = 0u32;
        let mut first = None;
        for _ in 0..DRAIN_BUDGET {
            match recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    let v = classify(&self.buf[..n.min(self.buf.len())], &self.interest);
                    self.stats.received += u64::from(v.messages);
                    overrun |= v.overrun;
                    hits += v.hits;
                    if first.is_none() {
                        first = v.first;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                // The kernel dropped notifications: the socket stays usable.
                Err(nix::errno::Errno::ENOBUFS) => overrun = true,
                Err(e) => return Err(errno("reading notifications")(e)),
            }
        }
        self.stats.relevant += u64::from(hits);
        if overrun {
            self.stats.overruns += 1;
            return Ok(Some(Wake::Overrun));
        }
        Ok(first.map(|h| Wake::Changed {
            first: h.to_string(),
            count: hits,
        }))
    }
}

impl Events for KernelEvents {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait(&mut self, deadline: Instant) -> Result<Wake, SystemError> {
        loop {
            if let Some(w) = self.signals.as_ref().and_then(StopSignals::take) {
                return Ok(w);
            }
            if let Some(w) = self.drain()? {
                return Ok(w);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Wake::Timeout);
            }
            // Round up: waking a millisecond early would spin until the deadline.
            let left = (deadline - now + Duration::from_micros(999)).as_millis();
            let timeout = PollTimeout::try_from(left.min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = vec![PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            if let Some(s) = &self.signals {
                fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(errno("waiting for notifications")(e)),
            }
        }
    }

    fn set_interest(&mut self, interest: &Interest) -> Result<(), SystemError> {
        if self.filtered_table != Some(interest.host_table) {
            self.set_route_filter(interest.host_table)?;
        }
        self.interest = interest.clone();
        Ok(())
    }

    fn stats(&self) -> EventStats {
        self.stats
    }
}
