//! `ctsync run`: the I/O shell around the sans-IO core. One thread, one event loop:
//! kernel events, sync datagrams, the control socket, timers and signals; every output
//! of the core is carried out right after the input that caused it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ctnetlink::{Conntrack, DumpItem, Errno, Event, EventSocket, Flow, FlowOp, Groups, Netns};
use ctsync_core::{FlowEvent, KernelOp, Mode, Node, Notify, Role};
use ctsync_wire::{Cipher, ClusterSecret, NodeId};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener};

use crate::config::{Config, ModeSetting, RoleSetting, node_id, read_key};

/// Events drained per loop turn before the other sources get a look (an event storm
/// must not starve acknowledgements and timers).
const EVENT_BUDGET: usize = 4096;
/// Datagrams read per loop turn. Small, so that acknowledgements go out between turns
/// while a peer streams (with 1,024 a bulk transfer's sender sat on a full window).
const DATAGRAM_BUDGET: usize = 64;
/// Flows decoded and written per kernel batch during a commit.
const COMMIT_CHUNK: usize = 16384;

/// Receive buffer asked for on the sync socket: a 200,000-flow bulk transfer is about
/// 13 MB, and the kernel's default (about 208 KiB) overflowed while the daemon was busy
/// writing to its kernel (measured: thousands of datagrams dropped, two thirds of the
/// messages sent again). conntrackd's examples use 24 MiB too.
const SYNC_RCVBUF: usize = 32 << 20;
/// Send buffer asked for on the sync socket.
const SYNC_SNDBUF: usize = 8 << 20;

/// Raise the sync socket's buffers (the FORCE options need CAP_NET_ADMIN, which the
/// daemon has; without it the sysctl limits apply). The receive size granted, in bytes
/// (0 if it could not be set: the daemon runs on, and its start-up line says 0).
fn size_sync_buffers(s: &StdUdpSocket) -> usize {
    let _ = ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Send, SYNC_SNDBUF);
    ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Receive, SYNC_RCVBUF).unwrap_or(0)
}

/// Hand the flow events gathered so far to the core, as one batch, and empty it.
fn hand_over(node: &mut Node, now: Instant, batch: &mut Vec<FlowEvent>) {
    node.handle_kernel_events(now, batch);
    batch.clear();
}

fn log(level: &str, msg: impl std::fmt::Display) {
    eprintln!("ctsync[{level}]: {msg}");
}

/// Run the daemon until SIGTERM or SIGINT. `path` is the configuration file, re-read on
/// SIGHUP.
pub fn run(cfg: Config, path: &std::path::Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    rt.block_on(run_async(cfg, path))
}

/// The cluster key to send with and the further keys accepted (a rotation's overlap).
fn cluster_keys(cfg: &Config) -> Result<(ClusterSecret, Vec<ClusterSecret>)> {
    let cipher = match cfg.sync.cipher.as_deref() {
        Some("aes-256-gcm") => Cipher::Aes256Gcm,
        _ => Cipher::ChaCha20Poly1305,
    };
    let load = |path: &std::path::Path| -> Result<ClusterSecret> {
        let key = read_key(path)?;
        ClusterSecret::new(&key, cipher)
            .map_err(|e| anyhow::anyhow!("cluster key {}: {e}", path.display()))
    };
    let send = load(&cfg.sync.key_file)?;
    let accept = cfg
        .sync
        .accept_key_files
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>>>()?;
    Ok((send, accept))
}

/// Tell systemd (when it started us with `Type=notify`; a no-op otherwise).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

struct Shell {
    node: Node,
    ct: Conntrack,
    udp: UdpSocket,
    peers: BTreeMap<NodeId, SocketAddr>,
    buf: Vec<u8>,
    name: String,
    kernel_failures: BTreeMap<String, u64>,
    track_file: Option<std::path::PathBuf>,
    window_tracking: bool,
    timing: Timing,
    events_ctl: std::os::fd::OwnedFd,
    rx: Vec<u8>,
    /// Replicated flows written again because the kernel had lost them.
    recreated: u64,
    /// Control clients refused for their credentials.
    control_refused: u64,
}

/// Durations the metrics report.
#[derive(Debug, Default)]
struct Timing {
    last_takeover: Option<Duration>,
    last_dump: Option<Duration>,
    dumps: u64,
}

async fn run_async(mut cfg: Config, path: &std::path::Path) -> Result<()> {
    cfg.check_environment()?;
    let netns = match &cfg.netns {
        Some(n) => Some(Netns::named(n).with_context(|| format!("network namespace {n:?}"))?),
        None => None,
    };
    let (secret, accept) = cluster_keys(&cfg)?;

    // Subscribe before reading the table: with nf_conntrack_events=2 (the default) the
    // kernel gives no events at all for entries created while nobody listens. Setting 1
    // attaches event support to every new entry; older ones are caught by the periodic
    // re-read of the table.
    let set_events = || std::fs::write("/proc/sys/net/netfilter/nf_conntrack_events", "1");
    let r = match &netns {
        Some(ns) => ns.run(set_events),
        None => set_events(),
    };
    if let Err(e) = r {
        log(
            "warn",
            format!("cannot set net.netfilter.nf_conntrack_events=1: {e}"),
        );
    }
    // Expectations too: a helper's expected connection (FTP data, SIP media) is
    // replicated with its master flow.
    let groups = Groups {
        expectations: true,
        ..Groups::CONNTRACK
    };
    let mut events = match &netns {
        Some(ns) => EventSocket::open_in(ns, groups),
        None => EventSocket::open(groups),
    }
    .context("subscribing to conntrack events")?;
    let granted = events.set_recv_buffer(64 << 20)?;
    events.set_nonblocking(true)?;
    // A second descriptor of the same socket, to leave and rejoin event groups from the
    // shell while the socket itself is registered with the event loop.
    let events_ctl = {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: dup of an open descriptor; the new one is owned here.
        let fd = unsafe { libc::fcntl(events.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("duplicating the event socket");
        }
        // SAFETY: fd was just returned by fcntl and nothing else owns it.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
    };
    // SAFETY: the AsyncFd owns the socket, so the descriptor stays open while registered.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|_| anyhow::anyhow!("registering the event socket with the event loop"))?;
    let ct = match &netns {
        Some(ns) => Conntrack::open_in(ns),
        None => Conntrack::open(),
    }
    .context("ctnetlink request socket")?;
    let own_port = ct.portid();
    // The echo of our own kernel writes (a hot-standby backup writes every replicated
    // flow) is dropped by the kernel before it reaches the event socket; the port-id
    // check on each event stays as the fallback.
    if let Err(e) = events.get_mut().ignore_port(own_port) {
        log(
            "warn",
            format!(
                "cannot filter our own writes' events in the kernel ({e}): they are read and dropped here"
            ),
        );
    }
    let local = cfg.sync.local;
    let bind = move || -> std::io::Result<StdUdpSocket> {
        let s = StdUdpSocket::bind(local)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let std_udp = match &netns {
        Some(ns) => ns.run(bind),
        None => bind(),
    }
    .with_context(|| format!("binding the sync socket to {local}"))?;
    let sync_buffer = size_sync_buffers(&std_udp);
    let udp = UdpSocket::from_std(std_udp)?;

    let sock_path = cfg.control.socket.clone();
    if let Some(dir) = sock_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&sock_path);
    let control = UnixListener::bind(&sock_path)
        .with_context(|| format!("binding the control socket {}", sock_path.display()))?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))?;

    let me = node_id(&local);
    let peers: BTreeMap<NodeId, SocketAddr> =
        cfg.sync.peers.iter().map(|a| (node_id(a), *a)).collect();
    let mut core = ctsync_core::Config::new(me, peers.keys().copied().collect());
    core.kernel_resync_interval = Duration::from_secs(cfg.sync.kernel_resync_secs);
    core.filter = cfg.core_filter();
    core.max_flows = cfg.sync.max_flows.max(1);
    core.sync_delay = Duration::from_secs_f64(cfg.filter.delay_secs);
    core.alive_interval = Duration::from_millis(cfg.timers.alive_ms);
    core.dead_interval = Duration::from_millis(cfg.timers.dead_ms);
    core.refresh_interval = Duration::from_secs(cfg.timers.refresh_secs);
    core.digest_interval = Duration::from_secs(cfg.timers.digest_secs);
    core.shorten_timeout = cfg.timers.shorten_timeout_secs;
    core.mode = match cfg.sync.mode {
        ModeSetting::HotStandby => Mode::HotStandby,
        ModeSetting::Commit => Mode::Commit,
    };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut rnd = [0u8; 16];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let epoch = (wall << 24) | u64::from(u32::from_be_bytes([0, rnd[0], rnd[1], rnd[2]]));
    let seed = u64::from_be_bytes([
        rnd[8], rnd[9], rnd[10], rnd[11], rnd[12], rnd[13], rnd[14], rnd[15],
    ]);
    let now = Instant::now();
    let mut node =
        Node::new(core, secret.clone(), epoch, seed, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !accept.is_empty() {
        node.set_secrets(secret, accept)
            .map_err(|e| anyhow::anyhow!("cluster keys: {e}"))?;
    }
    let mut sh = Shell {
        node,
        ct,
        udp,
        peers,
        buf: Vec::with_capacity(2048),
        name: cfg.node.clone(),
        kernel_failures: BTreeMap::new(),
        track_file: cfg.keepalived.as_ref().and_then(|k| k.track_file.clone()),
        window_tracking: cfg.sync.tcp_window_tracking,
        timing: Timing::default(),
        events_ctl,
        rx: vec![0u8; 65536],
        recreated: 0,
        control_refused: 0,
    };
    sh.write_track();
    let role = match cfg.role {
        RoleSetting::Primary => Role::Primary,
        RoleSetting::Backup => Role::Backup,
        RoleSetting::Fault => Role::Fault,
    };
    // The kernel table is read once at start: becoming primary reads it anyway (and
    // sends it to the peers), so only the other roles ask for it here. Reading 200,000
    // entries twice cost a starting primary a third of a second of CPU.
    if role != Role::Primary {
        sh.kernel_op(KernelOp::Dump);
    }
    sh.node.set_role(Instant::now(), role);
    sh.flush();
    log(
        "info",
        format!(
            "{} up: node id {me:#x}, sync {local}, {} peers, {:?}, event buffer {granted} bytes, sync buffer {sync_buffer} bytes, {} flows",
            cfg.node,
            sh.peers.len(),
            role,
            sh.node.internal().len()
        ),
    );

    // keepalived's notify_fifo: opened read-write, so that open does not wait for a
    // writer and keepalived restarting does not end the stream.
    let mut keepalived_follow = cfg.keepalived.clone();
    let mut fifo = match keepalived_follow
        .as_ref()
        .and_then(|k| k.notify_fifo.clone())
    {
        Some(path) => {
            crate::keepalived::ensure_fifo(&path)
                .with_context(|| format!("creating keepalived's notify_fifo {}", path.display()))?;
            let rx = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)
                .with_context(|| format!("opening keepalived's notify_fifo {}", path.display()))?;
            log(
                "info",
                format!("following keepalived through {}", path.display()),
            );
            Some(BufReader::new(rx).lines())
        }
        None => None,
    };
    let metrics = match &cfg.metrics {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("[metrics] listen {}: cannot bind", m.listen))?,
        ),
        None => None,
    };
    if let Some(m) = &cfg.metrics {
        log("info", format!("metrics at http://{}/metrics", m.listen));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&sh.status_line()),
    ]);
    let mut rx = vec![0u8; 65536];
    let mut flow_batch: Vec<FlowEvent> = Vec::new();
    loop {
        let deadline = sh
            .node
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            r = events.readable_mut() => {
                let mut guard = r?;
                let now = Instant::now();
                let mut n = 0;
                let node = &mut sh.node;
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
                            hand_over(node, now, &mut flow_batch);
                            log("warn", "kernel event socket overran: re-reading the table");
                            node.handle_kernel_overrun(now);
                        }
                        Event::Expectation {
                            kind,
                            portid,
                            expectation,
                        } => {
                            hand_over(node, now, &mut flow_batch);
                            node.handle_expectation_event(
                                now,
                                kind,
                                expectation,
                                portid == own_port,
                            );
                        }
                    });
                    hand_over(node, now, &mut flow_batch);
                    let got = got?;
                    match got {
                        Some(k) => n += k.max(1),
                        None => {
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
            r = sh.udp.readable() => {
                r?;
                let now = Instant::now();
                for _ in 0..DATAGRAM_BUDGET {
                    match sh.udp.try_recv_from(&mut rx) {
                        Ok((len, _from)) => {
                            let _ = sh.node.handle_datagram(now, &mut rx[..len]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            log("warn", format!("sync socket: {e}"));
                            break;
                        }
                    }
                }
            }
            line = async { fifo.as_mut()?.next_line().await.ok().flatten() }, if fifo.is_some() => {
                match line {
                    Some(line) => {
                        let role = crate::keepalived::parse_line(&line)
                            .and_then(|t| keepalived_follow.as_ref().and_then(|k| k.role_for(&t)));
                        if let Some(role) = role {
                            log("info", format!("keepalived: {} -> {role:?}", line.trim()));
                            sh.set_role(role);
                        }
                    }
                    None => {
                        log("warn", "keepalived's notify_fifo closed; roles now only by `ctsync role`");
                        fifo = None;
                    }
                }
            }
            c = control.accept() => {
                if let Ok((stream, _)) = c {
                    sh.control(stream).await;
                }
            }
            m = async { metrics.as_ref()?.accept().await.ok() }, if metrics.is_some() => {
                if let Some((stream, _)) = m {
                    let body = crate::metrics::render(&sh.status());
                    tokio::spawn(crate::metrics::serve(stream, move || body));
                }
            }
            _ = hup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                match Config::load(path) {
                    Ok(new) => {
                        sh.reload(&cfg, &new);
                        keepalived_follow = new.keepalived.clone();
                        cfg = new;
                    }
                    Err(e) => log("error", format!("reload refused, keeping the running configuration: {e:#}")),
                }
                notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&sh.status_line())]);
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                sh.node.handle_timeout(Instant::now());
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        sh.flush();
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&sock_path);
    log("info", format!("{} stopped", sh.name));
    Ok(())
}

/// Create `flows`, and update those that exist; the errors, by operation.
fn upsert_batch(ct: &mut Conntrack, flows: &[Flow]) -> Vec<(&'static str, Errno)> {
    let mut exists = Vec::new();
    let mut errs = Vec::new();
    let r = ct.batch(FlowOp::Create, flows, |i, e| {
        if e == Errno::EEXIST {
            exists.push(i);
        } else {
            errs.push(("create", e));
        }
    });
    if let Err(e) = r {
        log("warn", format!("kernel create batch: {e}"));
    }
    let again: Vec<Flow> = exists
        .into_iter()
        .filter_map(|i| flows.get(i).cloned())
        .collect();
    if let Err(e) = ct.batch(FlowOp::Update, &again, |_, e| errs.push(("update", e))) {
        log("warn", format!("kernel update batch: {e}"));
    }
    errs
}

/// A flow as `ctsync dump --json` prints it.
fn flow_json(f: &Flow, origin: Option<&str>) -> serde_json::Value {
    let tcp_state = match &f.protoinfo {
        Some(ctnetlink::ProtoInfo::Tcp(t)) => t.state,
        _ => None,
    };
    json!({
        "proto": f.orig.proto,
        "src": f.orig.src.to_string(),
        "dst": f.orig.dst.to_string(),
        "sport": f.orig.src_port(),
        "dport": f.orig.dst_port(),
        "reply_src": f.reply.src.to_string(),
        "reply_dst": f.reply.dst.to_string(),
        "reply_sport": f.reply.src_port(),
        "reply_dport": f.reply.dst_port(),
        "zone": f.zone,
        "mark": f.mark,
        "timeout": f.timeout,
        "tcp_state": tcp_state,
        "status": f.status.map(|s| s.bits()),
        "text": f.to_string(),
        "origin": origin,
    })
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

impl Shell {
    /// Carry out every output of the core.
    fn flush(&mut self) {
        for _ in 0..64 {
            let now = Instant::now();
            let mut moved = false;
            while let Some(to) = self.node.poll_transmit(now, &mut self.buf) {
                moved = true;
                if let Some(addr) = self.peers.get(&to)
                    && let Err(e) = self.udp.try_send_to(&self.buf, *addr)
                    && e.kind() != std::io::ErrorKind::WouldBlock
                {
                    log("warn", format!("sending to {addr}: {e}"));
                }
            }
            let mut ops = Vec::new();
            while let Some(op) = self.node.poll_kernel_op() {
                ops.push(op);
            }
            moved |= !ops.is_empty();
            self.kernel_ops(ops);
            while let Some(n) = self.node.poll_notify() {
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
            if !moved {
                return;
            }
        }
    }

    /// Between long kernel operations (a commit, a dump of a large table): take in the
    /// peers' datagrams and send what is due, so that no peer takes a busy node for dead.
    fn service_network(&mut self) {
        for _ in 0..DATAGRAM_BUDGET {
            match self.udp.try_recv_from(&mut self.rx) {
                Ok((len, _)) => {
                    let _ = self
                        .node
                        .handle_datagram(Instant::now(), &mut self.rx[..len]);
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        self.node.handle_timeout(now);
        while let Some(to) = self.node.poll_transmit(now, &mut self.buf) {
            if let Some(addr) = self.peers.get(&to) {
                let _ = self.udp.try_send_to(&self.buf, *addr);
            }
        }
    }

    /// Tell keepalived whether this node may become master (track_file: 0 yes, 1 no).
    fn write_track(&self) {
        if let Some(path) = &self.track_file
            && let Err(e) = crate::keepalived::write_track_file(path, self.node.is_ready())
        {
            log(
                "warn",
                format!("writing the track file {}: {e}", path.display()),
            );
        }
    }

    /// Count failed kernel writes and say so (once per batch): a full table
    /// (`nf_conntrack_max`) shows here; the other writes of the batch still land, and a
    /// hot-standby backup writes the missing ones again at its next refresh.
    fn failures(&mut self, errs: Vec<(&'static str, Errno)>) {
        if let Some((what, e)) = errs.first() {
            log(
                "warn",
                format!(
                    "the kernel refused {} writes (first: {what}: {e}); is the table full (net.netfilter.nf_conntrack_max)?",
                    errs.len()
                ),
            );
        }
        for (what, e) in errs {
            self.failed(what, e);
        }
    }

    fn failed(&mut self, what: &str, e: Errno) {
        *self
            .kernel_failures
            .entry(format!("{what}: {e}"))
            .or_default() += 1;
    }

    /// Kernel operations, batched: consecutive upserts become one batch of creates and
    /// one of updates for those that existed; deletes and refreshes likewise.
    fn kernel_ops(&mut self, ops: Vec<KernelOp>) {
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        let mut refreshes = Vec::new();
        for op in ops {
            match op {
                // Decoded here, as it is written: the core queues flows compact. A
                // state the core encoded always decodes.
                KernelOp::Upsert(f) => upserts.extend(f.flow()),
                KernelOp::Delete(k) => deletes.push(Flow::from_key(&k)),
                KernelOp::Refresh(f) => refreshes.extend(f.flow()),
                other => {
                    self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
                    self.kernel_op(other);
                }
            }
        }
        self.apply_batches(&mut upserts, &mut deletes, &mut refreshes);
    }

    /// Write replicated flows (create, or update those that exist), prepared for the
    /// kernel; failures counted and logged. The number written.
    fn upsert(&mut self, flows: &mut [Flow]) -> usize {
        if !self.window_tracking {
            flows.iter_mut().for_each(be_liberal);
        }
        let errs = upsert_batch(&mut self.ct, flows);
        let written = flows.len() - errs.len();
        self.failures(errs);
        written
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
            let mut errs = Vec::new();
            if let Err(e) = self.ct.batch(FlowOp::Delete, deletes, |_, e| {
                if e != Errno::ENOENT {
                    errs.push(("delete", e));
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
                errs.push(("refresh", e));
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

    fn kernel_op(&mut self, op: KernelOp) {
        match op {
            KernelOp::Dump => {
                let now = Instant::now();
                self.node.begin_kernel_dump(now);
                let node = &mut self.node;
                let r = self.ct.dump(None, |item| match item {
                    DumpItem::Flow(f) => node.handle_dumped(now, f),
                    DumpItem::Restart => node.begin_kernel_dump(now),
                });
                match r {
                    Ok(_) => {
                        self.node.end_kernel_dump(now);
                        let mut exps = Vec::new();
                        match self.ct.dump_expectations(None, |e| exps.push(e.clone())) {
                            Ok(_) => self.node.expectations_dumped(now, &exps),
                            Err(e) => log("warn", format!("reading the expectations: {e}")),
                        }
                        self.timing.last_dump = Some(now.elapsed());
                        self.timing.dumps += 1;
                        self.service_network();
                    }
                    Err(e) => log("warn", format!("reading the kernel table: {e}")),
                }
            }
            KernelOp::ShortenTimeouts(secs) => {
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
            KernelOp::Commit(tables) => {
                let start = Instant::now();
                // Creating many entries while subscribed to NEW events makes the kernel
                // build an event per entry for us to throw away; the dump that follows
                // every commit catches whatever else appeared meanwhile.
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
                // One socket: ctnetlink's create runs under the subsystem's mutex, so a
                // second thread only spins on it (measured: no gain, a quarter of the CPU
                // time in mutex_spin_on_owner). Decoded a chunk at a time from the
                // compact tables: memory stays flat however large the commit.
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
                    && let Err(e) =
                        ctnetlink::set_event_groups(self.events_ctl.as_fd(), Groups::CONNTRACK)
                {
                    log("error", format!("rejoining the NEW event group: {e}"));
                }
                log(
                    "info",
                    format!(
                        "committed {n} flows in {:.3} s",
                        start.elapsed().as_secs_f64()
                    ),
                );
                self.service_network();
            }
            KernelOp::ExpCreate(e) => {
                // EEXIST: already there (a bulk transfer repeats it).
                match self.ct.create_expectation(&e) {
                    Ok(()) | Err(ctnetlink::Error::Kernel(Errno::EEXIST)) => {}
                    Err(ctnetlink::Error::Kernel(e)) => self.failed("expectation create", e),
                    Err(e) => log("warn", format!("creating an expectation: {e}")),
                }
            }
            KernelOp::ExpDelete(e) => match self.ct.delete_expectation(&e) {
                Ok(()) | Err(ctnetlink::Error::Kernel(Errno::ENOENT)) => {}
                Err(ctnetlink::Error::Kernel(e)) => self.failed("expectation delete", e),
                Err(e) => log("warn", format!("deleting an expectation: {e}")),
            },
            other => self.kernel_ops(vec![other]),
        }
    }

    fn status(&self) -> serde_json::Value {
        let peers: Vec<_> = self
            .node
            .status()
            .peers
            .into_iter()
            .map(|p| {
                json!({
                    "id": format!("{:#x}", p.id),
                    "address": self.peers.get(&p.id).map(|a| a.to_string()),
                    "up": p.up,
                    "epoch": p.epoch,
                    "role": p.role.map_or("unknown", Role::name),
                    "ready": p.ready,
                    "synced": p.synced,
                    "last_seen_ms": p.last_heard.map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                    "received": p.received,
                    "duplicates": p.duplicates,
                    "lag": p.backlog,
                    "sent": p.sent,
                    "retransmitted": p.retransmitted,
                    "resets": p.resets,
                    "backlog": p.backlog,
                })
            })
            .collect();
        let drops: serde_json::Map<String, serde_json::Value> = self
            .node
            .drops()
            .iter()
            .map(|(k, v)| (format!("{k:?}").to_lowercase(), json!(v)))
            .collect();
        let s = self.node.stats();
        json!({
            "node": self.name,
            "role": format!("{:?}", self.node.role()).to_lowercase(),
            "ready": self.node.is_ready(),
            "caches": { "internal": self.node.internal().len(), "external": self.node.external_len() },
            "peers": peers,
            "dropped": drops,
            "kernel_failures": self.kernel_failures,
            "stats": {
                "datagrams_sent": s.datagrams_sent,
                "datagrams_received": s.datagrams_received,
                "flows_received": s.flows_received,
                "own_events": s.own_events,
                "kernel_overruns": s.kernel_overruns,
                "expectations_sent": s.expectations_sent,
                "expectations_received": s.expectations_received,
                "kernel_recreated": self.recreated,
                "cache_full": s.cache_full,
                "control_refused": self.control_refused,
            },
            "timing": {
                "last_takeover_seconds": self.timing.last_takeover.map(|d| d.as_secs_f64()),
                "last_kernel_dump_seconds": self.timing.last_dump.map(|d| d.as_secs_f64()),
                "kernel_dumps": self.timing.dumps,
            },
        })
    }

    /// One line for systemd's status and logs.
    fn status_line(&self) -> String {
        format!(
            "{:?}, {}, {} own flows, {} from peers",
            self.node.role(),
            if self.node.is_ready() {
                "ready"
            } else {
                "not ready"
            },
            self.node.internal().len(),
            self.node.external_len()
        )
    }

    /// Change role and carry it out; a move to primary is timed (kernel writes included).
    fn set_role(&mut self, role: Role) {
        let start = Instant::now();
        let was = self.node.role();
        self.node.set_role(start, role);
        self.flush();
        if role == Role::Primary && was != Role::Primary {
            let d = start.elapsed();
            self.timing.last_takeover = Some(d);
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
        if old.sync.key_file != new.sync.key_file
            || old.sync.accept_key_files != new.sync.accept_key_files
        {
            match cluster_keys(new).and_then(|(send, accept)| {
                let n = accept.len();
                self.node
                    .set_secrets(send, accept)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(n)
            }) {
                Ok(n) => log(
                    "info",
                    format!(
                        "cluster keys changed: sending with {}, accepting {n} more",
                        new.sync.key_file.display()
                    ),
                ),
                Err(e) => log("error", format!("cluster keys not changed: {e:#}")),
            }
        }
        self.window_tracking = new.sync.tcp_window_tracking;
        self.track_file = new.keepalived.as_ref().and_then(|k| k.track_file.clone());
        self.write_track();
        self.node.set_filter(
            new.core_filter(),
            Duration::from_secs_f64(new.filter.delay_secs),
        );
        self.flush();
        log(
            "info",
            "reloaded: [filter], keys, [keepalived] instance/group/track_file, tcp_window_tracking",
        );
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

    /// `dump internal|external`: a JSON line per flow, then `{"end":true,"flows":N}`.
    fn dump_lines(&self, internal: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if internal {
            for f in self.node.internal().flows() {
                lines.push(format!("{}\n", flow_json(&f, None)));
            }
        } else {
            for p in self.node.status().peers {
                let origin = self
                    .peers
                    .get(&p.id)
                    .map_or_else(|| format!("{:#x}", p.id), |a| a.to_string());
                for f in self.node.external(p.id).into_iter().flat_map(|t| t.flows()) {
                    lines.push(format!("{}\n", flow_json(&f, Some(&origin))));
                }
            }
        }
        let n = lines.len();
        lines.push(format!("{}\n", json!({"end": true, "flows": n})));
        lines
    }

    /// One control connection: a line in, a line of JSON out.
    async fn control(&mut self, stream: tokio::net::UnixStream) {
        // The socket is mode 0600; the peer's credentials are checked as well, so that a
        // socket directory with loose permissions or a passed descriptor does not open it.
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let uid = stream.peer_cred().map(|c| c.uid());
        if !matches!(uid, Ok(u) if u == 0 || u == me) {
            self.control_refused += 1;
            log(
                "warn",
                format!("control socket: refused a client with uid {uid:?}: root only"),
            );
            let (r, mut w) = stream.into_split();
            // Read the request first, so the client is not cut off mid-write.
            let mut line = String::new();
            let mut reader = BufReader::new(r.take(4096));
            let _ = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
            let _ = w
                .write_all(b"{\"error\":\"permission denied: the control socket is root-only\"}\n")
                .await;
            return;
        }
        let (r, mut w) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(r.take(4096));
        let read = tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
        let reply = match read {
            Ok(Ok(_)) => {
                use crate::control::{Cache, Request};
                match Request::parse(&line) {
                    Err(e) => json!({ "error": e }),
                    Ok(Request::Status) => self.status(),
                    Ok(Request::Role(role)) => {
                        self.set_role(role);
                        json!({"ok": true, "role": format!("{role:?}").to_lowercase()})
                    }
                    Ok(Request::Resync) => {
                        self.node.resync_internal();
                        self.flush();
                        json!({"ok": true})
                    }
                    Ok(Request::RequestResync) => {
                        self.node.request_resync(Instant::now());
                        self.flush();
                        json!({"ok": true})
                    }
                    Ok(Request::Bulk) => {
                        self.node.bulk(Instant::now());
                        self.flush();
                        json!({"ok": true})
                    }
                    Ok(Request::Commit) => {
                        let n = self.node.commit();
                        self.flush();
                        json!({"ok": true, "flows": n})
                    }
                    Ok(Request::Flush(which)) => {
                        if which != Cache::External {
                            self.node.flush_internal();
                            // Rebuilt from the kernel at once: the internal cache must
                            // not stay empty while the kernel holds flows.
                            self.node.resync_internal();
                        }
                        if which != Cache::Internal {
                            self.node.flush_external();
                            self.node.request_resync(Instant::now());
                        }
                        self.flush();
                        json!({"ok": true})
                    }
                    Ok(Request::Dump(which)) => {
                        let lines = self.dump_lines(which == Cache::Internal);
                        tokio::spawn(async move {
                            let write = async {
                                for l in lines {
                                    w.write_all(l.as_bytes()).await?;
                                }
                                w.flush().await
                            };
                            let _ = tokio::time::timeout(Duration::from_secs(60), write).await;
                        });
                        return;
                    }
                }
            }
            _ => json!({"error": "unreadable request"}),
        };
        let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
    }
}
