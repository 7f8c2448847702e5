//! Differential: our decoder and `netlink-packet-netfilter` read the same kernel dump and
//! must agree on every field both know (tuples, status, timeout, mark, TCP state).

#![allow(clippy::panic, clippy::unwrap_used)] // test code: a panic is a failed assertion

mod support;

use std::net::IpAddr;

use ctnetlink::{FlowOp, ProtoInfo, ipproto};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo as TheirProtoInfo, ProtoInfoTCP,
    ProtoTuple, Tuple as TheirTuple,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use support::{Nat, PROTOS, TestNetns, sample_flow};

/// What the oracle knows of a tuple: addresses, protocol, ports.
type OracleTuple = (
    Option<IpAddr>,
    Option<IpAddr>,
    Option<u8>,
    Option<u16>,
    Option<u16>,
);

/// TCP flags and their mask.
type FlagsMask = (u8, u8);

#[derive(Debug, Default, PartialEq)]
struct Known {
    orig: Option<OracleTuple>,
    reply: Option<OracleTuple>,
    status: Option<u32>,
    timeout: Option<u32>,
    mark: Option<u32>,
    tcp_state: Option<u8>,
    tcp_wscale: (Option<u8>, Option<u8>),
    tcp_flags: (Option<FlagsMask>, Option<FlagsMask>),
}

fn theirs_tuple(parts: &[TheirTuple]) -> OracleTuple {
    let mut t: OracleTuple = (None, None, None, None, None);
    for p in parts {
        match p {
            TheirTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => t.0 = Some(*a),
                        IPTuple::DestinationAddress(a) => t.1 = Some(*a),
                        _ => {}
                    }
                }
            }
            TheirTuple::Proto(ps) => {
                for p in ps {
                    match p {
                        ProtoTuple::Protocol(p) => t.2 = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(v) => t.3 = Some(*v),
                        ProtoTuple::DestinationPort(v) => t.4 = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn theirs(attrs: &[ConntrackAttribute]) -> Known {
    let mut k = Known::default();
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => k.orig = Some(theirs_tuple(t)),
            ConntrackAttribute::CtaTupleReply(t) => k.reply = Some(theirs_tuple(t)),
            ConntrackAttribute::CtaStatus(s) => k.status = Some(s.bits()),
            ConntrackAttribute::CtaTimeout(v) => k.timeout = Some(*v),
            ConntrackAttribute::CtaMark(v) => k.mark = Some(*v),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let TheirProtoInfo::TCP(tcp) = info {
                        for f in tcp {
                            match f {
                                ProtoInfoTCP::State(s) => k.tcp_state = Some(*s),
                                ProtoInfoTCP::OriginalWindowScale(v) => k.tcp_wscale.0 = Some(*v),
                                ProtoInfoTCP::ReplyWindowScale(v) => k.tcp_wscale.1 = Some(*v),
                                ProtoInfoTCP::OriginalFlags(f) => {
                                    k.tcp_flags.0 = Some((f.flags, f.mask))
                                }
                                ProtoInfoTCP::ReplyFlags(f) => {
                                    k.tcp_flags.1 = Some((f.flags, f.mask))
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    k
}

fn ours_tuple(t: &ctnetlink::Tuple) -> OracleTuple {
    // The oracle knows ports (and GRE keys, which travel as ports) but not ICMP ids.
    let (sp, dp) = match t.l4 {
        ctnetlink::L4::Ports { src, dst } => (Some(src), Some(dst)),
        ctnetlink::L4::Gre { src_key, dst_key } => (Some(src_key), Some(dst_key)),
        _ => (None, None),
    };
    (Some(t.src), Some(t.dst), Some(t.proto), sp, dp)
}

fn ours(family: u8, attrs: &[u8]) -> Known {
    let f = ctnetlink::decode::decode_flow(family, attrs).expect("our decoder");
    let mut k = Known {
        orig: Some(ours_tuple(&f.orig)),
        reply: Some(ours_tuple(&f.reply)),
        status: f.status.map(|s| s.bits()),
        timeout: f.timeout,
        mark: f.mark,
        ..Known::default()
    };
    if let Some(ProtoInfo::Tcp(t)) = f.protoinfo {
        k.tcp_state = t.state;
        k.tcp_wscale = (t.wscale_orig, t.wscale_reply);
        k.tcp_flags = (
            t.flags_orig.map(|f| (f.flags, f.mask)),
            t.flags_reply.map(|f| (f.flags, f.mask)),
        );
    }
    k
}

#[test]
fn our_decoder_agrees_with_netlink_packet_netfilter_on_a_kernel_dump() {
    let Some(t) = TestNetns::new("differential") else {
        return;
    };
    let mut ct = ctnetlink::Conntrack::open_in(&t.ns).expect("socket");
    let mut flows = Vec::new();
    for i in 0..3000u32 {
        let ipv6 = i % 3 == 0;
        let mut proto = PROTOS[(i as usize / 3) % PROTOS.len()];
        if proto == ipproto::ICMP && ipv6 {
            proto = ipproto::ICMPV6;
        } else if proto == ipproto::ICMPV6 && !ipv6 {
            proto = ipproto::ICMP;
        }
        let nat = [Nat::None, Nat::Snat, Nat::Dnat][i as usize % 3];
        let mut f = sample_flow(i, ipv6, proto, nat);
        f.mark = (i % 5 == 0).then_some(i);
        f.zone = (i % 11 == 0).then_some(3);
        flows.push(f);
    }
    ct.batch(FlowOp::Create, &flows, |i, e| panic!("create {i}: {e}"))
        .expect("batch");

    // A raw dump: the same bytes go to both decoders.
    let sock =
        t.ns.run(|| {
            let mut s = Socket::new(NETLINK_NETFILTER)?;
            s.bind_auto()?;
            Ok(s)
        })
        .expect("raw socket");
    let mut req = Vec::new();
    let start = ctnetlink::encode::begin_message(
        &mut req,
        ctnetlink::attr::NFNL_SUBSYS_CTNETLINK,
        ctnetlink::attr::IPCTNL_MSG_CT_GET,
        netlink_packet_core::NLM_F_DUMP,
        1,
        0,
    );
    ctnetlink::encode::end_message(&mut req, start);
    sock.send(&req, 0).expect("send dump request");

    let mut compared = 0;
    let mut rx = Vec::with_capacity(1 << 20);
    'outer: for _ in 0..100_000 {
        rx.clear();
        sock.recv(&mut rx, 0).expect("recv");
        let mut pos = 0;
        while pos + 16 <= rx.len() {
            let len = u32::from_ne_bytes(rx[pos..pos + 4].try_into().unwrap()) as usize;
            let one = &rx[pos..pos + len];
            pos += (len + 3) & !3;
            let ty = u16::from_ne_bytes([one[4], one[5]]);
            if ty == 3 {
                break 'outer; // NLMSG_DONE
            }
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(one).expect("oracle decodes");
            let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                ..
            }) = msg.payload
            else {
                panic!("unexpected message {msg:?}");
            };
            let family = one[16];
            assert_eq!(
                ours(family, &one[20..]),
                theirs(&attrs),
                "message {compared}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, flows.len(), "every entry compared");
}
