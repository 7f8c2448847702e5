//! The ctsync replication core: sans-IO and deterministic.
//!
//! A [`Node`] holds one ctsync instance's protocol state: the internal cache (this
//! node's kernel table), the external caches (flows owned by peers), a reliable stream
//! to and from each peer, roles and readiness. It never reads a clock, opens a socket,
//! spawns a thread or draws randomness of its own:
//!
//! * inputs are calls with the current time: [`Node::handle_kernel_event`],
//!   [`Node::handle_datagram`], [`Node::handle_timeout`], [`Node::set_role`], …;
//! * outputs are pulled: [`Node::poll_transmit`] (datagrams, into the caller's buffer),
//!   [`Node::poll_kernel_op`] (writes to the kernel table), [`Node::poll_notify`], and
//!   [`Node::poll_timeout`] (when to call `handle_timeout` next).
//!
//! After any input, drain every `poll_*` until it returns `None`. The same inputs in the
//! same order give the same outputs, which is what lets `tests/sim.rs` run whole
//! clusters under loss, reordering, duplication, partitions and restarts in a virtual
//! clock. The protocol is specified in `docs/PROTOCOL.md`.

pub mod cache;
pub mod config;
pub mod node;
pub mod peer;
pub mod stream;

pub use cache::{BUCKETS, Digest, FlowTable, StoredFlow};
pub use config::{Config, Filter, Mode};
pub use node::{DropCounters, DropReason, FlowEvent, KernelOp, Node, NodeStats, Notify, Role};
