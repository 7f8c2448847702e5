//! Transfers of this node's table to peers: bulk transfers (paced, a fresh stream
//! generation each), resync requests, and the periodic digests that let peers find and
//! repair differing buckets (docs/PROTOCOL.md §7).

use std::time::Instant;

use ctsync_wire::{Message, NodeId};

use super::{Node, Notify};
use crate::cache::Walk;
use crate::key::Keyed;
use crate::message::Kind;

/// A paced bulk transfer in progress to one peer.
#[derive(Debug)]
pub(super) struct BulkOut {
    /// Transfer id.
    id: u32,
    /// Where the walk over our table stands: the table itself is read as the transfer
    /// goes, each flow's state when it is sent, with no snapshot of its keys.
    walk: Walk,
    /// Flows whose live message found the stream's queue full (see [`BulkOut::carry`]),
    /// sent before the walk goes on.
    pub(super) keys: Vec<Keyed>,
    /// Flows whose deletion found the queue full: deleted at the end of the transfer,
    /// unless they exist again by then.
    pub(super) deletes: Vec<Keyed>,
    /// Flows sent so far.
    sent: u64,
}

/// Where the copies between this node and one peer stand.
#[derive(Debug, Default)]
pub(super) struct PeerSync {
    /// It was seen as primary (then our readiness depends on its data).
    pub(super) was_primary: bool,
    /// A bulk transfer to it in progress.
    pub(super) bulk: Option<BulkOut>,
    /// It must be resynchronised when it is reachable again.
    pub(super) resync_needed: bool,
    /// Its whole table arrived (bulk complete).
    pub(super) bulk_done: bool,
    /// Its last digest matched our copy.
    pub(super) digest_ok: bool,
    /// Bucket repairs requested and not finished.
    pub(super) repairs_pending: usize,
    /// It restarted while our copy of its table was complete: the bulk transfer it
    /// sends now refreshes that copy (its sweep removes what closed meanwhile), and
    /// readiness holds through it. A primary whose daemon restarts has not lost its
    /// kernel's table; a backup that told keepalived "not ready" meanwhile would be put
    /// in FAULT, and a failure of the primary then would find no one to take over.
    pub(super) refreshing: bool,
    /// The last digest sent to it ([`crate::cache::Digest::fingerprint`]), and when (see
    /// `Config::digest_unchanged_every`). Cleared by a bulk transfer to it.
    pub(super) last_digest: Option<(u128, Instant)>,
}

impl BulkOut {
    /// A live message for `key` found the queue full while this transfer runs: the
    /// transfer carries the flow instead (its state when it is sent; a deletion at the
    /// end). Restarting the transfer, as an overflow otherwise does, would throw away
    /// what it sent and, under a load that keeps the queue full, never end.
    pub(super) fn carry(&mut self, key: Keyed, kind: Kind) {
        if kind == Kind::FlowDelete {
            self.deletes.push(key);
        } else {
            self.keys.push(key);
        }
    }
}

impl PeerSync {
    /// Whether its copy of what it sent us is complete (our readiness): the last bulk
    /// transfer arrived, the last digest agreed and no repair is outstanding. A gap in
    /// the stream does not count: under load a datagram lost now and then is normal and
    /// comes again within a retransmission timeout, and readiness that dropped at each
    /// one would make keepalived's track_file flap the node between BACKUP and FAULT,
    /// so that a primary failing at such a moment would not be replaced at all.
    pub(super) fn synced(&self) -> bool {
        self.bulk_done && self.digest_ok && self.repairs_pending == 0
    }
}

impl Node {
    /// Ask every peer for its whole table.
    pub fn request_resync(&mut self, _now: Instant) {
        let mut full = Vec::new();
        for p in self.peers.values_mut() {
            if p.link.is_live() {
                p.sync.bulk_done = false;
                p.sync.refreshing = false;
                if !p.link.send.push(Message::ResyncRequest) {
                    full.push(p.link.id);
                }
            }
        }
        for id in full {
            // Our queue to it was full: a fresh stream (with our bulk), then the request.
            self.start_bulk(id);
            if let Some(p) = self.peers.get_mut(&id) {
                p.link.send.push(Message::ResyncRequest);
            }
        }
        self.update_ready();
    }

    /// Send our whole table to every peer.
    pub fn bulk(&mut self, _now: Instant) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.start_bulk(id);
        }
    }

    pub(super) fn start_bulk(&mut self, id: NodeId) {
        // A bulk goes on its own stream: it leaves our group until it is up to date
        // (docs/PROTOCOL.md §13.3).
        self.leave_group(id);
        let bulk_id = self.rng.next() as u32;
        let walk = self.internal.walk();
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        // The digest after this transfer goes whatever came before.
        p.sync.last_digest = None;
        if !p.link.is_live() {
            p.sync.resync_needed = true;
            return;
        }
        // A fresh stream generation: whatever the old one had in flight is superseded,
        // our repair requests to it included (the next digest asks again).
        p.link.send.reset();
        p.sync.repairs_pending = 0;
        p.sync.resync_needed = false;
        p.link.send.push(Message::BulkBegin { id: bulk_id });
        p.sync.bulk = Some(BulkOut {
            id: bulk_id,
            walk,
            keys: Vec::new(),
            deletes: Vec::new(),
            sent: 0,
        });
    }

    /// Feed paced bulk flows into a peer's stream while its window has room.
    pub(super) fn pump_bulk(&mut self, id: NodeId) {
        let internal = &self.internal;
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(bulk) = p.sync.bulk.as_mut() else {
            return;
        };
        if p.link.send.backlog() >= self.cfg.window {
            return;
        }
        let mut walked = false;
        for _ in 0..self.cfg.bulk_step {
            // Read now, not when the transfer began: the latest state goes out.
            let next = match bulk.keys.pop() {
                Some(key) => internal.message(&key, false).map(|m| (key, m)),
                None => match internal.next_counted(&mut bulk.walk) {
                    Some(flow) => Some(flow),
                    None => {
                        walked = true;
                        break;
                    }
                },
            };
            if let Some((key, m)) = next {
                p.link.send.push_transfer(key, m);
                bulk.sent += 1;
            }
        }
        if walked && bulk.keys.is_empty() {
            let (bulk_id, sent) = (bulk.id, bulk.sent);
            // Deletions that found the queue full, for flows still gone: the receiver
            // may hold them from earlier in this transfer, which its end would not sweep.
            for key in std::mem::take(&mut bulk.deletes) {
                if !internal.contains(&key) {
                    p.link.send.push(Message::FlowDelete(*key.key()));
                }
            }
            p.sync.bulk = None;
            // Expectations after every flow (their masters), inside the transfer so that
            // its end sweeps those the receiver holds and we no longer have.
            for e in self.expectations.values() {
                p.link.send.push(Message::ExpNew(Box::new(e.clone())));
            }
            p.link.send.push(Message::BulkEnd {
                id: bulk_id,
                count: sent,
            });
            p.link.send.push(internal.digest().message());
            self.notes.push_back(Notify::BulkSent {
                to: id,
                flows: sent,
            });
        }
    }

    /// Our digest to every live peer not in a transfer (it compares and asks for the
    /// buckets that differ); to a peer whose last digest from us was the same, only once
    /// in `digest_unchanged_every` intervals. When the next round is due if nothing
    /// changes ([`Node::digest_due_early`] says when a change brings it closer).
    /// Members of our group get it once, on the group stream, in order with the flows
    /// it covers (docs/PROTOCOL.md §13.1).
    pub(super) fn send_digests(&mut self, now: Instant) -> Instant {
        let digest = self.internal.digest();
        let m = digest.message();
        let fingerprint = digest.fingerprint();
        let interval = self.cfg.digest_interval;
        let unchanged = interval * self.cfg.digest_unchanged_every.max(1);
        let mut next = now + unchanged;
        let group = self.group.as_mut().filter(|g| g.has_members());
        let in_group = |id: &NodeId| group.as_ref().is_some_and(|g| g.is_member(*id));
        for (id, p) in self.peers.iter_mut() {
            if p.link.is_live() && p.sync.bulk.is_none() && !p.sync.resync_needed && !in_group(id) {
                if let Some((last, sent)) = &p.sync.last_digest
                    && *last == fingerprint
                    && now < *sent + unchanged
                {
                    next = next.min(*sent + unchanged);
                    continue;
                }
                p.sync.last_digest = Some((fingerprint, now));
                p.link.send.push(m.clone());
            }
        }
        if let Some(g) = group {
            g.send.push(m);
            next = now + interval;
        }
        next.max(now + interval)
    }

    /// With `digest_unchanged_every` above 1, digest rounds wait for the next unchanged
    /// resend while nothing changes; a change of our table (or a peer whose digest is
    /// owed: a repair, a transfer just ended) brings the round back to a digest interval
    /// after the last one. A quiet node of many namespaces then wakes once a minute for
    /// its digests, not every few seconds.
    pub(super) fn digest_due_early(&self) -> Option<Instant> {
        if self.cfg.digest_unchanged_every <= 1 {
            return None;
        }
        let fingerprint = self.internal.digest().fingerprint();
        self.peers
            .values()
            .filter(|p| p.link.is_live() && p.sync.bulk.is_none() && !p.sync.resync_needed)
            .any(|p| {
                p.sync
                    .last_digest
                    .as_ref()
                    .is_none_or(|(d, _)| *d != fingerprint)
            })
            .then_some(self.digest_round_at + self.cfg.digest_interval)
    }
}
