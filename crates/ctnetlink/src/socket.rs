//! What the request and event sockets share: opening a ctnetlink socket (in a network
//! namespace), sizing socket buffers, and receiving into a reusable buffer.

use std::io;
use std::os::fd::BorrowedFd;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::netns::Netns;
use crate::sys;

/// Bytes read per `recv`; a dump skb is at most a few pages.
const RX_BYTES: usize = 256 * 1024;

thread_local! {
    /// The receive buffer the sockets of this thread share (see [`Lent`]).
    static SPARE_RX: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    /// The request buffer they share.
    static SPARE_TX: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A buffer lent by the thread to one request or one read, given back when dropped:
/// every socket of a thread shares one receive and one request buffer. A daemon of
/// many namespaces runs hundreds of sockets on one thread; each with buffers of its own
/// kept about 50 KiB resident per namespace. A buffer borrowed while the thread's is
/// out (a callback using another socket) is a new one; the larger of the two stays.
pub(crate) struct Lent {
    buf: Vec<u8>,
    tx: bool,
}

impl Lent {
    /// The thread's receive buffer.
    pub(crate) fn rx() -> Lent {
        Lent {
            buf: SPARE_RX.take(),
            tx: false,
        }
    }

    /// The thread's request buffer, empty.
    pub(crate) fn tx() -> Lent {
        let mut buf = SPARE_TX.take();
        buf.clear();
        Lent { buf, tx: true }
    }
}

impl std::ops::Deref for Lent {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let back = std::mem::take(&mut self.buf);
        let slot = if self.tx { &SPARE_TX } else { &SPARE_RX };
        // Not while the thread is ending (the slot may be gone already).
        let _ = slot.try_with(|c| {
            let held = c.take();
            c.set(if held.capacity() >= back.capacity() {
                held
            } else {
                back
            });
        });
    }
}

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
    room_for_a_datagram(rx);
    sock.recv(rx, flags)
}

/// Like [`recv_into`], with the namespace id of a socket that listens to every
/// namespace (see [`sys::recv_with_nsid`]).
pub(crate) fn recv_tagged_into(sock: &Socket, rx: &mut Vec<u8>) -> io::Result<Option<i32>> {
    use std::os::fd::AsFd;
    room_for_a_datagram(rx);
    sys::recv_with_nsid(sock.as_fd(), rx)
}

/// Empty `rx`, with room for the largest datagram read.
fn room_for_a_datagram(rx: &mut Vec<u8>) {
    rx.clear();
    if rx.capacity() < RX_BYTES {
        rx.reserve(RX_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_buffer_goes_back_to_the_thread_and_the_larger_one_stays() {
        let first = {
            let mut a = Lent::rx();
            a.reserve(4096);
            // Borrowed while the thread's is out: a new, empty one.
            let b = Lent::rx();
            assert_eq!(b.capacity(), 0);
            a.as_ptr()
        };
        let again = Lent::rx();
        assert!(again.capacity() >= 4096);
        assert_eq!(again.as_ptr(), first, "the same buffer is lent again");
        drop(again);
        let mut tx = Lent::tx();
        tx.extend_from_slice(b"request");
        drop(tx);
        assert!(Lent::tx().is_empty(), "a request buffer is lent empty");
    }
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
