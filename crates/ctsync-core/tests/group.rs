//! The multicast group transport in the cluster simulator (docs/PROTOCOL.md §13): live
//! replication goes once to the group, every receiver acknowledges it by unicast, a
//! receiver that falls behind is served by its own stream (a bulk transfer) without
//! holding up the others, and joins again. The simulated network delivers a group
//! datagram to every node, each copy with its own faults.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion
#![allow(clippy::disallowed_methods)] // the simulator plays the shell, which owns the clock

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ctnetlink::{EventKind, Flow, ProtoInfo, Status, TcpInfo, Tuple, ipproto};
use ctsync_core::sim::{Cluster, Faults, Rng};
use ctsync_core::{Config, FlowTable, Mode};
use ctsync_wire::{GROUP, NodeId};

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

/// The simulator's usual settings ([`Cluster::new`]), with or without the group.
fn settings(mode: Mode, group: bool) -> impl Fn(&mut Config) {
    move |cfg| {
        cfg.mode = mode;
        cfg.digest_interval = Duration::from_secs(2);
        cfg.shorten_timeout = 5;
        cfg.group = group;
    }
}

/// Peers in node `i`'s group now: admitted and not taken out since.
fn members(c: &mut Cluster, i: usize) -> u64 {
    let s = c.node(i).stats();
    s.group_joins - s.group_evictions
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

/// `nodes` nodes with a group under `faults` (and a partition and a restart when
/// asked): after the faults stop every copy is exact, the live flows went to the group,
/// and every peer is back in the primary's group.
fn scenario(nodes: u32, seed: u64, faults: Faults, mode: Mode, restarts: bool, partitions: bool) {
    let mut c = Cluster::with_config(nodes, seed, settings(mode, true));
    let mut rng = Rng::new(seed.wrapping_mul(31));
    let mut live = BTreeMap::new();
    let mut next = 0;
    c.run(Duration::from_secs(2));
    assert_eq!(
        members(&mut c, 0),
        u64::from(nodes - 1),
        "every peer joined"
    );
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
    let s = c.node(0).stats();
    assert!(
        s.group_datagrams_sent >= 100,
        "live flows went to the group: {s:?}"
    );
    assert_eq!(
        members(&mut c, 0),
        u64::from(nodes - 1),
        "every peer is back in the group"
    );
}

#[test]
fn three_nodes_on_a_group_under_loss_duplication_reordering() {
    let f = Faults {
        loss: 0.2,
        duplicate: 0.05,
        jitter: Duration::from_millis(10),
    };
    scenario(3, 17, f, Mode::HotStandby, false, false);
}

#[test]
fn three_nodes_on_a_group_with_partition_and_restart() {
    let f = Faults {
        loss: 0.1,
        duplicate: 0.05,
        jitter: Duration::from_millis(10),
    };
    scenario(3, 19, f, Mode::Commit, true, true);
}

#[test]
fn five_nodes_on_a_group_with_loss_partition_and_restart() {
    let f = Faults {
        loss: 0.1,
        duplicate: 0.02,
        jitter: Duration::from_millis(5),
    };
    scenario(5, 23, f, Mode::HotStandby, true, true);
}

/// Flows `from..to` as one read of the primary's event socket.
fn burst(c: &mut Cluster, from: u32, to: u32) {
    c.traffic_batch(0, (from..to).map(|i| (EventKind::New, flow(i))).collect());
}

fn external_len(c: &mut Cluster, i: usize) -> usize {
    c.node(i).external(1).map_or(0, FlowTable::len)
}

/// One receiver is slow (everything to it arrives 300 ms late): the group window would
/// wait for its acknowledgements, so it is taken out (its own stream brings it the
/// table) and the others' copies are complete while it is still catching up; then it
/// joins again and every copy is exact.
fn slow_receiver(nodes: u32, seed: u64) {
    let mut c = Cluster::with_config(nodes, seed, |cfg| {
        settings(Mode::HotStandby, true)(cfg);
        cfg.window = 256;
    });
    c.run(Duration::from_secs(2));
    assert_eq!(
        members(&mut c, 0),
        u64::from(nodes - 1),
        "every peer joined"
    );
    let slow = nodes as usize - 1;
    c.net.slow(nodes, Duration::from_millis(300));
    let flows = 4000;
    for b in 0..20 {
        burst(&mut c, b * 200, (b + 1) * 200);
        c.run(Duration::from_millis(10));
    }
    c.run(Duration::from_millis(100));
    for i in 1..slow {
        assert_eq!(
            external_len(&mut c, i),
            flows as usize,
            "fast receiver {} is complete",
            i + 1
        );
    }
    let behind = external_len(&mut c, slow);
    assert!(
        behind < flows as usize,
        "the slow receiver is still catching up ({behind})"
    );
    assert!(
        c.node(0).stats().group_evictions >= 1,
        "the slow receiver was taken out of the group"
    );
    c.heal_and_settle(Duration::from_secs(15));
    c.assert_converged(Mode::HotStandby);
    assert_eq!(
        members(&mut c, 0),
        u64::from(nodes - 1),
        "the slow receiver joined again"
    );
}

#[test]
fn a_slow_receiver_does_not_stall_two_others() {
    slow_receiver(3, 29);
}

#[test]
fn a_slow_receiver_does_not_stall_four_others() {
    slow_receiver(5, 31);
}

/// Bytes on the sync link per flow replicated (everything every node sent, a group
/// datagram once), `flows` new flows in reads of 100 every 10 ms.
fn bytes_per_flow(nodes: u32, group: bool) -> f64 {
    let mut c = Cluster::with_config(nodes, 37, settings(Mode::HotStandby, group));
    c.run(Duration::from_secs(2));
    if group {
        assert_eq!(
            members(&mut c, 0),
            u64::from(nodes - 1),
            "every peer joined"
        );
    }
    c.record();
    let flows = 5000;
    for b in 0..flows / 100 {
        burst(&mut c, b * 100, (b + 1) * 100);
        c.run(Duration::from_millis(10));
    }
    c.run(Duration::from_millis(500));
    for i in 1..nodes as usize {
        assert_eq!(external_len(&mut c, i), flows as usize);
    }
    let to_group = c.trace().iter().filter(|(_, to, _)| *to == GROUP).count();
    assert_eq!(to_group > 0, group, "group datagrams only with a group");
    let bytes: usize = c.trace().iter().map(|(_, _, b)| b.len()).sum();
    bytes as f64 / f64::from(flows)
}

/// With three nodes on a group the link carries per flow what it carries with two
/// nodes (plus a second receiver's acknowledgements), not twice as much.
#[test]
fn three_nodes_on_a_group_cost_the_bytes_of_two() {
    let two = bytes_per_flow(2, false);
    let three = bytes_per_flow(3, true);
    let three_unicast = bytes_per_flow(3, false);
    eprintln!(
        "bytes per flow: two nodes {two:.1}, three on a group {three:.1}, three by unicast {three_unicast:.1}"
    );
    assert!(
        three < two * 1.1,
        "three nodes on a group: {three:.1} B/flow, two nodes: {two:.1}"
    );
    assert!(
        three_unicast > two * 1.8,
        "three nodes by unicast: {three_unicast:.1} B/flow, two nodes: {two:.1}"
    );
}

/// A group datagram is sealed for the group's reserved receiver id: handed to a node as
/// a unicast datagram it fails authentication, and a unicast datagram (one for another
/// node) handed in as a group one fails too; a group datagram taken once is a replay
/// the second time.
#[test]
fn group_and_unicast_datagrams_cannot_stand_in_for_each_other() {
    use ctsync_core::DropReason;
    let mut c = Cluster::with_config(3, 41, settings(Mode::HotStandby, true));
    c.run(Duration::from_secs(2));
    c.record();
    burst(&mut c, 0, 50);
    // Sent, not delivered yet (the network delivers while the cluster runs).
    let group = c
        .trace()
        .iter()
        .find(|(from, to, _)| *from == 1 && *to == GROUP)
        .map(|(.., b)| b.clone())
        .expect("a group datagram");
    let now = c.now;
    let n = c.node(1);
    assert_eq!(
        n.handle_datagram(now, &mut group.clone()),
        Err(DropReason::Authentication)
    );
    assert_eq!(n.handle_group_datagram(now, &mut group.clone()), Ok(()));
    assert_eq!(
        n.handle_group_datagram(now, &mut group.clone()),
        Err(DropReason::Replay)
    );
    c.run(Duration::from_secs(1));
    let to_three = c
        .trace()
        .iter()
        .find(|(from, to, b)| *from == 1 && *to == 3 && b[3] != 0)
        .map(|(.., b)| b.clone())
        .expect("a datagram to node 3 under the traffic key");
    let now = c.now;
    assert_eq!(
        c.node(1).handle_group_datagram(now, &mut to_three.clone()),
        Err(DropReason::Authentication)
    );
    c.run(Duration::from_secs(1));
    c.assert_converged(Mode::HotStandby);
}

/// The same seed gives the same datagrams, byte for byte, with a group too (nothing in
/// the group's bookkeeping depends on anything but the seed).
#[test]
fn the_same_seed_gives_byte_identical_datagrams_on_a_group() {
    fn run(seed: u64) -> Vec<(NodeId, NodeId, Vec<u8>)> {
        let mut c = Cluster::with_config(3, seed, settings(Mode::HotStandby, true));
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
    assert!(
        first.iter().filter(|(_, to, _)| *to == GROUP).count() > 50,
        "a trace with group datagrams"
    );
    assert!(first == run(11), "the same seed sent different datagrams");
    assert!(first != run(12), "another seed must differ");
}

/// Roles change hands: the new primary's flows go to its own group, the old primary's
/// bulk and deletions too, and every copy ends exact (commit mode: caches only).
#[test]
fn a_new_primary_replicates_on_its_own_group() {
    let mut c = Cluster::with_config(3, 43, settings(Mode::Commit, true));
    c.run(Duration::from_secs(2));
    burst(&mut c, 0, 500);
    c.run(Duration::from_secs(1));
    c.set_role(0, ctsync_core::Role::Backup);
    c.set_role(1, ctsync_core::Role::Primary);
    c.run(Duration::from_secs(1));
    c.traffic_batch(1, (1000..1500).map(|i| (EventKind::New, flow(i))).collect());
    c.run(Duration::from_secs(1));
    c.net.faults = Faults {
        loss: 0.1,
        duplicate: 0.0,
        jitter: Duration::from_millis(2),
    };
    c.traffic_batch(
        1,
        (1000..1200)
            .map(|i| (EventKind::Destroy, flow(i)))
            .collect(),
    );
    c.heal_and_settle(Duration::from_secs(10));
    c.assert_converged(Mode::Commit);
    let s = c.node(1).stats();
    assert!(
        s.group_messages_sent >= 500,
        "the new primary's flows went to its group: {s:?}"
    );
    assert_eq!(members(&mut c, 1), 2, "both others take its group");
}

/// One receiver's port loses a fifth of what reaches it: what it misses is sent to it
/// alone (GROUP_DATA after its GROUP_NACK), not to the group again, and every copy ends
/// exact.
#[test]
fn what_one_receiver_misses_is_repaired_for_it_alone() {
    let mut c = Cluster::with_config(3, 47, settings(Mode::HotStandby, true));
    c.run(Duration::from_secs(2));
    c.net.lossy(3, 0.2);
    for b in 0..30 {
        burst(&mut c, b * 100, (b + 1) * 100);
        c.run(Duration::from_millis(20));
    }
    c.run(Duration::from_secs(2));
    assert_eq!(
        external_len(&mut c, 1),
        3000,
        "the other receiver is complete"
    );
    c.heal_and_settle(Duration::from_secs(5));
    c.assert_converged(Mode::HotStandby);
    let s = c.node(0).stats();
    assert!(
        s.group_repaired >= 100,
        "repairs went to the lossy receiver: {s:?}"
    );
    // (Retransmissions to the group: losses no later message revealed before the
    // retransmission timeout, and messages counted again that did not fit a datagram.)
    assert!(
        s.group_retransmitted * 2 < s.group_repaired,
        "most of what it missed was not sent to the group again: {s:?}"
    );
    assert_eq!(members(&mut c, 0), 2, "nobody was taken out");
}
