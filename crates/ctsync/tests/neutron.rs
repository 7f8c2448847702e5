//! A Neutron network node's shape (issue 19), end to end with real keepalived and
//! nftables (`ctsync_lab::routers`): two hosts, 20 virtual routers with a replica on
//! each (every router the same addresses, as tenants' overlap), each with its own
//! keepalived instance per replica on its own HA link, SNAT of its client and a DNAT'd
//! floating IP in front of it; one ctsync per host replicates all 20 routers' namespaces
//! (`[namespaces]`, roles from keepalived's state files as Neutron writes them).
//!
//! Sessions run through every router, both ways. One router fails over alone (its
//! keepalived on host A killed, its links down): its sessions go on through host B, and
//! the other 19 routers stay primary on host A with their sessions untouched. Then host
//! A fails whole: every session of all 20 routers goes on through host B. The control,
//! the same lab without ctsync, loses the failed router's sessions.
//!
//! One scenario at a time (a lock): 40 keepalived instances and 240 sessions on a small
//! machine are enough.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ctsync_lab::routers::{self, Lab, Options, RouterSessions};
use ctsync_lab::traffic::Report;
use support::{PATIENCE, root};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Routers in the lab.
const ROUTERS: usize = 20;
/// Per router and way: TCP connections and UDP flows.
const TCP: usize = 2;
const UDP: usize = 1;
/// The router that fails over alone (its id is one more).
const ALONE: usize = 6;
/// Host A and host B.
const A: usize = 0;
const B: usize = 1;
/// Traffic runs this long after a failure before the sessions are judged (long enough
/// for TCP's retransmissions to find out: a dropped segment is sent again after 0.2,
/// 0.6, 1.4, 3 s …).
const AFTER: Duration = Duration::from_secs(6);

/// A lab with sessions through every router, host A primary of all.
struct Neutron {
    // Dropped first: the sessions, then the lab.
    sessions: Vec<RouterSessions>,
    lab: Lab,
}

impl Neutron {
    fn up(tag: &str, with_ctsync: bool) -> Neutron {
        let bin = with_ctsync.then(|| PathBuf::from(env!("CARGO_BIN_EXE_ctsync")));
        let t = Instant::now();
        let mut lab = Lab::build(Options::new(tag, bin, ROUTERS)).unwrap();
        eprintln!("{tag}: built in {:?}", t.elapsed());
        lab.bring_up().unwrap();
        eprintln!("{tag}: up in {:?}", t.elapsed());
        let sessions = routers::open_all(&lab, TCP, UDP).unwrap();
        let n = Neutron { sessions, lab };
        std::thread::sleep(Duration::from_secs(2));
        n.assert_kept(
            "before anything fails",
            0..ROUTERS,
            Instant::now() - Duration::from_secs(1),
        );
        if with_ctsync {
            for (r, s) in n.sessions.iter().enumerate() {
                n.lab.wait_replicated(B, r, s.len()).unwrap();
            }
            n.lab.wait_ready(B).unwrap();
        }
        eprintln!(
            "{tag}: sessions running and replicated in {:?}",
            t.elapsed()
        );
        n
    }

    fn assert_kept(&self, what: &str, routers: impl IntoIterator<Item = usize>, since: Instant) {
        let routers: Vec<usize> = routers.into_iter().collect();
        let all = Report::combined(
            routers
                .iter()
                .map(|&r| self.sessions[r].report(since, PATIENCE)),
        );
        eprintln!("{what}: {all:?}");
        for r in routers {
            if let Err(e) = self.sessions[r].kept(since, PATIENCE) {
                panic!(
                    "{what}: router {}'s sessions were not all kept: {e}\n{}",
                    self.lab.routers[r].id,
                    self.lab.logs()
                );
            }
        }
    }

    /// Let traffic run until `AFTER` past `t0`.
    fn settle(t0: Instant) {
        std::thread::sleep((t0 + AFTER).saturating_duration_since(Instant::now()));
    }
}

fn others() -> impl Iterator<Item = usize> {
    (0..ROUTERS).filter(|&r| r != ALONE)
}

/// 20 routers. Router 7 fails on host A alone: host B takes it over with every session
/// (out through SNAT and in through the floating IP), and ctsync B makes its namespace
/// primary; the other 19 stay primary on host A, in keepalived and in ctsync A, with
/// every session. Then host A fails whole (every keepalived killed, every link down,
/// ctsync A killed): host B takes over all 20 routers with every session.
#[test]
fn twenty_routers_keep_every_session_through_one_router_failover_then_a_host_failover() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut n = Neutron::up("neu", true);
    let start = Instant::now();

    let t1 = Instant::now();
    n.lab.fail_router(A, ALONE).unwrap();
    let took = n
        .lab
        .wait_master(B, ALONE, Duration::from_secs(10))
        .unwrap();
    eprintln!(
        "router {} failed on host A: host B master after {took:?}",
        ALONE + 1
    );
    Neutron::settle(t1);
    n.assert_kept("one router failed over", [ALONE], t1);
    assert!(
        n.lab.role_is(B, ALONE, "primary"),
        "ctsync B must make the router's namespace primary: {:?}\n{}",
        n.lab.namespace(B, ALONE),
        n.lab.logs()
    );
    for r in others() {
        assert!(
            n.lab.is_master(A, r) && !n.lab.has_any_vip(B, r),
            "router {} must stay on host A\n{}",
            r + 1,
            n.lab.logs()
        );
        assert!(
            n.lab.role_is(A, r, "primary") && n.lab.role_is(B, r, "backup"),
            "router {}: ctsync A {:?}, ctsync B {:?}",
            r + 1,
            n.lab.namespace(A, r),
            n.lab.namespace(B, r)
        );
    }
    n.assert_kept("the other routers, untouched", others(), t1);

    let t2 = Instant::now();
    n.lab.fail_host(A).unwrap();
    let took = n.lab.wait_all_master(B, Duration::from_secs(15)).unwrap();
    eprintln!("host A failed: host B master of all {ROUTERS} routers after {took:?}");
    Neutron::settle(t2);
    n.assert_kept("host A failed", 0..ROUTERS, t2);
    assert!(
        n.lab.all_in_role(B, "primary"),
        "ctsync B must make every router primary: {:?}",
        n.lab.status(B)
    );
    eprintln!("failovers and checks took {:?}", start.elapsed());
}

/// The control: the same 20 routers without ctsync. When router 7 fails over alone its
/// TCP connections die both ways (host B never saw them; with tcp_loose=0 it drops
/// them) and its outbound UDP flows get new SNAT ports; the other routers' sessions do
/// not notice.
#[test]
fn control_twenty_routers_without_ctsync_lose_the_failed_routers_sessions() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut n = Neutron::up("neuctl", false);
    let t1 = Instant::now();
    n.lab.fail_router(A, ALONE).unwrap();
    n.lab
        .wait_master(B, ALONE, Duration::from_secs(10))
        .unwrap();
    Neutron::settle(t1);
    let s = &n.sessions[ALONE];
    for (way, sessions) in [("out", &s.out), ("in", &s.inbound)] {
        let r = sessions.report(t1, PATIENCE);
        eprintln!("control, router {} {way}: {r:?}", ALONE + 1);
        assert!(
            r.tcp_alive * 10 <= r.tcp,
            "control: without ctsync the failed router's TCP connections ({way}) must die, yet {r:?}"
        );
    }
    assert_eq!(
        s.udp_changed(),
        UDP,
        "control: the failed router's outbound UDP flows must get new ports"
    );
    n.assert_kept("control: the other routers", others(), t1);
}
