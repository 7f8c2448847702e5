//! The group stream (docs/PROTOCOL.md §13): what a node replicates live goes once to a
//! multicast group; every member acknowledges it by unicast (`GROUP_ACK`); a message
//! stays until every member acknowledged it. A member that falls behind, or whose
//! group traffic does not arrive, leaves: its own stream serves it with a bulk
//! transfer, and it joins again (`GROUP_JOIN`) at the group stream's current sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ctsync_wire::frame::{DATA_OVERHEAD, Frame, FrameWriter, SeqRange};
use ctsync_wire::header::HEADER_LEN;
use ctsync_wire::{GROUP, Message, NodeId, TAG_LEN, WireRole, frames};
use smallvec::SmallVec;

use super::link::transmit::write_data;
use super::{Node, with_scratch};
use crate::config::Config;
use crate::key::KeyHasher;
use crate::status::DropReason;
use crate::stream::{SendStream, expand_seq};

/// A member of our group: how far it acknowledged the group stream.
#[derive(Debug)]
struct Member {
    /// Every message below this one it acknowledged.
    acked: u64,
    /// Since when it owes an acknowledgement (set when something it has not
    /// acknowledged is numbered, moved on by each advance of `acked`).
    waiting_since: Option<Instant>,
}

/// The group stream and its members.
#[derive(Debug)]
pub(super) struct Group {
    /// The stream every member receives.
    pub(super) send: SendStream,
    members: BTreeMap<NodeId, Member>,
    /// Messages a member asked for again (`GROUP_NACK`), to go to it alone.
    repairs: BTreeMap<NodeId, BTreeSet<u64>>,
}

impl Group {
    pub(super) fn new(cfg: &Config, hasher: &KeyHasher) -> Group {
        Group {
            send: SendStream::new(cfg.window, cfg.queue_limit, hasher.clone()),
            members: BTreeMap::new(),
            repairs: BTreeMap::new(),
        }
    }

    /// Whether `id` receives the group stream.
    pub(super) fn is_member(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Whether anyone receives it (else nothing is queued on it).
    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Whether messages wait to be sent again to `id` alone.
    pub(super) fn has_repairs(&self, id: NodeId) -> bool {
        self.repairs.get(&id).is_some_and(|r| !r.is_empty())
    }

    /// The members.
    pub(super) fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// Retire what every member acknowledged.
    fn retire(&mut self) {
        let low = self
            .members
            .values()
            .map(|m| m.acked)
            .min()
            .unwrap_or(self.send.next_seq());
        self.send.retire_below(low);
    }

    /// `id` leaves the group; whether it was a member. With no member left the stream
    /// starts over (a new generation: the next join names it).
    fn leave(&mut self, id: NodeId) -> bool {
        if self.members.remove(&id).is_none() {
            return false;
        }
        self.repairs.remove(&id);
        if self.members.is_empty() {
            self.send.reset();
            self.repairs.clear();
        } else {
            // The window no longer waits for it.
            self.retire();
        }
        true
    }

    /// A `GROUP_ACK` from `id`: its acknowledgement point moves on (never back).
    fn on_ack(&mut self, id: NodeId, generation: u32, next: u32, now: Instant) {
        if generation != self.send.generation() {
            return;
        }
        let numbered = self.send.next_seq();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        let next = expand_seq(next, m.acked).min(numbered);
        if next <= m.acked {
            return;
        }
        m.acked = next;
        m.waiting_since = (next < numbered).then_some(now);
        if let Some(r) = self.repairs.get_mut(&id) {
            *r = r.split_off(&next);
        }
        self.retire();
    }

    /// Members to take out at `now`: those that owed an acknowledgement for the dead
    /// interval, and, when the window is full, those more than half a window behind the
    /// member furthest ahead (docs/PROTOCOL.md §13.3).
    fn laggards(&mut self, now: Instant, cfg: &Config) -> Vec<NodeId> {
        let numbered = self.send.next_seq();
        let full = !self.send.window_open();
        let ahead = self.members.values().map(|m| m.acked).max().unwrap_or(0);
        let mut out = Vec::new();
        for (&id, m) in &mut self.members {
            if m.acked >= numbered {
                m.waiting_since = None;
                continue;
            }
            let since = *m.waiting_since.get_or_insert(now);
            let slow = full && ahead - m.acked > (cfg.window / 2) as u64;
            if slow || now >= since + cfg.dead_interval {
                out.push(id);
            }
        }
        out
    }

    /// The next time something is due: a retransmission, or a member's deadline.
    pub(super) fn poll_timeout(&self, cfg: &Config) -> Option<Instant> {
        let owed = self
            .members
            .values()
            .filter_map(|m| m.waiting_since)
            .min()
            .map(|t| t + cfg.dead_interval);
        match (self.send.next_deadline(cfg.rto), owed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Node {
    /// `id` is served by its own stream from now on (a bulk transfer to it starts, or it
    /// is down).
    pub(super) fn leave_group(&mut self, id: NodeId) {
        if let Some(g) = self.group.as_mut()
            && g.leave(id)
        {
            self.stats.group_evictions += 1;
        }
    }

    /// The group queue is full: every member falls back to its own stream, with a bulk
    /// transfer (as a full queue does for one peer, docs/PROTOCOL.md §6).
    pub(super) fn group_overflow(&mut self) {
        let members: Vec<NodeId> = self.group.iter().flat_map(Group::members).collect();
        for id in members {
            self.start_bulk(id);
        }
    }

    /// Take out the members that fell behind (each gets a bulk transfer on its own
    /// stream), and admit the live peers that are up to date on theirs, when the group
    /// stream has nothing unnumbered: at its next sequence number.
    pub(super) fn group_upkeep(&mut self, now: Instant) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let out = g.laggards(now, &self.cfg);
        for id in out {
            self.start_bulk(id);
        }
        let Some(g) = self.group.as_mut() else {
            return;
        };
        if !g.send.pending_is_empty() {
            return;
        }
        let (generation, seq) = (g.send.generation(), g.send.next_seq());
        let near = self.cfg.window / 8;
        for (&id, p) in self.peers.iter_mut() {
            // It must have acknowledged something of its stream's generation: then it
            // has verified our epoch and takes the GROUP_JOIN at once (each side
            // verifies the other on its own; a peer admitted before would drop the
            // group's data until then, and have it all sent to the group again).
            if g.is_member(id)
                || !p.link.is_live()
                || !p.link.send.acknowledged()
                || p.sync.resync_needed
                || p.sync.bulk.is_some()
                || p.link.send.backlog() > near
            {
                continue;
            }
            // Everything numbered below `seq` reached its own stream before this.
            if p.link.send.push(Message::GroupJoin { generation, seq }) {
                g.members.insert(
                    id,
                    Member {
                        acked: seq,
                        waiting_since: None,
                    },
                );
                self.stats.group_joins += 1;
            }
        }
    }

    /// One group datagram, if the group stream has something due: `ALIVE` and `DATA`,
    /// sealed for [`GROUP`].
    pub(super) fn transmit_group(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        let (role, ready) = (self.role.wire(), self.ready);
        let Some(g) = self.group.as_mut().filter(|g| g.has_members()) else {
            return false;
        };
        if !g.send.has_new() && !g.send.retransmit_due(now, self.cfg.rto) {
            return false;
        }
        let budget = self.cfg.mtu.saturating_sub(HEADER_LEN + TAG_LEN);
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        let mut w = FrameWriter::new(buf);
        w.alive(role, ready);
        let used = w.len() - HEADER_LEN;
        let cfg = &self.cfg;
        if !with_scratch(|scratch| write_data(&mut g.send, now, cfg, &mut w, used, budget, scratch))
        {
            buf.clear();
            return false;
        }
        if !self.sealer.seal(now, true, buf, GROUP) {
            return false;
        }
        // Not counted as a keep-alive to the members: liveness never depends on the
        // group (a switch that drops it costs evictions, not peers declared down).
        self.stats.group_datagrams_sent += 1;
        true
    }

    /// `GROUP_ACK`s and `GROUP_NACK`s from `id` for our group stream.
    pub(super) fn group_feedback(
        &mut self,
        id: NodeId,
        now: Instant,
        acks: &[(u32, u32)],
        nacks: &[(u32, Vec<SeqRange>)],
    ) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        for &(generation, next) in acks {
            g.on_ack(id, generation, next, now);
        }
        if !g.is_member(id) {
            return;
        }
        // What one member misses goes to it alone (GROUP_DATA in its own datagrams):
        // the others have it. A loss every member saw is resent to the group when its
        // retransmission timeout comes.
        let base = g.send.oldest();
        let numbered = g.send.next_seq();
        let cap = self.cfg.window;
        let repairs = g.repairs.entry(id).or_default();
        for (generation, ranges) in nacks {
            if *generation != g.send.generation() {
                continue;
            }
            for &(s, e) in ranges {
                let (s, e) = (expand_seq(s, base), expand_seq(e, base).min(numbered));
                for seq in s..e.max(s) {
                    if repairs.len() >= cap {
                        return;
                    }
                    if g.send.in_flight_message(seq).is_some() {
                        repairs.insert(seq);
                    }
                }
            }
        }
    }

    /// Append to the datagram being built for `id` (under the traffic key) the group
    /// messages it asked for again, as `GROUP_DATA` frames, while they fit; whether any
    /// was written.
    pub(super) fn write_group_repairs(
        &mut self,
        now: Instant,
        id: NodeId,
        buf: &mut Vec<u8>,
    ) -> bool {
        let limit = self.cfg.mtu.saturating_sub(TAG_LEN);
        let Some(g) = self.group.as_mut() else {
            return false;
        };
        let Some(wanted) = g.repairs.get_mut(&id) else {
            return false;
        };
        let mut used = buf.len();
        let mut runs: Vec<(u64, usize, u16)> = Vec::new();
        let stats = &mut self.stats;
        with_scratch(|scratch| {
            scratch.clear();
            while let Some(&seq) = wanted.first() {
                let Some(m) = g.send.in_flight_message(seq) else {
                    // Acknowledged (or retired) meanwhile.
                    wanted.pop_first();
                    continue;
                };
                let extends = runs
                    .last()
                    .is_some_and(|(s, _, c)| s + u64::from(*c) == seq && *c < u16::MAX);
                let extra = m.len() + if extends { 0 } else { DATA_OVERHEAD };
                if used + extra > limit {
                    break;
                }
                used += extra;
                wanted.pop_first();
                match runs.last_mut() {
                    Some((_, _, c)) if extends => *c += 1,
                    _ => runs.push((seq, scratch.len(), 1)),
                }
                scratch.extend_from_slice(m);
            }
            let generation = g.send.generation();
            let mut w = FrameWriter::new(buf);
            for (i, &(seq, start, count)) in runs.iter().enumerate() {
                let end = runs.get(i + 1).map_or(scratch.len(), |r| r.1);
                w.group_data(generation, seq as u32, count, &scratch[start..end]);
                stats.group_repaired += u64::from(count);
            }
            // Their timeout starts over: the group gets them again only if this repair
            // (or the acknowledgement after it) is lost too.
            for &(seq, _, count) in &runs {
                for s in seq..seq + u64::from(count) {
                    g.send.resent(s, now);
                }
            }
            !runs.is_empty()
        })
    }

    /// A datagram that arrived on the group (multicast) socket: sealed for [`GROUP`] by
    /// a peer, in its verified epoch (docs/PROTOCOL.md §13.2). Returns why it was
    /// dropped, if it was (also counted in [`Node::drops`]).
    pub fn handle_group_datagram(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let r = self.receive_group(now, buf);
        if let Err(reason) = r {
            self.count_drop(reason);
        }
        r
    }

    fn receive_group(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let h = self.checked_header(buf)?;
        let id = h.node;
        let secrets = self.sealer.secrets();
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownNode)?;
        // Only a verified epoch's traffic key seals group datagrams: nothing of the
        // handshake travels on the group.
        if peer.link.epoch != Some(h.epoch) || h.key_id == 0 {
            return Err(DropReason::Unverified);
        }
        if !peer.link.open(&h, buf, &secrets, GROUP)? {
            return Err(DropReason::Unverified);
        }
        drop(secrets);
        let body = &buf[HEADER_LEN..buf.len() - TAG_LEN];
        let mut collected: SmallVec<[Frame<'_>; 4]> = SmallVec::new();
        for f in frames(body) {
            collected.push(f.map_err(|_| DropReason::Malformed)?);
        }
        let got = peer.link.take_group_frames(collected);
        if got.malformed {
            return Err(DropReason::Malformed);
        }
        self.stats.datagrams_received += 1;
        self.heard(id, now);
        for announced in got.roles {
            self.peer_role(id, announced);
        }
        for frame in got.data {
            self.deliver_from(id, now, frame, true);
        }
        if let Some(p) = self.peers.get_mut(&id)
            && p.link.role == WireRole::Primary
        {
            p.sync.was_primary = true;
        }
        self.settle(now);
        self.update_ready();
        Ok(())
    }
}
