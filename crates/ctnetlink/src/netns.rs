//! Running socket creation inside a named network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it, for its whole
//! life. [`Netns::run`] creates sockets on a short-lived thread that has joined the
//! namespace, so the caller's threads never change namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::sys;

/// A handle on a network namespace, as `ip netns` names them (`/run/netns/NAME`).
#[derive(Debug)]
pub struct Netns {
    file: File,
}

impl Netns {
    /// Open the namespace that `ip netns add NAME` created.
    pub fn named(name: &str) -> io::Result<Netns> {
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid network namespace name {name:?}"),
            ));
        }
        let path = Path::new("/run/netns").join(name);
        let file = File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open network namespace {}: {e}", path.display()),
            )
        })?;
        Ok(Netns { file })
    }

    /// Run `f` on a thread inside this namespace and return its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("ctnetlink-netns".into())
                .spawn_scoped(s, move || {
                    sys::enter_netns(fd)?;
                    f()
                })?
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }

    /// The id this namespace has in the namespace `from` (the current thread's if
    /// `None`), given one there first if it has none, as `ip netns set NAME auto` does
    /// (`RTM_NEWNSID`, then `RTM_GETNSID`). A socket in `from` that listens to all
    /// namespaces hears this one's events under that id.
    pub fn id_seen_from(&self, from: Option<&Netns>) -> io::Result<i32> {
        let fd = u32::try_from(self.file.as_raw_fd())
            .map_err(|_| io::Error::other("bad namespace descriptor"))?;
        let ask = move || nsid_of(fd);
        match from {
            Some(ns) => ns.run(ask),
            None => ask(),
        }
    }
}

// rtnetlink's namespace ids (linux/net_namespace.h, linux/netlink.h).
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// Let the kernel choose the id.
const NSID_ANY: i32 = -1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// One rtnetlink request about namespace ids: the header, a `struct rtgenmsg` (one
/// byte, padded to four) and 32-bit attributes.
fn nsid_request(kind: u16, flags: u16, seq: u32, attrs: &[(u16, [u8; 4])]) -> Vec<u8> {
    let len = 16 + 4 + 8 * attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    for (t, v) in attrs {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(v);
    }
    m
}

/// Send `req` and read the one answer: `Ok(payload)` of a reply, `Ok(empty)` for a
/// positive acknowledgement, the kernel's error otherwise.
fn nsid_exchange(sock: &Socket, req: &[u8]) -> io::Result<Vec<u8>> {
    sock.send(req, 0)?;
    let mut buf = Vec::with_capacity(8192);
    sock.recv(&mut buf, 0)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink answer");
    let len = u32::from_ne_bytes(
        buf.get(0..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let kind = u16::from_ne_bytes(
        buf.get(4..6)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let body = buf.get(16..len.min(buf.len())).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let code = i32::from_ne_bytes(
            body.get(0..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        return if code == 0 {
            Ok(Vec::new())
        } else {
            Err(io::Error::from_raw_os_error(-code))
        };
    }
    Ok(body.to_vec())
}

/// The id of the namespace open as `fd` in the current thread's namespace, assigned if
/// it has none.
fn nsid_of(fd: u32) -> io::Result<i32> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let give = nsid_request(
        libc::RTM_NEWNSID,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        &[
            (NETNSA_NSID, NSID_ANY.to_ne_bytes()),
            (NETNSA_FD, fd.to_ne_bytes()),
        ],
    );
    match nsid_exchange(&sock, &give) {
        Ok(_) => {}
        // It has one already.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("giving a namespace an id: {e}"),
            ));
        }
    }
    let ask = nsid_request(
        libc::RTM_GETNSID,
        NLM_F_REQUEST,
        2,
        &[(NETNSA_FD, fd.to_ne_bytes())],
    );
    let reply = nsid_exchange(&sock, &ask)
        .map_err(|e| io::Error::new(e.kind(), format!("reading a namespace's id: {e}")))?;
    // After the rtgenmsg: attributes, each padded to four bytes.
    let mut at = 4;
    while let Some(head) = reply.get(at..at + 4) {
        let alen = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let atype = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        if alen < 4 {
            break;
        }
        if atype == NETNSA_NSID
            && let Some(v) = reply.get(at + 4..at + 8)
        {
            let id = i32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            return if id < 0 {
                Err(io::Error::other(
                    "the namespace has no id (and was given none)",
                ))
            } else {
                Ok(id)
            };
        }
        at += alen.div_ceil(4) * 4;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no namespace id in the kernel's answer",
    ))
}
