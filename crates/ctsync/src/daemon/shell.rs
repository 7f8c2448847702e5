//! The kernel side of the shell: carries out the core's [`KernelOp`]s against
//! ctnetlink. Consecutive writes are batched (creates, then updates for those that
//! existed; deletes; refreshes); failures are counted and logged once per batch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use ctnetlink::{Conntrack, DumpItem, Errno, Flow, FlowKey, FlowOp, Groups};
use ctsync_core::{KernelOp, Node};

use super::status::KernelFailure;
use super::{SyncLink, log};

/// Flows decoded and written per kernel batch during a commit.
const COMMIT_CHUNK: usize = 16384;
/// Flows the kernel had no room for that are kept to be written again (beyond, they are
/// counted only; the hot-standby refresh writes them again later).
const NO_ROOM_KEPT: usize = 1 << 20;
/// How often flows the kernel had no room for are tried again.
const NO_ROOM_RETRY: Duration = Duration::from_secs(1);

/// This node's kernel table, as the core's operations reach it.
pub(super) struct Kernel {
    ct: Conntrack,
    /// A second descriptor of the event socket, to leave the NEW group during a commit.
    events_ctl: OwnedFd,
    /// Keep TCP window tracking on written flows (`[sync] tcp_window_tracking`).
    pub(super) window_tracking: bool,
    /// Failed kernel operations, by kind (each failure's errno is logged).
    pub(super) failures: BTreeMap<KernelFailure, u64>,
    /// Replicated flows written again because the kernel had lost them.
    pub(super) recreated: u64,
    /// Flows whose write the kernel refused since the core was last told (it forgets
    /// what it knew the kernel held of them).
    refused: Vec<FlowKey>,
    /// How long the last read of the whole table took.
    pub(super) last_dump: Option<Duration>,
    /// Reads of the whole table.
    pub(super) dumps: u64,
    /// Flows the kernel had no room for (`nf_conntrack_max` reached: ENOMEM), by key,
    /// waiting to be written again; a later write or delete of the same key supersedes.
    pub(super) no_room: HashMap<FlowKey, Flow>,
    /// Writes the kernel refused for want of room (tries again not counted).
    pub(super) no_room_refused: u64,
    /// When the waiting flows were last tried again.
    no_room_tried: Option<Instant>,
    /// Flows a conntrackd peer's table put in this (backup's) kernel: a read of the
    /// table leaves them out of the core's internal cache (they are the peer's, not
    /// ours), until this node becomes primary.
    pub(super) foreign: HashSet<FlowKey>,
}

/// Create `flows`, and update those that exist; the errors: the index of the flow, the
/// operation and the errno.
fn upsert_batch(ct: &mut Conntrack, flows: &[Flow]) -> Vec<(usize, KernelFailure, Errno)> {
    let mut exists = Vec::new();
    let mut errs = Vec::new();
    let r = ct.batch(FlowOp::Create, flows, |i, e| {
        if e == Errno::EEXIST {
            exists.push(i);
        } else {
            errs.push((i, KernelFailure::Create, e));
        }
    });
    if let Err(e) = r {
        log("warn", format!("kernel create batch: {e}"));
    }
    let again: Vec<Flow> = exists
        .iter()
        .filter_map(|&i| flows.get(i).cloned())
        .collect();
    if let Err(e) = ct.batch(FlowOp::Update, &again, |j, e| {
        errs.push((
            exists.get(j).copied().unwrap_or(usize::MAX),
            KernelFailure::Update,
            e,
        ))
    }) {
        log("warn", format!("kernel update batch: {e}"));
    }
    errs
}

/// A kernel write gathered into a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Upsert,
    Delete,
    Refresh,
}

/// The keys of the batch being gathered that a later write could overtake: a batch
/// applies its upserts, then its deletes, then its refreshes, so a write that would
/// come before an earlier one on the same key must wait for the batch to be applied. A
/// flow closed and opened again on the same tuple (delete, then upsert) would otherwise
/// be left deleted, and one refreshed, then deleted, written back by the refresh. Upserts
/// are not kept (nothing in a batch comes before them): a bulk costs no set.
#[derive(Debug, Default)]
struct Overtaking {
    deleted: HashSet<FlowKey>,
    refreshed: HashSet<FlowKey>,
}

impl Overtaking {
    /// Whether `write` of `key` must wait until the batch gathered so far is applied; it
    /// is noted as part of the batch it goes into.
    fn must_wait(&mut self, write: Write, key: &FlowKey) -> bool {
        let wait = match write {
            Write::Upsert => self.deleted.contains(key) || self.refreshed.contains(key),
            Write::Delete => self.refreshed.contains(key),
            Write::Refresh => false,
        };
        if wait {
            self.clear();
        }
        match write {
            Write::Upsert => {}
            Write::Delete => {
                self.deleted.insert(*key);
            }
            Write::Refresh => {
                self.refreshed.insert(*key);
            }
        }
        wait
    }

    /// The batch was applied.
    fn clear(&mut self) {
        self.deleted.clear();
        self.refreshed.clear();
    }
}

/// Prepare a replicated TCP flow for the kernel without window tracking (conntrackd's
/// default too): the writer's window data is not on the wire, and an entry that already
/// exists here keeps window data from when this node last saw the connection, possibly
/// long ago, against which current segments are out of window (INVALID, dropped:
/// connections stall after a failback). Liberal entries accept any in-connection
/// segment. `MAXACK_SET` is cleared: it would make the kernel compare acks against a
/// maximum this node never saw.
fn be_liberal(f: &mut Flow) {
    use ctnetlink::{ProtoInfo, TcpFlags, tcp_flags as t};
    if let Some(ProtoInfo::Tcp(tcp)) = &mut f.protoinfo {
        for dir in [&mut tcp.flags_orig, &mut tcp.flags_reply] {
            let keep = dir.map_or(0, |d| d.flags & (t::WINDOW_SCALE | t::SACK_PERM));
            *dir = Some(TcpFlags {
                flags: keep | t::BE_LIBERAL,
                mask: t::WINDOW_SCALE | t::SACK_PERM | t::BE_LIBERAL | t::MAXACK_SET,
            });
        }
    }
}

impl Kernel {
    pub(super) fn new(ct: Conntrack, events_ctl: OwnedFd, window_tracking: bool) -> Kernel {
        Kernel {
            ct,
            events_ctl,
            window_tracking,
            failures: BTreeMap::new(),
            recreated: 0,
            refused: Vec::new(),
            last_dump: None,
            dumps: 0,
            no_room: HashMap::new(),
            no_room_refused: 0,
            no_room_tried: None,
            foreign: HashSet::new(),
        }
    }

    /// Count failed kernel writes and say so (once per batch): a full table
    /// (`nf_conntrack_max`) shows here; the other writes of the batch still land, and a
    /// hot-standby backup writes the missing ones again at its next refresh.
    fn failures(&mut self, errs: Vec<(KernelFailure, Errno)>) {
        if let Some((what, e)) = errs.first() {
            log(
                "warn",
                format!(
                    "the kernel refused {} writes (first: {what}: {e}); is the table full (net.netfilter.nf_conntrack_max)?",
                    errs.len()
                ),
            );
        }
        for (what, _) in errs {
            self.failed(what);
        }
    }

    fn failed(&mut self, what: KernelFailure) {
        *self.failures.entry(what).or_default() += 1;
    }

    /// Kernel operations, batched: consecutive upserts become one batch of creates and
    /// one of updates for those that existed; deletes and refreshes likewise. `node`
    /// takes what a dump reads; `link` is serviced between long operations.
    pub(super) fn carry_out_all(
        &mut self,
        ops: Vec<KernelOp>,
        node: &mut Node,
        link: &mut SyncLink,
    ) {
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        let mut refreshes = Vec::new();
        let mut overtaking = Overtaking::default();
        for op in ops {
            // Decoded here, as it is written: the core queues flows compact. A state the
            // core encoded always decodes.
            let (write, flow) = match op {
                KernelOp::Upsert(f) => (Write::Upsert, f.flow()),
                KernelOp::Delete(k) => (Write::Delete, Some(Flow::from_key(&k))),
                KernelOp::Refresh(f) => (Write::Refresh, f.flow()),
                other => {
                    self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
                    overtaking.clear();
                    self.carry_out(other, node, link);
                    continue;
                }
            };
            let Some(flow) = flow else {
                continue;
            };
            if overtaking.must_wait(write, &flow.key()) {
                self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
            }
            match write {
                Write::Upsert => upserts.push(flow),
                Write::Delete => deletes.push(flow),
                Write::Refresh => refreshes.push(flow),
            }
            if upserts.len() + deletes.len() + refreshes.len() >= COMMIT_CHUNK {
                // A long run of writes (a refresh of a million replicated flows, a
                // transfer's worth of upserts) goes to the kernel a chunk at a time, and
                // the sync link is served between chunks: decoded all at once it held
                // over a gigabyte, and a backup silent for seconds was declared down by
                // its primary, which then sent it the whole table again.
                self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
                overtaking.clear();
                link.service(node);
            }
        }
        self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
        for k in self.refused.drain(..) {
            node.kernel_write_failed(&k);
        }
    }

    /// Write replicated flows (create, or update those that exist), prepared for the
    /// kernel; failures counted and logged. The number written.
    fn upsert(&mut self, flows: &mut [Flow]) -> usize {
        if !self.window_tracking {
            flows.iter_mut().for_each(be_liberal);
        }
        let errs = upsert_batch(&mut self.ct, flows);
        let written = flows.len() - errs.len();
        self.refused.extend(
            errs.iter()
                .filter_map(|(i, _, _)| flows.get(*i).map(Flow::key)),
        );
        let errs = self.keep_no_room(flows, errs, false);
        self.failures(errs);
        written
    }

    /// Keep the flows of a batch the kernel had no room for (ENOMEM on create) to try
    /// again, and forget the waiting flows this batch wrote; the other errors.
    fn keep_no_room(
        &mut self,
        flows: &[Flow],
        errs: Vec<(usize, KernelFailure, Errno)>,
        again: bool,
    ) -> Vec<(KernelFailure, Errno)> {
        if !self.no_room.is_empty() {
            let failed: HashSet<usize> = errs.iter().map(|(i, _, _)| *i).collect();
            for (i, f) in flows.iter().enumerate() {
                if !failed.contains(&i) {
                    self.no_room.remove(&f.key());
                }
            }
        }
        let mut other = Vec::new();
        for (i, what, e) in errs {
            match flows.get(i) {
                Some(f) if what == KernelFailure::Create && e.0 == libc::ENOMEM => {
                    if !again {
                        self.no_room_refused += 1;
                    }
                    if self.no_room.len() < NO_ROOM_KEPT || self.no_room.contains_key(&f.key()) {
                        self.no_room.insert(f.key(), f.clone());
                    }
                }
                _ => other.push((what, e)),
            }
        }
        other
    }

    /// Write again, at most every second, the flows the kernel had no room for; true
    /// when the last of them was written now.
    pub(super) fn retry_no_room(&mut self, now: Instant) -> bool {
        if self.no_room.is_empty()
            || self
                .no_room_tried
                .is_some_and(|t| now.saturating_duration_since(t) < NO_ROOM_RETRY)
        {
            return false;
        }
        self.no_room_tried = Some(now);
        let flows: Vec<Flow> = self.no_room.values().cloned().collect();
        for chunk in flows.chunks(COMMIT_CHUNK) {
            let errs = upsert_batch(&mut self.ct, chunk);
            let errs = self.keep_no_room(chunk, errs, true);
            self.failures(errs);
        }
        self.no_room.is_empty()
    }

    /// Up to `n` of the flows waiting for room, as the log and the status show them.
    pub(super) fn no_room_sample(&self, n: usize) -> Vec<String> {
        let mut v: Vec<String> = self.no_room.values().map(|f| f.to_string()).collect();
        v.sort_unstable();
        v.truncate(n);
        v
    }

    /// Create the flows the kernel does not hold (those it holds are left as they are),
    /// prepared as replicated flows are; the number created.
    pub(super) fn create_missing(&mut self, flows: &mut [Flow]) -> usize {
        if !self.window_tracking {
            flows.iter_mut().for_each(be_liberal);
        }
        let mut created = flows.len();
        let mut errs = Vec::new();
        if let Err(e) = self.ct.batch(FlowOp::Create, flows, |_, e| {
            created -= 1;
            if e != Errno::EEXIST {
                errs.push((KernelFailure::Create, e));
            }
        }) {
            log("warn", format!("kernel create batch: {e}"));
        }
        self.failures(errs);
        created
    }

    /// Write flows that came from elsewhere than the core (a conntrackd peer): upserts
    /// prepared as replicated flows are, then deletions; both vectors are emptied.
    pub(super) fn write_flows(&mut self, upserts: &mut Vec<Flow>, deletes: &mut Vec<Flow>) {
        self.apply_batches(upserts, deletes, &mut Vec::new());
    }

    fn apply_batches(
        &mut self,
        upserts: &mut Vec<Flow>,
        deletes: &mut Vec<Flow>,
        refreshes: &mut Vec<Flow>,
    ) {
        if !upserts.is_empty() {
            self.upsert(upserts);
            upserts.clear();
        }
        if !deletes.is_empty() {
            if !self.no_room.is_empty() {
                for f in deletes.iter() {
                    self.no_room.remove(&f.key());
                }
            }
            let mut errs = Vec::new();
            if let Err(e) = self.ct.batch(FlowOp::Delete, deletes, |_, e| {
                if e != Errno::ENOENT {
                    errs.push((KernelFailure::Delete, e));
                }
            }) {
                log("warn", format!("kernel delete batch: {e}"));
            }
            self.failures(errs);
            deletes.clear();
        }
        if !refreshes.is_empty() {
            self.refresh(refreshes);
            refreshes.clear();
        }
    }

    /// Hot standby: reset the timeouts of replicated flows. Those the kernel no longer
    /// has (it was full when they arrived, or someone deleted them behind our back) are
    /// written again, whole: a backup heals after `nf_conntrack_max` was reached, and
    /// nothing is lost from the external cache.
    fn refresh(&mut self, flows: &[Flow]) {
        let bare: Vec<Flow> = flows
            .iter()
            .map(|f| {
                let mut r = Flow::new(f.orig, f.reply);
                r.zone = f.zone;
                r.timeout = f.timeout;
                r
            })
            .collect();
        let mut missing = Vec::new();
        let mut errs = Vec::new();
        if let Err(e) = self.ct.batch(FlowOp::Update, &bare, |i, e| {
            if e == Errno::ENOENT {
                missing.push(i);
            } else {
                errs.push((KernelFailure::Refresh, e));
            }
        }) {
            log("warn", format!("kernel refresh batch: {e}"));
        }
        self.failures(errs);
        let mut again: Vec<Flow> = missing
            .into_iter()
            .filter_map(|i| flows.get(i).cloned())
            .collect();
        if !again.is_empty() {
            self.recreated += self.upsert(&mut again) as u64;
        }
    }

    /// Carry out one operation.
    pub(super) fn carry_out(&mut self, op: KernelOp, node: &mut Node, link: &mut SyncLink) {
        match op {
            KernelOp::Dump => self.dump(node, link),
            KernelOp::ShortenTimeouts(secs) => self.shorten_timeouts(secs),
            KernelOp::Shorten(flows) => self.shorten(&flows),
            KernelOp::Commit(tables) => {
                let start = Instant::now();
                let n = self.commit(tables);
                log(
                    "info",
                    format!(
                        "committed {n} flows in {:.3} s",
                        start.elapsed().as_secs_f64()
                    ),
                );
                link.service(node);
            }
            KernelOp::ExpCreate(e) => self.write_expectation(&e, true),
            KernelOp::ExpDelete(e) => self.write_expectation(&e, false),
            other => self.carry_out_all(vec![other], node, link),
        }
    }

    /// Create (`create`) or delete an expectation, the core's or a conntrackd peer's.
    /// EEXIST on create (a bulk transfer repeats it) and ENOENT on delete are no
    /// failure.
    pub(super) fn write_expectation(&mut self, e: &ctnetlink::Expectation, create: bool) {
        let r = if create {
            self.ct.create_expectation(e)
        } else {
            self.ct.delete_expectation(e)
        };
        match r {
            Ok(()) => {}
            Err(ctnetlink::Error::Kernel(Errno::EEXIST)) if create => {}
            Err(ctnetlink::Error::Kernel(Errno::ENOENT)) if !create => {}
            Err(ctnetlink::Error::Kernel(_)) => self.failed(if create {
                KernelFailure::ExpectationCreate
            } else {
                KernelFailure::ExpectationDelete
            }),
            Err(err) => log(
                "warn",
                format!(
                    "{} an expectation: {err}",
                    if create { "creating" } else { "deleting" }
                ),
            ),
        }
    }

    /// Every expectation the kernel holds (a conntrackd peer's RESYNC sends them).
    pub(super) fn expectations(&mut self) -> Vec<ctnetlink::Expectation> {
        let mut all = Vec::new();
        if let Err(e) = self.ct.dump_expectations(None, |e| all.push(e.clone())) {
            log("warn", format!("reading the expectations: {e}"));
            self.failed(KernelFailure::ExpectationDump);
        }
        all
    }

    /// Read the whole table (and the expectations) into the core; timed.
    fn dump(&mut self, node: &mut Node, link: &mut SyncLink) {
        let now = Instant::now();
        node.begin_kernel_dump(now);
        let foreign = &self.foreign;
        let skip = node.role() != ctsync_core::Role::Primary && !foreign.is_empty();
        let r = self.ct.dump(None, |item| match item {
            DumpItem::Flow(f) if skip && foreign.contains(&f.key()) => {}
            DumpItem::Flow(f) => node.handle_dumped(now, f),
            DumpItem::Restart => node.begin_kernel_dump(now),
        });
        match r {
            Ok(_) => {
                node.end_kernel_dump(now);
                let mut exps = Vec::new();
                match self.ct.dump_expectations(None, |e| exps.push(e.clone())) {
                    Ok(_) => node.expectations_dumped(now, &exps),
                    Err(e) => {
                        log("warn", format!("reading the expectations: {e}"));
                        self.failed(KernelFailure::ExpectationDump);
                    }
                }
                self.last_dump = Some(now.elapsed());
                self.dumps += 1;
                link.service(node);
            }
            Err(e) => {
                log("warn", format!("reading the kernel table: {e}"));
                self.failed(KernelFailure::Dump);
            }
        }
    }

    /// Becoming backup: shorten the kernel timeouts of local flows to `secs`.
    fn shorten_timeouts(&mut self, secs: u32) {
        let mut short = Vec::new();
        let r = self.ct.dump(None, |item| {
            if let DumpItem::Flow(f) = item
                && f.timeout.is_some_and(|t| t > secs)
            {
                let mut s = Flow::new(f.orig, f.reply);
                s.zone = f.zone;
                s.timeout = Some(secs);
                short.push(s);
            }
        });
        if let Err(e) = r {
            log("warn", format!("reading the kernel table: {e}"));
            self.failed(KernelFailure::Dump);
        }
        let n = short.len();
        if let Err(e) = self.ct.batch(FlowOp::Update, &short, |_, _| {}) {
            log("warn", format!("shortening timeouts: {e}"));
        }
        log(
            "info",
            format!("shortened the timeouts of {n} flows to {secs} s"),
        );
    }

    /// Lower the timeouts of these entries (found in the kernel at start, owned by no
    /// primary).
    fn shorten(&mut self, flows: &[Flow]) {
        let mut gone = 0usize;
        if let Err(e) = self.ct.batch(FlowOp::Update, flows, |_, err| {
            if err.0 == libc::ENOENT {
                gone += 1;
            }
        }) {
            log("warn", format!("shortening timeouts: {e}"));
        }
        log(
            "info",
            format!(
                "{} entries of the kernel that no primary owns expire within {} s",
                flows.len() - gone,
                flows.first().and_then(|f| f.timeout).unwrap_or(0)
            ),
        );
    }

    /// Write the peers' tables to the kernel (commit mode's takeover); the number of
    /// flows.
    fn commit(&mut self, tables: Vec<ctsync_core::FlowTable>) -> usize {
        // Creating many entries while subscribed to NEW events makes the kernel build an
        // event per entry for us to throw away; the dump that follows every commit
        // catches whatever else appeared meanwhile.
        let quiet = Groups {
            new: false,
            ..Groups::CONNTRACK
        };
        let paused = ctnetlink::set_event_groups(self.events_ctl.as_fd(), quiet);
        if let Err(e) = &paused {
            log(
                "warn",
                format!("leaving the NEW event group for the commit: {e}"),
            );
        }
        let n: usize = tables.iter().map(|t| t.len()).sum();
        // One socket: ctnetlink's create runs under the subsystem's mutex, so a second
        // thread only spins on it (measured: no gain, a quarter of the CPU time in
        // mutex_spin_on_owner). Decoded a chunk at a time from the compact tables:
        // memory stays flat however large the commit.
        let mut chunk = Vec::with_capacity(COMMIT_CHUNK);
        for table in tables {
            let mut flows = table.into_flows();
            loop {
                chunk.clear();
                chunk.extend(flows.by_ref().take(COMMIT_CHUNK));
                if chunk.is_empty() {
                    break;
                }
                self.upsert(&mut chunk);
            }
        }
        if paused.is_ok()
            && let Err(e) = ctnetlink::set_event_groups(self.events_ctl.as_fd(), Groups::CONNTRACK)
        {
            log("error", format!("rejoining the NEW event group: {e}"));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use ctnetlink::{Flow, FlowKey, Tuple, ipproto};

    use super::{Overtaking, Write};

    fn key(port: u16) -> FlowKey {
        let t = Tuple::ports(
            ipproto::UDP,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            port,
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            53,
        );
        Flow::new(t, t.inverse()).key()
    }

    #[test]
    fn a_write_that_would_overtake_an_earlier_one_on_its_key_waits_for_the_batch() {
        let (a, b) = (key(1000), key(1001));
        let mut o = Overtaking::default();
        // Closed and opened again: the upsert waits for the delete to be applied.
        assert!(!o.must_wait(Write::Delete, &a));
        assert!(o.must_wait(Write::Upsert, &a));
        // Opened, then closed: the batch's own order is right.
        let mut o = Overtaking::default();
        assert!(!o.must_wait(Write::Upsert, &a));
        assert!(!o.must_wait(Write::Delete, &a));
        // Refreshed, then closed: the delete waits (the refresh would write it back).
        let mut o = Overtaking::default();
        assert!(!o.must_wait(Write::Refresh, &a));
        assert!(o.must_wait(Write::Delete, &a));
        // The delete went into a new batch: an upsert of the key now waits for it.
        assert!(o.must_wait(Write::Upsert, &a));
        // Other keys never wait.
        let mut o = Overtaking::default();
        assert!(!o.must_wait(Write::Delete, &a));
        assert!(!o.must_wait(Write::Refresh, &a));
        assert!(!o.must_wait(Write::Upsert, &b));
        assert!(!o.must_wait(Write::Delete, &b));
        // An applied batch is forgotten.
        o.clear();
        assert!(!o.must_wait(Write::Upsert, &a));
    }
}
