//! The cluster simulator's scenarios (`ctsync_core::sim::Cluster`): N nodes, each with a
//! simulated kernel table, joined by links that lose, duplicate, delay and reorder
//! datagrams, with partitions and restarts, all in a virtual clock. After the faults
//! stop, every backup's external cache must equal each owner's internal cache exactly,
//! and no (key, nonce) pair may ever have been used twice.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion
#![allow(clippy::disallowed_methods)] // the simulator plays the shell, which owns the clock

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ctnetlink::{EventKind, Expectation, Flow, Name, ProtoInfo, Status, TcpInfo, Tuple, ipproto};
use ctsync_core::sim::{Cluster, Faults, Rng};
use ctsync_core::{Mode, Role};
use ctsync_wire::NodeId;
use proptest::prelude::*;

fn flow(i: u32) -> Flow {
    let a = |n: u32| IpAddr::V4(Ipv4Addr::from(0xC612_0000 + (n & 0x1_ffff)));
    let orig = Tuple::ports(
        ipproto::TCP,
        a(i),
        10000 + (i % 50000) as u16,
        a(0x1_0000 + (i % 7)),
        443,
    );
    let mut reply = orig.inverse();
    if i.is_multiple_of(3) {
        reply.dst = a(0x1_8000 + i % 100);
    }
    let mut f = Flow::new(orig, reply);
    f.timeout = Some(3600);
    f.status = Some(Status::SEEN_REPLY | Status::ASSURED | Status::CONFIRMED);
    f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: Some(3),
        ..TcpInfo::default()
    }));
    f
}

/// A random workload on the primary: creates, updates, deletes.
fn workload(
    c: &mut Cluster,
    rng: &mut Rng,
    steps: usize,
    live: &mut BTreeMap<u32, Flow>,
    next: &mut u32,
) {
    for _ in 0..steps {
        match rng.below(10) {
            0..=5 => {
                let f = flow(*next);
                *next += 1;
                live.insert(*next - 1, f.clone());
                c.traffic(0, EventKind::New, f);
            }
            6 | 7 if !live.is_empty() => {
                let k = *live
                    .keys()
                    .nth(rng.below(live.len() as u64) as usize)
                    .unwrap();
                let f = live.get_mut(&k).unwrap();
                f.mark = Some(rng.next_u64() as u32 | 1);
                let f = f.clone();
                c.traffic(0, EventKind::Update, f);
            }
            _ if !live.is_empty() => {
                let k = *live
                    .keys()
                    .nth(rng.below(live.len() as u64) as usize)
                    .unwrap();
                let f = live.remove(&k).unwrap();
                c.traffic(0, EventKind::Destroy, f);
            }
            _ => {}
        }
        c.run(Duration::from_millis(rng.below(20)));
    }
}

fn scenario(nodes: u32, seed: u64, faults: Faults, mode: Mode, restarts: bool, partitions: bool) {
    let mut c = Cluster::new(nodes, seed, mode);
    let mut rng = Rng::new(seed.wrapping_mul(31));
    let mut live = BTreeMap::new();
    let mut next = 0;
    c.run(Duration::from_secs(2));
    c.net.faults = faults;
    for round in 0..6 {
        workload(&mut c, &mut rng, 60, &mut live, &mut next);
        if partitions && round == 2 {
            let b = 2 + rng.below(u64::from(nodes) - 1) as NodeId;
            c.partition(1, b, Duration::from_secs(2 + rng.below(4)));
        }
        if restarts && round == 3 {
            let i = 1 + rng.below(u64::from(nodes) - 1) as usize;
            c.crash(i);
            workload(&mut c, &mut rng, 20, &mut live, &mut next);
            c.boot(i);
        }
    }
    c.heal_and_settle(Duration::from_secs(20));
    assert_eq!(
        c.nodes[0].node.as_ref().unwrap().internal().len(),
        live.len(),
        "primary's cache follows its kernel"
    );
    c.assert_converged(mode);
}

#[test]
fn two_nodes_no_faults() {
    scenario(2, 1, Faults::NONE, Mode::HotStandby, false, false);
}

#[test]
fn two_nodes_heavy_loss_duplication_reordering() {
    let f = Faults {
        loss: 0.3,
        duplicate: 0.1,
        jitter: Duration::from_millis(30),
    };
    scenario(2, 7, f, Mode::HotStandby, false, false);
}

#[test]
fn three_nodes_with_partition_and_restart() {
    let f = Faults {
        loss: 0.1,
        duplicate: 0.05,
        jitter: Duration::from_millis(10),
    };
    scenario(3, 11, f, Mode::Commit, true, true);
}

/// A lost kernel event (the event socket overran): the dump it triggers replicates what
/// was missed.
#[test]
fn lost_kernel_events_are_recovered_by_the_dump_after_an_overrun() {
    let mut c = Cluster::new(2, 5, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..20 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.lose_events = 15;
    for i in 20..35 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(5));
    c.assert_converged(Mode::HotStandby);
    assert_eq!(c.nodes[1].kernel.flows.len(), 35);
}

/// A divergence nothing reported (a bug, a lost write): the digest exchange finds the
/// differing buckets and repairs only those.
#[test]
fn anti_entropy_repairs_a_silent_divergence() {
    let mut c = Cluster::new(2, 9, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    c.assert_converged(Mode::HotStandby);
    // Make the backup's copy wrong behind the protocol's back: two flows lost, one
    // changed, one phantom that the primary never had.
    c.tamper(1, 1, |ext| {
        ext.remove(&ext.keyed(flow(10).key()));
        ext.remove(&ext.keyed(flow(200).key()));
        let mut changed = flow(50);
        changed.mark = Some(4242);
        ext.insert(&changed, 0, true);
        ext.insert(&flow(100_000), 0, true);
    });
    c.nodes[1]
        .kernel
        .flows
        .insert(flow(100_000).key(), flow(100_000));
    c.run(Duration::from_secs(6));
    c.assert_converged(Mode::HotStandby);
}

/// Failover: the backup becomes primary and already has every flow in its kernel.
#[test]
fn failover_in_hot_standby_leaves_nothing_to_commit() {
    let mut c = Cluster::new(2, 3, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..500 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    assert!(
        c.node(1).is_ready(),
        "backup ready after its copy is complete"
    );
    let primary_flows = c.nodes[0].kernel.flows.len();
    c.crash(0);
    assert_eq!(
        c.nodes[1].kernel.flows.len(),
        primary_flows,
        "all flows already in the backup's kernel"
    );
    c.set_role(1, Role::Primary);
    c.run(Duration::from_secs(1));
    assert_eq!(
        c.node(1).internal().len(),
        primary_flows,
        "the new primary owns the flows"
    );
}

/// keepalived's track_file loop: a node keepalived holds in FAULT must still become
/// ready (else it never leaves FAULT), and moving between backup and fault must not drop
/// readiness (else FAULT -> not ready -> FAULT repeats for ever).
#[test]
fn fault_is_ready_once_synced_and_backup_fault_moves_keep_readiness() {
    let mut c = Cluster::new(2, 41, Mode::HotStandby);
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.set_role(1, Role::Fault);
    c.run(Duration::from_secs(4));
    assert!(c.node(1).is_ready(), "a synced node in FAULT is ready");
    for role in [Role::Backup, Role::Fault, Role::Backup] {
        c.set_role(1, role);
        assert!(c.node(1).is_ready(), "still ready after moving to {role:?}");
    }
    // Coming back from primary, the copy must be rebuilt first.
    c.set_role(1, Role::Primary);
    c.run(Duration::from_secs(1));
    c.set_role(0, Role::Backup);
    c.set_role(1, Role::Backup);
    assert!(!c.node(1).is_ready(), "a former primary waits for a resync");
}

/// An FTP data connection expected on the primary: the expectation reaches the hot
/// standby's kernel after its master flow, its deletion follows, and a restarted backup
/// gets every live one by bulk transfer.
#[test]
fn expectations_follow_their_master_flows_to_the_backup() {
    let mut c = Cluster::new(2, 47, Mode::HotStandby);
    c.set_role(0, Role::Primary);
    c.set_role(1, Role::Backup);
    let mut master = flow(7);
    master.helper = Name::new(b"ftp");
    c.traffic(0, EventKind::New, master.clone());
    c.run(Duration::from_secs(2));
    let exp = |port: u16| Expectation {
        timeout: Some(300),
        id: Some(1234),
        helper: Name::new(b"ftp"),
        ..Expectation::new(
            master.orig,
            Tuple::ports(ipproto::TCP, master.orig.dst, 20, master.orig.src, port),
            master.orig,
        )
    };
    let now = c.now;
    c.node(0)
        .handle_expectation_event(now, EventKind::New, &exp(50000), false);
    c.drain(0);
    // One whose master is not replicated is not sent.
    let mut orphan = exp(50001);
    orphan.master = flow(8).orig;
    c.node(0)
        .handle_expectation_event(now, EventKind::New, &orphan, false);
    c.drain(0);
    c.run(Duration::from_secs(1));
    let got = c.nodes[1].kernel.exps.get(&exp(50000).tuple).cloned();
    assert_eq!(
        got.map(|e| (e.master, e.helper, e.id)),
        Some((master.orig, Name::new(b"ftp"), None)),
        "the backup's kernel holds the expectation (without the kernel's id)"
    );
    assert_eq!(
        c.nodes[1].kernel.exps.len(),
        1,
        "the orphan was not replicated"
    );
    // Gone on the primary: gone on the backup.
    let now = c.now;
    c.node(0)
        .handle_expectation_event(now, EventKind::Destroy, &exp(50000), false);
    c.drain(0);
    c.run(Duration::from_secs(1));
    assert!(c.nodes[1].kernel.exps.is_empty(), "the deletion arrived");
    // A backup that restarts (its kernel's expectations gone, say after a reboot) gets
    // every live expectation again by bulk transfer, those created while it was down too.
    c.node(0)
        .handle_expectation_event(now, EventKind::New, &exp(50002), false);
    c.drain(0);
    c.run(Duration::from_secs(1));
    assert!(c.nodes[1].kernel.exps.contains_key(&exp(50002).tuple));
    c.crash(1);
    c.nodes[1].kernel.exps.clear();
    let now = c.now;
    c.node(0)
        .handle_expectation_event(now, EventKind::New, &exp(50003), false);
    c.drain(0);
    c.boot(1);
    c.run(Duration::from_secs(5));
    let mut held: Vec<u16> = c.nodes[1]
        .kernel
        .exps
        .keys()
        .filter_map(|t| t.dst_port())
        .collect();
    held.sort();
    assert_eq!(
        held,
        vec![50002, 50003],
        "the restarted backup got both by bulk"
    );
}

/// Readiness drives keepalived's track_file: if it dropped at every lost datagram, a
/// busy cluster's backup would flap between BACKUP and FAULT, and a primary failing at
/// such a moment would not be replaced at all. A synced backup stays ready while the
/// primary's stream loses datagrams under load (they are retransmitted).
#[test]
fn a_synced_backup_stays_ready_through_loss_under_load() {
    let mut c = Cluster::new(2, 43, Mode::HotStandby);
    c.set_role(0, Role::Primary);
    c.set_role(1, Role::Backup);
    for i in 0..100 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(4));
    assert!(c.node(1).is_ready(), "ready once synced");
    c.net.faults = Faults {
        loss: 0.1,
        duplicate: 0.0,
        jitter: Duration::from_millis(2),
    };
    let mut gaps_seen = false;
    for step in 0..100 {
        for i in 0..50 {
            c.traffic(0, EventKind::New, flow(1000 + step * 50 + i));
        }
        c.run(Duration::from_millis(20));
        gaps_seen |= c.stream_gap(1);
        assert!(c.node(1).is_ready(), "not ready at step {step} under loss");
    }
    assert!(gaps_seen, "the test must see stream gaps to mean anything");
    c.heal_and_settle(Duration::from_secs(10));
    c.assert_converged(Mode::HotStandby);
}

/// A daemon that has just started cannot know yet that a peer is primary: it is not
/// ready until it has heard from its peers (or waited a dead interval for them), so a
/// restarted node is not made master with an empty copy.
#[test]
fn a_starting_backup_is_not_ready_before_it_hears_its_peers() {
    let mut c = Cluster::new(2, 43, Mode::HotStandby);
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    c.crash(1);
    c.boot(1);
    assert!(!c.node(1).is_ready(), "not ready at start");
    c.run(Duration::from_secs(3));
    assert!(
        c.node(1).is_ready(),
        "ready once the primary's table is here"
    );
    // Alone, a node becomes ready after a dead interval: nobody to wait for.
    c.crash(0);
    c.crash(1);
    c.boot(1);
    assert!(!c.node(1).is_ready());
    c.run(Duration::from_secs(4));
    assert!(
        c.node(1).is_ready(),
        "a lone node is ready after a dead interval"
    );
}

/// Found by bench/failover.sh: a hot-standby backup writing 200,000 replicated flows to its
/// kernel overran its own event socket; the re-read of the table took the primary's
/// flows for its own and sent them back. Flows a peer replicated are the peer's.
#[test]
fn a_backup_rereading_its_kernel_does_not_claim_replicated_flows() {
    let mut c = Cluster::new(2, 47, Mode::HotStandby);
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    assert_eq!(c.nodes[1].kernel.flows.len(), 300, "hot standby wrote them");
    let now = c.now;
    c.node(1).handle_kernel_overrun(now);
    c.drain(1);
    c.run(Duration::from_secs(3));
    assert_eq!(
        c.node(1).internal().len(),
        0,
        "the backup owns none of them"
    );
    assert!(
        c.node(0).external(2).is_none_or(|t| t.is_empty()),
        "the primary got nothing back"
    );
    c.assert_converged(Mode::HotStandby);
}

/// A cap on cache entries (like conntrackd's HashLimit): a backup whose copy would
/// exceed it refuses the rest, counts them, is not ready (its copy is incomplete), and
/// heals by itself through anti-entropy once the primary's table fits again.
#[test]
fn a_full_cache_refuses_counts_is_not_ready_and_heals() {
    let mut c = Cluster::new(2, 53, Mode::HotStandby);
    c.nodes[1].cfg.max_flows = 100;
    c.crash(1);
    c.boot(1);
    for i in 0..150 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(6));
    assert_eq!(c.node(1).external_len(), 100);
    assert!(c.node(1).stats().cache_full >= 50);
    assert!(!c.node(1).is_ready(), "an incomplete copy is not ready");
    assert_eq!(
        c.nodes[1].kernel.flows.len(),
        100,
        "nothing beyond the cap in the kernel"
    );
    for i in 0..80 {
        c.traffic(0, EventKind::Destroy, flow(i));
    }
    c.run(Duration::from_secs(15));
    assert_eq!(c.node(1).external_len(), 70);
    assert!(c.node(1).is_ready(), "healed by repair once it fits");
    c.assert_converged(Mode::HotStandby);
}

/// Found in review: a peer up for several key rotations (60 s each) before the other
/// verified it, or silent through a long partition, had its traffic dropped for good
/// (key ids alone cannot tell generations far apart). HELLO_ACK now carries the
/// generation, and a peer that was down is challenged again.
#[test]
fn late_joiners_and_long_partitions_survive_key_rotation() {
    let mut c = Cluster::new(3, 21, Mode::HotStandby);
    c.crash(2);
    let mut rng = Rng::new(77);
    let mut live = BTreeMap::new();
    let mut next = 0;
    // Nodes 1 and 2 run through five key rotations before node 3 starts.
    for _ in 0..5 {
        workload(&mut c, &mut rng, 20, &mut live, &mut next);
        c.run(Duration::from_secs(60));
    }
    c.boot(2);
    c.run(Duration::from_secs(10));
    c.assert_converged(Mode::HotStandby);
    // A partition of four minutes between the primary and node 2.
    c.partition(1, 2, Duration::from_secs(240));
    for _ in 0..4 {
        workload(&mut c, &mut rng, 20, &mut live, &mut next);
        c.run(Duration::from_secs(60));
    }
    c.run(Duration::from_secs(20));
    c.assert_converged(Mode::HotStandby);
}

/// Found in review: a backup restarting quickly, while a busy primary never goes idle,
/// could stay ignorant of the primary's role (announced once, when it changed), so none of
/// the primary's flows reached its kernel. Roles now travel in every datagram.
#[test]
fn a_quickly_restarted_backup_learns_the_busy_primarys_role() {
    let mut c = Cluster::new(2, 31, Mode::HotStandby);
    let mut rng = Rng::new(5);
    let mut live = BTreeMap::new();
    let mut next = 0;
    c.net.faults = Faults {
        loss: 0.2,
        duplicate: 0.0,
        jitter: Duration::from_millis(5),
    };
    workload(&mut c, &mut rng, 100, &mut live, &mut next);
    c.crash(1);
    c.boot(1);
    workload(&mut c, &mut rng, 200, &mut live, &mut next);
    c.heal_and_settle(Duration::from_secs(20));
    c.assert_converged(Mode::HotStandby);
    assert!(c.node(1).is_ready());
}

/// Found by the random test (seed 0): a restarted backup reported the primary's flows,
/// found in its own kernel, as its own; when they expired there, the other backup
/// deleted them from its kernel although the primary still had them.
#[test]
fn a_restarted_backup_cannot_delete_the_primarys_flows_elsewhere() {
    scenario(3, 0, Faults::NONE, Mode::HotStandby, true, false);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random seeds, random faults: after the faults stop, the caches converge.
    #[test]
    fn converges_after_random_faults(
        seed in any::<u64>(),
        nodes in 2u32..=3,
        loss in 0.0f64..0.3,
        dup in 0.0f64..0.2,
        jitter_ms in 0u64..40,
        commit in any::<bool>(),
        restarts in any::<bool>(),
        partitions in any::<bool>(),
    ) {
        let f = Faults { loss, duplicate: dup, jitter: Duration::from_millis(jitter_ms) };
        let mode = if commit { Mode::Commit } else { Mode::HotStandby };
        scenario(nodes, seed, f, mode, restarts, partitions);
    }
}

#[test]
fn elapsed_is_virtual() {
    let c = Cluster::new(2, 1, Mode::HotStandby);
    assert!(c.now >= c.start);
}

/// Everything a node chooses derives from its seed, and the simulator's faults from
/// the cluster's: the same seed gives the same datagrams, byte for byte, so a failing
/// seed replays exactly. (With hash tables seeded from the OS, bulk transfers and
/// expectations went out in a different order in every run.)
#[test]
fn the_same_seed_gives_byte_identical_datagrams() {
    fn run(seed: u64) -> Vec<(NodeId, NodeId, Vec<u8>)> {
        let mut c = Cluster::new(3, seed, Mode::HotStandby);
        c.record();
        let mut rng = Rng::new(seed);
        let mut live = BTreeMap::new();
        let mut next = 0;
        c.run(Duration::from_secs(1));
        c.net.faults = Faults {
            loss: 0.1,
            duplicate: 0.05,
            jitter: Duration::from_millis(3),
        };
        workload(&mut c, &mut rng, 150, &mut live, &mut next);
        c.crash(2);
        c.heal_and_settle(Duration::from_secs(5));
        c.trace().to_vec()
    }
    let first = run(11);
    assert!(first.len() > 100, "a trace worth comparing");
    assert!(first == run(11), "the same seed sent different datagrams");
    assert!(first != run(12), "another seed must differ");
}

/// Three nodes on one segment; someone there forwards every datagram node 1 sends to
/// node 2 to node 3 as well. The receiver's id is authenticated with each datagram, so
/// node 3 refuses them all (its stream from node 1 would otherwise take acknowledgements
/// and messages meant for node 2's) and its copy stays exact.
#[test]
fn a_datagram_for_one_peer_is_refused_by_another() {
    use ctsync_core::DropReason;
    let mut c = Cluster::new(3, 61, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    c.net.forward(1, 2, 3);
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
        if i % 10 == 0 {
            c.run(Duration::from_millis(20));
        }
    }
    for i in (0..300).step_by(3) {
        c.traffic(0, EventKind::Destroy, flow(i));
    }
    c.run(Duration::from_secs(3));
    let refused = c
        .node(2)
        .drops()
        .get(&DropReason::Authentication)
        .copied()
        .unwrap_or(0);
    assert!(
        refused > 10,
        "node 3 refused only {refused} forwarded datagrams"
    );
    c.assert_converged(Mode::HotStandby);
    c.heal_and_settle(Duration::from_secs(3));
    c.assert_converged(Mode::HotStandby);
}

/// A node whose clock was stepped back (NTP at boot) or that lost its state restarts
/// with a lower epoch than its peers verified. It must not be locked out: the lower
/// epoch answers a fresh challenge (which no recording can) and is taken, the backup
/// first, then the primary.
#[test]
fn a_node_restarting_with_a_lower_epoch_is_taken_after_a_challenge() {
    let mut c = Cluster::new(2, 71, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..200 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    c.assert_converged(Mode::HotStandby);
    for i in [1, 0] {
        let id = c.nodes[i].id;
        c.crash(i);
        c.run(Duration::from_millis(500));
        c.boot_with_epoch(i, u64::from(id)); // far below (1 << 32) | id
        for j in 200..250 {
            c.traffic(0, EventKind::New, flow(j + 100 * i as u32));
        }
        c.run(Duration::from_secs(4));
        let peer = c.node(1 - i).status().peers[0].clone();
        assert_eq!(peer.epoch, Some(u64::from(id)), "node {id}'s new epoch");
        assert!(peer.up);
        c.assert_converged(Mode::HotStandby);
    }
}

/// The primary's daemon crashes and restarts (keepalived keeps the node master): its
/// backup held a complete copy and stays ready at every step, so keepalived never puts
/// it in FAULT; the restarted primary's bulk transfer refreshes the copy, and the flows
/// that closed while no daemon listened are swept. Before, readiness dropped from the
/// new epoch until that bulk transfer ended.
#[test]
fn a_backup_stays_ready_while_the_primarys_daemon_restarts() {
    let mut c = Cluster::new(2, 41, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    assert!(c.node(1).is_ready(), "the backup's copy is complete");
    c.crash(0);
    // While no daemon listens, flows come and go in the primary's kernel.
    for i in 0..20 {
        c.nodes[0].kernel.flows.remove(&flow(i).key());
    }
    for i in 300..320 {
        c.nodes[0].kernel.flows.insert(flow(i).key(), flow(i));
    }
    c.run(Duration::from_millis(300));
    let restart = c.now;
    c.boot(0);
    c.run(Duration::from_secs(5));
    let dropped: Vec<_> = c.nodes[1]
        .readiness
        .iter()
        .filter(|(t, ready)| *t >= restart && !ready)
        .map(|(t, _)| *t - restart)
        .collect();
    assert!(
        dropped.is_empty(),
        "the backup said 'not ready' after the primary's restart, at {dropped:?}"
    );
    assert!(c.node(1).is_ready());
    c.assert_converged(Mode::HotStandby);
    assert_eq!(c.nodes[1].kernel.flows.len(), 300);
}

/// A daemon that starts as backup leaves alone the timers of every kernel entry a
/// primary owns (the role at start may be a guess; cutting the timeouts of a node that
/// is in fact serving would end its idle sessions). Once the primary's whole table has
/// arrived, only the entries it does not own are shortened: here the copy of a flow
/// that closed while the backup's daemon was down. A move from primary to backup
/// shortens them all.
#[test]
fn a_start_as_backup_shortens_only_what_no_primary_owns() {
    let mut c = Cluster::new(2, 43, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..50 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(2));
    assert_eq!(c.nodes[1].kernel.flows.len(), 50, "hot standby wrote them");
    c.crash(1);
    c.traffic(0, EventKind::Destroy, flow(7));
    c.boot(1);
    c.run(Duration::from_secs(2));
    let shortened: Vec<_> = c.nodes[1].kernel.expiry.keys().copied().collect();
    assert_eq!(
        shortened,
        vec![flow(7).key()],
        "only the copy of the flow that closed meanwhile expires soon"
    );
    c.run(Duration::from_secs(10));
    c.assert_converged(Mode::HotStandby);
    c.set_role(0, Role::Backup);
    c.set_role(1, Role::Primary);
    c.run(Duration::from_secs(1));
    c.set_role(1, Role::Backup);
    assert_eq!(
        c.nodes[1].kernel.expiry.len(),
        49,
        "a move from primary to backup shortens every timer"
    );
}

/// The serving node's daemon restarts and, with no word from keepalived yet, guesses
/// "backup": its peer is no primary, so nothing claims its kernel's entries and not one
/// timer is cut; keepalived's MASTER then makes it primary with every flow intact.
/// Before, any start as backup shortened every timeout in the kernel.
#[test]
fn a_serving_node_restarted_as_a_guessed_backup_keeps_its_timers() {
    let mut c = Cluster::new(2, 47, Mode::HotStandby);
    c.run(Duration::from_secs(2));
    for i in 0..50 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(2));
    c.crash(0);
    c.boot_as(0, 9 << 32, Role::Backup);
    c.run(Duration::from_secs(3));
    assert!(
        c.nodes[0].kernel.expiry.is_empty(),
        "a start with a guessed role cut {} timers",
        c.nodes[0].kernel.expiry.len()
    );
    c.set_role(0, Role::Primary);
    c.run(Duration::from_secs(10));
    assert_eq!(c.nodes[0].kernel.flows.len(), 50);
    c.assert_converged(Mode::HotStandby);
}

/// Issue 16: a hot-standby backup writes into its kernel only what changes it. On a
/// complete kernel a resync, a flush of the external cache with a resync, a bulk transfer
/// from the primary and a commit write nothing, again and again; a flow the kernel lost
/// is written again at once, and a flow the primary changed, once.
#[test]
fn a_complete_hot_standby_kernel_is_not_written_again() {
    let mut c = Cluster::with_config(2, 83, |cfg| {
        cfg.mode = Mode::HotStandby;
        cfg.digest_interval = Duration::from_secs(2);
        cfg.shorten_timeout = 5;
        // Timeout refreshes are counted apart; none falls in this test.
        cfg.refresh_interval = Duration::from_secs(3600);
    });
    c.run(Duration::from_secs(2));
    for i in 0..400 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(3));
    c.assert_converged(Mode::HotStandby);
    assert!(c.node(1).is_ready());
    let writes = c.nodes[1].kernel.writes;
    assert_eq!(writes, 400, "each flow written once");
    for round in 0..2 {
        let now = c.now;
        c.node(1).request_resync(now);
        c.drain(1);
        c.run(Duration::from_secs(3));
        assert_eq!(c.nodes[1].kernel.writes, writes, "round {round}: a resync");
        c.node(1).flush_external();
        c.node(1).request_resync(now);
        c.drain(1);
        c.run(Duration::from_secs(3));
        assert_eq!(
            c.nodes[1].kernel.writes, writes,
            "round {round}: flush, resync"
        );
        let now = c.now;
        c.node(0).bulk(now);
        c.drain(0);
        c.run(Duration::from_secs(3));
        assert_eq!(c.nodes[1].kernel.writes, writes, "round {round}: a bulk");
        assert_eq!(c.node(1).commit(), 0, "round {round}: nothing to commit");
        c.drain(1);
        assert_eq!(c.nodes[1].kernel.writes, writes, "round {round}: a commit");
        assert!(c.node(1).is_ready(), "round {round}");
        c.assert_converged(Mode::HotStandby);
    }
    assert_eq!(c.nodes[1].kernel.refreshes, 0);
    // The backup's kernel loses a flow (its destroy event arrives), and the primary
    // changes another: each is written at once, once; a resync writes nothing more.
    c.traffic(1, EventKind::Destroy, flow(7));
    let mut changed = flow(8);
    changed.mark = Some(5);
    c.traffic(0, EventKind::Update, changed);
    c.run(Duration::from_secs(1));
    assert_eq!(
        c.nodes[1].kernel.writes,
        writes + 2,
        "the lost flow and the change"
    );
    let now = c.now;
    c.node(1).request_resync(now);
    c.drain(1);
    c.run(Duration::from_secs(3));
    assert_eq!(c.nodes[1].kernel.writes, writes + 2, "a resync, nothing");
    c.assert_converged(Mode::HotStandby);
    // A commit writes what the kernel may no longer hold: someone else wrote a copy.
    let mut other = flow(9);
    other.mark = Some(6);
    c.traffic(1, EventKind::Update, other);
    assert_eq!(c.node(1).commit(), 1);
    c.drain(1);
    assert_eq!(c.nodes[1].kernel.writes, writes + 3);
    c.assert_converged(Mode::HotStandby);
}

/// Flows that live shorter than the sync delay never reach a hot-standby backup's
/// kernel, neither live nor by a transfer.
#[test]
fn flows_shorter_than_the_sync_delay_are_never_written() {
    let mut c = Cluster::with_config(2, 89, |cfg| {
        cfg.mode = Mode::HotStandby;
        cfg.sync_delay = Duration::from_secs(1);
        cfg.refresh_interval = Duration::from_secs(3600);
    });
    c.run(Duration::from_secs(2));
    for i in 0..100 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_millis(300));
    for i in 0..50 {
        c.traffic(0, EventKind::Destroy, flow(i));
    }
    // A transfer while the survivors are still held back.
    let now = c.now;
    c.node(0).bulk(now);
    c.drain(0);
    c.run(Duration::from_secs(4));
    assert_eq!(
        c.nodes[1].kernel.writes, 50,
        "only the flows that outlived the delay"
    );
    c.assert_converged(Mode::HotStandby);
}

/// A load that keeps the send queue to a slow backup full: the first overflow starts a
/// bulk transfer (a fresh stream), and while it runs, live messages that find the queue
/// full again are carried by that transfer (their flows' state when sent, deletions at
/// its end) instead of starting it over. Before, every overflow restarted the transfer,
/// so under a load that outpaced the backup it never ended (a million-flow load on the
/// lab restarted it three times).
#[test]
fn an_overflow_during_a_bulk_transfer_does_not_restart_it() {
    let mut c = Cluster::with_config(2, 91, |cfg| {
        cfg.mode = Mode::HotStandby;
        cfg.queue_limit = 100;
        cfg.window = 16;
        cfg.bulk_step = 8;
    });
    c.run(Duration::from_secs(2));
    // No virtual time passes between these: nothing is acknowledged, the queue fills.
    for i in 0..3000 {
        c.traffic(0, EventKind::New, flow(i));
    }
    for i in (0..3000).step_by(7) {
        c.traffic(0, EventKind::Destroy, flow(i));
    }
    let overflows = c.node(0).status().stats.overflows;
    c.run(Duration::from_secs(30));
    c.assert_converged(Mode::HotStandby);
    assert_eq!(
        overflows, 1,
        "one overflow started a transfer; the others rode on it"
    );
}

/// Hot standby's timeout refresh resets every round only the replicated flows whose
/// timeout is short (here 60 s), a UDP stream's (120 s) every other round; a long-lived
/// one (3,600 s) is reset once in 60 rounds
/// (half its timeout), by its hash: over 60 rounds each flow of both kinds is reset, the
/// long ones once each. Before, every flow was reset every 30 s, then every two minutes:
/// a million established flows cost a million kernel updates each time. A long-lived
/// copy the kernel lost behind the backup's back is written again at once.
#[test]
fn long_lived_flows_are_refreshed_in_turn() {
    let mut c = Cluster::with_config(2, 97, |cfg| {
        cfg.mode = Mode::HotStandby;
        cfg.refresh_interval = Duration::from_secs(30);
        cfg.digest_interval = Duration::from_secs(3600);
    });
    c.run(Duration::from_secs(2));
    for i in 0..200 {
        let mut f = flow(i);
        f.timeout = Some(3600);
        c.traffic(0, EventKind::New, f);
    }
    for i in 200..250 {
        let mut f = flow(i);
        f.timeout = Some(60);
        c.traffic(0, EventKind::New, f);
    }
    for i in 250..300 {
        let mut f = flow(i);
        f.timeout = Some(120);
        c.traffic(0, EventKind::New, f);
    }
    c.run(Duration::from_secs(3));
    let before = c.nodes[1].kernel.refreshes;
    c.run(Duration::from_secs(60 * 30));
    let refreshes = c.nodes[1].kernel.refreshes - before;
    assert_eq!(
        refreshes,
        50 * 60 + 50 * 30 + 200,
        "60 rounds: the 50 flows of 60 s each time, the 50 of 120 s (a UDP stream) every \
         other time, the 200 long-lived ones once"
    );
    c.assert_converged(Mode::HotStandby);

    // The kernel loses a long-lived copy (someone deletes it): its destroy event writes
    // it back at once, not at the next round (a takeover in between would miss it).
    let mut lost = flow(3);
    lost.timeout = Some(3600);
    c.traffic(1, EventKind::Destroy, lost.clone());
    assert!(
        c.nodes[1].kernel.flows.contains_key(&lost.key()),
        "the lost copy was not written back at once"
    );
    assert_eq!(c.node(1).status().stats.written_back, 1);
    c.run(Duration::from_secs(31));
    c.assert_converged(Mode::HotStandby);

    // The primary's own kernel destroying a flow is no copy lost: nothing is written.
    c.traffic(0, EventKind::Destroy, flow(4));
    assert_eq!(c.node(0).status().stats.written_back, 0);
    c.run(Duration::from_secs(3));
    assert!(!c.nodes[1].kernel.flows.contains_key(&flow(4).key()));
    assert_eq!(c.node(1).status().stats.written_back, 1);
    c.assert_converged(Mode::HotStandby);
}

/// Whether node `i` counts peer `peer` as up.
fn peer_up(c: &mut Cluster, i: usize, peer: NodeId) -> bool {
    c.node(i)
        .status()
        .peers
        .iter()
        .any(|p| p.id == peer && p.up)
}

/// `n` nodes configured as a daemon of `[namespaces]` configures its namespaces' nodes
/// (docs/PROTOCOL.md §14.4): keepalives 30 s apart, an unchanged digest every twelfth
/// digest interval.
fn namespace_cluster(n: u32, seed: u64) -> Cluster {
    Cluster::with_config(n, seed, |cfg| {
        cfg.keepalive_interval = Duration::from_secs(30);
        cfg.digest_unchanged_every = 12;
    })
}

/// The namespaces' nodes of a daemon of `[namespaces]` (docs/PROTOCOL.md §14.4): with
/// keepalives 30 s apart and digests a minute apart, what keeps two nodes up is the host
/// link's word (`peer_alive`) alone; they send next to nothing while idle, and go down
/// as soon as that word is said lost (`peer_word_lost`), a dead interval after they were
/// last heard. Without it, the same nodes go down.
#[test]
fn the_host_links_word_keeps_quiet_nodes_up_and_its_silence_takes_them_down() {
    let quiet = |cfg: &mut ctsync_core::Config| {
        cfg.keepalive_interval = Duration::from_secs(30);
        cfg.digest_interval = Duration::from_secs(60);
    };
    for host_link in [true, false] {
        let mut c = Cluster::with_config(2, 7, quiet);
        for i in 0..20 {
            c.traffic(0, EventKind::New, flow(i));
        }
        c.run(Duration::from_secs(2));
        assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
        c.record();
        // 20 s of idle, the host link hearing each side every half second.
        for _ in 0..40 {
            if host_link {
                let now = c.now;
                c.node(0).peer_alive(2, now);
                c.node(1).peer_alive(1, now);
            }
            c.run(Duration::from_millis(500));
        }
        let sent = c.trace().len();
        if !host_link {
            // Down after each dead interval, then challenged and up again: a flapping
            // that costs datagrams the host link's word saves.
            assert!(
                sent > 8,
                "without the host link's word, quiet nodes go down and challenge each other again ({sent} datagrams)"
            );
            continue;
        }
        assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
        assert!(sent <= 4, "{sent} datagrams in 20 s of idle");
        // The other host goes silent (its daemon and host link with it). The word holds
        // until its caller says it stopped: the host link says so when it declares the
        // peer host down, a dead interval (3 s) after it last heard it; the nodes, which
        // heard that host at the same moment, are down at once, not kept up by old news.
        c.partition(1, 2, Duration::from_secs(8));
        c.run(Duration::from_secs(3));
        assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
        c.node(0).peer_word_lost(2);
        c.node(1).peer_word_lost(1);
        c.run(Duration::from_millis(100));
        assert!(!peer_up(&mut c, 0, 2) && !peer_up(&mut c, 1, 1));
        // The word of a host link does not bring a link up: that takes the peer's
        // own proof of its epoch, which the nodes give each other once they hear again.
        let now = c.now;
        c.node(0).peer_alive(2, now);
        assert!(!peer_up(&mut c, 0, 2));
        c.run(Duration::from_secs(8));
        assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
        c.assert_converged(Mode::HotStandby);
    }
}

/// A quiet namespace's node (docs/PROTOCOL.md §14.4: keepalives 30 s apart, its digest
/// every 5 s but unchanged once a minute, the host link's word keeping its peer up)
/// wakes about once in fifteen seconds (40 times in ten minutes; 420 before), not every
/// dead interval or digest interval: each wake is a turn of its loop, and hundreds of
/// routers' turns were the daemon's idle cost. A change of its table still sends its
/// digest within a digest interval.
#[test]
fn a_quiet_namespace_node_sleeps_between_its_keepalives() {
    let mut c = namespace_cluster(2, 23);
    for i in 0..20 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(5));
    let before: Vec<u64> = c.nodes.iter().map(|n| n.wakes).collect();
    // Ten minutes of idle, the word given as the daemon's loop gives it: at each of its
    // turns (here every 10 s, as if something else woke it now and then).
    for _ in 0..60 {
        let now = c.now;
        c.node(0).peer_alive(2, now);
        c.node(1).peer_alive(1, now);
        c.run(Duration::from_secs(10));
    }
    for (i, n) in c.nodes.iter().enumerate() {
        let wakes = n.wakes - before[i];
        assert!(
            wakes <= 80,
            "node {} woke {wakes} times in 10 min of idle",
            i + 1
        );
    }
    assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
    // A change: the primary's digest reaches the backup within a digest interval of
    // the flow (its copy is complete and the digest agrees: ready).
    c.traffic(0, EventKind::New, flow(100));
    c.record();
    c.run(Duration::from_secs(6));
    let digests = c.trace().iter().filter(|(from, _, _)| *from == 1).count();
    assert!(digests >= 2, "the flow and a digest: {digests} datagrams");
    c.assert_converged(Mode::HotStandby);
}

/// A namespace gone from a host whose daemon lives: the host link still hears that host,
/// but the namespace's own node says nothing more. Its peer keeps it up on the host
/// link's word for three keepalive intervals at most, then declares it down.
#[test]
fn a_peer_silent_itself_is_not_kept_up_by_its_hosts_word_for_ever() {
    let mut c = Cluster::with_config(2, 17, |cfg| {
        cfg.keepalive_interval = Duration::from_secs(30);
        cfg.digest_interval = Duration::from_secs(60);
    });
    for i in 0..20 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(2));
    assert!(peer_up(&mut c, 0, 2));
    // Node 2's datagrams stop (its namespace is gone); its host is heard every 500 ms.
    c.partition(1, 2, Duration::from_secs(200));
    let mut down_after = None;
    for step in 0..240u32 {
        let now = c.now;
        c.node(0).peer_alive(2, now);
        c.run(Duration::from_millis(500));
        if !peer_up(&mut c, 0, 2) {
            down_after = Some(step / 2);
            break;
        }
    }
    let down_after = down_after.expect("node 2 kept up for 120 s on its host's word alone");
    // Its last own word was at most 30 s before the cut: down 90 s after that word and a
    // dead interval (3 s) later, not before the host link's word stopped counting.
    assert!((55..=95).contains(&down_after), "down after {down_after} s");
}

/// A router that the peer host does not hold never answers (a Neutron node with more
/// network nodes than replicas per router: every network node is a peer of every
/// router). Where the host link keeps liveness, the HELLOs to it go further and further
/// apart, up to the keepalive interval, instead of one every alive interval for ever
/// (1,200 in ten minutes, for every such router); the word of its host, which the host
/// link hears all along, does not bring them back. When the router appears, its own
/// HELLO brings ours with the answer: the link is up within a second.
#[test]
fn a_peer_that_never_answers_is_challenged_less_and_less_often() {
    let mut c = namespace_cluster(3, 29);
    c.crash(2);
    for i in 0..20 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.record();
    for _ in 0..120 {
        let now = c.now;
        for (i, peers) in [(0, [2, 3]), (1, [1, 3])] {
            for p in peers {
                c.node(i).peer_alive(p, now);
            }
        }
        c.run(Duration::from_secs(5));
    }
    let to_absent = |c: &Cluster| {
        c.trace()
            .iter()
            .filter(|(from, to, _)| *from != 3 && *to == 3)
            .count()
    };
    let asked = to_absent(&c);
    assert!(
        asked <= 60,
        "{asked} datagrams in 10 min to a peer that never answered"
    );
    assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
    c.boot(2);
    c.run(Duration::from_secs(1));
    assert!(
        peer_up(&mut c, 0, 3) && peer_up(&mut c, 1, 3) && peer_up(&mut c, 2, 1),
        "the peer that appeared is up within a second"
    );
    c.run(Duration::from_secs(12));
    c.assert_converged(Mode::HotStandby);
}

/// The other host cut off for two minutes, its host link silent with it (its word said
/// lost): the routers' links go down and their HELLOs grow far apart, unanswered. When
/// the host link hears that host again, its word brings each router's challenge at
/// once: both links are up within 200 ms of the word, not up to a keepalive interval
/// later.
#[test]
fn the_host_links_word_coming_back_challenges_at_once() {
    let mut c = namespace_cluster(2, 31);
    for i in 0..20 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(2));
    assert!(peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1));
    c.partition(1, 2, Duration::from_secs(120));
    c.node(0).peer_word_lost(2);
    c.node(1).peer_word_lost(1);
    c.run(Duration::from_secs(120));
    assert!(!peer_up(&mut c, 0, 2) && !peer_up(&mut c, 1, 1));
    c.run(Duration::from_millis(10));
    let now = c.now;
    c.node(0).peer_alive(2, now);
    c.node(1).peer_alive(1, now);
    c.run(Duration::from_millis(200));
    assert!(
        peer_up(&mut c, 0, 2) && peer_up(&mut c, 1, 1),
        "up within 200 ms of the host link's word"
    );
    c.run(Duration::from_secs(12));
    c.assert_converged(Mode::HotStandby);
}

/// With keepalives far apart, a change of role or readiness is still said at once (a
/// backup that keepalived puts in FAULT sends nothing else).
#[test]
fn quiet_nodes_say_a_new_role_at_once() {
    let mut c = Cluster::with_config(2, 11, |cfg| {
        cfg.keepalive_interval = Duration::from_secs(30);
        cfg.digest_interval = Duration::from_secs(60);
    });
    c.run(Duration::from_secs(5));
    let role_of_2 = |c: &mut Cluster| {
        c.node(0)
            .status()
            .peers
            .iter()
            .find(|p| p.id == 2)
            .and_then(|p| p.role)
    };
    assert_eq!(role_of_2(&mut c), Some(Role::Backup));
    c.set_role(1, Role::Fault);
    c.run(Duration::from_millis(100));
    assert_eq!(
        role_of_2(&mut c),
        Some(Role::Fault),
        "node 1 heard node 2's new role within 100 ms"
    );
}

/// With `digest_unchanged_every` 12 (a daemon's routers), an idle pair sends a digest
/// once a minute instead of every 5 s; a change goes out at the next interval; a peer
/// that restarts gets its bulk and a digest right after, and is ready again as soon as
/// without the setting.
#[test]
fn unchanged_digests_wait_and_changes_and_restarts_do_not() {
    let mut c = namespace_cluster(2, 13);
    for i in 0..50 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(12));
    c.record();
    for _ in 0..60 {
        let now = c.now;
        c.node(0).peer_alive(2, now);
        c.node(1).peer_alive(1, now);
        c.run(Duration::from_millis(500));
    }
    let idle = c.trace().len();
    // 30 s: at most one digest each way (and its acknowledgement), against 12 with
    // digests every 5 s.
    assert!(idle <= 6, "{idle} datagrams in 30 s of idle");
    c.record();
    c.traffic(0, EventKind::New, flow(1000));
    c.run(Duration::from_secs(6));
    c.assert_converged(Mode::HotStandby);
    // The backup restarts: bulk, digest, ready within the time it takes without the
    // setting (a few digest intervals at most).
    c.crash(1);
    c.run(Duration::from_secs(1));
    c.boot(1);
    c.run(Duration::from_secs(12));
    assert!(c.node(1).is_ready(), "the restarted backup is ready again");
    c.assert_converged(Mode::HotStandby);
}

/// With `digest_unchanged_every` 12, a copy that went wrong behind the protocol's back is
/// still found by the next digest that goes (within a minute) and repaired: the backup
/// says "not ready" meanwhile and is ready again, its copy exact.
#[test]
fn unchanged_digests_still_find_and_repair_a_difference_within_a_minute() {
    let mut c = Cluster::with_config(2, 17, |cfg| {
        cfg.digest_unchanged_every = 12;
    });
    for i in 0..300 {
        c.traffic(0, EventKind::New, flow(i));
    }
    c.run(Duration::from_secs(12));
    c.assert_converged(Mode::HotStandby);
    let tampered = c.now;
    c.tamper(1, 1, |ext| {
        ext.remove(&ext.keyed(flow(10).key()));
    });
    c.run(Duration::from_secs(70));
    assert!(
        c.nodes[1]
            .readiness
            .iter()
            .any(|&(t, ready)| t > tampered && !ready),
        "the difference was found: {:?}",
        c.nodes[1].readiness
    );
    assert!(c.node(1).is_ready(), "and repaired");
    c.assert_converged(Mode::HotStandby);
}

/// `flow(i)` as it would be had it been opened with another SNAT port.
fn renatted(i: u32) -> Flow {
    let mut f = flow(i);
    let r = f.reply;
    let port = |p: Option<u16>| p.unwrap_or(0);
    f.reply = Tuple::ports(
        r.proto,
        r.src,
        port(r.src_port()),
        IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1)),
        40000 + port(r.dst_port()) % 20000,
    );
    f
}

/// The backup's kernel still holds its own entries of tuples from when it served, with
/// other NAT ports; the primary holds those tuples as new flows (closed and opened again
/// meanwhile). After a takeover the kernel must hold the primary's reply tuples: an
/// update cannot change an entry's tuples (the simulated kernel keeps them, like the
/// real one), so the local entry must be deleted first, by the commit (commit mode) or
/// when the flow arrives (hot standby).
#[test]
fn a_takeover_replaces_local_entries_whose_nat_port_changed() {
    for mode in [Mode::Commit, Mode::HotStandby] {
        let mut c = Cluster::new(2, 47, mode);
        c.run(Duration::from_secs(2));
        for i in 0..30 {
            c.traffic(1, EventKind::New, renatted(i));
        }
        c.run(Duration::from_secs(2));
        for i in 0..30 {
            c.traffic(0, EventKind::New, flow(i));
        }
        c.run(Duration::from_secs(3));
        c.crash(0);
        c.set_role(1, Role::Primary);
        c.run(Duration::from_secs(1));
        let k = &c.nodes[1].kernel.flows;
        let primarys = (0..30)
            .filter(|&i| {
                k.get(&flow(i).key())
                    .is_some_and(|g| g.reply == flow(i).reply)
            })
            .count();
        assert_eq!(
            primarys, 30,
            "{mode:?}: entries with the primary's NAT after the takeover"
        );
    }
}
