//! What the request and event sockets share: opening a ctnetlink socket (in a network
//! namespace), sizing socket buffers, and receiving into a reusable buffer.

use std::io;
use std::os::fd::BorrowedFd;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::netns::Netns;
use crate::sys;

/// Bytes read per `recv`; a dump skb is at most a few pages.
pub(crate) const RX_BYTES: usize = 256 * 1024;

/// A netfilter netlink socket bound to a port the kernel picks, created in `netns` (it
/// stays in that namespace for life) or in the current one.
pub(crate) fn open_socket(netns: Option<&Netns>) -> io::Result<Socket> {
    let make = || -> io::Result<Socket> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        Ok(sock)
    };
    match netns {
        Some(ns) => ns.run(make),
        None => make(),
    }
}

/// Which of a socket's two buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// The receive buffer (`SO_RCVBUF`).
    Receive,
    /// The send buffer (`SO_SNDBUF`).
    Send,
}

/// Size a buffer of any socket to `bytes`: forced past the sysctl limit (`rmem_max`,
/// `wmem_max`) when the process has `CAP_NET_ADMIN`, within it otherwise. Returns the
/// size the kernel granted (it doubles the request for bookkeeping). The daemon sizes
/// its UDP sync socket with it, as this crate sizes its netlink sockets.
pub fn size_buffer(fd: BorrowedFd<'_>, which: Buffer, bytes: usize) -> io::Result<usize> {
    let (force, plain) = match which {
        Buffer::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        Buffer::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    };
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
        sys::setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes)?;
    }
    Ok(sys::getsockopt_int(fd, libc::SOL_SOCKET, plain)?.max(0) as usize)
}

/// Receive one datagram into `rx`, replacing its contents; `rx` keeps its capacity.
pub(crate) fn recv_into(sock: &Socket, rx: &mut Vec<u8>, flags: i32) -> io::Result<usize> {
    rx.clear();
    if rx.capacity() < RX_BYTES {
        rx.reserve(RX_BYTES);
    }
    sock.recv(rx, flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::getsockopt_int;
    use std::os::fd::AsFd;

    #[test]
    fn size_buffer_sizes_any_socket_and_reports_the_grant() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for (which, opt) in [
            (Buffer::Receive, libc::SO_RCVBUF),
            (Buffer::Send, libc::SO_SNDBUF),
        ] {
            let before = getsockopt_int(udp.as_fd(), libc::SOL_SOCKET, opt).unwrap();
            // Small enough for the sysctl limit, so also granted without CAP_NET_ADMIN.
            let granted = size_buffer(udp.as_fd(), which, 64 << 10).unwrap();
            let now = getsockopt_int(udp.as_fd(), libc::SOL_SOCKET, opt).unwrap();
            assert_eq!(granted, now as usize, "{which:?}");
            // The kernel doubles the request for its bookkeeping.
            assert_eq!(granted, 128 << 10, "{which:?} (was {before})");
        }
    }
}
