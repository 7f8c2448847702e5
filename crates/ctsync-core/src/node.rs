//! The node: one ctsync instance's whole protocol state, driven by inputs, answering
//! with actions. See the crate documentation for the contract.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use ctnetlink::{EventKind, Expectation, Flow, FlowKey, Tuple};
use ctsync_wire::frame::{DataMessages, Frame, FrameWriter};
use ctsync_wire::header::{HEADER_LEN, Header, VERSION};
use ctsync_wire::{
    ClusterSecret, Message, NodeId, ReplayError, TAG_LEN, TrafficKey, WireError, WireRole, frames,
};

use smallvec::SmallVec;

use crate::cache::{BUCKETS, FlowTable, Keyed, StoredFlow, Upsert, state_message};
use crate::config::{Config, Mode};
use crate::peer::{BulkOut, Peer, generation_of, key_id_of};
use crate::stream::{Encoded, Kind};

/// What this node does for the cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// It carries the traffic; its kernel table is the truth.
    Primary,
    /// It stands by with a copy of the primary's table.
    Backup,
    /// Neither (keepalived FAULT).
    Fault,
}

impl Role {
    fn wire(self) -> WireRole {
        match self {
            Role::Primary => WireRole::Primary,
            Role::Backup => WireRole::Backup,
            Role::Fault => WireRole::Fault,
        }
    }
}

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

/// An expectation a peer told us about.
#[derive(Debug, Clone)]
struct ExtExp {
    exp: Expectation,
    /// The transfer mark that last mentioned it (a bulk sweeps the others).
    mark: u64,
    /// When it expires, by its timeout (a lost deletion cannot leave it forever).
    until: Option<Instant>,
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

/// Why a datagram was dropped. Each has a counter ([`Node::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// From an epoch older than the peer's current one.
    StaleEpoch,
    /// Data from an epoch not yet proven live by a challenge.
    Unverified,
}

/// Counters by drop reason.
pub type DropCounters = BTreeMap<DropReason, u64>;

#[derive(Debug, Default)]
struct External {
    table: FlowTable,
    mark: u64,
    bulk_mark: Option<u64>,
    bucket_marks: HashMap<u16, u64>,
    /// Buckets whose repair ended, swept together when the last one ends.
    ended: Vec<(u16, u64)>,
    /// The peer's expectations (connections its helpers expect, e.g. FTP data).
    expectations: HashMap<ExpKey, ExtExp>,
}

/// A small deterministic generator (SplitMix64) for challenges and transfer ids;
/// seeded by the shell from real randomness.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Counters of the node (for `ctsync status` and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
}

/// One ctsync node. See the crate documentation.
pub struct Node {
    cfg: Config,
    secret: ClusterSecret,
    epoch: u64,
    rng: SplitMix,
    packet: u64,
    tx_key: TrafficKey,
    handshake_key: TrafficKey,
    /// Further cluster keys accepted from peers (a rotation's overlap period).
    accept: Vec<ClusterSecret>,
    key_started: Instant,
    key_packets: u64,
    role: Role,
    role_set: bool,
    ready: bool,
    internal: FlowTable,
    /// This node's expectations (helpers' expected connections), by tuple and zone.
    expectations: HashMap<ExpKey, Expectation>,
    dump_mark: u64,
    dumping: bool,
    bulk_after_dump: bool,
    delayed: VecDeque<(Instant, Keyed)>,
    peers: BTreeMap<NodeId, Peer>,
    external: BTreeMap<NodeId, External>,
    kernel_ops: VecDeque<KernelOp>,
    notes: VecDeque<Notify>,
    next_digest: Instant,
    next_refresh: Instant,
    next_kernel_resync: Option<Instant>,
    rr: usize,
    drops: DropCounters,
    stats: NodeStats,
    scratch: Vec<u8>,
    started: Instant,
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

/// Flows handled per prefetch batch in [`Node::handle_kernel_events`]: enough misses to
/// overlap, few enough that the prefetched slots are still in cache when used.
const PREFETCH_BATCH: usize = 32;

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

/// The hashed key of the flow a message is about, if any.
fn flow_keyed(m: &Message) -> Option<Keyed> {
    crate::stream::flow_key(m).map(Keyed::new)
}

fn wire_role_primary(r: WireRole) -> bool {
    r == WireRole::Primary
}

impl Node {
    /// A node starting now. `epoch` must be larger than any epoch this node used before
    /// (wall-clock seconds in the high bits and random low bits do that); `seed` seeds
    /// challenges and ids (real randomness in the daemon, fixed in simulations).
    pub fn new(
        cfg: Config,
        secret: ClusterSecret,
        epoch: u64,
        seed: u64,
        now: Instant,
    ) -> Result<Node, WireError> {
        let tx_key = secret.traffic_key(cfg.node, epoch, 1)?;
        let handshake_key = secret.traffic_key(cfg.node, epoch, 0)?;
        let peers = cfg
            .peers
            .iter()
            .filter(|&&p| p != cfg.node)
            .map(|&p| (p, Peer::new(p, cfg.window, cfg.queue_limit)))
            .collect();
        let expected_flows = cfg.expected_flows;
        Ok(Node {
            next_digest: now + cfg.digest_interval,
            next_refresh: now + cfg.refresh_interval,
            next_kernel_resync: (!cfg.kernel_resync_interval.is_zero())
                .then(|| now + cfg.kernel_resync_interval),
            cfg,
            secret,
            epoch,
            rng: SplitMix(seed),
            packet: 0,
            tx_key,
            handshake_key,
            accept: Vec::new(),
            key_started: now,
            key_packets: 0,
            role: Role::Backup,
            role_set: false,
            ready: false,
            internal: FlowTable::with_capacity(expected_flows),
            expectations: HashMap::new(),
            dump_mark: 0,
            dumping: false,
            bulk_after_dump: false,
            delayed: VecDeque::new(),
            peers,
            external: BTreeMap::new(),
            kernel_ops: VecDeque::new(),
            notes: VecDeque::new(),
            rr: 0,
            drops: DropCounters::new(),
            stats: NodeStats::default(),
            scratch: Vec::with_capacity(2048),
            started: now,
            settled: false,
        })
    }

    // ---- inputs: the kernel ------------------------------------------------------

    /// A kernel event. `ours` is true when our own writes caused it (the event's port id
    /// is one of the daemon's sockets): such events are not replicated.
    pub fn handle_kernel_event(&mut self, now: Instant, kind: EventKind, flow: &Flow, ours: bool) {
        self.kernel_event(now, kind, flow, ours, None);
    }

    /// Kernel events in a batch (those of one read from the event socket), in order: the
    /// same as [`Node::handle_kernel_event`] on each, faster on a large table (their keys
    /// are hashed and their cache slots prefetched before any is applied, so the cache
    /// misses overlap).
    pub fn handle_kernel_events(&mut self, now: Instant, events: &[FlowEvent]) {
        for chunk in events.chunks(PREFETCH_BATCH) {
            let keys: SmallVec<[Option<Keyed>; PREFETCH_BATCH]> = chunk
                .iter()
                .map(|e| (!e.ours).then(|| Keyed::new(e.flow.key())))
                .collect();
            keys.iter()
                .flatten()
                .for_each(|k| self.internal.prefetch(k));
            for (e, key) in chunk.iter().zip(keys) {
                self.kernel_event(now, e.kind, &e.flow, e.ours, key);
            }
        }
    }

    /// One kernel event; `key` is its flow's, hashed, if already at hand.
    fn kernel_event(
        &mut self,
        now: Instant,
        kind: EventKind,
        flow: &Flow,
        ours: bool,
        key: Option<Keyed>,
    ) {
        if ours {
            self.stats.own_events += 1;
            return;
        }
        let key = key.unwrap_or_else(|| Keyed::new(flow.key()));
        match kind {
            EventKind::New | EventKind::Update => {
                self.local_upsert(now, flow, key, kind == EventKind::New)
            }
            EventKind::Destroy => self.local_remove(&key),
        }
    }

    /// A kernel expectation event (a helper, e.g. FTP's, expects a related connection).
    /// Replicated when its master flow is: a backup that takes over then lets the
    /// expected connection in as RELATED. `ours` as for [`Node::handle_kernel_event`].
    pub fn handle_expectation_event(
        &mut self,
        _now: Instant,
        kind: EventKind,
        exp: &Expectation,
        ours: bool,
    ) {
        if ours {
            self.stats.own_events += 1;
            return;
        }
        let key = exp_key(exp);
        match kind {
            EventKind::New | EventKind::Update => {
                let master = FlowKey {
                    orig: exp.master,
                    zone: key.1.unwrap_or(0),
                };
                if !self.internal.is_counted(&master.into()) {
                    // Its master is not replicated (filtered, or held by the sync
                    // delay): the expectation would be of no use to a peer.
                    self.stats.filtered += 1;
                    return;
                }
                let n = exp_normalize(exp);
                let same = |o: &Expectation| {
                    let mut o = o.clone();
                    o.timeout = n.timeout;
                    o == n
                };
                if self.expectations.get(&key).is_some_and(same) {
                    // Only its timeout moved (a re-read of the table).
                    return;
                }
                self.expectations.insert(key, n.clone());
                self.stats.expectations_sent += 1;
                self.replicate(Message::ExpNew(Box::new(n)));
            }
            EventKind::Destroy => {
                if self.expectations.remove(&key).is_some() {
                    self.stats.expectations_sent += 1;
                    self.replicate(Message::ExpDelete(key.0, key.1));
                }
            }
        }
    }

    /// Every expectation the kernel holds (read after each table dump): new ones are
    /// sent, and those we hold that the kernel no longer has (a lost event) are deleted
    /// at the peers.
    pub fn expectations_dumped(&mut self, now: Instant, all: &[Expectation]) {
        let seen: std::collections::HashSet<ExpKey> = all.iter().map(exp_key).collect();
        let gone: Vec<Expectation> = self
            .expectations
            .iter()
            .filter(|(k, _)| !seen.contains(k))
            .map(|(_, e)| e.clone())
            .collect();
        for e in &gone {
            self.handle_expectation_event(now, EventKind::Destroy, e, false);
        }
        for e in all {
            self.handle_expectation_event(now, EventKind::New, e, false);
        }
    }

    /// The kernel's event socket overran: events were lost. The table is re-read
    /// (the shell gets [`KernelOp::Dump`]); anti-entropy repairs peers meanwhile.
    pub fn handle_kernel_overrun(&mut self, _now: Instant) {
        self.stats.kernel_overruns += 1;
        self.kernel_ops.push_back(KernelOp::Dump);
    }

    /// A kernel dump starts: what it does not mention is gone at [`Node::end_kernel_dump`].
    pub fn begin_kernel_dump(&mut self, _now: Instant) {
        self.dump_mark += 1;
        self.dumping = true;
    }

    /// One flow of a kernel dump.
    pub fn handle_dumped(&mut self, now: Instant, flow: &Flow) {
        self.local_upsert(now, flow, Keyed::new(flow.key()), false);
    }

    /// The dump is complete: flows it did not mention are removed (and deletions sent).
    pub fn end_kernel_dump(&mut self, now: Instant) {
        if !self.dumping {
            return;
        }
        self.dumping = false;
        for key in self.internal.sweep(self.dump_mark, None) {
            // A bulk transfer follows (with its sweep): it says this already.
            if !self.bulk_after_dump {
                self.replicate(Message::FlowDelete(key));
            }
        }
        if self.bulk_after_dump {
            self.bulk_after_dump = false;
            let ids: Vec<NodeId> = self.peers.keys().copied().collect();
            for id in ids {
                self.start_bulk(id, now);
            }
        }
    }

    /// A flow the kernel created or changed; `key` is its key, hashed once: every lookup
    /// here, in the caches and in each peer's queue, uses it.
    fn local_upsert(&mut self, now: Instant, flow: &Flow, key: Keyed, new: bool) {
        if !self.cfg.filter.accepts(flow) {
            self.stats.filtered += 1;
            // A flow that stops passing the filter (e.g. it left its zone) is gone for
            // the peers.
            if self.internal.remove(&key) {
                self.replicate(Message::FlowDelete(*key.key()));
            }
            return;
        }
        if self.role != Role::Primary && self.external.values().any(|e| e.table.contains(&key)) {
            // A flow a peer replicated to us (hot standby wrote it to our kernel; a dump
            // after an overrun or a restart finds it there): it is the peer's, not ours.
            self.stats.foreign += 1;
            if self.internal.remove(&key) {
                self.replicate(Message::FlowDelete(*key.key()));
            }
            return;
        }
        let hold =
            self.cfg.sync_delay > std::time::Duration::ZERO && !self.internal.is_counted(&key);
        if self.internal.len() >= self.cfg.max_flows && !self.internal.contains(&key) {
            if self.stats.cache_full == 0 {
                self.notes.push_back(Notify::CacheFull { origin: None });
            }
            self.stats.cache_full += 1;
            return;
        }
        let (outcome, state) = self
            .internal
            .upsert_state(&key, flow, self.dump_mark, !hold);
        if hold {
            if outcome == Upsert::New {
                self.delayed.push_back((now + self.cfg.sync_delay, key));
            }
            return;
        }
        if self.dumping && self.bulk_after_dump {
            // The bulk transfer after this dump carries every flow: sending each one
            // now as well would double a takeover's work.
            return;
        }
        let kind = match outcome {
            Upsert::Same => return,
            Upsert::New if new => Kind::FlowNew,
            Upsert::Changed | Upsert::New => Kind::FlowUpdate,
        };
        // The state upsert just encoded, with the timeout spliced in: no second encoding.
        if let Some(m) = state_message(state, kind == Kind::FlowNew, flow.timeout) {
            self.replicate_encoded(Some(key), kind, m);
        }
    }

    fn local_remove(&mut self, key: &Keyed) {
        let counted = self.internal.is_counted(key);
        if self.internal.remove(key) {
            if counted {
                self.replicate(Message::FlowDelete(*key.key()));
            } else {
                self.stats.delayed_and_gone += 1;
            }
        }
    }

    /// Queue a message on every peer's stream (the live ones; a down peer is
    /// resynchronised when it comes back).
    fn replicate(&mut self, m: Message) {
        if let Message::FlowNew(f) | Message::FlowUpdate(f) = &m
            && !ctsync_wire::codec::encodable(f)
        {
            // Tuples of two families: no kernel makes such a flow.
            self.stats.unencodable += 1;
            return;
        }
        // Encoded once, shared by every peer's queue.
        self.replicate_encoded(flow_keyed(&m), Kind::of(&m), crate::stream::encode(&m));
    }

    /// Queue an encoded message on every live peer's stream (see [`Node::replicate`]).
    fn replicate_encoded(&mut self, key: Option<Keyed>, kind: Kind, bytes: Encoded) {
        let mut overflowed = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if p.epoch.is_none() || !p.up || p.resync_needed {
                continue;
            }
            if !p.send.push_encoded(key, kind, bytes.clone()) {
                overflowed.push(*id);
            }
        }
        for id in overflowed {
            // It fell behind what the queue holds: a new stream and a bulk transfer, so
            // nothing is silently lost.
            self.stats.overflows += 1;
            self.start_bulk(id, self.started);
        }
    }

    // ---- inputs: the operator and keepalived --------------------------------------

    /// Change role (keepalived's MASTER/BACKUP/FAULT, or the operator).
    pub fn set_role(&mut self, now: Instant, role: Role) {
        if role == self.role && self.role_set {
            return;
        }
        let first = !self.role_set;
        let old = self.role;
        self.role_set = true;
        self.role = role;
        match role {
            Role::Primary => {
                // Commit what peers told us (hot standby: already in the kernel), then
                // take the kernel's table as ours (the dump) and send it to everyone.
                if self.cfg.mode == Mode::Commit {
                    // The external caches are dropped below: their flows move to the
                    // kernel instead of being copied.
                    let (tables, exps): (Vec<FlowTable>, Vec<_>) = self
                        .primary_owners()
                        .into_iter()
                        .filter_map(|o| self.external.remove(&o))
                        .map(|e| (e.table, e.expectations))
                        .unzip();
                    self.kernel_ops.push_back(KernelOp::Commit(tables));
                    // After their masters.
                    self.kernel_ops.extend(
                        exps.into_iter()
                            .flat_map(|m| m.into_values())
                            .map(|x| KernelOp::ExpCreate(Box::new(x.exp))),
                    );
                    self.kernel_ops.push_back(KernelOp::Dump);
                } else {
                    self.kernel_ops.push_back(KernelOp::Dump);
                }
                self.external.clear();
                for p in self.peers.values_mut() {
                    p.bulk_done = false;
                    p.digest_ok = false;
                }
                self.bulk_after_dump = true;
            }
            Role::Backup | Role::Fault if first || old == Role::Primary => {
                // Whatever the kernel holds may be stale (our own flows from when we were
                // primary, or flows a previous run of ctsync replicated that the primary
                // has since closed): let it expire soon. The primary's bulk transfer,
                // asked for next, re-asserts every live flow with its real timeout.
                self.kernel_ops
                    .push_back(KernelOp::ShortenTimeouts(self.cfg.shorten_timeout));
                self.request_resync(now);
            }
            Role::Backup | Role::Fault => {
                // Between backup and fault the caches stay valid: asking for a resync
                // here would drop readiness, and with keepalived's track_file that turns
                // FAULT -> not ready -> FAULT into a loop.
            }
        }
        self.update_ready();
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Write every flow of every external cache to the kernel ([`KernelOp::Commit`],
    /// then a [`KernelOp::Dump`]).
    pub fn commit(&mut self) -> usize {
        let tables: Vec<FlowTable> = self
            .primary_owners()
            .iter()
            .filter_map(|o| self.external.get(o))
            .map(|e| e.table.clone())
            .collect();
        let n = tables.iter().map(FlowTable::len).sum();
        self.kernel_ops.push_back(KernelOp::Commit(tables));
        let exps: Vec<KernelOp> = self
            .primary_owners()
            .iter()
            .filter_map(|o| self.external.get(o))
            .flat_map(|e| e.expectations.values())
            .map(|x| KernelOp::ExpCreate(Box::new(x.exp.clone())))
            .collect();
        self.kernel_ops.extend(exps);
        self.kernel_ops.push_back(KernelOp::Dump);
        n
    }

    /// Peers whose tables a commit writes: only what a primary owned (other tables may
    /// hold stale copies, see `apply_message`).
    fn primary_owners(&self) -> Vec<NodeId> {
        self.peers
            .values()
            .filter(|p| p.was_primary)
            .map(|p| p.id)
            .collect()
    }

    /// Ask every peer for its whole table.
    pub fn request_resync(&mut self, now: Instant) {
        let mut full = Vec::new();
        for p in self.peers.values_mut() {
            if p.epoch.is_some() && p.up {
                p.bulk_done = false;
                if !p.send.push(Message::ResyncRequest) {
                    full.push(p.id);
                }
            }
        }
        for id in full {
            // Our queue to it was full: a fresh stream (with our bulk), then the request.
            self.start_bulk(id, now);
            if let Some(p) = self.peers.get_mut(&id) {
                p.send.push(Message::ResyncRequest);
            }
        }
        self.update_ready();
    }

    /// Send our whole table to every peer.
    pub fn bulk(&mut self, now: Instant) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.start_bulk(id, now);
        }
    }

    /// Re-read the kernel table (the shell gets [`KernelOp::Dump`]).
    pub fn resync_internal(&mut self) {
        self.kernel_ops.push_back(KernelOp::Dump);
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
        let g = self.tx_key.generation();
        self.tx_key = send.traffic_key(self.cfg.node, self.epoch, g)?;
        self.handshake_key = send.traffic_key(self.cfg.node, self.epoch, 0)?;
        self.secret = send;
        self.accept = accept;
        for p in self.peers.values_mut() {
            p.forget_rx_keys();
            p.rx_secret = 0;
        }
        Ok(())
    }

    /// Replace the replication filter and sync delay, and re-read the kernel table:
    /// flows the new filter lets through are sent, those it stops are deleted at peers.
    pub fn set_filter(&mut self, filter: crate::Filter, sync_delay: std::time::Duration) {
        self.cfg.filter = filter;
        self.cfg.sync_delay = sync_delay;
        self.kernel_ops.push_back(KernelOp::Dump);
    }

    /// Forget the internal cache (it is rebuilt by the next dump).
    pub fn flush_internal(&mut self) {
        self.internal.clear();
        self.delayed.clear();
    }

    /// Forget every external cache.
    pub fn flush_external(&mut self) {
        self.external.clear();
        for p in self.peers.values_mut() {
            p.bulk_done = false;
        }
        self.update_ready();
    }

    fn start_bulk(&mut self, id: NodeId, _now: Instant) {
        let bulk_id = self.rng.next() as u32;
        let keys = self.internal.counted_keys();
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if p.epoch.is_none() || !p.up {
            p.resync_needed = true;
            return;
        }
        // A fresh stream generation: whatever the old one had in flight is superseded,
        // our repair requests to it included (the next digest asks again).
        p.send.reset();
        p.repairs_pending = 0;
        p.resync_needed = false;
        p.send.push(Message::BulkBegin { id: bulk_id });
        p.bulk = Some(BulkOut {
            id: bulk_id,
            keys,
            sent: 0,
        });
    }

    /// Feed paced bulk flows into a peer's stream while its window has room.
    fn pump_bulk(&mut self, id: NodeId) {
        let internal = &self.internal;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(bulk) = p.bulk.as_mut() else { return };
        if p.send.backlog() >= self.cfg.window {
            return;
        }
        for _ in 0..self.cfg.bulk_step {
            let Some(key) = bulk.keys.pop() else { break };
            // Read now, not when the transfer began: the latest state goes out.
            if let Some(m) = internal.message(&key, false) {
                p.send.push_transfer(key, m);
                bulk.sent += 1;
            }
        }
        if bulk.keys.is_empty() {
            let (bulk_id, sent) = (bulk.id, bulk.sent);
            p.bulk = None;
            // Expectations after every flow (their masters), inside the transfer so that
            // its end sweeps those the receiver holds and we no longer have.
            for e in self.expectations.values() {
                p.send.push(Message::ExpNew(Box::new(e.clone())));
            }
            p.send.push(Message::BulkEnd {
                id: bulk_id,
                count: sent,
            });
            let d = internal.digest();
            p.send.push(Message::Digest {
                count: d.count,
                hashes: d.hashes.to_vec(),
            });
            self.notes.push_back(Notify::BulkSent {
                to: id,
                flows: sent,
            });
        }
    }

    // ---- inputs: the network -------------------------------------------------------

    /// A datagram from the sync link. Returns why it was dropped, if it was (also
    /// counted in [`Node::drops`]). The buffer is decrypted in place.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let r = self.receive(now, buf);
        if let Err(reason) = r {
            *self.drops.entry(reason).or_default() += 1;
        }
        r
    }

    fn receive(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
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
        let secrets: SmallVec<[&ClusterSecret; 4]> = std::iter::once(&self.secret)
            .chain(self.accept.iter())
            .collect();
        let peer = self.peers.get_mut(&h.node).ok_or(DropReason::UnknownNode)?;
        let verified = peer.epoch == Some(h.epoch);
        if peer.epoch.is_some_and(|e| h.epoch < e) {
            return Err(DropReason::StaleEpoch);
        }
        // Check the replay window before decrypting; update it only after the tag verified.
        let replay_err = |e: ReplayError| match e {
            ReplayError::Duplicate => DropReason::Replay,
            ReplayError::TooOld => DropReason::TooOld,
        };
        if verified {
            peer.replay.check(h.packet).map_err(replay_err)?;
        } else {
            if h.key_id != 0 {
                return Err(DropReason::Unverified);
            }
            if let Some((e, w)) = &peer.candidate {
                if *e == h.epoch {
                    w.check(h.packet).map_err(replay_err)?;
                } else if *e > h.epoch {
                    return Err(DropReason::StaleEpoch);
                }
            }
        }
        let generation = if verified {
            generation_of(h.key_id, peer.rx_generation)
        } else {
            0
        };
        if verified && generation > peer.rx_generation.saturating_add(2) {
            return Err(DropReason::Authentication);
        }
        // During a key rotation more than one cluster key is accepted: the one this peer
        // used last is tried first; a failed open leaves the buffer unspecified, so the
        // others get a fresh copy.
        let mut opened = None;
        if secrets.len() == 1 {
            let key = peer
                .rx_key(secrets[0], h.epoch, generation)
                .map_err(|_| DropReason::Authentication)?;
            if key.open(h.packet, buf, HEADER_LEN).is_ok() {
                opened = Some(0);
            }
        } else {
            let original = buf.to_vec();
            let first = peer.rx_secret.min(secrets.len() - 1);
            for i in std::iter::once(first).chain((0..secrets.len()).filter(|&i| i != first)) {
                if i != peer.rx_secret {
                    peer.forget_rx_keys();
                    peer.rx_secret = i;
                }
                buf.copy_from_slice(&original);
                let Ok(key) = peer.rx_key(secrets[i], h.epoch, generation) else {
                    continue;
                };
                if key.open(h.packet, buf, HEADER_LEN).is_ok() {
                    opened = Some(i);
                    break;
                }
            }
        }
        drop(secrets);
        if opened.is_none() {
            return Err(DropReason::Authentication);
        }
        let body = &buf[HEADER_LEN..buf.len() - TAG_LEN];
        if verified {
            peer.replay.insert(h.packet);
            peer.rx_generation = peer.rx_generation.max(generation);
        } else {
            match &mut peer.candidate {
                Some((e, w)) if *e == h.epoch => w.insert(h.packet),
                _ => {
                    let mut w = ctsync_wire::ReplayWindow::default();
                    w.insert(h.packet);
                    peer.candidate = Some((h.epoch, w));
                }
            }
        }
        // Frames: collect first (the body borrows the buffer).
        let mut collected: SmallVec<[Frame<'_>; 4]> = SmallVec::new();
        for f in frames(body) {
            match f {
                Ok(f) => collected.push(f),
                Err(_) => return Err(DropReason::Malformed),
            }
        }
        self.stats.datagrams_received += 1;
        let id = h.node;
        let mut data: Vec<(u32, u32, Vec<Option<Message>>)> = Vec::new();
        let mut roles: Vec<(WireRole, bool)> = Vec::new();
        let mut refused_data = false;
        for f in collected {
            match f {
                Frame::Hello {
                    challenge,
                    min_version,
                    max_version,
                    role,
                    ready,
                } => {
                    if !(min_version..=max_version).contains(&VERSION) {
                        // A peer that cannot speak our version: no answer (its epoch is
                        // never verified, so nothing it sends counts), counted and told.
                        *self.drops.entry(DropReason::Version).or_default() += 1;
                        self.notes.push_back(Notify::IncompatiblePeer {
                            peer: id,
                            min: min_version,
                            max: max_version,
                        });
                        continue;
                    }
                    let p = self.peer(id);
                    p.hello_ack_due = Some(challenge);
                    if verified {
                        roles.push((role, ready));
                    } else {
                        // Not trusted until the epoch is proven live (a replayed HELLO
                        // must not set a role that decides what reaches the kernel).
                        p.pending_role = Some((h.epoch, role, ready));
                    }
                }
                Frame::HelloAck {
                    echo, generation, ..
                } => {
                    let p = self.peer(id);
                    if p.challenge == Some(echo) {
                        if verified {
                            // Proven live again after being down.
                            p.rx_generation = p.rx_generation.max(generation);
                            p.reverify = false;
                            p.challenge = None;
                        } else {
                            self.verify_epoch(id, h.epoch, generation, now);
                        }
                    }
                }
                _ if !verified => refused_data = true,
                Frame::Alive { role, ready } => roles.push((role, ready)),
                Frame::Ack {
                    generation,
                    next,
                    ranges,
                } => {
                    self.peer(id).send.on_ack(generation, next, &ranges);
                }
                Frame::Nack { generation, ranges } => {
                    self.peer(id).send.on_nack(generation, &ranges);
                }
                Frame::Data {
                    generation,
                    first,
                    count,
                    messages,
                } => {
                    let mut ms = Vec::with_capacity(usize::from(count));
                    for m in DataMessages::new(messages, count) {
                        match m {
                            Ok(m) => ms.push(m),
                            Err(_) => return Err(DropReason::Malformed),
                        }
                    }
                    data.push((generation, first, ms));
                }
                Frame::Unknown(_) => {}
            }
        }
        if refused_data {
            *self.drops.entry(DropReason::Unverified).or_default() += 1;
        }
        // A HELLO after the HELLO_ACK that verified its epoch, in this same datagram.
        let p = self.peer(id);
        if let Some((e, role, ready)) = p.pending_role
            && p.epoch == Some(e)
        {
            p.pending_role = None;
            self.peer_role(id, role, ready);
        }
        if verified {
            self.heard(id, now);
            // Roles first: they decide whether this datagram's flows reach the kernel.
            for (role, ready) in roles {
                self.peer_role(id, role, ready);
            }
            let ack_delay = self.cfg.ack_delay;
            let ack_every = (self.cfg.window / 4).max(1);
            for (generation, first, ms) in data {
                let p = self.peer(id);
                let d = p.recv.receive(generation, first, ms);
                if d.reset {
                    // Its new stream supersedes repairs the old one promised.
                    p.repairs_pending = 0;
                }
                p.unacked += d.messages.len();
                if p.unacked >= ack_every {
                    // A quarter of a window: acknowledge now, so that a sender with a
                    // full window does not sit out the ACK delay (a bulk transfer of
                    // 200k flows waited ~25 times for it).
                    p.ack_at = Some(now);
                } else if p.ack_at.is_none() {
                    p.ack_at = Some(now + ack_delay);
                }
                // Every flow's key hashed and its cache slot prefetched first, then
                // applied: the cache misses of a datagram's flows overlap instead of
                // being waited out one by one.
                let keys: SmallVec<[Option<Keyed>; 64]> =
                    d.messages.iter().map(flow_keyed).collect();
                if let Some(ext) = self.external.get(&id) {
                    keys.iter().flatten().for_each(|k| ext.table.prefetch(k));
                }
                for (m, key) in d.messages.into_iter().zip(keys) {
                    self.apply_message(id, m, key, now);
                }
            }
            let p = self.peer(id);
            if wire_role_primary(p.role) {
                p.was_primary = true;
            }
            self.settle(now);
            self.update_ready();
        }
        Ok(())
    }

    fn peer(&mut self, id: NodeId) -> &mut Peer {
        // Only called for ids taken from `self.peers`.
        self.peers.entry(id).or_insert_with(|| Peer::new(id, 1, 1))
    }

    fn heard(&mut self, id: NodeId, now: Instant) {
        let p = self.peer(id);
        p.last_heard = Some(now);
        if !p.up {
            p.up = true;
            self.notes.push_back(Notify::PeerUp(id));
            let p = self.peer(id);
            if p.resync_needed {
                self.start_bulk(id, now);
            }
        }
    }

    /// A verified peer announced its role. A peer that becomes primary makes its table
    /// the truth for our kernel (hot standby): what we hold of it is written now, since
    /// it will not send unchanged flows again.
    fn peer_role(&mut self, id: NodeId, role: WireRole, ready: bool) {
        let hot = self.cfg.mode == Mode::HotStandby && self.role != Role::Primary;
        let p = self.peer(id);
        let became_primary = wire_role_primary(role) && !wire_role_primary(p.role);
        p.role = role;
        p.ready = ready;
        if became_primary
            && hot
            && let Some(ext) = self.external.get(&id)
        {
            self.kernel_ops
                .extend(ext.table.stored_flows().map(KernelOp::Upsert));
            self.kernel_ops.extend(
                ext.expectations
                    .values()
                    .map(|x| KernelOp::ExpCreate(Box::new(x.exp.clone()))),
            );
        }
    }

    fn verify_epoch(&mut self, id: NodeId, epoch: u64, generation: u32, now: Instant) {
        let p = self.peer(id);
        let restarted = p.epoch.is_some();
        p.epoch = Some(epoch);
        p.challenge = None;
        p.reverify = false;
        let pending_role = p.pending_role.take().filter(|(e, ..)| *e == epoch);
        p.replay = p
            .candidate
            .take()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, w)| w)
            .unwrap_or_default();
        p.rx_generation = generation.max(1);
        p.role = WireRole::Unknown;
        p.recv.forget();
        p.bulk_done = false;
        p.digest_ok = false;
        p.repairs_pending = 0;
        p.last_heard = Some(now);
        p.up = true;
        if restarted {
            self.notes.push_back(Notify::PeerRestarted(id));
        } else {
            self.notes.push_back(Notify::PeerUp(id));
        }
        if let Some((_, role, ready)) = pending_role {
            self.peer_role(id, role, ready);
        }
        // Whoever (re)joins gets our whole table.
        self.start_bulk(id, now);
    }

    /// Apply a delivered message; `key` is its flow's, hashed ([`flow_keyed`]).
    fn apply_message(&mut self, from: NodeId, m: Message, key: Option<Keyed>, now: Instant) {
        // Hot standby writes to our kernel only what the primary says: its table is the
        // truth. Other nodes' tables (a backup's own flows, or flows a restarted backup
        // found in its kernel and now reports as its own) are kept, never applied: they
        // could otherwise delete or roll back flows the primary still carries.
        let origin_is_primary = self
            .peers
            .get(&from)
            .is_some_and(|p| wire_role_primary(p.role));
        let hot =
            self.cfg.mode == Mode::HotStandby && self.role != Role::Primary && origin_is_primary;
        let expected = self.cfg.expected_flows;
        let max_flows = self.cfg.max_flows;
        let Node {
            external,
            peers,
            kernel_ops,
            notes,
            internal,
            stats,
            ..
        } = self;
        let Some(p) = peers.get_mut(&from) else {
            return;
        };
        let ext = external.entry(from).or_insert_with(|| External {
            table: FlowTable::with_capacity(expected),
            ..External::default()
        });
        match m {
            Message::FlowNew(f) | Message::FlowUpdate(f) => {
                stats.flows_received += 1;
                let key = key.unwrap_or_else(|| Keyed::new(f.key()));
                if ext.table.len() >= max_flows && !ext.table.contains(&key) {
                    // The cap (like conntrackd's HashLimit): refused, counted, and this
                    // copy is incomplete until a digest agrees again (not ready).
                    if stats.cache_full == 0 || p.digest_ok {
                        notes.push_back(Notify::CacheFull { origin: Some(from) });
                    }
                    stats.cache_full += 1;
                    p.digest_ok = false;
                    return;
                }
                // Same state: only remember it was mentioned; the kernel already has it.
                let (outcome, state) = ext.table.upsert_state(&key, &f, ext.mark, true);
                if outcome != Upsert::Same && hot {
                    kernel_ops.push_back(KernelOp::Upsert(StoredFlow::new(state, f.timeout)));
                }
            }
            Message::FlowDelete(k) => {
                if ext.table.remove(&key.unwrap_or_else(|| Keyed::new(k))) && hot {
                    kernel_ops.push_back(KernelOp::Delete(k));
                }
            }
            Message::BulkBegin { .. } => {
                ext.mark += 1;
                ext.bulk_mark = Some(ext.mark);
                ext.bucket_marks.clear();
                ext.ended.clear();
                p.bulk_done = false;
                // The whole table follows: repairs asked for before are moot.
                p.repairs_pending = 0;
            }
            Message::BulkEnd { .. } => {
                let swept = match ext.bulk_mark.take() {
                    Some(mark) => {
                        let gone: Vec<ExpKey> = ext
                            .expectations
                            .iter()
                            .filter(|(_, x)| x.mark < mark)
                            .map(|(k, _)| *k)
                            .collect();
                        for k in gone {
                            if let Some(x) = ext.expectations.remove(&k)
                                && hot
                            {
                                kernel_ops.push_back(KernelOp::ExpDelete(Box::new(x.exp)));
                            }
                        }
                        ext.table.sweep(mark, None)
                    }
                    None => Vec::new(),
                };
                if hot {
                    kernel_ops.extend(swept.iter().map(|k| KernelOp::Delete(*k)));
                }
                p.bulk_done = true;
                notes.push_back(Notify::BulkReceived {
                    from,
                    swept: swept.len(),
                });
            }
            Message::Digest { hashes, .. } => {
                let differing = ext.table.digest().differing(&hashes);
                if differing.is_empty() {
                    p.digest_ok = true;
                } else if ext.table.len() >= max_flows {
                    // Full: a repair could not be held. Not ready until the table fits.
                    p.digest_ok = false;
                } else if p.repairs_pending == 0 {
                    p.digest_ok = false;
                    p.repairs_pending = differing.len();
                    notes.push_back(Notify::Repairing {
                        from,
                        buckets: differing.len(),
                    });
                    if !p.send.push(Message::BucketRequest(differing)) {
                        // Not queued: ask again at the next digest.
                        p.repairs_pending = 0;
                    }
                }
            }
            Message::BucketBegin { bucket } => {
                ext.mark += 1;
                ext.bucket_marks.insert(bucket, ext.mark);
            }
            Message::BucketEnd { bucket } => {
                if let Some(mark) = ext.bucket_marks.remove(&bucket) {
                    ext.ended.push((bucket, mark));
                }
                p.repairs_pending = p.repairs_pending.saturating_sub(1);
                if p.repairs_pending == 0 || ext.bucket_marks.is_empty() {
                    let swept = ext.table.sweep_buckets(&ext.ended);
                    ext.ended.clear();
                    if hot {
                        kernel_ops.extend(swept.iter().map(|k| KernelOp::Delete(*k)));
                    }
                }
            }
            Message::ResyncRequest => self.start_bulk(from, now),
            Message::BucketRequest(buckets) => {
                let mut overflow = false;
                let wanted: Vec<u16> = buckets
                    .into_iter()
                    .filter(|&b| usize::from(b) < BUCKETS)
                    .collect();
                for (b, flows) in internal.messages_of_buckets(&wanted) {
                    overflow |= !p.send.push(Message::BucketBegin { bucket: b });
                    for (key, m) in flows {
                        overflow |= !p.send.push_transfer(key, m);
                    }
                    overflow |= !p.send.push(Message::BucketEnd { bucket: b });
                }
                let d = internal.digest();
                overflow |= !p.send.push(Message::Digest {
                    count: d.count,
                    hashes: d.hashes.to_vec(),
                });
                if overflow {
                    stats.overflows += 1;
                    self.start_bulk(from, now);
                }
            }
            Message::ExpNew(e) => {
                stats.expectations_received += 1;
                let key = exp_key(&e);
                let until = e
                    .timeout
                    .map(|t| now + std::time::Duration::from_secs(u64::from(t)));
                let changed = ext.expectations.get(&key).is_none_or(|x| x.exp != *e);
                ext.expectations.insert(
                    key,
                    ExtExp {
                        exp: (*e).clone(),
                        mark: ext.mark,
                        until,
                    },
                );
                if hot && changed {
                    kernel_ops.push_back(KernelOp::ExpCreate(e));
                }
            }
            Message::ExpDelete(tuple, zone) => {
                stats.expectations_received += 1;
                if let Some(x) = ext.expectations.remove(&(tuple, zone.filter(|&z| z != 0)))
                    && hot
                {
                    kernel_ops.push_back(KernelOp::ExpDelete(Box::new(x.exp)));
                }
            }
        }
    }

    fn update_ready(&mut self) {
        // A backup (or a node keepalived holds in FAULT, which must be able to leave it)
        // is ready once it has heard from every peer, or waited a dead interval for
        // those that are silent, and holds a complete copy of every primary's table.
        let ready = match self.role {
            Role::Primary => true,
            Role::Backup | Role::Fault => {
                self.settled
                    && self
                        .peers
                        .values()
                        .filter(|p| p.was_primary)
                        .all(Peer::synced)
            }
        };
        if ready != self.ready {
            self.ready = ready;
            self.notes.push_back(Notify::Ready(ready));
        }
    }

    fn settle(&mut self, now: Instant) {
        if !self.settled
            && (now >= self.started + self.cfg.dead_interval
                || self.peers.values().all(|p| p.epoch.is_some()))
        {
            self.settled = true;
        }
    }

    /// Whether this node could take over now without losing flows.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    // ---- timers --------------------------------------------------------------------

    /// Advance timers to `now`: liveness, delayed flows, digests, timeout refresh, rekey.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
        // Peers not heard from.
        let dead: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| {
                p.up && p
                    .last_heard
                    .is_some_and(|t| now >= t + self.cfg.dead_interval)
            })
            .map(|p| p.id)
            .collect();
        for id in dead {
            let p = self.peer(id);
            p.up = false;
            p.resync_needed = true;
            p.reverify = true;
            p.challenge = None;
            p.send.reset();
            p.bulk = None;
            self.notes.push_back(Notify::PeerDown(id));
        }
        // Expectations whose timeout passed (their deletion may have been lost, or the
        // peer died): the kernel dropped them too.
        for ext in self.external.values_mut() {
            ext.expectations
                .retain(|_, x| x.until.is_none_or(|u| now < u));
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
        if now >= self.next_digest {
            self.next_digest = now + self.cfg.digest_interval;
            let d = self.internal.digest().clone();
            for p in self.peers.values_mut() {
                if p.epoch.is_some() && p.up && p.bulk.is_none() && !p.resync_needed {
                    p.send.push(Message::Digest {
                        count: d.count,
                        hashes: d.hashes.to_vec(),
                    });
                }
            }
        }
        if let Some(t) = self.next_kernel_resync.filter(|t| now >= *t) {
            self.next_kernel_resync = Some(t.max(now) + self.cfg.kernel_resync_interval);
            self.kernel_ops.push_back(KernelOp::Dump);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh_interval;
            if self.cfg.mode == Mode::HotStandby && self.role != Role::Primary {
                // Only what a primary owns is in our kernel on its behalf.
                let owners: Vec<NodeId> = self
                    .peers
                    .values()
                    .filter(|p| wire_role_primary(p.role))
                    .map(|p| p.id)
                    .collect();
                for ext in owners.iter().filter_map(|o| self.external.get(o)) {
                    self.kernel_ops
                        .extend(ext.table.stored_flows().map(KernelOp::Refresh));
                }
            }
        }
        self.update_ready();
    }

    /// The next time [`Node::handle_timeout`] should be called (the shell may call it
    /// earlier; this is a bound).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_digest.min(self.next_refresh));
        if !self.settled {
            t = t.map(|t| t.min(self.started + self.cfg.dead_interval));
        }
        if let (Some(k), Some(x)) = (self.next_kernel_resync, t) {
            t = Some(x.min(k));
        }
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        at(self.delayed.front().map(|(d, _)| *d));
        for p in self.peers.values() {
            at(p.ack_at);
            at(p.send.next_deadline(self.cfg.rto));
            at(Some(
                p.last_sent
                    .map_or(self.started, |s| s + self.cfg.alive_interval),
            ));
            if p.up {
                at(p.last_heard.map(|h| h + self.cfg.dead_interval));
            }
        }
        t
    }

    // ---- outputs -------------------------------------------------------------------

    /// The next kernel operation to carry out.
    pub fn poll_kernel_op(&mut self) -> Option<KernelOp> {
        self.kernel_ops.pop_front()
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
    /// every input.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        self.maybe_rekey(now);
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        let n = ids.len();
        for i in 0..n {
            let id = ids[(self.rr + i) % n];
            if self.build_datagram(now, id, buf) {
                self.rr = (self.rr + i + 1) % n.max(1);
                self.stats.datagrams_sent += 1;
                return Some(id);
            }
        }
        None
    }

    fn maybe_rekey(&mut self, now: Instant) {
        let limit = self.secret.cipher().packet_limit();
        if self.key_packets >= limit || now >= self.key_started + self.cfg.rekey_interval {
            let g = self.tx_key.generation() + 1;
            if let Ok(k) = self.secret.traffic_key(self.cfg.node, self.epoch, g) {
                self.tx_key = k;
                self.key_started = now;
                self.key_packets = 0;
            }
        }
    }

    fn build_datagram(&mut self, now: Instant, id: NodeId, buf: &mut Vec<u8>) -> bool {
        self.pump_bulk(id);
        let cfg = &self.cfg;
        let role = self.role.wire();
        let ready = self.ready;
        let Some(p) = self.peers.get_mut(&id) else {
            return false;
        };
        let verified = p.epoch.is_some();
        let budget = cfg.mtu.saturating_sub(HEADER_LEN + TAG_LEN);
        buf.clear();
        let header_at = buf.len();
        buf.resize(HEADER_LEN, 0);
        let body_start = buf.len();
        let mut w = FrameWriter::new(buf);
        let mut any = false;
        let mut handshake = false;
        if let Some(echo) = p.hello_ack_due.take() {
            w.hello_ack(echo, VERSION, self.tx_key.generation());
            any = true;
            handshake = true;
        }
        // Challenge a peer whose epoch we have not verified: none yet, or a newer one
        // (it restarted) that we have seen but not proven live.
        let challenging = !verified
            || p.reverify
            || p.candidate
                .as_ref()
                .is_some_and(|(e, _)| Some(*e) != p.epoch);
        let hello_due = challenging && p.hello_sent.is_none_or(|t| now >= t + cfg.alive_interval);
        if hello_due {
            if p.challenge.is_none() || p.hello_sent.is_some_and(|t| now >= t + cfg.dead_interval) {
                p.challenge = Some(self.rng.next());
            }
            w.hello(p.challenge.unwrap_or(0), VERSION, VERSION, role, ready);
            p.hello_sent = Some(now);
            any = true;
            handshake = true;
        }
        if verified {
            // An ACK goes out when due, or early on a datagram that carries data anyway.
            let piggyback = p.send.has_new() || p.send.retransmit_due(now, cfg.rto);
            if p.ack_at.is_some_and(|t| now >= t || piggyback) {
                let (g, next, ranges) = p.recv.ack();
                w.ack(g, next, &ranges);
                p.ack_at = None;
                p.unacked = 0;
                any = true;
            }
            if p.recv.nack_due && p.nack_sent.is_none_or(|t| now >= t + cfg.rto / 2) {
                let (g, gaps) = p.recv.nack();
                if !gaps.is_empty() {
                    w.nack(g, &gaps);
                    any = true;
                }
                p.recv.nack_due = false;
                p.nack_sent = Some(now);
            }
            // Our role and readiness in every datagram, before any DATA: the receiver needs
            // them to know what to do with the flows, and one lost announcement must not
            // leave it guessing (5 bytes a datagram).
            w.alive(role, ready);
            p.announced = Some((role, ready));
            // DATA: retransmissions first, then new messages, while they fit.
            // Runs of consecutive sequence numbers, each one DATA frame: (first seq,
            // where its bytes start in `scratch`, count).
            let mut runs: Vec<(u64, usize, u16)> = Vec::new();
            self.scratch.clear();
            let mut used = w.len() - body_start;
            loop {
                let next = if p.send.retransmit_due(now, cfg.rto) {
                    p.send.next_retransmit(now, cfg.rto)
                } else if p.send.has_new() {
                    p.send.next_new(now)
                } else {
                    None
                };
                let Some((seq, m)) = next else { break };
                let extends = runs
                    .last()
                    .is_some_and(|(s, _, c)| s + u64::from(*c) == seq && *c < u16::MAX);
                let extra = m.len()
                    + if extends {
                        0
                    } else {
                        ctsync_wire::frame::DATA_OVERHEAD
                    };
                if used + extra > budget {
                    p.send.unsend(seq);
                    break;
                }
                used += extra;
                match runs.last_mut() {
                    Some((_, _, c)) if extends => *c += 1,
                    _ => runs.push((seq, self.scratch.len(), 1)),
                }
                self.scratch.extend_from_slice(m);
            }
            let generation = p.send.generation();
            for (i, &(seq, start, count)) in runs.iter().enumerate() {
                let end = runs.get(i + 1).map_or(self.scratch.len(), |r| r.1);
                w.data(generation, seq as u32, count, &self.scratch[start..end]);
                any = true;
            }
        }
        if !any && p.last_sent.is_none_or(|t| now >= t + cfg.alive_interval) {
            w.alive(role, ready);
            p.announced = Some((role, ready));
            any = true;
        }
        if !any {
            buf.clear();
            return false;
        }
        // Datagrams with a HELLO or HELLO_ACK use the handshake key (generation 0): a peer
        // that has not verified our epoch accepts nothing else, and it needs these.
        let key = if verified && !handshake {
            &self.tx_key
        } else {
            &self.handshake_key
        };
        let h = Header {
            version: VERSION,
            key_id: key_id_of(key.generation()),
            node: cfg.node,
            epoch: self.epoch,
            packet: self.packet,
        };
        let mut head = Vec::with_capacity(HEADER_LEN);
        h.emit(&mut head);
        buf[header_at..header_at + HEADER_LEN].copy_from_slice(&head);
        if key.seal(self.packet, buf, HEADER_LEN).is_err() {
            buf.clear();
            return false;
        }
        self.packet += 1;
        self.key_packets += 1;
        p.last_sent = Some(now);
        true
    }

    // ---- introspection -------------------------------------------------------------

    /// Drop counters by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Node counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// The internal cache.
    pub fn internal(&self) -> &FlowTable {
        &self.internal
    }

    /// The external cache of flows owned by `origin`.
    pub fn external(&self, origin: NodeId) -> Option<&FlowTable> {
        self.external.get(&origin).map(|e| &e.table)
    }

    /// Flows in all external caches.
    pub fn external_len(&self) -> usize {
        self.external.values().map(|e| e.table.len()).sum()
    }

    /// The peers.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// This node's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The external cache of `origin`, writable: tests use it to make the caches diverge
    /// behind the protocol's back, which anti-entropy must then repair.
    #[doc(hidden)]
    pub fn external_mut_for_tests(&mut self, origin: NodeId) -> Option<&mut FlowTable> {
        self.external.get_mut(&origin).map(|e| &mut e.table)
    }

    /// The packet number the next datagram will carry (its nonce).
    pub fn next_packet(&self) -> u64 {
        self.packet
    }
}
