//! Whole datagrams into a running node, from a peer whose epoch it has verified, so the
//! fuzzer reaches frames, streams, caches and repairs. Under `cfg(fuzzing)` the AEAD is
//! stubbed (sealing appends a zero tag; opening does not check it). Never a panic.
#![no_main]

use std::time::Instant;

use ctsync_core::Node;
use ctsync_core::sim::Pair;
use ctsync_wire::{Cipher, HEADER_LEN, Header, TAG_LEN, VERSION};
use libfuzzer_sys::fuzz_target;

const EPOCH_A: u64 = 1 << 32;

/// Node 2 after a handshake with node 1 (the simulator's pair), and the pair's clock.
fn verified_node() -> (Node, Instant) {
    let p = Pair::with(&[9u8; 32], Cipher::ChaCha20Poly1305, &|cfg| cfg.expected_flows = 64);
    (p.b, p.now)
}

fuzz_target!(|data: &[u8]| {
    let (mut b, now) = verified_node();
    // As is.
    let mut raw = data.to_vec();
    let _ = b.handle_datagram(now, &mut raw);
    // As bodies of datagrams from the verified peer: split on 0xFF bytes into several.
    for (i, body) in data.split(|&x| x == 0xff).enumerate() {
        let h = Header { version: VERSION, key_id: 1, node: 1, epoch: EPOCH_A, packet: 1_000 + i as u64 };
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
