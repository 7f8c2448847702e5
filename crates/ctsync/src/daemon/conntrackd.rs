//! The shell around an FTFW session with one conntrackd peer (`[conntrackd]`): its
//! sockets (UDP unicast or a multicast group: `socket.rs`), its copy of the peer's table
//! and expectations, and the kernel writes.
//!
//! * Flows from conntrackd: kept by key (the peer's table, as conntrackd's external
//!   cache); written to the kernel as they arrive while this node is not primary (hot
//!   standby, like conntrackd's `DisableExternalCache`), or all at once when it becomes
//!   primary (commit mode, like `conntrackd -c`). A primary never lets them touch its
//!   kernel: a conntrackd backup also reports what it purges from its own table.
//!   conntrackd sends a flow when its state changes, not when a packet refreshes its
//!   timer, so a quiet live flow expires in a hot-standby backup's kernel while
//!   conntrackd still has it: its destroy event writes our copy back at once (until
//!   conntrackd deletes it), as the core does for its peers' flows (`write_back`).
//!   Written at takeover instead, it would come after keepalived has moved the
//!   addresses, and a datagram in between gets a new NAT port. Only while conntrackd is
//!   heard (a flow that ended while it was down never gets its deletion), a key at most
//!   once in [`RESTORE_WINDOW`], and not one that came with a timeout under
//!   [`RESTORE_MIN_SECS`] (it is ending). A flow on a tuple our kernel holds with
//!   another reply tuple (another NAT port: conntrackd's earlier flow there, or our own
//!   entry from when we served it) replaces that entry, deleted first: a kernel update
//!   cannot change an entry's tuples.
//! * Our flows to conntrackd: the kernel events the core takes as ours (not caused by
//!   our own writes, and passing the filter), and our whole table when conntrackd asks
//!   for it (RESYNC: its `-n`, its backup script).
//! * Expectations (conntrackd's `ExpectationSync On`): conntrackd's kept beside its
//!   flows and written after them (as they arrive in hot standby, at takeover
//!   otherwise); ours sent as the kernel makes them, when their master is one we
//!   replicate, and with our table on a RESYNC.
//!
//! Flows written here go through the shell's kernel socket, whose events the core
//! knows as its own: they are not sent back out. When this node becomes primary the
//! core reads the kernel table, and conntrackd's flows become ours.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use ctnetlink::{EventKind, Expectation, Flow, FlowKey, Netns, Tuple};
use ctsync_core::{FlowEvent, Mode, Node, Role};
use serde::Serialize;

use super::log;
use super::shell::Kernel;
use crate::config::{ConntrackdPeer, ConntrackdTransport};
use crate::ftfw::{FlowMessage, Received, Session, SessionConfig, SessionStats};

mod socket;
use socket::Wire;

/// Datagrams read per loop turn at most (the rest waits for the next turn).
const RECEIVE_BUDGET: usize = 256;
/// Datagrams sent per loop turn at most (a bulk of a large table goes on next turn).
const SEND_BUDGET: usize = 512;
/// conntrackd is "up" while heard from within this (it sends at least every second).
const UP_WITHIN: Duration = Duration::from_secs(3);
/// A flow of conntrackd's is written back at most once in this long (a full table's
/// early drop would make a loop of it).
const RESTORE_WINDOW: Duration = Duration::from_secs(30);
/// A flow that came with a shorter timeout is not written back: it is ending.
const RESTORE_MIN_SECS: u32 = 10;
/// The timeout given to a flow that came without one (conntrackd omits it when the
/// sender has `CommitTimeout`; its own receiver then uses 60 s too).
const DEFAULT_TIMEOUT: u32 = 60;

/// What `ctsync status` shows of the conntrackd peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ConntrackdStatus {
    /// Always "conntrackd".
    pub dialect: &'static str,
    /// Always true: the protocol has no authentication (any host that reaches `local`
    /// or the group from `peer`'s address can plant flows).
    pub unauthenticated: bool,
    /// `"udp"` or `"multicast"`.
    pub transport: &'static str,
    /// UDP: this node's address for it.
    pub local: Option<SocketAddr>,
    /// UDP: conntrackd's address; multicast: the group.
    pub peer: SocketAddr,
    /// The only sender taken (UDP: conntrackd; multicast: `peer` if named).
    pub accept: Option<IpAddr>,
    /// The link ours go out on (1: the section's own; `transport`, `local`, `peer` and
    /// `accept` are that link's): the one conntrackd was last heard on.
    pub link: usize,
    /// Links to conntrackd (1 + `[[conntrackd.link]]`).
    pub links: usize,
    /// Times the link ours go out on changed: conntrackd heard on another one, or ours
    /// unusable (its interface down).
    pub link_switches: u64,
    /// The address conntrackd was last heard from.
    pub heard_from: Option<IpAddr>,
    /// Heard from within 3 s.
    pub up: bool,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: Option<u64>,
    /// It answered our HELLO.
    pub hello_done: bool,
    /// Its flows we hold.
    pub flows: usize,
    /// Its expectations we hold (conntrackd's `ExpectationSync`).
    pub expectations: usize,
    /// Messages waiting to be sent to it, and sent but not acknowledged.
    pub backlog: (usize, usize),
    /// Its flows written to our kernel (hot standby or commit).
    pub written: u64,
    /// Its flows queued to be written again in hot standby after our kernel let them
    /// expire (or lost them otherwise) while conntrackd still had them.
    pub restored: u64,
    /// Its deletions carried out in our kernel.
    pub deleted: u64,
    /// Whole tables sent to it (its RESYNC requests answered).
    pub bulks_sent: u64,
    /// Datagrams from an address that is not `peer`, dropped.
    pub foreign_dropped: u64,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
    /// The FTFW session's counters.
    pub session: SessionStats,
}

/// Wait until the endpoint, if any, has a datagram to read.
pub(super) async fn readable(e: &Option<Endpoint>) -> Option<()> {
    e.as_ref()?.readable().await.ok()
}

/// The endpoint for one conntrackd peer.
pub(super) struct Endpoint {
    /// Every link to conntrackd (the section's own first), with its transport.
    links: Vec<(Wire, ConntrackdTransport)>,
    /// The link ours go out on: the one conntrackd was last heard on (it sends on one
    /// at a time and moves when its interface goes down), the first until then.
    current: usize,
    heard_from: Option<IpAddr>,
    session: Session,
    /// conntrackd's flows, by key, with when each last came.
    flows: HashMap<FlowKey, (Flow, Instant)>,
    /// conntrackd's expectations (its `ExpectationSync`), by expected tuple, with when
    /// each last came.
    expectations: HashMap<Tuple, (Expectation, Instant)>,
    filter: ctsync_core::Filter,
    mode: Mode,
    buf: Vec<u8>,
    rx: Vec<u8>,
    written: u64,
    restored: u64,
    /// conntrackd's flows our kernel destroyed (not through us) while we hold them, to
    /// be written back (hot standby, not primary).
    expired: Vec<FlowKey>,
    /// The keys written back since `restore_window` began (see [`RESTORE_WINDOW`]).
    restored_keys: HashSet<FlowKey>,
    restore_window: Instant,
    deleted: u64,
    bulks_sent: u64,
    foreign_dropped: u64,
    send_errors: u64,
    /// A datagram is waiting (the budget was hit): the loop turns again at once.
    more: bool,
    /// See [`ConntrackdStatus::link_switches`].
    link_switches: u64,
    /// Entries of our own that conntrackd's flows replaced (deleted from the kernel
    /// first), for the core to drop from its table.
    replaced: Vec<Flow>,
}

impl Endpoint {
    /// Bind the socket (in `netns` if given) and start the session; with
    /// `startup_resync`, the first message asks conntrackd for its table.
    pub(super) fn open(
        c: &ConntrackdPeer,
        netns: Option<&Netns>,
        filter: ctsync_core::Filter,
        mode: Mode,
        now: Instant,
    ) -> Result<Endpoint> {
        let mut links = Vec::new();
        for l in c.links() {
            let transport = l.transport().ok_or_else(|| {
                anyhow::anyhow!("[conntrackd] needs local and peer (UDP) or group (multicast)")
            })?;
            links.push((Wire::open(transport, &l.interface, netns)?, transport));
        }
        // conntrackd starts its numbers at the Unix time; so do we (a restart does not
        // reuse recent numbers).
        let first = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        let cfg = SessionConfig {
            ack_window: c.ack_window,
            ..SessionConfig::default()
        };
        let mut session = Session::new(cfg, first, now);
        if c.startup_resync {
            session.request_resync();
        }
        Ok(Endpoint {
            links,
            current: 0,
            heard_from: None,
            session,
            flows: HashMap::new(),
            expectations: HashMap::new(),
            filter,
            mode,
            buf: Vec::with_capacity(2048),
            rx: vec![0; 65536],
            written: 0,
            restored: 0,
            expired: Vec::new(),
            restored_keys: HashSet::new(),
            restore_window: now,
            deleted: 0,
            bulks_sent: 0,
            foreign_dropped: 0,
            send_errors: 0,
            more: false,
            link_switches: 0,
            replaced: Vec::new(),
        })
    }

    /// The filter changed (SIGHUP).
    pub(super) fn set_filter(&mut self, filter: ctsync_core::Filter) {
        self.filter = filter;
    }

    /// Wait until a datagram may be read on any link (or the last turn left some).
    pub(super) async fn readable(&self) -> std::io::Result<()> {
        if self.more {
            return Ok(());
        }
        std::future::poll_fn(|cx| {
            for (wire, _) in &self.links {
                if let std::task::Poll::Ready(r) = wire.rx.poll_recv_ready(cx) {
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// The link ours go out on.
    fn wire(&self) -> &Wire {
        &self.links[self.current.min(self.links.len() - 1)].0
    }

    /// Its transport.
    fn transport(&self) -> ConntrackdTransport {
        self.links[self.current.min(self.links.len() - 1)].1
    }

    /// Read what arrived (a budget's worth) and act on it: flows to the kernel or the
    /// copy, our table to conntrackd when it asks.
    pub(super) fn receive(&mut self, now: Instant, node: &mut Node, kernel: &mut Kernel) {
        self.more = false;
        let mut n = 0;
        // The link ours go out on first: what the others hold is newer news of where
        // conntrackd now sends.
        let (count, start) = (self.links.len(), self.current);
        for i in (0..count).map(|k| (start + k) % count) {
            loop {
                if n == RECEIVE_BUDGET {
                    self.more = true;
                    break;
                }
                let Some((wire, _)) = self.links.get(i) else {
                    break;
                };
                match wire.rx.try_recv_from(&mut self.rx) {
                    Ok((len, from)) => {
                        n += 1;
                        // conntrackd's IPv4 sender is not bound to its port, and its
                        // multicast sender to none: only the address is checked.
                        let from = from.ip().to_canonical();
                        if wire.accept.is_some_and(|a| a != from) {
                            self.foreign_dropped += 1;
                            continue;
                        }
                        self.heard_from = Some(from);
                        self.heard_on(i);
                        let Some(d) = self.rx.get(..len) else {
                            continue;
                        };
                        self.session.handle_datagram(now, d);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log(
                            "warn",
                            format!("[conntrackd] receiving on link {}: {e}", i + 1),
                        );
                        break;
                    }
                }
            }
        }
        self.take_received(now, node, kernel);
        self.restore_expired(now, node, kernel);
    }

    /// conntrackd was heard on link `i`: ours go there from now on, as conntrackd's go
    /// where it last heard us (it sends on one link at a time).
    fn heard_on(&mut self, i: usize) {
        if i == self.current {
            return;
        }
        self.current = i;
        self.link_switches += 1;
        log(
            "info",
            format!(
                "[conntrackd] {} heard on link {}: sending there",
                self.peer_name(),
                i + 1
            ),
        );
    }

    /// A send on the current link failed: if the link itself is gone on our side (its
    /// interface down: no route, no address), ours go out on the next link, as
    /// conntrackd moves when its own link goes down; conntrackd then hears us there and
    /// moves too.
    fn link_unusable(&mut self, e: &std::io::Error) {
        let gone = matches!(
            e.raw_os_error(),
            Some(libc::ENETUNREACH | libc::ENETDOWN | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL)
        );
        if !gone || self.links.len() < 2 {
            return;
        }
        let from = self.current;
        self.current = (self.current + 1) % self.links.len();
        self.link_switches += 1;
        log(
            "warn",
            format!(
                "[conntrackd] link {} unusable ({e}): sending on link {}",
                from + 1,
                self.current + 1
            ),
        );
    }

    /// Write back conntrackd's flows that our kernel destroyed while we hold them (see
    /// [`Endpoint::local_events`]), with the timeout each came with: conntrackd has not
    /// deleted them, so they live on its side. Not on a primary (the core's read of the
    /// table made them ours), not in commit mode (never written before takeover), not
    /// while conntrackd is silent; see the module's notes for the other limits. Written
    /// as its other flows are: one the kernel has no room for waits for room.
    fn restore_expired(&mut self, now: Instant, node: &Node, kernel: &mut Kernel) {
        if self.expired.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.expired);
        let heard = self
            .session
            .last_heard()
            .is_some_and(|t| now.saturating_duration_since(t) < UP_WITHIN);
        if node.role() == Role::Primary || self.mode != Mode::HotStandby || !heard {
            return;
        }
        if now.saturating_duration_since(self.restore_window) >= RESTORE_WINDOW {
            self.restore_window = now;
            self.restored_keys = HashSet::new();
        }
        let mut flows = Vec::new();
        for k in keys {
            if let Some((f, _)) = self.flows.get(&k)
                && f.timeout.is_none_or(|t| t >= RESTORE_MIN_SECS)
                && self.restored_keys.insert(k)
            {
                flows.push(f.clone());
            }
        }
        if flows.is_empty() {
            return;
        }
        self.restored += flows.len() as u64;
        kernel.foreign.extend(flows.iter().map(Flow::key));
        kernel.write_flows(&mut flows, &mut Vec::new());
    }

    fn take_received(&mut self, now: Instant, node: &mut Node, kernel: &mut Kernel) {
        // Only a node that does not carry the traffic lets conntrackd's table into its
        // kernel, and only in hot standby.
        let write = node.role() != Role::Primary && self.mode == Mode::HotStandby;
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        // Keys whose delete is queued in this batch: an upsert of one waits for it (a
        // batch writes its upserts before its deletes).
        let mut deleted = HashSet::new();
        // Expectations after the flows: the kernel takes one only with its master.
        let mut exps: Vec<(Expectation, bool)> = Vec::new();
        let mut resync = false;
        while let Some(r) = self.session.poll_received() {
            match r {
                Received::Upsert(mut f) => {
                    f.timeout.get_or_insert(DEFAULT_TIMEOUT);
                    let key = f.key();
                    if write {
                        // The same tuple closed and opened again with another NAT: an
                        // update cannot change an entry's reply tuple, so the old entry
                        // goes first, conntrackd's or one of our own (this node served
                        // the tuple before, and its entry lingers).
                        // (Once a batch: the core forgets it after the batch.)
                        let local = if self.replaced.iter().any(|r| r.key() == key) {
                            None
                        } else {
                            Self::replaced_local(node, &f)
                        };
                        let theirs = self
                            .flows
                            .get(&key)
                            .is_some_and(|(old, _)| old.reply != f.reply);
                        if theirs || local.is_some() {
                            self.replaced.extend(local);
                            deletes.push(Flow::from_key(&key));
                            deleted.insert(key);
                        }
                        if deleted.contains(&key) {
                            self.write_flows(kernel, &mut upserts, &mut deletes);
                            deleted.clear();
                        }
                        upserts.push(f.clone());
                    }
                    self.flows.insert(key, (f, now));
                }
                Received::Delete(f) => {
                    let key = f.key();
                    if self.flows.remove(&key).is_some() && write {
                        deletes.push(Flow::from_key(&key));
                        deleted.insert(key);
                    }
                }
                Received::ExpUpsert(mut e) => {
                    e.timeout.get_or_insert(DEFAULT_TIMEOUT);
                    if write {
                        exps.push(((*e).clone(), true));
                    }
                    self.expectations.insert(e.tuple, (*e, now));
                }
                Received::ExpDelete(e) => {
                    if self.expectations.remove(&e.tuple).is_some() && write {
                        exps.push((*e, false));
                    }
                }
                Received::Resync => resync = true,
            }
        }
        self.write_flows(kernel, &mut upserts, &mut deletes);
        self.forget_replaced(now, node);
        for (e, create) in &exps {
            kernel.write_expectation(e, *create);
        }
        if resync {
            self.bulk(node, kernel, "asked for our table");
        }
    }

    /// Writes conntrackd's flows to the kernel (upserts first, then deletes), counted;
    /// the kernel's events for them are known as foreign.
    fn write_flows(
        &mut self,
        kernel: &mut Kernel,
        upserts: &mut Vec<Flow>,
        deletes: &mut Vec<Flow>,
    ) {
        if upserts.is_empty() && deletes.is_empty() {
            return;
        }
        self.written += upserts.len() as u64;
        self.deleted += deletes.len() as u64;
        kernel.foreign.extend(upserts.iter().map(Flow::key));
        for d in deletes.iter() {
            kernel.foreign.remove(&d.key());
        }
        kernel.write_flows(upserts, deletes);
    }

    /// The entry of our own (the core's table) that our kernel holds on `f`'s tuple with
    /// another reply tuple, if any: `f` replaces it, and an update would keep its NAT.
    fn replaced_local(node: &Node, f: &Flow) -> Option<Flow> {
        let t = node.internal();
        t.other_reply(&t.keyed(f.key()), &f.reply)
    }

    /// Our entries that conntrackd's flows replaced are gone from the kernel: the core
    /// hears it (their events were our own writes') and drops them from its table, and
    /// tells its peers as of any entry of ours that ended.
    fn forget_replaced(&mut self, now: Instant, node: &mut Node) {
        for f in std::mem::take(&mut self.replaced) {
            node.handle_kernel_event(now, EventKind::Destroy, &f, false);
        }
    }

    /// Our whole table to conntrackd, and the kernel's expectations whose master is ours:
    /// on its RESYNC, and when we become primary (`why` says which, in the log).
    pub(super) fn bulk(&mut self, node: &Node, kernel: &mut Kernel, why: &str) {
        self.bulks_sent += 1;
        let mut n = 0usize;
        for f in node.internal().flows() {
            if self.filter.accepts(&f) && self.session.send_flow(FlowMessage::Update, &f).is_ok() {
                n += 1;
            }
        }
        let mut x = 0usize;
        for e in kernel.expectations() {
            if !self.expectations.contains_key(&e.tuple)
                && Self::master_replicated(node, &e)
                && self.session.send_expectation(FlowMessage::New, &e).is_ok()
            {
                x += 1;
            }
        }
        log(
            "info",
            format!(
                "[conntrackd] {} {why}: sending {n} flows and {x} expectations",
                self.peer_name()
            ),
        );
    }

    /// Whether an expectation's master flow is one we replicate: in the core's own
    /// table and counted (past the filter and the sync delay), the test the core applies
    /// to its own peers.
    fn master_replicated(node: &Node, e: &Expectation) -> bool {
        let t = node.internal();
        t.is_counted(&t.keyed(FlowKey {
            orig: e.master,
            zone: e.zone.unwrap_or(0),
        }))
    }

    /// A kernel expectation event: ours (not caused by our writes, its master one we
    /// replicate) go to conntrackd, as its `ExpectationSync` sends them.
    pub(super) fn local_expectation(
        &mut self,
        node: &Node,
        kind: EventKind,
        e: &Expectation,
        ours: bool,
    ) {
        if ours || self.expectations.contains_key(&e.tuple) || !Self::master_replicated(node, e) {
            return;
        }
        let what = match kind {
            EventKind::New => FlowMessage::New,
            EventKind::Update => FlowMessage::Update,
            EventKind::Destroy => FlowMessage::Delete,
        };
        let _ = self.session.send_expectation(what, e);
    }

    /// Ask conntrackd for its whole table (`ctsync request-resync`, as `conntrackd -n`).
    pub(super) fn request_resync(&mut self) {
        self.session.request_resync();
    }

    /// Kernel events the core took: ours (not caused by our writes, and passing the
    /// filter) go to conntrackd. On a backup, the flows we hold of conntrackd's are
    /// conntrackd's, not news for it: one that our kernel destroyed (its timer ran out
    /// here, no packet passes a backup) is written back on the next turn in hot
    /// standby.
    pub(super) fn local_events(&mut self, role: Role, events: &[FlowEvent]) {
        for e in events {
            if e.ours {
                continue;
            }
            if role != Role::Primary && self.flows.contains_key(&e.flow.key()) {
                if e.kind == EventKind::Destroy && self.mode == Mode::HotStandby {
                    self.expired.push(e.flow.key());
                }
                continue;
            }
            if !self.filter.accepts(&e.flow) {
                continue;
            }
            let what = match e.kind {
                EventKind::New => FlowMessage::New,
                EventKind::Update => FlowMessage::Update,
                EventKind::Destroy => FlowMessage::Delete,
            };
            let _ = self.session.send_flow(what, &e.flow);
        }
    }

    /// This node becomes primary: write conntrackd's table to the kernel now (the
    /// core's read of the table that follows makes it ours; the copy is dropped), each with the timeout it
    /// came with less its age (at least 60 s, as `conntrackd -c` does). In commit mode
    /// every flow; in hot standby only those the kernel no longer holds: conntrackd
    /// sends a flow when its state changes, not when a packet refreshes its timer, so a
    /// quiet but live flow may have expired here.
    pub(super) fn take_over(&mut self, now: Instant, node: &mut Node, kernel: &mut Kernel) {
        kernel.foreign.clear();
        self.take_over_flows(now, node, kernel);
        self.take_over_expectations(now, kernel);
    }

    /// conntrackd's expectations to the kernel, after their masters (as `conntrackd -c`
    /// commits them: the time left less their age, 60 s if that is gone). In hot
    /// standby most are there already: EEXIST is no failure.
    fn take_over_expectations(&mut self, now: Instant, kernel: &mut Kernel) {
        if self.expectations.is_empty() {
            return;
        }
        let n = self.expectations.len();
        for (_, (mut e, at)) in self.expectations.drain() {
            let age =
                u32::try_from(now.saturating_duration_since(at).as_secs()).unwrap_or(u32::MAX);
            e.timeout = Some(
                match e.timeout.unwrap_or(DEFAULT_TIMEOUT).checked_sub(age) {
                    Some(t) if t > 0 => t,
                    _ => DEFAULT_TIMEOUT,
                },
            );
            kernel.write_expectation(&e, true);
        }
        log(
            "info",
            format!(
                "[conntrackd] took over {n} expectations of {}",
                self.peer_name()
            ),
        );
    }

    /// conntrackd's flows to the kernel (see [`Endpoint::take_over`]).
    fn take_over_flows(&mut self, now: Instant, node: &mut Node, kernel: &mut Kernel) {
        if self.flows.is_empty() {
            return;
        }
        let mut flows: Vec<Flow> = self
            .flows
            .values()
            .map(|(f, at)| {
                let mut f = f.clone();
                let age =
                    u32::try_from(now.saturating_duration_since(*at).as_secs()).unwrap_or(u32::MAX);
                f.timeout = Some(
                    f.timeout
                        .unwrap_or(DEFAULT_TIMEOUT)
                        .saturating_sub(age)
                        .max(DEFAULT_TIMEOUT),
                );
                f
            })
            .collect();
        // Our own entries on their tuples with another reply go first: an update would
        // keep their NAT, and a creation find them there.
        self.replaced = flows
            .iter()
            .filter_map(|f| Self::replaced_local(node, f))
            .collect();
        if !self.replaced.is_empty() {
            let mut deletes: Vec<Flow> = self
                .replaced
                .iter()
                .map(|f| Flow::from_key(&f.key()))
                .collect();
            kernel.write_flows(&mut Vec::new(), &mut deletes);
            log(
                "info",
                format!(
                    "[conntrackd] {} flows of {} replace entries of ours with another NAT: those deleted first",
                    self.replaced.len(),
                    self.peer_name()
                ),
            );
            self.forget_replaced(now, node);
        }
        let n = if self.mode == Mode::Commit {
            let n = flows.len();
            kernel.write_flows(&mut flows, &mut Vec::new());
            n
        } else {
            kernel.create_missing(&mut flows)
        };
        self.written += n as u64;
        log(
            "info",
            format!(
                "[conntrackd] took over {} flows of {}: {n} written to the kernel",
                self.flows.len(),
                self.peer_name()
            ),
        );
        // They are ours now (as conntrackd's primary script flushes its caches after
        // the commit): what conntrackd sends from here on is its own table again.
        self.flows.clear();
    }

    /// Time passed.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    /// When [`Endpoint::handle_timeout`] is next due (at once while datagrams wait).
    pub(super) fn poll_timeout(&self, now: Instant) -> Instant {
        let (waiting, _) = self.session.backlog();
        if waiting > 0 || self.more || !self.expired.is_empty() {
            return now;
        }
        self.session.poll_timeout()
    }

    /// Send what is waiting (a budget's worth). True if anything was sent.
    pub(super) fn transmit(&mut self, now: Instant) -> bool {
        let mut sent = false;
        for _ in 0..SEND_BUDGET {
            if !self.session.poll_transmit(now, &mut self.buf) {
                break;
            }
            sent = true;
            let wire = self.wire();
            if let Err(e) = wire.tx.send_to(&self.buf, wire.to) {
                let to = wire.to;
                self.send_errors += 1;
                self.link_unusable(&e);
                if self.send_errors.is_power_of_two() {
                    log(
                        "warn",
                        format!(
                            "[conntrackd] sending to {to}: {e} ({} times)",
                            self.send_errors
                        ),
                    );
                }
            }
        }
        sent
    }

    /// How the log names conntrackd: its address, or the group and the sender last
    /// heard.
    fn peer_name(&self) -> String {
        match (self.transport(), self.heard_from) {
            (ConntrackdTransport::Udp { peer, .. }, _) => peer.to_string(),
            (ConntrackdTransport::Multicast { group, .. }, Some(h)) => format!("{h} on {group}"),
            (ConntrackdTransport::Multicast { group, .. }, None) => group.to_string(),
        }
    }

    /// The status.
    pub(super) fn status(&self, now: Instant) -> ConntrackdStatus {
        let seen = self
            .session
            .last_heard()
            .map(|t| now.saturating_duration_since(t));
        ConntrackdStatus {
            dialect: "conntrackd",
            unauthenticated: true,
            transport: match self.transport() {
                ConntrackdTransport::Udp { .. } => "udp",
                ConntrackdTransport::Multicast { .. } => "multicast",
            },
            local: match self.transport() {
                ConntrackdTransport::Udp { local, .. } => Some(local),
                ConntrackdTransport::Multicast { .. } => None,
            },
            peer: self.wire().to,
            accept: self.wire().accept,
            link: self.current + 1,
            links: self.links.len(),
            link_switches: self.link_switches,
            heard_from: self.heard_from,
            up: seen.is_some_and(|d| d < UP_WITHIN),
            last_seen_ms: seen.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            hello_done: self.session.hello_done(),
            flows: self.flows.len(),
            expectations: self.expectations.len(),
            backlog: self.session.backlog(),
            written: self.written,
            restored: self.restored,
            deleted: self.deleted,
            bulks_sent: self.bulks_sent,
            foreign_dropped: self.foreign_dropped,
            send_errors: self.send_errors,
            session: self.session.stats,
        }
    }
}
