//! Transmit assembly: one datagram's frames for a peer. Handshake frames first, then an
//! ACK or NACK when due, our role and readiness, and DATA (retransmissions first, then
//! new messages) while they fit in the MTU. The node seals what this writes.

use std::time::Instant;

use ctsync_wire::TAG_LEN;
use ctsync_wire::frame::{DATA_OVERHEAD, FrameWriter};
use ctsync_wire::header::HEADER_LEN;

use super::{Announce, Link, LinkTimer};
use crate::config::Config;
use crate::key::SplitMix;
use crate::stream::SendStream;

impl Link {
    /// Write the next datagram's body after a header-sized gap at the start of `buf`
    /// (cleared first). Returns `None` when nothing is due at `now`, else whether the
    /// datagram must go under the traffic key (`false`: the handshake key, which a peer
    /// that has not verified our epoch accepts, and handshake frames need).
    #[allow(clippy::too_many_arguments)] // the node's parts a datagram is made of
    pub(crate) fn write_datagram(
        &mut self,
        now: Instant,
        cfg: &Config,
        announce: Announce,
        generation: u32,
        rng: &mut SplitMix,
        scratch: &mut Vec<u8>,
        buf: &mut Vec<u8>,
    ) -> Option<bool> {
        let verified = self.epoch.is_some();
        let budget = cfg.mtu.saturating_sub(HEADER_LEN + TAG_LEN);
        buf.clear();
        buf.resize(HEADER_LEN, 0);
        let body_start = buf.len();
        let mut w = FrameWriter::new(buf);
        let handshake = self.write_handshake(now, cfg, &mut w, announce, generation, rng);
        let mut any = handshake;
        let mut alive = false;
        if verified {
            // An ACK goes out when due, or early on a datagram that carries data anyway.
            let piggyback = self.send.has_new() || self.send.retransmit_due(now, cfg.rto);
            if self
                .timers
                .get(LinkTimer::Ack)
                .is_some_and(|t| now >= t || piggyback)
            {
                if std::mem::take(&mut self.ack_stream) {
                    let (g, next, ranges) = self.recv.ack();
                    w.ack(g, next, &ranges);
                }
                if std::mem::take(&mut self.ack_group) {
                    let (g, next, ranges) = self.group_recv.ack();
                    w.group_ack(g, next, &ranges);
                }
                self.timers.stop(LinkTimer::Ack);
                self.unacked = 0;
                any = true;
            }
            if self.recv.nack_due && self.nack_sent.is_none_or(|t| now >= t + cfg.rto / 2) {
                let (g, gaps) = self.recv.nack();
                if !gaps.is_empty() {
                    w.nack(g, &gaps);
                    any = true;
                }
                self.recv.nack_due = false;
                self.nack_sent = Some(now);
            }
            if self.group_recv.nack_due
                && self.group_nack_sent.is_none_or(|t| now >= t + cfg.rto / 2)
            {
                let (g, gaps) = self.group_recv.nack();
                if !gaps.is_empty() {
                    w.group_nack(g, &gaps);
                    any = true;
                }
                self.group_recv.nack_due = false;
                self.group_nack_sent = Some(now);
            }
            // Our role and readiness in every datagram, before any DATA: the receiver
            // needs them to know what to do with the flows, and one lost announcement
            // must not leave it guessing (5 bytes a datagram).
            w.alive(announce.0, announce.1);
            alive = true;
            let used = w.len() - body_start;
            any |= write_data(&mut self.send, now, cfg, &mut w, used, budget, scratch);
        }
        if !any && (self.announce || self.timers.is_due(LinkTimer::Alive, now)) {
            // Keep-alive: the ALIVE above, or one now for an unverified peer.
            if !alive {
                w.alive(announce.0, announce.1);
            }
            any = true;
        }
        if !any {
            buf.clear();
            return None;
        }
        Some(verified && !handshake)
    }

    /// A datagram written by [`Link::write_datagram`] was sealed and goes out.
    pub(crate) fn sent(&mut self, now: Instant, cfg: &Config) {
        // A verified peer that is up needs only keepalives; one being challenged or
        // brought up gets the alive interval (or the longer one its HELLOs have grown
        // to, unanswered).
        self.announce = false;
        let next = if self.up && !self.reverify {
            now + cfg.keepalive_interval.max(cfg.alive_interval)
        } else {
            // Not later than our next HELLO is due, whatever else this datagram was (an
            // answer to its challenge, an announcement).
            let hello = self.hello_sent.map_or(now, |t| t + self.hello_every);
            (now + self.hello_every).min(hello.max(now))
        };
        self.timers.set(LinkTimer::Alive, next);
    }
}

/// DATA frames of `send`, retransmissions first, then new messages, while they fit in
/// `budget` (`used` bytes of it are taken): a peer's stream in its datagram, or the
/// group stream in a group datagram. Runs of consecutive sequence numbers go in one
/// frame each: (first seq, where its bytes start in `scratch`, count).
pub(crate) fn write_data(
    send: &mut SendStream,
    now: Instant,
    cfg: &Config,
    w: &mut FrameWriter<'_>,
    mut used: usize,
    budget: usize,
    scratch: &mut Vec<u8>,
) -> bool {
    let mut runs: Vec<(u64, usize, u16)> = Vec::new();
    scratch.clear();
    loop {
        let next = if send.retransmit_due(now, cfg.rto) {
            send.next_retransmit(now, cfg.rto)
        } else if send.has_new() {
            send.next_new(now)
        } else {
            None
        };
        let Some((seq, m)) = next else { break };
        let extends = runs
            .last()
            .is_some_and(|(s, _, c)| s + u64::from(*c) == seq && *c < u16::MAX);
        let extra = m.len() + if extends { 0 } else { DATA_OVERHEAD };
        if used + extra > budget {
            send.unsend(seq);
            break;
        }
        used += extra;
        match runs.last_mut() {
            Some((_, _, c)) if extends => *c += 1,
            _ => runs.push((seq, scratch.len(), 1)),
        }
        scratch.extend_from_slice(m);
    }
    let generation = send.generation();
    for (i, &(seq, start, count)) in runs.iter().enumerate() {
        let end = runs.get(i + 1).map_or(scratch.len(), |r| r.1);
        w.data(generation, seq as u32, count, &scratch[start..end]);
    }
    !runs.is_empty()
}
