use super::*;
use ctnetlink::tcp_state;

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP SNAT flow as the lab makes them: the client's port rewritten (random-port SNAT).
fn snat_flow() -> Flow {
    let orig = Tuple::ports(
        ipproto::TCP,
        v4("198.18.1.100"),
        40000,
        v4("198.19.0.100"),
        7000,
    );
    let mut reply = orig.inverse();
    reply.dst = v4("198.19.0.1");
    reply.l4 = L4::Ports {
        src: 7000,
        dst: 51234,
    };
    let mut f = Flow::new(orig, reply);
    f.status = Some(Status::from_bits_retain(0x1be));
    f.timeout = Some(431_999);
    f.mark = Some(0x1234);
    f.protoinfo = Some(ProtoInfo::Tcp(TcpInfo {
        state: Some(tcp_state::ESTABLISHED),
        ..TcpInfo::default()
    }));
    f
}

#[test]
fn a_flow_round_trips_with_its_nat() {
    let f = snat_flow();
    let mut body = Vec::new();
    encode_flow(&f, &mut body).unwrap();
    assert_eq!(body.len() % 4, 0);
    let back = decode_flow(&body).unwrap();
    assert_eq!(back.orig, f.orig);
    assert_eq!(back.reply, f.reply);
    assert_eq!(back.status, f.status);
    assert_eq!(back.timeout, f.timeout);
    assert_eq!(back.mark, f.mark);
    assert_eq!(back.protoinfo, f.protoinfo);
    assert_eq!(back.snat(), Some((v4("198.19.0.1"), Some(51234))));
}

#[test]
fn icmp_ipv6_dnat_zone_and_labels_round_trip() {
    let orig = Tuple {
        src: "2001:db8:1::100".parse().unwrap(),
        dst: "2001:db8:2::100".parse().unwrap(),
        proto: ipproto::ICMPV6,
        l4: L4::Icmpv6 {
            id: 0x1234,
            kind: 128,
            code: 0,
        },
        zone: None,
    };
    let mut f = Flow::new(orig, orig.inverse());
    f.zone = Some(7);
    f.labels = Some(Labels::from_bits(&[0, 33, 127]));
    f.status = Some(Status::from_bits_retain(0x8));
    let mut body = Vec::new();
    encode_flow(&f, &mut body).unwrap();
    let back = decode_flow(&body).unwrap();
    assert_eq!(back.orig, f.orig);
    assert_eq!(back.reply, f.reply);
    assert_eq!(back.zone, Some(7));
    assert_eq!(back.labels, f.labels);

    let o = Tuple::ports(
        ipproto::UDP,
        v4("198.19.0.100"),
        5555,
        v4("198.19.0.1"),
        8001,
    );
    let mut r = o.inverse();
    r.src = v4("198.18.1.100");
    r.l4 = L4::Ports {
        src: 7001,
        dst: 5555,
    };
    let d = Flow::new(o, r);
    let mut body = Vec::new();
    encode_flow(&d, &mut body).unwrap();
    assert_eq!(decode_flow(&body).unwrap().reply, r);
}

/// The byte layout conntrackd 1.4.7 sends for a TCP ESTABLISHED flow with a mark
/// (research/conntrackd.md §2.4, captured from the real daemon; addresses changed to
/// the documentation range), including its zero-filled SYNPROXY attribute.
#[test]
fn conntrackd_s_own_layout_decodes() {
    let hex = "10200054 5f000001 \
               000c0000 c6120164 c6130064 \
               00080005 0000000c \
               00050002 06000000 \
               00080003 9c400050 \
               00050004 03000000 \
               00080006 00000129 \
               00080007 00001234 \
               0010001f 00000000 00000000 00000000";
    let bytes: Vec<u8> = hex
        .split_whitespace()
        .flat_map(|w| {
            (0..w.len())
                .step_by(2)
                .map(move |i| u8::from_str_radix(&w[i..i + 2], 16).unwrap())
        })
        .collect();
    let mut it = messages(&bytes);
    let m = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert_eq!(m.kind, kind::CT_NEW);
    assert_eq!(m.flags, flag::HELLO);
    assert_eq!(m.seq, 0x5f00_0001);
    assert_eq!(m.class(), Some(Class::Flow(kind::CT_NEW)));
    let f = decode_flow(m.body).unwrap();
    assert_eq!(
        f.orig,
        Tuple::ports(
            ipproto::TCP,
            v4("198.18.1.100"),
            40000,
            v4("198.19.0.100"),
            80
        )
    );
    assert_eq!(f.reply, f.orig.inverse());
    assert_eq!(f.timeout, Some(0x129));
    assert_eq!(f.mark, Some(0x1234));
    assert_eq!(f.status.map(|s| s.bits()), Some(0xc));
}

#[test]
fn nat_ports_and_icmp_ids_travel_little_endian() {
    let f = snat_flow();
    let mut body = Vec::new();
    encode_flow(&f, &mut body).unwrap();
    // SPAT_PORT (id 14), nta_len 6: 51234 = 0xc822 little-endian.
    let want = [0x00, 0x06, 0x00, 0x0e, 0x22, 0xc8, 0, 0];
    assert!(body.windows(8).any(|w| w == want), "{body:02x?}");
}

#[test]
fn control_messages_round_trip() {
    let mut d = Vec::new();
    put_control(&mut d, flag::ACK | flag::HELLO_BACK, 9, Some((3, 8)));
    put_control(&mut d, flag::ALIVE, 10, None);
    assert_eq!(d.len(), 24);
    assert_eq!(d[0], 0x1a);
    let all: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
    assert_eq!(all[0].class(), Some(Class::Ack));
    assert_eq!(all[0].range, Some((3, 8)));
    assert_eq!(all[1].class(), Some(Class::Alive));
    assert_eq!(all[1].seq, 10);
}

#[test]
fn hostile_bytes_give_errors_not_panics() {
    let f = snat_flow();
    let mut body = Vec::new();
    encode_flow(&f, &mut body).unwrap();
    let mut msg = Vec::new();
    put_state(&mut msg, kind::CT_UPD, 0, 1, &body).unwrap();
    // Every truncation and every single-byte change: no panic.
    for n in 0..msg.len() {
        for m in messages(&msg[..n]).flatten() {
            let _ = decode_flow(m.body);
        }
        let mut bad = msg.clone();
        for v in [0u8, 0x7f, 0xff] {
            bad[n] = v;
            for m in messages(&bad).flatten() {
                let _ = decode_flow(m.body);
            }
        }
    }
    assert_eq!(
        messages(&[0x10, 0, 0, 0, 0, 0, 0, 0]).next(),
        Some(Err(CodecError::BadLength))
    );
    assert_eq!(
        messages(&[0x10, 0, 0]).next(),
        Some(Err(CodecError::Truncated))
    );
    assert_eq!(decode_flow(&[0, 3, 0, 0]), Err(CodecError::BadAttribute));
    assert_eq!(decode_flow(&[]), Err(CodecError::NoTuple));
}

#[test]
fn gre_is_not_encodable() {
    let o = Tuple {
        src: v4("198.18.0.1"),
        dst: v4("198.18.0.2"),
        proto: ipproto::GRE,
        l4: L4::Gre {
            src_key: 1,
            dst_key: 2,
        },
        zone: None,
    };
    let mut out = Vec::new();
    assert_eq!(
        encode_flow(&Flow::new(o, o.inverse()), &mut out),
        Err(CodecError::Unencodable)
    );
    assert!(out.is_empty());
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Datagrams captured from Debian's conntrackd 1.4.7 (kernel 6.18, x86-64) in a
/// namespace, after `conntrack -I` of a TCP entry (198.18.1.100:40000 → 198.19.0.100:7000,
/// ESTABLISHED, SEEN_REPLY|ASSURED, mark 0x1234, timeout 300) and an ICMP echo entry
/// (id 4660, timeout 30): its first ALIVE (with HELLO), the two CT_NEW, an ALIVE.
#[test]
fn datagrams_captured_from_conntrackd_1_4_7_decode() {
    let alive = unhex("1a3000086b116981");
    let tcp = unhex(
        "102000546b116982000c0000c6120164c6130064000800050000000e0005000206000000000800039c401b580005000403000000000800060000012c00080007000012340010001f000000000000000000000000",
    );
    let icmp = unhex(
        "1020005c6b116983000c0000c6120164c613006400080005000000080005000201000000000500160800000000050017000000000006001834120000000800060000001e00080007000000000010001f000000000000000000000000",
    );
    let m = messages(&alive).next().unwrap().unwrap();
    assert_eq!(m.class(), Some(Class::Alive));
    assert_eq!(m.flags, flag::ALIVE | flag::HELLO);

    let m = messages(&tcp).next().unwrap().unwrap();
    assert_eq!(
        (m.class(), m.seq),
        (Some(Class::Flow(kind::CT_NEW)), 0x6b11_6982)
    );
    let f = decode_flow(m.body).unwrap();
    assert_eq!(
        f.orig,
        Tuple::ports(
            ipproto::TCP,
            v4("198.18.1.100"),
            40000,
            v4("198.19.0.100"),
            7000
        )
    );
    assert_eq!(f.reply, f.orig.inverse());
    assert_eq!((f.timeout, f.mark), (Some(300), Some(0x1234)));
    assert_eq!(f.status.map(|s| s.bits()), Some(0xe));
    assert!(
        matches!(f.protoinfo, Some(ProtoInfo::Tcp(t)) if t.state == Some(tcp_state::ESTABLISHED))
    );
    // What we send for the same flow is what conntrackd sent, but for its zero-filled
    // SYNPROXY attribute and the order of the attributes.
    let mut body = Vec::new();
    encode_flow(&f, &mut body).unwrap();
    let mut theirs = m.body.to_vec();
    theirs.truncate(theirs.len() - 16);
    let mut a: Vec<&[u8]> = body.chunks(4).collect();
    let mut b: Vec<&[u8]> = theirs.chunks(4).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    let m = messages(&icmp).next().unwrap().unwrap();
    let f = decode_flow(m.body).unwrap();
    assert_eq!(
        f.orig.l4,
        L4::Icmp {
            id: 4660,
            kind: 8,
            code: 0
        }
    );
    assert_eq!(f.timeout, Some(30));
}
