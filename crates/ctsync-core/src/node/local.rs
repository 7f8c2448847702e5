//! The kernel side: this node's own flows. Kernel events and dumps feed the internal
//! cache, and what changed is queued to every live peer; expectations go with their
//! master flows.

use std::collections::HashSet;
use std::time::Instant;

use ctnetlink::{EventKind, Expectation, Flow, FlowKey};
use ctsync_wire::{Message, NodeId, WireRole};
use smallvec::SmallVec;

use super::{ExpKey, FlowEvent, KernelOp, Node, Notify, PREFETCH_BATCH, exp_key, exp_normalize};

/// A copy whose last timeout was shorter than this is not written back when the kernel
/// destroys it ([`Node::write_back`]): the flow is ending, its deletion on its way.
const WRITE_BACK_MIN_SECS: u32 = 10;
use crate::Role;
use crate::cache::{Upsert, state_message};
use crate::config::Mode;
use crate::key::Keyed;
use crate::message::{Encoded, Kind, encode, flow_key};

impl Node {
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
                .map(|e| (!e.ours).then(|| self.hasher.keyed(e.flow.key())))
                .collect();
            self.internal.prefetch(keys.iter().flatten());
            for (e, key) in chunk.iter().zip(keys) {
                self.kernel_event(now, e.kind, &e.flow, e.ours, key);
            }
        }
    }

    /// One kernel event; `key` is its flow's, hashed, if already at hand.
    pub(super) fn kernel_event(
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
        let key = key.unwrap_or_else(|| self.hasher.keyed(flow.key()));
        // Not our write: the kernel destroyed the entry, or someone else wrote it. What it
        // holds of a flow hot standby wrote is no longer known: a destroyed copy is
        // written back below, one someone else wrote by the next message, transfer or
        // refresh that brings the flow.
        self.mirror.forget(key.hash);
        match kind {
            EventKind::New | EventKind::Update => {
                self.local_upsert(now, flow, key, kind == EventKind::New)
            }
            EventKind::Destroy => {
                self.local_remove(&key);
                self.write_back(&key);
            }
        }
    }

    /// Hot standby: the kernel destroyed a copy behind our back (`conntrack -F` or `-D`
    /// on the backup, its timer ran out) while a primary peer still has the flow. It is
    /// written again at once, not at the next refresh round: keepalived moves the
    /// addresses before it tells us to take over, and a packet of the flow arriving
    /// in between would find no entry (a UDP datagram gets a new NAT port). A key at most
    /// once a refresh round (a full table's early drop would make a loop of it), and not
    /// one whose last timeout was under [`WRITE_BACK_MIN_SECS`] (it is ending: its
    /// deletion is on its way).
    fn write_back(&mut self, key: &Keyed) {
        if self.cfg.mode != Mode::HotStandby || self.role == Role::Primary {
            return;
        }
        let Node {
            peers,
            external,
            mirror,
            kernel_ops,
            stats,
            written_back_keys,
            ..
        } = self;
        let owners = peers
            .values()
            .filter(|p| p.link.role == WireRole::Primary)
            .filter_map(|p| external.get(&p.link.id));
        for ext in owners {
            if let Some((stored, hash)) = ext.table.stored(key)
                && stored.timeout().is_none_or(|t| t >= WRITE_BACK_MIN_SECS)
                && written_back_keys.insert(key.hash)
                && mirror.write_needed(key.hash, hash)
            {
                kernel_ops.push_back(KernelOp::Upsert(stored));
                stats.kernel_writes += 1;
                stats.written_back += 1;
                return;
            }
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
                if !self.internal.is_counted(&self.hasher.keyed(master)) {
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
        let seen: HashSet<ExpKey> = all.iter().map(exp_key).collect();
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
        self.queue_dump();
    }

    /// Ask the shell for a read of the kernel table ([`KernelOp::Dump`]), coalesced: a
    /// read already queued last serves this request too, and one under way is followed
    /// by one more when it ends (so that event overruns in a storm cost one read each
    /// turn, not one each).
    pub(super) fn queue_dump(&mut self) {
        if self.dumping {
            self.dump_again = true;
        } else if self.kernel_ops.back() != Some(&KernelOp::Dump) {
            self.kernel_ops.push_back(KernelOp::Dump);
        }
    }

    /// A kernel dump starts: what it does not mention is gone at [`Node::end_kernel_dump`].
    pub fn begin_kernel_dump(&mut self, _now: Instant) {
        self.dump_mark += 1;
        if !self.dumping {
            // (A restarted dump, DumpItem::Restart, goes on with the same read.)
            self.mirror.begin_read();
        }
        self.dumping = true;
    }

    /// One flow of a kernel dump.
    pub fn handle_dumped(&mut self, now: Instant, flow: &Flow) {
        let key = self.hasher.keyed(flow.key());
        self.mirror.seen(key.hash);
        self.local_upsert(now, flow, key, false);
    }

    /// The dump is complete: flows it did not mention are removed (and deletions sent).
    pub fn end_kernel_dump(&mut self, _now: Instant) {
        if !self.dumping {
            return;
        }
        self.dumping = false;
        // Flows hot standby wrote that the kernel no longer holds (their destroy events
        // were lost: an overrun) are written again now.
        self.mirror.end_read();
        if self.cfg.mode == Mode::HotStandby && self.role != Role::Primary {
            let owners: Vec<NodeId> = self
                .peers
                .values()
                .filter(|p| p.link.role == WireRole::Primary)
                .map(|p| p.link.id)
                .collect();
            for id in owners {
                self.write_unknown(id);
            }
        }
        if std::mem::take(&mut self.dump_again) {
            self.queue_dump();
        }
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
                self.start_bulk(id);
            }
        }
    }

    /// A flow the kernel created or changed; `key` is its key, hashed once: every lookup
    /// here, in the caches and in each peer's queue, uses it.
    pub(super) fn local_upsert(&mut self, now: Instant, flow: &Flow, key: Keyed, new: bool) {
        if !self.cfg.filter.accepts(flow) {
            self.stats.filtered += 1;
            // A flow that stops passing the filter (e.g. it left its zone) is gone for
            // the peers.
            if self.internal.remove(&key) {
                self.replicate(Message::FlowDelete(*key.key()));
            }
            return;
        }
        if self.role != Role::Primary
            && (self.mirror.contains(key.hash)
                || self.external.values().any(|e| e.table.contains(&key)))
        {
            // A flow a peer replicated to us (hot standby wrote it to our kernel, even if
            // the external cache was flushed since; a dump after an overrun or a restart
            // finds it there): it is the peer's, not ours.
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

    pub(super) fn local_remove(&mut self, key: &Keyed) {
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
    pub(super) fn replicate(&mut self, m: Message) {
        if let Message::FlowNew(f) | Message::FlowUpdate(f) = &m
            && !ctsync_wire::codec::encodable(f)
        {
            // Tuples of two families: no kernel makes such a flow.
            self.stats.unencodable += 1;
            return;
        }
        // Encoded once, shared by every peer's queue.
        let key = flow_key(&m).map(|k| self.hasher.keyed(k));
        self.replicate_encoded(key, Kind::of(&m), encode(&m));
    }

    /// Queue an encoded message on every live peer's stream (see [`Node::replicate`]).
    /// With a group (docs/PROTOCOL.md §13) its members get it once, on the group stream.
    pub(super) fn replicate_encoded(&mut self, key: Option<Keyed>, kind: Kind, bytes: Encoded) {
        let mut overflowed = Vec::new();
        let group = self.group.as_mut().filter(|g| g.has_members());
        let in_group = |id: &NodeId| group.as_ref().is_some_and(|g| g.is_member(*id));
        for (id, p) in self.peers.iter_mut() {
            if !p.link.is_live() || p.sync.resync_needed || in_group(id) {
                continue;
            }
            if !p.link.send.push_encoded(key, kind, bytes.clone()) {
                match (p.sync.bulk.as_mut(), key) {
                    // A transfer under way carries the flow instead of starting over.
                    (Some(bulk), Some(k)) if kind != Kind::Control => bulk.carry(k, kind),
                    _ => overflowed.push(*id),
                }
            }
        }
        if let Some(g) = group
            && !g.send.push_encoded(key, kind, bytes)
        {
            // The members fell behind what the group queue holds: each gets a bulk.
            self.stats.overflows += 1;
            self.group_overflow();
        }
        for id in overflowed {
            // It fell behind what the queue holds: a new stream and a bulk transfer, so
            // nothing is silently lost.
            self.stats.overflows += 1;
            self.start_bulk(id);
        }
    }
}
