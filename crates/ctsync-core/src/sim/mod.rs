//! The deterministic simulator (feature `sim`): whole clusters of [`crate::Node`]s in a virtual
//! clock, as the test suites, the throughput example and the fuzz targets drive them.
//!
//! * [`Cluster`]: N nodes, each with a simulated kernel table ([`SimKernel`]), joined
//!   by a [`FaultInjector`] that loses, duplicates, delays and reorders datagrams and
//!   partitions pairs, with crashes and restarts; its invariants (caches converge, no
//!   nonce is ever used twice) are checked by [`Cluster::assert_converged`] and on every
//!   datagram sent.
//! * [`Pair`]: two nodes wired back to back with no faults, for hostile inputs and
//!   benchmarks, which need to hold the clock still and look at single datagrams.
//!
//! Everything here derives from a seed: the same seed and the same calls give the same
//! datagrams, byte for byte ([`Cluster::trace`]), so a failing seed replays exactly.
//! The simulator plays the shell: it owns the (virtual) clock, and its checks panic,
//! which is how a test fails.

#![allow(clippy::panic, clippy::unwrap_used, clippy::disallowed_methods)]

mod cluster;
mod fault;
mod kernel;
mod pair;

pub use cluster::{Cluster, SimNode};
pub use fault::{FaultInjector, Faults, Rng};
pub use kernel::{SimKernel, SimMap};
pub use pair::{Pair, pair_node};

use ctnetlink::Flow;
use ctsync_wire::codec;

/// Whether two flows carry the same replicated state (timeouts aside).
pub fn same_state(a: &Flow, b: &Flow) -> bool {
    let (mut a, mut b) = (codec::normalize(a), codec::normalize(b));
    a.timeout = None;
    b.timeout = None;
    a == b
}
