//! What the end-to-end lab tests share: a running lab with sessions, and its checks.

#![allow(clippy::panic, clippy::unwrap_used, dead_code, missing_docs)] // test code

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ctsync_lab::cluster::{Lab, Options};
use ctsync_lab::process;
use ctsync_lab::traffic::{EchoServer, Report, Sessions};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Patience: a session that waited longer than this for an echo counts as lost.
pub(crate) const PATIENCE: Duration = Duration::from_secs(3);

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the end-to-end tests need root, and CI must run them"
    );
    eprintln!("\n*** SKIPPED end-to-end test: needs root ***\n");
    false
}

fn bin(with_ctsync: bool) -> Option<PathBuf> {
    with_ctsync.then(|| PathBuf::from(env!("CARGO_BIN_EXE_ctsync")))
}

/// A lab with its server and sessions, up and working, fw1 master and fw2 ready.
pub(crate) struct Running {
    // Dropped in this order: sessions, server, then the lab.
    pub(crate) sessions: Sessions,
    pub(crate) server: EchoServer,
    pub(crate) lab: Lab,
}

impl Running {
    pub(crate) fn up(tag: &str, with_ctsync: bool, tcp: usize, udp: usize) -> Running {
        let r = Running::started(Options::new(tag, bin(with_ctsync)), tcp, udp);
        r.lab.wait_replicated(1, tcp + udp).unwrap();
        r.lab.wait_ready(1).unwrap();
        r
    }

    /// The lab of `opts` up with `tcp` connections and `udp` flows working through it
    /// (nothing waited for on fw2).
    pub(crate) fn started(opts: Options, tcp: usize, udp: usize) -> Running {
        let mut lab = Lab::build(opts).unwrap();
        let server = EchoServer::start(&lab.server).unwrap();
        lab.bring_up().unwrap();
        let sessions = Sessions::open(&lab.client, tcp, udp).unwrap();
        let r = Running {
            sessions,
            server,
            lab,
        };
        std::thread::sleep(Duration::from_secs(2));
        let rep = r.report(Instant::now() - Duration::from_secs(1));
        assert!(
            rep.tcp_alive == tcp && rep.udp_alive == udp,
            "sessions must work before anything fails: {rep:?} {:?}\n{}",
            r.sessions.errors(),
            r.lab.logs()
        );
        r
    }

    pub(crate) fn report(&self, since: Instant) -> Report {
        self.sessions.report(since, PATIENCE)
    }

    /// Let traffic run `secs` after `since`, then report.
    pub(crate) fn after(&self, since: Instant, secs: u64) -> Report {
        let end = since + Duration::from_secs(secs);
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        self.report(since)
    }

    /// fw1 fails hard; wait until fw2 is master and let traffic run `secs` from the
    /// failure. The takeover time and the sessions then.
    pub(crate) fn hard_failover(&mut self, secs: u64) -> (Duration, Report) {
        let t0 = Instant::now();
        self.lab.fail_hard(0).unwrap();
        let takeover = self.lab.wait_master(1, Duration::from_secs(10)).unwrap();
        (takeover, self.after(t0, secs))
    }

    pub(crate) fn resets(&self) -> u64 {
        self.server.stats.resets.load(Ordering::SeqCst)
    }

    pub(crate) fn context(&self) -> String {
        format!(
            "errors {:?}, server resets {}, udp port changes {}\n{}",
            self.sessions.errors(),
            self.resets(),
            self.server.stats.udp_changed(),
            self.lab.logs()
        )
    }

    /// Every session alive, none reset, no UDP source port changed.
    pub(crate) fn assert_all_kept(&self, what: &str, r: &Report) {
        assert!(
            r.tcp_alive == r.tcp && r.udp_alive == r.udp && r.tcp_failed == 0,
            "{what}: sessions lost: {r:?} {}",
            self.context()
        );
        assert_eq!(self.resets(), 0, "{what}: resets at the server");
        assert_eq!(
            self.server.stats.udp_changed(),
            0,
            "{what}: a UDP flow's source port changed {}",
            self.context()
        );
    }
}

pub(crate) fn wait_role(r: &Running, i: usize, role: &str) {
    let ok = process::wait(Duration::from_secs(10), || {
        r.lab.status(i).is_some_and(|s| s["role"] == role)
    })
    .unwrap();
    assert!(
        ok.is_some(),
        "fw{} did not become {role}: {:?}\n{}",
        i + 1,
        r.lab.status(i),
        r.lab.logs()
    );
}

/// The `ctsync` binary under test.
pub(crate) fn ctsync_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ctsync"))
}

/// Poll `cond` every 50 ms for at most `limit`; on timeout panic with `context()`.
pub(crate) fn wait_for(
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not met within {limit:?}\n{}", context());
}

/// Entries in the conntrack table of namespace `ns`.
pub(crate) fn kernel_count(ns: &str) -> usize {
    let mut ct = ctnetlink::Conntrack::open_in(&ctnetlink::Netns::named(ns).unwrap()).unwrap();
    let mut n = 0;
    ct.dump(None, |i| {
        if let ctnetlink::DumpItem::Flow(_) = i {
            n += 1;
        }
    })
    .unwrap();
    n
}

/// How many of `flows` the kernel holds with their own reply tuple (their NAT port).
pub(crate) fn held_with_reply(
    kernel: &mut ctnetlink::Conntrack,
    flows: &[ctnetlink::Flow],
) -> usize {
    flows
        .iter()
        .filter(|f| {
            kernel
                .get(&f.key())
                .ok()
                .flatten()
                .is_some_and(|g| g.reply == f.reply)
        })
        .count()
}

/// A process of the test's own stopped (SIGSTOP) until this is dropped (SIGCONT, also
/// when the test fails): what it would read in many turns waits for it in one.
pub(crate) struct Paused(libc::pid_t);

impl Paused {
    pub(crate) fn stop(pid: u32) -> Paused {
        let pid = libc::pid_t::try_from(pid).unwrap();
        // SAFETY: kill has no memory preconditions; pid is a child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
