//! Hostile datagrams against a running pair: every one is dropped, counted under its own
//! reason, and nothing reaches a cache or a kernel. No input panics. (Also the pair's
//! acknowledgement pacing, which needs the same back-to-back pair.)

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion
#![allow(clippy::disallowed_methods)] // the test plays the shell, which owns the clock

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ctnetlink::{EventKind, Flow, Tuple, ipproto};
use ctsync_core::sim::{Pair, pair_node};
use ctsync_core::{Config, DropReason, FlowEvent, KernelOp, Node, Role};
use ctsync_wire::{Cipher, ClusterSecret};
use proptest::prelude::*;

const PSK: [u8; 32] = [0x33; 32];

fn flow(i: u8) -> Flow {
    let t = Tuple::ports(
        ipproto::UDP,
        IpAddr::V4(Ipv4Addr::new(198, 18, 1, i)),
        5000,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 9)),
        53,
    );
    let mut f = Flow::new(t, t.inverse());
    f.timeout = Some(120);
    f
}

fn node(id: u32, epoch: u64, psk: &[u8], now: Instant) -> Node {
    pair_node(id, epoch, psk, Cipher::ChaCha20Poly1305, now, &|_| {})
}

/// Two nodes wired back to back (the simulator's pair), capturing what node 1 sends.
fn pair() -> Pair {
    Pair::new(&PSK)
}

fn deliver_to_b(p: &mut Pair, mut bytes: Vec<u8>) -> Result<(), DropReason> {
    p.b.handle_datagram(p.now, &mut bytes)
}

#[test]
fn the_pair_replicates() {
    let mut p = pair();
    p.a.handle_kernel_event(p.now, EventKind::New, &flow(1), false);
    p.settle(Duration::from_millis(200));
    assert_eq!(p.b.external_len(), 1);
    assert!(p.b.is_ready());
}

#[test]
fn garbage_is_dropped_and_counted() {
    let mut p = pair();
    for bytes in [
        vec![],
        vec![0u8; 10],
        vec![0xffu8; 100],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ] {
        assert!(deliver_to_b(&mut p, bytes).is_err());
    }
    let drops = p.b.drops();
    assert_eq!(
        drops.get(&DropReason::Malformed).copied().unwrap_or(0)
            + drops.get(&DropReason::BadMagic).copied().unwrap_or(0),
        4
    );
}

#[test]
fn truncated_forged_flipped_replayed_and_impersonating_datagrams_are_refused() {
    let mut p = pair();
    p.captured.clear();
    p.a.handle_kernel_event(p.now, EventKind::New, &flow(2), false);
    p.settle(Duration::from_millis(200));
    let genuine = p
        .captured
        .iter()
        .find(|d| d.len() > 60)
        .cloned()
        .expect("a datagram with the flow");
    let before = p.b.external_len();

    // Replayed as is.
    assert_eq!(
        deliver_to_b(&mut p, genuine.clone()),
        Err(DropReason::Replay)
    );
    // Truncated.
    for cut in [0, 5, 23, 24, 39, genuine.len() - 1] {
        assert!(
            deliver_to_b(&mut p, genuine[..cut].to_vec()).is_err(),
            "cut {cut}"
        );
    }
    // Every single bit flipped, one at a time: never accepted.
    for bit in 0..genuine.len() * 8 {
        let mut d = genuine.clone();
        d[bit / 8] ^= 1 << (bit % 8);
        assert!(
            deliver_to_b(&mut p, d).is_err(),
            "bit {bit} flipped was accepted"
        );
    }
    // Sealed under another key by a node that knows the format but not the secret.
    let mut outsider = node(1, 5 << 32, &[0x44; 32], p.now);
    let mut buf = Vec::new();
    outsider.set_role(p.now, Role::Primary);
    let mut forged = 0;
    while outsider.poll_transmit(p.now, &mut buf).is_some() {
        assert_eq!(
            deliver_to_b(&mut p, buf.clone()),
            Err(DropReason::Authentication)
        );
        forged += 1;
    }
    assert!(forged > 0);
    // Claiming to be this node, or a node that is not configured.
    let mut d = genuine.clone();
    d[4..8].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(deliver_to_b(&mut p, d), Err(DropReason::SelfNode));
    let mut d = genuine.clone();
    d[4..8].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(deliver_to_b(&mut p, d), Err(DropReason::UnknownNode));

    let drops = p.b.drops();
    for reason in [
        DropReason::Replay,
        DropReason::Authentication,
        DropReason::SelfNode,
        DropReason::UnknownNode,
        DropReason::Malformed,
    ] {
        assert!(
            drops.get(&reason).copied().unwrap_or(0) > 0,
            "no drop counted as {reason:?}: {drops:?}"
        );
    }
    assert_eq!(p.b.external_len(), before, "nothing injected");
    // The real link still works.
    p.a.handle_kernel_event(p.now, EventKind::New, &flow(3), false);
    p.settle(Duration::from_millis(200));
    assert_eq!(p.b.external_len(), before + 1);
}

/// A recorded epoch cannot be replayed: not into the running peer (stale), and not into
/// a peer that restarted and knows no epoch yet (it challenges, and a recording cannot
/// answer).
#[test]
fn a_recorded_epoch_cannot_be_replayed() {
    let mut p = pair();
    p.captured.clear();
    p.a.handle_kernel_event(p.now, EventKind::New, &flow(4), false);
    p.settle(Duration::from_millis(500));
    let recording = p.captured.clone();
    // Node 1 restarts with a newer epoch; node 2 verifies it.
    p.a = node(1, 3 << 32, &PSK, p.now);
    p.a.set_role(p.now, Role::Primary);
    p.settle(Duration::from_secs(2));
    let unverified = |p: &Pair| {
        p.b.drops()
            .get(&DropReason::Unverified)
            .copied()
            .unwrap_or(0)
    };
    let before = unverified(&p);
    for d in &recording {
        // Handshake frames of the old epoch may pass authentication (a lower epoch is
        // challenged like any other); nothing else of it counts.
        let _ = deliver_to_b(&mut p, d.clone());
    }
    assert!(unverified(&p) > before, "the recording's data was refused");
    p.settle(Duration::from_secs(2));
    let peer = &p.b.status().peers[0];
    assert_eq!(peer.epoch, Some(3 << 32), "the live epoch stays verified");
    assert_eq!(p.b.external_len(), p.a.internal().len());
    // Node 2 restarts and knows nothing: the old recording is not accepted either.
    p.b = node(2, 4 << 32, &PSK, p.now);
    p.b.set_role(p.now, Role::Backup);
    for d in &recording {
        let _ = deliver_to_b(&mut p, d.clone());
    }
    let mut buf = Vec::new();
    while p.b.poll_transmit(p.now, &mut buf).is_some() {} // its challenges go nowhere
    assert_eq!(p.b.external_len(), 0, "a recording planted flows");
    assert!(
        p.b.drops()
            .get(&DropReason::Unverified)
            .copied()
            .unwrap_or(0)
            > 0
    );
}

/// Online key rotation while flows keep coming: every node accepts the new key, then
/// every node sends with it, then the old one is dropped. Nothing is lost, no datagram
/// fails authentication, and afterwards the old key opens nothing.
#[test]
fn the_cluster_key_rotates_online_without_loss() {
    let mut p = pair();
    let old = || ClusterSecret::new(&PSK, Cipher::ChaCha20Poly1305).unwrap();
    let new = || ClusterSecret::new(&[0x77; 32], Cipher::ChaCha20Poly1305).unwrap();
    let mut n = 0u8;
    let mut traffic = |p: &mut Pair| {
        for _ in 0..20 {
            p.a.handle_kernel_event(p.now, EventKind::New, &flow(n), false);
            n = n.wrapping_add(1);
        }
        p.settle(Duration::from_millis(300));
    };
    traffic(&mut p);
    // 1. Everyone also accepts the new key (one node at a time, traffic in between).
    p.b.set_secrets(old(), vec![new()]).unwrap();
    traffic(&mut p);
    p.a.set_secrets(old(), vec![new()]).unwrap();
    traffic(&mut p);
    // 2. Everyone sends with it, still accepting the old one.
    p.a.set_secrets(new(), vec![old()]).unwrap();
    traffic(&mut p);
    p.b.set_secrets(new(), vec![old()]).unwrap();
    traffic(&mut p);
    // 3. The old key is gone.
    p.a.set_secrets(new(), Vec::new()).unwrap();
    p.b.set_secrets(new(), Vec::new()).unwrap();
    traffic(&mut p);
    p.settle(Duration::from_secs(6));
    assert_eq!(p.b.external_len(), 120, "every flow arrived");
    assert!(p.b.is_ready());
    for node in [&p.a, &p.b] {
        assert_eq!(
            node.drops().get(&DropReason::Authentication),
            None,
            "nothing failed authentication during the rotation"
        );
    }
    // A datagram sealed under the old key is now refused.
    let mut stale = node(1, 9 << 32, &PSK, p.now);
    stale.set_role(p.now, Role::Primary);
    let mut buf = Vec::new();
    stale.handle_timeout(p.now);
    assert!(stale.poll_transmit(p.now, &mut buf).is_some());
    assert_eq!(deliver_to_b(&mut p, buf), Err(DropReason::Authentication));
}

/// An authentic HELLO from a peer that speaks only other protocol versions is not
/// answered: counted under `Version`, reported, and its epoch never verified. One whose
/// range includes ours is answered as usual.
#[test]
fn a_peer_with_no_common_version_is_refused_and_reported() {
    use ctsync_core::Notify;
    use ctsync_wire::{FrameWriter, HEADER_LEN, Header, VERSION, WireRole};
    let now = Instant::now();
    let mut b = node(2, 1 << 40, &PSK, now);
    let secret = ClusterSecret::new(&PSK, Cipher::ChaCha20Poly1305).unwrap();
    let hello = |packet: u64, min: u8, max: u8| {
        let epoch = 5 << 40;
        let mut buf = Vec::new();
        Header {
            version: VERSION,
            key_id: 0,
            node: 1,
            epoch,
            packet,
        }
        .emit(&mut buf);
        FrameWriter::new(&mut buf).hello(99, min, max, WireRole::Primary, true);
        secret
            .traffic_key(1, epoch, 0)
            .unwrap()
            .seal(packet, &mut buf, HEADER_LEN, 2)
            .unwrap();
        buf
    };
    let mut d = hello(1, VERSION + 1, VERSION + 3);
    let _ = b.handle_datagram(now, &mut d);
    assert_eq!(b.drops().get(&DropReason::Version), Some(&1));
    let mut told = false;
    while let Some(n) = b.poll_notify() {
        told |= matches!(n, Notify::IncompatiblePeer { peer: 1, .. });
    }
    assert!(told, "the incompatible peer is reported");
    let mut d = hello(2, VERSION.saturating_sub(1), VERSION + 1);
    let _ = b.handle_datagram(now, &mut d);
    assert_eq!(
        b.drops().get(&DropReason::Version),
        Some(&1),
        "a compatible range passes"
    );
}

proptest! {
    /// Arbitrary bytes, and arbitrary bytes behind a genuine-looking header: no panic,
    /// nothing accepted.
    #[test]
    fn arbitrary_datagrams_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), node_id in 0u32..4, epoch in any::<u64>(), packet in any::<u64>(), kid in any::<u8>()) {
        let now = Instant::now();
        let mut b = node(2, 2 << 32, &PSK, now);
        let mut d = body.clone();
        prop_assert!(b.handle_datagram(now, &mut d).is_err());
        let mut d = Vec::new();
        d.extend_from_slice(&0xC75Cu16.to_be_bytes());
        d.push(1);
        d.push(kid);
        d.extend_from_slice(&node_id.to_be_bytes());
        d.extend_from_slice(&epoch.to_be_bytes());
        d.extend_from_slice(&packet.to_be_bytes());
        d.extend_from_slice(&body);
        prop_assert!(b.handle_datagram(now, &mut d).is_err());
        prop_assert_eq!(b.external_len(), 0);
    }
}

/// Flow control, not hostility, but on the same pair: a receiver acknowledges at once
/// when a quarter of the window has arrived, so that a sender with a full window (a bulk
/// transfer) does not sit out the ACK delay each time; a few messages wait for the delay.
#[test]
fn a_quarter_window_is_acknowledged_without_waiting_for_the_ack_delay() {
    let mut p = pair();
    let quarter = Config::new(1, vec![1, 2]).window / 4;
    let mut buf = Vec::new();
    let mut next = 0u32;
    for (count, ack_at_once) in [(100, false), (quarter + 100, true)] {
        // Let everything before settle, then hold the clock still.
        p.settle(Duration::from_millis(50));
        for _ in 0..count {
            let t = Tuple::ports(
                ipproto::UDP,
                IpAddr::V4(Ipv4Addr::from(0xC612_0000 + next)),
                5000,
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, 9)),
                53,
            );
            next += 1;
            p.a.handle_kernel_event(p.now, EventKind::New, &Flow::new(t, t.inverse()), false);
        }
        while p.a.poll_transmit(p.now, &mut buf).is_some() {
            p.b.handle_datagram(p.now, &mut buf).unwrap();
        }
        assert_eq!(
            p.b.poll_transmit(p.now, &mut buf).is_some(),
            ack_at_once,
            "{count} messages delivered"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Kernel events handed over in batches (keys hashed and slots prefetched first) do
    /// exactly what they do one by one: the same tables, and byte for byte the same
    /// datagrams, so the same messages in the same order. Events of one flow repeat
    /// within a batch (created, changed, destroyed, created again), some are our own.
    #[test]
    fn batched_kernel_events_equal_one_by_one(
        events in proptest::collection::vec((0u8..24, 0u8..3, 0u32..3, any::<bool>()), 1..300),
        cuts in proptest::collection::vec(1usize..70, 1..20),
    ) {
        let kind = |k: u8| match k {
            0 => EventKind::New,
            1 => EventKind::Update,
            _ => EventKind::Destroy,
        };
        let events: Vec<FlowEvent> = events
            .iter()
            .map(|&(i, k, mark, ours)| {
                let mut f = flow(i);
                f.mark = Some(mark);
                FlowEvent { kind: kind(k), flow: f, ours }
            })
            .collect();
        let mut one = pair();
        let mut batched = pair();
        one.captured.clear();
        batched.captured.clear();
        for e in &events {
            one.a.handle_kernel_event(one.now, e.kind, &e.flow, e.ours);
        }
        let mut rest = &events[..];
        for &n in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(n.min(rest.len()));
            batched.a.handle_kernel_events(batched.now, now);
            rest = later;
        }
        one.exchange();
        batched.exchange();
        prop_assert!(one.a.internal() == batched.a.internal());
        prop_assert!(one.b.external(1) == batched.b.external(1));
        prop_assert_eq!(one.a.stats(), batched.a.stats());
        prop_assert_eq!(&one.captured, &batched.captured);
    }
}

/// An event storm overruns the kernel's event socket again and again: each overrun is
/// counted, but the node asks for one read of the table, not one per overrun, and an
/// overrun while a read is under way gets exactly one more read after it.
#[test]
fn kernel_overruns_are_coalesced_into_one_table_read() {
    let mut p = pair();
    let dumps = |n: &mut Node| {
        std::iter::from_fn(|| n.poll_kernel_op())
            .filter(|op| *op == KernelOp::Dump)
            .count()
    };
    for _ in 0..5 {
        p.a.handle_kernel_overrun(p.now);
    }
    assert_eq!(p.a.stats().kernel_overruns, 5);
    assert_eq!(dumps(&mut p.a), 1, "five overruns, one read");
    p.a.begin_kernel_dump(p.now);
    p.a.handle_kernel_overrun(p.now);
    p.a.handle_kernel_overrun(p.now);
    assert_eq!(dumps(&mut p.a), 0, "not while a read is under way");
    p.a.end_kernel_dump(p.now);
    assert_eq!(dumps(&mut p.a), 1, "one more after it");
}
