//! The external caches: what peers tell us of their tables. Flow messages, bulk
//! transfers with their sweep, digests and bucket repairs, expectations; in hot standby
//! what the primary says is written to our kernel as it arrives.

use std::collections::BTreeMap;
use std::time::Instant;

use ctnetlink::Expectation;
use ctsync_wire::{Message, NodeId, WireRole};
use xxhash_rust::xxh3::xxh3_64;

use super::{ExpKey, ExpMap, KernelOp, Node, Notify, exp_key};
use crate::Role;
use crate::cache::{BUCKETS, FlowTable, StoredFlow, Upsert};
use crate::config::Mode;
use crate::key::{KeyHasher, Keyed};

/// An expectation a peer told us about.
#[derive(Debug, Clone)]
pub(super) struct ExtExp {
    pub(super) exp: Expectation,
    /// The transfer mark that last mentioned it (a bulk sweeps the others).
    mark: u64,
    /// When it expires, by its timeout (a lost deletion cannot leave it forever).
    until: Option<Instant>,
}

/// What one peer told us of its table.
#[derive(Debug)]
pub(super) struct External {
    pub(super) table: FlowTable,
    mark: u64,
    bulk_mark: Option<u64>,
    bucket_marks: BTreeMap<u16, u64>,
    /// Buckets whose repair ended, swept together when the last one ends.
    ended: Vec<(u16, u64)>,
    /// The peer's expectations (connections its helpers expect, e.g. FTP data).
    pub(super) expectations: ExpMap<ExtExp>,
}

impl External {
    fn new(hasher: &KeyHasher, expected_flows: usize) -> External {
        External {
            table: FlowTable::new(hasher, expected_flows),
            mark: 0,
            bulk_mark: None,
            bucket_marks: BTreeMap::new(),
            ended: Vec::new(),
            expectations: ExpMap::with_hasher(hasher.build()),
        }
    }

    /// Forget expectations whose timeout passed (their deletion may have been lost, or
    /// the peer died): the kernel dropped them too.
    pub(super) fn expire(&mut self, now: Instant) {
        self.expectations
            .retain(|_, x| x.until.is_none_or(|u| now < u));
    }
}

impl Node {
    /// Apply a delivered message; `key` is its flow's, hashed by this node.
    pub(super) fn apply_message(
        &mut self,
        from: NodeId,
        m: Message,
        key: Option<Keyed>,
        now: Instant,
    ) {
        // Hot standby writes to our kernel only what the primary says: its table is the
        // truth. Other nodes' tables (a backup's own flows, or flows a restarted backup
        // found in its kernel and now reports as its own) are kept, never applied: they
        // could otherwise delete or roll back flows the primary still carries.
        let origin_is_primary = self
            .peers
            .get(&from)
            .is_some_and(|p| p.link.role == WireRole::Primary);
        let hot =
            self.cfg.mode == Mode::HotStandby && self.role != Role::Primary && origin_is_primary;
        let primarys_table = origin_is_primary && matches!(m, Message::BulkEnd { .. });
        // A cache made again (after a flush, or a new peer) is sized for what our kernel
        // holds on peers' behalf when that is known: the resync that refills it then
        // allocates its table once, instead of growing it (and holding the old table
        // and the new at once) step by step.
        let (expected_flows, max_flows) = (self.cfg.expected_flows, self.cfg.max_flows);
        let Node {
            external,
            peers,
            kernel_ops,
            notes,
            internal,
            stats,
            hasher,
            mirror,
            group,
            ..
        } = self;
        let Some(p) = peers.get_mut(&from) else {
            return;
        };
        let ext = external.entry(from).or_insert_with(|| {
            let expected = match mirror.len() {
                0 => expected_flows,
                known => known.min(max_flows),
            };
            Box::new(External::new(hasher, expected))
        });
        let fresh = matches!(m, Message::FlowNew(_));
        match m {
            Message::FlowNew(f) | Message::FlowUpdate(f) => {
                stats.flows_received += 1;
                let key = key.unwrap_or_else(|| hasher.keyed(f.key()));
                if ext.table.len() >= max_flows && !ext.table.contains(&key) {
                    // The cap (like conntrackd's HashLimit): refused, counted, and this
                    // copy is incomplete until a digest agrees again (not ready).
                    if stats.cache_full == 0 || p.sync.digest_ok {
                        notes.push_back(Notify::CacheFull { origin: Some(from) });
                    }
                    stats.cache_full += 1;
                    p.sync.digest_ok = false;
                    return;
                }
                let (up, state) = ext.table.upsert_state(&key, &f, ext.mark, true);
                // Written only when the kernel is not known to hold this very state
                // (whatever brought it: live, a resync, a repair): the same state is only
                // remembered as mentioned. An empty state could not be encoded.
                if hot && !state.is_empty() {
                    // A flow on a tuple our kernel holds with another reply tuple: our
                    // own entry from when we served (the flow closed and opened again on
                    // the primary meanwhile, with another NAT port).
                    let replaces_local =
                        up == Upsert::New && internal.other_reply(&key, &f.reply).is_some();
                    if (fresh && up == Upsert::Changed) || replaces_local {
                        // A new flow on a tuple we hold: the primary's kernel made a new
                        // entry for it (the old one closed; its deletion may have been
                        // merged into this message), perhaps with another NAT port. An
                        // update cannot change an entry's tuples: the old entry goes
                        // first, then the new one is created.
                        mirror.forget(key.hash);
                        kernel_ops.push_back(KernelOp::Delete(f.key()));
                    }
                    if mirror.write_needed(key.hash, xxh3_64(state)) {
                        stats.kernel_writes += 1;
                        kernel_ops.push_back(KernelOp::Upsert(StoredFlow::new(state, f.timeout)));
                    } else {
                        stats.kernel_writes_skipped += 1;
                    }
                }
            }
            Message::FlowDelete(k) => {
                let key = key.unwrap_or_else(|| hasher.keyed(k));
                if ext.table.remove(&key) && hot {
                    mirror.forget(key.hash);
                    kernel_ops.push_back(KernelOp::Delete(k));
                }
            }
            Message::BulkBegin { .. } => {
                ext.mark += 1;
                ext.bulk_mark = Some(ext.mark);
                ext.bucket_marks.clear();
                ext.ended.clear();
                if !p.sync.refreshing {
                    p.sync.bulk_done = false;
                }
                // The whole table follows: repairs asked for before are moot.
                p.sync.repairs_pending = 0;
                // It took us out of its group: its stream carries everything now, until
                // it asks us to join again (docs/PROTOCOL.md §13.3).
                p.link.group_joined = false;
            }
            Message::GroupJoin { generation, seq } => p.link.join_group(generation, seq),
            Message::BulkEnd { .. } => {
                let swept = match ext.bulk_mark.take() {
                    Some(mark) => {
                        let gone: Vec<ExpKey> = ext
                            .expectations
                            .iter()
                            .filter(|(_, x)| x.mark < mark)
                            .map(|(k, _)| *k)
                            .collect();
                        for k in gone {
                            if let Some(x) = ext.expectations.remove(&k)
                                && hot
                            {
                                kernel_ops.push_back(KernelOp::ExpDelete(Box::new(x.exp)));
                            }
                        }
                        ext.table.sweep(mark, None)
                    }
                    None => Vec::new(),
                };
                if hot {
                    for k in &swept {
                        mirror.forget(hasher.hash(k));
                    }
                    kernel_ops.extend(swept.iter().map(|k| KernelOp::Delete(*k)));
                }
                p.sync.bulk_done = true;
                p.sync.refreshing = false;
                notes.push_back(Notify::BulkReceived {
                    from,
                    swept: swept.len(),
                });
            }
            Message::Digest { hashes, .. } => {
                let differing = ext.table.digest().differing(&hashes);
                if differing.is_empty() {
                    p.sync.digest_ok = true;
                } else if ext.table.len() >= max_flows {
                    // Full: a repair could not be held. Not ready until the table fits.
                    p.sync.digest_ok = false;
                } else if p.sync.repairs_pending == 0 {
                    p.sync.digest_ok = false;
                    p.sync.repairs_pending = differing.len();
                    notes.push_back(Notify::Repairing {
                        from,
                        buckets: differing.len(),
                    });
                    if !p.link.send.push(Message::BucketRequest(differing)) {
                        // Not queued: ask again at the next digest.
                        p.sync.repairs_pending = 0;
                    }
                }
            }
            Message::BucketBegin { bucket } => {
                ext.mark += 1;
                ext.bucket_marks.insert(bucket, ext.mark);
            }
            Message::BucketEnd { bucket } => {
                if let Some(mark) = ext.bucket_marks.remove(&bucket) {
                    ext.ended.push((bucket, mark));
                }
                p.sync.repairs_pending = p.sync.repairs_pending.saturating_sub(1);
                if p.sync.repairs_pending == 0 || ext.bucket_marks.is_empty() {
                    let swept = ext.table.sweep_buckets(&ext.ended);
                    ext.ended.clear();
                    if hot {
                        for k in &swept {
                            mirror.forget(hasher.hash(k));
                        }
                        kernel_ops.extend(swept.iter().map(|k| KernelOp::Delete(*k)));
                    }
                }
            }
            Message::ResyncRequest => self.start_bulk(from),
            Message::BucketRequest(buckets) => {
                // It found our table and its copy differing: the digest after these
                // repairs goes at the next interval, unchanged or not (readiness waits
                // for it).
                p.sync.last_digest = None;
                let mut overflow = false;
                let wanted: Vec<u16> = buckets
                    .into_iter()
                    .filter(|&b| usize::from(b) < BUCKETS)
                    .collect();
                // A member's repair goes on the group stream, in order with the live
                // changes of the same flows (docs/PROTOCOL.md §13.1).
                let in_group = group.as_ref().is_some_and(|g| g.is_member(from));
                let send = match group.as_mut().filter(|_| in_group) {
                    Some(g) => &mut g.send,
                    None => &mut p.link.send,
                };
                for (b, flows) in internal.messages_of_buckets(&wanted) {
                    overflow |= !send.push(Message::BucketBegin { bucket: b });
                    for (key, m) in flows {
                        overflow |= !send.push_transfer(key, m);
                    }
                    overflow |= !send.push(Message::BucketEnd { bucket: b });
                }
                overflow |= !send.push(internal.digest().message());
                if overflow {
                    stats.overflows += 1;
                    if in_group {
                        self.group_overflow();
                    } else {
                        self.start_bulk(from);
                    }
                }
            }
            Message::ExpNew(e) => {
                stats.expectations_received += 1;
                let key = exp_key(&e);
                let until = e
                    .timeout
                    .map(|t| now + std::time::Duration::from_secs(u64::from(t)));
                let changed = ext.expectations.get(&key).is_none_or(|x| x.exp != *e);
                ext.expectations.insert(
                    key,
                    ExtExp {
                        exp: (*e).clone(),
                        mark: ext.mark,
                        until,
                    },
                );
                if hot && changed {
                    kernel_ops.push_back(KernelOp::ExpCreate(e));
                }
            }
            Message::ExpDelete(tuple, zone) => {
                stats.expectations_received += 1;
                if let Some(x) = ext.expectations.remove(&(tuple, zone.filter(|&z| z != 0)))
                    && hot
                {
                    kernel_ops.push_back(KernelOp::ExpDelete(Box::new(x.exp)));
                }
            }
        }
        if primarys_table {
            self.shorten_unclaimed(from);
        }
    }
}
