//! The node: one ctsync instance's whole protocol state, driven by inputs, answering
//! with actions. See the crate documentation for the contract.
//!
//! The rooms: [`link`] is the transport to one peer (handshake, packet protection,
//! streams, transmit assembly, its timers); [`local`] is the kernel side (events and
//! dumps into the internal cache, replicated to peers); [`external`] applies what peers
//! send to their external caches; [`transfer`] sends our table (bulk, repairs,
//! digests); [`role`] holds roles and readiness; [`timer`] the timer tables. This file
//! routes datagrams to links and drives the timers.

mod external;
mod group;
mod link;
mod local;
mod mirror;
mod role;
mod timer;
mod transfer;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Instant;

use ctnetlink::{EventKind, Expectation, Flow, FlowKey, Tuple};
use ctsync_wire::frame::Frame;
use ctsync_wire::header::{HEADER_LEN, Header};
use ctsync_wire::{ClusterSecret, NodeId, TAG_LEN, WireError, WireRole, frames};
use smallvec::SmallVec;

pub use role::Role;

use crate::cache::{FlowTable, StoredFlow};
use crate::config::{Config, Mode};
use crate::key::{KeyHasher, Keyed, SplitMix};
use crate::message::{Kind, flow_key};
use crate::status::{DropCounters, DropReason, NodeStats, PeerStatus, Status};
use external::External;
use group::Group;
use link::protect::Sealer;
use link::{DataFrame, Handshake, Link};
use mirror::KernelMirror;
use timer::{Timer, TimerTable};
use transfer::PeerSync;

/// An operation on this node's kernel table, for the shell to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// Create the flow, or update it if it exists (in compact form: decode it with
    /// [`StoredFlow::flow`]).
    Upsert(StoredFlow),
    /// Delete the flow if it exists.
    Delete(FlowKey),
    /// Reset an existing flow's timeout (hot standby keeps idle replicated flows alive;
    /// compact, like [`KernelOp::Upsert`]).
    Refresh(StoredFlow),
    /// Dump the kernel table into [`Node::begin_kernel_dump`] … [`Node::end_kernel_dump`].
    Dump,
    /// Lower the timeout of every local entry to at most this many seconds.
    ShortenTimeouts(u32),
    /// Lower these entries' timeouts: each flow carries its tuples, zone and the new
    /// timeout only (nothing else of it is written).
    Shorten(Vec<Flow>),
    /// Write the flows of these tables (create, or update those that exist): a commit
    /// of the external caches, in their compact form ([`FlowTable::into_flows`] decodes
    /// them one at a time, so a commit of 200,000 flows never holds them all decoded).
    /// A [`KernelOp::Dump`] always follows, so the shell may stop listening for the
    /// kernel's events about these writes (creating many entries costs the kernel much
    /// more while someone listens).
    Commit(Vec<FlowTable>),
    /// Create this expectation (its master flow was written before).
    ExpCreate(Box<Expectation>),
    /// Delete this expectation (by its tuple and zone) if it exists.
    ExpDelete(Box<Expectation>),
}

/// An expectation's identity: its expected tuple and zone.
pub type ExpKey = (Tuple, Option<u16>);

/// Expectations by identity, hashed by the node's seeded hasher (so that they iterate
/// in the same order in every run with the same seed).
type ExpMap<V> = hashbrown::HashMap<ExpKey, V, ahash::RandomState>;

fn exp_key(e: &Expectation) -> ExpKey {
    (e.tuple, e.zone.filter(|&z| z != 0))
}

/// What is replicated of an expectation: not the kernel's id.
fn exp_normalize(e: &Expectation) -> Expectation {
    let mut n = e.clone();
    n.id = None;
    n.other.clear();
    n
}

/// Something an operator or the daemon may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// A peer's epoch was verified and it is reachable.
    PeerUp(NodeId),
    /// A peer was not heard from for the dead interval.
    PeerDown(NodeId),
    /// A peer came back with a new epoch (it restarted).
    PeerRestarted(NodeId),
    /// A cache reached `max_flows`: flows were refused (`origin` `None`: the internal
    /// cache, else that peer's external cache).
    CacheFull {
        /// Whose flows.
        origin: Option<NodeId>,
    },
    /// A peer speaks only protocol versions `min..=max`, none of which is ours.
    IncompatiblePeer {
        /// The peer.
        peer: NodeId,
        /// Its lowest version.
        min: u8,
        /// Its highest version.
        max: u8,
    },
    /// Readiness to take over changed.
    Ready(bool),
    /// A bulk transfer to a peer finished sending.
    BulkSent {
        /// The peer.
        to: NodeId,
        /// Flows sent.
        flows: u64,
    },
    /// A bulk transfer from a peer completed here.
    BulkReceived {
        /// The peer.
        from: NodeId,
        /// Stale flows removed by it.
        swept: usize,
    },
    /// Differing digest buckets were found and repairs asked for.
    Repairing {
        /// The peer whose copy differs.
        from: NodeId,
        /// Buckets.
        buckets: usize,
    },
}

/// Flows handled per prefetch batch in [`Node::handle_kernel_events`]: enough misses to
/// overlap, few enough that the prefetched slots are still in cache when used.
const PREFETCH_BATCH: usize = 32;
/// Kernel operations the drained queue keeps room for.
const KERNEL_OPS_KEPT: usize = 64;
/// Hot standby's timeout refresh resets a replicated flow every round while its timeout
/// is shorter than twice this many rounds (see [`refresh_due`]).
const REFRESH_SPREAD: u64 = 2;

thread_local! {
    /// Where a datagram's messages are gathered before they are framed: one buffer for
    /// every node of the thread (a daemon of namespaces runs hundreds; 2 KiB each had been
    /// a router's largest allocation after its tables).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lend `f` the thread's scratch buffer (see [`SCRATCH`]; a fresh one if it is lent
/// already).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Vec::new()),
    })
}

/// Whether round `round` of hot standby's timeout refresh, every `interval_secs`, resets
/// a replicated flow whose state has content hash `hash` and whose last reported timeout
/// is `timeout`; `in_kernel`: the kernel is known to hold that state (the mirror).
///
/// A flow that may be missing from the kernel (destroyed there, written by someone
/// else, a write refused) or whose timeout is unknown or below 2 × [`REFRESH_SPREAD`]
/// rounds is reset every round: the reset writes it back if it is gone. Any other is
/// reset once in `timeout / (2 × interval)` rounds, in turn by its hash, so none comes
/// within half its timeout of expiring: an established TCP flow (five days) once in two
/// and a half days, where every two minutes cost a million kernel updates each half hour
/// on a large table, and on a host of many namespaces each update's event passes every
/// namespace's event socket; a UDP stream (120 s) once a minute, where every round had
/// been twice as many writes. Should a copy expire all the same (a late round), its
/// destroy event writes it back at once (`Node::write_back`).
pub(crate) fn refresh_due(
    round: u64,
    interval_secs: u64,
    in_kernel: bool,
    hash: u64,
    timeout: Option<u32>,
) -> bool {
    let Some(t) = timeout.filter(|_| in_kernel) else {
        return true;
    };
    let every = u64::from(t) / (2 * interval_secs.max(1));
    every < REFRESH_SPREAD || hash % every == round % every
}

/// Keepalive intervals a peer may stay silent itself while another channel's word
/// ([`Node::peer_alive`]) keeps it up: two of its keepalives may be lost.
pub(crate) const OWN_WORD_INTERVALS: u32 = 3;

/// A kernel flow event, for [`Node::handle_kernel_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    /// New, update or destroy.
    pub kind: EventKind,
    /// The flow.
    pub flow: Flow,
    /// Our own writes caused it (see [`Node::handle_kernel_event`]).
    pub ours: bool,
}

/// The node's own timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeTimer {
    /// Send our digest to every peer.
    Digest,
    /// Hot standby: reset the kernel timeouts of replicated flows.
    Refresh,
    /// Re-read the kernel table (a safety net for lost events).
    KernelResync,
    /// Readiness stops waiting for silent peers (a dead interval after start).
    Settle,
}

impl Timer for NodeTimer {
    const COUNT: usize = 4;
    fn index(self) -> usize {
        self as usize
    }
}

/// One peer: the link to it and where our copies stand.
#[derive(Debug)]
struct Peer {
    link: Link,
    sync: PeerSync,
}

/// One ctsync node. See the crate documentation.
pub struct Node {
    cfg: Config,
    epoch: u64,
    rng: SplitMix,
    /// Hashes flow keys for every table and queue of this node (seeded: see [`KeyHasher`]).
    hasher: KeyHasher,
    sealer: Sealer,
    role: Role,
    role_set: bool,
    /// Timeout refreshes done (which long-lived flows the next one resets).
    refresh_round: u64,
    /// Hot standby: the keys (hashes) of copies written back since the last refresh
    /// round ([`Node::write_back`]): each at most once a round, so that a kernel that
    /// keeps destroying one (a full table's early drop) does not make a loop of it.
    written_back_keys: HashSet<u64>,
    /// When the last round of digests went (see [`Node::digest_due_early`]).
    digest_round_at: Instant,
    /// Started as backup: the first complete table from a primary says which of the
    /// kernel's entries nobody owns (see [`Node::shorten_unclaimed`]).
    unclaimed_check: bool,
    ready: bool,
    internal: FlowTable,
    /// This node's expectations (helpers' expected connections), by tuple and zone.
    expectations: ExpMap<Expectation>,
    dump_mark: u64,
    dumping: bool,
    /// A table read was asked for while one was under way.
    dump_again: bool,
    bulk_after_dump: bool,
    delayed: VecDeque<(Instant, Keyed)>,
    /// Boxed: a B-tree node holds 11 entries inline, and a peer is near 2 KiB, so one
    /// peer unboxed cost a 21 KiB node (per router, in a daemon of many namespaces).
    peers: BTreeMap<NodeId, Box<Peer>>,
    /// The group stream and its members, with a multicast group (docs/PROTOCOL.md §13).
    group: Option<Group>,
    /// Boxed, as `peers` is.
    external: BTreeMap<NodeId, Box<External>>,
    /// Hot standby: what our kernel holds of the flows written there on peers' behalf.
    mirror: KernelMirror,
    kernel_ops: VecDeque<KernelOp>,
    notes: VecDeque<Notify>,
    timers: TimerTable<NodeTimer, { NodeTimer::COUNT }>,
    rr: usize,
    drops: DropCounters,
    stats: NodeStats,
    /// Every peer has been heard from, or a dead interval has passed since start.
    settled: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.cfg.node)
            .field("epoch", &self.epoch)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node starting now. `epoch` must be larger than any epoch this node used before
    /// (wall-clock seconds in the high bits and random low bits do that); `seed` seeds
    /// everything the node chooses: challenges, transfer ids, and its key hasher (real
    /// randomness in the daemon; fixed in simulations, where the same seed and inputs
    /// give byte-identical datagrams).
    pub fn new(
        cfg: Config,
        secret: ClusterSecret,
        epoch: u64,
        seed: u64,
        now: Instant,
    ) -> Result<Node, WireError> {
        let sealer = Sealer::new(cfg.node, epoch, secret, now)?;
        let hasher = KeyHasher::from_seed(seed);
        let peers = cfg
            .peers
            .iter()
            .filter(|&&p| p != cfg.node)
            .map(|&p| {
                let link = Link::new(p, &cfg, &hasher, now);
                let sync = PeerSync::default();
                (p, Box::new(Peer { link, sync }))
            })
            .collect();
        let mut timers = TimerTable::new();
        timers.set(NodeTimer::Digest, now + cfg.digest_interval);
        timers.set(NodeTimer::Refresh, now + cfg.refresh_interval);
        if !cfg.kernel_resync_interval.is_zero() {
            timers.set(NodeTimer::KernelResync, now + cfg.kernel_resync_interval);
        }
        timers.set(NodeTimer::Settle, now + cfg.dead_interval);
        let group = cfg.group.then(|| Group::new(&cfg, &hasher));
        Ok(Node {
            group,
            internal: FlowTable::new(&hasher, cfg.expected_flows),
            expectations: ExpMap::with_hasher(hasher.build()),
            cfg,
            epoch,
            rng: SplitMix::new(ctsync_wire::expand_seed(seed, b"challenges and ids")[0]),
            hasher,
            sealer,
            role: Role::Backup,
            role_set: false,
            refresh_round: 0,
            written_back_keys: HashSet::new(),
            digest_round_at: now,
            unclaimed_check: false,
            ready: false,
            dump_mark: 0,
            dumping: false,
            dump_again: false,
            bulk_after_dump: false,
            delayed: VecDeque::new(),
            peers,
            external: BTreeMap::new(),
            mirror: KernelMirror::default(),
            kernel_ops: VecDeque::new(),
            notes: VecDeque::new(),
            timers,
            rr: 0,
            drops: DropCounters::new(),
            stats: NodeStats::default(),
            settled: false,
        })
    }

    // ---- inputs: the operator ------------------------------------------------------

    /// Re-read the kernel table (the shell gets [`KernelOp::Dump`]).
    pub fn resync_internal(&mut self) {
        self.queue_dump();
    }

    /// Change the cluster keys while running (online rotation): send under `send` from
    /// now on, accept datagrams under it or any of `accept`. Rotating a cluster: every
    /// node accepts the new key; then every node sends with it (accepting the old); then
    /// the old one is dropped. Packet numbers go on, so no (key, nonce) pair repeats.
    pub fn set_secrets(
        &mut self,
        send: ClusterSecret,
        accept: Vec<ClusterSecret>,
    ) -> Result<(), WireError> {
        self.sealer.set_secrets(send, accept)?;
        for p in self.peers.values_mut() {
            p.link.forget_rx_keys();
        }
        Ok(())
    }

    /// Replace the replication filter and sync delay, and re-read the kernel table:
    /// flows the new filter lets through are sent, those it stops are deleted at peers.
    pub fn set_filter(&mut self, filter: crate::Filter, sync_delay: std::time::Duration) {
        self.cfg.filter = filter;
        self.cfg.sync_delay = sync_delay;
        self.queue_dump();
    }

    /// Forget the internal cache (it is rebuilt by the next dump).
    pub fn flush_internal(&mut self) {
        self.internal.clear();
        self.delayed.clear();
    }

    /// Forget every external cache. What hot standby wrote to the kernel stays known
    /// (the kernel still holds it): a resync that follows writes only what changed.
    pub fn flush_external(&mut self) {
        self.external.clear();
        for p in self.peers.values_mut() {
            p.sync.bulk_done = false;
            p.sync.refreshing = false;
        }
        self.update_ready();
    }

    // ---- inputs: the network -------------------------------------------------------

    /// A datagram from the sync link. Returns why it was dropped, if it was (also
    /// counted in [`Node::drops`]). The buffer is decrypted in place.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let r = self.receive(now, buf);
        if let Err(reason) = r {
            self.count_drop(reason);
        }
        r
    }

    fn count_drop(&mut self, reason: DropReason) {
        *self.drops.entry(reason).or_default() += 1;
    }

    /// The header of a datagram that parses, can hold a tag and is not our own: what
    /// every datagram is checked for before its sender's keys are used.
    pub(super) fn checked_header(&self, buf: &[u8]) -> Result<Header, DropReason> {
        let h = Header::parse(buf).map_err(|e| match e {
            WireError::BadMagic => DropReason::BadMagic,
            WireError::UnsupportedVersion(_) => DropReason::Version,
            _ => DropReason::Malformed,
        })?;
        if buf.len() < HEADER_LEN + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        if h.node == self.cfg.node {
            return Err(DropReason::SelfNode);
        }
        Ok(h)
    }

    /// Route a datagram to its sender's link, which opens it and handles its handshake
    /// frames; then act on what it brought.
    fn receive(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let h = self.checked_header(buf)?;
        let id = h.node;
        let me = self.cfg.node;
        let secrets = self.sealer.secrets();
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownNode)?;
        let verified = peer.link.open(&h, buf, &secrets, me)?;
        drop(secrets);
        let body = &buf[HEADER_LEN..buf.len() - TAG_LEN];
        let mut collected: SmallVec<[Frame<'_>; 4]> = SmallVec::new();
        for f in frames(body) {
            collected.push(f.map_err(|_| DropReason::Malformed)?);
        }
        self.stats.datagrams_received += 1;
        let got = peer
            .link
            .take_frames(now, &self.cfg, &h, verified, collected);
        for hs in got.handshakes {
            match hs {
                Handshake::Incompatible { min, max } => {
                    // Counted and told; the peer's epoch is never verified.
                    self.count_drop(DropReason::Version);
                    self.notes
                        .push_back(Notify::IncompatiblePeer { peer: id, min, max });
                }
                Handshake::Verified {
                    restarted,
                    announced,
                } => self.peer_verified(id, restarted, announced),
            }
        }
        if got.malformed {
            return Err(DropReason::Malformed);
        }
        if got.refused_data {
            self.count_drop(DropReason::Unverified);
        }
        // A HELLO after the HELLO_ACK that verified its epoch, in this same datagram.
        if let Some(announced) = self
            .peers
            .get_mut(&id)
            .and_then(|p| p.link.take_verified_role())
        {
            self.peer_role(id, announced);
        }
        if verified {
            self.group_feedback(id, now, &got.group_acks, &got.group_nacks);
            self.heard(id, now);
            // Roles first: they decide whether this datagram's flows reach the kernel.
            for announced in got.roles {
                self.peer_role(id, announced);
            }
            for frame in got.data {
                self.deliver_from(id, now, frame, false);
            }
            // Repairs of its group stream that it sent to us alone.
            for frame in got.group_data {
                self.deliver_from(id, now, frame, true);
            }
            if let Some(p) = self.peers.get_mut(&id)
                && p.link.role == WireRole::Primary
            {
                p.sync.was_primary = true;
            }
            self.settle(now);
            self.update_ready();
        }
        Ok(())
    }

    /// A peer's epoch was proven live: its stream to us starts over and it gets our
    /// whole table.
    fn peer_verified(&mut self, id: NodeId, restarted: bool, announced: Option<(WireRole, bool)>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.sync.refreshing = restarted && p.sync.synced();
            if !p.sync.refreshing {
                p.sync.bulk_done = false;
                p.sync.digest_ok = false;
            }
            p.sync.repairs_pending = 0;
        }
        self.notes.push_back(if restarted {
            Notify::PeerRestarted(id)
        } else {
            Notify::PeerUp(id)
        });
        if let Some(announced) = announced {
            self.peer_role(id, announced);
        }
        // Whoever (re)joins gets our whole table.
        self.start_bulk(id);
    }

    /// Peer `id` was heard at `at` on another authenticated channel that speaks for the
    /// same process: a daemon of namespaces hears every peer host on its host link
    /// (docs/PROTOCOL.md §14.4), and its namespaces' nodes then need no keepalives of
    /// their own to keep each other up. Counts as hearing the peer when its link is up
    /// and the peer's own word is not older than three keepalive
    /// intervals (a namespace gone from a host whose daemon lives says nothing more of
    /// its own: it goes down a dead interval after that); never brings a link up (that
    /// takes the peer's own proof of its epoch).
    ///
    /// The word holds until that channel's caller says it stopped
    /// ([`Node::peer_word_lost`]), or the peer's own word grows too old: a quiet node
    /// does not wake every dead interval to be told again.
    pub fn peer_alive(&mut self, id: NodeId, at: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.link.word_lost {
            // The word is back (the peer host was down or cut off): a link that went
            // down meanwhile is challenged again at once, not when its HELLOs, grown
            // far apart unanswered, would next be due.
            p.link.word_lost = false;
            if !p.link.is_live() {
                p.link.ask_again(at, &self.cfg);
            }
        }
        let own_word = self.cfg.keepalive_interval * OWN_WORD_INTERVALS;
        let Some(own) = p
            .link
            .own_heard
            .filter(|t| at.saturating_duration_since(*t) <= own_word)
        else {
            return;
        };
        if p.link.up && p.link.last_heard.is_none_or(|t| at > t) {
            p.link.heard(at, &self.cfg);
            p.link.hold_until(own + own_word + self.cfg.dead_interval);
        }
    }

    /// The channel whose word kept peer `id` up ([`Node::peer_alive`]) stopped hearing
    /// it: the peer goes down a dead interval after it was last heard, as if that word
    /// had never held it.
    pub fn peer_word_lost(&mut self, id: NodeId) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.link.word_lost = true;
        if p.link.up
            && let Some(t) = p.link.last_heard
        {
            p.link.hold_until(t + self.cfg.dead_interval);
        }
    }

    fn heard(&mut self, id: NodeId, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.link.own_heard = Some(now);
        if p.link.heard(now, &self.cfg) {
            let resync = p.sync.resync_needed;
            self.notes.push_back(Notify::PeerUp(id));
            if resync {
                self.start_bulk(id);
            }
        }
    }

    /// A DATA frame's messages, delivered in order by the peer's stream (`group`: its
    /// group stream), applied to its external cache. Every flow's key is hashed and its
    /// cache slot prefetched first: the cache misses of a datagram's flows overlap
    /// instead of being waited out one by one.
    fn deliver_from(&mut self, id: NodeId, now: Instant, frame: DataFrame, group: bool) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let d = if group {
            p.link.deliver_group(now, &self.cfg, frame)
        } else {
            p.link.deliver(now, &self.cfg, frame)
        };
        if d.reset {
            // Its new stream supersedes repairs the old one promised.
            p.sync.repairs_pending = 0;
        }
        let keys: SmallVec<[Option<Keyed>; 64]> = d
            .messages
            .iter()
            .map(|m| flow_key(m).map(|k| self.hasher.keyed(k)))
            .collect();
        if let Some(ext) = self.external.get(&id) {
            ext.table.prefetch(keys.iter().flatten());
            self.mirror.prefetch(keys.iter().flatten().map(Keyed::hash));
        }
        for (m, key) in d.messages.into_iter().zip(keys) {
            self.apply_message(id, m, key, now);
        }
    }

    // ---- timers --------------------------------------------------------------------

    /// Advance timers to `now`: liveness, delayed flows, digests, timeout refresh, rekey.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
        let dead: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| p.link.is_dead(now))
            .map(|p| p.link.id)
            .collect();
        for id in dead {
            if let Some(p) = self.peers.get_mut(&id) {
                p.link.down();
                p.sync.resync_needed = true;
                p.sync.bulk = None;
            }
            self.leave_group(id);
            self.notes.push_back(Notify::PeerDown(id));
        }
        self.group_upkeep(now);
        for ext in self.external.values_mut() {
            ext.expire(now);
        }
        // Flows that outlived the sync delay are replicated now.
        while self.delayed.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, key)) = self.delayed.pop_front() else {
                break;
            };
            self.internal.count_in(&key);
            if let Some(m) = self.internal.message(&key, true) {
                self.replicate_encoded(Some(key), Kind::FlowNew, m);
            }
        }
        if self.timers.is_due(NodeTimer::Digest, now)
            || self.digest_due_early().is_some_and(|t| t <= now)
        {
            let next = self.send_digests(now);
            self.digest_round_at = now;
            self.timers.set(NodeTimer::Digest, next);
        }
        if let Some(t) = self
            .timers
            .get(NodeTimer::KernelResync)
            .filter(|t| now >= *t)
        {
            self.timers.set(
                NodeTimer::KernelResync,
                t.max(now) + self.cfg.kernel_resync_interval,
            );
            self.queue_dump();
        }
        if self.timers.is_due(NodeTimer::Refresh, now) {
            self.timers
                .set(NodeTimer::Refresh, now + self.cfg.refresh_interval);
            self.written_back_keys = HashSet::new();
            if self.cfg.mode == Mode::HotStandby && self.role != Role::Primary {
                // Only what a primary owns is in our kernel on its behalf.
                let owners = self
                    .peers
                    .values()
                    .filter(|p| p.link.role == WireRole::Primary)
                    .filter_map(|p| self.external.get(&p.link.id));
                let round = self.refresh_round;
                let secs = self.cfg.refresh_interval.as_secs();
                let mirror = &self.mirror;
                for ext in owners {
                    self.kernel_ops.extend(
                        ext.table
                            .stored_flows_due(|key_hash, hash, timeout| {
                                refresh_due(
                                    round,
                                    secs,
                                    mirror.holds(key_hash, hash),
                                    hash,
                                    timeout,
                                )
                            })
                            .map(KernelOp::Refresh),
                    );
                }
                self.refresh_round += 1;
            }
        }
        self.update_ready();
    }

    /// The next time [`Node::handle_timeout`] (or [`Node::poll_transmit`]) has
    /// something to do: the earliest of the node's timers, the sync delay's next flow,
    /// and every link's timers (the shell may call earlier; this is a bound).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self
            .peers
            .values()
            .filter_map(|p| p.link.poll_timeout(&self.cfg));
        let group = self.group.as_ref().and_then(|g| g.poll_timeout(&self.cfg));
        self.timers
            .next()
            .into_iter()
            .chain(self.digest_due_early())
            .chain(self.delayed.front().map(|(t, _)| *t))
            .chain(links)
            .chain(group)
            .min()
    }

    // ---- outputs -------------------------------------------------------------------

    /// The next kernel operation to carry out.
    pub fn poll_kernel_op(&mut self) -> Option<KernelOp> {
        let op = self.kernel_ops.pop_front();
        if op.is_none() && self.kernel_ops.capacity() > KERNEL_OPS_KEPT {
            // Drained: the room a burst grew goes back (a router's hundred flows arriving
            // in one batch left 8 KiB of it, for each of hundreds of routers).
            self.kernel_ops = VecDeque::new();
        }
        op
    }

    /// Every kernel operation waiting, at once (the queue and its room go with them: a
    /// shell that carries out a batch takes it whole, with no copy per operation).
    pub fn take_kernel_ops(&mut self) -> VecDeque<KernelOp> {
        std::mem::take(&mut self.kernel_ops)
    }

    /// Kernel operations waiting (the shell may batch them).
    pub fn kernel_ops_pending(&self) -> usize {
        self.kernel_ops.len()
    }

    /// The next notification.
    pub fn poll_notify(&mut self) -> Option<Notify> {
        self.notes.pop_front()
    }

    /// Write the next datagram to send into `buf` (cleared first) and return its
    /// destination, or `None` when nothing is due at `now`. Call until `None` after
    /// every input. Peers take turns; with a group (docs/PROTOCOL.md §13) the group
    /// takes one too, and its datagrams go to [`ctsync_wire::GROUP`]: the shell sends
    /// them to the multicast group.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        self.sealer.maybe_rekey(now, self.cfg.rekey_interval);
        self.group_upkeep(now);
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        let n = ids.len() + usize::from(self.group.is_some());
        for i in 0..n {
            let turn = (self.rr + i) % n;
            let (sent, to) = match ids.get(turn) {
                Some(&id) => (self.transmit_to(now, id, buf), id),
                None => (self.transmit_group(now, buf), ctsync_wire::GROUP),
            };
            if sent {
                self.rr = (self.rr + i + 1) % n.max(1);
                self.stats.datagrams_sent += 1;
                return Some(to);
            }
        }
        None
    }

    /// One datagram to `id`, if anything is due: paced bulk flows are fed to its stream
    /// first, its link writes the frames, and the sealer seals them.
    fn transmit_to(&mut self, now: Instant, id: NodeId, buf: &mut Vec<u8>) -> bool {
        self.pump_bulk(id);
        let announce = (self.role.wire(), self.ready);
        let generation = self.sealer.generation();
        let repairs = self.group.as_ref().is_some_and(|g| g.has_repairs(id));
        let Some(p) = self.peers.get_mut(&id) else {
            return false;
        };
        let written = with_scratch(|scratch| {
            p.link.write_datagram(
                now,
                &self.cfg,
                announce,
                generation,
                &mut self.rng,
                scratch,
                buf,
            )
        });
        let traffic = match written {
            Some(traffic) => traffic,
            None if repairs && p.link.is_live() => {
                // Only group repairs are due to it: a datagram of their own.
                buf.clear();
                buf.resize(HEADER_LEN, 0);
                ctsync_wire::FrameWriter::new(buf).alive(announce.0, announce.1);
                true
            }
            None => return false,
        };
        if traffic && repairs {
            // Group messages it alone asked for again (docs/PROTOCOL.md §13.2).
            self.write_group_repairs(now, id, buf);
        }
        if !self.sealer.seal(now, traffic, buf, id) {
            return false;
        }
        if let Some(p) = self.peers.get_mut(&id) {
            p.link.sent(now, &self.cfg);
        }
        true
    }

    // ---- introspection -------------------------------------------------------------

    /// Drop counters by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Node counters.
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats;
        if let Some(g) = &self.group {
            s.group_messages_sent = g.send.stats.sent;
            s.group_retransmitted = g.send.stats.retransmitted;
        }
        s
    }

    /// A snapshot of this node: role, readiness, caches, peers and every counter.
    pub fn status(&self) -> Status {
        Status {
            node: self.cfg.node,
            role: self.role,
            ready: self.ready,
            epoch: self.epoch,
            internal_flows: self.internal.len(),
            external_flows: self.external_len(),
            peers: self
                .peers
                .values()
                .map(|p| PeerStatus {
                    group_member: self.group.as_ref().is_some_and(|g| g.is_member(p.link.id)),
                    ..p.link.status(p.sync.synced())
                })
                .collect(),
            stats: self.stats(),
            drops: self.drops.clone(),
        }
    }

    /// The internal cache.
    pub fn internal(&self) -> &FlowTable {
        &self.internal
    }

    /// The external cache of flows owned by `origin`.
    pub fn external(&self, origin: NodeId) -> Option<&FlowTable> {
        self.external.get(&origin).map(|e| &e.table)
    }

    /// Peers counted as up (cheap: [`Node::status`] builds every peer's whole view).
    pub fn peers_up(&self) -> usize {
        self.peers.values().filter(|p| p.link.up).count()
    }

    /// Each peer, and when it was last heard if it is up (cheap, for a daemon that asks
    /// after every input: see [`Node::peer_alive`]).
    pub fn peers_heard(&self) -> impl Iterator<Item = (NodeId, Option<Instant>)> + '_ {
        self.peers
            .values()
            .map(|p| (p.link.id, p.link.last_heard.filter(|_| p.link.up)))
    }

    /// Flows in all external caches.
    pub fn external_len(&self) -> usize {
        self.external.values().map(|e| e.table.len()).sum()
    }

    /// Replicated flows this node knows its kernel holds as written (hot standby).
    pub fn kernel_known(&self) -> usize {
        self.mirror.len()
    }

    /// A kernel write of this flow (an upsert the core queued) failed: what the kernel
    /// holds of it is unknown, and the next message or transfer that brings it writes
    /// it again.
    pub fn kernel_write_failed(&mut self, key: &FlowKey) {
        self.mirror.forget(self.hasher.hash(key));
    }

    /// This node's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The external cache of `origin`, writable: the simulator makes caches diverge
    /// behind the protocol's back with it ([`crate::sim::Cluster::tamper`]).
    #[cfg(feature = "sim")]
    pub(crate) fn external_mut(&mut self, origin: NodeId) -> Option<&mut FlowTable> {
        self.external.get_mut(&origin).map(|e| &mut e.table)
    }

    /// Whether a stream from any peer has a gap outstanding (for the simulator).
    #[cfg(feature = "sim")]
    pub(crate) fn has_stream_gap(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.link.recv.has_gap() || p.link.group_recv.has_gap())
    }

    /// The packet number the next datagram will carry (its nonce).
    pub fn next_packet(&self) -> u64 {
        self.sealer.next_packet()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Instant;

    use ctnetlink::{Tuple, ipproto};
    use ctsync_wire::{Cipher, ClusterSecret};

    use super::{Config, KERNEL_OPS_KEPT, KernelOp, Node, refresh_due};

    #[test]
    #[allow(clippy::disallowed_methods)] // a test plays the shell, which owns the clock
    fn a_drained_kernel_queue_gives_back_a_bursts_room() {
        let secret = ClusterSecret::new(&[0x5a; 32], Cipher::ChaCha20Poly1305).unwrap();
        let mut n = Node::new(Config::new(1, vec![1, 2]), secret, 1, 1, Instant::now()).unwrap();
        let t = Tuple::ports(
            ipproto::TCP,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            1024,
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            443,
        );
        let key = ctnetlink::Flow::new(t, t.inverse()).key();
        for _ in 0..1000 {
            n.kernel_ops.push_back(KernelOp::Delete(key));
        }
        let mut drained = 0;
        while n.poll_kernel_op().is_some() {
            drained += 1;
        }
        assert_eq!(drained, 1000);
        assert!(n.kernel_ops.capacity() <= KERNEL_OPS_KEPT);
    }

    /// Over `rounds` consecutive rounds from `first`, how often a flow is reset.
    fn resets(first: u64, rounds: u64, in_kernel: bool, hash: u64, timeout: Option<u32>) -> u64 {
        (first..first + rounds)
            .filter(|&r| refresh_due(r, 30, in_kernel, hash, timeout))
            .count() as u64
    }

    #[test]
    fn a_flow_is_reset_once_in_half_its_timeout_unless_it_may_be_gone() {
        for hash in [0, 7, 12_345, u64::MAX] {
            // Short or unknown timeouts: every round.
            assert_eq!(resets(3, 10, true, hash, Some(60)), 10);
            assert_eq!(resets(3, 10, true, hash, Some(119)), 10);
            assert_eq!(resets(3, 10, true, hash, None), 10);
            // A UDP stream's 120 s: once in 2 rounds (a minute); 180 s, once in 3.
            assert_eq!(resets(3, 10, true, hash, Some(120)), 5);
            assert_eq!(resets(4, 9, true, hash, Some(180)), 3);
            // 240 s: once in 4 rounds; an hour: once in 60 (within 30 min of writing).
            assert_eq!(resets(5, 4, true, hash, Some(240)), 1);
            assert_eq!(resets(5, 60, true, hash, Some(3600)), 1);
            assert_eq!(resets(5, 120, true, hash, Some(3600)), 2);
            // Five days: once in 7,200 rounds (2.5 days).
            assert_eq!(resets(9, 7200, true, hash, Some(432_000)), 1);
            // Not known to be in the kernel: every round, whatever its timeout.
            assert_eq!(resets(3, 10, false, hash, Some(432_000)), 10);
        }
    }
}
