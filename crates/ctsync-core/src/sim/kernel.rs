//! A simulated kernel conntrack table: what the shell's ctnetlink writes would do.

use std::time::{Duration, Instant};

use ctnetlink::{Expectation, Flow, FlowKey, Tuple};

use crate::KernelOp;
use crate::key::KeyHasher;

/// A map that iterates in the same order in every run with the same history (a fixed
/// seed: the simulation must be deterministic).
pub type SimMap<K, V> = hashbrown::HashMap<K, V, ahash::RandomState>;

fn map<K, V>() -> SimMap<K, V> {
    SimMap::with_hasher(KeyHasher::default().build())
}

/// One node's kernel table, its expectations, and the entries whose timeout was
/// shortened (they expire unless a write refreshes them).
#[derive(Debug, Clone)]
pub struct SimKernel {
    /// The flows.
    pub flows: SimMap<FlowKey, Flow>,
    /// Entries whose timeout was shortened expire at these times unless refreshed.
    pub expiry: SimMap<FlowKey, Instant>,
    /// The expectations, by expected tuple.
    pub exps: SimMap<Tuple, Expectation>,
    /// Flows written: created or updated (an upsert, each flow of a commit) or deleted.
    pub writes: u64,
    /// Timeouts reset ([`KernelOp::Refresh`], hot standby's timer).
    pub refreshes: u64,
}

impl Default for SimKernel {
    fn default() -> SimKernel {
        SimKernel {
            flows: map(),
            expiry: map(),
            exps: map(),
            writes: 0,
            refreshes: 0,
        }
    }
}

impl SimKernel {
    /// Carry out a kernel operation. A [`KernelOp::Dump`] is the caller's (it reads the
    /// table into the node): returns `true` for it.
    pub fn apply(&mut self, now: Instant, op: KernelOp) -> bool {
        match op {
            KernelOp::Upsert(f) => {
                let f = f.flow().expect("the core queues flows it encoded");
                self.upsert(f);
            }
            KernelOp::Commit(tables) => {
                for f in tables.into_iter().flat_map(|t| t.into_flows()) {
                    self.upsert(f);
                }
            }
            KernelOp::ExpCreate(e) => {
                // The kernel refuses an expectation whose master it does not hold.
                let master = FlowKey {
                    orig: e.master,
                    zone: e.zone.unwrap_or(0),
                };
                if self.flows.contains_key(&master) {
                    self.exps.insert(e.tuple, *e);
                }
            }
            KernelOp::ExpDelete(e) => {
                self.exps.remove(&e.tuple);
            }
            KernelOp::Delete(k) => {
                self.writes += 1;
                self.expiry.remove(&k);
                self.flows.remove(&k);
            }
            KernelOp::Refresh(f) => {
                let f = f.flow().expect("the core queues flows it encoded");
                self.refreshes += 1;
                self.expiry.remove(&f.key());
                if let Some(e) = self.flows.get_mut(&f.key()) {
                    e.timeout = f.timeout;
                } else {
                    // The shell writes a flow the kernel lost back whole.
                    self.writes += 1;
                    self.flows.insert(f.key(), f);
                }
            }
            KernelOp::Dump => return true,
            KernelOp::Shorten(flows) => {
                for f in flows {
                    let at = now + Duration::from_secs(u64::from(f.timeout.unwrap_or(0)));
                    if self.flows.contains_key(&f.key()) {
                        self.expiry.entry(f.key()).or_insert(at);
                    }
                }
            }
            KernelOp::ShortenTimeouts(secs) => {
                let at = now + Duration::from_secs(u64::from(secs));
                for k in self.flows.keys() {
                    self.expiry.entry(*k).or_insert(at);
                }
            }
        }
        false
    }

    /// Create the flow, or update the entry that has its original tuple. Like the
    /// kernel's, an update cannot change an entry's tuples: the entry keeps its reply
    /// tuple (its NAT), whatever the flow written says.
    fn upsert(&mut self, mut f: Flow) {
        self.writes += 1;
        self.expiry.remove(&f.key());
        if let Some(e) = self.flows.get(&f.key()) {
            f.reply = e.reply;
        }
        self.flows.insert(f.key(), f);
    }

    /// The entries whose shortened timeout ran out by `now`, removed.
    pub fn expire(&mut self, now: Instant) -> Vec<Flow> {
        let dead: Vec<FlowKey> = self
            .expiry
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        dead.into_iter()
            .filter_map(|k| {
                self.expiry.remove(&k);
                self.flows.remove(&k)
            })
            .collect()
    }

    /// The earliest shortened timeout.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.values().min().copied()
    }

    /// The flows, as a dump reads them.
    pub fn dump(&self) -> Vec<Flow> {
        self.flows.values().cloned().collect()
    }
}
