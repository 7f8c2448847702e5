//! End to end, as in `ctsync demo`: a client, two firewalls (nftables with SNAT to the
//! virtual address with random ports, `nf_conntrack_tcp_loose=0`, keepalived VRRP with a
//! sync group) and a server, each in its own network namespace (`ctsy-<test>-<pid>-*`).
//! Sessions run through the cluster while firewalls fail. Every scenario also runs as a
//! control, the same lab without ctsync, which must lose the sessions: otherwise the
//! test would prove nothing.
//!
//! The scenarios run one at a time (a lock): each lab runs keepalived with 100 ms
//! adverts and dozens of sessions, and two at once on a small machine would make VRRP
//! flap for reasons that have nothing to do with ctsync.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::time::{Duration, Instant};

use support::{Running, root, serial, wait_role};

/// 50 TCP connections, the primary fails hard, every connection goes on in order with no
/// reset. fw1 comes back while its sync link passes only small datagrams: it hears fw2
/// but cannot receive the table, so it is not ready and keepalived must not make it
/// master although its priority is higher (track_file). Once the link heals, fw1 gets the
/// table, becomes ready, takes over again, and the connections survive that too.
#[test]
fn tcp_sessions_survive_a_hard_failover_and_the_failback() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("tcp", true, 50, 0);

    let (takeover, rep) = r.hard_failover(6);
    eprintln!("hard failover: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept("hard failover", &rep);

    // fw1 returns with an impaired sync link: not ready, so not master.
    r.lab.impair_sync(0, Some(300)).unwrap();
    r.lab.restore(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert!(
            !r.lab.has_any_vip(0),
            "keepalived made fw1 master before its ctsync was ready: track {:?}, {:?}\n{}",
            r.lab.track(0),
            r.lab.status(0),
            r.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(r.lab.track(0), "1", "fw1 says it is not ready");
    assert!(r.lab.is_master(1));
    let s = r.lab.status(0).unwrap();
    assert_eq!(s["ready"], false, "{s}");
    assert_eq!(s["peers"][0]["up"], true, "fw1 hears fw2: {s}");

    // The link heals: fw1 gets the table, becomes ready, and preempts.
    r.lab.impair_sync(0, None).unwrap();
    let t1 = Instant::now();
    r.lab.wait_master(0, Duration::from_secs(20)).unwrap();
    let rep = r.after(t1.max(Instant::now()), 5);
    eprintln!("failback: {rep:?}");
    r.assert_all_kept("failback", &rep);
    assert!(!r.lab.has_any_vip(1), "fw2 gave the addresses up");
}

/// The control: the same hard failover without ctsync loses at least 90% of the TCP
/// connections (the new primary never saw them; with tcp_loose=0 it drops them).
#[test]
fn control_tcp_sessions_die_in_a_hard_failover_without_ctsync() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("tcpctl", false, 50, 0);
    let (_, rep) = r.hard_failover(6);
    eprintln!("control: {rep:?}");
    assert!(
        rep.tcp_alive * 10 <= rep.tcp,
        "control: without ctsync at least 90% must die, yet {rep:?}"
    );
}

/// UDP flows through SNAT with random ports: a flow re-created on the new primary would
/// get another source port. With ctsync the server sees every flow keep its port.
#[test]
fn udp_flows_keep_their_snat_ports_through_a_hard_failover() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("udp", true, 0, 30);
    let (_, rep) = r.hard_failover(5);
    eprintln!("udp: {rep:?}");
    r.assert_all_kept("udp hard failover", &rep);
    assert_eq!(r.server.stats.udp_sources.lock().unwrap().len(), 30);
}

/// A hot-standby backup whose kernel table is flushed behind ctsync's back (`conntrack
/// -F` on fw2, as an operator might while troubleshooting) writes every copy back at
/// once, not at the next refresh round up to 30 s later: keepalived moves the addresses
/// before ctsync hears of the takeover, and a datagram in between would get a new SNAT
/// port. fw1 fails hard right after the flush: every flow keeps its port. Without the
/// write-back the UDP flows change ports and the counter stays 0.
#[test]
fn a_backup_writes_back_at_once_the_copies_its_kernel_lost() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("wback", true, 10, 30);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &r.lab.fw[1], "conntrack", "-F"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, rep) = r.hard_failover(5);
    eprintln!("flushed backup, hard failover: {rep:?}");
    r.assert_all_kept("fw2's table flushed, then a hard failover", &rep);
    let s = r.lab.status(1).unwrap();
    assert!(
        s["stats"]["written_back"].as_u64().unwrap() >= 40,
        "written back: {s}"
    );
}

/// The control: without ctsync the new primary makes new mappings with new ports.
#[test]
fn control_udp_flows_change_ports_in_a_hard_failover_without_ctsync() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("udpctl", false, 0, 30);
    let (_, rep) = r.hard_failover(5);
    let changed = r.server.stats.udp_changed();
    eprintln!("udp control: {rep:?}, {changed} changed ports");
    assert!(
        changed * 10 >= 9 * 30,
        "control: without ctsync the flows must get new ports, yet only {changed} of 30 did"
    );
}

/// A graceful switch (both nodes up, keepalived priorities swapped) and back keeps
/// every session; then the backup's ctsync crashes and restarts while traffic flows,
/// resyncs, becomes ready, and a hard failover after that still keeps every session.
#[test]
fn graceful_switches_and_a_backup_restart_keep_every_session() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("swap", true, 20, 10);

    let t0 = Instant::now();
    r.lab.set_priority(0, 50).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    let rep = r.after(t0, 4);
    r.assert_all_kept("graceful switch to fw2", &rep);
    wait_role(&r, 0, "backup");
    wait_role(&r, 1, "primary");

    r.lab.wait_ready(0).unwrap();
    let t1 = Instant::now();
    r.lab.set_priority(0, 150).unwrap();
    r.lab.wait_master(0, Duration::from_secs(10)).unwrap();
    let rep = r.after(t1, 4);
    r.assert_all_kept("graceful switch back to fw1", &rep);
    wait_role(&r, 1, "backup");

    // The backup's ctsync crashes and comes back while traffic flows.
    r.lab.kill_ctsync(1);
    std::thread::sleep(Duration::from_millis(500));
    r.lab.start_ctsync(1).unwrap();
    r.lab.wait_ready(1).unwrap();
    assert!(r.lab.is_master(0), "fw1 stayed master");
    let s = r.lab.status(1).unwrap();
    assert!(
        s["caches"]["external"].as_u64().unwrap() >= 30,
        "the restarted backup holds the primary's sessions again: {s}"
    );

    let (_, rep) = r.hard_failover(6);
    eprintln!("after backup restart and hard failover: {rep:?}");
    r.assert_all_kept("hard failover after the backup restarted", &rep);
}

/// ctsync on the serving primary crashes and is started again while keepalived stays
/// MASTER, with 20,000 established entries (timeout 7,200 s) besides the sessions: the
/// new daemon takes the role keepalived gave before the crash (kept in its runtime
/// directory), so keepalived sees no change (no VRRP transition, the track file never
/// says "not ready"), no kernel timeout is cut, every session goes on, and the backup's
/// copy is exact again at once; a hard failover after that keeps every session. Before,
/// the new daemon started as backup: it cut all 20,000 timeouts to 60 s and wrote "not
/// ready", and keepalived moved the addresses to fw2.
#[test]
fn restarting_ctsync_on_the_live_primary_changes_nothing() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("prim", true, 20, 10);
    let mut ct = ctsync_lab::load::open(Some(&r.lab.fw[0])).unwrap();
    let filled = ctsync_lab::load::bulk(
        &mut ct,
        ctnetlink::FlowOp::Create,
        ctsync_lab::synth::Mix::TcpSnat,
        0,
        20_000,
        7200,
    )
    .unwrap();
    assert_eq!(filled.applied, 20_000, "{filled:?}");
    let long = |r: &Running, i| r.lab.timeouts_above(i, 6000).unwrap();
    let exact = |r: &Running| {
        let (p, b) = (r.lab.status(0), r.lab.status(1));
        p.zip(b).is_some_and(|(p, b)| {
            b["caches"]["external"] == p["caches"]["internal"] && b["ready"] == true
        })
    };
    let ok = ctsync_lab::process::wait(Duration::from_secs(15), || exact(&r)).unwrap();
    assert!(
        ok.is_some(),
        "fw2's copy never became exact
{}",
        r.lab.logs()
    );
    let before = long(&r, 0);
    assert!(
        before >= 20_000,
        "fw1 holds its long-lived entries: {before}"
    );
    let transitions = [r.lab.vrrp_transitions(0), r.lab.vrrp_transitions(1)];

    let t0 = Instant::now();
    r.lab.kill_ctsync(0);
    std::thread::sleep(Duration::from_millis(300));
    r.lab.start_ctsync(0).unwrap();
    let up = Instant::now();
    let ok = ctsync_lab::process::wait(Duration::from_secs(10), || exact(&r)).unwrap();
    assert!(
        ok.is_some(),
        "fw2's copy is not exact again: {:?} / {:?}
{}",
        r.lab.status(0),
        r.lab.status(1),
        r.lab.logs()
    );
    eprintln!(
        "fw2's copy exact again {:?} after the restart",
        up.elapsed()
    );
    assert_eq!(r.lab.track(0), "0", "fw1 says it is ready");
    let s = r.lab.status(0).unwrap();
    assert_eq!(s["role"], "primary", "{s}");
    let after = long(&r, 0);
    // The 20,000 loaded entries must all keep their 7,200 s; the lab's own entries may
    // come and go meanwhile (a cut, as before the fix, leaves none of them above).
    assert!(
        after >= 20_000,
        "the restart cut kernel timeouts: {after} of {before} entries still above 6,000 s
{}",
        r.lab.logs()
    );
    let rep = r.after(t0, 4);
    r.assert_all_kept("restart of ctsync on the primary", &rep);
    assert_eq!(
        [r.lab.vrrp_transitions(0), r.lab.vrrp_transitions(1)],
        transitions,
        "keepalived changed state during the restart\n{}",
        r.lab.logs()
    );
    assert!(r.lab.is_master(0) && !r.lab.has_any_vip(1));

    let (_, rep) = r.hard_failover(6);
    eprintln!("hard failover after the primary's restart: {rep:?}");
    r.assert_all_kept("hard failover after ctsync restarted on the primary", &rep);
}

/// The control for the graceful switch: without ctsync even a planned switch loses the
/// TCP connections.
#[test]
fn control_a_graceful_switch_loses_sessions_without_ctsync() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut r = Running::up("swapctl", false, 20, 0);
    let t0 = Instant::now();
    r.lab.set_priority(0, 50).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    let rep = r.after(t0, 6);
    assert!(
        rep.tcp_alive * 10 <= rep.tcp,
        "control: without ctsync a switch must lose the TCP connections, yet {rep:?}"
    );
}
