//! What a node tells about itself: one typed snapshot ([`Status`]) with every counter,
//! for `ctsync status`, its JSON and the Prometheus metrics alike.

use std::collections::BTreeMap;
use std::time::Instant;

use ctsync_wire::NodeId;
use serde::Serialize;

use crate::Role;

/// Why a datagram was dropped. Each has a counter ([`crate::Node::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DropReason {
    /// Shorter than a header and tag, or a body that does not parse.
    Malformed,
    /// Not ctsync (wrong magic).
    BadMagic,
    /// A datagram version we do not speak.
    Version,
    /// From a node that is not configured as a peer.
    UnknownNode,
    /// Claims to come from this node.
    SelfNode,
    /// The tag did not verify.
    Authentication,
    /// Seen before.
    Replay,
    /// Older than the replay window.
    TooOld,
    /// Data from an epoch not yet proven live by a challenge.
    Unverified,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::BadMagic,
        DropReason::Version,
        DropReason::UnknownNode,
        DropReason::SelfNode,
        DropReason::Authentication,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::Unverified,
    ];

    /// Its name in the status, the JSON and the metrics' `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadMagic => "badmagic",
            DropReason::Version => "version",
            DropReason::UnknownNode => "unknownnode",
            DropReason::SelfNode => "selfnode",
            DropReason::Authentication => "authentication",
            DropReason::Replay => "replay",
            DropReason::TooOld => "tooold",
            DropReason::Unverified => "unverified",
        }
    }
}

/// Counters by drop reason.
pub type DropCounters = BTreeMap<DropReason, u64>;

/// Counters of the node. Every one reaches the status and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams accepted.
    pub datagrams_received: u64,
    /// Flow messages applied to external caches.
    pub flows_received: u64,
    /// Kernel events ignored because our own writes caused them.
    pub own_events: u64,
    /// Kernel events not replicated because of the filter.
    pub filtered: u64,
    /// Kernel entries seen on a backup that a peer replicated to it (not ours to send).
    pub foreign: u64,
    /// Flows refused because a cache held `max_flows`.
    pub cache_full: u64,
    /// Flows never sent because they died within the sync delay.
    pub delayed_and_gone: u64,
    /// Streams reset because a peer fell behind.
    pub overflows: u64,
    /// Kernel overruns reported by the shell.
    pub kernel_overruns: u64,
    /// Flows not replicated because they cannot be encoded (tuples of two families).
    pub unencodable: u64,
    /// Expectations sent (created or deleted here).
    pub expectations_sent: u64,
    /// Expectations received from peers.
    pub expectations_received: u64,
    /// Replicated flows queued for writing to this node's kernel (hot standby, commit).
    pub kernel_writes: u64,
    /// Replicated flows not written because the kernel is known to hold that state.
    pub kernel_writes_skipped: u64,
    /// Hot standby: replicated flows queued to be written again at once because the
    /// kernel destroyed them behind our back (flushed, deleted, expired) while their
    /// primary has them (a write the kernel then refuses is counted where it fails).
    pub written_back: u64,
    /// Datagrams sent to the multicast group (docs/PROTOCOL.md §13).
    pub group_datagrams_sent: u64,
    /// Peers admitted to our group stream.
    pub group_joins: u64,
    /// Peers taken out of our group stream (fell behind, down, or resynchronised).
    pub group_evictions: u64,
    /// Messages sent on our group stream for the first time.
    pub group_messages_sent: u64,
    /// Messages of our group stream sent again to the group (a retransmission timeout).
    pub group_retransmitted: u64,
    /// Messages of our group stream sent again to one member alone (its `GROUP_NACK`).
    pub group_repaired: u64,
}

impl NodeStats {
    /// Each counter with its name (the JSON field and the metric's stem), in order.
    pub fn counters(&self) -> [(&'static str, u64); 22] {
        [
            ("datagrams_sent", self.datagrams_sent),
            ("datagrams_received", self.datagrams_received),
            ("flows_received", self.flows_received),
            ("own_events", self.own_events),
            ("filtered", self.filtered),
            ("foreign", self.foreign),
            ("cache_full", self.cache_full),
            ("delayed_and_gone", self.delayed_and_gone),
            ("overflows", self.overflows),
            ("kernel_overruns", self.kernel_overruns),
            ("unencodable", self.unencodable),
            ("expectations_sent", self.expectations_sent),
            ("expectations_received", self.expectations_received),
            ("kernel_writes", self.kernel_writes),
            ("kernel_writes_skipped", self.kernel_writes_skipped),
            ("written_back", self.written_back),
            ("group_datagrams_sent", self.group_datagrams_sent),
            ("group_joins", self.group_joins),
            ("group_evictions", self.group_evictions),
            ("group_messages_sent", self.group_messages_sent),
            ("group_retransmitted", self.group_retransmitted),
            ("group_repaired", self.group_repaired),
        ]
    }
}

/// What this node knows of one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its node id.
    pub id: NodeId,
    /// Heard from within the dead interval.
    pub up: bool,
    /// Its epoch, once proven live.
    pub epoch: Option<u64>,
    /// Its announced role (`None` until it said).
    pub role: Option<Role>,
    /// It says it is ready to take over.
    pub ready: bool,
    /// Our copy of its table is complete (bulk arrived, digest agreed, no repair open).
    pub synced: bool,
    /// When it was last heard from (the shell turns this into an age).
    #[serde(skip)]
    pub last_heard: Option<Instant>,
    /// Messages received from it.
    pub received: u64,
    /// Duplicates of messages received from it.
    pub duplicates: u64,
    /// Messages sent to it for the first time.
    pub sent: u64,
    /// Messages sent to it again.
    pub retransmitted: u64,
    /// Resets of our stream to it.
    pub resets: u64,
    /// Messages pending or unacknowledged in our stream to it (its lag).
    pub backlog: usize,
    /// It receives our group stream (docs/PROTOCOL.md §13).
    pub group_member: bool,
    /// We take its group stream (it sent us a `GROUP_JOIN`, no bulk transfer since).
    pub group_joined: bool,
}

/// A snapshot of a node: [`crate::Node::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node's id.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// Whether it could take over now without losing flows.
    pub ready: bool,
    /// Its epoch.
    pub epoch: u64,
    /// Flows in the internal cache (this node's own).
    pub internal_flows: usize,
    /// Flows in all external caches (the peers').
    pub external_flows: usize,
    /// Its peers, by id.
    pub peers: Vec<PeerStatus>,
    /// Its counters.
    pub stats: NodeStats,
    /// Datagrams dropped, by reason.
    pub drops: DropCounters,
}
