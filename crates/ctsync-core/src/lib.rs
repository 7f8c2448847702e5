//! The ctsync replication core: sans-IO and deterministic.
//!
//! A [`Node`] holds one ctsync instance's protocol state: the internal cache (this
//! node's kernel table), the external caches (flows owned by peers), a link to each
//! peer (handshake, packet protection, a reliable stream each way), roles and
//! readiness. It never reads a clock, opens a socket, spawns a thread or draws
//! randomness of its own:
//!
//! * inputs are calls with the current time: [`Node::handle_kernel_event`],
//!   [`Node::handle_datagram`], [`Node::handle_timeout`], [`Node::set_role`], …;
//! * outputs are pulled: [`Node::poll_transmit`] (datagrams, into the caller's buffer),
//!   [`Node::poll_kernel_op`] (writes to the kernel table), [`Node::poll_notify`], and
//!   [`Node::poll_timeout`] (when to call `handle_timeout` next).
//!
//! After any input, drain every `poll_*` until it returns `None`. Everything a node
//! chooses (challenges, transfer ids, the seed of its hash tables) derives from the seed
//! given to [`Node::new`], so the same seed and the same inputs in the same order give
//! byte-identical outputs. That is what lets the simulator (the `sim` feature:
//! [`sim::Cluster`]) run whole clusters under loss, reordering, duplication, partitions
//! and restarts in a virtual clock, and replay a failing case exactly. The protocol is
//! specified in `docs/PROTOCOL.md`; the rooms are drawn in `docs/ARCHITECTURE.md`.

pub mod cache;
pub mod config;
pub mod key;
pub mod message;
mod node;
mod shards;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod stream;

pub use cache::{BUCKETS, Digest, FlowTable, StoredFlow};
pub use config::{Config, Filter, Mode};
pub use key::{KeyHasher, Keyed};
pub use node::{ExpKey, FlowEvent, KernelOp, Node, Notify, Role};
pub use status::{DropCounters, DropReason, NodeStats, PeerStatus, Status};
