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

use crate::decode::{NsidAnswerError, decode_nsid_answer};
use crate::encode::encode_nsid_request;
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

/// Let the kernel choose the id.
const NSID_ANY: i32 = -1;
// `NLM_F_ACK` (linux/netlink.h); `NLM_F_REQUEST` is set by the encoder.
const NLM_F_ACK: u16 = 4;

/// Send a namespace-id request and read its answer (see [`decode_nsid_answer`]).
fn nsid_exchange(sock: &Socket, req: &[u8]) -> io::Result<Option<i32>> {
    sock.send(req, 0)?;
    let mut buf = Vec::with_capacity(8192);
    sock.recv(&mut buf, 0)?;
    decode_nsid_answer(&buf).map_err(|e| match e {
        NsidAnswerError::Errno(errno) => io::Error::from_raw_os_error(errno),
        NsidAnswerError::Malformed => {
            io::Error::new(io::ErrorKind::InvalidData, "a malformed rtnetlink answer")
        }
    })
}

/// The id of the namespace open as `fd` in the current thread's namespace, assigned if
/// it has none.
fn nsid_of(fd: u32) -> io::Result<i32> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut req = Vec::new();
    encode_nsid_request(
        &mut req,
        libc::RTM_NEWNSID,
        NLM_F_ACK,
        1,
        Some(NSID_ANY),
        fd,
    );
    match nsid_exchange(&sock, &req) {
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
    req.clear();
    encode_nsid_request(&mut req, libc::RTM_GETNSID, 0, 2, None, fd);
    match nsid_exchange(&sock, &req)
        .map_err(|e| io::Error::new(e.kind(), format!("reading a namespace's id: {e}")))?
    {
        Some(id) if id >= 0 => Ok(id),
        Some(_) => Err(io::Error::other(
            "the namespace has no id (and was given none)",
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no namespace id in the kernel's answer",
        )),
    }
}
