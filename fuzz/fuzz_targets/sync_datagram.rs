//! Whole datagrams into a running node, from a peer whose epoch it has verified, so the
//! fuzzer reaches frames, streams, caches and repairs. Under `cfg(fuzzing)` the AEAD is
//! stubbed (sealing appends a zero tag; opening does not check it). Never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ctsync_core::{Config, Node, Role};
use ctsync_wire::{Cipher, ClusterSecret, HEADER_LEN, Header, TAG_LEN};
use libfuzzer_sys::fuzz_target;

const EPOCH_A: u64 = 1 << 32;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Node 2 after a handshake with node 1 (both in process).
fn verified_node() -> Node {
    let now = base();
    let secret = || ClusterSecret::new(&[9u8; 32], Cipher::ChaCha20Poly1305).expect("32-byte key");
    let small = |id| Config {
        expected_flows: 64,
        ..Config::new(id, vec![1, 2])
    };
    let mut a = Node::new(small(1), secret(), EPOCH_A, 1, now).expect("node 1");
    let mut b = Node::new(small(2), secret(), 2 << 32, 2, now).expect("node 2");
    a.set_role(now, Role::Primary);
    b.set_role(now, Role::Backup);
    let mut buf = Vec::new();
    for step in 0..50u64 {
        let t = now + Duration::from_millis(step * 10);
        while a.poll_transmit(t, &mut buf).is_some() {
            let _ = b.handle_datagram(t, &mut buf);
        }
        while b.poll_transmit(t, &mut buf).is_some() {
            let _ = a.handle_datagram(t, &mut buf);
        }
        while a.poll_kernel_op().is_some() {}
        while b.poll_kernel_op().is_some() {}
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let mut b = verified_node();
    let now = base() + Duration::from_secs(1);
    // As is.
    let mut raw = data.to_vec();
    let _ = b.handle_datagram(now, &mut raw);
    // As bodies of datagrams from the verified peer: split on 0xFF bytes into several.
    for (i, body) in data.split(|&x| x == 0xff).enumerate() {
        let h = Header { version: 1, key_id: 1, node: 1, epoch: EPOCH_A, packet: 1_000 + i as u64 };
        let mut d = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        h.emit(&mut d);
        d.extend_from_slice(body);
        d.extend_from_slice(&[0u8; TAG_LEN]);
        let _ = b.handle_datagram(now, &mut d);
        b.handle_timeout(now);
        let mut buf = Vec::new();
        for _ in 0..10_000 {
            if b.poll_transmit(now, &mut buf).is_none() {
                break;
            }
        }
        while b.poll_kernel_op().is_some() {}
        while b.poll_notify().is_some() {}
    }
});
