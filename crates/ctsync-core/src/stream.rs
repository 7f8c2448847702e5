//! Reliable, ordered message streams, one per (sender, receiver) pair
//! (docs/PROTOCOL.md §6).
//!
//! Sequence numbers are 64-bit inside and travel as their low 32 bits; the receiver
//! takes the value nearest to what it expects (as QUIC does with packet numbers). A
//! stream has a generation: a reset starts a new generation at 0, and the sender follows
//! it with a bulk transfer, so nothing is lost across a reset.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ctsync_wire::Message;
use ctsync_wire::frame::SeqRange;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::key::{KeyHasher, Keyed};
use crate::message::{Encoded, Kind, encode, flow_key};

/// Expand a 32-bit wire sequence number to the 64-bit one nearest `expected`.
pub fn expand_seq(low: u32, expected: u64) -> u64 {
    let base = expected & !0xffff_ffff;
    let candidates = [
        base.wrapping_sub(1 << 32) | u64::from(low),
        base | u64::from(low),
        base.wrapping_add(1 << 32) | u64::from(low),
    ];
    candidates
        .into_iter()
        .min_by_key(|&c| c.abs_diff(expected))
        .unwrap_or(u64::from(low))
}

/// Entries a queue of an idle stream keeps room for: beyond this, the room a burst grew
/// is given back once the stream is idle. A burst is a load faster than the link, or a
/// repair of many buckets (every flow of them queued at once); a bulk transfer is paced
/// by the window and never queues the whole table.
const IDLE_KEPT: usize = 64;

/// Replace `queue` by an empty one when it holds room for more than [`IDLE_KEPT`].
fn give_back<T: Default>(queue: &mut T, capacity: fn(&T) -> usize) {
    if capacity(queue) > IDLE_KEPT {
        *queue = T::default();
    }
}

/// The key of the indexed pending message at absolute index `at`.
fn pending_key(pending: &VecDeque<Option<Pending>>, base: u64, at: u64) -> Option<&Keyed> {
    let idx = usize::try_from(at.checked_sub(base)?).ok()?;
    pending.get(idx)?.as_ref()?.key.as_ref()
}

/// A message waiting to be numbered, with the flow it concerns (for coalescing).
#[derive(Debug, Clone)]
struct Pending {
    /// Set when the message is indexed for coalescing.
    key: Option<Keyed>,
    /// The receiver has not heard of this flow (see [`Kind::FlowNew`]).
    fresh: bool,
    bytes: Encoded,
}

#[derive(Debug, Clone)]
struct InFlight {
    seq: u64,
    bytes: Encoded,
    sent_at: Option<Instant>,
    acked: bool,
}

/// Counters of a send stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Messages sent for the first time.
    pub sent: u64,
    /// Messages sent again.
    pub retransmitted: u64,
    /// Resets (the peer fell behind, restarted, or was down).
    pub resets: u64,
    /// Messages merged into a pending one for the same flow.
    pub coalesced: u64,
}

/// The sending half: pending messages, numbered ones in flight, retransmission.
#[derive(Debug)]
pub struct SendStream {
    generation: u32,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    /// (sent at, seq) in sending order: the retransmission deadlines, oldest first.
    timers: VecDeque<(Instant, u64)>,
    /// Messages to send again at once (NACKed, or numbered but not sent).
    urgent: VecDeque<u64>,
    pending: VecDeque<Option<Pending>>,
    pending_base: u64,
    pending_live: usize,
    /// The coalescing index: the absolute pending index of the message about a flow
    /// (looked up by the flow's carried hash, compared against the pending slot's key).
    /// The node's key hasher (messages pushed whole are keyed here).
    hasher: KeyHasher,
    by_key: HashTable<u64>,
    window: usize,
    limit: usize,
    /// The receiver acknowledged a message of this generation (so it has verified our
    /// epoch and takes this stream).
    acknowledged: bool,
    /// Counters.
    pub stats: SendStats,
}

impl SendStream {
    /// A stream allowing `window` messages in flight and `limit` pending.
    pub fn new(window: usize, limit: usize, hasher: KeyHasher) -> SendStream {
        SendStream {
            hasher,
            generation: 0,
            next_seq: 0,
            in_flight: VecDeque::new(),
            timers: VecDeque::new(),
            urgent: VecDeque::new(),
            pending: VecDeque::new(),
            pending_base: 0,
            pending_live: 0,
            by_key: HashTable::new(),
            window,
            limit,
            acknowledged: false,
            stats: SendStats::default(),
        }
    }

    /// The current generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Drop everything and start a new generation at sequence 0.
    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.next_seq = 0;
        self.in_flight.clear();
        self.timers.clear();
        self.urgent.clear();
        self.pending.clear();
        self.pending_base = 0;
        self.pending_live = 0;
        self.by_key.clear();
        self.acknowledged = false;
        self.stats.resets += 1;
    }

    /// Whether the receiver acknowledged any message of the current generation.
    pub fn acknowledged(&self) -> bool {
        self.acknowledged
    }

    /// The oldest sequence number still in flight (the next to be numbered if none).
    pub fn oldest(&self) -> u64 {
        self.in_flight.front().map_or(self.next_seq, |f| f.seq)
    }

    /// The bytes of in-flight message `seq`, unless it was acknowledged.
    pub fn in_flight_message(&self, seq: u64) -> Option<&[u8]> {
        let base = self.in_flight.front()?.seq;
        let idx = usize::try_from(seq.checked_sub(base)?).ok()?;
        self.in_flight
            .get(idx)
            .filter(|f| !f.acked)
            .map(|f| &f.bytes[..])
    }

    /// The sequence number the next message taken will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether every queued message is numbered (nothing waits in the pending queue).
    pub fn pending_is_empty(&self) -> bool {
        self.pending_live == 0
    }

    /// Retire every in-flight message below `next` (capped at what was numbered): a
    /// group stream's messages go when every member acknowledged them
    /// (docs/PROTOCOL.md §13.2).
    pub fn retire_below(&mut self, next: u64) {
        let next = next.min(self.next_seq);
        while self.in_flight.front().is_some_and(|f| f.seq < next) {
            self.in_flight.pop_front();
        }
        self.release_when_idle();
    }

    /// Once nothing is pending or in flight, give back the room a burst grew: every
    /// timer and urgent entry is stale then, every pending slot a cancelled one, and the
    /// coalescing index points at nothing live. Queues within [`IDLE_KEPT`] keep theirs.
    fn release_when_idle(&mut self) {
        if self.pending_live != 0 || !self.in_flight.is_empty() {
            return;
        }
        self.pending_base += self.pending.len() as u64;
        self.pending.clear();
        self.timers.clear();
        self.urgent.clear();
        self.by_key.clear();
        give_back(&mut self.in_flight, VecDeque::capacity);
        give_back(&mut self.timers, VecDeque::capacity);
        give_back(&mut self.urgent, VecDeque::capacity);
        give_back(&mut self.pending, VecDeque::capacity);
        give_back(&mut self.by_key, HashTable::capacity);
    }

    /// Messages pending or in flight.
    pub fn backlog(&self) -> usize {
        self.pending_live + self.in_flight.len()
    }

    /// Queue a message (encoded here; see [`SendStream::push_encoded`]).
    pub fn push(&mut self, message: Message) -> bool {
        let key = flow_key(&message).map(|k| self.hasher.keyed(k));
        self.push_encoded(key, Kind::of(&message), encode(&message))
    }

    /// Queue an encoded message about flow `key` (`None` for control messages). Flow
    /// messages for a flow that already has one pending replace it (the receiver only
    /// needs the latest state); a deletion of a flow whose creation is still pending
    /// cancels both. Returns `false` when the pending queue is full: the caller must
    /// reset the stream and resynchronise.
    pub fn push_encoded(&mut self, key: Option<Keyed>, kind: Kind, bytes: Encoded) -> bool {
        let Some(k) = key.filter(|_| kind != Kind::Control) else {
            // Control messages (bulk and repair boundaries, digests) are barriers: a flow
            // message after one must not be merged into a slot before it.
            self.by_key.clear();
            return self.enqueue(None, kind, bytes);
        };
        // One probe with the carried hash, whether it coalesces or is queued.
        let base = self.pending_base;
        let at = base + self.pending.len() as u64;
        let pending = &self.pending;
        let slot = self.by_key.entry(
            k.hash(),
            |&i| pending_key(pending, base, i) == Some(&k),
            |&i| pending_key(pending, base, i).map_or(0, Keyed::hash),
        );
        match slot {
            Entry::Occupied(mut o) => {
                let idx = (*o.get() - base) as usize;
                let Some(p) = self.pending.get_mut(idx).and_then(Option::as_mut) else {
                    // Stale (cannot happen: taken and cancelled slots leave the map):
                    // index the new message instead.
                    *o.get_mut() = at;
                    return self.enqueue(Some(k), kind, bytes);
                };
                self.stats.coalesced += 1;
                if p.fresh && kind == Kind::FlowDelete {
                    // Created and gone before it was sent: nothing to send.
                    self.pending[idx] = None;
                    o.remove();
                    self.pending_live -= 1;
                } else {
                    // The receiver's knowledge of the flow is what it was: a flow it knew
                    // stays known (a later deletion must reach it), a fresh one stays fresh.
                    p.bytes = bytes;
                }
                true
            }
            Entry::Vacant(v) => {
                if self.pending_live >= self.limit {
                    return false;
                }
                v.insert(at);
                self.enqueue(Some(k), kind, bytes)
            }
        }
    }

    /// Queue a flow update from a transfer (bulk or bucket repair): merged into a
    /// pending message for the flow if there is one, otherwise queued without being
    /// indexed, so that a transfer of 200,000 flows costs no index upkeep. Safe because a
    /// later message for the flow is then appended after this one (never merged into an
    /// earlier slot), and a later flow-new for it (which a deletion could cancel) only
    /// follows a deletion, itself queued after this one.
    pub fn push_transfer(&mut self, key: Keyed, bytes: Encoded) -> bool {
        let (pending, base) = (&self.pending, self.pending_base);
        if !self.by_key.is_empty()
            && self
                .by_key
                .find(key.hash(), |&i| pending_key(pending, base, i) == Some(&key))
                .is_some()
        {
            return self.push_encoded(Some(key), Kind::FlowUpdate, bytes);
        }
        self.enqueue(None, Kind::FlowUpdate, bytes)
    }

    /// Append to the pending queue, unless it is full.
    fn enqueue(&mut self, key: Option<Keyed>, kind: Kind, bytes: Encoded) -> bool {
        if self.pending_live >= self.limit {
            return false;
        }
        self.pending.push_back(Some(Pending {
            key,
            fresh: kind == Kind::FlowNew,
            bytes,
        }));
        self.pending_live += 1;
        true
    }

    /// Room for more messages in flight.
    pub fn window_open(&self) -> bool {
        self.in_flight.len() < self.window
    }

    /// Take the next pending message and number it (call only while the window is open).
    pub fn next_new(&mut self, now: Instant) -> Option<(u64, &[u8])> {
        if !self.window_open() {
            return None;
        }
        let p = loop {
            let slot = self.pending.pop_front()?;
            self.pending_base += 1;
            if let Some(p) = slot {
                break p;
            }
        };
        self.pending_live -= 1;
        // Its index entry (if it has one) goes: found by hash and position alone, no
        // key compared.
        let taken = self.pending_base - 1;
        if let Some(k) = p.key
            && let Ok(o) = self.by_key.find_entry(k.hash(), |&i| i == taken)
        {
            o.remove();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.sent += 1;
        self.in_flight.push_back(InFlight {
            seq,
            bytes: p.bytes,
            sent_at: Some(now),
            acked: false,
        });
        self.timers.push_back((now, seq));
        self.in_flight.back().map(|f| (f.seq, &f.bytes[..]))
    }

    /// The in-flight entry of `seq`: in-flight sequence numbers are contiguous.
    fn slot(&mut self, seq: u64) -> Option<&mut InFlight> {
        let base = self.in_flight.front()?.seq;
        let idx = usize::try_from(seq.checked_sub(base)?).ok()?;
        self.in_flight.get_mut(idx)
    }

    /// Drop timer entries that no longer describe a pending retransmission (acked,
    /// retired, or sent again since).
    fn prune_timers(&mut self) {
        while let Some(&(at, seq)) = self.timers.front() {
            let live = self
                .slot(seq)
                .is_some_and(|f| !f.acked && f.sent_at == Some(at));
            if live {
                break;
            }
            self.timers.pop_front();
        }
        while let Some(&seq) = self.urgent.front() {
            if self
                .slot(seq)
                .is_some_and(|f| !f.acked && f.sent_at.is_none())
            {
                break;
            }
            self.urgent.pop_front();
        }
    }

    /// Whether some in-flight message is due for retransmission at `now`. Amortised
    /// O(1): timers are kept in sending order, which is also deadline order.
    pub fn retransmit_due(&mut self, now: Instant, rto: Duration) -> bool {
        self.prune_timers();
        !self.urgent.is_empty() || self.timers.front().is_some_and(|&(at, _)| now >= at + rto)
    }

    /// The next message due for retransmission, marked as sent now.
    pub fn next_retransmit(&mut self, now: Instant, rto: Duration) -> Option<(u64, &[u8])> {
        if !self.retransmit_due(now, rto) {
            return None;
        }
        let seq = match self.urgent.pop_front() {
            Some(seq) => seq,
            None => self.timers.pop_front()?.1,
        };
        self.timers.push_back((now, seq));
        self.stats.retransmitted += 1;
        let f = self.slot(seq)?;
        f.sent_at = Some(now);
        Some((f.seq, &f.bytes[..]))
    }

    /// In-flight message `seq` was sent again another way (a group message repaired for
    /// one member alone): its retransmission timeout starts over from `now`.
    pub fn resent(&mut self, seq: u64, now: Instant) {
        if let Some(f) = self.slot(seq).filter(|f| !f.acked && f.sent_at.is_some()) {
            f.sent_at = Some(now);
            self.timers.push_back((now, seq));
        }
    }

    /// Put a message back as unsent (it did not fit in the datagram after all).
    pub fn unsend(&mut self, seq: u64) {
        if let Some(f) = self.slot(seq) {
            f.sent_at = None;
            self.urgent.push_front(seq);
        }
    }

    /// When the oldest unacknowledged message is due again (possibly earlier than
    /// needed: a stale timer only causes an early wake-up).
    pub fn next_deadline(&self, rto: Duration) -> Option<Instant> {
        self.timers.front().map(|&(at, _)| at + rto)
    }

    /// Whether messages are pending and the window lets them go.
    pub fn has_new(&self) -> bool {
        self.pending_live > 0 && self.window_open()
    }

    /// An acknowledgement from the receiver.
    pub fn on_ack(&mut self, generation: u32, next: u32, ranges: &[SeqRange]) {
        if generation != self.generation {
            return;
        }
        let expected = self.in_flight.front().map_or(self.next_seq, |f| f.seq);
        let next = expand_seq(next, expected).min(self.next_seq);
        self.acknowledged |= next > 0;
        while self.in_flight.front().is_some_and(|f| f.seq < next) {
            self.in_flight.pop_front();
        }
        for &(s, e) in ranges {
            let (s, e) = (expand_seq(s, next), expand_seq(e, next).min(self.next_seq));
            for seq in s..e.max(s) {
                if let Some(f) = self.slot(seq) {
                    f.acked = true;
                }
            }
        }
        // Fully acknowledged messages at the front are retired too.
        while self.in_flight.front().is_some_and(|f| f.acked) {
            self.in_flight.pop_front();
        }
        self.release_when_idle();
    }

    /// A negative acknowledgement: send these again now.
    pub fn on_nack(&mut self, generation: u32, ranges: &[SeqRange]) {
        if generation != self.generation {
            return;
        }
        let base = self.in_flight.front().map_or(self.next_seq, |f| f.seq);
        for &(s, e) in ranges {
            let (s, e) = (expand_seq(s, base), expand_seq(e, base).min(self.next_seq));
            for seq in s..e.max(s) {
                if let Some(f) = self.slot(seq).filter(|f| !f.acked && f.sent_at.is_some()) {
                    f.sent_at = None;
                    self.urgent.push_back(seq);
                }
            }
        }
    }
}

/// What the receive half hands up.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Messages now deliverable, in order.
    pub messages: Vec<Message>,
    /// The sender started a new generation: drop what the old one promised.
    pub reset: bool,
}

/// The receiving half: reordering, duplicate suppression, ACK and NACK state.
#[derive(Debug)]
pub struct RecvStream {
    generation: Option<u32>,
    next: u64,
    buffered: BTreeMap<u64, Option<Message>>,
    limit: usize,
    /// An ACK should go out.
    pub ack_due: bool,
    /// A NACK should go out (a gap was seen).
    pub nack_due: bool,
    /// Messages received twice (dropped).
    pub duplicates: u64,
    /// Messages dropped because they were too far ahead.
    pub overflow: u64,
    /// Messages delivered.
    pub received: u64,
}

impl RecvStream {
    /// A stream buffering at most `limit` out-of-order messages.
    pub fn new(limit: usize) -> RecvStream {
        RecvStream {
            generation: None,
            next: 0,
            buffered: BTreeMap::new(),
            limit,
            ack_due: false,
            nack_due: false,
            duplicates: 0,
            overflow: 0,
            received: 0,
        }
    }

    /// Forget the stream (the peer restarted).
    pub fn forget(&mut self) {
        self.generation = None;
        self.next = 0;
        self.buffered.clear();
    }

    /// Take the sender's stream of `generation` from `seq` on, forgetting what was
    /// buffered (a `GROUP_JOIN`, docs/PROTOCOL.md §13.3).
    pub fn join(&mut self, generation: u32, seq: u64) {
        self.generation = Some(generation);
        self.next = seq;
        self.buffered.clear();
        self.nack_due = false;
    }

    /// The generation being received.
    pub fn generation(&self) -> u32 {
        self.generation.unwrap_or(0)
    }

    /// Whether a gap is outstanding.
    pub fn has_gap(&self) -> bool {
        !self.buffered.is_empty()
    }

    /// Take in the messages of a `DATA` frame (`None` for a message type we skip).
    pub fn receive(
        &mut self,
        generation: u32,
        first: u32,
        messages: Vec<Option<Message>>,
    ) -> Delivery {
        let mut out = Delivery::default();
        match self.generation {
            Some(g) if generation.wrapping_sub(g) as i32 <= 0 && generation != g => return out, // old
            Some(g) if g == generation => {}
            _ => {
                out.reset = self.generation.is_some();
                self.generation = Some(generation);
                self.next = 0;
                self.buffered.clear();
            }
        }
        self.ack_due = true;
        let first = expand_seq(first, self.next);
        out.messages.reserve(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            let seq = first + i as u64;
            if seq == self.next && self.buffered.is_empty() {
                // In order, nothing waiting: deliver directly (the common case).
                out.messages.extend(m);
                self.next += 1;
                continue;
            }
            if seq < self.next || self.buffered.contains_key(&seq) {
                self.duplicates += 1;
                continue;
            }
            if seq - self.next > self.limit as u64 {
                self.overflow += 1;
                continue;
            }
            self.buffered.insert(seq, m);
        }
        while let Some(m) = self.buffered.remove(&self.next) {
            out.messages.extend(m);
            self.next += 1;
        }
        if !self.buffered.is_empty() {
            self.nack_due = true;
        }
        self.received += out.messages.len() as u64;
        out
    }

    /// The ACK to send: next expected and received ranges above it.
    pub fn ack(&self) -> (u32, u32, Vec<SeqRange>) {
        let mut ranges: Vec<SeqRange> = Vec::new();
        let mut cur: Option<(u64, u64)> = None;
        for &s in self.buffered.keys() {
            cur = match cur {
                Some((a, b)) if b == s => Some((a, s + 1)),
                Some((a, b)) => {
                    ranges.push((a as u32, b as u32));
                    Some((s, s + 1))
                }
                None => Some((s, s + 1)),
            };
        }
        if let Some((a, b)) = cur {
            ranges.push((a as u32, b as u32));
        }
        ranges.truncate(ctsync_wire::frame::MAX_RANGES);
        (self.generation(), self.next as u32, ranges)
    }

    /// The NACK to send: the gaps below the highest buffered message.
    pub fn nack(&self) -> (u32, Vec<SeqRange>) {
        let mut gaps = Vec::new();
        let mut at = self.next;
        for &s in self.buffered.keys() {
            if s > at {
                gaps.push((at as u32, s as u32));
            }
            at = s + 1;
        }
        gaps.truncate(ctsync_wire::frame::MAX_RANGES);
        (self.generation(), gaps)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test plays the shell, which owns the clock
mod tests {
    use super::*;

    fn msg(i: u32) -> Message {
        Message::BulkBegin { id: i }
    }

    #[test]
    fn expand_picks_the_nearest() {
        assert_eq!(expand_seq(5, 3), 5);
        assert_eq!(expand_seq(0xffff_fffe, 1 << 32), 0xffff_fffe);
        assert_eq!(expand_seq(2, (1 << 32) - 3), (1 << 32) + 2);
    }

    #[test]
    fn receive_reorders_and_drops_duplicates() {
        let mut r = RecvStream::new(100);
        let d = r.receive(1, 2, vec![Some(msg(2)), Some(msg(3))]);
        assert!(d.messages.is_empty());
        assert_eq!(r.nack(), (1, vec![(0, 2)]));
        let d = r.receive(1, 0, vec![Some(msg(0)), Some(msg(1)), Some(msg(2))]);
        assert_eq!(d.messages, vec![msg(0), msg(1), msg(2), msg(3)]);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.ack(), (1, 4, vec![]));
    }

    #[test]
    fn coalescing_keeps_only_the_latest_state() {
        use std::net::{IpAddr, Ipv4Addr};

        use ctnetlink::{Flow, Tuple, ipproto};
        let t = Tuple::ports(
            ipproto::TCP,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            1,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            2,
        );
        let mut f = Flow::new(t, t.inverse());
        let mut s = SendStream::new(10, 10, KeyHasher::default());
        assert!(s.push(Message::FlowNew(Box::new(f.clone()))));
        f.mark = Some(9);
        assert!(s.push(Message::FlowUpdate(Box::new(f.clone()))));
        assert_eq!(s.backlog(), 1);
        let now = Instant::now();
        let (_, m) = s.next_new(now).unwrap();
        assert_eq!(m, &encode(&Message::FlowUpdate(Box::new(f.clone())))[..]);
        // New then delete before sending: nothing at all.
        let mut s = SendStream::new(10, 10, KeyHasher::default());
        s.push(Message::FlowNew(Box::new(f.clone())));
        s.push(Message::FlowDelete(f.key()));
        assert_eq!(s.backlog(), 0);
        assert!(s.next_new(now).is_none());
        // A flow the receiver knows, deleted and created again, then deleted before
        // anything was sent: the deletion must still reach the receiver.
        let mut s = SendStream::new(10, 10, KeyHasher::default());
        s.push(Message::FlowDelete(f.key()));
        s.push(Message::FlowNew(Box::new(f.clone())));
        s.push(Message::FlowDelete(f.key()));
        assert_eq!(s.backlog(), 1);
        let (_, m) = s.next_new(now).unwrap();
        assert_eq!(m, &encode(&Message::FlowDelete(f.key()))[..]);
    }

    #[test]
    fn acks_retire_and_nacks_resend() {
        let mut s = SendStream::new(10, 100, KeyHasher::default());
        let now = Instant::now();
        for i in 0..5 {
            s.push(msg(i));
        }
        for _ in 0..5 {
            s.next_new(now);
        }
        s.on_ack(0, 2, &[(3, 4)]);
        assert_eq!(s.backlog(), 3);
        assert!(!s.retransmit_due(now, Duration::from_millis(100)));
        s.on_nack(0, &[(2, 3)]);
        let (seq, _) = s.next_retransmit(now, Duration::from_millis(100)).unwrap();
        assert_eq!(seq, 2);
        // Later, both unacknowledged ones are due again; 3 was acked selectively.
        let later = now + Duration::from_millis(150);
        let rto = Duration::from_millis(100);
        let due: Vec<u64> =
            std::iter::from_fn(|| s.next_retransmit(later, rto).map(|(q, _)| q)).collect();
        // Deadline order: 4 was sent first, 2 again after the NACK.
        assert_eq!(due, vec![4, 2]);
    }

    /// A burst of 10,000 messages, numbered 1,000 at a time and retired by `retire` (up to
    /// the sequence number given): the room stays while the stream is busy and goes back
    /// once it is idle; the stream then numbers on where it was.
    fn a_burst_then_idle(retire: impl Fn(&mut SendStream, u64)) {
        let mut s = SendStream::new(1000, 100_000, KeyHasher::default());
        let now = Instant::now();
        for i in 0..10_000 {
            assert!(s.push(msg(i)));
        }
        for _ in 0..1000 {
            s.next_new(now);
        }
        // Half retired: still busy, the room stays.
        retire(&mut s, 500);
        assert!(s.pending.capacity() >= 9000 && s.in_flight.capacity() >= 500);
        for _ in 0..20 {
            while s.next_new(now).is_some() {}
            let next = s.next_seq();
            retire(&mut s, next);
        }
        assert_eq!(s.backlog(), 0);
        for cap in [
            s.pending.capacity(),
            s.in_flight.capacity(),
            s.timers.capacity(),
            s.urgent.capacity(),
            s.by_key.capacity(),
        ] {
            assert!(cap <= IDLE_KEPT, "an idle queue kept room for {cap}");
        }
        // And it goes on numbering where it was, coalescing as before.
        assert!(s.push(msg(1)));
        let (seq, _) = s.next_new(now).unwrap();
        assert_eq!(seq, 10_000);
    }

    #[test]
    fn an_idle_stream_gives_back_what_a_burst_grew() {
        a_burst_then_idle(|s, next| s.on_ack(0, u32::try_from(next).unwrap(), &[]));
    }

    #[test]
    fn an_idle_group_stream_gives_back_what_a_burst_grew() {
        // A group stream's messages go by retire_below, never by on_ack (§13.2).
        a_burst_then_idle(SendStream::retire_below);
    }
}
