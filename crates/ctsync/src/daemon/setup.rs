//! Start-up: the network namespace, the kernel's event and request sockets, the sync
//! socket and its buffers, the control socket, the cluster keys and the core node; then
//! the first role, keepalived's FIFO and the metrics listener.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use ctnetlink::{Conntrack, EventSocket, Groups, Netns};
use ctsync_core::{KernelOp, Node, Role};
use ctsync_wire::{Cipher, ClusterSecret, NodeId};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::net::{TcpListener, UdpSocket, UnixListener};

use super::link::GroupSocket;
use super::shell::Kernel;
use super::{Daemon, SyncLink, log};
use crate::config::{Config, node_id, read_key};

/// Receive buffer asked for on the sync socket: a 200,000-flow bulk transfer is about
/// 13 MB, and the kernel's default (about 208 KiB) overflowed while the daemon was busy
/// writing to its kernel (measured: thousands of datagrams dropped, two thirds of the
/// messages sent again). conntrackd's examples use 24 MiB too.
const SYNC_RCVBUF: usize = 32 << 20;
/// Send buffer asked for on the sync socket.
const SYNC_SNDBUF: usize = 8 << 20;
/// Receive buffer asked for on the kernel event socket.
const EVENT_RCVBUF: usize = 64 << 20;

/// keepalived's notify_fifo, read line by line.
pub(super) type Fifo = Lines<BufReader<pipe::Receiver>>;

/// What the event loop waits on besides the sync socket.
pub(super) struct Sources {
    /// Kernel conntrack and expectation events.
    pub(super) events: AsyncFd<EventSocket>,
    /// The netlink port of our own kernel writes (their events are not ours to send).
    pub(super) own_port: u32,
    /// The control socket (a namespace's loop has none: the daemon's calls come to it).
    pub(super) control: Option<UnixListener>,
    /// Its path, removed at exit.
    pub(super) control_path: Option<PathBuf>,
    /// keepalived's `notify_fifo`, when followed.
    pub(super) fifo: Option<Fifo>,
    /// The metrics listener, when configured.
    pub(super) metrics: Option<TcpListener>,
}

/// Raise the sync socket's buffers (the FORCE options need CAP_NET_ADMIN, which the
/// daemon has; without it the sysctl limits apply). The receive size granted, in bytes
/// (0 if it could not be set: the daemon runs on, and its start-up line says 0).
fn size_sync_buffers(s: &StdUdpSocket) -> usize {
    let _ = ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Send, SYNC_SNDBUF);
    ctnetlink::size_buffer(s.as_fd(), ctnetlink::Buffer::Receive, SYNC_RCVBUF).unwrap_or(0)
}

/// The cluster key to send with and the further keys accepted (a rotation's overlap).
pub(super) fn cluster_keys(cfg: &Config) -> Result<(ClusterSecret, Vec<ClusterSecret>)> {
    let cipher = match cfg.sync.cipher.as_deref() {
        Some("aes-256-gcm") => Cipher::Aes256Gcm,
        _ => Cipher::ChaCha20Poly1305,
    };
    let load = |path: &Path| -> Result<ClusterSecret> {
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

/// Subscribe to the kernel's conntrack and expectation events (in `netns` if given):
/// the socket, registered with the event loop, its receive buffer granted, and a second
/// descriptor of it for leaving and rejoining event groups.
fn subscribe(netns: Option<&Netns>) -> Result<(AsyncFd<EventSocket>, OwnedFd, usize)> {
    // Subscribe before reading the table: with nf_conntrack_events=2 (the default) the
    // kernel gives no events at all for entries created while nobody listens. Setting 1
    // attaches event support to every new entry; older ones are caught by the periodic
    // re-read of the table.
    let set_events = || std::fs::write("/proc/sys/net/netfilter/nf_conntrack_events", "1");
    let r = match netns {
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
    let mut events = match netns {
        Some(ns) => EventSocket::open_in(ns, groups),
        None => EventSocket::open(groups),
    }
    .context("subscribing to conntrack events")?;
    let granted = events.set_recv_buffer(EVENT_RCVBUF)?;
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
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    // SAFETY: the AsyncFd owns the socket, so the descriptor stays open while registered.
    let events = unsafe { AsyncFd::register(events) }
        .map_err(|_| anyhow::anyhow!("registering the event socket with the event loop"))?;
    Ok((events, events_ctl, granted))
}

/// Bind the sync socket (in `netns` if given), buffers raised; the receive buffer
/// granted.
pub(super) fn bind_sync(netns: Option<&Netns>, local: SocketAddr) -> Result<(UdpSocket, usize)> {
    let bind = move || -> std::io::Result<StdUdpSocket> {
        let s = StdUdpSocket::bind(local)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let std_udp = match netns {
        Some(ns) => ns.run(bind),
        None => bind(),
    }
    .with_context(|| format!("binding the sync socket to {local}"))?;
    let granted = size_sync_buffers(&std_udp);
    Ok((UdpSocket::from_std(std_udp)?, granted))
}

/// Scope the IPv6 link-local addresses of each link (fe80::/10: the local one and the
/// peers') to the link's interface, by its index in the daemon's namespace; an index
/// written in the file (`%3`) is kept.
fn scope_link_local(links: &mut [crate::config::Link], netns: Option<&Netns>) -> Result<()> {
    use crate::config::is_link_local;
    for l in links.iter_mut() {
        if !is_link_local(&l.local) && !l.peers.iter().any(is_link_local) {
            continue;
        }
        let name = std::ffi::CString::new(l.interface.clone())
            .with_context(|| format!("interface {:?}", l.interface))?;
        let index = || -> std::io::Result<u32> {
            // SAFETY: a valid NUL-terminated string.
            Ok(unsafe { libc::if_nametoindex(name.as_ptr()) })
        };
        let index = match netns {
            Some(ns) => ns.run(index),
            None => index(),
        }
        .with_context(|| format!("the index of interface {:?}", l.interface))?;
        if index == 0 {
            anyhow::bail!(
                "interface {:?} is gone: its link-local addresses have no scope",
                l.interface
            );
        }
        for a in std::iter::once(&mut l.local).chain(l.peers.iter_mut()) {
            if let SocketAddr::V6(v) = a
                && is_link_local(&SocketAddr::V6(*v))
                && v.scope_id() == 0
            {
                v.set_scope_id(index);
            }
        }
    }
    Ok(())
}

/// The sync links of the file, bound.
pub(super) struct BoundLinks {
    /// Each link's socket with its interface, the first (`[sync]`'s own keys) first.
    pub(super) sockets: Vec<(UdpSocket, String)>,
    /// Each peer by its id (from its first link's address), with its address on every
    /// link: the links list the same nodes in the same order (checked in config.rs).
    pub(super) peers: BTreeMap<NodeId, Vec<SocketAddr>>,
    /// The smallest receive buffer the kernel granted a link's socket.
    pub(super) granted: usize,
}

/// Bind every sync link's socket (`[sync]` and each `[[sync.link]]`), in `netns` if
/// given, their IPv6 link-local addresses scoped to their interfaces.
pub(super) fn bind_links(cfg: &Config, netns: Option<&Netns>) -> Result<BoundLinks> {
    let mut links = cfg.sync.links();
    scope_link_local(&mut links, netns)?;
    let mut sockets = Vec::with_capacity(links.len());
    let mut granted = usize::MAX;
    for l in &links {
        let (udp, g) = bind_sync(netns, l.local)?;
        granted = granted.min(g);
        sockets.push((udp, l.interface.clone()));
    }
    let peers = cfg
        .sync
        .peers
        .iter()
        .enumerate()
        .map(|(i, a)| (node_id(a), links.iter().map(|l| l.peers[i]).collect()))
        .collect();
    Ok(BoundLinks {
        sockets,
        peers,
        granted,
    })
}

/// The multicast group's socket (docs/PROTOCOL.md §13.6), in `netns` if given: bound
/// to the group's address and port and joined on the sync interface; and `sender` (the
/// first link's socket) set to send to the group on that interface, TTL 1, not looped
/// back. Returns the socket with the group as datagrams are sent to it (an IPv6
/// link-scope group with the interface as its scope).
pub(super) fn bind_group(
    netns: Option<&Netns>,
    group: SocketAddr,
    local: SocketAddr,
    interface: &str,
    sender: &UdpSocket,
) -> Result<(UdpSocket, SocketAddr)> {
    let name = std::ffi::CString::new(interface.to_string())
        .map_err(|_| anyhow::anyhow!("[sync] interface {interface:?} is not an interface name"))?;
    let bind = move || -> std::io::Result<(StdUdpSocket, u32)> {
        // SAFETY: a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = match (group, local) {
            (SocketAddr::V4(g), SocketAddr::V4(l)) => {
                let s = StdUdpSocket::bind(g)?;
                s.join_multicast_v4(g.ip(), l.ip())?;
                s
            }
            (SocketAddr::V6(g), SocketAddr::V6(_)) => {
                let s = StdUdpSocket::bind(SocketAddrV6::new(*g.ip(), g.port(), 0, index))?;
                s.join_multicast_v6(g.ip(), index)?;
                s
            }
            _ => return Err(std::io::ErrorKind::InvalidInput.into()),
        };
        s.set_nonblocking(true)?;
        Ok((s, index))
    };
    let (std_udp, index) = match netns {
        Some(ns) => ns.run(bind),
        None => bind(),
    }
    .with_context(|| {
        format!("binding to the multicast group {group} and joining it on {interface}")
    })?;
    size_sync_buffers(&std_udp);
    let to = match group {
        SocketAddr::V4(g) => {
            sender.set_multicast_ttl_v4(1)?;
            sender.set_multicast_loop_v4(false)?;
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: index as libc::c_int,
            };
            set_opt(sender, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
            SocketAddr::V4(g)
        }
        SocketAddr::V6(g) => {
            sender.set_multicast_loop_v6(false)?;
            set_opt(sender, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &1)?;
            set_opt(
                sender,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                &(index as libc::c_int),
            )?;
            SocketAddr::V6(SocketAddrV6::new(*g.ip(), g.port(), 0, index))
        }
    };
    Ok((UdpSocket::from_std(std_udp)?, to))
}

/// `setsockopt(level, name, value)` on a sync socket.
fn set_opt<T>(s: &UdpSocket, level: libc::c_int, name: libc::c_int, value: &T) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `value` points to a live `T` of the size given, for the length of the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting multicast option {name} on the sync socket"));
    }
    Ok(())
}

/// Bind the control socket, root-only, replacing a stale one.
pub(super) fn bind_control(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let control = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(control)
}

/// The core node: this run's epoch (above the last one recorded in the state directory
/// and the wall clock's seconds, with 24 random bits: see `epoch.rs`) and a random seed,
/// keyed with the cluster keys.
pub(super) fn new_node(
    core: ctsync_core::Config,
    (secret, accept): (ClusterSecret, Vec<ClusterSecret>),
    epoch: Option<u64>,
) -> Result<Node> {
    let mut rnd = [0u8; 16];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let epoch = match epoch {
        Some(e) => e,
        None => choose_epoch(u32::from_be_bytes([0, rnd[0], rnd[1], rnd[2]])),
    };
    let seed = u64::from_be_bytes([
        rnd[8], rnd[9], rnd[10], rnd[11], rnd[12], rnd[13], rnd[14], rnd[15],
    ]);
    let mut node = Node::new(core, secret.clone(), epoch, seed, Instant::now())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !accept.is_empty() {
        node.set_secrets(secret, accept)
            .map_err(|e| anyhow::anyhow!("cluster keys: {e}"))?;
    }
    Ok(node)
}

/// This run's epoch, recorded in the state directory (see `epoch.rs`), with these
/// random low bits.
pub(super) fn choose_epoch(random24: u32) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (epoch, warning) = super::epoch::choose(&super::epoch::state_dir(), wall, random24);
    if let Some(w) = warning {
        log("warn", w);
    }
    epoch
}

/// keepalived's notify_fifo: checked (root's, written by no one else), then opened
/// read-write, so that open does not wait for a writer and keepalived restarting does not
/// end the stream.
fn follow_keepalived(cfg: &Config) -> Result<(Option<Role>, Option<Fifo>)> {
    let Some(k) = cfg.keepalived.as_ref() else {
        return Ok((None, None));
    };
    let Some(path) = k.notify_fifo.clone() else {
        return Ok((None, None));
    };
    crate::keepalived::ensure_fifo(&path)
        .with_context(|| format!("creating keepalived's notify_fifo {}", path.display()))?;
    crate::keepalived::check_fifo(&path)?;
    // Read and write, like keepalived: the FIFO then never reports an end when
    // keepalived restarts, and lines written while no daemon ran wait in it.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening keepalived's notify_fifo {}", path.display()))?;
    let waiting = super::last_role::from_fifo(&mut file, |t| k.role_for(t))
        .with_context(|| format!("reading keepalived's notify_fifo {}", path.display()))?;
    let rx = pipe::Receiver::from_file(file)
        .with_context(|| format!("following keepalived's notify_fifo {}", path.display()))?;
    log(
        "info",
        format!("following keepalived through {}", path.display()),
    );
    Ok((waiting, Some(BufReader::new(rx).lines())))
}

/// The role to start in, and where it came from: keepalived's newest word waiting in
/// its FIFO, else the role recorded before a restart, else the configuration's.
fn first_role(cfg: &Config, waiting: Option<Role>, runtime: &Path) -> (Role, String) {
    if let Some(r) = waiting {
        return (r, "keepalived's notify_fifo".to_string());
    }
    match super::last_role::read(runtime, &cfg.node) {
        Ok(Some(r)) => (
            r,
            format!(
                "{}, kept from before this restart",
                super::last_role::file(runtime).display()
            ),
        ),
        Ok(None) => (cfg.role, "the configuration".to_string()),
        Err(e) => {
            log(
                "warn",
                format!("{e:#}: starting in the configured role ({})", cfg.role),
            );
            (cfg.role, "the configuration".to_string())
        }
    }
}

/// Open everything, take the configured role and carry out what it asks: the daemon and
/// the sources its event loop waits on.
pub(super) async fn start(cfg: &Config) -> Result<(Daemon, Sources)> {
    cfg.check_environment()?;
    let netns = match &cfg.netns {
        Some(n) => Some(Netns::named(n).with_context(|| format!("network namespace {n:?}"))?),
        None => None,
    };
    let keys = cluster_keys(cfg)?;
    let (mut events, events_ctl, granted) = subscribe(netns.as_ref())?;
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
    let BoundLinks {
        sockets,
        peers,
        granted: sync_buffer,
    } = bind_links(cfg, netns.as_ref())?;
    let sockets: Vec<_> = sockets
        .into_iter()
        .map(|(udp, interface)| (super::link::Sock::Udp(udp), interface))
        .collect();
    let group = match (cfg.sync.group, sockets.first()) {
        (Some(g), Some((super::link::Sock::Udp(sender), _))) => {
            let (udp, to) = bind_group(netns.as_ref(), g, local, &cfg.sync.interface, sender)?;
            Some(GroupSocket {
                udp: super::link::Sock::Udp(udp),
                to,
            })
        }
        _ => None,
    };
    let control_path = cfg.control.socket.clone();
    let control = bind_control(&control_path)?;

    let mut d = Daemon::new(
        new_node(cfg.core(), keys, None)?,
        sync_link(cfg, sockets, group, peers),
        Kernel::new(ct, events_ctl, cfg.sync.tcp_window_tracking),
        cfg.node.clone(),
    );
    d.track_file = cfg.keepalived.as_ref().and_then(|k| k.track_file.clone());
    d.stale_file = stale_file(cfg);
    d.runtime = Some(super::last_role::runtime_dir());
    if let Some(c) = &cfg.conntrackd {
        d.conntrackd = Some(super::conntrackd::Endpoint::open(
            c,
            netns.as_ref(),
            cfg.core_filter(),
            cfg.sync.mode,
            Instant::now(),
        )?);
        let how = match c.transport() {
            Some(crate::config::ConntrackdTransport::Udp { local, peer }) => format!(
                "with {peer} from {local}: UNAUTHENTICATED (anyone who can send from {}'s address to {local} can change this node's conntrack table)",
                peer.ip()
            ),
            Some(crate::config::ConntrackdTransport::Multicast { group, peer }) => format!(
                "on the multicast group {group} on {}{}: UNAUTHENTICATED (anyone who can send to the group{} can change this node's conntrack table)",
                c.interface,
                peer.map_or(String::new(), |p| format!(", taking only {p}'s datagrams")),
                peer.map_or(String::new(), |p| format!(" from {p}'s address")),
            ),
            None => String::new(),
        };
        let more = match c.extra_links.len() {
            0 => String::new(),
            n => format!(" (and on {n} more links, the same way)"),
        };
        log(
            "warn",
            format!(
                "[conntrackd] speaking conntrackd's FTFW dialect {how}{more}; keep it on a dedicated link"
            ),
        );
    }
    let (waiting, fifo) = follow_keepalived(cfg)?;
    let (role, source) = first_role(cfg, waiting, &super::last_role::runtime_dir());
    if waiting.is_some() {
        d.remember_role(role);
    }
    // The kernel table is read once at start: becoming primary reads it anyway (and
    // sends it to the peers), so only the other roles ask for it here. Reading 200,000
    // entries twice cost a starting primary a third of a second of CPU.
    if role != Role::Primary {
        d.kernel.carry_out(KernelOp::Dump, &mut d.node, &mut d.link);
    }
    d.node.set_role(Instant::now(), role);
    d.flush();
    // Only now: a primary restarted under keepalived is ready at once, and keepalived
    // must never read "not ready" from a node that is serving.
    d.write_track();
    log("info", format!("role {role} from {source}"));
    log(
        "info",
        format!(
            "{} up: node id {:#x}, sync {local}{}, {} peers, {:?}, event buffer {granted} bytes, sync buffer {sync_buffer} bytes, {} flows",
            cfg.node,
            node_id(&local),
            cfg.sync.links()[1..]
                .iter()
                .map(|l| format!(" then {} ({})", l.local, l.interface))
                .chain(cfg.sync.group.map(|g| format!(", group {g}")))
                .collect::<String>(),
            d.link.peer_count(),
            role,
            d.node.internal().len()
        ),
    );

    let metrics = match &cfg.metrics {
        Some(m) => Some(
            TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("[metrics] listen {}: cannot bind", m.listen))?,
        ),
        None => None,
    };
    if let Some(m) = &cfg.metrics {
        log("info", format!("metrics at http://{}/metrics", m.listen));
    }
    let sources = Sources {
        events,
        own_port,
        control: Some(control),
        control_path: Some(control_path),
        fifo,
        metrics,
    };
    Ok((d, sources))
}

/// Flows a namespace's tables are sized for at first: none (they grow as needed, by a
/// quarter while small). A router holds tens to thousands; a table's entries are spread
/// over all its buckets, so a table sized for 256 had every page of its 64 KiB touched by
/// 100 flows (50 routers of 100 flows: 13.6 MiB resident against 11.2 MiB sized for 16),
/// and a table that stays empty (a backup router's own) allocates nothing.
const NAMESPACE_EXPECTED_FLOWS: usize = 0;

/// The core's configuration for a namespace's node: the file's, with tables sized for a
/// router.
pub(super) fn namespace_core(cfg: &Config) -> ctsync_core::Config {
    let mut core = cfg.core();
    core.expected_flows = NAMESPACE_EXPECTED_FLOWS;
    // The daemon's host link keeps the peers up (docs/PROTOCOL.md §14.4): a router's
    // node sends an ALIVE of its own only after this long with nothing else to send
    // (its digests go every `digest_secs` anyway).
    core.keepalive_interval = NAMESPACE_KEEPALIVE.max(core.alive_interval);
    // And an idle router's digest, unchanged, goes once a minute (12 × 5 s by default),
    // not at every interval.
    core.digest_unchanged_every = NAMESPACE_DIGEST_UNCHANGED_EVERY;
    core
}

/// A router's unchanged digest goes every this many digest intervals (see
/// [`namespace_core`]).
const NAMESPACE_DIGEST_UNCHANGED_EVERY: u32 = 12;

/// How often a namespace's node sends a keepalive of its own to a peer it has sent
/// nothing else to (see [`namespace_core`]).
const NAMESPACE_KEEPALIVE: Duration = Duration::from_secs(30);

/// A namespace's kernel sockets: its event subscription and its request socket.
pub(super) struct NamespaceSockets {
    events: AsyncFd<EventSocket>,
    events_ctl: OwnedFd,
    ct: Conntrack,
}

/// Open namespace `name`'s kernel sockets. Each is made by a thread that enters the
/// namespace, which takes milliseconds: the daemon of namespaces calls this off its
/// thread (`spawn_blocking`), so that hundreds of routers appearing at once do not hold
/// up the others' loops.
pub(super) fn open_namespace(name: &str) -> Result<NamespaceSockets> {
    let netns = Netns::named(name).with_context(|| format!("network namespace {name:?}"))?;
    let (events, events_ctl, _granted) = subscribe(Some(&netns))?;
    let ct = Conntrack::open_in(&netns).context("ctnetlink request socket")?;
    Ok(NamespaceSockets {
        events,
        events_ctl,
        ct,
    })
}

/// One replicated namespace (`[namespaces]`): its node with the namespace's keys and
/// `epoch`, its kernel sockets opened inside it, its sync links `ports` on the daemon's
/// shared sockets (one a link) to `peers` (each with its address on every link), and its
/// port on the daemon's multicast group socket if `[sync] group` is set; started
/// in `role` (its state file's) and carried out. The loop's sources: its kernel events
/// only (its control calls and roles come from the daemon).
#[allow(clippy::too_many_arguments)] // one namespace's every part, handed over once
pub(super) fn start_namespace(
    cfg: &Config,
    name: &str,
    sockets: NamespaceSockets,
    ports: Vec<(super::link::Sock, String)>,
    group: Option<GroupSocket>,
    peers: BTreeMap<NodeId, Vec<SocketAddr>>,
    keys: (ClusterSecret, Vec<ClusterSecret>),
    epoch: u64,
    role: Role,
    host_heard: super::HostHeard,
) -> Result<(Daemon, Sources)> {
    let NamespaceSockets {
        mut events,
        events_ctl,
        ct,
    } = sockets;
    let own_port = ct.portid();
    let _ = events.get_mut().ignore_port(own_port);
    let mut d = Daemon::new(
        new_node(namespace_core(cfg), keys, Some(epoch))?,
        sync_link(cfg, ports, group, peers),
        Kernel::new(ct, events_ctl, cfg.sync.tcp_window_tracking),
        name.to_string(),
    );
    d.host_heard = Some(host_heard);
    if let Some((ns, id)) = cfg
        .namespaces
        .as_ref()
        .and_then(|ns| Some((ns, ns.id_of(name)?)))
    {
        d.track_file = ns.track_file(id);
        d.stale_file = ns.stale_file(id);
        let files = d
            .track_file
            .iter()
            .chain(d.stale_file.iter().map(|(f, _)| f));
        for dir in files.filter_map(|f| f.parent()) {
            if let Err(e) = std::fs::create_dir_all(dir) {
                log("warn", format!("creating {}: {e}", dir.display()));
            }
        }
    }
    if role != Role::Primary {
        d.kernel.carry_out(KernelOp::Dump, &mut d.node, &mut d.link);
    }
    d.node.set_role(Instant::now(), role);
    d.flush();
    // As a daemon of one table: only now, so that keepalived never reads "not ready" of
    // a router that is serving.
    d.write_track();
    log(
        "info",
        format!("up: role {role}, {} own flows", d.node.internal().len()),
    );
    let sources = Sources {
        events,
        own_port,
        control: None,
        control_path: None,
        fifo: None,
        metrics: None,
    };
    Ok((d, sources))
}

impl Daemon {
    /// A daemon around `node`, `link` and `kernel`, with nothing of keepalived, no
    /// runtime directory and every counter at zero: the caller sets what it has.
    fn new(node: Node, link: SyncLink, kernel: Kernel, name: String) -> Daemon {
        Daemon {
            node,
            link,
            kernel,
            name,
            track_file: None,
            stale_file: None,
            written: (None, None),
            stale_checked: None,
            last_takeover: None,
            control_refused: 0,
            event_budget_hits: 0,
            metrics_gate: crate::metrics::Gate::default(),
            runtime: None,
            no_room_said: false,
            missed_at_takeover: (0, Vec::new()),
            conntrackd: None,
            host_heard: None,
            host_word: Vec::new(),
        }
    }
}

/// The sync links over `sockets` (and `group`) to `peers`, with the file's alive and dead
/// intervals.
pub(super) fn sync_link(
    cfg: &Config,
    sockets: Vec<(super::link::Sock, String)>,
    group: Option<GroupSocket>,
    peers: BTreeMap<NodeId, Vec<SocketAddr>>,
) -> SyncLink {
    SyncLink::new(
        sockets,
        group,
        peers,
        Duration::from_millis(cfg.timers.alive_ms),
        Duration::from_millis(cfg.timers.dead_ms),
        Instant::now(),
    )
}

/// `[keepalived] stale_file` with its `stale_after_secs`.
pub(super) fn stale_file(cfg: &Config) -> Option<(PathBuf, Duration)> {
    let k = cfg.keepalived.as_ref()?;
    Some((
        k.stale_file.clone()?,
        Duration::from_secs(k.stale_after_secs?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_take_their_interfaces_index() {
        let link = |local: &str, peer: &str| crate::config::Link {
            interface: "lo".to_string(),
            local: local.parse().unwrap(),
            peers: vec![peer.parse().unwrap()],
        };
        let mut links = vec![
            link("[fe80::1]:3780", "[fe80::2]:3780"),
            link("198.18.0.1:3780", "198.18.0.2:3780"),
            link("[fe80::1%9]:3780", "[2001:db8::2]:3780"),
        ];
        scope_link_local(&mut links, None).unwrap();
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert!(lo > 0);
        assert_eq!(links[0].local.to_string(), format!("[fe80::1%{lo}]:3780"));
        assert_eq!(
            links[0].peers[0].to_string(),
            format!("[fe80::2%{lo}]:3780")
        );
        assert_eq!(links[1].local.to_string(), "198.18.0.1:3780");
        assert_eq!(
            links[2].local.to_string(),
            "[fe80::1%9]:3780",
            "a written index stays"
        );
        assert_eq!(links[2].peers[0].to_string(), "[2001:db8::2]:3780");
        let mut gone = vec![crate::config::Link {
            interface: "ctsync-no-such-if".to_string(),
            ..link("[fe80::1]:3780", "[fe80::2]:3780")
        }];
        assert!(scope_link_local(&mut gone, None).is_err());
    }
}
