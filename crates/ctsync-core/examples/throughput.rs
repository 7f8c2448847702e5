//! Single-core throughput of the replication core, and bytes on the wire per flow.
//!
//! Sender: kernel events in, sealed datagrams out (cache, queue, encode, batch, seal).
//! Receiver: datagrams in, flows applied (authenticate, replay-check, decode, cache,
//! kernel operation queued). Prints one JSON object. Run in release mode:
//! `cargo run --release -p ctsync-core --example throughput -- [FLOWS]`

#![allow(clippy::disallowed_methods)] // a benchmark owns the clock, like the daemon
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ctnetlink::{EventKind, Flow, L4, ProtoInfo, Status, TcpFlags, TcpInfo, Tuple, ipproto};
use ctsync_core::sim::Pair;
use ctsync_core::{FlowEvent, Node};
use ctsync_wire::Cipher;

fn flow(i: u32) -> Flow {
    let orig = Tuple::ports(
        ipproto::TCP,
        IpAddr::V4(Ipv4Addr::from(0xC612_0000 + (i & 0xffff))),
        10000 + (i >> 16) as u16,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        443,
    );
    let mut reply = orig.inverse();
    reply.dst = IpAddr::V4(Ipv4Addr::from(0xC613_8000 + i / 64000));
    reply.l4 = L4::Ports {
        src: 443,
        dst: 1024 + (i % 64000) as u16,
    };
    let mut f = Flow::new(orig, reply);
    f.status = Some(
        Status::SEEN_REPLY
            | Status::ASSURED
            | Status::CONFIRMED
            | Status::SRC_NAT
            | Status::SRC_NAT_DONE
            | Status::DST_NAT_DONE,
    );
    f.timeout = Some(431_999);
    let fl = TcpFlags { flags: 3, mask: 0 };
    f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: Some(3),
        wscale_orig: Some(7),
        wscale_reply: Some(7),
        flags_orig: Some(fl),
        flags_reply: Some(fl),
    }));
    f
}

/// Two nodes back to back (the simulator's pair), handshakes done, sized for `n` flows,
/// and the pair's clock.
fn pair(cipher: Cipher, n: usize) -> (Node, Node, Instant) {
    let p = Pair::with(&[7u8; 32], cipher, &|cfg| cfg.expected_flows = n);
    (p.a, p.b, p.now)
}

struct Pass {
    send: Duration,
    recv: Duration,
    bytes: usize,
    datagrams: usize,
}

/// One pass: every flow as a kernel event on node 1, its datagrams into node 2, and
/// node 2's acknowledgements back, in batches as on a live link (so that in-flight
/// queues stay within the window instead of holding the whole table). Sender time is
/// node 1's work (events, datagrams, acknowledgements); receiver time is node 2's.
fn pass(a: &mut Node, b: &mut Node, flows: &[Flow], kind: EventKind, now: Instant) -> Pass {
    let mut buf = Vec::with_capacity(2048);
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let (mut send, mut recv) = (Duration::ZERO, Duration::ZERO);
    let (mut bytes, mut datagrams) = (0usize, 0usize);
    // Events as the daemon hands them over: in batches, decoded (not timed here).
    let events: Vec<FlowEvent> = flows
        .iter()
        .map(|f| FlowEvent {
            kind,
            flow: f.clone(),
            ours: false,
        })
        .collect();
    for chunk in events.chunks(4096) {
        let t = Instant::now();
        a.handle_kernel_events(now, chunk);
        batch.clear();
        while a.poll_transmit(now, &mut buf).is_some() {
            bytes += buf.len();
            batch.push(buf.clone());
        }
        send += t.elapsed();
        datagrams += batch.len();
        let t = Instant::now();
        for d in &mut batch {
            b.handle_datagram(now, d).unwrap();
        }
        while b.poll_kernel_op().is_some() {}
        let ack_at = now + Duration::from_millis(10);
        batch.clear();
        while b.poll_transmit(ack_at, &mut buf).is_some() {
            batch.push(buf.clone());
        }
        recv += t.elapsed();
        let t = Instant::now();
        for d in &mut batch {
            let _ = a.handle_datagram(ack_at, d);
        }
        send += t.elapsed();
    }
    assert_eq!(b.external_len(), flows.len(), "every flow applied");
    Pass {
        send,
        recv,
        bytes,
        datagrams,
    }
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut out = Vec::new();
    for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
        let (mut a, mut b, now) = pair(cipher, n as usize);
        let mut flows: Vec<Flow> = (0..n).map(flow).collect();
        // Cold: the caches fill for the first time (memory touched for the first time).
        let cold = pass(&mut a, &mut b, &flows, EventKind::New, now);
        // Steady: every flow changes again, on warm caches (a daemon's normal state).
        for f in &mut flows {
            f.mark = Some(7);
        }
        let steady = pass(
            &mut a,
            &mut b,
            &flows,
            EventKind::Update,
            now + Duration::from_millis(20),
        );
        for (name, p) in [("cold", cold), ("steady", steady)] {
            out.push(format!(
                "{{\"cipher\":\"{cipher:?}\",\"pass\":\"{name}\",\"flows\":{n},\"send_flows_per_s\":{:.0},\"receive_flows_per_s\":{:.0},\"wire_bytes_per_flow\":{:.2},\"flows_per_datagram\":{:.1}}}",
                f64::from(n) / p.send.as_secs_f64(),
                f64::from(n) / p.recv.as_secs_f64(),
                p.bytes as f64 / f64::from(n),
                f64::from(n) / p.datagrams as f64,
            ));
        }
    }
    println!("[{}]", out.join(",\n "));
}
