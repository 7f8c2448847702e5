//! A link: everything about one peer that the sync protocol's transport needs (as a
//! quinn-proto `Connection` is to its `Endpoint`). Its epoch and the handshake that
//! proves it live ([`handshake`]), its receive keys and replay windows ([`protect`]), both
//! reliable streams, liveness, and a table of named timers. The [`crate::Node`] routes
//! datagrams to links by sender and applies what they deliver to its caches.

pub(crate) mod handshake;
pub(crate) mod protect;
pub(crate) mod transmit;

use std::time::{Duration, Instant};

use ctsync_wire::frame::{DataMessages, Frame, SeqRange};
use ctsync_wire::header::Header;
use ctsync_wire::{Message, NodeId, ReplayWindow, WireRole};
use smallvec::SmallVec;

use super::timer::{Timer, TimerTable};
use crate::config::Config;
use crate::key::KeyHasher;
use crate::status::PeerStatus;
use crate::stream::{Delivery, RecvStream, SendStream};
use protect::RxKeys;

/// A link's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkTimer {
    /// A standalone acknowledgement is due.
    Ack,
    /// Something must be sent (an ALIVE at least) to keep the peer from declaring us dead.
    Alive,
    /// The peer is declared down if not heard from by then (armed while it is up).
    Dead,
}

impl Timer for LinkTimer {
    const COUNT: usize = 3;
    fn index(self) -> usize {
        self as usize
    }
}

/// The role and readiness a peer announced.
pub(crate) type Announce = (WireRole, bool);

/// A handshake outcome of a datagram, in frame order: the node acts on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// A HELLO whose version range excludes ours (it was not answered).
    Incompatible {
        /// Its lowest version.
        min: u8,
        /// Its highest version.
        max: u8,
    },
    /// The peer's epoch was proven live (`restarted`: it had a verified one before),
    /// with the role it announced in a HELLO of that epoch, if any.
    Verified {
        /// It had an earlier verified epoch.
        restarted: bool,
        /// Its role from a HELLO of the new epoch.
        announced: Option<Announce>,
    },
}

/// A DATA frame's messages (`None` for a message type we skip).
#[derive(Debug)]
pub(crate) struct DataFrame {
    /// The stream generation.
    pub(crate) generation: u32,
    /// The first message's sequence number (low 32 bits).
    pub(crate) first: u32,
    /// The messages.
    pub(crate) messages: Vec<Option<Message>>,
}

/// What one datagram brought, for the node to act on.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Handshake outcomes, in frame order.
    pub(crate) handshakes: SmallVec<[Handshake; 1]>,
    /// Roles announced (from a verified epoch only).
    pub(crate) roles: SmallVec<[Announce; 1]>,
    /// DATA frames.
    pub(crate) data: SmallVec<[DataFrame; 1]>,
    /// `GROUP_ACK`s of our group stream: (generation, next).
    pub(crate) group_acks: SmallVec<[(u32, u32); 1]>,
    /// `GROUP_NACK`s of our group stream: (generation, missing ranges).
    pub(crate) group_nacks: SmallVec<[(u32, Vec<SeqRange>); 1]>,
    /// `GROUP_DATA` frames: its group stream's messages sent to us alone (repairs).
    pub(crate) group_data: SmallVec<[DataFrame; 1]>,
    /// Data frames from an epoch not yet verified were refused.
    pub(crate) refused_data: bool,
    /// A DATA frame did not parse (frames after it were not looked at).
    pub(crate) malformed: bool,
}

/// A DATA frame's messages parsed, or `None` when their framing is broken.
fn data_frame(generation: u32, first: u32, count: u16, messages: &[u8]) -> Option<DataFrame> {
    let mut ms = Vec::with_capacity(usize::from(count));
    for m in DataMessages::new(messages, count) {
        ms.push(m.ok()?);
    }
    Some(DataFrame {
        generation,
        first,
        messages: ms,
    })
}

/// One peer, as the transport sees it.
#[derive(Debug)]
pub(crate) struct Link {
    /// Its node id.
    pub(crate) id: NodeId,
    /// Its epoch, once proven live by a challenge.
    pub(crate) epoch: Option<u64>,
    /// Our outstanding challenge to it.
    challenge: Option<u64>,
    /// When we last sent a `HELLO` (re-sent every `hello_every` while challenging).
    hello_sent: Option<Instant>,
    /// How far apart our `HELLO`s to it go: the alive interval; where another channel
    /// keeps the peers' liveness (a keepalive interval longer than the alive interval:
    /// the host link, docs/PROTOCOL.md §14.4) doubled after each one it leaves
    /// unanswered, up to the keepalive interval (a router that the peer host does not
    /// hold never answers). Back to the alive interval, and one due at once, when it
    /// challenges us itself or another channel's word of it comes back.
    hello_every: Duration,
    /// No word of it from another channel yet, or that word stopped
    /// ([`crate::Node::peer_word_lost`]): when it comes, a link that is down is
    /// challenged again at once.
    pub(crate) word_lost: bool,
    /// A challenge of its to answer.
    hello_ack_due: Option<u64>,
    /// An unverified epoch seen, with its own window (hello frames only).
    candidate: Option<(u64, ReplayWindow)>,
    /// Its verified epoch must be proven live again (it was down: its key generation
    /// may have moved on further than key ids can tell).
    reverify: bool,
    /// Our role or readiness changed: an ALIVE is due now (with a keepalive interval
    /// longer than the alive interval, nothing else would say it soon).
    pub(crate) announce: bool,
    /// Role and readiness from a HELLO of an epoch not verified yet, with that epoch;
    /// applied when (and only if) that epoch is verified.
    pending_role: Option<(u64, WireRole, bool)>,
    /// Replay window of its verified epoch.
    replay: ReplayWindow,
    rx: RxKeys,
    /// Highest traffic-key generation seen.
    rx_generation: u32,
    /// Last authenticated datagram from it, or word of it from another channel
    /// ([`crate::Node::peer_alive`]).
    pub(crate) last_heard: Option<Instant>,
    /// Last authenticated datagram from it (its own word only).
    pub(crate) own_heard: Option<Instant>,
    /// Whether it counts as up.
    pub(crate) up: bool,
    /// Its announced role.
    pub(crate) role: WireRole,
    /// Whether it says it is ready.
    ready: bool,
    /// Our stream to it.
    pub(crate) send: SendStream,
    /// Its stream to us.
    pub(crate) recv: RecvStream,
    /// Its group stream, as we take it (docs/PROTOCOL.md §13).
    pub(crate) group_recv: RecvStream,
    /// We take its group stream (a `GROUP_JOIN` came, no `BULK_BEGIN` since).
    pub(crate) group_joined: bool,
    /// Messages delivered since our last ACK.
    unacked: usize,
    /// An `ACK` of its stream is due with the next acknowledgement.
    ack_stream: bool,
    /// A `GROUP_ACK` of its group stream is due with the next acknowledgement.
    ack_group: bool,
    /// When we last sent a NACK.
    nack_sent: Option<Instant>,
    /// When we last sent a GROUP_NACK.
    group_nack_sent: Option<Instant>,
    timers: TimerTable<LinkTimer, { LinkTimer::COUNT }>,
}

impl Link {
    /// A peer not heard from yet; something is due to it at once.
    pub(crate) fn new(id: NodeId, cfg: &Config, hasher: &KeyHasher, now: Instant) -> Link {
        let mut timers = TimerTable::new();
        timers.set(LinkTimer::Alive, now);
        Link {
            id,
            epoch: None,
            challenge: None,
            hello_sent: None,
            hello_every: cfg.alive_interval,
            word_lost: true,
            hello_ack_due: None,
            candidate: None,
            reverify: false,
            announce: false,
            pending_role: None,
            replay: ReplayWindow::default(),
            rx: RxKeys::default(),
            rx_generation: 0,
            last_heard: None,
            own_heard: None,
            up: false,
            role: WireRole::Unknown,
            ready: false,
            send: SendStream::new(cfg.window, cfg.queue_limit, hasher.clone()),
            recv: RecvStream::new(cfg.window * 4),
            group_recv: RecvStream::new(cfg.window * 4),
            group_joined: false,
            unacked: 0,
            ack_stream: false,
            ack_group: false,
            nack_sent: None,
            group_nack_sent: None,
            timers,
        }
    }

    /// Whether it is up with a verified epoch: live messages may be queued to it.
    pub(crate) fn is_live(&self) -> bool {
        self.epoch.is_some() && self.up
    }

    /// Act on the frames of a datagram that [`Link::open`] accepted (`verified`: from
    /// the peer's verified epoch). Handshake frames are handled here; the rest is
    /// returned for the node.
    pub(crate) fn take_frames<'a>(
        &mut self,
        now: Instant,
        cfg: &Config,
        h: &Header,
        verified: bool,
        frames: impl IntoIterator<Item = Frame<'a>>,
    ) -> Received {
        let mut r = Received::default();
        for f in frames {
            match f {
                Frame::Hello {
                    challenge,
                    min_version,
                    max_version,
                    role,
                    ready,
                } => {
                    match self.on_hello(
                        h.epoch,
                        verified,
                        challenge,
                        (min_version, max_version),
                        (role, ready),
                        &mut r.roles,
                    ) {
                        Some(hs) => r.handshakes.push(hs),
                        // It is there and challenges us: our own challenge goes with
                        // the answer, however far apart our HELLOs had grown.
                        None => self.ask_again(now, cfg),
                    }
                }
                Frame::HelloAck {
                    echo, generation, ..
                } => {
                    if let Some(hs) =
                        self.on_hello_ack(now, cfg, h.epoch, verified, echo, generation)
                    {
                        r.handshakes.push(hs);
                    }
                }
                _ if !verified => r.refused_data = true,
                Frame::Alive { role, ready } => r.roles.push((role, ready)),
                Frame::Ack {
                    generation,
                    next,
                    ranges,
                } => self.send.on_ack(generation, next, &ranges),
                Frame::Nack { generation, ranges } => self.send.on_nack(generation, &ranges),
                Frame::GroupAck {
                    generation, next, ..
                } => r.group_acks.push((generation, next)),
                Frame::GroupNack { generation, ranges } => r.group_nacks.push((generation, ranges)),
                Frame::GroupData {
                    generation,
                    first,
                    count,
                    messages,
                } => match data_frame(generation, first, count, messages) {
                    Some(d) => r.group_data.push(d),
                    None => {
                        r.malformed = true;
                        return r;
                    }
                },
                Frame::Data {
                    generation,
                    first,
                    count,
                    messages,
                } => match data_frame(generation, first, count, messages) {
                    Some(d) => r.data.push(d),
                    None => {
                        r.malformed = true;
                        return r;
                    }
                },
                Frame::Unknown(_) => {}
            }
        }
        r
    }

    /// The frames of a group datagram of its verified epoch (docs/PROTOCOL.md §13.2):
    /// only `ALIVE` and `DATA` (of its group stream) count; any other frame is ignored.
    pub(crate) fn take_group_frames<'a>(
        &mut self,
        frames: impl IntoIterator<Item = Frame<'a>>,
    ) -> Received {
        let mut r = Received::default();
        for f in frames {
            match f {
                Frame::Alive { role, ready } => r.roles.push((role, ready)),
                Frame::Data {
                    generation,
                    first,
                    count,
                    messages,
                } => match data_frame(generation, first, count, messages) {
                    Some(d) => r.data.push(d),
                    None => {
                        r.malformed = true;
                        return r;
                    }
                },
                _ => {}
            }
        }
        r
    }

    /// Take in a DATA frame of its group stream, if we are joined to it (else it is
    /// dropped: the sender keeps it until we acknowledge). Schedules the `GROUP_ACK`.
    pub(crate) fn deliver_group(
        &mut self,
        now: Instant,
        cfg: &Config,
        frame: DataFrame,
    ) -> Delivery {
        if !self.group_joined || frame.generation != self.group_recv.generation() {
            // Not joined, or of another generation than the one joined (a stream the
            // sender started after taking us out): what we need comes on its own stream.
            return Delivery::default();
        }
        let d = self
            .group_recv
            .receive(frame.generation, frame.first, frame.messages);
        self.ack_group = true;
        self.schedule_ack(now, cfg, d.messages.len());
        d
    }

    /// Join its group stream of `generation` at `seq` (a `GROUP_JOIN` from it).
    pub(crate) fn join_group(&mut self, generation: u32, seq: u64) {
        self.group_recv.join(generation, seq);
        self.group_joined = true;
    }

    /// A role from a HELLO after the HELLO_ACK that verified its epoch (in the same
    /// datagram), now that the epoch is verified.
    pub(crate) fn take_verified_role(&mut self) -> Option<Announce> {
        match self.pending_role {
            Some((e, role, ready)) if self.epoch == Some(e) => {
                self.pending_role = None;
                Some((role, ready))
            }
            _ => None,
        }
    }

    /// Challenge it again (if its epoch is unverified) at once, or an alive interval
    /// after our last HELLO if that was sooner, and every alive interval from there: no
    /// more often than before the HELLOs grew apart, however many HELLOs of its (or
    /// replays of them) arrive.
    pub(crate) fn ask_again(&mut self, now: Instant, cfg: &Config) {
        self.hello_every = cfg.alive_interval;
        let due = self
            .hello_sent
            .map_or(now, |t| (t + cfg.alive_interval).max(now));
        let at = self
            .timers
            .get(LinkTimer::Alive)
            .map_or(due, |t| t.min(due));
        self.timers.set(LinkTimer::Alive, at);
    }

    /// It counts as up until `t` (then down, unless heard again): another channel's word
    /// holds it ([`crate::Node::peer_alive`]), or no longer does.
    pub(crate) fn hold_until(&mut self, t: Instant) {
        self.timers.set(LinkTimer::Dead, t);
    }

    /// An authenticated datagram of its verified epoch arrived. Returns whether it came
    /// up by it.
    pub(crate) fn heard(&mut self, now: Instant, cfg: &Config) -> bool {
        self.last_heard = Some(now);
        // Never sooner than another channel's word holds it (`hold_until`).
        let dead = now + cfg.dead_interval;
        let held = self.timers.get(LinkTimer::Dead).filter(|_| self.up);
        self.timers
            .set(LinkTimer::Dead, held.map_or(dead, |t| t.max(dead)));
        let came_up = !self.up;
        self.up = true;
        came_up
    }

    /// Record the role it announced. Returns whether it became primary by it.
    pub(crate) fn announce(&mut self, (role, ready): Announce) -> bool {
        let became_primary = role == WireRole::Primary && self.role != WireRole::Primary;
        self.role = role;
        self.ready = ready;
        became_primary
    }

    /// Take in a DATA frame's messages; schedules the acknowledgement. A quarter of a
    /// window is acknowledged at once, so that a sender with a full window does not sit
    /// out the ACK delay (docs/PROTOCOL.md §6).
    pub(crate) fn deliver(&mut self, now: Instant, cfg: &Config, frame: DataFrame) -> Delivery {
        let d = self
            .recv
            .receive(frame.generation, frame.first, frame.messages);
        self.ack_stream = true;
        self.schedule_ack(now, cfg, d.messages.len());
        d
    }

    /// `delivered` messages arrived: the acknowledgement is due within the ACK delay,
    /// at once after a quarter of a window.
    fn schedule_ack(&mut self, now: Instant, cfg: &Config, delivered: usize) {
        self.unacked += delivered;
        if self.unacked >= (cfg.window / 4).max(1) {
            self.timers.set(LinkTimer::Ack, now);
        } else if self.timers.get(LinkTimer::Ack).is_none() {
            self.timers.set(LinkTimer::Ack, now + cfg.ack_delay);
        }
    }

    /// Whether it was not heard from for the dead interval (and was up).
    pub(crate) fn is_dead(&self, now: Instant) -> bool {
        self.up && self.timers.is_due(LinkTimer::Dead, now)
    }

    /// Declare it down: its epoch must be proven live again, our stream to it starts
    /// over when it is back.
    pub(crate) fn down(&mut self) {
        self.up = false;
        self.reverify = true;
        self.challenge = None;
        self.send.reset();
        self.timers.stop(LinkTimer::Dead);
    }

    /// The next time something is due on this link.
    pub(crate) fn poll_timeout(&self, cfg: &Config) -> Option<Instant> {
        let stream = self.send.next_deadline(cfg.rto);
        match (self.timers.next(), stream) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forget cached receive keys (the cluster keys changed).
    pub(crate) fn forget_rx_keys(&mut self) {
        self.rx.forget();
        self.rx.secret = 0;
    }

    /// Its part of the node's status (`synced` is the node's to say).
    pub(crate) fn status(&self, synced: bool) -> PeerStatus {
        PeerStatus {
            id: self.id,
            up: self.up,
            epoch: self.epoch,
            role: crate::Role::from_wire(self.role),
            ready: self.ready,
            synced,
            last_heard: self.last_heard,
            received: self.recv.received,
            duplicates: self.recv.duplicates,
            sent: self.send.stats.sent,
            retransmitted: self.send.stats.retransmitted,
            resets: self.send.stats.resets,
            backlog: self.send.backlog(),
            // The node's to say.
            group_member: false,
            group_joined: self.group_joined,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[allow(clippy::disallowed_methods)] // an origin for the test's clock
    fn link() -> (Link, Config, Instant) {
        let cfg = Config::new(1, vec![1, 2]);
        let now = Instant::now();
        (Link::new(2, &cfg, &KeyHasher::default(), now), cfg, now)
    }

    #[test]
    fn something_is_due_to_a_new_peer_at_once() {
        let (l, cfg, t0) = link();
        assert_eq!(l.poll_timeout(&cfg), Some(t0));
        assert!(!l.is_live());
    }

    #[test]
    fn only_the_echo_of_our_challenge_verifies_an_epoch() {
        let (mut l, cfg, t0) = link();
        l.challenge = Some(5);
        assert_eq!(l.on_hello_ack(t0, &cfg, 9, false, 4, 1), None);
        assert_eq!(l.epoch, None);
        assert_eq!(
            l.on_hello_ack(t0, &cfg, 9, false, 5, 1),
            Some(Handshake::Verified {
                restarted: false,
                announced: None
            })
        );
        assert_eq!(l.epoch, Some(9));
        assert!(l.is_live());
        // A second answer to the same challenge proves nothing more.
        assert_eq!(l.on_hello_ack(t0, &cfg, 9, false, 5, 1), None);
    }

    #[test]
    fn a_peer_is_dead_a_dead_interval_after_it_was_last_heard() {
        let (mut l, cfg, t0) = link();
        assert!(l.heard(t0, &cfg), "the first datagram brings it up");
        assert!(!l.heard(t0, &cfg));
        let dead = t0 + cfg.dead_interval;
        assert!(!l.is_dead(dead - Duration::from_millis(1)));
        assert!(l.is_dead(dead));
        l.down();
        assert!(!l.is_dead(dead + cfg.dead_interval), "down once, not again");
        assert!(l.reverify, "its epoch must be proven live again");
        assert_eq!(l.timers.get(LinkTimer::Dead), None);
    }

    #[test]
    fn a_quarter_window_is_acknowledged_at_once_less_waits_for_the_delay() {
        let (mut l, cfg, t0) = link();
        let few = DataFrame {
            generation: 1,
            first: 0,
            messages: vec![Some(Message::ResyncRequest); 3],
        };
        l.deliver(t0, &cfg, few);
        assert_eq!(l.timers.get(LinkTimer::Ack), Some(t0 + cfg.ack_delay));
        let many = DataFrame {
            generation: 1,
            first: 3,
            messages: vec![Some(Message::ResyncRequest); cfg.window / 4],
        };
        l.deliver(t0, &cfg, many);
        assert_eq!(l.timers.get(LinkTimer::Ack), Some(t0));
    }
}
