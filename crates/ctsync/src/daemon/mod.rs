//! `ctsync run`: the I/O shell around the sans-IO core. One thread, one event loop:
//! kernel events, sync datagrams, the control socket, timers and signals; every output
//! of the core is carried out right after the input that caused it.
//!
//! `setup` opens the sockets and builds the node; `shell` carries out the core's kernel
//! operations; `control` answers the control socket; [`Status`] is what `ctsync
//! status`, its JSON and the metrics show. `link` holds the sync sockets (one per sync
//! link); datagrams leave through one path, `SyncLink::transmit`.

mod conntrackd;
mod control;
mod epoch;
mod last_role;
mod link;
mod mux;
mod namespaces;
mod setup;
mod shell;
mod status;

pub(crate) use conntrackd::ConntrackdStatus;
#[cfg(test)]
pub(crate) use status::tests::sample as status_sample;
pub(crate) use status::{KernelFailure, Status};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctnetlink::Event;
use ctsync_core::{FlowEvent, Node, Notify, Role};
use ctsync_wire::ClusterSecret;

use crate::config::Config;
use link::SyncLink;

/// Events drained per loop turn before the other sources get a look (an event storm
/// must not starve acknowledgements and timers).
const EVENT_BUDGET: usize = 4096;
/// Rounds of carrying out the core's outputs after one input, at most (each round's
/// kernel writes and datagrams may cause more).
const FLUSH_ROUNDS: usize = 64;
/// How often the loop looks at whether the copy went stale (stale_after_secs is whole
/// seconds; building the status on every turn of a storm would be wasted work).
const STALE_CHECK: Duration = Duration::from_millis(100);

tokio::task_local! {
    /// The namespace a task serves (`[namespaces]`): its log lines name it.
    static NAMESPACE: String;
}

fn log(level: &str, msg: impl std::fmt::Display) {
    if NAMESPACE
        .try_with(|ns| eprintln!("ctsync[{level}] {ns}: {msg}"))
        .is_err()
    {
        eprintln!("ctsync[{level}]: {msg}");
    }
}

/// Tell systemd (when it started us with `Type=notify`; a no-op otherwise).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

/// Hand the flow events gathered so far to the core, as one batch (and to a conntrackd
/// peer), and empty it.
fn hand_over(
    node: &mut Node,
    ftfw: &mut Option<conntrackd::Endpoint>,
    now: Instant,
    batch: &mut Vec<FlowEvent>,
) {
    node.handle_kernel_events(now, batch);
    if let Some(e) = ftfw {
        e.local_events(node.role(), batch);
    }
    batch.clear();
}

/// The running daemon: the core node and what carries out its outputs.
struct Daemon {
    node: Node,
    link: SyncLink,
    kernel: shell::Kernel,
    /// This node's name (`node` in the file).
    name: String,
    /// keepalived's `track_file`, kept at this node's readiness.
    track_file: Option<PathBuf>,
    /// Where to say whether this node's copy is stale, and after how long without a
    /// primary peer it is.
    stale_file: Option<(PathBuf, Duration)>,
    /// What the track file and the stale file hold (written again only on a change).
    written: (Option<bool>, Option<bool>),
    /// When staleness was last looked at by the loop (see [`STALE_CHECK`]).
    stale_checked: Option<Instant>,
    /// How long the last move to primary took, kernel writes included.
    last_takeover: Option<Duration>,
    /// Control clients refused for their credentials.
    control_refused: u64,
    /// Turns that stopped at [`EVENT_BUDGET`] with kernel events still waiting.
    event_budget_hits: u64,
    /// Admits metrics connections, at most 8 at once, and counts the rest.
    metrics_gate: crate::metrics::Gate,
    /// The runtime directory, where the role keepalived or the operator last gave is
    /// kept for a restart (see `last_role`); none for a namespace's node, whose role
    /// its state file keeps.
    runtime: Option<PathBuf>,
    /// Whether the log last said that flows wait for room in the kernel.
    no_room_said: bool,
    /// Flows the kernel had no room for when this node last became primary: how many,
    /// and some of them.
    missed_at_takeover: (usize, Vec<String>),
    /// A peer that speaks conntrackd's FTFW dialect (`[conntrackd]`).
    conntrackd: Option<conntrackd::Endpoint>,
    /// A namespace's node: when the daemon's host link last heard each peer host.
    host_heard: Option<HostHeard>,
    /// The peer hosts whose word [`Daemon::hear_hosts`] last passed on.
    host_word: Vec<ctsync_wire::NodeId>,
}

/// When the daemon of namespaces' host link last heard each peer host that is up
/// (authenticated: docs/PROTOCOL.md §14.4), shared with every namespace's loop on the
/// same thread; and a generation bumped whenever a peer host leaves the map or comes
/// into it, which wakes every namespace's loop to tell its node
/// ([`ctsync_core::Node::peer_word_lost`]; [`ctsync_core::Node::peer_alive`], which
/// then challenges a link that went down at once).
#[derive(Debug, Clone)]
pub(super) struct HostHeard {
    pub(super) at:
        std::rc::Rc<std::cell::RefCell<std::collections::HashMap<ctsync_wire::NodeId, Instant>>>,
    pub(super) changed: std::rc::Rc<tokio::sync::watch::Sender<u64>>,
}

impl Default for HostHeard {
    fn default() -> HostHeard {
        HostHeard {
            at: std::rc::Rc::default(),
            changed: std::rc::Rc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT. `path` is the configuration file, re-read on
/// SIGHUP.
pub fn run(cfg: Config, path: &Path) -> Result<()> {
    give_back_large_blocks();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(run_async(cfg, path))
}

/// Make memory freed in large blocks go back to the system. glibc raises its mmap
/// threshold to the size of each mapped block freed (up to 32 MiB): after a cache table
/// grows once, tables of that size come from the heap, and when a flush or a resize frees
/// them the memory stays with the process (a backup's RSS then keeps the peak of its last
/// resync). Fixed at 1 MiB, every block larger than that (a cache table, a large queue) is
/// mapped on its own and unmapped when freed.
fn give_back_large_blocks() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets one of the allocator's tunables (under its own lock);
    // called before the runtime starts, when no other thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn run_async(mut cfg: Config, path: &Path) -> Result<()> {
    if cfg.namespaces.is_some() {
        return tokio::task::LocalSet::new()
            .run_until(namespaces::run(cfg))
            .await;
    }
    let (mut d, src) = setup::start(&cfg).await?;
    let calls = tokio::sync::mpsc::channel(control::MAX_CLIENTS);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&d.status_line()),
    ]);
    let control_path = src.control_path.clone();
    d.serve(src, Some(calls), Some((&mut cfg, path)), None)
        .await?;
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(p) = control_path {
        let _ = std::fs::remove_file(p);
    }
    log("info", format!("{} stopped", d.name));
    Ok(())
}

/// Deadlines further away than this are coalesced (see [`coalesce`]).
const COALESCE_BEYOND: Duration = Duration::from_millis(100);
/// The grid coalesced deadlines are put on.
const COALESCE_GRID: Duration = Duration::from_millis(50);

/// A namespace node's deadline, put off to the next point of a grid shared by every
/// namespace's loop when it is far enough away that 50 ms later does no harm (keepalives,
/// dead intervals, digests, refreshes; never an acknowledgement or a retransmission):
/// then hundreds of idle routers wake the thread together a few times a second, instead
/// of each on its own (measured: 50 idle routers woke it 240 times a second, and the
/// wake-ups, not the work, cost 3 % of a core).
fn coalesce(deadline: Instant, now: Instant) -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if deadline <= now + COALESCE_BEYOND {
        return deadline;
    }
    let base = *BASE.get_or_init(|| now);
    let grid = COALESCE_GRID.as_nanos();
    let since = deadline.saturating_duration_since(base).as_nanos();
    let slots = since.div_ceil(grid);
    let at = u64::try_from(slots * grid).unwrap_or(u64::MAX);
    base + Duration::from_nanos(at)
}

/// The control calls a loop answers: where clients' tasks send them, and where the loop
/// takes them.
type Calls = (
    tokio::sync::mpsc::Sender<control::Call>,
    tokio::sync::mpsc::Receiver<control::Call>,
);

impl Daemon {
    /// The event loop, until SIGTERM or SIGINT: kernel events, sync datagrams, control
    /// calls, keepalived's FIFO, metrics, timers; with `reload` (the running
    /// configuration and its file) also SIGHUP. A namespace's loop takes its roles and
    /// calls from its `mailbox` instead, and leaves the signals to the daemon of
    /// namespaces.
    async fn serve(
        &mut self,
        src: setup::Sources,
        calls: Option<Calls>,
        mut reload: Option<(&mut Config, &Path)>,
        mailbox: Option<mux::SharedMailbox>,
    ) -> Result<()> {
        let d = self;
        let setup::Sources {
            mut events,
            own_port,
            control,
            control_path: _,
            mut fifo,
            metrics,
        } = src;
        let mut keepalived_follow = reload.as_ref().and_then(|(c, _)| c.keepalived.clone());
        // A namespace's loop is stopped by the daemon of namespaces, which alone takes the
        // signals (and its deadlines are coalesced: see `coalesce`).
        let own_signals = mailbox.is_none();
        let (calls_tx, mut calls_rx) = calls.unzip();
        let mut term = if own_signals {
            Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            )?)
        } else {
            None
        };
        let mut hup = match reload {
            Some(_) => Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?),
            None => None,
        };
        let mut flow_batch: Vec<FlowEvent> = Vec::new();
        let clients = control
            .is_some()
            .then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(control::MAX_CLIENTS)));
        let mut hosts_changed = d.host_heard.as_ref().map(|h| h.changed.subscribe());
        loop {
            d.hear_hosts();
            let mut deadline = d
                .node
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            if let Some(e) = &d.conntrackd {
                deadline = deadline.min(e.poll_timeout(Instant::now()));
            }
            if !own_signals {
                deadline = coalesce(deadline, Instant::now());
            }
            tokio::select! {
                r = events.readable_mut() => {
                    let mut guard = r?;
                    let now = Instant::now();
                    let mut n = 0;
                    let mut drained = false;
                    let node = &mut d.node;
                    let ftfw = &mut d.conntrackd;
                    while n < EVENT_BUDGET {
                        // Flow events go to the core in batches (one read's worth), in order
                        // with the others: a batch is handed over before any other event.
                        let got = guard.get_inner_mut().recv(|e| match e {
                            Event::Flow { kind, portid, flow } => flow_batch.push(FlowEvent {
                                kind,
                                flow: flow.clone(),
                                ours: portid == own_port,
                            }),
                            Event::Overrun => {
                                hand_over(node, ftfw, now, &mut flow_batch);
                                log("warn", "kernel event socket overran: re-reading the table");
                                node.handle_kernel_overrun(now);
                            }
                            Event::Expectation {
                                kind,
                                portid,
                                expectation,
                            } => {
                                hand_over(node, ftfw, now, &mut flow_batch);
                                node.handle_expectation_event(
                                    now,
                                    kind,
                                    expectation,
                                    portid == own_port,
                                );
                                if let Some(e) = ftfw {
                                    e.local_expectation(node, kind, expectation, portid == own_port);
                                }
                            }
                        });
                        hand_over(node, ftfw, now, &mut flow_batch);
                        match got? {
                            Some(k) => n += k.max(1),
                            None => {
                                guard.clear_ready();
                                drained = true;
                                break;
                            }
                        }
                    }
                    if !drained {
                        // The rest waits for the next turn: the storm must not starve
                        // acknowledgements and timers.
                        d.event_budget_hits += 1;
                    }
                }
                r = d.link.readable() => {
                    r?;
                    d.link.receive(&mut d.node, Instant::now());
                }
                r = conntrackd::readable(&d.conntrackd), if d.conntrackd.is_some() => {
                    if r.is_some() && let Some(e) = &mut d.conntrackd {
                        e.receive(Instant::now(), &mut d.node, &mut d.kernel);
                    }
                }
                line = async { fifo.as_mut()?.next_line().await.ok().flatten() }, if fifo.is_some() => {
                    match line {
                        Some(line) => {
                            let role = crate::keepalived::parse_line(&line)
                                .and_then(|t| keepalived_follow.as_ref().and_then(|k| k.role_for(&t)));
                            if let Some(role) = role {
                                log("info", format!("keepalived: {} -> {role:?}", line.trim()));
                                d.set_role(role);
                            }
                        }
                        None => {
                            log("warn", "keepalived's notify_fifo closed; roles now only by `ctsync role`");
                            fifo = None;
                        }
                    }
                }
                c = async { control.as_ref()?.accept().await.ok() }, if control.is_some() => {
                    if let (Some((stream, _)), Some(clients), Some(tx)) = (c, &clients, &calls_tx) {
                        // Served off the loop; a client beyond the cap is closed at once.
                        if let Ok(permit) = clients.clone().try_acquire_owned() {
                            tokio::spawn(control::client(stream, tx.clone(), permit));
                        }
                    }
                }
                Some(call) = async { calls_rx.as_mut()?.recv().await }, if calls_rx.is_some() => d.call(call),
                m = async { metrics.as_ref()?.accept().await.ok() }, if metrics.is_some() => {
                    if let Some((stream, _)) = m {
                        d.serve_metrics(stream);
                    }
                }
                _ = async { hup.as_mut()?.recv().await }, if hup.is_some() => {
                    let Some((cfg, path)) = reload.as_mut() else { continue };
                    notify(&[sd_notify::NotifyState::Reloading]);
                    match Config::load(path) {
                        Ok(new) => {
                            d.reload(cfg, &new);
                            keepalived_follow = new.keepalived.clone();
                            **cfg = new;
                        }
                        Err(e) => log("error", format!("reload refused, keeping the running configuration: {e:#}")),
                    }
                    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&d.status_line())]);
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    let now = Instant::now();
                    d.hear_hosts();
                    d.node.handle_timeout(now);
                    if let Some(e) = &mut d.conntrackd {
                        e.handle_timeout(now);
                        e.receive(now, &mut d.node, &mut d.kernel);
                    }
                }
                // A peer host went down, or is heard again: the word stops holding its
                // namespaces up, or challenges their links that went down meanwhile
                // (taken at the top of the next turn, by `hear_hosts`).
                Some(()) = async { hosts_changed.as_mut()?.changed().await.ok() }, if hosts_changed.is_some() => {}
                taken = std::future::poll_fn(|cx| match &mailbox {
                    Some(m) => m.borrow_mut().poll_take(cx),
                    None => std::task::Poll::Pending,
                }), if mailbox.is_some() => match taken {
                    mux::Taken::Role(role) => {
                        log("info", format!("state file: {role}"));
                        d.set_role(role);
                    }
                    mux::Taken::Call(call) => d.call(call),
                },
                _ = tokio::signal::ctrl_c(), if own_signals => break,
                _ = async { term.as_mut()?.recv().await }, if own_signals => break,
            }
            d.flush();
            d.watch_room();
            if d.stale_file.is_some() && d.stale_checked.is_none_or(|t| t.elapsed() >= STALE_CHECK)
            {
                // Staleness moves with time alone: looked at by the loop (which wakes at least
                // every alive interval), but not on every turn of an event storm.
                d.stale_checked = Some(Instant::now());
                d.write_track();
            }
        }
        Ok(())
    }
}

impl Daemon {
    /// A namespace's node: the peers its daemon's host link heard count as heard (just
    /// before the node looks at its timers, so that a dead interval is never judged on
    /// old news).
    fn hear_hosts(&mut self) {
        let Some(h) = &self.host_heard else {
            return;
        };
        let heard = h.at.borrow();
        for id in &self.host_word {
            if !heard.contains_key(id) {
                self.node.peer_word_lost(*id);
            }
        }
        self.host_word.clear();
        for (&peer, &at) in heard.iter() {
            self.node.peer_alive(peer, at);
            self.host_word.push(peer);
        }
    }

    /// Carry out every output of the core: datagrams, kernel operations, notices.
    fn flush(&mut self) {
        for _ in 0..FLUSH_ROUNDS {
            let now = Instant::now();
            let mut moved = self.link.transmit(&mut self.node, now);
            let ops = Vec::from(self.node.take_kernel_ops());
            moved |= !ops.is_empty();
            self.kernel
                .carry_out_all(ops, &mut self.node, &mut self.link);
            while let Some(n) = self.node.poll_notify() {
                self.notice(n);
            }
            if let Some(e) = &mut self.conntrackd {
                moved |= e.transmit(now);
            }
            if !moved {
                return;
            }
        }
    }

    /// Act on a notice from the core.
    fn notice(&mut self, n: Notify) {
        match n {
            Notify::Ready(r) => {
                log("info", format!("ready to take over: {r}"));
                self.write_track();
                notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
            }
            Notify::CacheFull { origin } => log(
                "warn",
                format!(
                    "a cache is full ([sync] max_flows): new flows {} are refused and counted",
                    match origin {
                        Some(p) => format!("from peer {:#x}", p),
                        None => "of this node".to_string(),
                    }
                ),
            ),
            Notify::IncompatiblePeer { peer, min, max } => log(
                "error",
                format!(
                    "peer {peer:#x} speaks protocol versions {min}..={max} only, not ours ({}): upgrade one side",
                    ctsync_wire::VERSION
                ),
            ),
            other => log("info", format!("{other:?}")),
        }
    }

    /// Tell keepalived whether this node may become master (track_file: 0 yes, 1 no),
    /// and whether its copy is stale (stale_file: 1 while a primary peer has been silent
    /// for stale_after_secs). Each file is written when its value changes.
    fn write_track(&mut self) {
        let ready = self.ready();
        if let Some(path) = &self.track_file
            && self.written.0 != Some(ready)
        {
            match crate::keepalived::write_track_file(path, ready) {
                Ok(()) => self.written.0 = Some(ready),
                Err(e) => log(
                    "warn",
                    format!("writing the track file {}: {e}", path.display()),
                ),
            }
        }
        if let Some((path, after)) = &self.stale_file {
            let stale = self.status().stale;
            if self.written.1 != Some(stale) {
                match crate::keepalived::write_value(path, u8::from(stale)) {
                    Ok(()) => {
                        if stale {
                            log(
                                "warn",
                                format!(
                                    "no word from the primary for {} s: the copy is stale ({} says 1)",
                                    after.as_secs(),
                                    path.display()
                                ),
                            );
                        }
                        self.written.1 = Some(stale);
                    }
                    Err(e) => log(
                        "warn",
                        format!("writing the stale file {}: {e}", path.display()),
                    ),
                }
            }
        }
    }

    /// Whether this node could take over now without losing flows: the core's word, and
    /// for a backup also that its kernel had room for every replicated flow.
    fn ready(&self) -> bool {
        self.node.is_ready()
            && (self.node.role() == Role::Primary || self.kernel.no_room.is_empty())
    }

    /// Flows the kernel had no room for: tried again every second; the log, readiness
    /// and keepalived's track file follow whether any are waiting.
    fn watch_room(&mut self) {
        self.kernel.retry_no_room(Instant::now());
        let waiting = self.kernel.no_room.len();
        if (waiting > 0) == self.no_room_said {
            return;
        }
        self.no_room_said = waiting > 0;
        if waiting > 0 {
            log(
                "warn",
                format!(
                    "the kernel has no room for {waiting} replicated flows (net.netfilter.nf_conntrack_max reached): not ready; they are written again every second until room comes back"
                ),
            );
        } else {
            log(
                "info",
                "room in the kernel again: every replicated flow the kernel refused is written",
            );
        }
        self.write_track();
        notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
    }

    /// Keep the role keepalived or the operator gave for a restart of the daemon.
    fn remember_role(&self, role: Role) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        if let Err(e) = last_role::write(runtime, &self.name, role) {
            log(
                "warn",
                format!("{e:#}: a restart of ctsync will start in the configured role"),
            );
        }
    }

    /// Change role and carry it out; a move to primary is timed (kernel writes included).
    fn set_role(&mut self, role: Role) {
        let start = Instant::now();
        self.remember_role(role);
        let was = self.node.role();
        if role == Role::Primary
            && was != Role::Primary
            && let Some(e) = &mut self.conntrackd
        {
            // Before the core reads the kernel table: what is committed becomes ours.
            e.take_over(start, &mut self.node, &mut self.kernel);
        }
        self.node.set_role(start, role);
        self.flush();
        if role == Role::Primary && was != Role::Primary {
            if let Some(e) = &mut self.conntrackd {
                // conntrackd's own takeover sends its table to the backups (`-B` in its
                // primary-backup.sh); its backup asks for it as well (`-n`), but sends
                // that request once: if it is lost, this bulk fills the backup's copy.
                e.bulk(&self.node, &mut self.kernel, "has us as primary now");
            }
            let d = start.elapsed();
            self.last_takeover = Some(d);
            let missed = self.kernel.no_room.len();
            self.missed_at_takeover = (missed, self.kernel.no_room_sample(10));
            if missed > 0 {
                log(
                    "warn",
                    format!(
                        "took over without {missed} flows the kernel had no room for (net.netfilter.nf_conntrack_max); their sessions break unless room comes back (tried every second): {}{}",
                        self.missed_at_takeover.1.join("; "),
                        if missed > 10 { "; …" } else { "" }
                    ),
                );
            }
            log(
                "info",
                format!(
                    "primary in {:.3} s ({} own flows)",
                    d.as_secs_f64(),
                    self.node.internal().len()
                ),
            );
        }
        notify(&[sd_notify::NotifyState::Status(&self.status_line())]);
    }

    /// SIGHUP: apply what can change while running; say what needs a restart.
    fn reload(&mut self, old: &Config, new: &Config) {
        let mut restart = needs_restart(old, new);
        if old.sync.key_file != new.sync.key_file
            || old.sync.accept_key_files != new.sync.accept_key_files
        {
            match setup::cluster_keys(new) {
                Ok(keys) => self.set_keys(keys, &new.sync.key_file),
                Err(e) => log("error", format!("cluster keys not changed: {e:#}")),
            }
        }
        self.track_file = new.keepalived.as_ref().and_then(|k| k.track_file.clone());
        self.stale_file = setup::stale_file(new);
        self.written = (None, None);
        self.write_track();
        if let Some(e) = &mut self.conntrackd {
            e.set_filter(new.core_filter());
        }
        if old.conntrackd != new.conntrackd {
            restart.push("[conntrackd]");
        }
        self.apply_reload(new);
        log(
            "info",
            "reloaded: [filter], keys, [keepalived] instance/group/track_file, tcp_window_tracking",
        );
        say_restart(&restart);
    }

    /// New cluster keys (from `key_file`, said in the log).
    fn set_keys(&mut self, (send, accept): (ClusterSecret, Vec<ClusterSecret>), key_file: &Path) {
        let n = accept.len();
        match self.node.set_secrets(send, accept) {
            Ok(()) => log(
                "info",
                format!(
                    "cluster keys changed: sending with {}, accepting {n} more",
                    key_file.display()
                ),
            ),
            Err(e) => log("error", format!("cluster keys not changed: {e}")),
        }
    }

    /// What a reload changes in a loop of its own: the filter and its delay, and TCP
    /// window tracking.
    fn apply_reload(&mut self, new: &Config) {
        self.kernel.window_tracking = new.sync.tcp_window_tracking;
        self.node.set_filter(
            new.core_filter(),
            Duration::from_secs_f64(new.filter.delay_secs),
        );
        self.flush();
    }

    /// A namespace's share of its daemon's reload (the daemon of namespaces read the
    /// file): new keys, derived for this namespace, if they changed.
    pub(super) fn reload_namespace(
        &mut self,
        new: &Config,
        keys: Option<(ClusterSecret, Vec<ClusterSecret>)>,
    ) {
        if let Some(k) = keys {
            self.set_keys(k, &new.sync.key_file);
        }
        self.apply_reload(new);
    }
}

/// Log what changed in a reload but needs a restart, if anything.
pub(super) fn say_restart(restart: &[&str]) {
    if !restart.is_empty() {
        log(
            "warn",
            format!(
                "changed but needing a restart to take effect: {}",
                restart.join(", ")
            ),
        );
    }
}

/// What changed from `old` to `new` that a running daemon cannot apply: the sections
/// (or settings) that need a restart.
pub(super) fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut restart = Vec::new();
    if old.node != new.node {
        restart.push("node");
    }
    if old.netns != new.netns {
        restart.push("netns");
    }
    if old.sync.interface != new.sync.interface
        || old.sync.local != new.sync.local
        || old.sync.peers != new.sync.peers
        || old.sync.extra_links != new.sync.extra_links
        || old.sync.group != new.sync.group
        || old.sync.cipher != new.sync.cipher
        || old.sync.mode != new.sync.mode
        || old.sync.kernel_resync_secs != new.sync.kernel_resync_secs
    {
        restart.push("[sync]");
    }
    if old.control.socket != new.control.socket {
        restart.push("[control]");
    }
    if old.metrics.as_ref().map(|m| m.listen) != new.metrics.as_ref().map(|m| m.listen) {
        restart.push("[metrics]");
    }
    if old.timers != new.timers {
        restart.push("[timers]");
    }
    if old.keepalived.as_ref().and_then(|k| k.notify_fifo.clone())
        != new.keepalived.as_ref().and_then(|k| k.notify_fifo.clone())
    {
        restart.push("[keepalived] notify_fifo");
    }
    if old.namespaces != new.namespaces {
        restart.push("[namespaces]");
    }
    restart
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    #[test]
    fn far_deadlines_share_grid_points_and_near_ones_stay() {
        let now = Instant::now();
        let near = now + Duration::from_millis(20);
        assert_eq!(coalesce(near, now), near);
        let a = coalesce(now + Duration::from_millis(501), now);
        let b = coalesce(now + Duration::from_millis(502), now);
        assert_eq!(
            a, b,
            "two routers' keepalives a millisecond apart wake together"
        );
        for ms in [150, 499, 500, 3000, 30_000] {
            let d = now + Duration::from_millis(ms);
            let c = coalesce(d, now);
            assert!(c >= d && c < d + COALESCE_GRID, "{ms} ms");
        }
    }
}
