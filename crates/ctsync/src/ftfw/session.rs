//! One FTFW session with a conntrackd peer, sans-IO: datagrams and the time go in,
//! datagrams and flow changes come out. No socket, clock or kernel here.
//!
//! The algorithm is conntrackd's (`src/sync-ftfw.c`, 1.4.7; research/conntrackd.md §3):
//!
//! * one sequence number per message sent, data and control alike; a message sent
//!   again gets a new one;
//! * received messages are counted against a window (`ACKWindowSize`, 300): a full
//!   window is acknowledged with ACK `[first, last]`; a gap is answered with an ACK of
//!   what came before it and a NACK of the missing range; older numbers are dropped;
//! * data, ACK, NACK and RESYNC sent are kept in a bounded resend queue until
//!   acknowledged; a NACK sends the named ones again, the oldest falls out when full;
//! * a second without sending anything sends the pending ACK, or an ALIVE;
//! * HELLO rides on every message until the peer answers with HELLO_BACK; a HELLO from
//!   the peer restarts the count of what we received and empties our resend queue
//!   (the restarted peer knows none of it).
//!
//! The peer asks for our whole table with RESYNC: [`Received::Resync`] tells the
//! caller, which queues it with [`Session::send_flow`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ctnetlink::{Expectation, Flow};

use super::codec::{self, Class, CodecError, flag, kind};
use super::expect;

/// `a` comes before `b` in sequence space (wrap-safe, as TCP compares).
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b`.
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// What a session is told at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Messages received per acknowledgement (conntrackd's `ACKWindowSize`, 300).
    pub ack_window: u32,
    /// Messages kept for sending again (conntrackd's `ResendQueueSize`, 131072).
    pub resend_limit: usize,
    /// Send something at least this often (conntrackd's `ALIVE_INT`, 1 s).
    pub alive: Duration,
    /// Largest datagram (conntrackd: the interface MTU − 28).
    pub mtu: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ack_window: 300,
            resend_limit: 131_072,
            alive: Duration::from_secs(1),
            mtu: 1400,
        }
    }
}

/// Which state message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMessage {
    /// A new flow (`CT_NEW`).
    New,
    /// A flow changed, or is sent again whole (`CT_UPD`).
    Update,
    /// A flow is gone (`CT_DEL`).
    Delete,
}

/// What the peer told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A flow of the peer's table, new or changed.
    Upsert(Flow),
    /// A flow of the peer's table is gone.
    Delete(Flow),
    /// An expectation of the peer's (a helper's: FTP data, SIP media), new or changed.
    ExpUpsert(Box<Expectation>),
    /// An expectation of the peer's is gone (met, or expired).
    ExpDelete(Box<Expectation>),
    /// The peer asks for our whole table.
    Resync,
}

/// A message waiting to be sent, or sent and waiting for its ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outgoing {
    /// A state message: its type and attributes.
    State { kind: u8, body: Box<[u8]> },
    /// A control message: its flags and range.
    Control {
        flags: u8,
        range: Option<(u32, u32)>,
    },
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::State { body, .. } => codec::HEADER_LEN + body.len(),
            Outgoing::Control { range: Some(_), .. } => codec::CTL_RANGE_LEN,
            Outgoing::Control { range: None, .. } => codec::HEADER_LEN,
        }
    }

    /// Kept for sending again (conntrackd keeps data, ACK, NACK and RESYNC).
    fn kept(&self) -> bool {
        !matches!(self, Outgoing::Control { range: None, .. })
    }
}

/// A session's counters (the status shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Flow messages received and understood.
    pub flows_received: u64,
    /// Messages dropped as older than what was already received.
    pub old_dropped: u64,
    /// Messages or datagrams that could not be parsed (by any [`CodecError`]).
    pub malformed: u64,
    /// Expectation messages received and understood.
    pub expectations_received: u64,
    /// Expectation messages sent (first time).
    pub expectations_sent: u64,
    /// Gaps seen (each answered with a NACK).
    pub gaps: u64,
    /// ACKs received.
    pub acks_received: u64,
    /// NACKs received.
    pub nacks_received: u64,
    /// RESYNC requests received.
    pub resyncs_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Flow messages sent (first time).
    pub flows_sent: u64,
    /// Messages sent again after a NACK.
    pub resent: u64,
    /// Messages that fell out of a full resend queue unacknowledged.
    pub resend_overflow: u64,
    /// Flows this dialect cannot carry, not sent.
    pub unencodable: u64,
    /// HELLOs from the peer (its restarts).
    pub hellos_received: u64,
}

/// An FTFW session with one conntrackd peer.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// The next sequence number to send.
    next_seq: u32,
    /// The peer answered our HELLO.
    hello_done: bool,
    /// The peer said HELLO: the next message carries HELLO_BACK.
    say_hello_back: bool,
    /// The last sequence number received and taken.
    last_received: Option<u32>,
    /// The first received sequence number not yet acknowledged.
    ack_from: Option<u32>,
    /// Messages until the next window ACK.
    window: u32,
    /// Waiting to be sent.
    tx: VecDeque<Outgoing>,
    /// Sent, waiting for an ACK, by sequence number (ascending).
    resend: VecDeque<(u32, Outgoing)>,
    /// What the peer told us, for the caller.
    received: VecDeque<Received>,
    /// When an idle second is up.
    alive_at: Instant,
    /// When something was last received.
    last_heard: Option<Instant>,
    /// Counters.
    pub stats: SessionStats,
}

impl Session {
    /// A new session; `first_seq` is the first sequence number to send (conntrackd takes
    /// the Unix time, so that a restart does not reuse recent numbers).
    pub fn new(cfg: SessionConfig, first_seq: u32, now: Instant) -> Session {
        Session {
            cfg,
            next_seq: first_seq,
            hello_done: false,
            say_hello_back: false,
            last_received: None,
            ack_from: None,
            window: cfg.ack_window.max(1),
            tx: VecDeque::new(),
            resend: VecDeque::new(),
            received: VecDeque::new(),
            alive_at: now + cfg.alive,
            last_heard: None,
            stats: SessionStats::default(),
        }
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Messages waiting to be sent, and sent but not acknowledged.
    pub fn backlog(&self) -> (usize, usize) {
        (self.tx.len(), self.resend.len())
    }

    /// Whether the peer answered our HELLO.
    pub fn hello_done(&self) -> bool {
        self.hello_done
    }

    /// Queue a flow for the peer. A flow this dialect cannot carry is counted and left.
    pub fn send_flow(&mut self, what: FlowMessage, flow: &Flow) -> Result<(), CodecError> {
        let mut body = Vec::with_capacity(96);
        if let Err(e) = codec::encode_flow(flow, &mut body) {
            self.stats.unencodable += 1;
            return Err(e);
        }
        let kind = match what {
            FlowMessage::New => kind::CT_NEW,
            FlowMessage::Update => kind::CT_UPD,
            FlowMessage::Delete => kind::CT_DEL,
        };
        self.stats.flows_sent += 1;
        self.tx.push_back(Outgoing::State {
            kind,
            body: body.into_boxed_slice(),
        });
        Ok(())
    }

    /// Queue an expectation for the peer (`EXP_NEW`, `EXP_UPD`, `EXP_DEL`). One this
    /// dialect cannot carry is counted and left.
    pub fn send_expectation(
        &mut self,
        what: FlowMessage,
        e: &Expectation,
    ) -> Result<(), CodecError> {
        let mut body = Vec::with_capacity(160);
        if let Err(err) = expect::encode_expectation(e, &mut body) {
            self.stats.unencodable += 1;
            return Err(err);
        }
        let kind = match what {
            FlowMessage::New => kind::EXP_NEW,
            FlowMessage::Update => kind::EXP_UPD,
            FlowMessage::Delete => kind::EXP_DEL,
        };
        self.stats.expectations_sent += 1;
        self.tx.push_back(Outgoing::State {
            kind,
            body: body.into_boxed_slice(),
        });
        Ok(())
    }

    /// Ask the peer for its whole table (conntrackd's `-n`).
    pub fn request_resync(&mut self) {
        self.tx.push_back(Outgoing::Control {
            flags: flag::RESYNC,
            range: Some((0, 0)),
        });
    }

    /// What the peer told us, in order.
    pub fn poll_received(&mut self) -> Option<Received> {
        self.received.pop_front()
    }

    /// A datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.datagrams_received += 1;
        self.last_heard = Some(now);
        for m in codec::messages(datagram) {
            match m {
                Ok(m) => self.handle_message(&m),
                Err(_) => self.stats.malformed += 1,
            }
        }
    }

    fn control(&mut self, flags: u8, range: Option<(u32, u32)>) {
        self.tx.push_back(Outgoing::Control { flags, range });
    }

    fn handle_message(&mut self, m: &codec::Message<'_>) {
        let Some(class) = m.class() else {
            // conntrackd: a bad type is not taken, its number not counted.
            self.stats.malformed += 1;
            return;
        };
        if m.flags & flag::HELLO_BACK != 0 {
            self.hello_done = true;
        }
        let hello = m.flags & flag::HELLO != 0;
        if hello {
            // The peer (re)started: what it had of us is gone, and its numbers begin
            // again here.
            self.stats.hellos_received += 1;
            self.say_hello_back = true;
            if self.ack_from.is_some_and(|a| before(m.seq, a)) {
                self.window = self.cfg.ack_window.saturating_sub(1).max(1);
                self.ack_from = Some(m.seq);
            }
            self.resend.clear();
        }
        let expected = self.last_received.map(|l| l.wrapping_add(1));
        let gap = match expected {
            _ if hello => None,
            None => None,
            Some(e) if m.seq == e => None,
            Some(e) if after(m.seq, e) => Some(e),
            Some(_) => {
                self.stats.old_dropped += 1;
                return;
            }
        };
        if !self.digest(m, class) {
            self.stats.malformed += 1;
            return;
        }
        match gap {
            Some(e) => {
                self.stats.gaps += 1;
                if let Some(a) = self.ack_from.take() {
                    self.control(flag::ACK, Some((a, e.wrapping_sub(1))));
                }
                self.control(flag::NACK, Some((e, m.seq.wrapping_sub(1))));
                self.window = self.cfg.ack_window.saturating_sub(1).max(1);
                self.ack_from = Some(m.seq);
            }
            None => {
                let from = *self.ack_from.get_or_insert(m.seq);
                self.window = self.window.saturating_sub(1);
                if self.window == 0 {
                    self.control(flag::ACK, Some((from, m.seq)));
                    self.window = self.cfg.ack_window.max(1);
                    self.ack_from = None;
                }
            }
        }
        self.last_received = Some(m.seq);
    }

    /// Take one message; false if it was bad (a range ending before it begins).
    fn digest(&mut self, m: &codec::Message<'_>, class: Class) -> bool {
        match class {
            Class::Flow(k) => {
                match codec::decode_flow(m.body) {
                    Ok(f) => {
                        self.stats.flows_received += 1;
                        self.received.push_back(if k == kind::CT_DEL {
                            Received::Delete(f)
                        } else {
                            Received::Upsert(f)
                        });
                    }
                    // Taken and acknowledged all the same, as conntrackd does: sending
                    // it again would not make it readable.
                    Err(_) => self.stats.malformed += 1,
                }
                true
            }
            Class::Expectation(k) => {
                match expect::decode_expectation(m.body) {
                    Ok(e) => {
                        self.stats.expectations_received += 1;
                        let e = Box::new(e);
                        self.received.push_back(if k == kind::EXP_DEL {
                            Received::ExpDelete(e)
                        } else {
                            Received::ExpUpsert(e)
                        });
                    }
                    // Taken and acknowledged, as a flow that cannot be read.
                    Err(_) => self.stats.malformed += 1,
                }
                true
            }
            Class::Ack | Class::Nack => {
                let Some((from, to)) = m.range else {
                    return false;
                };
                if before(to, from) {
                    return false;
                }
                let named = |s: u32| !before(s, from) && !after(s, to);
                if class == Class::Ack {
                    self.stats.acks_received += 1;
                    self.resend.retain(|(s, _)| !named(*s));
                } else {
                    self.stats.nacks_received += 1;
                    let mut again = Vec::new();
                    self.resend.retain(|(s, o)| {
                        if named(*s) {
                            again.push(o.clone());
                            false
                        } else {
                            true
                        }
                    });
                    self.stats.resent += again.len() as u64;
                    // Ahead of what is new: they are older.
                    for o in again.into_iter().rev() {
                        self.tx.push_front(o);
                    }
                }
                true
            }
            Class::Resync => {
                self.stats.resyncs_received += 1;
                self.received.push_back(Received::Resync);
                true
            }
            Class::Alive => true,
        }
    }

    /// Time passed: an idle second sends the pending ACK, or an ALIVE.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.alive_at {
            return;
        }
        match (self.ack_from.take(), self.last_received) {
            (Some(from), Some(last)) => {
                self.control(flag::ACK, Some((from, last)));
                self.window = self.cfg.ack_window.max(1);
            }
            _ => self.control(flag::ALIVE, None),
        }
        self.alive_at = now + self.cfg.alive;
    }

    /// When [`Session::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        self.alive_at
    }

    /// The next datagram to send, into `buf` (cleared first): whole messages up to the
    /// MTU. False when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        while let Some(next) = self.tx.front() {
            if !buf.is_empty() && buf.len() + next.len() > self.cfg.mtu {
                break;
            }
            let Some(o) = self.tx.pop_front() else {
                break;
            };
            let seq = self.next_seq;
            self.next_seq = seq.wrapping_add(1);
            let mut flags = if self.hello_done { 0 } else { flag::HELLO };
            if std::mem::take(&mut self.say_hello_back) {
                flags |= flag::HELLO_BACK;
            }
            match &o {
                Outgoing::State { kind, body } => {
                    if codec::put_state(buf, *kind, flags, seq, body).is_none() {
                        self.stats.unencodable += 1;
                        continue;
                    }
                }
                Outgoing::Control { flags: f, range } => {
                    codec::put_control(buf, f | flags, seq, *range)
                }
            }
            if o.kept() {
                if self.resend.len() >= self.cfg.resend_limit.max(1) {
                    self.resend.pop_front();
                    self.stats.resend_overflow += 1;
                }
                self.resend.push_back((seq, o));
            }
        }
        if buf.is_empty() {
            return false;
        }
        self.stats.datagrams_sent += 1;
        self.alive_at = now + self.cfg.alive;
        true
    }
}

#[cfg(test)]
mod tests;
