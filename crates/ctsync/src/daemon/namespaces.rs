//! `[namespaces]`: one daemon for a host full of routers (docs/NEUTRON.md).
//!
//! Every network namespace whose name matches `match` gets a node of its own, served by
//! a loop of its own on this thread ([`Daemon::serve`], the same loop as a single
//! daemon's): its kernel sockets are opened inside the namespace, its role comes from
//! its state file, and its sync links are [`MuxPort`]s on the sockets this daemon binds,
//! one a link (`[sync]` and each `[[sync.link]]`). Here, the daemon itself:
//!
//! * finds the namespaces, at start and as they come and go (inotify on `/run/netns`,
//!   and a whole look every [`FULL_RESCAN`], or at once when inotify's queue overflowed);
//! * reads each state file when it changes (inotify on its directory) and hands the
//!   role to the namespace's loop;
//! * reads the shared sockets and hands each datagram to the inbox the namespace its tag
//!   names has on that link (docs/PROTOCOL.md §14);
//! * answers the control socket: a request naming a namespace (`--netns`) goes to that
//!   namespace's loop, `status` gathers every namespace's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctnetlink::Netns;
use ctsync_core::Role;
use ctsync_wire::ClusterSecret;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::control::{Call, MAX_CLIENTS, Reply};
use super::link::{GroupSocket, Sock};
use super::mux::{Closing, MuxPort, SharedInbox, SharedMailbox};
use super::{NAMESPACE, log, setup};
use crate::config::{Config, Namespaces, parse_state};
use crate::control::Request;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// How often the daemon looks, without an event, at what it keeps in memory: loops that
/// ended, starts to try again, and the state files whose directory it could not watch
/// yet (a router's directory made after its namespace).
const RESCAN: Duration = Duration::from_secs(5);
/// How often it reads /run/netns and every state file all the same. inotify misses
/// nothing unless its queue overflows (then everything is read at once): this is the
/// last resort, and rare, since reading 500 routers' files every few seconds was a
/// cost that grew with the routers of an idle node.
const FULL_RESCAN: Duration = Duration::from_secs(60);
/// How soon a name in /run/netns without its namespace mounted yet is looked at again.
const UNMOUNTED_LOOK: Duration = Duration::from_millis(100);
/// How long a namespace whose start failed waits before it is tried again.
const RETRY: Duration = Duration::from_secs(10);
/// Datagrams read from each shared socket per loop turn.
const DATAGRAM_BUDGET: usize = 256;
/// How long `status` waits for each namespace's answer.
const STATUS_WAIT: Duration = Duration::from_secs(5);

/// Open a namespace's sockets (off this thread) and start its daemon; says why not.
#[allow(clippy::too_many_arguments)]
async fn start_router(
    cfg: Rc<Config>,
    name: String,
    ports: Vec<(Sock, String)>,
    group: Option<GroupSocket>,
    peers: Peers,
    keys: (ClusterSecret, Vec<ClusterSecret>),
    epoch: u64,
    role: Role,
    heard: super::HostHeard,
) -> Option<(Box<super::Daemon>, setup::Sources)> {
    let opening = name.clone();
    let started = match tokio::task::spawn_blocking(move || setup::open_namespace(&opening)).await {
        Ok(Ok(sockets)) => setup::start_namespace(
            &cfg, &name, sockets, ports, group, peers, keys, epoch, role, heard,
        ),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow::anyhow!("opening its sockets: {e}")),
    };
    match started {
        Ok((d, src)) => Some((Box::new(d), src)),
        Err(e) => {
            log(
                "error",
                format!("cannot start: {e:#} (tried again in {} s)", RETRY.as_secs()),
            );
            None
        }
    }
}

/// One namespace being replicated.
struct Router {
    id: String,
    /// Roles from its state file or FIFO, and control calls, for its loop.
    mailbox: SharedMailbox,
    /// The role last handed to its loop (or started in).
    role: Option<Role>,
    task: JoinHandle<()>,
    /// The reader of its keepalived's notify FIFO (`role = "keepalived-fifo"`).
    fifo: Option<JoinHandle<()>>,
}

/// Each peer host by its id, with its address on every sync link.
type Peers = BTreeMap<ctsync_wire::NodeId, Vec<std::net::SocketAddr>>;

/// The ports of the namespace (or host link) `id` on every shared socket, each reading
/// from its inbox on that link.
fn ports(
    shared: &[(Rc<UdpSocket>, String)],
    id: &str,
    inboxes: &[SharedInbox],
) -> Vec<(Sock, String)> {
    shared
        .iter()
        .zip(inboxes)
        .map(|((udp, interface), inbox)| {
            (
                Sock::Mux(MuxPort::new(udp.clone(), id, inbox.clone())),
                interface.clone(),
            )
        })
        .collect()
}

/// A shared socket as a receive error names it in the log (said only then).
enum SharedSocket<'a> {
    /// A link's socket, on this interface.
    Link(&'a str),
    /// The multicast group's socket (`[sync] group`).
    Group(std::net::SocketAddr),
}

impl std::fmt::Display for SharedSocket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharedSocket::Link(interface) => write!(f, "sync socket on {interface}"),
            SharedSocket::Group(to) => write!(f, "the multicast group {to}"),
        }
    }
}

/// Wait until one of the shared sockets, or the group socket, has a datagram to read.
async fn any_readable(shared: &[(Rc<UdpSocket>, String)], group: Option<&UdpSocket>) {
    std::future::poll_fn(|cx| {
        let mut ready = false;
        for udp in shared.iter().map(|(u, _)| u.as_ref()).chain(group) {
            // An error is ready too: the read that follows reports it.
            ready |= udp.poll_recv_ready(cx).is_ready();
        }
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The daemon of many namespaces.
struct Host {
    cfg: Rc<Config>,
    ns: Namespaces,
    keys: (ClusterSecret, Vec<ClusterSecret>),
    /// This run's epoch; each namespace's node takes the next one above it (a namespace
    /// that comes back while the daemon runs must not reuse its last node's epoch).
    epoch: u64,
    starts: u64,
    /// One socket a sync link, with its interface, in link order.
    shared: Vec<(Rc<UdpSocket>, String)>,
    /// Each peer host by its id, with its address on every link.
    peers: Peers,
    routers: BTreeMap<String, Router>,
    /// The multicast group's socket (`[sync] group`, docs/PROTOCOL.md §13.6), and the
    /// group as datagrams are sent to it: every router's group datagrams arrive there,
    /// each behind its tag, and go out from the first link's shared socket.
    group: Option<(UdpSocket, std::net::SocketAddr)>,
    /// Inboxes by namespace id, one a link (in link order), then the router's inbox on
    /// the group socket if there is one.
    inboxes: HashMap<Vec<u8>, Vec<SharedInbox>>,
    /// Namespaces whose start failed, and when.
    failed: HashMap<String, Instant>,
    inotify: AsyncFd<Inotify>,
    /// The watch on /run/netns.
    netns_watch: Option<WatchDescriptor>,
    /// Watches on state files' directories, and the namespaces whose files they hold.
    state_watches: HashMap<PathBuf, WatchDescriptor>,
    /// Datagrams whose tag names no namespace here, and datagrams without a valid tag.
    unknown: u64,
    malformed: u64,
    /// A matching name in /run/netns had no namespace mounted on it yet: when to look
    /// again (a deadline: a sleep made anew at every turn of a busy loop never ended).
    unmounted: Option<Instant>,
    /// When /run/netns and every state file were last read ([`FULL_RESCAN`]).
    last_full: Instant,
    /// The host link (docs/PROTOCOL.md §14.4): a node with no table of its own, tagged
    /// [`HOST_ID`], whose peers are the other hosts' daemons. Its liveness is theirs.
    host_node: ctsync_core::Node,
    host_link: super::SyncLink,
    /// When the host link last heard each peer host, for the namespaces' loops.
    heard: super::HostHeard,
    /// Admits metrics connections.
    metrics_gate: crate::metrics::Gate,
}

/// Which state files [`Host::read_states`] reads.
enum States<'a> {
    /// Every router's.
    All,
    /// Those in the directories of these watches (inotify said they changed).
    In(&'a [WatchDescriptor]),
    /// Those whose directory is not watched yet (it did not exist): each read tries to
    /// watch it again.
    Unwatched,
}

/// The tag of the host link's datagrams: no namespace's name holds a NUL.
const HOST_ID: &str = "\0";

/// Whether `path` is a namespace (a file of the nsfs), not yet only the empty file that
/// `ip netns add` mounts it on.
fn is_namespace(path: &Path) -> bool {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into `buf`, a zeroed statfs of the right size; `c` is a valid
    // NUL-terminated path.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as libc::c_long == NSFS_MAGIC
    }
}

/// Run the daemon of `[namespaces]` until SIGTERM or SIGINT (inside a `LocalSet`).
pub(super) async fn run(cfg: Config) -> Result<()> {
    let ns = cfg.namespaces.clone().context("[namespaces] missing")?;
    cfg.check_environment()?;
    let netns = match &cfg.netns {
        Some(n) => Some(Netns::named(n).with_context(|| format!("network namespace {n:?}"))?),
        None => None,
    };
    let keys = setup::cluster_keys(&cfg)?;
    let links = setup::bind_links(&cfg, netns.as_ref())?;
    let granted = links.granted;
    let control_path = cfg.control.socket.clone();
    let control = setup::bind_control(&control_path)?;
    let _ = std::fs::create_dir_all(NETNS_DIR);
    let inotify = Inotify::init().context("inotify")?;
    // SAFETY: the AsyncFd owns the inotify instance, so its descriptor stays open while
    // registered.
    let inotify = unsafe { AsyncFd::register(inotify) }
        .map_err(|_| anyhow::anyhow!("registering inotify with the event loop"))?;
    let mut rnd = [0u8; 4];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    // The low bits leave room for 2^22 namespace starts in this run above the epoch.
    let epoch = setup::choose_epoch(u32::from_be_bytes(rnd) & 0x3_ffff);
    let shared: Vec<(Rc<UdpSocket>, String)> = links
        .sockets
        .into_iter()
        .map(|(udp, interface)| (Rc::new(udp), interface))
        .collect();
    let host_inboxes: Vec<SharedInbox> = shared.iter().map(|_| SharedInbox::default()).collect();
    let group = match (cfg.sync.group, shared.first()) {
        (Some(g), Some((sender, _))) => Some(setup::bind_group(
            netns.as_ref(),
            g,
            cfg.sync.local,
            &cfg.sync.interface,
            sender,
        )?),
        _ => None,
    };
    let host_keys = namespace_keys(&keys, HOST_ID).context("the host link's keys")?;
    let mut host_core = cfg.core();
    host_core.expected_flows = 16;
    // The host link replicates no table: its word goes to each peer host's daemon.
    host_core.group = false;
    let host_node = setup::new_node(host_core, host_keys, Some(epoch))?;
    let host_link = setup::sync_link(
        &cfg,
        ports(&shared, HOST_ID, &host_inboxes),
        None,
        links.peers.clone(),
    );
    let mut host = Host {
        cfg: Rc::new(cfg),
        ns,
        keys,
        epoch,
        starts: 0,
        shared,
        peers: links.peers,
        routers: BTreeMap::new(),
        group,
        inboxes: HashMap::from([(HOST_ID.as_bytes().to_vec(), host_inboxes)]),
        failed: HashMap::new(),
        inotify,
        netns_watch: None,
        state_watches: HashMap::new(),
        unknown: 0,
        malformed: 0,
        unmounted: None,
        last_full: Instant::now(),
        host_node,
        host_link,
        heard: super::HostHeard::default(),
        metrics_gate: crate::metrics::Gate::default(),
    };
    host.netns_watch = host
        .inotify
        .get_mut()
        .watches()
        .add(
            NETNS_DIR,
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM,
        )
        .map_err(|e| {
            log(
                "warn",
                format!(
                    "cannot watch {NETNS_DIR} ({e}): looking every {} s",
                    RESCAN.as_secs()
                ),
            )
        })
        .ok();
    log(
        "info",
        format!(
            "{} up: replicating the namespaces {:?} over {} (node id {:#x}, {} peers, sync buffer {granted} bytes)",
            host.cfg.node,
            host.ns.pattern,
            host.cfg
                .sync
                .links()
                .iter()
                .map(|l| format!("{} on {}", l.local, l.interface))
                .collect::<Vec<_>>()
                .join(", "),
            crate::config::node_id(&host.cfg.sync.local),
            host.cfg.sync.peers.len()
        ),
    );
    host.rescan(true);
    let metrics = match &host.cfg.metrics {
        Some(m) => {
            let l = tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("[metrics] listen {}: cannot bind", m.listen))?;
            log("info", format!("metrics at http://{}/metrics", m.listen));
            Some(l)
        }
        None => None,
    };
    super::notify(&[sd_notify::NotifyState::Ready]);

    let (calls_tx, mut calls_rx) = mpsc::channel(MAX_CLIENTS);
    let clients = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(RESCAN);
    let mut rx = vec![0u8; 65536];
    let mut events = vec![0u8; 4096];
    loop {
        let host_deadline = host
            .host_node
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = any_readable(&host.shared, host.group.as_ref().map(|(u, _)| u)) => {
                host.receive(&mut rx);
            }
            r = host.host_link.readable() => {
                r?;
                host.host_link.receive(&mut host.host_node, Instant::now());
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(host_deadline)) => {
                host.host_node.handle_timeout(Instant::now());
            }
            r = host.inotify.readable_mut() => {
                let mut guard = r?;
                // Names in /run/netns that came or went (only ours matter: a node full of
                // other namespaces must not cost a rescan each), and whether a state
                // file's directory changed.
                let (mut netns, mut states) = (Vec::new(), Vec::new());
                let mut overflow = false;
                match guard.get_inner_mut().read_events(&mut events) {
                    Ok(evs) => {
                        for e in evs {
                            if e.mask.contains(EventMask::Q_OVERFLOW) {
                                // Events were lost: everything is read again.
                                overflow = true;
                            } else if e.mask.contains(EventMask::IGNORED) {
                                // The directory went away: watched again when it is back.
                                host.state_watches.retain(|_, wd| *wd != e.wd);
                            } else if Some(&e.wd) != host.netns_watch.as_ref() {
                                states.push(e.wd.clone());
                            } else if let Some(name) = e.name.and_then(|n| n.to_str())
                                && host.ns.id_of(name).is_some()
                            {
                                let gone = e.mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM);
                                netns.push((name.to_string(), gone));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
                    Err(e) => log("warn", format!("inotify: {e}")),
                }
                drop(guard);
                for (name, gone) in &netns {
                    // Gone, perhaps already back under the same name: the old node's
                    // sockets are in the old namespace, so it stops either way.
                    if *gone && host.routers.contains_key(name) {
                        log("info", format!("namespace {name} is gone: its replication stops"));
                        host.stop(name);
                        host.remove_files(name);
                    }
                }
                if overflow {
                    log("warn", "inotify's queue overflowed: reading every namespace and state file again");
                    host.rescan(true);
                    host.read_states(States::All);
                } else {
                    if !netns.is_empty() {
                        host.rescan(true);
                    }
                    if !states.is_empty() {
                        host.read_states(States::In(&states));
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                host.unmounted.unwrap_or_else(Instant::now),
            )), if host.unmounted.is_some() => host.rescan(true),
            _ = tick.tick() => {
                let full = host.netns_watch.is_none() || host.last_full.elapsed() >= FULL_RESCAN;
                host.rescan(full);
                host.read_states(if full { States::All } else { States::Unwatched });
            }
            c = control.accept() => {
                if let Ok((stream, _)) = c
                    && let Ok(permit) = clients.clone().try_acquire_owned()
                {
                    tokio::spawn(super::control::client(stream, calls_tx.clone(), permit));
                }
            }
            Some(call) = calls_rx.recv() => host.call(call),
            m = async { metrics.as_ref()?.accept().await.ok() }, if metrics.is_some() => {
                if let Some((stream, _)) = m {
                    host.serve_metrics(stream);
                }
            }
            _ = hup.recv() => {
                super::notify(&[sd_notify::NotifyState::Reloading]);
                host.reload();
                super::notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        host.flush_host_link();
    }
    super::notify(&[sd_notify::NotifyState::Stopping]);
    for (_, r) in std::mem::take(&mut host.routers) {
        r.task.abort();
    }
    let _ = std::fs::remove_file(&control_path);
    log("info", format!("{} stopped", host.cfg.node));
    Ok(())
}

/// The keys of the namespace (or host link) with id `id`: derived from the cluster's.
fn namespace_keys(
    (send, accept): &(ClusterSecret, Vec<ClusterSecret>),
    id: &str,
) -> Result<(ClusterSecret, Vec<ClusterSecret>), ctsync_wire::WireError> {
    Ok((
        send.for_namespace(id.as_bytes())?,
        accept
            .iter()
            .map(|k| k.for_namespace(id.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

/// A state file's role: `None` while it is missing or says something else (said in
/// the log).
fn read_state(path: &Path) -> Option<Role> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let role = parse_state(&text);
            if role.is_none() {
                log(
                    "warn",
                    format!(
                        "state file {} says {:?}: expected primary, master, backup or fault",
                        path.display(),
                        text.trim()
                    ),
                );
            }
            role
        }
        Err(_) => None,
    }
}

/// A namespace's keepalived notify FIFO: created if missing, checked (root's, written by
/// no one else: whoever writes it decides the router's role), opened read-write (open
/// does not wait for keepalived, and its restarts do not end the stream). Returns the
/// newest role among the lines already waiting in it, and the FIFO to follow.
fn open_fifo(path: &Path) -> Result<(Option<Role>, tokio::net::unix::pipe::Receiver)> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::keepalived::ensure_fifo(path)
        .with_context(|| format!("creating keepalived's notify_fifo {}", path.display()))?;
    crate::keepalived::check_fifo(path)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening keepalived's notify_fifo {}", path.display()))?;
    let waiting = super::last_role::from_fifo(&mut file, |t| {
        (t.subject == crate::keepalived::Subject::Instance)
            .then_some(t.role)
            .flatten()
    })
    .with_context(|| format!("reading keepalived's notify_fifo {}", path.display()))?;
    let rx = tokio::net::unix::pipe::Receiver::from_file(file)
        .with_context(|| format!("following keepalived's notify_fifo {}", path.display()))?;
    Ok((waiting, rx))
}

/// Hand the role of each `INSTANCE` line of a namespace's FIFO to its loop, until the
/// loop is gone (the task is aborted with the namespace), and record it beside the FIFO
/// (see [`role_record`]). A line that is not UTF-8 is read as well as it goes (and is
/// no transition): it does not end the reading.
async fn follow_fifo(rx: tokio::net::unix::pipe::Receiver, path: PathBuf, mailbox: SharedMailbox) {
    use tokio::io::AsyncBufReadExt;
    let mut rx = tokio::io::BufReader::new(rx);
    let mut line = Vec::new();
    loop {
        line.clear();
        match rx.read_until(b'\n', &mut line).await {
            Ok(0) => {
                log(
                    "warn",
                    "keepalived's notify_fifo closed: roles now only by `ctsync role --netns`",
                );
                return;
            }
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if let Some(role) = crate::config::instance_role(&text) {
                    log("info", format!("keepalived: {} -> {role:?}", text.trim()));
                    let record = role_record(&path);
                    if let Err(e) = crate::keepalived::write_text(&record, &format!("{role}\n")) {
                        log(
                            "warn",
                            format!("recording the role in {}: {e}", record.display()),
                        );
                    }
                    if !mailbox.borrow_mut().give_role(role) {
                        return;
                    }
                }
            }
            Err(e) => {
                log(
                    "warn",
                    format!(
                        "keepalived's notify_fifo: {e}: roles now only by `ctsync role --netns`"
                    ),
                );
                return;
            }
        }
    }
}

/// Where the last role a namespace's FIFO gave is recorded: beside the FIFO, `.role`
/// added. keepalived says a role once, at its transition: a router whose loop (or the
/// whole daemon) starts again after that line was read takes its role from here.
fn role_record(fifo: &Path) -> PathBuf {
    let mut name = fifo.as_os_str().to_os_string();
    name.push(".role");
    PathBuf::from(name)
}

impl Host {
    /// Start the namespaces that appeared, stop those that went away, and restart those
    /// whose loop ended (after [`RETRY`]). Only a `full` rescan reads /run/netns; the
    /// others take the namespaces known (running, or waiting to be tried again) as
    /// present, and inotify tells of the rest.
    fn rescan(&mut self, full: bool) {
        // A set: hundreds of routers are looked up in it every few seconds.
        let mut present = std::collections::HashSet::new();
        if !full {
            present.extend(self.routers.keys().chain(self.failed.keys()).cloned());
        } else {
            self.unmounted = None;
            self.last_full = Instant::now();
            self.read_netns_dir(&mut present);
        }
        self.settle(present);
    }

    /// The names in /run/netns that are namespaces of ours, into `present`; one not
    /// mounted yet sets when to look again (`unmounted`).
    fn read_netns_dir(&mut self, present: &mut std::collections::HashSet<String>) {
        match std::fs::read_dir(NETNS_DIR) {
            Ok(dir) => {
                for e in dir.flatten() {
                    let Some(name) = e.file_name().to_str().map(str::to_string) else {
                        continue;
                    };
                    if self.ns.id_of(&name).is_none() {
                        continue;
                    }
                    if self.routers.contains_key(&name) || is_namespace(&e.path()) {
                        present.insert(name);
                    } else if !self.routers.contains_key(&name) {
                        // `ip netns add` creates the file, then mounts the namespace on it.
                        self.unmounted = Some(Instant::now() + UNMOUNTED_LOOK);
                    }
                }
            }
            Err(e) => log("warn", format!("reading {NETNS_DIR}: {e}")),
        }
    }

    /// Stop what is not `present` or whose loop ended, start what is present and not
    /// running (those whose start failed after [`RETRY`]).
    fn settle(&mut self, present: std::collections::HashSet<String>) {
        let ended: Vec<String> = self
            .routers
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            self.stop(&name);
            // Not ready while it is not replicated: keepalived must not make it master
            // on the strength of what the ended loop last wrote.
            if let Some(f) = self.ns.id_of(&name).and_then(|id| self.ns.track_file(id))
                && let Err(e) = crate::keepalived::write_track_file(&f, false)
            {
                log(
                    "warn",
                    format!("writing the track file {}: {e}", f.display()),
                );
            }
            self.failed.insert(name, Instant::now());
        }
        let gone: Vec<String> = self
            .routers
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            log(
                "info",
                format!("namespace {name} is gone: its replication stops"),
            );
            self.stop(&name);
            self.remove_files(&name);
        }
        self.failed.retain(|n, _| present.contains(n));
        for name in present {
            if self.routers.contains_key(&name)
                || self.failed.get(&name).is_some_and(|t| t.elapsed() < RETRY)
            {
                continue;
            }
            self.failed.remove(&name);
            self.start(name);
        }
    }

    /// Start replicating the namespace `name`.
    fn start(&mut self, name: String) {
        let Some(id) = self.ns.id_of(&name).map(str::to_string) else {
            return;
        };
        let Ok(keys) = namespace_keys(&self.keys, &id) else {
            log("error", format!("namespace {name}: cannot derive its keys"));
            return;
        };
        let mut fifo = None;
        let (role, from) = match (self.ns.state_file(&id), self.ns.notify_fifo(&id)) {
            (Some(state), _) => {
                self.watch_state(&state);
                let role = read_state(&state).unwrap_or(Role::Backup);
                (role, state.display().to_string())
            }
            (None, Some(path)) => {
                let from = format!("keepalived's notify_fifo {}", path.display());
                match open_fifo(&path) {
                    Ok((waiting, rx)) => {
                        let record = role_record(&path);
                        fifo = Some((rx, path));
                        // The newest word waiting, else the one recorded before.
                        match waiting {
                            Some(r) => (r, from),
                            None => match read_state(&record) {
                                Some(r) => (r, record.display().to_string()),
                                None => (Role::Backup, from),
                            },
                        }
                    }
                    Err(e) => {
                        log(
                            "error",
                            format!(
                                "namespace {name}: {e:#}: its role is backup until `ctsync role --netns {name}` says otherwise"
                            ),
                        );
                        (Role::Backup, format!("{from} (unusable)"))
                    }
                }
            }
            (None, None) => (Role::Backup, "no source".to_string()),
        };
        let mut inboxes: Vec<SharedInbox> =
            self.shared.iter().map(|_| SharedInbox::default()).collect();
        let ports = ports(&self.shared, &id, &inboxes);
        // Its port on the group socket: it reads its inbox there, and sends to the group
        // from the first link's shared socket behind its tag, as its other datagrams.
        let group = match (&self.group, self.shared.first()) {
            (Some((_, to)), Some((first, _))) => {
                let inbox = SharedInbox::default();
                inboxes.push(inbox.clone());
                Some(GroupSocket {
                    udp: Sock::Mux(MuxPort::new(first.clone(), &id, inbox)),
                    to: *to,
                })
            }
            _ => None,
        };
        self.inboxes.insert(id.clone().into_bytes(), inboxes);
        let peers = self.peers.clone();
        let mailbox = SharedMailbox::default();
        self.starts += 1;
        let epoch = self.epoch + self.starts;
        let cfg = self.cfg.clone();
        let heard = self.heard.clone();
        let closing = Closing(mailbox.clone());
        let task_name = name.clone();
        let task = tokio::task::spawn_local(NAMESPACE.scope(task_name.clone(), async move {
            // Its sockets are opened off this thread, the rest (the node, the first read
            // of its table) on it. The daemon lives on the heap, and nothing of the start
            // is held while it serves: a task's future is allocated whole, for its largest
            // state, and one that held the started daemon by value beside the one serving
            // took 10.6 KiB a router.
            // Held for the whole task, whose end (or abort) closes the mailbox.
            let closing = closing;
            let Some((mut d, src)) = start_router(
                cfg, task_name, ports, group, peers, keys, epoch, role, heard,
            )
            .await
            else {
                return;
            };
            if let Err(e) = d.serve(src, None, None, Some(closing.0.clone())).await {
                log("error", format!("stopped: {e:#}"));
            }
        }));
        let fifo = fifo.map(|(rx, path)| {
            let mailbox = mailbox.clone();
            tokio::task::spawn_local(NAMESPACE.scope(name.clone(), follow_fifo(rx, path, mailbox)))
        });
        log(
            "info",
            format!("namespace {name} (id {id}): replicating, role {role} from {from}"),
        );
        self.routers.insert(
            name,
            Router {
                id,
                mailbox,
                role: Some(role),
                task,
                fifo,
            },
        );
    }

    /// SIGHUP: read the file again; hand each namespace's loop the filter, TCP window
    /// tracking and (if they changed) its keys, and the host link its keys; say what
    /// needs a restart. Namespaces started later take the reloaded settings too.
    fn reload(&mut self) {
        let path = self.cfg.path().to_path_buf();
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                log(
                    "error",
                    format!("reload refused, keeping the running configuration: {e:#}"),
                );
                return;
            }
        };
        if new.namespaces.is_none() {
            log(
                "error",
                "reload refused: the file has no [namespaces] any more (a restart makes this a daemon of one table)",
            );
            return;
        }
        let restart = super::needs_restart(&self.cfg, &new);
        let keys_changed = self.cfg.sync.key_file != new.sync.key_file
            || self.cfg.sync.accept_key_files != new.sync.accept_key_files;
        let keys = if keys_changed {
            match setup::cluster_keys(&new) {
                Ok(k) => Some(k),
                Err(e) => {
                    log("error", format!("cluster keys not changed: {e:#}"));
                    None
                }
            }
        } else {
            None
        };
        if let Some(k) = &keys {
            match namespace_keys(k, HOST_ID)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|(send, accept)| {
                    self.host_node
                        .set_secrets(send, accept)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                }) {
                Ok(()) => self.keys = k.clone(),
                Err(e) => log(
                    "error",
                    format!("host link: cluster keys not changed: {e:#}"),
                ),
            }
        }
        let shared = std::sync::Arc::new(new.clone());
        for (name, r) in &self.routers {
            let keys = match keys.as_ref().map(|k| namespace_keys(k, &r.id)) {
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => {
                    log(
                        "error",
                        format!("namespace {name}: its keys not changed: {e}"),
                    );
                    None
                }
                None => None,
            };
            let call = Call::Reload(Box::new(super::control::NamespaceReload {
                config: shared.clone(),
                keys,
            }));
            // Delivered when its loop takes calls again, however busy it is now: a
            // router left on the old keys would drop out once its peers stop accepting
            // them.
            let _ = r.mailbox.borrow_mut().give_call(call);
        }
        // What later starts take: the reloaded settings; what needs a restart stays.
        let mut cfg = (*self.cfg).clone();
        cfg.filter = new.filter.clone();
        cfg.sync.tcp_window_tracking = new.sync.tcp_window_tracking;
        if keys.is_some() {
            cfg.sync.key_file = new.sync.key_file.clone();
            cfg.sync.accept_key_files = new.sync.accept_key_files.clone();
        }
        self.cfg = Rc::new(cfg);
        log(
            "info",
            format!(
                "reloaded: [filter], keys, tcp_window_tracking, in {} namespaces",
                self.routers.len()
            ),
        );
        super::say_restart(&restart);
    }

    /// Send what the host link has ready, and publish when it last heard each peer
    /// host that is up.
    fn flush_host_link(&mut self) {
        let now = Instant::now();
        self.host_link.transmit(&mut self.host_node, now);
        while self.host_node.poll_kernel_op().is_some() {}
        while let Some(n) = self.host_node.poll_notify() {
            match n {
                ctsync_core::Notify::PeerUp(p) | ctsync_core::Notify::PeerRestarted(p) => {
                    log("info", format!("host link: peer {p:#x} up"));
                }
                ctsync_core::Notify::PeerDown(p) => {
                    log("warn", format!("host link: peer {p:#x} down"));
                }
                ctsync_core::Notify::IncompatiblePeer { peer, min, max } => log(
                    "error",
                    format!(
                        "host link: peer {peer:#x} speaks protocol versions {min}..={max} only"
                    ),
                ),
                _ => {}
            }
        }
        let mut heard = self.heard.at.borrow_mut();
        let mut changed = false;
        for (id, last) in self.host_node.peers_heard() {
            match last {
                Some(t) => {
                    changed |= heard.insert(id, t).is_none();
                }
                None => {
                    changed |= heard.remove(&id).is_some();
                }
            }
        }
        if changed {
            self.heard.changed.send_modify(|n| *n += 1);
        }
    }

    /// Stop replicating the namespace `name`.
    fn stop(&mut self, name: &str) {
        if let Some(r) = self.routers.remove(name) {
            r.task.abort();
            if let Some(f) = r.fifo {
                f.abort();
            }
            self.inboxes.remove(r.id.as_bytes());
        }
    }

    /// Remove the track and stale files of the namespace `name`, which is gone (a router
    /// deleted leaves nothing behind; one that comes back writes them again).
    fn remove_files(&self, name: &str) {
        let Some(id) = self.ns.id_of(name) else {
            return;
        };
        let stale = self.ns.stale_file(id).map(|(f, _)| f);
        for f in self.ns.track_file(id).into_iter().chain(stale) {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log("warn", format!("removing {}: {e}", f.display())),
            }
        }
    }

    /// Watch the directory of a state file (the file itself is replaced by renames, and
    /// may not exist yet); one that does not exist yet is tried again at the next
    /// rescan.
    fn watch_state(&mut self, state: &Path) {
        let Some(dir) = state.parent() else {
            return;
        };
        if self.state_watches.contains_key(dir) {
            return;
        }
        if let Ok(wd) = self.inotify.get_mut().watches().add(
            dir,
            WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE,
        ) {
            self.state_watches.insert(dir.to_path_buf(), wd);
        }
    }

    /// Read the state files `which` and hand a changed role to its namespace's loop.
    fn read_states(&mut self, which: States<'_>) {
        let watch = |state: &Path| state.parent().and_then(|d| self.state_watches.get(d));
        let files: Vec<(String, PathBuf)> = self
            .routers
            .iter()
            .filter_map(|(n, r)| Some((n.clone(), self.ns.state_file(&r.id)?)))
            .filter(|(_, f)| match &which {
                States::All => true,
                States::In(wds) => watch(f).is_some_and(|wd| wds.contains(wd)),
                States::Unwatched => watch(f).is_none(),
            })
            .collect();
        for (name, state) in files {
            self.watch_state(&state);
            let Some(role) = read_state(&state) else {
                continue;
            };
            let Some(r) = self.routers.get_mut(&name) else {
                continue;
            };
            if r.role != Some(role) && r.mailbox.borrow_mut().give_role(role) {
                r.role = Some(role);
            }
        }
    }

    /// Hand the datagrams waiting on the shared sockets to their namespaces' inboxes on
    /// the link each came in on (a budget's worth a socket).
    fn receive(&mut self, rx: &mut [u8]) {
        let group = self
            .group
            .as_ref()
            .map(|(udp, to)| (udp, SharedSocket::Group(*to)));
        let sockets = self
            .shared
            .iter()
            .map(|(udp, interface)| (udp.as_ref(), SharedSocket::Link(interface)))
            .chain(group);
        // The group socket's datagrams go to each router's last inbox (its group port);
        // the host link has none there, so one tagged for it counts as unknown.
        for (n, (udp, what)) in sockets.enumerate() {
            for _ in 0..DATAGRAM_BUDGET {
                let len = match udp.try_recv_from(rx) {
                    Ok((len, _)) => len,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log("warn", format!("{what}: {e}"));
                        break;
                    }
                };
                match ctsync_wire::tag::split_tag(&rx[..len]) {
                    Ok((id, datagram)) => match self.inboxes.get(id).and_then(|i| i.get(n)) {
                        Some(inbox) => inbox.borrow_mut().push(datagram),
                        None => self.unknown += 1,
                    },
                    Err(_) => self.malformed += 1,
                }
            }
        }
    }

    /// A control call: one naming a namespace goes to its loop; `status` gathers every
    /// namespace's.
    fn call(&mut self, call: Call) {
        let Call::Request {
            netns,
            request,
            reply,
        } = call
        else {
            return;
        };
        let Some(name) = netns else {
            match request {
                Request::Status | Request::StatusText | Request::StatusSummary => {
                    self.status(request, reply)
                }
                _ => {
                    let _ = reply.send(Reply::Line(json!({
                        "error": "this daemon replicates namespaces: name one with --netns (`ctsync status` lists them)"
                    })));
                }
            }
            return;
        };
        match self.routers.get(&name) {
            Some(r) => {
                let forward = Call::Request {
                    netns: None,
                    request,
                    reply,
                };
                if let Err(Call::Request { reply, .. }) = r.mailbox.borrow_mut().give_call(forward)
                {
                    let _ = reply.send(Reply::Line(
                        json!({"error": format!("namespace {name} is busy or stopping: try again")}),
                    ));
                }
            }
            None => {
                let _ = reply.send(Reply::Line(json!({
                    "error": format!("no replicated namespace {name:?} (`ctsync status` lists them)")
                })));
            }
        }
    }

    /// `status` (JSON, or `text`): every namespace's role, readiness and caches, gathered
    /// off the loop.
    fn status(&self, request: Request, reply: oneshot::Sender<Reply>) {
        let gather = self.gather();
        tokio::task::spawn_local(async move {
            let v = gather.await;
            let r = if request == Request::StatusText {
                Reply::Line(json!({"text": status_text(&v)}))
            } else {
                Reply::Line(v)
            };
            let _ = reply.send(r);
        });
    }

    /// Every namespace's role, readiness, caches and peers up, and the daemon's drops, as
    /// `ctsync status --json` shows them: asked of each namespace's loop now, answered
    /// when they have all answered (or [`STATUS_WAIT`] passed).
    fn gather(&self) -> impl Future<Output = serde_json::Value> + 'static {
        let mut asks = Vec::new();
        for (name, r) in &self.routers {
            let (tx, rx) = oneshot::channel();
            let call = Call::Request {
                netns: None,
                request: Request::StatusSummary,
                reply: tx,
            };
            let _ = r.mailbox.borrow_mut().give_call(call);
            asks.push((name.clone(), r.id.clone(), rx));
        }
        let node = self.cfg.node.clone();
        let (unknown, malformed) = (self.unknown, self.malformed);
        let dropped: u64 = self
            .inboxes
            .values()
            .flatten()
            .map(|i| i.borrow().dropped)
            .sum();
        async move {
            let mut namespaces = Vec::new();
            for (name, id, rx) in asks {
                let one = match tokio::time::timeout(STATUS_WAIT, rx).await {
                    Ok(Ok(Reply::Line(v))) if v.get("error").is_none() => json!({
                        "name": name,
                        "id": id,
                        "role": v["role"],
                        "ready": v["ready"],
                        "caches": v["caches"],
                        "peers_up": v["peers_up"],
                    }),
                    _ => {
                        json!({"name": name, "id": id, "role": null, "ready": false, "caches": null, "error": "no answer"})
                    }
                };
                namespaces.push(one);
            }
            json!({
                "node": node,
                "namespaces": namespaces,
                "dropped": {"unknown_namespace": unknown, "malformed_tag": malformed, "inbox_full": dropped},
            })
        }
    }

    /// A metrics scrape: every namespace's status gathered off the loop, then served.
    fn serve_metrics(&mut self, stream: tokio::net::TcpStream) {
        let Some(place) = self.metrics_gate.admit() else {
            return;
        };
        let gather = self.gather();
        tokio::task::spawn_local(async move {
            let body = crate::metrics::render_namespaces(&gather.await);
            crate::metrics::serve(stream, place, move || body).await;
        });
    }
}

/// `ctsync status` of a daemon of namespaces: a line per namespace.
fn status_text(v: &serde_json::Value) -> String {
    let list = v["namespaces"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}: {} namespaces replicated\n",
        v["node"].as_str().unwrap_or("?"),
        list.len()
    );
    for n in &list {
        out.push_str(&format!(
            "  {:<24} {:<8} ready {:<5} flows {} own, {} replicated\n",
            n["name"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?"),
            n["ready"],
            n["caches"]["internal"],
            n["caches"]["external"],
        ));
    }
    out
}
