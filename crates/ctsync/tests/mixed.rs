//! Mixed clusters: ctsync and the real conntrackd (Debian's 1.4.7) on the two firewalls
//! of the demo's lab (nftables with random-port SNAT, keepalived VRRP, `tcp_loose=0`),
//! ctsync speaking conntrackd's FTFW dialect (`[conntrackd]`). 50 TCP and 50 UDP
//! sessions run through the cluster while firewalls fail or are replaced.
//!
//! Each scenario has its control: the same lab with ctsync not speaking the dialect,
//! which must lose the sessions. The scenarios run one at a time (a lock), as in
//! tests/failover.rs.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ctnetlink::{Flow, FlowOp};
use ctsync_lab::cluster::{CONNTRACKD_GROUP, CONNTRACKD_GROUP6, Options, Speaker};
use ctsync_lab::ctsync::Mode;
use ctsync_lab::synth::{self, Mix};
use ctsync_lab::traffic::Report;
use support::{Paused, Running, held_with_reply, root, serial};

const TCP: usize = 50;
const UDP: usize = 50;

fn have_conntrackd() -> bool {
    let ok = std::process::Command::new("conntrackd")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "conntrackd is missing (scripts/setup.sh installs it), and CI must run these tests"
    );
    if !ok {
        eprintln!("\n*** SKIPPED mixed-cluster test: conntrackd is not installed ***\n");
    }
    ok
}

/// A mixed lab up, fw1 master, sessions working; `replicated`: wait until fw2 holds
/// them (not in a control, where it never will).
fn up(tag: &str, mixed: [Speaker; 2], replicated: bool) -> Running {
    up_on(tag, mixed, replicated, None)
}

/// [`up`], with conntrackd's link on the multicast `group` ([`Options::conntrackd_group`])
/// if one is given.
fn up_on(tag: &str, mixed: [Speaker; 2], replicated: bool, group: Option<&'static str>) -> Running {
    up_with(tag, mixed, replicated, |o| o.conntrackd_group = group)
}

/// [`up`], with the lab's options changed by `change`.
fn up_with(
    tag: &str,
    mixed: [Speaker; 2],
    replicated: bool,
    change: impl FnOnce(&mut Options),
) -> Running {
    let mut opts = Options::new(tag, Some(PathBuf::from(env!("CARGO_BIN_EXE_ctsync"))));
    opts.mixed = Some(mixed.to_vec());
    change(&mut opts);
    let r = Running::started(opts, TCP, UDP);
    if replicated {
        r.lab.wait_replicated(1, TCP + UDP).unwrap();
        r.lab.wait_ready(1).unwrap();
    } else {
        // As long as replication would have taken.
        std::thread::sleep(Duration::from_secs(3));
    }
    r
}

fn assert_lost(what: &str, r: &Running, rep: &Report) {
    let changed = r.server.stats.udp_changed();
    eprintln!("{what}: {rep:?}, {changed} UDP ports changed");
    assert!(
        rep.tcp_alive * 10 <= rep.tcp && changed * 10 >= 9 * UDP,
        "{what}: without the dialect at least 90% of the sessions must be lost, yet {rep:?}, {changed} UDP ports changed"
    );
}

/// conntrackd's copy on fw2, committed ahead of the failure (`conntrackd -c`), gives
/// every UDP flow the port fw1's SNAT gave it: what a takeover by conntrackd needs of
/// ctsync. conntrackd's own dump leaves NAT out, hence the commit; it also takes
/// conntrackd's commit window out of the failover that follows: its notify script runs
/// `conntrackd -c` after the virtual addresses moved, and a UDP datagram reaching the
/// kernel first would get a new entry and a new random SNAT port (a TCP segment is
/// dropped instead, `nf_conntrack_tcp_loose=0`, and its retransmission meets the copy).
fn assert_conntrackd_holds_fw1s_nat(r: &Running) {
    let kernel = r.lab.udp_nat_ports(0).unwrap();
    assert_eq!(kernel.len(), UDP, "fw1's kernel: {kernel:?}");
    r.lab.conntrackd_commit(1).unwrap();
    let copy = r.lab.udp_nat_ports(1).unwrap();
    assert_eq!(
        copy,
        kernel,
        "conntrackd's copy on fw2 (left) against fw1's kernel (right)\n{}",
        r.lab.logs()
    );
}

/// A tuple closed and opened again on conntrackd's primary with another NAT port (a
/// client reusing its source port behind random-port SNAT) reaches ctsync's backup as
/// the new flow: conntrackd sends the deletion and then the new flow, and fw2 reads
/// both in one turn (its ctsync is paused meanwhile). An update cannot change an
/// entry's reply tuple, and a batch writes its creations before its deletions: the
/// old entry goes first, and the new one waits for it.
#[test]
fn a_tuple_reopened_behind_conntrackd_reaches_ctsync_with_its_new_nat_port() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let r = up(
        "mxreopen",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
    );
    let old: Vec<_> = (0..100)
        .map(|i| synth::flow(i, Mix::TcpSnat, 3600))
        .collect();
    let mut fw1 = kernel_of(&r, 0);
    fw1.batch(FlowOp::Create, &old, |i, e| panic!("create {i}: {e}"))
        .unwrap();
    let mut fw2 = kernel_of(&r, 1);
    fw2_holds(&r, &mut fw2, &old, |_| "replicated".to_string());
    let new: Vec<_> = old.iter().map(synth::renatted).collect();
    {
        let _paused = Paused::stop(r.lab.ctsync_pid(1).unwrap());
        fw1.batch(FlowOp::Delete, &old, |i, e| panic!("delete {i}: {e}"))
            .unwrap();
        fw1.batch(FlowOp::Create, &new, |i, e| panic!("create {i}: {e}"))
            .unwrap();
        // conntrackd sends both at once (FTFW sends on each event).
        std::thread::sleep(Duration::from_secs(2));
    }
    fw2_holds(&r, &mut fw2, &new, |fw2| {
        format!(
            "with their new NAT port, {} with the old",
            held_with_reply(fw2, &old)
        )
    });
}

/// fw2 (ctsync, backup) served 100 tuples once, and its entries linger with the NAT
/// port it gave them; conntrackd's primary fw1 holds the same tuples as flows opened
/// again since, with other ports. ctsync gives fw2's kernel conntrackd's NAT: in hot
/// standby as the flows arrive, in commit mode when it takes over. A kernel update
/// cannot change an entry's reply tuple, so fw2's own entry is deleted first; without
/// that fw2 keeps every old port (0 of 100).
fn conntrackds_nat_replaces_an_entry_of_ours(tag: &str, mode: Mode) {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let r = up_with(
        tag,
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        mode == Mode::HotStandby,
        |o| o.mode = mode,
    );
    let ours: Vec<_> = (0..100)
        .map(|i| synth::flow(i, Mix::TcpSnat, 3600))
        .collect();
    let theirs: Vec<_> = ours.iter().map(synth::renatted).collect();
    let mut fw2 = kernel_of(&r, 1);
    fw2.batch(FlowOp::Create, &ours, |i, e| panic!("create {i}: {e}"))
        .unwrap();
    let count = |s: Option<serde_json::Value>, path: [&str; 2]| {
        s.and_then(|s| s[path[0]][path[1]].as_u64()).unwrap_or(0)
    };
    within_15s("fw2's ctsync holds its entries as its own", &r, || {
        count(r.lab.status(1), ["caches", "internal"]) >= 100
    });
    let mut fw1 = kernel_of(&r, 0);
    fw1.batch(FlowOp::Create, &theirs, |i, e| panic!("create {i}: {e}"))
        .unwrap();
    within_15s("fw2's ctsync holds conntrackd's flows", &r, || {
        count(r.lab.status(1), ["conntrackd", "flows"]) >= (TCP + UDP + 100) as u64
    });
    if mode == Mode::Commit {
        assert_eq!(
            held_with_reply(&mut fw2, &theirs),
            0,
            "commit mode wrote before takeover"
        );
        ctsync_lab::ctsync::request(&r.lab.socket(1), "role primary").unwrap();
    }
    fw2_holds(&r, &mut fw2, &theirs, |fw2| {
        format!(
            "with conntrackd's NAT port ({mode:?}), {} with its own old one",
            held_with_reply(fw2, &ours)
        )
    });
    if mode == Mode::HotStandby {
        // The entries replaced are no longer fw2's own: its table (and its peers) lose
        // them.
        let s = r.lab.status(1);
        assert!(count(s.clone(), ["caches", "internal"]) < 100, "{s:?}");
    }
}

#[test]
fn conntrackds_nat_replaces_an_entry_of_ours_in_hot_standby() {
    conntrackds_nat_replaces_an_entry_of_ours("mxnath", Mode::HotStandby);
}

#[test]
fn conntrackds_nat_replaces_an_entry_of_ours_at_a_commit_takeover() {
    conntrackds_nat_replaces_an_entry_of_ours("mxnatc", Mode::Commit);
}

/// conntrackd with two dedicated links (two `UDP` blocks; it sends on the first while
/// that link's interface is up, and moves to where it hears its peer), ctsync with
/// `[[conntrackd.link]]` on the second. The first link goes down on firewall `cut`'s
/// side: on fw1 (conntrackd's), conntrackd moves to the second and ctsync follows it
/// there; on fw2 (ctsync's), ctsync's sends fail, it moves to the second and conntrackd
/// follows. Either way ctsync ends on link 2 of 2, 100 flows created on fw1 after the
/// cut reach fw2's kernel with their NAT, and a hard failover keeps every session. Its
/// control, ctsync without the second link, gets none of those flows.
fn conntrackds_second_link(tag: &str, ctsync_has_it: bool, cut: usize) {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up_with(
        tag,
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
        |o| {
            o.conntrackd_second_link = true;
            o.ctsync_second_link = ctsync_has_it;
        },
    );
    r.lab.set_link(cut, "sync", false).unwrap();
    // conntrackd notices its link down (a netlink event), or ctsync's next datagram (an
    // acknowledgement or ALIVE, at least every second) fails and goes on the second,
    // before these flows' events.
    std::thread::sleep(Duration::from_secs(if cut == 0 { 1 } else { 3 }));
    let flows: Vec<_> = (0..100)
        .map(|i| synth::flow(i, Mix::TcpSnat, 3600))
        .collect();
    let mut fw1 = kernel_of(&r, 0);
    fw1.batch(FlowOp::Create, &flows, |i, e| panic!("create {i}: {e}"))
        .unwrap();
    let mut fw2 = kernel_of(&r, 1);
    if !ctsync_has_it {
        std::thread::sleep(Duration::from_secs(5));
        let held = held_with_reply(&mut fw2, &flows);
        assert_eq!(
            held, 0,
            "without the second link fw2 got {held} of the flows"
        );
        return;
    }
    fw2_holds(&r, &mut fw2, &flows, |_| {
        "sent over the second link".to_string()
    });
    let s = r.lab.status(1).unwrap();
    let c = &s["conntrackd"];
    assert_eq!(
        (c["link"].as_u64(), c["links"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    assert_eq!(c["peer"], "198.18.254.1:3780", "{s}");
    let (_, rep) = r.hard_failover(6);
    eprintln!("conntrackd on its second link -> ctsync: {rep:?}");
    r.assert_all_kept("conntrackd moved to its second link, then failed", &rep);
}

#[test]
fn ctsync_follows_conntrackd_onto_its_second_link() {
    conntrackds_second_link("mx2link", true, 0);
}

#[test]
fn conntrackd_follows_ctsync_onto_its_second_link() {
    conntrackds_second_link("mx2own", true, 1);
}

#[test]
fn control_without_the_second_link_ctsync_gets_nothing_after_the_cut() {
    conntrackds_second_link("mx2ctl", false, 0);
}

/// The status and the log say, at every start, that the dialect is unauthenticated.
fn assert_says_unauthenticated(r: &Running, i: usize) {
    let s = r.lab.status(i).unwrap();
    assert_eq!(s["conntrackd"]["unauthenticated"], true, "{s}");
    assert_eq!(s["conntrackd"]["dialect"], "conntrackd", "{s}");
    let log = std::fs::read_to_string(r.lab.dir().join(format!("fw{}-ctsync.log", i + 1))).unwrap();
    assert!(log.contains("UNAUTHENTICATED"), "{log}");
}

/// fw1 runs conntrackd (primary), fw2 ctsync with a `[conntrackd]` peer: ctsync takes
/// conntrackd's flows into its kernel as they come (NAT included). fw1 fails hard:
/// every session goes on through fw2, no reset, no UDP source port changed.
#[test]
fn ctsync_takes_over_from_a_failed_conntrackd_primary() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxrecv",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
    );
    assert_says_unauthenticated(&r, 1);
    let s = r.lab.status(1).unwrap();
    assert!(
        s["conntrackd"]["flows"].as_u64().unwrap() >= (TCP + UDP) as u64,
        "{s}"
    );
    // A re-read of the backup's kernel table leaves conntrackd's flows out of ctsync's
    // own table: they are conntrackd's.
    ctsync_lab::ctsync::request(&r.lab.socket(1), "resync").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let s = r.lab.status(1).unwrap();
    assert!(
        s["caches"]["internal"].as_u64().unwrap() < 10,
        "conntrackd's flows taken as fw2's own: {s}"
    );
    let (takeover, rep) = r.hard_failover(6);
    eprintln!("conntrackd -> ctsync: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept("conntrackd primary failed, ctsync took over", &rep);
}

/// conntrackd sends a flow when its state changes, not when a packet refreshes its
/// timer: a quiet live flow expires on the ctsync backup while conntrackd's primary
/// still has it. ctsync writes it back at once, not at takeover: keepalived moves the
/// addresses before it tells ctsync, and a UDP datagram in between would get a new NAT
/// port (CI saw all 50 do so once). Here fw2's kernel table is flushed behind ctsync's
/// back (every copy "expired"): the copies come back, and fw1 fails hard: every
/// session goes on. Without the write-back the wait for the copies fails.
#[test]
fn ctsync_backup_writes_back_conntrackds_copies_that_expired() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxexp",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
    );
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &r.lab.fw[1], "conntrack", "-F"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    r.lab.wait_replicated(1, TCP + UDP).unwrap();
    let s = r.lab.status(1).unwrap();
    assert!(
        s["conntrackd"]["restored"].as_u64().unwrap() >= (TCP + UDP) as u64,
        "{s}"
    );
    let (_, rep) = r.hard_failover(6);
    eprintln!("expired copies written back, conntrackd -> ctsync: {rep:?}");
    r.assert_all_kept("copies expired on the backup, then a hard failover", &rep);
}

/// The status says the dialect runs on the multicast group, and that conntrackd was
/// heard there from the other firewall's sync address (IPv4; over IPv6 its link-local
/// one): conntrackd has no UDP link in this lab, the group is the only way its table
/// comes.
fn assert_on_the_group(r: &Running, i: usize, group: &str) {
    let s = r.lab.status(i).unwrap();
    let c = &s["conntrackd"];
    assert_eq!(c["transport"], "multicast", "{s}");
    assert!(
        c["peer"]
            .as_str()
            .unwrap()
            .starts_with(group.split(']').next().unwrap()),
        "{s}"
    );
    let from = c["heard_from"].as_str().unwrap_or_default();
    if group.starts_with('[') {
        assert!(from.starts_with("fe80:"), "{s}");
    } else {
        assert_eq!(from, format!("198.18.255.{}", 2 - i), "{s}");
    }
    assert_eq!(c["up"], true, "{s}");
}

/// conntrackd's `Multicast` link: fw1 conntrackd (primary) sends to 239.255.18.80:3780
/// on the sync bridge, fw2 ctsync has `[conntrackd] group` on the same group. fw1 fails
/// hard: every session goes on through fw2.
#[test]
fn ctsync_takes_over_from_a_failed_conntrackd_primary_over_multicast() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up_on(
        "mxmcast",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
        Some(CONNTRACKD_GROUP),
    );
    assert_says_unauthenticated(&r, 1);
    assert_on_the_group(&r, 1, CONNTRACKD_GROUP);
    let s = r.lab.status(1).unwrap();
    assert!(
        s["conntrackd"]["flows"].as_u64().unwrap() >= (TCP + UDP) as u64,
        "{s}"
    );
    let (takeover, rep) = r.hard_failover(6);
    eprintln!("conntrackd -> ctsync over multicast: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept(
        "conntrackd primary on the group failed, ctsync took over",
        &rep,
    );
}

/// The control: conntrackd on the group, ctsync on fw2 without the dialect: the same
/// failure loses the sessions.
#[test]
fn control_over_multicast_without_the_dialect_ctsync_cannot_take_over() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up_on(
        "mxmcastctl",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: false }],
        false,
        Some(CONNTRACKD_GROUP),
    );
    let (_, rep) = r.hard_failover(6);
    assert_lost("control, conntrackd on the group -> ctsync", &r, &rep);
}

/// The other way on the group: fw1 ctsync (primary) sends its table to the group, fw2
/// conntrackd (its `Multicast` block, driven by its primary-backup.sh) takes it into
/// its external cache and commits it when fw1 fails hard.
#[test]
fn conntrackd_takes_over_from_a_failed_ctsync_primary_over_multicast() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up_on(
        "mxmsend",
        [Speaker::Ctsync { dialect: true }, Speaker::Conntrackd],
        true,
        Some(CONNTRACKD_GROUP),
    );
    assert_on_the_group(&r, 0, CONNTRACKD_GROUP);
    assert_conntrackd_holds_fw1s_nat(&r);
    let (takeover, rep) = r.hard_failover(6);
    eprintln!("ctsync -> conntrackd over multicast: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept(
        "ctsync primary on the group failed, conntrackd took over",
        &rep,
    );
}

/// conntrackd's `Multicast { IPv6_address ff02::18:80; Interface sync; }`: the same
/// failure as over IPv4, the group on the sync devices' link-local addresses.
#[test]
fn ctsync_takes_over_from_a_failed_conntrackd_primary_over_ipv6_multicast() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up_on(
        "mxmcast6",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
        Some(CONNTRACKD_GROUP6),
    );
    assert_on_the_group(&r, 1, CONNTRACKD_GROUP6);
    let (takeover, rep) = r.hard_failover(6);
    eprintln!("conntrackd -> ctsync over IPv6 multicast: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept(
        "conntrackd primary on the IPv6 group failed, ctsync took over",
        &rep,
    );
}

/// The control: ctsync on fw2 without the dialect hears nothing of conntrackd's table;
/// the same failure loses the sessions.
#[test]
fn control_without_the_dialect_ctsync_cannot_take_over_from_conntrackd() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxrecvctl",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: false }],
        false,
    );
    let (_, rep) = r.hard_failover(6);
    assert_lost("control, conntrackd -> ctsync", &r, &rep);
}

/// fw1 runs ctsync (primary) with a `[conntrackd]` peer, fw2 conntrackd driven by its
/// own primary-backup.sh: our table reaches conntrackd's external cache, and when fw1
/// fails hard, `conntrackd -c` commits it: every session goes on.
#[test]
fn conntrackd_takes_over_from_a_failed_ctsync_primary() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxsend",
        [Speaker::Ctsync { dialect: true }, Speaker::Conntrackd],
        true,
    );
    assert_says_unauthenticated(&r, 0);
    assert_conntrackd_holds_fw1s_nat(&r);
    let (takeover, rep) = r.hard_failover(6);
    eprintln!("ctsync -> conntrackd: takeover {takeover:?}, {rep:?}");
    r.assert_all_kept("ctsync primary failed, conntrackd took over", &rep);
}

/// The control: without the dialect conntrackd's external cache stays empty.
#[test]
fn control_without_the_dialect_conntrackd_cannot_take_over_from_ctsync() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxsendctl",
        [Speaker::Ctsync { dialect: false }, Speaker::Conntrackd],
        false,
    );
    assert_eq!(r.lab.conntrackd_external(1).unwrap_or(0), 0);
    let (_, rep) = r.hard_failover(6);
    assert_lost("control, ctsync -> conntrackd", &r, &rep);
}

/// The rolling replacement: two conntrackd nodes; the backup (fw2) is replaced by
/// ctsync `with_dialect`; the roles switch gracefully (fw2 master); the other node
/// (fw1, now backup) is replaced by ctsync; fw2 fails hard. The sessions through all of
/// it, and how many survived the graceful switch.
fn rolling(tag: &str, with_dialect: bool) -> (Running, Report) {
    let mut r = up(tag, [Speaker::Conntrackd, Speaker::Conntrackd], true);
    let t0 = Instant::now();
    r.lab
        .replace_speaker(
            1,
            Speaker::Ctsync {
                dialect: with_dialect,
            },
        )
        .unwrap();
    r.lab.wait_ready(1).unwrap();
    if with_dialect {
        r.lab.wait_replicated(1, TCP + UDP).unwrap();
    } else {
        std::thread::sleep(Duration::from_secs(3));
    }
    let rep = r.after(t0, 2);
    r.assert_all_kept("fw2's conntrackd replaced by ctsync", &rep);
    assert!(r.lab.is_master(0));

    // The graceful switch: fw2 (ctsync) becomes master.
    let t1 = Instant::now();
    r.lab.set_priority(0, 50).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    let rep = r.after(t1, 5);
    (r, rep)
}

#[test]
fn rolling_replacement_of_conntrackd_by_ctsync_keeps_every_session() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let (mut r, rep) = rolling("mxroll", true);
    r.assert_all_kept("graceful switch to fw2 (ctsync)", &rep);
    // fw1's conntrackd, now backup, asked fw2 for its table (primary-backup.sh: -n).
    let ok = ctsync_lab::process::wait(Duration::from_secs(10), || {
        r.lab.conntrackd_external(0).is_some_and(|n| n >= TCP + UDP)
    })
    .unwrap();
    assert!(
        ok.is_some(),
        "fw1's conntrackd holds {:?} of fw2's sessions\n{}",
        r.lab.conntrackd_external(0),
        r.lab.logs()
    );

    // fw1 (backup) is replaced by ctsync, which gets fw2's table over ctsync's own
    // protocol.
    let t2 = Instant::now();
    r.lab
        .replace_speaker(0, Speaker::Ctsync { dialect: false })
        .unwrap();
    r.lab.wait_ready(0).unwrap();
    r.lab.wait_replicated(0, TCP + UDP).unwrap();
    let rep = r.after(t2, 2);
    r.assert_all_kept("fw1's conntrackd replaced by ctsync", &rep);
    assert!(r.lab.is_master(1));

    // And a last hard failover, now between two ctsync nodes.
    let t3 = Instant::now();
    r.lab.fail_hard(1).unwrap();
    r.lab.wait_master(0, Duration::from_secs(10)).unwrap();
    let rep = r.after(t3, 6);
    r.assert_all_kept("hard failover after the rolling replacement", &rep);
}

/// The control: replaced by ctsync without the dialect, fw2 never gets conntrackd's
/// table, and the graceful switch to it loses the sessions.
#[test]
fn control_rolling_replacement_without_the_dialect_loses_sessions() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let (r, rep) = rolling("mxrollctl", false);
    assert_lost(
        "control, graceful switch to fw2 without the dialect",
        &r,
        &rep,
    );
}

/// An FTP control connection as the FTP helper tracks it (client 198.18.1.100:`port`
/// to the server's port 21, helper "ftp") and the data connection it expects (active
/// mode: from the server's port 20 to the client's `port + 10000`).
fn ftp_pair(port: u16) -> (Flow, ctnetlink::Expectation) {
    use ctnetlink::{Expectation, Name, ProtoInfo, Status, TcpInfo, Tuple, ipproto};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let (client, server) = (ip("198.18.1.100"), ip("198.19.0.100"));
    let orig = Tuple::ports(ipproto::TCP, client, port, server, 21);
    let mut f = Flow::new(orig, orig.inverse());
    f.timeout = Some(3600);
    f.status = Some(Status::SEEN_REPLY | Status::ASSURED | Status::CONFIRMED);
    f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: Some(3),
        ..TcpInfo::default()
    }));
    f.helper = Name::new(b"ftp");
    let ones = ip("255.255.255.255");
    let e = Expectation {
        timeout: Some(300),
        helper: Name::new(b"ftp"),
        ..Expectation::new(
            orig,
            Tuple::ports(ipproto::TCP, server, 20, client, port + 10_000),
            Tuple::ports(ipproto::TCP, ones, 0xffff, ones, 0xffff),
        )
    };
    (f, e)
}

/// The kernel conntrack handle in firewall `i`'s namespace.
fn kernel_of(r: &Running, i: usize) -> ctnetlink::Conntrack {
    ctnetlink::Conntrack::open_in(&ctnetlink::Netns::named(&r.lab.fw[i]).unwrap()).unwrap()
}

/// The expected tuples in firewall `i`'s kernel.
fn expected_in(r: &Running, i: usize) -> Vec<ctnetlink::Tuple> {
    let mut v = Vec::new();
    kernel_of(r, i)
        .dump_expectations(None, |e| v.push(e.tuple))
        .unwrap();
    v
}

/// Wait at most 15 s until fw2's kernel holds every one of `flows` with its reply tuple
/// (its NAT); else fail, saying how many it holds and what `which` says of them.
fn fw2_holds(
    r: &Running,
    fw2: &mut ctnetlink::Conntrack,
    flows: &[Flow],
    which: impl FnOnce(&mut ctnetlink::Conntrack) -> String,
) {
    let got = ctsync_lab::process::wait(Duration::from_secs(15), || {
        held_with_reply(fw2, flows) == flows.len()
    })
    .unwrap();
    if got.is_none() {
        let held = held_with_reply(fw2, flows);
        panic!(
            "fw2 holds {held} of {} flows {}\n{}",
            flows.len(),
            which(fw2),
            r.lab.logs()
        );
    }
}

/// Wait at most 15 s for `ok`.
fn within_15s(what: &str, r: &Running, ok: impl FnMut() -> bool) {
    let got = ctsync_lab::process::wait(Duration::from_secs(15), ok).unwrap();
    assert!(got.is_some(), "{what} within 15 s\n{}", r.lab.logs());
}

/// conntrackd (`ExpectationSync On`) on the primary fw1 replicates an FTP helper's
/// expectation: ctsync on fw2 writes it to its kernel after its master flow, and its
/// deletion follows; one that fw2's kernel lost is written again at takeover.
#[test]
fn conntrackds_expectations_reach_ctsyncs_kernel() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxexpin",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: true }],
        true,
    );
    let (m, e) = ftp_pair(41_001);
    let mut fw1 = kernel_of(&r, 0);
    fw1.create(&m).unwrap();
    fw1.create_expectation(&e).unwrap();
    within_15s("the expectation in fw2's kernel", &r, || {
        expected_in(&r, 1).contains(&e.tuple)
    });
    let s = r.lab.status(1).unwrap();
    assert!(
        s["conntrackd"]["expectations"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let mut got = Vec::new();
    kernel_of(&r, 1)
        .dump_expectations(None, |x| got.push(x.clone()))
        .unwrap();
    let g = got.iter().find(|x| x.tuple == e.tuple).unwrap();
    assert_eq!((g.master, g.mask, g.helper), (m.orig, e.mask, e.helper));

    fw1.delete_expectation(&e).unwrap();
    within_15s("the expectation gone from fw2's kernel", &r, || {
        !expected_in(&r, 1).contains(&e.tuple)
    });

    // One that fw2's kernel lost behind ctsync's back (expired there, say) is written
    // again when fw2 takes over.
    let (m2, e2) = ftp_pair(41_004);
    fw1.create(&m2).unwrap();
    fw1.create_expectation(&e2).unwrap();
    within_15s("the second expectation in fw2's kernel", &r, || {
        expected_in(&r, 1).contains(&e2.tuple)
    });
    kernel_of(&r, 1).delete_expectation(&e2).unwrap();
    assert!(!expected_in(&r, 1).contains(&e2.tuple));
    r.lab.fail_hard(0).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    within_15s(
        "the second expectation back in fw2's kernel after the takeover",
        &r,
        || expected_in(&r, 1).contains(&e2.tuple),
    );
}

/// The control: without the dialect fw2 gets no expectation of conntrackd's.
#[test]
fn control_without_the_dialect_no_expectation_reaches_ctsync() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let r = up(
        "mxexpctl",
        [Speaker::Conntrackd, Speaker::Ctsync { dialect: false }],
        false,
    );
    let (m, e) = ftp_pair(41_002);
    let mut fw1 = kernel_of(&r, 0);
    fw1.create(&m).unwrap();
    fw1.create_expectation(&e).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(expected_in(&r, 0).contains(&e.tuple));
    assert!(expected_in(&r, 1).is_empty(), "{:?}", expected_in(&r, 1));
}

/// ctsync (primary fw1) sends an FTP helper's expectation in conntrackd's form:
/// conntrackd on fw2 keeps it in its external cache, and when fw1 fails hard its
/// primary-backup.sh (`conntrackd -c`) commits it to fw2's kernel with its master.
#[test]
fn ctsyncs_expectations_reach_conntrackd_and_are_committed_on_takeover() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    let mut r = up(
        "mxexpout",
        [Speaker::Ctsync { dialect: true }, Speaker::Conntrackd],
        true,
    );
    let (m, e) = ftp_pair(41_003);
    let mut fw1 = kernel_of(&r, 0);
    fw1.create(&m).unwrap();
    fw1.create_expectation(&e).unwrap();
    let conf = r.lab.dir().join("fw2.conntrackd.conf");
    let external = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &r.lab.fw[1], "conntrackd", "-C"])
            .arg(&conf)
            .args(["-e", "expect"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    within_15s("the expectation in conntrackd's external cache", &r, || {
        external().contains("dport=51003")
    });
    assert!(
        expected_in(&r, 1).is_empty(),
        "a backup conntrackd commits nothing"
    );
    let s = r.lab.status(0).unwrap();
    assert!(
        s["conntrackd"]["session"]["expectations_sent"]
            .as_u64()
            .unwrap()
            >= 1,
        "{s}"
    );
    r.lab.fail_hard(0).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    within_15s("the expectation committed to fw2's kernel", &r, || {
        expected_in(&r, 1).contains(&e.tuple)
    });
}

/// The FTP helper on a firewall's LAN-to-WAN control connections (a table of its own,
/// ahead of the lab's forward chain).
const FTP_HELPER: &str = r#"table inet ctsync_lab_ftp {
    ct helper ftp-std {
        type "ftp" protocol tcp
    }
    chain forward {
        type filter hook forward priority filter - 1; policy accept;
        iifname "lan" oifname "wan" tcp dport 21 ct helper set "ftp-std"
    }
}
"#;

/// The lab with conntrackd on fw1 (`ExpectationSync` as `expectations` says) and ctsync
/// on fw2, the FTP helper on both; an active-mode FTP control connection from the
/// client through fw1 (SNAT): the client listens on 198.18.1.100:50021 and says
/// `PORT`; fw1's helper rewrites it to the WAN address and a port of its own, and
/// expects the server's data connection there. fw1 then fails hard, and the server
/// opens the data connection through fw2: whether it reaches the client.
fn active_ftp_after_failover(tag: &str, expectations: bool) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    let mut opts = Options::new(tag, Some(PathBuf::from(env!("CARGO_BIN_EXE_ctsync"))));
    opts.mixed = Some(vec![Speaker::Conntrackd, Speaker::Ctsync { dialect: true }]);
    opts.conntrackd_expectations = expectations;
    let mut r = Running::started(opts, TCP, UDP);
    r.lab.wait_replicated(1, TCP + UDP).unwrap();
    let rules = r.lab.dir().join("ftp.nft");
    std::fs::write(&rules, FTP_HELPER).unwrap();
    for fw in &r.lab.fw {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", fw, "nft", "-f"])
            .arg(&rules)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let server = ctnetlink::Netns::named(&r.lab.server).unwrap();
    let client = ctnetlink::Netns::named(&r.lab.client).unwrap();
    let control = server.run(|| TcpListener::bind("198.19.0.100:21")).unwrap();
    let data = client
        .run(|| TcpListener::bind("198.18.1.100:50021"))
        .unwrap();
    let to: SocketAddr = "198.19.0.100:21".parse().unwrap();
    let mut ctl = client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .unwrap();
    let (srv, _) = control.accept().unwrap();
    srv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The helper reads a line only where the one before it in that direction ended
    // (nf_conntrack_ftp's find_nl_seq): a first line, as a client says USER, then PORT.
    ctl.set_nodelay(true).unwrap();
    let mut srv = BufReader::new(srv);
    let mut line = String::new();
    ctl.write_all(b"USER anonymous\r\n").unwrap();
    srv.read_line(&mut line).unwrap();
    // 50021 = 195 * 256 + 101.
    line.clear();
    ctl.write_all(b"PORT 198,18,1,100,195,101\r\n").unwrap();
    srv.read_line(&mut line).unwrap();
    // "PORT 198,19,0,1,p1,p2": the helper's NAT rewrote it.
    let n: Vec<u16> = line
        .trim()
        .trim_start_matches("PORT ")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let fw1 = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &r.lab.fw[0], "conntrack"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert_eq!(
        n[..4],
        [198, 19, 0, 1],
        "the server got {line:?}; fw1: {}\n{}",
        fw1(&["-L", "-p", "tcp", "--dport", "21"]),
        fw1(&["-L", "expect"])
    );
    let port = n[4] * 256 + n[5];
    within_15s("the expectation in fw2's kernel", &r, || {
        !expectations
            || expected_in(&r, 1)
                .iter()
                .any(|t| t.dst_port() == Some(port))
    });
    if !expectations {
        // As long as replication would have taken.
        std::thread::sleep(Duration::from_secs(2));
    }
    r.lab.fail_hard(0).unwrap();
    r.lab.wait_master(1, Duration::from_secs(10)).unwrap();
    let back: SocketAddr = SocketAddr::from(([198, 19, 0, 1], port));
    let opened = server.run(|| TcpStream::connect_timeout(&back, Duration::from_secs(3)));
    eprintln!("{tag}: data connection to {back} through fw2: {opened:?}");
    let _data = opened?;
    data.set_nonblocking(false)?;
    let (_, from) = data.accept()?;
    assert_eq!(from.ip().to_string(), "198.19.0.100");
    drop(ctl);
    Ok(())
}

/// The classic case: an active FTP session's data connection, expected by fw1's FTP
/// helper (conntrackd replicating it with `ExpectationSync On`), opens through ctsync
/// on fw2 after fw1 failed hard, NATed to the client as fw1 would have.
#[test]
fn an_active_ftp_data_connection_opens_through_ctsync_after_conntrackd_fails() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    active_ftp_after_failover("mxftp", true).unwrap();
}

/// The control: conntrackd without `ExpectationSync`: the control connection's flow
/// reaches fw2, the expectation does not, and the data connection is not let through:
/// related to nothing fw2 knows, it is not translated to the client and reaches fw2
/// itself, which refuses it.
#[test]
fn control_without_expectation_sync_the_ftp_data_connection_is_refused() {
    if !root() || !have_conntrackd() {
        return;
    }
    let _one = serial();
    assert!(active_ftp_after_failover("mxftpctl", false).is_err());
}
