//! The wire codec: round trips, sizes, and hostile bytes.

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ctnetlink::*;
use ctsync_wire::codec::{self, Reader};
use ctsync_wire::frame::{DataMessages, Frame, FrameWriter, Message, WireRole, frames};
use ctsync_wire::*;
use proptest::prelude::*;

fn tuple(v6: bool) -> impl Strategy<Value = Tuple> {
    let addr = move || {
        if v6 {
            any::<[u8; 16]>()
                .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                .boxed()
        } else {
            any::<[u8; 4]>()
                .prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                .boxed()
        }
    };
    (
        addr(),
        addr(),
        any::<u8>(),
        0u8..5,
        any::<(u16, u16, u8, u8)>(),
        any::<Option<u16>>(),
    )
        .prop_map(|(src, dst, proto, k, (a, b, c, d), zone)| {
            let l4 = match k {
                0 => L4::None,
                1 => L4::Ports { src: a, dst: b },
                2 => L4::Gre {
                    src_key: a,
                    dst_key: b,
                },
                3 => L4::Icmp {
                    id: a,
                    kind: c,
                    code: d,
                },
                _ => L4::Icmpv6 {
                    id: a,
                    kind: c,
                    code: d,
                },
            };
            Tuple {
                src,
                dst,
                proto,
                l4,
                zone,
            }
        })
}

/// Arbitrary flows, sometimes with a reply that is the NATed inverse of the original.
fn flow() -> impl Strategy<Value = Flow> {
    any::<bool>().prop_flat_map(|v6| {
        (
            tuple(v6),
            tuple(v6),
            0u8..4,
            proptest::option::of(tuple(v6)),
            any::<(
                Option<u16>,
                Option<u32>,
                Option<u32>,
                Option<u32>,
                Option<[u8; 16]>,
            )>(),
            any::<(Option<u8>, Option<u8>, Option<(u8, u8)>, Option<u32>, u8)>(),
            proptest::option::of(proptest::collection::vec(1u8..=255, 1..16)),
            any::<Option<(u32, u32, u32)>>(),
        )
            .prop_map(|(orig, other, shape, master, scal, pi, helper, seqadj)| {
                let reply = match shape {
                    0 => other,
                    1 => orig.inverse(),
                    2 => Tuple {
                        dst: other.src,
                        ..orig.inverse()
                    },
                    _ => Tuple {
                        src: other.dst,
                        ..orig.inverse()
                    },
                };
                let mut f = Flow::new(orig, reply);
                (f.zone, f.mark, f.timeout) = (scal.0, scal.1, scal.2);
                f.status = scal.3.map(Status::from_bits_retain);
                f.labels = scal.4.map(Labels);
                f.protoinfo = match pi.4 % 4 {
                    0 => None,
                    1 => Some(ProtoInfo::Tcp(TcpInfo {
                        state: pi.0,
                        wscale_orig: pi.1,
                        wscale_reply: pi.0,
                        flags_orig: pi.2.map(|(f, m)| TcpFlags { flags: f, mask: m }),
                        flags_reply: None,
                    })),
                    2 => Some(ProtoInfo::Sctp(SctpInfo {
                        state: pi.0,
                        vtag_orig: pi.3,
                        vtag_reply: None,
                    })),
                    _ => Some(ProtoInfo::Dccp(DccpInfo {
                        state: pi.1,
                        role: pi.0,
                        handshake_seq: pi.3.map(u64::from),
                    })),
                };
                f.helper = helper.and_then(|h| Name::new(&h));
                f.master = master;
                f.seq_adj_reply = seqadj.map(|(a, b, c)| SeqAdj {
                    correction_pos: a,
                    offset_before: b,
                    offset_after: c,
                });
                f.id = Some(7);
                f.use_count = Some(1);
                f
            })
    })
}

fn decode_one(bytes: &[u8]) -> Flow {
    let mut r = Reader::new(bytes);
    let f = codec::read_flow(&mut r).unwrap();
    assert_eq!(r.remaining(), 0, "trailing bytes");
    // The in-place decoder of received flows decodes the same.
    let mut r = Reader::new(bytes);
    assert_eq!(*codec::read_flow_boxed(&mut r).unwrap(), f);
    assert_eq!(r.remaining(), 0, "trailing bytes (boxed)");
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// read(put(flow)) == normalize(flow) for arbitrary flows.
    #[test]
    fn compact_flow_round_trip(f in flow()) {
        let mut buf = Vec::new();
        codec::put_flow(&mut buf, &f).unwrap();
        prop_assert_eq!(decode_one(&buf), codec::normalize(&f));
    }

    /// The key read from a flow's state alone is the decoded flow's key.
    #[test]
    fn key_read_from_a_state_is_the_flows(f in flow()) {
        let mut state = Vec::new();
        codec::put_flow_state(&mut state, &f).unwrap();
        prop_assert_eq!(codec::read_key(&state).unwrap(), codec::normalize(&f).key());
    }

    /// A message built from a flow's state and timeout is the one built from the flow.
    #[test]
    fn flow_message_from_state_equals_from_flow(f in flow(), fresh: bool) {
        let mut state = Vec::new();
        codec::put_flow_state(&mut state, &f).unwrap();
        let mut direct = Vec::new();
        let m = if fresh { Message::FlowNew(Box::new(f.clone())) } else { Message::FlowUpdate(Box::new(f.clone())) };
        m.put(&mut direct).unwrap();
        let mut spliced = vec![7u8];
        Message::put_flow_from_state(&mut spliced, fresh, &state, f.timeout).unwrap();
        prop_assert_eq!(&spliced[1..], &direct[..]);
    }

    /// Splicing a timeout into arbitrary bytes fails cleanly or succeeds; never panics.
    #[test]
    fn splicing_a_timeout_into_garbage_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..80),
        t: Option<u32>,
    ) {
        let mut out = Vec::new();
        let _ = Message::put_flow_from_state(&mut out, false, &bytes, t);
    }

    /// Messages round-trip inside a DATA frame, in order.
    #[test]
    fn data_frame_round_trip(fs in proptest::collection::vec(flow(), 0..20)) {
        let msgs: Vec<Message> = fs
            .iter()
            .enumerate()
            .map(|(i, f)| match i % 3 {
                0 => Message::FlowNew(Box::new(codec::normalize(f))),
                1 => Message::FlowUpdate(Box::new(codec::normalize(f))),
                _ => Message::FlowDelete(f.key()),
            })
            .collect();
        let mut enc = Vec::new();
        for m in &msgs {
            m.put(&mut enc).unwrap();
        }
        let mut body = Vec::new();
        FrameWriter::new(&mut body).data(3, 100, msgs.len() as u16, &enc);
        let got: Vec<Frame<'_>> = frames(&body).collect::<Result<_, _>>().unwrap();
        let [Frame::Data { generation: 3, first: 100, count, messages }] = got.as_slice() else { panic!("{got:?}") };
        let back: Vec<Message> = DataMessages::new(messages, *count).map(|m| m.unwrap().unwrap()).collect();
        let want = msgs;
        prop_assert_eq!(back, want);
    }

    /// Any bytes: no decoder panics.
    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let plain = codec::read_flow(&mut Reader::new(&bytes));
        let boxed = codec::read_flow_boxed(&mut Reader::new(&bytes));
        if let Ok(f) = &plain {
            prop_assert_eq!(codec::read_key(&bytes).ok(), Some(f.key()));
        }
        prop_assert_eq!(plain, boxed.map(|b| *b));
        for f in frames(&bytes) {
            if let Ok(Frame::Data { count, messages, .. }) = f {
                for m in DataMessages::new(messages, count) {
                    let _ = m;
                }
            }
        }
        let _ = Header::parse(&bytes);
    }
}

fn benchmark_flow() -> Flow {
    // The benchmark entry: established IPv4 TCP with SNAT, as a kernel dump reports it.
    let orig = Tuple::ports(
        ipproto::TCP,
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        10000,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
        443,
    );
    let mut reply = orig.inverse();
    reply.dst = IpAddr::V4(Ipv4Addr::new(198, 19, 128, 0));
    reply.l4 = L4::Ports {
        src: 443,
        dst: 1025,
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
    f.mark = Some(0);
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

/// The compact encoding of an IPv4 TCP flow with SNAT, message header included.
#[test]
fn an_ipv4_tcp_snat_flow_is_small() {
    let mut buf = Vec::new();
    Message::FlowUpdate(Box::new(benchmark_flow()))
        .put(&mut buf)
        .unwrap();
    assert!(buf.len() <= 40, "{} bytes", buf.len());
    println!("IPv4 TCP SNAT flow message: {} bytes", buf.len());
}

#[test]
fn control_frames_round_trip() {
    let mut body = Vec::new();
    let mut w = FrameWriter::new(&mut body);
    w.hello(0xdead_beef, 1, 1, WireRole::Backup, true);
    w.hello_ack(0xdead_beef, 1, 77);
    w.alive(WireRole::Primary, false);
    w.ack(2, 10, &[(12, 14), (20, 21)]);
    w.nack(2, &[(10, 12)]);
    w.group_ack(3, 40, &[(42, 43)]);
    w.group_nack(3, &[(40, 42)]);
    w.group_data(3, 40, 0, &[]);
    body.extend_from_slice(&[99, 0, 2, 1, 2]); // an unknown frame type is skipped
    let got: Vec<_> = frames(&body).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        got,
        vec![
            Frame::Hello {
                challenge: 0xdead_beef,
                min_version: 1,
                max_version: 1,
                role: WireRole::Backup,
                ready: true
            },
            Frame::HelloAck {
                echo: 0xdead_beef,
                version: 1,
                generation: 77
            },
            Frame::Alive {
                role: WireRole::Primary,
                ready: false
            },
            Frame::Ack {
                generation: 2,
                next: 10,
                ranges: vec![(12, 14), (20, 21)]
            },
            Frame::Nack {
                generation: 2,
                ranges: vec![(10, 12)]
            },
            Frame::GroupAck {
                generation: 3,
                next: 40,
                ranges: vec![(42, 43)]
            },
            Frame::GroupNack {
                generation: 3,
                ranges: vec![(40, 42)]
            },
            Frame::GroupData {
                generation: 3,
                first: 40,
                count: 0,
                messages: &[]
            },
            Frame::Unknown(99),
        ]
    );
}

#[test]
fn other_messages_round_trip() {
    let f = benchmark_flow();
    let exp = Expectation {
        master: f.orig,
        tuple: f.reply,
        mask: f.orig,
        timeout: Some(30),
        id: None,
        helper: Name::new(b"ftp"),
        zone: Some(4),
        flags: Some(1),
        class: Some(0),
        nat: Some(ExpectNat {
            dir: 1,
            tuple: f.orig,
        }),
        function: Name::new(b"nf_nat_follow_master"),
        other: Vec::new(),
    };
    let msgs = vec![
        Message::ExpNew(Box::new(exp)),
        Message::ExpDelete(f.reply, Some(4)),
        Message::BulkBegin { id: 9 },
        Message::BulkEnd {
            id: 9,
            count: 200_000,
        },
        Message::Digest {
            count: 5,
            hashes: vec![1, 2, 3, u64::MAX],
        },
        Message::BucketBegin { bucket: 17 },
        Message::BucketEnd { bucket: 17 },
        Message::ResyncRequest,
        Message::BucketRequest(vec![1, 63]),
        Message::GroupJoin {
            generation: 7,
            seq: (1 << 32) + 5,
        },
    ];
    let mut enc = Vec::new();
    for m in &msgs {
        m.put(&mut enc).unwrap();
    }
    let back: Vec<_> = DataMessages::new(&enc, msgs.len() as u16)
        .map(|m| m.unwrap().unwrap())
        .collect();
    assert_eq!(back, msgs);
}

#[test]
fn truncations_are_errors() {
    let mut buf = Vec::new();
    codec::put_flow(&mut buf, &benchmark_flow()).unwrap();
    for cut in 0..buf.len() {
        assert!(
            codec::read_flow(&mut Reader::new(&buf[..cut])).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn mixed_family_flows_are_refused_not_mangled() {
    let mut f = benchmark_flow();
    f.reply.src = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert_eq!(
        codec::put_flow(&mut Vec::new(), &f),
        Err(WireError::Unencodable)
    );
}
