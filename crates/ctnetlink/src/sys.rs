//! Every raw system call of the crate, each behind a safe wrapper.
//!
//! This is the only module with `unsafe`. The wrappers take [`BorrowedFd`], so the
//! descriptor is open for the whole call; each pointer handed to the kernel points at a
//! live value of the size passed with it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// `-1` with `errno` set (the failure convention of the calls here) becomes an error.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `setsockopt(2)` with a value that is plain data: no pointers the kernel would follow.
/// Only the wrappers below call it, with `c_int`, `u32` and `timeval`.
fn setsockopt_plain<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `fd` is open for the call; `value` points at a live `T` and the length is
    // exactly its size, so the kernel copies in nothing beyond it. `T` holds no pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// Set an `int` socket option.
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt_plain(fd, level, name, &value)
}

/// Read an `int` socket option.
pub(crate) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is open for the call; `value` and `len` are live, and `len` says how
    // many bytes `value` holds, so the kernel writes no more than that.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    check(rc)?;
    Ok(value)
}

/// Bound a blocking receive to `timeout` (`SO_RCVTIMEO`). A zero timeout would mean
/// "forever" to the kernel, so it is rounded up to a microsecond.
pub(crate) fn set_recv_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()).max(i64::from(timeout.is_zero())),
    };
    setsockopt_plain(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Join (`NETLINK_ADD_MEMBERSHIP`) or leave (`NETLINK_DROP_MEMBERSHIP`) the netlink
/// multicast group `group` (linux/netlink.h).
pub(crate) fn netlink_membership(fd: BorrowedFd<'_>, group: u32, join: bool) -> io::Result<()> {
    let opt = if join {
        libc::NETLINK_ADD_MEMBERSHIP
    } else {
        libc::NETLINK_DROP_MEMBERSHIP
    };
    setsockopt_plain(fd, libc::SOL_NETLINK, opt, &group)
}

/// Attach a classic BPF program to a socket (`SO_ATTACH_FILTER`, linux/filter.h). The
/// kernel copies the program; it replaces any filter attached before.
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fd` is open for the call; `fprog` is live and sized as passed, and its
    // `filter` points at `len` instructions of `prog`, borrowed for the call. The kernel
    // only reads the program (it copies it), so the `cast_mut` is never written through.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

/// Wait until `fd` is readable or `timeout` passes (`poll(2)`); `Ok(false)` on timeout
/// or when a signal interrupts the wait.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one live `pollfd`, and the count passed is 1; `fd` is open for the call.
    let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    match check(rc) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Move the calling thread into the network namespace of the namespace file `ns`
/// (`setns(2)` with `CLONE_NEWNET`).
pub(crate) fn enter_netns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is open for the call; `setns` takes no pointers and changes only the
    // calling thread's namespace.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// `NETLINK_LISTEN_ALL_NSID` (linux/netlink.h): a socket option, and the type of the
/// control message carrying the namespace id of a message from another namespace.
pub(crate) const NETLINK_LISTEN_ALL_NSID: libc::c_int = 8;

/// Receive one datagram into the spare room of the empty `buf` (its length set to the
/// bytes read), with the namespace id of a `NETLINK_LISTEN_ALL_NSID` socket's control
/// message when the kernel sent one (a message from another namespace that has an id
/// here).
pub(crate) fn recv_with_nsid(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Option<i32>> {
    buf.clear();
    // Room for one control message of one int (CMSG_SPACE(4) is 24 on 64-bit Linux),
    // aligned as `cmsghdr` wants.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.capacity(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `fd` is open for the call; `msg` points at one live iovec covering the
    // spare capacity of `buf` (the kernel writes at most `iov_len` bytes there) and at
    // `control`, live and sized as `msg_controllen` says.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes (at most the capacity).
    unsafe { buf.set_len(n.min(buf.capacity())) };
    let mut nsid = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen` bytes of `control`, which
    // the kernel filled; each header it yields is within that room, and its data is read
    // unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_NETLINK
                && (*c).cmsg_type == NETLINK_LISTEN_ALL_NSID
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                nsid = Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok(nsid)
}
