//! The cluster simulator: N nodes with simulated kernels on a faulty network, in a
//! virtual clock.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ctnetlink::{EventKind, Flow};
use ctsync_wire::header::Header;
use ctsync_wire::{Cipher, ClusterSecret, NodeId};

use super::{FaultInjector, Rng, SimKernel, same_state};
use crate::{Config, FlowTable, Mode, Node, Role};

/// The cluster key of every simulated node.
const PSK: [u8; 32] = [0x5a; 32];

/// One simulated firewall: its configuration, its node while running, its kernel.
#[derive(Debug)]
pub struct SimNode {
    /// Its node id.
    pub id: NodeId,
    /// Its configuration (used at every start).
    pub cfg: Config,
    /// The running node (`None` while crashed).
    pub node: Option<Node>,
    /// Its kernel table.
    pub kernel: SimKernel,
    /// How often it started.
    pub starts: u64,
    /// Its readiness changes as it announced them ([`crate::Notify::Ready`]), with
    /// their times.
    pub readiness: Vec<(Instant, bool)>,
    /// Times its timers woke it ([`Node::poll_timeout`] due): what an idle node costs.
    pub wakes: u64,
}

/// N nodes (ids 1..=N; node 1, index 0, is the primary) on a [`FaultInjector`].
#[derive(Debug)]
pub struct Cluster {
    /// When the simulation began.
    pub start: Instant,
    /// The virtual clock.
    pub now: Instant,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// The network.
    pub net: FaultInjector,
    rng: Rng,
    /// Every (node, epoch, key id, packet) sealed: must never repeat.
    nonces: HashSet<(NodeId, u64, u8, u64)>,
    /// Drop this many of the next kernel events of node 1 silently, then report an
    /// overrun.
    pub lose_events: usize,
    /// Every datagram sent, in order (sender, receiver, bytes), when recording; a group
    /// datagram once, with receiver [`ctsync_wire::GROUP`].
    trace: Option<Vec<(NodeId, NodeId, Vec<u8>)>>,
    buf: Vec<u8>,
}

impl Cluster {
    /// `n` nodes in `mode`, booted (node 1 primary, the others backups), their seeds and
    /// the network's faults drawn from `seed`.
    pub fn new(n: u32, seed: u64, mode: Mode) -> Cluster {
        Cluster::with_config(n, seed, |cfg| {
            cfg.mode = mode;
            cfg.digest_interval = Duration::from_secs(2);
            cfg.shorten_timeout = 5;
        })
    }

    /// `n` nodes whose configurations `adjust` sets, booted.
    pub fn with_config(n: u32, seed: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let start = Instant::now();
        let ids: Vec<NodeId> = (1..=n).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(id, ids.clone());
                adjust(&mut cfg);
                SimNode {
                    id,
                    cfg,
                    node: None,
                    kernel: SimKernel::default(),
                    starts: 0,
                    readiness: Vec::new(),
                    wakes: 0,
                }
            })
            .collect();
        let mut rng = Rng::new(seed);
        let net = FaultInjector::new(rng.next_u64());
        let mut c = Cluster {
            start,
            now: start,
            nodes,
            net,
            rng,
            nonces: HashSet::new(),
            lose_events: 0,
            trace: None,
            buf: Vec::with_capacity(2048),
        };
        for i in 0..c.nodes.len() {
            c.boot(i);
        }
        c
    }

    /// Record every datagram sent from now on ([`Cluster::trace`]).
    pub fn record(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// The datagrams sent since [`Cluster::record`]: (sender, receiver, bytes).
    pub fn trace(&self) -> &[(NodeId, NodeId, Vec<u8>)] {
        self.trace.as_deref().unwrap_or_default()
    }

    /// (Re)start node `i`: a new epoch, a read of its kernel table, its role from
    /// keepalived (node 1 primary).
    pub fn boot(&mut self, i: usize) {
        // Epochs grow with every start, as a persisted counter makes them.
        let n = &self.nodes[i];
        let epoch = ((n.starts + 1) << 32) | u64::from(n.id);
        self.boot_with_epoch(i, epoch);
    }

    /// (Re)start node `i` with the given epoch (a lower one than before: its clock was
    /// stepped back and it lost its state).
    pub fn boot_with_epoch(&mut self, i: usize, epoch: u64) {
        self.boot_as(i, epoch, if i == 0 { Role::Primary } else { Role::Backup });
    }

    /// (Re)start node `i` with the given epoch in `role` (a daemon that guessed its role
    /// before keepalived said it).
    pub fn boot_as(&mut self, i: usize, epoch: u64, role: Role) {
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[i];
        n.starts += 1;
        let secret = ClusterSecret::new(&PSK, Cipher::ChaCha20Poly1305).unwrap();
        let mut node = Node::new(n.cfg.clone(), secret, epoch, seed, self.now).unwrap();
        // A (re)started daemon reads its kernel table first.
        node.begin_kernel_dump(self.now);
        for f in n.kernel.dump() {
            node.handle_dumped(self.now, &f);
        }
        node.end_kernel_dump(self.now);
        n.node = Some(node);
        self.set_role(i, role);
    }

    /// The running node `i`.
    pub fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].node.as_mut().expect("node is running")
    }

    /// Tell node `i` its role (as keepalived would).
    pub fn set_role(&mut self, i: usize, role: Role) {
        let now = self.now;
        self.node(i).set_role(now, role);
        self.drain(i);
    }

    /// Traffic on node `i`: a flow created, changed or gone in its kernel.
    pub fn traffic(&mut self, i: usize, kind: EventKind, f: Flow) {
        let key = f.key();
        match kind {
            EventKind::Destroy => {
                self.nodes[i].kernel.flows.remove(&key);
            }
            _ => {
                self.nodes[i].kernel.flows.insert(key, f.clone());
            }
        }
        if i == 0 && self.lose_events > 0 {
            self.lose_events -= 1;
            if self.lose_events == 0 {
                let now = self.now;
                self.node(i).handle_kernel_overrun(now);
                self.drain(i);
            }
            return;
        }
        if self.nodes[i].node.is_some() {
            let now = self.now;
            self.node(i).handle_kernel_event(now, kind, &f, false);
            self.drain(i);
        }
    }

    /// Traffic on node `i` read in one go: many flows created, changed or gone in its
    /// kernel, handed to the node as one read of the event socket
    /// ([`Node::handle_kernel_events`]), its outputs carried out once after.
    pub fn traffic_batch(&mut self, i: usize, events: Vec<(EventKind, Flow)>) {
        let mut batch = Vec::with_capacity(events.len());
        for (kind, flow) in events {
            match kind {
                EventKind::Destroy => {
                    self.nodes[i].kernel.flows.remove(&flow.key());
                }
                _ => {
                    self.nodes[i].kernel.flows.insert(flow.key(), flow.clone());
                }
            }
            batch.push(crate::FlowEvent {
                kind,
                flow,
                ours: false,
            });
        }
        if self.nodes[i].node.is_some() {
            let now = self.now;
            self.node(i).handle_kernel_events(now, &batch);
            self.drain(i);
        }
    }

    /// Node `i` dies (its kernel stays).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].node = None;
    }

    /// Nodes `a` and `b` cannot talk for `d`.
    pub fn partition(&mut self, a: NodeId, b: NodeId, d: Duration) {
        self.net.partition(a, b, self.now + d);
    }

    /// Change node `i`'s copy of `origin`'s table behind the protocol's back (a bug, a
    /// lost write): anti-entropy must find and repair it.
    pub fn tamper(&mut self, i: usize, origin: NodeId, f: impl FnOnce(&mut FlowTable)) {
        if let Some(t) = self.node(i).external_mut(origin) {
            f(t);
        }
    }

    /// Whether node `i`'s stream from any peer has a gap outstanding.
    pub fn stream_gap(&mut self, i: usize) -> bool {
        self.node(i).has_stream_gap()
    }

    /// Carry out every output of node `i`.
    pub fn drain(&mut self, i: usize) {
        let from = self.nodes[i].id;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let now = self.now;
        let mut sent = Vec::new();
        for _ in 0..100_000 {
            let Some(to) = node.poll_transmit(now, &mut self.buf) else {
                break;
            };
            sent.push((to, self.buf.clone()));
        }
        let mut ops = Vec::new();
        while let Some(op) = node.poll_kernel_op() {
            ops.push(op);
        }
        let mut readiness = Vec::new();
        while let Some(n) = node.poll_notify() {
            if let crate::Notify::Ready(r) = n {
                readiness.push((now, r));
            }
        }
        self.nodes[i].readiness.extend(readiness);
        for (to, bytes) in sent {
            let h = Header::parse(&bytes).unwrap();
            assert!(
                self.nonces.insert((h.node, h.epoch, h.key_id, h.packet)),
                "nonce reused: {h:?}"
            );
            if to == ctsync_wire::GROUP {
                let members: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                self.net.send_group(now, from, &members, &bytes);
            } else {
                self.net.send(now, from, to, &bytes);
            }
            if let Some(t) = &mut self.trace {
                t.push((from, to, bytes));
            }
        }
        for op in ops {
            if self.nodes[i].kernel.apply(now, op) {
                let flows = self.nodes[i].kernel.dump();
                let node = self.node(i);
                node.begin_kernel_dump(now);
                for f in &flows {
                    node.handle_dumped(now, f);
                }
                node.end_kernel_dump(now);
                self.drain(i);
            }
        }
    }

    /// Kernel entries whose shortened timeout ran out die, with a destroy event.
    fn expire(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            for f in self.nodes[i].kernel.expire(now) {
                if let Some(node) = self.nodes[i].node.as_mut() {
                    node.handle_kernel_event(now, EventKind::Destroy, &f, false);
                }
                self.drain(i);
            }
        }
    }

    /// Run the cluster for `d` of virtual time.
    pub fn run(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..10_000_000 {
            // The next thing to happen: a delivery or a node's timer.
            let mut next = end;
            if let Some(at) = self.net.next_arrival() {
                next = next.min(at);
            }
            for n in &self.nodes {
                if let Some(t) = n.node.as_ref().and_then(Node::poll_timeout) {
                    next = next.min(t.max(self.now));
                }
                if let Some(t) = n.kernel.next_expiry() {
                    next = next.min(t.max(self.now));
                }
            }
            if next >= end && self.net.next_arrival().is_none_or(|at| at >= end) {
                self.now = end;
                for i in 0..self.nodes.len() {
                    if let Some(node) = self.nodes[i].node.as_mut() {
                        node.handle_timeout(end);
                    }
                    self.drain(i);
                }
                return;
            }
            self.now = next.max(self.now);
            self.expire();
            while let Some((to, mut bytes, group)) = self.net.due(self.now) {
                let Some(i) = self.nodes.iter().position(|n| n.id == to) else {
                    continue;
                };
                let now = self.now;
                if let Some(node) = self.nodes[i].node.as_mut() {
                    let _ = if group {
                        node.handle_group_datagram(now, &mut bytes)
                    } else {
                        node.handle_datagram(now, &mut bytes)
                    };
                    self.drain(i);
                }
            }
            for i in 0..self.nodes.len() {
                let due = self.nodes[i]
                    .node
                    .as_ref()
                    .and_then(Node::poll_timeout)
                    .is_some_and(|t| t <= self.now);
                if due {
                    let now = self.now;
                    self.nodes[i].wakes += 1;
                    self.node(i).handle_timeout(now);
                }
                self.drain(i);
            }
        }
        panic!("simulation did not reach its end time");
    }

    /// Stop every fault, restart crashed nodes, and let the cluster settle for `d`.
    pub fn heal_and_settle(&mut self, d: Duration) {
        self.net.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none() {
                self.boot(i);
            }
        }
        self.run(d);
    }

    /// Every node's external cache of every other node equals that node's internal
    /// cache; in hot standby, every backup's kernel holds exactly the primary's flows.
    pub fn assert_converged(&self, mode: Mode) {
        for owner in &self.nodes {
            let own = owner.node.as_ref().unwrap().internal();
            for other in self.nodes.iter().filter(|n| n.id != owner.id) {
                let node = other.node.as_ref().unwrap();
                let ext = node.external(owner.id);
                let ext_len = ext.map_or(0, FlowTable::len);
                assert_eq!(
                    ext_len,
                    own.len(),
                    "node {} holds {} of node {}'s {} flows",
                    other.id,
                    ext_len,
                    owner.id,
                    own.len()
                );
                for f in own.flows() {
                    let got = ext.and_then(|e| e.get(&e.keyed(f.key())));
                    assert!(
                        got.as_ref().is_some_and(|g| same_state(g, &f)),
                        "node {} has {:?} for {f}",
                        other.id,
                        got
                    );
                }
            }
        }
        if mode == Mode::HotStandby {
            let primary = &self.nodes[0];
            for b in &self.nodes[1..] {
                for f in primary.kernel.flows.values() {
                    assert!(
                        b.kernel
                            .flows
                            .get(&f.key())
                            .is_some_and(|g| same_state(g, f)),
                        "backup {} kernel lacks {f}",
                        b.id
                    );
                }
                assert_eq!(
                    b.kernel.flows.len(),
                    primary.kernel.flows.len(),
                    "backup {} kernel has extra flows",
                    b.id
                );
            }
        }
    }
}
