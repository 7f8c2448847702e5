//! The event socket ([`EventSocket`]): conntrack and expectation events, the groups
//! joined, overruns, and a kernel-side filter for the echo of our own writes.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

// `NLM_F_*` message flags: linux/netlink.h.
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_sys::Socket;

use crate::attr;
use crate::decode::{self, Body};
use crate::error::Error;
use crate::flow::{Expectation, Flow};
use crate::netns::Netns;
use crate::socket::{Buffer, Lent, open_socket, recv_into, recv_tagged_into, size_buffer};
use crate::sys;

/// What changed, as an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A new entry (`IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE|NLM_F_EXCL`).
    New,
    /// A change to an existing entry (`IPCTNL_MSG_CT_NEW` without those flags).
    Update,
    /// The entry is gone (`IPCTNL_MSG_CT_DELETE`).
    Destroy,
}

/// One item read from an event socket.
#[derive(Debug)]
pub enum Event<'a> {
    /// A conntrack entry changed. `portid` is the netlink port whose request caused it,
    /// 0 when packets did.
    Flow {
        /// What happened.
        kind: EventKind,
        /// The causing netlink port id (0: the data path).
        portid: u32,
        /// The entry as the event describes it.
        flow: &'a Flow,
    },
    /// An expectation changed.
    Expectation {
        /// What happened.
        kind: EventKind,
        /// The causing netlink port id.
        portid: u32,
        /// The expectation.
        expectation: &'a Expectation,
    },
    /// The socket's receive buffer overflowed (`ENOBUFS`): some events were lost. The
    /// stream goes on; the table must be resynchronised to recover what was missed.
    Overrun,
}

/// Join or leave conntrack event groups on an event socket, by a descriptor of it (a
/// `dup` of [`EventSocket`]'s, so that a caller can change groups while the socket itself
/// is registered with an event loop). Leaving `new` while creating many entries spares
/// the kernel building an event per entry when nobody else listens.
pub fn set_event_groups(fd: BorrowedFd<'_>, groups: Groups) -> io::Result<()> {
    for (on, g) in [
        (groups.new, attr::NFNLGRP_CONNTRACK_NEW),
        (groups.update, attr::NFNLGRP_CONNTRACK_UPDATE),
        (groups.destroy, attr::NFNLGRP_CONNTRACK_DESTROY),
    ] {
        sys::netlink_membership(fd, g, on)?;
    }
    Ok(())
}

/// Which event groups to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    /// New entries.
    pub new: bool,
    /// Updates.
    pub update: bool,
    /// Destroyed entries.
    pub destroy: bool,
    /// Expectation events (new and destroy).
    pub expectations: bool,
}

impl Groups {
    /// Every conntrack group, no expectations.
    pub const CONNTRACK: Groups = Groups {
        new: true,
        update: true,
        destroy: true,
        expectations: false,
    };
}

/// Counters of an event socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Events delivered.
    pub events: u64,
    /// Overruns seen.
    pub overruns: u64,
    /// Messages that could not be decoded (dropped, counted).
    pub undecodable: u64,
}

/// A socket subscribed to conntrack events.
pub struct EventSocket {
    sock: Socket,
    stats: EventStats,
    /// It hears other namespaces too ([`EventSocket::listen_all_namespaces`]).
    all_namespaces: bool,
}

impl fmt::Debug for EventSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSocket")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl EventSocket {
    /// Subscribe in the current network namespace.
    pub fn open(groups: Groups) -> Result<EventSocket, Error> {
        Self::with_socket(open_socket(None)?, groups)
    }

    /// Subscribe in the network namespace `netns`.
    pub fn open_in(netns: &Netns, groups: Groups) -> Result<EventSocket, Error> {
        Self::with_socket(open_socket(Some(netns))?, groups)
    }

    fn with_socket(sock: Socket, groups: Groups) -> Result<EventSocket, Error> {
        for (on, g) in [
            (groups.new, attr::NFNLGRP_CONNTRACK_NEW),
            (groups.update, attr::NFNLGRP_CONNTRACK_UPDATE),
            (groups.destroy, attr::NFNLGRP_CONNTRACK_DESTROY),
            (groups.expectations, attr::NFNLGRP_CONNTRACK_EXP_NEW),
            (groups.expectations, attr::NFNLGRP_CONNTRACK_EXP_DESTROY),
        ] {
            if on {
                sock.add_membership(g)?;
            }
        }
        Ok(EventSocket {
            sock,
            stats: EventStats::default(),
            all_namespaces: false,
        })
    }

    /// Set the receive buffer, forced past `rmem_max` with `CAP_NET_ADMIN`
    /// (`SO_RCVBUFFORCE`). Returns what the kernel granted.
    pub fn set_recv_buffer(&mut self, bytes: usize) -> Result<usize, Error> {
        Ok(size_buffer(self.sock.as_fd(), Buffer::Receive, bytes)?)
    }

    /// Have the kernel drop every event caused by requests of the netlink socket
    /// `portid` before it is queued here: a classic BPF filter on the message header's
    /// `nlmsg_pid` (the kernel puts the requester's port id there, 0 for traffic).
    /// A daemon that writes many entries (a hot-standby backup) is then not flooded with
    /// the echo of its own writes, which it would only read to throw away, and which
    /// could overrun this socket and hide the events it does need.
    pub fn ignore_port(&mut self, portid: u32) -> Result<(), Error> {
        // Classic BPF opcodes (linux/filter.h).
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        // `struct nlmsghdr` (linux/netlink.h): nlmsg_pid follows nlmsg_len (4 bytes),
        // nlmsg_type (2), nlmsg_flags (2) and nlmsg_seq (4).
        const NLMSG_PID_AT: u32 = 12;
        // A word load reads network order; the header holds the port id in host order.
        let pid = u32::from_be_bytes(portid.to_ne_bytes());
        let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let prog = [
            op(LD_W_ABS, 0, 0, NLMSG_PID_AT),
            op(JEQ_K, 0, 1, pid),
            op(RET_K, 0, 0, 0),        // ours: drop
            op(RET_K, 0, 0, u32::MAX), // anything else: keep it whole
        ];
        sys::attach_filter(self.sock.as_fd(), &prog)?;
        Ok(())
    }

    /// Hear the events of every network namespace that has an id in this socket's
    /// namespace (`NETLINK_LISTEN_ALL_NSID`; an id is given with [`Netns::id_seen_from`]),
    /// as well as its own: [`EventSocket::recv_tagged`] says which namespace each came
    /// from. One socket then does for any number of namespaces, where a socket in each
    /// makes the kernel offer every event of the host to every one of them.
    ///
    /// [`Netns::id_seen_from`]: crate::Netns::id_seen_from
    pub fn listen_all_namespaces(&mut self) -> Result<(), Error> {
        sys::setsockopt_int(
            self.sock.as_fd(),
            libc::SOL_NETLINK,
            sys::NETLINK_LISTEN_ALL_NSID,
            1,
        )?;
        self.all_namespaces = true;
        Ok(())
    }

    /// Make [`EventSocket::recv`] return `Ok(None)` instead of blocking.
    pub fn set_nonblocking(&mut self, on: bool) -> Result<(), Error> {
        Ok(self.sock.set_non_blocking(on)?)
    }

    /// Counters so far.
    pub fn stats(&self) -> EventStats {
        self.stats
    }

    /// Read one datagram and hand each event in it to `each`. Returns the number of
    /// items delivered, or `None` if the socket is non-blocking and nothing is queued.
    /// An overrun is delivered as [`Event::Overrun`]; reading goes on afterwards.
    pub fn recv(&mut self, mut each: impl FnMut(Event<'_>)) -> Result<Option<usize>, Error> {
        self.recv_tagged(|_, e| each(e))
    }

    /// Like [`EventSocket::recv`], with the id of the namespace the datagram's events
    /// come from, when the socket listens to all namespaces and they come from another
    /// one than its own (`None` for its own, and for an overrun: that is the socket's).
    pub fn recv_tagged(
        &mut self,
        mut each: impl FnMut(Option<i32>, Event<'_>),
    ) -> Result<Option<usize>, Error> {
        let mut rx = Lent::rx();
        let nsid = loop {
            let got = if self.all_namespaces {
                recv_tagged_into(&self.sock, &mut rx)
            } else {
                recv_into(&self.sock, &mut rx, 0).map(|_| None)
            };
            match got {
                Ok(nsid) => break nsid,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.stats.overruns += 1;
                    each(None, Event::Overrun);
                    return Ok(Some(1));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        };
        let mut n = 0;
        for m in decode::messages(&rx) {
            let Ok(m) = m else {
                // The iterator stops by itself after a bad header; count it.
                self.stats.undecodable += 1;
                continue;
            };
            // The kernel marks an event for a new entry like a create request.
            let created = m.flags & (NLM_F_CREATE | NLM_F_EXCL) != 0;
            let kind = match m.body {
                Body::Conntrack { msg, .. } => match msg {
                    attr::IPCTNL_MSG_CT_NEW if created => EventKind::New,
                    attr::IPCTNL_MSG_CT_NEW => EventKind::Update,
                    attr::IPCTNL_MSG_CT_DELETE => EventKind::Destroy,
                    _ => continue,
                },
                Body::Expectation { msg, .. } => match msg {
                    attr::IPCTNL_MSG_EXP_NEW if created => EventKind::New,
                    attr::IPCTNL_MSG_EXP_NEW => EventKind::Update,
                    attr::IPCTNL_MSG_EXP_DELETE => EventKind::Destroy,
                    _ => continue,
                },
                _ => continue,
            };
            let decoded = match m.body {
                Body::Conntrack { family, attrs, .. } => {
                    decode::decode_flow(family, attrs).map(|flow| {
                        each(
                            nsid,
                            Event::Flow {
                                kind,
                                portid: m.pid,
                                flow: &flow,
                            },
                        )
                    })
                }
                Body::Expectation { family, attrs, .. } => {
                    decode::decode_expectation(family, attrs).map(|exp| {
                        each(
                            nsid,
                            Event::Expectation {
                                kind,
                                portid: m.pid,
                                expectation: &exp,
                            },
                        )
                    })
                }
                _ => continue,
            };
            match decoded {
                Ok(()) => {
                    n += 1;
                    self.stats.events += 1;
                }
                Err(_) => self.stats.undecodable += 1,
            }
        }
        Ok(Some(n))
    }

    /// Like [`EventSocket::recv`], but waits at most `timeout` for a datagram.
    /// Returns `Ok(None)` if none came.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
        each: impl FnMut(Event<'_>),
    ) -> Result<Option<usize>, Error> {
        if !sys::wait_readable(self.sock.as_fd(), timeout)? {
            return Ok(None);
        }
        self.recv(each)
    }
}

impl AsRawFd for EventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
