//! The network between simulated nodes: latency, and the faults a real link has.

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use ctsync_wire::NodeId;

/// xorshift64*: the simulator's only randomness, from the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A value in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// How links misbehave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Extra random delay up to this, which reorders.
    pub jitter: Duration,
}

impl Faults {
    /// A perfect network.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        jitter: Duration::ZERO,
    };
}

#[derive(Debug, PartialEq, Eq)]
struct InFlight {
    at: Instant,
    order: u64,
    to: NodeId,
    /// Sent to the multicast group (this is one member's copy).
    group: bool,
    bytes: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Datagrams in flight between simulated nodes, with their faults (in the spirit of
/// smoltcp's `FaultInjector`): every datagram sent goes through [`FaultInjector::send`]
/// and comes out of [`FaultInjector::due`] when (and if) it arrives.
#[derive(Debug)]
pub struct FaultInjector {
    rng: Rng,
    /// What goes wrong now.
    pub faults: Faults,
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// Pairs that cannot talk until the given time.
    partitions: Vec<(NodeId, NodeId, Instant)>,
    net: BinaryHeap<InFlight>,
    order: u64,
    /// Copies of what `.0` sends to `.1` are also delivered to `.2` (someone on the
    /// segment forwarding datagrams to a node they were not meant for).
    forward: Vec<(NodeId, NodeId, NodeId)>,
    /// Datagrams to `.0` arrive `.1` late (a slow receiver, or a long path to it).
    slow: Vec<(NodeId, Duration)>,
    /// Datagrams to `.0` are also lost with probability `.1` (a bad port).
    lossy: Vec<(NodeId, f64)>,
}

impl FaultInjector {
    /// A perfect network with 200 µs latency; its randomness from `seed`.
    pub fn new(seed: u64) -> FaultInjector {
        FaultInjector {
            rng: Rng::new(seed),
            faults: Faults::NONE,
            latency: Duration::from_micros(200),
            partitions: Vec::new(),
            net: BinaryHeap::new(),
            order: 0,
            forward: Vec::new(),
            slow: Vec::new(),
            lossy: Vec::new(),
        }
    }

    /// `a` and `b` cannot talk until `until`.
    pub fn partition(&mut self, a: NodeId, b: NodeId, until: Instant) {
        self.partitions.push((a, b, until));
    }

    /// From now on, a copy of every datagram `from` sends to `to` also reaches `also`.
    pub fn forward(&mut self, from: NodeId, to: NodeId, also: NodeId) {
        self.forward.push((from, to, also));
    }

    /// From now on, datagrams to `to` arrive `extra` later than others (its
    /// acknowledgements are late as well: a slow receiver).
    pub fn slow(&mut self, to: NodeId, extra: Duration) {
        self.slow.push((to, extra));
    }

    /// From now on, datagrams to `to` are also lost with probability `p` (its port on
    /// the segment is bad; the others' are not).
    pub fn lossy(&mut self, to: NodeId, p: f64) {
        self.lossy.push((to, p));
    }

    /// Stop every fault, partition, forwarding, slowness and bad port.
    pub fn heal(&mut self) {
        self.faults = Faults::NONE;
        self.partitions.clear();
        self.forward.clear();
        self.slow.clear();
        self.lossy.clear();
    }

    fn blocked(&self, now: Instant, a: NodeId, b: NodeId) -> bool {
        self.partitions
            .iter()
            .any(|&(x, y, until)| now < until && ((x, y) == (a, b) || (x, y) == (b, a)))
    }

    /// A datagram from `from` to `to`, sent at `now`: lost, delivered once or twice,
    /// late by the latency and some jitter.
    pub fn send(&mut self, now: Instant, from: NodeId, to: NodeId, bytes: &[u8]) {
        self.send_one(now, from, to, bytes, false);
    }

    /// A datagram from `from` to the multicast group, sent at `now`: each of `members`
    /// but the sender gets its own copy, with its own faults (loss, duplication,
    /// jitter, partitions), as on a shared segment.
    pub fn send_group(&mut self, now: Instant, from: NodeId, members: &[NodeId], bytes: &[u8]) {
        for &to in members.iter().filter(|&&m| m != from) {
            self.send_one(now, from, to, bytes, true);
        }
    }

    fn send_one(&mut self, now: Instant, from: NodeId, to: NodeId, bytes: &[u8], group: bool) {
        let also: Vec<NodeId> = self
            .forward
            .iter()
            .filter(|&&(f, t, _)| (f, t) == (from, to))
            .map(|&(.., a)| a)
            .collect();
        for a in also {
            self.order += 1;
            self.net.push(InFlight {
                at: now + self.latency,
                order: self.order,
                to: a,
                group,
                bytes: bytes.to_vec(),
            });
        }
        if self.blocked(now, from, to) || self.rng.chance(self.faults.loss) {
            return;
        }
        // Drawn only when a port is bad, so that other runs draw what they always did.
        for p in self
            .lossy
            .iter()
            .filter(|&&(l, _)| l == to)
            .map(|&(_, p)| p)
        {
            if self.rng.chance(p) {
                return;
            }
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        let extra: Duration = self
            .slow
            .iter()
            .filter(|&&(s, _)| s == to)
            .map(|&(_, d)| d)
            .sum();
        for _ in 0..copies {
            let jitter = self.faults.jitter.as_nanos() as u64 + 1;
            let jitter = Duration::from_nanos(self.rng.below(jitter));
            self.order += 1;
            self.net.push(InFlight {
                at: now + self.latency + jitter + extra,
                order: self.order,
                to,
                group,
                bytes: bytes.to_vec(),
            });
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.net.peek().map(|m| m.at)
    }

    /// The next datagram that has arrived by `now`: its destination, bytes, and
    /// whether it was sent to the group (it arrives on the group socket).
    pub fn due(&mut self, now: Instant) -> Option<(NodeId, Vec<u8>, bool)> {
        if self.net.peek().is_some_and(|m| m.at <= now) {
            self.net.pop().map(|m| (m.to, m.bytes, m.group))
        } else {
            None
        }
    }
}
