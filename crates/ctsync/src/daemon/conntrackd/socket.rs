//! The sockets of the conntrackd dialect, as conntrackd opens its own
//! (conntrack-tools 1.4.7 `src/udp.c`, `src/mcast.c`; research/conntrackd.md §2.1):
//!
//! * UDP: one socket bound to `local`, sending to `peer` (conntrackd's IPv4 sender is
//!   not bound to its port, so only the sender's address is checked);
//! * multicast: a receiver bound to the group's port and joined on the interface (1.4.7
//!   binds `INADDR_ANY:port`, 1.4.9 the group: either way it takes what is sent to the
//!   group and port), and a sender of its own, unbound, sending to the group on the
//!   interface with loopback off and TTL 1 (conntrackd sets no TTL: the kernel's
//!   default, 1). conntrackd filters no source: with loopback off a node never hears
//!   itself, and its sequence tracking assumes one sender. Here loopback is off too, and
//!   `peer`, when named, is the only sender taken.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use ctnetlink::Netns;
use tokio::net::UdpSocket;

use crate::config::ConntrackdTransport;

/// Socket buffers asked for (conntrackd's examples use megabytes too).
const BUFFER: usize = 8 << 20;

/// The dialect's sockets.
pub(super) struct Wire {
    /// Where datagrams arrive.
    pub(super) rx: UdpSocket,
    /// Where ours leave, straight to the kernel (tokio's `try_send_to` refuses with
    /// WouldBlock until the reactor has seen the socket writable, which lost the first
    /// datagram, the startup RESYNC). UDP: the same socket as `rx`.
    pub(super) tx: StdUdpSocket,
    /// Where ours go: conntrackd's address, or the group.
    pub(super) to: SocketAddr,
    /// The only sender taken (UDP: always; multicast: when `peer` is named).
    pub(super) accept: Option<IpAddr>,
}

impl Wire {
    /// Open the sockets for `transport` on `interface` (in `netns` if given).
    pub(super) fn open(
        transport: ConntrackdTransport,
        interface: &str,
        netns: Option<&Netns>,
    ) -> Result<Wire> {
        let iface = std::ffi::CString::new(interface.to_string())
            .map_err(|_| anyhow::anyhow!("[conntrackd] interface {interface:?} is not a name"))?;
        let open = move || -> std::io::Result<(StdUdpSocket, StdUdpSocket, SocketAddr)> {
            match transport {
                ConntrackdTransport::Udp { local, peer } => {
                    let s = StdUdpSocket::bind(local)?;
                    let tx = s.try_clone()?;
                    Ok((s, tx, peer))
                }
                ConntrackdTransport::Multicast { group, .. } => {
                    // SAFETY: a NUL-terminated string that outlives the call.
                    let index = unsafe { libc::if_nametoindex(iface.as_ptr()) };
                    if index == 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    multicast(group, index)
                }
            }
        };
        let (rx, tx, to) = match netns {
            Some(ns) => ns.run(open),
            None => open(),
        }
        .with_context(|| match transport {
            ConntrackdTransport::Udp { local, .. } => {
                format!("binding the [conntrackd] socket to {local}")
            }
            ConntrackdTransport::Multicast { group, .. } => {
                format!("joining the [conntrackd] group {group} on {interface}")
            }
        })?;
        for s in [&rx, &tx] {
            s.set_nonblocking(true)?;
            let _ = ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Receive, BUFFER);
            let _ = ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Send, BUFFER);
        }
        let accept = match transport {
            ConntrackdTransport::Udp { peer, .. } => Some(peer.ip()),
            ConntrackdTransport::Multicast { peer, .. } => peer,
        };
        Ok(Wire {
            rx: UdpSocket::from_std(rx)?,
            tx,
            to,
            accept,
        })
    }
}

/// The group's receiver (bound to the group and port, joined on interface `index`) and
/// sender (unbound; to the group on that interface, TTL 1, no loopback), and the group
/// as datagrams are sent to it.
fn multicast(
    group: SocketAddr,
    index: u32,
) -> std::io::Result<(StdUdpSocket, StdUdpSocket, SocketAddr)> {
    match group {
        SocketAddr::V4(g) => {
            let rx = StdUdpSocket::bind(g)?;
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(g.ip().octets()),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index as libc::c_int,
            };
            set_opt(&rx, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
            let tx = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            tx.set_multicast_ttl_v4(1)?;
            tx.set_multicast_loop_v4(false)?;
            let out = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index as libc::c_int,
            };
            set_opt(&tx, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &out)?;
            Ok((rx, tx, SocketAddr::V4(g)))
        }
        SocketAddr::V6(g) => {
            let to = SocketAddrV6::new(*g.ip(), g.port(), 0, index);
            let rx = StdUdpSocket::bind(to)?;
            rx.join_multicast_v6(g.ip(), index)?;
            let tx = StdUdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
            tx.set_multicast_loop_v6(false)?;
            set_opt(&tx, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &1)?;
            set_opt(
                &tx,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                &(index as libc::c_int),
            )?;
            Ok((rx, tx, SocketAddr::V6(to)))
        }
    }
}

/// `setsockopt(level, name, value)`.
fn set_opt<T>(
    s: &StdUdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size given, for the length of the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
