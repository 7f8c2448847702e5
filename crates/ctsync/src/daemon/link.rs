//! The sync links: a UDP socket per link (`[sync]`'s own, then each `[[sync.link]]`),
//! the one transmit path, and which link carries the datagrams to each peer.
//!
//! The stream to a peer is the core's and there is one; a link is only a path
//! (DESIGN.md, "Several sync links per peer, one stream"). So a move from one link to
//! another is the shell's business alone: the next datagram goes out on the other
//! socket, the core neither knows nor resets anything, and no bulk transfer follows.
//!
//! * **Which link.** Per peer, [`PeerPaths`] remembers when the peer was last heard on
//!   each link (only datagrams the core took, or byte-for-byte copies of one: a forged
//!   datagram cannot keep a link alive) and sends on the first link heard within
//!   `[timers] dead_ms`, or on the first link when none was.
//! * **Knowing the others.** A datagram also goes out, as an exact copy, on every other
//!   link at most every half alive interval, so that each peer hears us on every link
//!   and standby links are known to work (or not) before they are needed. A copy that
//!   arrives after its twin is recognised by [`Recent`] and not handed to the core, so
//!   it is counted as `link_copies`, not as a replay; a copy that arrives first is taken
//!   by the core like any datagram (then its twin is the copy).
//!
//! With one link all of this reduces to what it was: one socket, no copies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::task::Poll;
use std::time::{Duration, Instant};

use ctsync_core::Node;
use ctsync_wire::{HEADER_LEN, Header, NodeId, TAG_LEN};
use tokio::net::UdpSocket;

use super::log;

/// A UDP datagram's largest size: what a socket of our own reads into.
const DATAGRAM_MAX: usize = 65536;

thread_local! {
    /// The datagram being sent, shared by the sync links of this thread (a daemon of many
    /// namespaces has a link a router, and each kept a buffer of the largest datagram it
    /// had sent): lent for one turn's sends, which never await.
    static TX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The datagram being received, shared the same way, for one turn's reads.
    static RX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Datagrams read per loop turn from each link. Small, so that acknowledgements go out
/// between turns while a peer streams (with 1,024 a bulk transfer's sender sat on a full
/// window).
pub(super) const DATAGRAM_BUDGET: usize = 64;

/// Datagrams taken by the core that [`Recent`] remembers, all peers together: a copy
/// arriving on a second link is recognised while its twin is among the last this many.
/// A sync socket's 32 MiB receive buffer holds about 23,000 full datagrams, but only
/// a deep backlog on one link and none on the other comes near this.
const RECENT: usize = 16_384;

/// Which link carries our datagrams to one peer, and when each link last had a copy:
/// pure, the clock an argument (unit-tested below).
#[derive(Debug, Clone)]
pub(super) struct PeerPaths {
    /// When the peer was last heard on each link.
    heard: Vec<Option<Instant>>,
    /// When each link last carried a copy.
    copied: Vec<Option<Instant>>,
    /// Silence on a link never heard counts from here (the start), so that the links'
    /// first datagrams, arriving in any order, do not move us off the first link.
    since: Instant,
    /// The link in use.
    active: usize,
    /// Changes of `active`.
    switches: u64,
}

impl PeerPaths {
    /// `links` links, none heard yet, the first in use.
    pub(super) fn new(links: usize, now: Instant) -> PeerPaths {
        PeerPaths {
            heard: vec![None; links.max(1)],
            copied: vec![None; links.max(1)],
            since: now,
            active: 0,
            switches: 0,
        }
    }

    /// The peer was heard on `link` at `now`.
    pub(super) fn heard(&mut self, link: usize, now: Instant) {
        if let Some(h) = self.heard.get_mut(link) {
            *h = Some(h.map_or(now, |t| t.max(now)));
        }
    }

    /// How long `link` has been silent at `now` (counted from the start if never heard).
    pub(super) fn silence(&self, link: usize, now: Instant) -> Duration {
        let last = self
            .heard
            .get(link)
            .copied()
            .flatten()
            .unwrap_or(self.since);
        now.saturating_duration_since(last)
    }

    /// The link to send on at `now`: the first whose peer was heard within `dead`; when
    /// none was (the peer is down, or too busy to speak), the one it was heard on last
    /// (the first if never heard), so that a slow peer does not move us about. A change
    /// is counted, and the link left is returned with the one chosen.
    pub(super) fn choose(&mut self, now: Instant, dead: Duration) -> (usize, Option<usize>) {
        let links = 0..self.heard.len();
        let pick = links
            .clone()
            .find(|&l| self.silence(l, now) < dead)
            .or_else(|| links.min_by_key(|&l| self.silence(l, now)))
            .unwrap_or(0);
        if pick == self.active {
            return (pick, None);
        }
        let left = std::mem::replace(&mut self.active, pick);
        self.switches += 1;
        (pick, Some(left))
    }

    /// Whether `link`, not the one in use, gets a copy of the datagram going out at
    /// `now`: at most once every `every` (noted when it does).
    pub(super) fn copy_due(&mut self, link: usize, now: Instant, every: Duration) -> bool {
        if link == self.active {
            return false;
        }
        let Some(c) = self.copied.get_mut(link) else {
            return false;
        };
        if c.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return false;
        }
        *c = Some(now);
        true
    }

    /// The link in use.
    pub(super) fn active(&self) -> usize {
        self.active
    }

    /// Changes of the link in use so far.
    pub(super) fn switches(&self) -> u64 {
        self.switches
    }

    /// When the peer was last heard on `link`.
    pub(super) fn last_heard(&self, link: usize) -> Option<Instant> {
        self.heard.get(link).copied().flatten()
    }
}

/// What identifies a datagram, read before the core opens it: its sender, packet
/// number and the first 8 bytes of its authentication tag. A datagram with the
/// fingerprint of one the core took is that datagram, or a forgery by someone who saw it
/// (who could as well have sent it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Fingerprint {
    node: NodeId,
    packet: u64,
    tag: u64,
}

impl Fingerprint {
    /// The fingerprint of a datagram with a ctsync header; `None` for anything else
    /// (which the core then refuses and counts).
    pub(super) fn of(datagram: &[u8]) -> Option<Fingerprint> {
        let h = Header::parse(datagram).ok()?;
        let tag = datagram
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&t| t >= HEADER_LEN)?;
        let t = datagram.get(tag..tag + 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(t);
        Some(Fingerprint {
            node: h.node,
            packet: h.packet,
            tag: u64::from_be_bytes(b),
        })
    }
}

/// The datagrams the core took last (at most [`RECENT`]), with the link each came on:
/// to recognise the copy of one arriving on another link.
#[derive(Debug, Default)]
pub(super) struct Recent {
    link_of: HashMap<(NodeId, u64), (u64, usize)>,
    order: VecDeque<(NodeId, u64)>,
}

impl Recent {
    /// Whether `fp`, arriving on `link`, is a copy of a datagram the core took from
    /// another link. The same datagram again on the same link is not (it is a replay:
    /// the core refuses and counts it).
    pub(super) fn is_copy(&self, fp: &Fingerprint, link: usize) -> bool {
        self.link_of
            .get(&(fp.node, fp.packet))
            .is_some_and(|&(tag, l)| tag == fp.tag && l != link)
    }

    /// The core took `fp` from `link`.
    pub(super) fn taken(&mut self, fp: Fingerprint, link: usize) {
        let key = (fp.node, fp.packet);
        if self.link_of.insert(key, (fp.tag, link)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.link_of.remove(&old);
            }
        }
    }
}

/// One link's socket.
/// A link's socket: a UDP socket of its own, or a namespace's port on the shared one.
pub(super) enum Sock {
    /// A daemon's own socket.
    Udp(UdpSocket),
    /// A namespace's port on the shared socket (`[namespaces]`).
    Mux(super::mux::MuxPort),
}

impl Sock {
    fn poll_recv_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            Sock::Udp(u) => u.poll_recv_ready(cx),
            Sock::Mux(m) => m.poll_recv_ready(cx),
        }
    }

    /// Read a datagram into `buf`, resized to hold it (a socket's reads use the largest
    /// UDP datagram's size, a port's the datagram's own length): its length.
    fn try_recv(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Sock::Udp(u) => {
                buf.resize(DATAGRAM_MAX, 0);
                u.try_recv_from(buf).map(|(n, _)| n)
            }
            Sock::Mux(m) => m.try_recv(buf),
        }
    }

    fn try_send_to(&mut self, datagram: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self {
            Sock::Udp(u) => u.try_send_to(datagram, to),
            Sock::Mux(m) => m.try_send_to(datagram, to),
        }
    }
}

struct LinkSocket {
    udp: Sock,
    /// Its interface (for logs and the status).
    interface: String,
    /// Sending on it fails (logged once when it starts and once when it stops).
    failing: bool,
}

/// One peer as the links see it.
struct PeerLinks {
    /// Its address on each link.
    addresses: Vec<SocketAddr>,
    paths: PeerPaths,
}

/// A peer's link, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PeerLinkView {
    /// The link's interface.
    pub interface: String,
    /// The peer's address on it.
    pub address: SocketAddr,
    /// When the peer was last heard on it.
    pub last_heard: Option<Instant>,
}

/// The multicast group (docs/PROTOCOL.md §13): a socket bound to it that receives what
/// peers send there, and where our group datagrams go (sent from the first link's
/// socket, TTL 1, not looped back).
pub(super) struct GroupSocket {
    /// Bound to the group's address and port, joined on the sync interface (a
    /// namespace's: its port on the daemon's group socket, `[namespaces]`).
    pub(super) udp: Sock,
    /// The group (for IPv6 with the sync interface as its scope).
    pub(super) to: SocketAddr,
}

/// The sync links: their sockets and where each peer is on each.
pub(super) struct SyncLink {
    links: Vec<LinkSocket>,
    /// The multicast group, if one is configured.
    group: Option<GroupSocket>,
    /// Boxed: a B-tree node holds 11 entries inline, so one peer of 104 bytes had cost a
    /// 1.2 KiB node (per router, in a daemon of namespaces).
    peers: BTreeMap<NodeId, Box<PeerLinks>>,
    /// With several links: the datagrams taken last, to recognise copies.
    recent: Option<Recent>,
    /// A peer silent on a link this long (`dead_ms`) is not sent to on it.
    dead: Duration,
    /// Each standby link gets a copy of a datagram at most this often (alive / 2).
    copy_every: Duration,
    /// Turns that stopped at [`DATAGRAM_BUDGET`] with datagrams still waiting.
    pub(super) budget_hits: u64,
    /// Copies that arrived after their twin and were not handed to the core.
    pub(super) copies: u64,
    /// Which socket `readable` looks at first (turns, so that none is starved).
    next_poll: usize,
}

impl SyncLink {
    /// The links' sockets with their interfaces, in link order, and each peer's
    /// addresses on them (in the same order).
    pub(super) fn new(
        sockets: Vec<(Sock, String)>,
        group: Option<GroupSocket>,
        peers: BTreeMap<NodeId, Vec<SocketAddr>>,
        alive: Duration,
        dead: Duration,
        now: Instant,
    ) -> SyncLink {
        let n = sockets.len();
        SyncLink {
            group,
            links: sockets
                .into_iter()
                .map(|(udp, interface)| LinkSocket {
                    udp,
                    interface,
                    failing: false,
                })
                .collect(),
            peers: peers
                .into_iter()
                .map(|(id, addresses)| {
                    (
                        id,
                        Box::new(PeerLinks {
                            addresses,
                            paths: PeerPaths::new(n, now),
                        }),
                    )
                })
                .collect(),
            recent: (n > 1).then(Recent::default),
            dead,
            copy_every: alive / 2,
            budget_hits: 0,
            copies: 0,
            next_poll: 0,
        }
    }

    /// How many peers.
    pub(super) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// A peer's address on the first link (its name in the status and the metrics).
    pub(super) fn address(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers
            .get(&id)
            .and_then(|p| p.addresses.first().copied())
    }

    /// A peer's links: the one in use, the changes so far, and each link.
    pub(super) fn peer_links(&self, id: NodeId) -> Option<(usize, u64, Vec<PeerLinkView>)> {
        let p = self.peers.get(&id)?;
        let views = self
            .links
            .iter()
            .zip(&p.addresses)
            .enumerate()
            .map(|(l, (s, a))| PeerLinkView {
                interface: s.interface.clone(),
                address: *a,
                last_heard: p.paths.last_heard(l),
            })
            .collect();
        Some((p.paths.active(), p.paths.switches(), views))
    }

    /// Wait until a sync socket has something to read.
    pub(super) async fn readable(&mut self) -> std::io::Result<()> {
        let start = self.next_poll;
        self.next_poll = (start + 1) % self.links.len().max(1);
        let links = &self.links;
        let group = self.group.as_ref();
        std::future::poll_fn(|cx| {
            let n = links.len();
            for i in 0..n {
                if let Poll::Ready(r) = links[(start + i) % n].udp.poll_recv_ready(cx) {
                    return Poll::Ready(r);
                }
            }
            if let Some(g) = group
                && let Poll::Ready(r) = g.udp.poll_recv_ready(cx)
            {
                return Poll::Ready(r);
            }
            Poll::Pending
        })
        .await
    }

    /// Send every datagram the core has ready; whether there was any. Each goes out on
    /// the link chosen for its peer, and a copy on each other link when one is due. A
    /// full socket buffer drops the datagram (the core retransmits); other errors are
    /// logged once when a link starts failing.
    pub(super) fn transmit(&mut self, node: &mut Node, now: Instant) -> bool {
        TX.with_borrow_mut(|tx| self.transmit_with(node, now, tx))
    }

    fn transmit_with(&mut self, node: &mut Node, now: Instant, tx: &mut Vec<u8>) -> bool {
        let mut any = false;
        while let Some(to) = node.poll_transmit(now, tx) {
            any = true;
            if to == ctsync_wire::GROUP {
                if let Some(g) = &self.group {
                    send(&mut self.links, 0, tx, g.to);
                }
                continue;
            }
            let Some(peer) = self.peers.get_mut(&to) else {
                continue;
            };
            let (active, left) = peer.paths.choose(now, self.dead);
            if let Some(left) = left {
                log_switch(&self.links, peer, left, active, now);
            }
            send(&mut self.links, active, tx, peer.addresses[active]);
            for l in 0..self.links.len() {
                if peer.paths.copy_due(l, now, self.copy_every) {
                    send(&mut self.links, l, tx, peer.addresses[l]);
                }
            }
        }
        any
    }

    /// Hand the core the datagrams waiting on each link, at most [`DATAGRAM_BUDGET`]
    /// per link (a turn that used one all is counted: the rest waits for the next turn).
    pub(super) fn receive(&mut self, node: &mut Node, now: Instant) {
        let mut hit = false;
        RX.with_borrow_mut(|rx| {
            for l in 0..self.links.len() {
                hit |= self.receive_on(l, node, now, rx);
            }
            hit |= self.receive_group(node, now, rx);
        });
        if hit {
            self.budget_hits += 1;
        }
    }

    /// What arrived on the group socket, at most [`DATAGRAM_BUDGET`]; whether it
    /// stopped at the budget. Group datagrams are not path evidence: a peer's links are
    /// chosen by its unicast datagrams alone.
    fn receive_group(&mut self, node: &mut Node, now: Instant, rx: &mut Vec<u8>) -> bool {
        let Some(g) = &self.group else {
            return false;
        };
        for _ in 0..DATAGRAM_BUDGET {
            let len = match g.udp.try_recv(rx) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    log("warn", format!("multicast group socket {}: {e}", g.to));
                    return false;
                }
            };
            let _ = node.handle_group_datagram(now, &mut rx[..len]);
        }
        true
    }

    /// [`SyncLink::receive`] on link `l`; whether it stopped at the budget.
    fn receive_on(&mut self, l: usize, node: &mut Node, now: Instant, rx: &mut Vec<u8>) -> bool {
        for _ in 0..DATAGRAM_BUDGET {
            let len = match self.links[l].udp.try_recv(rx) {
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    log(
                        "warn",
                        format!("sync socket on {}: {e}", self.links[l].interface),
                    );
                    return false;
                }
            };
            let datagram = &mut rx[..len];
            let Some(recent) = self.recent.as_mut() else {
                // One link: nothing to tell apart.
                let _ = node.handle_datagram(now, datagram);
                continue;
            };
            let fp = Fingerprint::of(datagram);
            if let Some(fp) = fp
                && recent.is_copy(&fp, l)
            {
                self.copies += 1;
                if let Some(p) = self.peers.get_mut(&fp.node) {
                    p.paths.heard(l, now);
                }
                continue;
            }
            if node.handle_datagram(now, datagram).is_ok()
                && let Some(fp) = fp
            {
                recent.taken(fp, l);
                if let Some(p) = self.peers.get_mut(&fp.node) {
                    p.paths.heard(l, now);
                }
            }
        }
        true
    }

    /// Between long kernel operations (a commit, a dump of a large table): take in the
    /// peers' datagrams and send what is due, so that no peer takes a busy node for dead.
    pub(super) fn service(&mut self, node: &mut Node) {
        self.receive(node, Instant::now());
        let now = Instant::now();
        node.handle_timeout(now);
        self.transmit(node, now);
    }
}

/// Send `datagram` to `to` on link `l`. A full buffer drops it silently (the core
/// retransmits); another error is logged when the link starts failing, and the link's
/// recovery when it stops.
fn send(links: &mut [LinkSocket], l: usize, datagram: &[u8], to: SocketAddr) {
    let Some(link) = links.get_mut(l) else {
        return;
    };
    match link.udp.try_send_to(datagram, to) {
        Ok(_) => {
            if link.failing {
                link.failing = false;
                log(
                    "info",
                    format!(
                        "sending over sync link {} ({}) works again",
                        l + 1,
                        link.interface
                    ),
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => {
            if !link.failing {
                link.failing = true;
                log(
                    "warn",
                    format!(
                        "sending to {to} over sync link {} ({}): {e} (said once until it works again)",
                        l + 1,
                        link.interface
                    ),
                );
            }
        }
    }
}

/// Say once that a peer's datagrams moved from link `left` to link `now_on`, and why.
fn log_switch(links: &[LinkSocket], peer: &PeerLinks, left: usize, now_on: usize, now: Instant) {
    let name = |l: usize| {
        format!(
            "link {} ({})",
            l + 1,
            links.get(l).map_or("?", |s| s.interface.as_str())
        )
    };
    let why = if now_on < left {
        format!("{} is heard again", name(now_on))
    } else {
        format!(
            "no word on {} for {} ms",
            name(left),
            peer.paths.silence(left, now).as_millis()
        )
    };
    log(
        if now_on == 0 { "info" } else { "warn" },
        format!(
            "peer {}: datagrams now go over {}: {why} (the stream goes on; no resync)",
            peer.addresses
                .first()
                .map_or_else(|| "?".into(), |a| a.to_string()),
            name(now_on)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_millis(600);
    const EVERY: Duration = Duration::from_millis(50);

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_link_heard_within_dead_is_used() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(2, t0);
        assert_eq!(p.choose(t0, DEAD), (0, None), "none heard: the first");
        p.heard(0, ms(t0, 10));
        p.heard(1, ms(t0, 10));
        assert_eq!(p.choose(ms(t0, 100), DEAD), (0, None));
        // Link 1 goes silent; link 2 keeps being heard.
        for t in (100..=700).step_by(100) {
            p.heard(1, ms(t0, t));
        }
        assert_eq!(p.choose(ms(t0, 609), DEAD), (0, None), "not yet dead");
        assert_eq!(p.choose(ms(t0, 610), DEAD), (1, Some(0)), "dead: the next");
        assert_eq!(
            p.choose(ms(t0, 650), DEAD),
            (1, None),
            "a switch counts once"
        );
        assert_eq!(p.switches(), 1);
        // Link 1 heard again: back to it.
        p.heard(0, ms(t0, 800));
        assert_eq!(p.choose(ms(t0, 801), DEAD), (0, Some(1)));
        assert_eq!(p.switches(), 2);
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn with_every_link_silent_the_one_heard_last_is_kept() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(3, t0);
        assert_eq!(
            p.choose(ms(t0, 5000), DEAD),
            (0, None),
            "never heard: the first"
        );
        p.heard(2, ms(t0, 5100));
        assert_eq!(
            p.choose(ms(t0, 5100), DEAD),
            (2, Some(0)),
            "links never heard are silent since the start"
        );
        p.heard(0, ms(t0, 5200));
        p.heard(2, ms(t0, 5300));
        assert_eq!(p.choose(ms(t0, 5300), DEAD), (0, Some(2)), "the first back");
        assert_eq!(
            p.choose(ms(t0, 5850), DEAD),
            (2, Some(0)),
            "the first silent: the next heard within dead"
        );
        assert_eq!(
            p.choose(ms(t0, 7000), DEAD),
            (2, None),
            "all silent (a busy or dead peer): stay on the one heard last"
        );
        p.heard(1, ms(t0, 7100));
        assert_eq!(p.choose(ms(t0, 7100), DEAD), (1, Some(2)));
        assert_eq!(p.switches(), 4);
    }

    #[test]
    fn before_dead_ms_unheard_links_are_not_taken_for_dead() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(2, t0);
        p.heard(1, ms(t0, 100));
        assert_eq!(p.choose(ms(t0, 100), DEAD), (0, None));
        assert_eq!(p.choose(ms(t0, 600), DEAD), (1, Some(0)));
    }

    #[test]
    fn the_links_first_datagrams_in_any_order_do_not_switch() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(2, t0);
        p.heard(1, ms(t0, 2000));
        assert_eq!(p.choose(ms(t0, 2000), DEAD), (1, Some(0)), "long silent");
        let mut q = PeerPaths::new(2, t0);
        q.heard(1, ms(t0, 100));
        assert_eq!(q.choose(ms(t0, 100), DEAD), (0, None));
        q.heard(0, ms(t0, 101));
        assert_eq!(q.choose(ms(t0, 101), DEAD), (0, None));
        assert_eq!(q.switches(), 0);
    }

    #[test]
    fn other_links_get_a_copy_at_most_every_interval() {
        let t0 = Instant::now();
        let mut p = PeerPaths::new(3, t0);
        let due = |p: &mut PeerPaths, t| {
            (0..3)
                .filter(|&l| p.copy_due(l, ms(t0, t), EVERY))
                .collect::<Vec<_>>()
        };
        assert_eq!(due(&mut p, 0), [1, 2], "never the link in use");
        assert_eq!(due(&mut p, 49), Vec::<usize>::new());
        assert_eq!(due(&mut p, 50), [1, 2]);
        p.heard(1, ms(t0, 60));
        p.heard(1, ms(t0, 900));
        assert_eq!(p.choose(ms(t0, 900), DEAD), (1, Some(0)));
        assert_eq!(due(&mut p, 900), [0, 2], "the link left gets copies");
    }

    fn datagram(node: NodeId, packet: u64, tag: u8) -> Vec<u8> {
        let h = Header {
            version: ctsync_wire::VERSION,
            key_id: 0,
            node,
            epoch: 7,
            packet,
        };
        let mut d = Vec::new();
        h.emit(&mut d);
        d.extend_from_slice(&[1, 2, 3]);
        d.extend_from_slice(&[tag; TAG_LEN]);
        d
    }

    #[test]
    fn a_copy_is_recognised_on_another_link_only() {
        let mut r = Recent::default();
        let fp = Fingerprint::of(&datagram(9, 5, 0xaa)).unwrap();
        assert!(!r.is_copy(&fp, 1), "nothing taken yet");
        r.taken(fp, 0);
        assert!(r.is_copy(&fp, 1), "the twin on link 2");
        assert!(
            !r.is_copy(&fp, 0),
            "again on link 1: a replay, the core's to count"
        );
        let forged = Fingerprint::of(&datagram(9, 5, 0xab)).unwrap();
        assert!(!r.is_copy(&forged, 1), "same number, other tag");
        let other = Fingerprint::of(&datagram(8, 5, 0xaa)).unwrap();
        assert!(!r.is_copy(&other, 1), "another sender");
        assert!(Fingerprint::of(b"not ctsync at all, not at all").is_none());
    }

    #[test]
    fn recent_forgets_the_oldest_beyond_its_size() {
        let mut r = Recent::default();
        for p in 0..(RECENT as u64 + 10) {
            r.taken(
                Fingerprint {
                    node: 1,
                    packet: p,
                    tag: p,
                },
                0,
            );
        }
        let first = Fingerprint {
            node: 1,
            packet: 0,
            tag: 0,
        };
        let last = Fingerprint {
            node: 1,
            packet: RECENT as u64 + 9,
            tag: RECENT as u64 + 9,
        };
        assert!(!r.is_copy(&first, 1));
        assert!(r.is_copy(&last, 1));
        assert_eq!(r.link_of.len(), RECENT);
    }
}
