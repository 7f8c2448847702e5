use std::collections::BTreeSet;

use ctnetlink::{Expectation, Flow, Name, Tuple, ipproto};

use super::*;
use crate::ftfw::codec::messages;

fn flow(i: u16) -> Flow {
    let o = Tuple::ports(
        ipproto::UDP,
        "198.18.1.100".parse().unwrap(),
        10_000 + i,
        "198.19.0.100".parse().unwrap(),
        7001,
    );
    let mut f = Flow::new(o, o.inverse());
    f.timeout = Some(120);
    f
}

fn cfg() -> SessionConfig {
    SessionConfig {
        ack_window: 5,
        ..SessionConfig::default()
    }
}

/// Carry every datagram from `a` to `b`, dropping those `drop` picks (by index).
fn carry(
    a: &mut Session,
    b: &mut Session,
    now: Instant,
    drop: &mut dyn FnMut(usize) -> bool,
) -> usize {
    let mut buf = Vec::new();
    let mut n = 0;
    for _ in 0..10_000 {
        if !a.poll_transmit(now, &mut buf) {
            break;
        }
        if !drop(n) {
            b.handle_datagram(now, &buf);
        }
        n += 1;
    }
    n
}

fn received_ports(s: &mut Session) -> BTreeSet<u16> {
    let mut got = BTreeSet::new();
    while let Some(r) = s.poll_received() {
        if let Received::Upsert(f) = r {
            got.insert(f.orig.src_port().unwrap());
        }
    }
    got
}

#[test]
fn flows_arrive_through_loss_by_nack_and_the_resend_queue_empties() {
    let t0 = Instant::now();
    let mut a = Session::new(cfg(), 1_000, t0);
    let mut b = Session::new(cfg(), 5_000_000, t0);
    let mut got = BTreeSet::new();
    // The handshake first: while HELLO rides on a message its number is not checked
    // for gaps (conntrackd's rule).
    a.request_resync();
    carry(&mut a, &mut b, t0, &mut |_| false);
    let t0 = t0 + Duration::from_millis(1100);
    b.handle_timeout(t0);
    carry(&mut b, &mut a, t0, &mut |_| false);
    assert!(a.hello_done());
    assert_eq!(b.poll_received(), Some(Received::Resync));
    for i in 0..200 {
        a.send_flow(FlowMessage::New, &flow(i)).unwrap();
    }
    // Every third datagram is lost on the way.
    carry(&mut a, &mut b, t0, &mut |n| n % 3 == 1);
    got.extend(received_ports(&mut b));
    // Bounded rounds of: B answers (ACKs, NACKs), A sends again, idle seconds pass.
    let mut now = t0;
    for _ in 0..20 {
        now += Duration::from_millis(1100);
        b.handle_timeout(now);
        carry(&mut b, &mut a, now, &mut |_| false);
        a.handle_timeout(now);
        carry(&mut a, &mut b, now, &mut |_| false);
        got.extend(received_ports(&mut b));
        if got.len() == 200 && a.backlog().1 <= 1 {
            break;
        }
    }
    assert_eq!(got.len(), 200, "every flow arrived");
    assert!(b.stats.gaps > 0, "the losses were seen as gaps");
    assert!(a.stats.resent > 0, "and sent again on NACK");
    // Everything acknowledged but the last ACK (ACKs are acknowledged too, as
    // conntrackd's are: one is always in flight on a live link).
    assert_eq!(a.backlog().0, 0);
    assert!(a.backlog().1 <= 1, "{:?}", a.backlog());
    assert!(a.hello_done() && b.hello_done());
}

#[test]
fn hello_until_hello_back_then_window_acks_and_alive() {
    let t0 = Instant::now();
    let mut a = Session::new(cfg(), 77, t0);
    let mut buf = Vec::new();
    a.request_resync();
    assert!(a.poll_transmit(t0, &mut buf));
    let m = messages(&buf).next().unwrap().unwrap();
    assert_eq!(m.flags, flag::RESYNC | flag::HELLO);
    assert_eq!(m.range, Some((0, 0)));
    assert_eq!(m.seq, 77);
    // Idle for a second: ALIVE, still with HELLO.
    assert!(!a.poll_transmit(t0, &mut buf));
    a.handle_timeout(t0 + Duration::from_secs(1));
    assert!(a.poll_transmit(t0, &mut buf));
    let m = messages(&buf).next().unwrap().unwrap();
    assert_eq!(
        (m.flags, m.seq, buf.len()),
        (flag::ALIVE | flag::HELLO, 78, 8)
    );

    // The peer: five data messages, the first with HELLO; a window of 5 is one ACK,
    // which carries HELLO_BACK.
    let mut d = Vec::new();
    for i in 0..5u32 {
        let mut body = Vec::new();
        codec::encode_flow(&flow(i as u16), &mut body).unwrap();
        let flags = if i == 0 { flag::HELLO } else { 0 };
        codec::put_state(&mut d, kind::CT_NEW, flags, 1000 + i, &body).unwrap();
    }
    a.handle_datagram(t0, &d);
    assert_eq!(a.stats.flows_received, 5);
    assert!(a.poll_transmit(t0, &mut buf));
    let m = messages(&buf).next().unwrap().unwrap();
    assert_eq!(m.class(), Some(Class::Ack));
    assert_eq!(m.range, Some((1000, 1004)));
    assert_ne!(m.flags & flag::HELLO_BACK, 0);
    // A gap: 1010 after 1004 is NACK 1005..=1009; an old number is dropped.
    let mut d = Vec::new();
    codec::put_control(&mut d, flag::ALIVE | flag::HELLO_BACK, 1010, None);
    codec::put_control(&mut d, flag::ALIVE, 1003, None);
    a.handle_datagram(t0, &d);
    assert!(a.hello_done());
    assert!(a.poll_transmit(t0, &mut buf));
    let ranges: Vec<_> = messages(&buf)
        .map(|m| m.unwrap())
        .map(|m| (m.class().unwrap(), m.range))
        .collect();
    assert_eq!(ranges, vec![(Class::Nack, Some((1005, 1009)))]);
    assert_eq!(a.stats.old_dropped, 1);
    // Without HELLO now.
    assert_eq!(
        messages(&buf).next().unwrap().unwrap().flags & flag::HELLO,
        0
    );
}

#[test]
fn a_resync_request_and_deletions_reach_the_caller_and_garbage_is_counted() {
    let t0 = Instant::now();
    let mut a = Session::new(cfg(), 1, t0);
    let mut d = Vec::new();
    codec::put_control(&mut d, flag::RESYNC | flag::HELLO, 50, Some((0, 0)));
    let mut body = Vec::new();
    codec::encode_flow(&flow(9), &mut body).unwrap();
    codec::put_state(&mut d, kind::CT_DEL, 0, 51, &body).unwrap();
    d.extend_from_slice(&[0x10, 0, 0, 3]);
    a.handle_datagram(t0, &d);
    assert_eq!(a.poll_received(), Some(Received::Resync));
    assert!(
        matches!(a.poll_received(), Some(Received::Delete(f)) if f.orig.src_port() == Some(10_009))
    );
    assert_eq!(a.poll_received(), None);
    assert_eq!(a.stats.malformed, 1);
}

/// An FTP expectation (the master's data connection) for the expectation tests.
fn ftp_expectation() -> Expectation {
    let ip = |s: &str| s.parse().unwrap();
    let mut e = Expectation::new(
        Tuple::ports(
            ipproto::TCP,
            ip("198.18.1.100"),
            40000,
            ip("198.19.0.100"),
            21,
        ),
        Tuple::ports(
            ipproto::TCP,
            ip("198.18.1.100"),
            0,
            ip("198.19.0.100"),
            50001,
        ),
        Tuple::ports(
            ipproto::TCP,
            ip("255.255.255.255"),
            0,
            ip("255.255.255.255"),
            0xffff,
        ),
    );
    e.timeout = Some(300);
    e.flags = Some(0);
    e.helper = Name::new(b"ftp");
    e
}

#[test]
fn expectations_travel_as_exp_messages_and_arrive_as_expectations() {
    let now = Instant::now();
    let (mut a, mut b) = (
        Session::new(cfg(), 1000, now),
        Session::new(cfg(), 5000, now),
    );
    let e = ftp_expectation();
    a.send_flow(FlowMessage::New, &flow(1)).unwrap();
    a.send_expectation(FlowMessage::New, &e).unwrap();
    a.send_expectation(FlowMessage::Delete, &e).unwrap();
    let mut buf = Vec::new();
    assert!(a.poll_transmit(now, &mut buf));
    let kinds: Vec<u8> = messages(&buf).map(|m| m.unwrap().kind).collect();
    assert_eq!(kinds, [kind::CT_NEW, kind::EXP_NEW, kind::EXP_DEL]);
    b.handle_datagram(now, &buf);
    assert!(matches!(b.poll_received(), Some(Received::Upsert(_))));
    assert_eq!(
        b.poll_received(),
        Some(Received::ExpUpsert(Box::new(e.clone())))
    );
    assert_eq!(b.poll_received(), Some(Received::ExpDelete(Box::new(e))));
    assert_eq!(b.stats.expectations_received, 2);
    assert_eq!(a.stats.expectations_sent, 2);
    // An expectation message that cannot be read is counted, not taken.
    let mut bad = Vec::new();
    codec::put_state(&mut bad, kind::EXP_NEW, 0, 1003, &[0, 8, 0, 12, 0, 0, 0, 1]).unwrap();
    b.handle_datagram(now, &bad);
    assert_eq!(b.poll_received(), None);
    assert_eq!(b.stats.malformed, 1);
}
