//! conntrackd's FTFW dialect (conntrack-tools 1.4.x), for mixed clusters and a rolling
//! migration: a ctsync node and a conntrackd node exchange their tables over
//! conntrackd's own protocol. Unauthenticated by nature, so opt-in (`[conntrackd]` in
//! the configuration, `dialect = "conntrackd"`), and said at every start.
//!
//! [`codec`] reads and writes conntrackd's messages, [`expect`] its expectation
//! messages; [`session`] is the FTFW state
//! machine, sans-IO. The daemon's shell (`daemon/conntrackd.rs`) owns the socket and
//! the kernel writes.

pub mod codec;
pub mod expect;
pub mod session;

pub use codec::CodecError;
pub use session::{FlowMessage, Received, Session, SessionConfig, SessionStats};
