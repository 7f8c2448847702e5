//! Untrusted bytes as a datagram from a conntrackd peer: into the FTFW session (never a
//! panic, whatever the sequence numbers and flags), and each message's flow through the
//! codec: a flow that decodes and encodes decodes again to the same flow; an
//! expectation that decodes and encodes is a fixed point after that (encoded again, the
//! same bytes; decoded again, the same expectation).
#![no_main]

use std::time::{Duration, Instant};

use ctsync::ftfw::codec::{decode_flow, encode_flow, messages};
use ctsync::ftfw::expect::{decode_expectation, encode_expectation};
use ctsync::ftfw::{Session, SessionConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig { ack_window: 3, resend_limit: 8, ..SessionConfig::default() }, 1, t0);
    s.handle_datagram(t0, data);
    s.handle_timeout(t0 + Duration::from_secs(2));
    let mut buf = Vec::new();
    for _ in 0..64 {
        if !s.poll_transmit(t0, &mut buf) {
            break;
        }
        assert!(buf.len() <= 1400 && messages(&buf).all(|m| m.is_ok()));
    }
    while s.poll_received().is_some() {}
    for m in messages(data).flatten() {
        if let Ok(e) = decode_expectation(m.body) {
            let mut once = Vec::new();
            if encode_expectation(&e, &mut once).is_ok() {
                let e1 = decode_expectation(&once).expect("an encoded expectation decodes");
                let mut twice = Vec::new();
                encode_expectation(&e1, &mut twice).expect("a decoded expectation encodes");
                assert_eq!(once, twice);
                assert_eq!(decode_expectation(&twice).as_ref(), Ok(&e1));
            }
        }
        let Ok(f) = decode_flow(m.body) else { continue };
        let mut body = Vec::new();
        if encode_flow(&f, &mut body).is_err() {
            continue;
        }
        let g = decode_flow(&body).expect("an encoded flow decodes");
        assert_eq!((g.orig, g.reply, g.zone, g.mark, g.timeout), (f.orig, f.reply, f.zone, f.mark, f.timeout));
        assert_eq!((g.labels, g.helper, g.master, g.seq_adj_orig), (f.labels, f.helper, f.master, f.seq_adj_orig));
        assert_eq!(g.status.unwrap_or_default(), f.status.unwrap_or_default());
    }
});
