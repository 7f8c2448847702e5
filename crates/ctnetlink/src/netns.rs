//! Running socket creation inside a named network namespace.
//!
//! A netlink socket belongs to the namespace of the thread that created it, for its whole
//! life. [`Netns::run`] creates sockets on a short-lived thread that has joined the
//! namespace, so the caller's threads never change namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

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
}
