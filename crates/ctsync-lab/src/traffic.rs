//! Sessions through the lab: long-lived TCP connections and UDP flows from the client
//! to an echo server, each sending a numbered message every 100 ms and checking every
//! echo. The server notes resets and, per UDP flow, whether its (SNATed) source port
//! ever changed.
//!
//! Sockets are created on a thread that has joined the client's or server's namespace
//! ([`ctnetlink::Netns::run`]) and used from ordinary threads afterwards. Every thread
//! stops when the [`Sessions`] or [`EchoServer`] is dropped.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ctnetlink::Netns;

use crate::cluster::{SERVER, TCP_PORT, UDP_PORT};

/// Every session sends this often.
pub const INTERVAL: Duration = Duration::from_millis(100);
const MSG: usize = 16;
const MAGIC: u32 = 0xC75C_0DE5;
/// No thread runs longer than this, whatever happens to its owner.
const LIFETIME: Duration = Duration::from_secs(900);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn encode(id: u32, seq: u64) -> [u8; MSG] {
    let mut b = [0u8; MSG];
    b[..4].copy_from_slice(&id.to_be_bytes());
    b[4..12].copy_from_slice(&seq.to_be_bytes());
    b[12..].copy_from_slice(&MAGIC.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<(u32, u64)> {
    let id = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(b.get(4..12)?.try_into().ok()?);
    let magic = u32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
    (magic == MAGIC).then_some((id, seq))
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// TCP connections that ended by a reset.
    pub resets: AtomicU64,
    /// UDP flow id → first source address, and the address it changed to, if it did.
    pub udp_sources: Mutex<HashMap<u32, (SocketAddr, Option<SocketAddr>)>>,
}

impl ServerStats {
    /// UDP flows whose source address changed.
    pub fn udp_changed(&self) -> usize {
        lock(&self.udp_sources)
            .values()
            .filter(|(_, c)| c.is_some())
            .count()
    }
}

/// A TCP and UDP echo server in the server's namespace.
#[derive(Debug)]
pub struct EchoServer {
    /// What it saw.
    pub stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Listen on [`SERVER`]:[`TCP_PORT`] and :[`UDP_PORT`] in namespace `ns`.
    pub fn start(ns: &str) -> Result<EchoServer> {
        EchoServer::start_at(ns, SERVER.parse()?)
    }

    /// Listen on `ip`, ports [`TCP_PORT`] and [`UDP_PORT`], in namespace `ns`.
    pub fn start_at(ns: &str, ip: IpAddr) -> Result<EchoServer> {
        let netns = Netns::named(ns)?;
        let tcp_addr = SocketAddr::new(ip, TCP_PORT);
        let udp_addr = SocketAddr::new(ip, UDP_PORT);
        let (listener, udp) = netns
            .run(|| Ok((TcpListener::bind(tcp_addr)?, UdpSocket::bind(udp_addr)?)))
            .context("echo server sockets")?;
        listener.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stats = Arc::new(ServerStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (stats, stop) = (stats.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                accept_loop(&listener, &stats, &stop)
            }));
        }
        {
            let (stats, stop) = (stats.clone(), stop.clone());
            threads.push(std::thread::spawn(move || udp_echo(&udp, &stats, &stop)));
        }
        Ok(EchoServer {
            stats,
            stop,
            threads,
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stats: &Arc<ServerStats>, stop: &Arc<AtomicBool>) {
    let start = Instant::now();
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME {
        match listener.accept() {
            Ok((s, _)) => {
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                let (stats, stop) = (stats.clone(), stop.clone());
                conns.push(std::thread::spawn(move || tcp_echo(s, &stats, &stop)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn tcp_echo(mut s: TcpStream, stats: &ServerStats, stop: &AtomicBool) {
    let start = Instant::now();
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]) {
                    if e.kind() == ErrorKind::ConnectionReset || e.kind() == ErrorKind::BrokenPipe {
                        stats.resets.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                if e.kind() == ErrorKind::ConnectionReset {
                    stats.resets.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

fn udp_echo(udp: &UdpSocket, stats: &ServerStats, stop: &AtomicBool) {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let Some((id, _)) = decode(&buf[..n]) else {
            continue;
        };
        {
            let mut seen = lock(&stats.udp_sources);
            let e = seen.entry(id).or_insert((from, None));
            if e.0 != from && e.1.is_none() {
                e.1 = Some(from);
            }
        }
        let _ = udp.send_to(&buf[..n], from);
    }
}

/// One session's health, updated by its thread.
#[derive(Debug)]
pub struct SessionStat {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Echoes received (in order, for TCP).
    pub echoed: AtomicU64,
    /// The longest wait for an echo, in microseconds.
    pub max_stall_us: AtomicU64,
    inner: Mutex<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    /// When the newest echoed message was sent.
    last_echoed_sent: Option<Instant>,
    /// When the oldest message still waiting for its echo was sent.
    oldest_pending: Option<Instant>,
    /// Why it ended, if it did.
    error: Option<String>,
}

impl SessionStat {
    fn new() -> SessionStat {
        SessionStat {
            sent: AtomicU64::new(0),
            echoed: AtomicU64::new(0),
            max_stall_us: AtomicU64::new(0),
            inner: Mutex::new(SessionInner {
                last_echoed_sent: None,
                oldest_pending: None,
                error: None,
            }),
        }
    }

    fn echo(&self, sent_at: Instant, now: Instant, oldest_pending: Option<Instant>) {
        self.echoed.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from((now - sent_at).as_micros()).unwrap_or(u64::MAX);
        self.max_stall_us.fetch_max(us, Ordering::Relaxed);
        let mut i = lock(&self.inner);
        i.last_echoed_sent = Some(i.last_echoed_sent.map_or(sent_at, |t| t.max(sent_at)));
        i.oldest_pending = oldest_pending;
    }

    fn fail(&self, why: String) {
        let mut i = lock(&self.inner);
        if i.error.is_none() {
            i.error = Some(why);
        }
    }

    /// Why the session ended, if it did.
    pub fn error(&self) -> Option<String> {
        lock(&self.inner).error.clone()
    }

    /// Alive: not ended, a message sent after `since` was echoed, and nothing has waited
    /// for its echo longer than `patience`.
    pub fn alive(&self, since: Instant, patience: Duration) -> bool {
        let i = lock(&self.inner);
        i.error.is_none()
            && i.last_echoed_sent.is_some_and(|t| t > since)
            && i.oldest_pending.is_none_or(|t| t.elapsed() < patience)
    }

    /// The longest wait for an echo so far, counting one still waiting.
    pub fn stall(&self) -> Duration {
        let done = Duration::from_micros(self.max_stall_us.load(Ordering::Relaxed));
        let waiting = lock(&self.inner)
            .oldest_pending
            .map_or(Duration::ZERO, |t| t.elapsed());
        done.max(waiting)
    }
}

/// The client's sessions.
#[derive(Debug)]
pub struct Sessions {
    /// TCP connections.
    pub tcp: Vec<Arc<SessionStat>>,
    /// UDP flows.
    pub udp: Vec<Arc<SessionStat>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// A summary at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// TCP connections opened.
    pub tcp: usize,
    /// Still echoing.
    pub tcp_alive: usize,
    /// Ended by an error (reset, closed).
    pub tcp_failed: usize,
    /// UDP flows.
    pub udp: usize,
    /// Still echoing.
    pub udp_alive: usize,
    /// The longest wait for an echo, any session.
    pub max_stall: Duration,
}

impl Report {
    /// Several reports as one: the sessions of all, the longest stall of any.
    pub fn combined(reports: impl IntoIterator<Item = Report>) -> Report {
        let mut all = Report {
            tcp: 0,
            tcp_alive: 0,
            tcp_failed: 0,
            udp: 0,
            udp_alive: 0,
            max_stall: Duration::ZERO,
        };
        for r in reports {
            all.tcp += r.tcp;
            all.tcp_alive += r.tcp_alive;
            all.tcp_failed += r.tcp_failed;
            all.udp += r.udp;
            all.udp_alive += r.udp_alive;
            all.max_stall = all.max_stall.max(r.max_stall);
        }
        all
    }
}

impl Sessions {
    /// Open `tcp` connections and `udp` flows from namespace `ns` to the server.
    pub fn open(ns: &str, tcp: usize, udp: usize) -> Result<Sessions> {
        let ip: IpAddr = SERVER.parse()?;
        Sessions::open_to(
            ns,
            (SocketAddr::new(ip, TCP_PORT), SocketAddr::new(ip, UDP_PORT)),
            tcp,
            udp,
            0,
        )
    }

    /// Open `tcp` connections to `to.0` and `udp` flows to `to.1` from namespace `ns`
    /// (another address family, or through a DNAT'd address), numbered from `first` (the
    /// server tells flows apart by their numbers: a second batch to the same server
    /// starts after the first).
    pub fn open_to(
        ns: &str,
        to: (SocketAddr, SocketAddr),
        tcp: usize,
        udp: usize,
        first: u32,
    ) -> Result<Sessions> {
        let (tcp_addr, udp_addr) = to;
        let netns = Netns::named(ns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = Sessions {
            tcp: Vec::new(),
            udp: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for id in 0..tcp {
            let stream = netns
                .run(|| TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(5)))
                .with_context(|| format!("TCP connection {id} to {tcp_addr}"))?;
            stream.set_nodelay(true)?;
            let stat = Arc::new(SessionStat::new());
            s.tcp.push(stat.clone());
            let stop = stop.clone();
            let id = first + u32::try_from(id)?;
            s.threads.push(std::thread::spawn(move || {
                tcp_client(stream, id, &stat, &stop)
            }));
        }
        let mut socks = Vec::new();
        for id in 0..udp {
            let sock = netns
                .run(|| {
                    let any: SocketAddr = if udp_addr.is_ipv6() {
                        "[::]:0".parse().map_err(std::io::Error::other)?
                    } else {
                        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
                    };
                    let u = UdpSocket::bind(any)?;
                    u.connect(udp_addr)?;
                    Ok(u)
                })
                .with_context(|| format!("UDP flow {id}"))?;
            sock.set_nonblocking(true)?;
            let stat = Arc::new(SessionStat::new());
            s.udp.push(stat.clone());
            socks.push((first + u32::try_from(id)?, sock, stat));
        }
        if !socks.is_empty() {
            s.threads
                .push(std::thread::spawn(move || udp_clients(&socks, &stop)));
        }
        Ok(s)
    }

    /// The state now: alive means echoing messages sent after `since`.
    pub fn report(&self, since: Instant, patience: Duration) -> Report {
        let alive = |v: &[Arc<SessionStat>]| v.iter().filter(|s| s.alive(since, patience)).count();
        Report {
            tcp: self.tcp.len(),
            tcp_alive: alive(&self.tcp),
            tcp_failed: self.tcp.iter().filter(|s| s.error().is_some()).count(),
            udp: self.udp.len(),
            udp_alive: alive(&self.udp),
            max_stall: self
                .tcp
                .iter()
                .chain(&self.udp)
                .map(|s| s.stall())
                .max()
                .unwrap_or_default(),
        }
    }

    /// The first few errors, for a failure message.
    pub fn errors(&self) -> Vec<String> {
        self.tcp
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.error().map(|e| format!("tcp {i}: {e}")))
            .take(5)
            .collect()
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_client(mut s: TcpStream, id: u32, stat: &SessionStat, stop: &AtomicBool) {
    let start = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME {
        let now = Instant::now();
        if now >= next {
            if let Err(e) = s.write_all(&encode(id, seq)) {
                stat.fail(format!("write: {e}"));
                return;
            }
            pending.push_back((seq, now));
            stat.sent.fetch_add(1, Ordering::Relaxed);
            seq += 1;
            next += INTERVAL;
            if next < now {
                next = now + INTERVAL;
            }
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = s.set_read_timeout(Some(wait));
        match s.read(&mut chunk) {
            Ok(0) => {
                stat.fail("closed by the server".into());
                return;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let now = Instant::now();
                let whole = buf.len() / MSG * MSG;
                for m in buf[..whole].chunks_exact(MSG) {
                    let expected = pending.pop_front();
                    match (decode(m), expected) {
                        (Some((i, q)), Some((want, sent))) if i == id && q == want => {
                            stat.echo(sent, now, pending.front().map(|p| p.1));
                        }
                        (got, want) => {
                            stat.fail(format!(
                                "echo out of order: got {got:?}, expected {:?}",
                                want.map(|w| w.0)
                            ));
                            return;
                        }
                    }
                }
                buf.drain(..whole);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                stat.fail(format!("read: {e}"));
                return;
            }
        }
        if let Some(&(_, t)) = pending.front() {
            let mut i = lock(&stat.inner);
            i.oldest_pending = Some(t);
        }
    }
}

fn udp_clients(socks: &[(u32, UdpSocket, Arc<SessionStat>)], stop: &AtomicBool) {
    let start = Instant::now();
    let mut seq = 0u64;
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut buf = [0u8; 2048];
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < LIFETIME {
        let now = Instant::now();
        if now >= next {
            for (id, s, stat) in socks {
                // A send may fail while no route exists (no ARP answer): count on.
                let _ = s.send(&encode(*id, seq));
                stat.sent.fetch_add(1, Ordering::Relaxed);
            }
            sent_at.insert(seq, now);
            sent_at.retain(|q, _| q + 600 > seq);
            seq += 1;
            next += INTERVAL;
            if next < now {
                next = now + INTERVAL;
            }
        }
        for (id, s, stat) in socks {
            while let Ok(n) = s.recv(&mut buf) {
                if let Some((i, q)) = decode(&buf[..n])
                    && i == *id
                    && let Some(&t) = sent_at.get(&q)
                {
                    let waiting = lock(&stat.inner).oldest_pending;
                    stat.echo(t, Instant::now(), waiting);
                }
            }
            // Datagrams get lost, not delayed: a session waits from the first message
            // after its newest echo; a wait that ends counts as a stall.
            let mut i = lock(&stat.inner);
            let since = match i.last_echoed_sent {
                Some(last) => sent_at.values().filter(|&&t| t > last).min().copied(),
                None => sent_at.values().min().copied(),
            }
            .filter(|t| t.elapsed() > INTERVAL * 3);
            if let Some(old) = i.oldest_pending
                && since != Some(old)
            {
                let us = u64::try_from(old.elapsed().as_micros()).unwrap_or(u64::MAX);
                stat.max_stall_us.fetch_max(us, Ordering::Relaxed);
            }
            i.oldest_pending = since;
        }
        std::thread::sleep(
            Duration::from_millis(5).min(next.saturating_duration_since(Instant::now())),
        );
    }
}
