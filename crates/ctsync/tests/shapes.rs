//! Cluster shapes beyond two firewalls and IPv4 SNAT, end to end with real keepalived and
//! nftables (`ctsync_lab::cluster`): three firewalls in one VRRP group (priorities 150,
//! 100, 50), and through them at once IPv4 sessions with random-port SNAT, IPv6 sessions
//! with random-port SNAT (2001:db8::/32), and connections *in* from the WAN side to a
//! DNAT'd port of the WAN virtual address (Neutron's floating IP). The primary fails
//! hard, then the second, then both come back and the first takes over again: every
//! session lives through all of it. The control, the same lab without ctsync, loses
//! them at the first failure.
//!
//! One scenario at a time (a lock): three keepalived instances with 100 ms adverts and
//! dozens of sessions on a small machine are enough.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ctsync_lab::cluster::{
    CLIENT, DNAT_TCP_PORT, DNAT_UDP_PORT, Lab, Options, SERVER, SERVER6, TCP_PORT, UDP_PORT,
    WAN_VIP,
};
use ctsync_lab::traffic::{EchoServer, Report, Sessions};
use support::root;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A session that waited longer than this for an echo counts as lost.
const PATIENCE: Duration = Duration::from_secs(3);

/// One kind of session: where from, where to, and what the servers saw.
struct Kind {
    name: &'static str,
    sessions: Vec<Sessions>,
    // Dropped after the sessions.
    server: EchoServer,
}

/// A three-firewall lab with IPv4, IPv6 and DNAT sessions running.
struct Shapes {
    kinds: Vec<Kind>,
    lab: Lab,
}

impl Shapes {
    fn up(tag: &str, with_ctsync: bool, group: bool, tcp: usize, udp: usize) -> Shapes {
        let bin = with_ctsync.then(|| PathBuf::from(env!("CARGO_BIN_EXE_ctsync")));
        let mut opts = Options::new(tag, bin);
        opts.firewalls = 3;
        opts.group = group;
        let mut lab = Lab::build(opts).unwrap();
        let v4 = EchoServer::start_at(&lab.server, SERVER.parse().unwrap()).unwrap();
        let v6 = EchoServer::start_at(&lab.server, SERVER6.parse().unwrap()).unwrap();
        let inside = EchoServer::start_at(&lab.client, CLIENT.parse().unwrap()).unwrap();
        lab.bring_up().unwrap();
        let mut s = Shapes {
            kinds: vec![
                Kind {
                    name: "IPv4 SNAT",
                    sessions: Vec::new(),
                    server: v4,
                },
                Kind {
                    name: "IPv6 SNAT",
                    sessions: Vec::new(),
                    server: v6,
                },
                Kind {
                    name: "DNAT (floating IP)",
                    sessions: Vec::new(),
                    server: inside,
                },
            ],
            lab,
        };
        s.open(tcp, udp);
        std::thread::sleep(Duration::from_secs(2));
        s.assert_all_alive(
            "before anything fails",
            Instant::now() - Duration::from_secs(1),
        );
        s
    }

    /// Open `tcp` connections and `udp` flows of every kind.
    fn open(&mut self, tcp: usize, udp: usize) {
        let v4: IpAddr = SERVER.parse().unwrap();
        let v6: IpAddr = SERVER6.parse().unwrap();
        let vip: IpAddr = WAN_VIP.parse().unwrap();
        let targets = [
            (
                self.lab.client.clone(),
                SocketAddr::new(v4, TCP_PORT),
                SocketAddr::new(v4, UDP_PORT),
            ),
            (
                self.lab.client.clone(),
                SocketAddr::new(v6, TCP_PORT),
                SocketAddr::new(v6, UDP_PORT),
            ),
            (
                self.lab.server.clone(),
                SocketAddr::new(vip, DNAT_TCP_PORT),
                SocketAddr::new(vip, DNAT_UDP_PORT),
            ),
        ];
        for (k, (ns, t, u)) in self.kinds.iter_mut().zip(targets) {
            let first = k.sessions.len() as u32 * 1000;
            let s = Sessions::open_to(&ns, (t, u), tcp, udp, first)
                .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", k.name, self.lab.logs()));
            k.sessions.push(s);
        }
    }

    fn total(&self) -> usize {
        self.kinds
            .iter()
            .flat_map(|k| &k.sessions)
            .map(|s| s.tcp.len() + s.udp.len())
            .sum()
    }

    /// Per kind: the sessions' report since `since`.
    fn reports(&self, since: Instant) -> Vec<(&'static str, Report)> {
        self.kinds
            .iter()
            .flat_map(|k| {
                k.sessions
                    .iter()
                    .map(|s| (k.name, s.report(since, PATIENCE)))
            })
            .collect()
    }

    fn assert_all_alive(&self, what: &str, since: Instant) {
        for (name, r) in self.reports(since) {
            assert!(
                r.tcp_alive == r.tcp && r.udp_alive == r.udp && r.tcp_failed == 0,
                "{what}: {name} sessions lost: {r:?}\n{}",
                self.lab.logs()
            );
        }
        for k in &self.kinds {
            assert_eq!(
                k.server.stats.resets.load(Ordering::SeqCst),
                0,
                "{what}: {} connections reset at the server",
                k.name
            );
            assert_eq!(
                k.server.stats.udp_changed(),
                0,
                "{what}: a {} UDP flow's source changed",
                k.name
            );
        }
    }

    /// Firewall `i` fails hard; firewall `next` must become master. Traffic runs `secs`
    /// from the failure.
    fn fail(&mut self, i: usize, next: usize, secs: u64) -> Instant {
        let t0 = Instant::now();
        self.lab.fail_hard(i).unwrap();
        let took = self.lab.wait_master(next, Duration::from_secs(10)).unwrap();
        eprintln!("fw{} failed: fw{} master after {took:?}", i + 1, next + 1);
        std::thread::sleep(
            (t0 + Duration::from_secs(secs)).saturating_duration_since(Instant::now()),
        );
        t0
    }
}

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Three firewalls; IPv4 and IPv6 sessions out through SNAT and connections in through
/// a DNAT'd port. fw1 fails hard: fw2 takes over with every session; new sessions open
/// through fw2; fw2 fails hard: fw3 takes over with every session, the new ones too;
/// fw1 and fw2 come back, and fw1 (the highest priority) takes over again once it is
/// ready, with every session.
fn three_firewalls_through_two_failures_and_failback(tag: &str, group: bool) {
    let mut s = Shapes::up(tag, true, group, 8, 4);
    let n = s.total();
    for i in [1, 2] {
        s.lab.wait_replicated(i, n).unwrap();
        s.lab.wait_ready(i).unwrap();
    }

    let t1 = s.fail(0, 1, 5);
    s.assert_all_alive("fw1 failed, fw2 took over", t1);

    // Sessions opened through the new primary, which fw3 must learn from fw2.
    s.open(4, 2);
    let n = s.total();
    s.lab.wait_replicated(2, n).unwrap();
    s.lab.wait_ready(2).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let t2 = s.fail(1, 2, 5);
    s.assert_all_alive("fw2 failed too, fw3 took over", t2);

    // Both come back; fw1 waits until it is ready, then takes over (priority 150).
    s.lab.restore(1).unwrap();
    s.lab.restore(0).unwrap();
    let t3 = Instant::now();
    s.lab.wait_master(0, Duration::from_secs(30)).unwrap();
    std::thread::sleep((t3 + Duration::from_secs(6)).saturating_duration_since(Instant::now()));
    s.assert_all_alive("fw1 and fw2 back, fw1 master again", t3);
    assert!(!s.lab.has_any_vip(1) && !s.lab.has_any_vip(2));
    if group {
        let st = s.lab.status(0).unwrap();
        assert!(
            st["stats"]["group_datagrams_sent"].as_u64() > Some(0),
            "fw1 replicates over the group: {st}"
        );
    }
}

/// Three firewalls, each ctsync sending to each peer's address.
#[test]
fn three_firewalls_keep_ipv4_ipv6_and_dnat_sessions_through_two_failures_and_failback() {
    if !root() {
        return;
    }
    let _one = serial();
    three_firewalls_through_two_failures_and_failback("three", false);
}

/// The same over the multicast group 239.255.18.1 on the sync bridge (TTL 1): one
/// datagram reaches both backups.
#[test]
fn three_firewalls_on_a_multicast_group_keep_every_session_through_two_failures() {
    if !root() {
        return;
    }
    let _one = serial();
    three_firewalls_through_two_failures_and_failback("threegrp", true);
}

/// The control: the same three firewalls without ctsync. At fw1's failure the TCP
/// connections of every kind die (the new primary never saw them; with tcp_loose=0 it
/// drops them), and the IPv4 and IPv6 UDP flows get new SNAT ports.
#[test]
fn control_three_firewalls_without_ctsync_lose_the_sessions() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut s = Shapes::up("threectl", false, false, 8, 4);
    let t1 = s.fail(0, 1, 5);
    for (name, r) in s.reports(t1) {
        eprintln!("control {name}: {r:?}");
        assert!(
            r.tcp_alive * 10 <= r.tcp,
            "control: without ctsync at least 90% of the {name} TCP connections must die, yet {r:?}"
        );
    }
    for k in &s.kinds[..2] {
        assert!(
            k.server.stats.udp_changed() * 10 >= 9 * 4,
            "control: {} UDP flows must get new ports, yet {} of 4 did",
            k.name,
            k.server.stats.udp_changed()
        );
    }
}
