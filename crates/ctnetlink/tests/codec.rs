//! The codec without a kernel: round trips of arbitrary flows, and hostile bytes.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ctnetlink::decode::{self, Body, DecodeError};
use ctnetlink::encode::{self, ExpOp, FlowOp};
use ctnetlink::*;
use proptest::prelude::*;

fn addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .boxed()
    } else {
        any::<[u8; 4]>()
            .prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .boxed()
    }
}

fn tuple() -> impl Strategy<Value = Tuple> {
    (
        any::<bool>(),
        0u8..5,
        any::<u8>(),
        any::<(u16, u16, u8, u8)>(),
        any::<Option<u16>>(),
    )
        .prop_flat_map(|(v6, l4kind, proto, (a, b, c, d), zone)| {
            let (proto, l4) = match l4kind {
                0 => (proto, L4::None),
                1 => (
                    if proto == ipproto::GRE {
                        ipproto::TCP
                    } else {
                        proto
                    },
                    L4::Ports { src: a, dst: b },
                ),
                2 => (
                    ipproto::GRE,
                    L4::Gre {
                        src_key: a,
                        dst_key: b,
                    },
                ),
                3 => (
                    proto,
                    L4::Icmp {
                        id: a,
                        kind: c,
                        code: d,
                    },
                ),
                _ => (
                    proto,
                    L4::Icmpv6 {
                        id: a,
                        kind: c,
                        code: d,
                    },
                ),
            };
            (addr(v6), addr(v6)).prop_map(move |(src, dst)| Tuple {
                src,
                dst,
                proto,
                l4,
                zone,
            })
        })
}

fn protoinfo() -> impl Strategy<Value = ProtoInfo> {
    let flags =
        any::<Option<(u8, u8)>>().prop_map(|f| f.map(|(flags, mask)| TcpFlags { flags, mask }));
    prop_oneof![
        (
            any::<Option<u8>>(),
            any::<Option<u8>>(),
            any::<Option<u8>>(),
            flags.clone(),
            flags
        )
            .prop_map(
                |(state, wscale_orig, wscale_reply, flags_orig, flags_reply)| ProtoInfo::Tcp(
                    TcpInfo {
                        state,
                        wscale_orig,
                        wscale_reply,
                        flags_orig,
                        flags_reply
                    }
                )
            ),
        any::<(Option<u8>, Option<u32>, Option<u32>)>().prop_map(
            |(state, vtag_orig, vtag_reply)| ProtoInfo::Sctp(SctpInfo {
                state,
                vtag_orig,
                vtag_reply
            })
        ),
        any::<(Option<u8>, Option<u8>, Option<u64>)>().prop_map(|(state, role, handshake_seq)| {
            ProtoInfo::Dccp(DccpInfo {
                state,
                role,
                handshake_seq,
            })
        }),
    ]
}

fn name() -> impl Strategy<Value = Name> {
    proptest::collection::vec(1u8..=255, 1..16).prop_map(|b| Name::new(&b).expect("short, no NUL"))
}

fn others(with_protoinfo: bool) -> impl Strategy<Value = Vec<OtherAttr>> {
    // Kinds our decoder does not know at each place, with or without the nested flag.
    let top = (
        prop_oneof![Just(19u16), Just(25), 27u16..200],
        any::<bool>(),
    );
    let pi = (10u16..200, any::<bool>());
    let nest = if with_protoinfo { 0u8..3 } else { 2u8..3 };
    proptest::collection::vec(
        (nest, top, pi, proptest::collection::vec(any::<u8>(), 0..12)),
        0..4,
    )
    .prop_map(|v| {
        let mut out: Vec<OtherAttr> = v
            .into_iter()
            .map(|(n, (tk, tf), (pk, pf), value)| {
                let (nest, kind, flag) = match n {
                    0 => (Nest::ProtoInfoProto, pk, pf),
                    1 => (Nest::ProtoInfo, pk, pf),
                    _ => (Nest::Top, tk, tf),
                };
                OtherAttr {
                    nest,
                    kind: kind | if flag { 0x8000 } else { 0 },
                    value: value.into(),
                }
            })
            .collect();
        // The decoder meets them in this order: inside the protocol nest, then the
        // rest of CTA_PROTOINFO, then the top level (emitted last).
        out.sort_by_key(|o| match o.nest {
            Nest::ProtoInfoProto => 0,
            Nest::ProtoInfo => 1,
            Nest::Top => 2,
        });
        out
    })
}

prop_compose! {
    fn flow()(
        orig in tuple(),
        reply in tuple(),
        master in proptest::option::of(tuple()),
        protoinfo in proptest::option::of(protoinfo()),
        scalars in any::<(Option<u16>, Option<u32>, Option<u32>, Option<u32>, Option<u32>, Option<u32>, Option<u32>)>(),
        labels in any::<Option<[u8; 16]>>(),
        seqadj in any::<(Option<(u32, u32, u32)>, Option<(u32, u32, u32)>)>(),
        helper in proptest::option::of(name()),
        counters in any::<(Option<(u64, u64)>, Option<(u64, u64)>)>(),
        ts in any::<Option<(Option<u64>, Option<u64>)>>(),
        sp in any::<Option<(u32, u32, u32)>>(),
        others_seed in any::<u64>(),
    ) -> (Flow, u64) {
        let mut f = Flow::new(orig, reply);
        let (zone, status, timeout, mark, secmark, id, use_count) = scalars;
        f.zone = zone;
        f.status = status.map(Status::from_bits_retain);
        f.timeout = timeout;
        f.mark = mark;
        f.secmark = secmark;
        f.id = id;
        f.use_count = use_count;
        f.labels = labels.map(Labels);
        f.protoinfo = protoinfo;
        let adj = |s: Option<(u32, u32, u32)>| s.map(|(correction_pos, offset_before, offset_after)| SeqAdj { correction_pos, offset_before, offset_after });
        f.seq_adj_orig = adj(seqadj.0);
        f.seq_adj_reply = adj(seqadj.1);
        f.helper = helper;
        f.master = master;
        let ctr = |c: Option<(u64, u64)>| c.map(|(packets, bytes)| Counters { packets, bytes });
        f.counters_orig = ctr(counters.0);
        f.counters_reply = ctr(counters.1);
        f.timestamp = ts.map(|(start, stop)| Timestamp { start, stop });
        f.synproxy = sp.map(|(isn, its, tsoff)| Synproxy { isn, its, tsoff });
        (f, others_seed)
    }
}

fn flow_with_others() -> impl Strategy<Value = Flow> {
    flow().prop_flat_map(|(f, _)| {
        let has_pi = f.protoinfo.is_some();
        others(has_pi).prop_map(move |o| {
            let mut f = f.clone();
            f.other = o;
            f
        })
    })
}

fn roundtrip(f: &Flow) -> Flow {
    let mut buf = Vec::new();
    encode::encode_flow(&mut buf, FlowOp::Full, f, 7, 0);
    let m = decode::messages(&buf)
        .next()
        .expect("one message")
        .expect("decodes");
    assert_eq!(m.seq, 7);
    let Body::Conntrack { family, attrs, .. } = m.body else {
        panic!("not conntrack: {m:?}")
    };
    decode::decode_flow(family, attrs).expect("decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// decode(encode(flow)) == flow for arbitrary flows, unknown attributes included.
    #[test]
    fn decode_encode_round_trip(f in flow_with_others()) {
        prop_assert_eq!(roundtrip(&f), f);
    }

    /// Requests never carry read-only attributes, and always decode to the same key.
    #[test]
    fn requests_carry_the_key(f in flow_with_others()) {
        for op in [FlowOp::Create, FlowOp::Update, FlowOp::Delete, FlowOp::Get] {
            let mut buf = Vec::new();
            encode::encode_flow(&mut buf, op, &f, 1, 0);
            let m = decode::messages(&buf).next().expect("one").expect("decodes");
            let Body::Conntrack { family, attrs, .. } = m.body else { panic!() };
            let d = decode::decode_flow(family, attrs).expect("decodes");
            prop_assert_eq!(d.key(), f.key());
            prop_assert!(d.counters_orig.is_none() && d.use_count.is_none() && d.id.is_none());
            // Only the NAT bindings a create derives from the tuples appear at the top.
            let nat = [attr::cta::NAT_SRC, attr::cta::NAT_DST];
            prop_assert!(d.other.iter().all(|o| o.nest != Nest::Top || nat.contains(&(o.kind & 0x7fff))));
        }
    }

    /// Any bytes: decoding never panics, and what decodes re-encodes to the same flow.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), family in any::<u8>()) {
        if let Ok(f) = decode::decode_flow(family, &bytes) {
            prop_assert_eq!(roundtrip(&f), f);
        }
        let _ = decode::decode_expectation(family, &bytes);
        for m in decode::messages(&bytes) {
            let _ = m;
        }
    }
}

fn sample() -> Flow {
    let orig = Tuple::ports(
        ipproto::TCP,
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        40000,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        443,
    );
    let mut f = Flow::new(orig, orig.inverse());
    f.reply.dst = IpAddr::V4(Ipv4Addr::new(198, 19, 128, 1));
    f.timeout = Some(300);
    f
}

#[test]
fn every_truncation_of_a_message_is_an_error_not_a_panic() {
    let mut buf = Vec::new();
    encode::encode_flow(&mut buf, FlowOp::Full, &sample(), 1, 0);
    for cut in 0..buf.len() {
        let mut short = buf[..cut].to_vec();
        // Keep the header's length honest so the attribute parser sees the truncation.
        if cut >= 4 {
            short[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        }
        for m in decode::messages(&short) {
            if let Ok(Body::Conntrack { family, attrs, .. }) = m.map(|m| m.body) {
                let _ = decode::decode_flow(family, attrs);
            }
        }
    }
}

#[test]
fn wrong_lengths_are_reported_by_attribute() {
    // CTA_TIMEOUT with 2 bytes instead of 4, after a valid original tuple.
    let mut buf = Vec::new();
    encode::put_tuple(&mut buf, attr::cta::TUPLE_ORIG, &sample().orig);
    buf.extend_from_slice(&[6, 0, 7, 0, 1, 2, 0, 0]);
    assert_eq!(
        decode::decode_flow(2, &buf),
        Err(DecodeError::BadLength(attr::cta::TIMEOUT))
    );
    // No original tuple at all.
    assert_eq!(
        decode::decode_flow(2, &[]),
        Err(DecodeError::Missing(attr::cta::TUPLE_ORIG))
    );
    // An attribute whose length runs past the end.
    assert_eq!(
        decode::decode_flow(2, &[200, 0, 1, 0, 0, 0]),
        Err(DecodeError::BadAttribute)
    );
}

#[test]
fn unknown_attributes_are_kept_and_re_emitted() {
    let mut buf = Vec::new();
    encode::put_tuple(&mut buf, attr::cta::TUPLE_ORIG, &sample().orig);
    buf.extend_from_slice(&[8, 0, 99, 0, 0xde, 0xad, 0xbe, 0xef]);
    let f = decode::decode_flow(2, &buf).expect("decodes");
    assert_eq!(
        f.other,
        vec![OtherAttr {
            nest: Nest::Top,
            kind: 99,
            value: vec![0xde, 0xad, 0xbe, 0xef].into()
        }]
    );
    assert_eq!(roundtrip(&f), f);
}

#[test]
fn create_of_a_nated_flow_sends_the_unnated_reply_and_the_binding() {
    let f = sample();
    let mut buf = Vec::new();
    encode::encode_flow(&mut buf, FlowOp::Create, &f, 1, 0);
    let m = decode::messages(&buf).next().unwrap().unwrap();
    let Body::Conntrack { family, attrs, .. } = m.body else {
        panic!()
    };
    let d = decode::decode_flow(family, attrs).unwrap();
    assert_eq!(d.reply, f.orig.inverse(), "reply sent un-NATed");
    // CTA_NAT_SRC (6) is not part of the model, so it comes back as an unknown attribute.
    assert!(
        d.other
            .iter()
            .any(|o| o.kind & 0x7fff == attr::cta::NAT_SRC),
        "{:?}",
        d.other
    );
    assert_eq!(
        f.snat(),
        Some((IpAddr::V4(Ipv4Addr::new(198, 19, 128, 1)), Some(40000)))
    );
    assert_eq!(f.dnat(), None);
}

#[test]
fn netlink_errors_and_acks_decode() {
    // struct nlmsghdr + struct nlmsgerr { int error = -EEXIST; struct nlmsghdr (seq 42) }
    let mut buf = Vec::new();
    buf.extend_from_slice(&36u32.to_ne_bytes());
    buf.extend_from_slice(&2u16.to_ne_bytes());
    buf.extend_from_slice(&0x100u16.to_ne_bytes());
    buf.extend_from_slice(&42u32.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&42u32.to_ne_bytes());
    buf.extend_from_slice(&[0; 4]);
    let m = decode::messages(&buf).next().unwrap().unwrap();
    assert_eq!(
        m.body,
        Body::Error {
            errno: libc::EEXIST,
            request_seq: 42
        }
    );
}

#[test]
fn expectations_round_trip() {
    let f = sample();
    let mut mask = f.orig;
    mask.src = IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255));
    let exp = Expectation {
        master: f.orig,
        tuple: f.reply,
        mask,
        timeout: Some(30),
        id: Some(9),
        helper: Name::new(b"ftp"),
        zone: Some(2),
        flags: Some(1),
        class: Some(0),
        nat: Some(ExpectNat {
            dir: 1,
            tuple: f.orig,
        }),
        function: Name::new(b"nf_nat_follow_master"),
        other: vec![],
    };
    let mut buf = Vec::new();
    encode::encode_expectation(&mut buf, ExpOp::Full, &exp, 3, 0);
    let m = decode::messages(&buf).next().unwrap().unwrap();
    let Body::Expectation { family, attrs, .. } = m.body else {
        panic!()
    };
    assert_eq!(decode::decode_expectation(family, attrs).unwrap(), exp);
}

#[test]
fn a_flow_is_small_and_needs_no_heap() {
    let f = sample();
    assert_eq!(f.other.capacity(), 0);
    // Reported in BENCHMARKS.md; a regression past this bound should be a decision.
    assert!(
        size_of::<Flow>() <= 432,
        "Flow is {} bytes",
        size_of::<Flow>()
    );
}

/// Found by fuzzing: a CTA_PROTOINFO with only an unknown protocol nest inside was
/// dropped when re-encoded, so the flow did not round-trip.
#[test]
fn protoinfo_with_only_unknown_attributes_round_trips() {
    let mut buf = Vec::new();
    encode::put_tuple(&mut buf, attr::cta::TUPLE_ORIG, &sample().orig);
    // CTA_PROTOINFO { type 381: [1, 2, 3, 4] }
    buf.extend_from_slice(&[12, 0, 4, 0x80, 8, 0, 0x7d, 0x01, 1, 2, 3, 4]);
    let f = decode::decode_flow(2, &buf).expect("decodes");
    assert_eq!(f.protoinfo, None);
    assert_eq!(f.other.len(), 1);
    assert_eq!(roundtrip(&f), f);
}

/// Found by fuzzing: an unknown top-level attribute before CTA_PROTOINFO came back after
/// the unknown attributes inside it, so the flow compared unequal after a round trip.
#[test]
fn unknown_attributes_come_back_in_canonical_order() {
    let mut buf = Vec::new();
    encode::put_tuple(&mut buf, attr::cta::TUPLE_ORIG, &sample().orig);
    buf.extend_from_slice(&[8, 0, 0x03, 0x20, 0, 0, 0, 6]); // unknown top-level 0x2003
    buf.extend_from_slice(&[12, 0, 4, 0x80, 8, 0, 0xff, 0x0f, 1, 2, 3, 4]); // PROTOINFO { 4095 }
    let f = decode::decode_flow(2, &buf).expect("decodes");
    assert_eq!(
        f.other.iter().map(|o| o.nest).collect::<Vec<_>>(),
        [Nest::ProtoInfo, Nest::Top]
    );
    assert_eq!(roundtrip(&f), f);
}

/// Found by fuzzing: a second CTA_PROTOINFO holding only unknown attributes erased the
/// TCP state of the first, leaving unknown TCP attributes with no TCP nest to go in.
#[test]
fn a_later_unknown_protoinfo_does_not_erase_the_known_one() {
    tcp_state_3_that_round_trips(&[
        // PROTOINFO { TCP { state 3, unknown 515: [4, 4] } }
        24, 0, 4, 0x80, 20, 0, 1, 0x80, 5, 0, 1, 0, 3, 0, 0, 0, 6, 0, 3, 2, 4, 4, 0, 0,
        // PROTOINFO { unknown 9729: [] }
        8, 0, 4, 0x80, 4, 0, 0x01, 0x26,
    ]);
}

/// The original tuple of [`sample`] followed by `attrs`, decoded: asserts that it holds
/// TCP state 3 and survives a round trip.
fn tcp_state_3_that_round_trips(attrs: &[u8]) -> Flow {
    let mut buf = Vec::new();
    encode::put_tuple(&mut buf, attr::cta::TUPLE_ORIG, &sample().orig);
    buf.extend_from_slice(attrs);
    let f = decode::decode_flow(2, &buf).expect("decodes");
    assert!(
        matches!(
            f.protoinfo,
            Some(ProtoInfo::Tcp(TcpInfo { state: Some(3), .. }))
        ),
        "{:?}",
        f.protoinfo
    );
    assert_eq!(roundtrip(&f), f);
    f
}

/// Found by fuzzing (CI): a PROTOINFO with an SCTP nest, then a TCP one. TCP wins, and
/// the SCTP nest's unknown attributes (4 and 5) used to stay, to be re-encoded inside the
/// TCP nest, where 5 is TCP_FLAGS_REPLY and one byte is too short: the re-encoded flow
/// did not decode.
#[test]
fn a_replaced_protocol_nest_takes_its_unknown_attributes_with_it() {
    let f = tcp_state_3_that_round_trips(&[
        // PROTOINFO { SCTP { unknown 4: [39, 16], unknown 5: [15] }, TCP { state 3 } }
        36, 0, 4, 0x80, 20, 0, 3, 0x80, 6, 0, 4, 0, 39, 16, 0, 0, 5, 0, 5, 0, 15, 0, 0, 0, 12, 0, 1,
        0x80, 5, 0, 1, 0, 3, 0, 0, 0,
    ]);
    assert!(f.other.is_empty(), "{:?}", f.other);
}

/// Review finding: NLMSG_DONE carries the errno of a failed dump.
#[test]
fn done_carries_the_dump_errno() {
    let mut buf = Vec::new();
    buf.extend_from_slice(&20u32.to_ne_bytes());
    buf.extend_from_slice(&3u16.to_ne_bytes());
    buf.extend_from_slice(&2u16.to_ne_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&(-libc::EINTR).to_ne_bytes());
    let m = decode::messages(&buf).next().unwrap().unwrap();
    assert_eq!(m.body, Body::Done { errno: libc::EINTR });
}
