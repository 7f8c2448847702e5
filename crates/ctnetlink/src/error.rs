//! What can go wrong talking to the kernel: the kernel's errno and the socket layer's
//! error.

use std::fmt;
use std::io;

use crate::decode::DecodeError;

/// A positive errno the kernel answered a request with.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// `EEXIST`: the entry (or its reply tuple) already exists.
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    /// `ENOENT`: no such entry.
    pub const ENOENT: Errno = Errno(libc::ENOENT);
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

/// What can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket call failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the request.
    #[error("kernel refused the request: {0}")]
    Kernel(Errno),
    /// The kernel sent bytes we could not decode.
    #[error("undecodable netlink message: {0}")]
    Decode(#[from] DecodeError),
    /// The receive buffer overflowed while replies were pending, so some results are
    /// unknown.
    #[error("netlink receive buffer overrun: replies were lost")]
    Overrun,
    /// Like `Overrun`, during a batch: `report` counts the chunks fully accounted for.
    #[error("netlink receive buffer overrun during a batch ({0:?})")]
    BatchOverrun(BatchReport),
    /// A dump was interrupted by concurrent changes more often than we retry.
    #[error("dump interrupted {0} times in a row")]
    DumpInterrupted(u32),
    /// The kernel did not answer within the socket's timeout.
    #[error("the kernel did not answer in time")]
    Timeout,
    /// The kernel processed a batch but did not answer for all of it (it answers only
    /// the first request of a batch it refuses as a whole, e.g. without CAP_NET_ADMIN).
    /// `report` says what is known.
    #[error("the kernel left part of a batch unanswered ({0:?})")]
    Unanswered(BatchReport),
}

/// The outcome of a batch (here because an error that ends a batch carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests the kernel applied.
    pub applied: u64,
    /// Requests the kernel refused (each reported to the error callback).
    pub failed: u64,
    /// `sendmsg` calls made.
    pub sendmsgs: u64,
}
