//! Encoding ctnetlink messages from the flow model into a caller's reusable buffer.
//!
//! Messages are appended to a `Vec<u8>`, so many of them can be packed into one
//! `sendmsg`. Nothing here allocates beyond growing that buffer.

use std::net::IpAddr;

use netlink_packet_core::{NLA_F_NESTED, NLM_F_REQUEST};

use crate::attr::{self, cta};
use crate::flow::{
    Expectation, Family, Flow, L4, Name, Nest, OtherAttr, ProtoInfo, SeqAdj, Status, TcpFlags,
    Tuple,
};

/// What a conntrack message is for; it decides which attributes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOp {
    /// Create (`IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE|NLM_F_EXCL`): tuples, state and the
    /// NAT bindings the tuples imply; nothing read-only.
    Create,
    /// Update an existing entry (`IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE`): the
    /// original tuple as key plus what the kernel lets change. No NAT, no master.
    Update,
    /// Delete (`IPCTNL_MSG_CT_DELETE`): the key only.
    Delete,
    /// Get one entry (`IPCTNL_MSG_CT_GET`): the key only.
    Get,
    /// Everything the model holds, read-only attributes included, as a kernel dump or
    /// event would carry it. For tests, captures and golden files.
    Full,
}

/// Status bits the kernel never lets user space set (`IPS_UNCHANGEABLE_MASK` in
/// `nf_conntrack_common.h`); they are left out of requests.
const UNCHANGEABLE: Status = Status::NAT_CLASH
    .union(Status::EXPECTED)
    .union(Status::CONFIRMED)
    .union(Status::DYING)
    .union(Status::SEQ_ADJUST)
    .union(Status::TEMPLATE)
    .union(Status::OFFLOAD)
    .union(Status::HW_OFFLOAD)
    .union(Status::SRC_NAT_DONE)
    .union(Status::DST_NAT_DONE)
    .union(Status::SRC_NAT)
    .union(Status::DST_NAT);

/// The status a request carries. The kernel answers `EBUSY` when the request's
/// `CONFIRMED`, `EXPECTED` or `DYING` bits differ from the entry's
/// (`ctnetlink_change_status`, `net/netfilter/nf_conntrack_netlink.c`), and the entry is
/// confirmed by the time the status is applied, on create as on update. So: the
/// changeable bits as given, `CONFIRMED` always, `EXPECTED` as the flow has it (the
/// kernel sets it itself for a flow created with a master); other unchangeable bits are
/// left out, which the kernel ignores anyway.
fn request_status(status: Status) -> Status {
    (status - UNCHANGEABLE) | Status::CONFIRMED | (status & Status::EXPECTED)
}

/// Start a netlink message with an nfgenmsg header; returns its offset for [`end_message`].
pub fn begin_message(
    buf: &mut Vec<u8>,
    subsys: u8,
    msg: u8,
    flags: u16,
    seq: u32,
    family: u8,
) -> usize {
    let start = buf.len();
    let msg_type = (u16::from(subsys) << 8) | u16::from(msg);
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched by end_message
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
    buf.extend_from_slice(&[family, attr::NFNETLINK_V0, 0, 0]);
    start
}

/// Finish a message begun at `start`: set its length and pad to 4 bytes.
pub fn end_message(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An rtnetlink request about namespace ids (`RTM_NEWNSID`, `RTM_GETNSID`): its
/// `struct rtgenmsg` (family `AF_UNSPEC`, padded to four bytes) has the layout of an
/// nfgenmsg of family 0 and version 0, and its type no subsystem byte, so the message
/// starts as any other here. `NETNSA_NSID` if `nsid` is given, then `NETNSA_FD`.
pub(crate) fn encode_nsid_request(
    buf: &mut Vec<u8>,
    msg_type: u16,
    flags: u16,
    seq: u32,
    nsid: Option<i32>,
    fd: u32,
) {
    // The rtgenmsg's pad byte sits where the nfgenmsg's version does: both 0.
    const _: () = assert!(attr::NFNETLINK_V0 == 0);
    let [subsys, msg] = msg_type.to_be_bytes();
    let start = begin_message(buf, subsys, msg, flags, seq, libc::AF_UNSPEC as u8);
    if let Some(id) = nsid {
        put(buf, NETNSA_NSID, &id.to_ne_bytes());
    }
    put(buf, NETNSA_FD, &fd.to_ne_bytes());
    end_message(buf, start);
}

/// `NETNSA_NSID` and `NETNSA_FD` (linux/net_namespace.h).
pub(crate) const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// Overwrite the `nlmsg_pid` of a message begun at `start` (for building event captures).
pub fn set_message_pid(buf: &mut [u8], start: usize, pid: u32) {
    buf[start + 12..start + 16].copy_from_slice(&pid.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn put(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // An attribute's length is 16 bits; only an oversized unknown attribute kept from
    // elsewhere could exceed it, and it is left out rather than corrupt the message.
    let Ok(len) = u16::try_from(4 + value.len()) else {
        return;
    };
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    pad(buf);
}

fn put_u8(buf: &mut Vec<u8>, kind: u16, v: u8) {
    put(buf, kind, &[v]);
}

fn put_u16(buf: &mut Vec<u8>, kind: u16, v: u16) {
    put(buf, kind, &v.to_be_bytes());
}

fn put_u32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    put(buf, kind, &v.to_be_bytes());
}

fn put_u64(buf: &mut Vec<u8>, kind: u16, v: u64) {
    put(buf, kind, &v.to_be_bytes());
}

fn put_name(buf: &mut Vec<u8>, kind: u16, name: &Name) {
    let bytes = name.as_bytes();
    let len = (4 + bytes.len() + 1) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(bytes);
    buf.push(0);
    pad(buf);
}

fn begin_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

fn end_nest(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn put_others(buf: &mut Vec<u8>, others: &[OtherAttr], nest: Nest) {
    for o in others.iter().filter(|o| o.nest == nest) {
        put(buf, o.kind, &o.value);
    }
}

fn put_addr(buf: &mut Vec<u8>, v4: u16, v6: u16, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => put(buf, v4, &a.octets()),
        IpAddr::V6(a) => put(buf, v6, &a.octets()),
    }
}

/// Append a tuple nest of type `kind`.
pub fn put_tuple(buf: &mut Vec<u8>, kind: u16, t: &Tuple) {
    let outer = begin_nest(buf, kind);
    let ip = begin_nest(buf, attr::tuple::IP);
    put_addr(buf, attr::ip::V4_SRC, attr::ip::V6_SRC, &t.src);
    put_addr(buf, attr::ip::V4_DST, attr::ip::V6_DST, &t.dst);
    end_nest(buf, ip);
    let proto = begin_nest(buf, attr::tuple::PROTO);
    put_u8(buf, attr::proto::NUM, t.proto);
    match t.l4 {
        L4::None => {}
        L4::Ports { src, dst }
        | L4::Gre {
            src_key: src,
            dst_key: dst,
        } => {
            put_u16(buf, attr::proto::SRC_PORT, src);
            put_u16(buf, attr::proto::DST_PORT, dst);
        }
        L4::Icmp { id, kind, code } => {
            put_u16(buf, attr::proto::ICMP_ID, id);
            put_u8(buf, attr::proto::ICMP_TYPE, kind);
            put_u8(buf, attr::proto::ICMP_CODE, code);
        }
        L4::Icmpv6 { id, kind, code } => {
            put_u16(buf, attr::proto::ICMPV6_ID, id);
            put_u8(buf, attr::proto::ICMPV6_TYPE, kind);
            put_u8(buf, attr::proto::ICMPV6_CODE, code);
        }
    }
    end_nest(buf, proto);
    if let Some(zone) = t.zone {
        put_u16(buf, attr::tuple::ZONE, zone);
    }
    end_nest(buf, outer);
}

fn put_nat(buf: &mut Vec<u8>, kind: u16, addr: &IpAddr, port: Option<u16>) {
    // ctattr_nat: a one-address, one-port range reproduces the reply tuple exactly.
    let nat = begin_nest(buf, kind);
    match addr {
        IpAddr::V4(a) => {
            put(buf, attr::nat::V4_MINIP, &a.octets());
            put(buf, attr::nat::V4_MAXIP, &a.octets());
        }
        IpAddr::V6(a) => {
            put(buf, attr::nat::V6_MINIP, &a.octets());
            put(buf, attr::nat::V6_MAXIP, &a.octets());
        }
    }
    if let Some(port) = port {
        let proto = begin_nest(buf, attr::nat::PROTO);
        put_u16(buf, attr::nat::PORT_MIN, port);
        put_u16(buf, attr::nat::PORT_MAX, port);
        end_nest(buf, proto);
    }
    end_nest(buf, nat);
}

fn put_tcp_flags(buf: &mut Vec<u8>, kind: u16, f: &TcpFlags, request: bool) {
    // The kernel applies only the masked bits, and reports flags with mask 0: written
    // back as read, they would change nothing. A request with no mask sets the flags.
    let mask = if request && f.mask == 0 {
        f.flags
    } else {
        f.mask
    };
    put(buf, kind, &[f.flags, mask]);
}

fn put_protoinfo(buf: &mut Vec<u8>, info: &ProtoInfo, others: &[OtherAttr], request: bool) {
    use attr::protoinfo as p;
    let outer = begin_nest(buf, cta::PROTOINFO);
    match info {
        ProtoInfo::Tcp(t) => {
            let n = begin_nest(buf, p::TCP);
            if let Some(v) = t.state {
                put_u8(buf, p::TCP_STATE, v);
            }
            if let Some(v) = t.wscale_orig {
                put_u8(buf, p::TCP_WSCALE_ORIGINAL, v);
            }
            if let Some(v) = t.wscale_reply {
                put_u8(buf, p::TCP_WSCALE_REPLY, v);
            }
            if let Some(v) = &t.flags_orig {
                put_tcp_flags(buf, p::TCP_FLAGS_ORIGINAL, v, request);
            }
            if let Some(v) = &t.flags_reply {
                put_tcp_flags(buf, p::TCP_FLAGS_REPLY, v, request);
            }
            put_others(buf, others, Nest::ProtoInfoProto);
            end_nest(buf, n);
        }
        ProtoInfo::Sctp(s) => {
            let n = begin_nest(buf, p::SCTP);
            if let Some(v) = s.state {
                put_u8(buf, p::SCTP_STATE, v);
            }
            if let Some(v) = s.vtag_orig {
                put_u32(buf, p::SCTP_VTAG_ORIGINAL, v);
            }
            if let Some(v) = s.vtag_reply {
                put_u32(buf, p::SCTP_VTAG_REPLY, v);
            }
            put_others(buf, others, Nest::ProtoInfoProto);
            end_nest(buf, n);
        }
        ProtoInfo::Dccp(d) => {
            let n = begin_nest(buf, p::DCCP);
            if let Some(v) = d.state {
                put_u8(buf, p::DCCP_STATE, v);
            }
            if let Some(v) = d.role {
                put_u8(buf, p::DCCP_ROLE, v);
            }
            if let Some(v) = d.handshake_seq {
                put_u64(buf, p::DCCP_HANDSHAKE_SEQ, v);
            }
            put_others(buf, others, Nest::ProtoInfoProto);
            end_nest(buf, n);
        }
    }
    put_others(buf, others, Nest::ProtoInfo);
    end_nest(buf, outer);
}

fn put_seqadj(buf: &mut Vec<u8>, kind: u16, s: &SeqAdj) {
    let n = begin_nest(buf, kind);
    put_u32(buf, attr::seqadj::CORRECTION_POS, s.correction_pos);
    put_u32(buf, attr::seqadj::OFFSET_BEFORE, s.offset_before);
    put_u32(buf, attr::seqadj::OFFSET_AFTER, s.offset_after);
    end_nest(buf, n);
}

/// Append the attributes of `flow` for `op` (no message header).
pub fn put_flow_attrs(buf: &mut Vec<u8>, flow: &Flow, op: FlowOp) {
    let full = op == FlowOp::Full;
    let request = matches!(op, FlowOp::Create | FlowOp::Update);
    put_tuple(buf, cta::TUPLE_ORIG, &flow.orig);
    let nat = (flow.snat(), flow.dnat());
    match op {
        FlowOp::Full => put_tuple(buf, cta::TUPLE_REPLY, &flow.reply),
        // Under NAT the kernel must derive the reply tuple itself: nf_nat_setup_info()
        // inverts the reply it holds, maps it through CTA_NAT_* and sets IPS_SRC_NAT or
        // IPS_DST_NAT only if that changes it. Given the NATed reply, it would see no
        // change and the packets would never be rewritten. So send the un-NATed reply
        // (conntrackd does the same: NFCT_SOPT_UNDO_SNAT/DNAT before its commits).
        FlowOp::Create if nat != (None, None) => {
            let mut unnated = flow.orig.inverse();
            unnated.zone = flow.reply.zone;
            put_tuple(buf, cta::TUPLE_REPLY, &unnated);
        }
        FlowOp::Create => put_tuple(buf, cta::TUPLE_REPLY, &flow.reply),
        _ => {}
    }
    if let Some(zone) = flow.zone {
        put_u16(buf, cta::ZONE, zone);
    }
    if !(full || request) {
        return;
    }
    if let Some(status) = flow.status {
        let status = if full { status } else { request_status(status) };
        put_u32(buf, cta::STATUS, status.bits());
    }
    if let Some(timeout) = flow.timeout {
        put_u32(buf, cta::TIMEOUT, timeout);
    }
    if let Some(mark) = flow.mark {
        put_u32(buf, cta::MARK, mark);
    }
    if full {
        if let Some(secmark) = flow.secmark {
            put_u32(buf, cta::SECMARK, secmark);
        }
        if let Some(id) = flow.id {
            put_u32(buf, cta::ID, id);
        }
        if let Some(u) = flow.use_count {
            put_u32(buf, cta::USE, u);
        }
    }
    if let Some(labels) = &flow.labels {
        // Requests carry labels only when some are set: a netns where no rule uses
        // labels has no label extension, and the kernel refuses any CTA_LABELS there.
        if full || labels.0 != [0u8; 16] {
            put(buf, cta::LABELS, &labels.0);
        }
    }
    match &flow.protoinfo {
        Some(info) => put_protoinfo(buf, info, &flow.other, request),
        // A CTA_PROTOINFO that held only attributes we do not know.
        None if flow.other.iter().any(|o| o.nest == Nest::ProtoInfo) => {
            let n = begin_nest(buf, cta::PROTOINFO);
            put_others(buf, &flow.other, Nest::ProtoInfo);
            end_nest(buf, n);
        }
        None => {}
    }
    if let Some(s) = &flow.seq_adj_orig {
        put_seqadj(buf, cta::SEQ_ADJ_ORIG, s);
    }
    if let Some(s) = &flow.seq_adj_reply {
        put_seqadj(buf, cta::SEQ_ADJ_REPLY, s);
    }
    // Neither the helper nor the master of an existing entry can change (EOPNOTSUPP).
    if let Some(helper) = flow.helper.as_ref().filter(|_| op != FlowOp::Update) {
        let n = begin_nest(buf, cta::HELP);
        put_name(buf, attr::help::NAME, helper);
        end_nest(buf, n);
    }
    if let Some(master) = flow.master.as_ref().filter(|_| op != FlowOp::Update) {
        put_tuple(buf, cta::TUPLE_MASTER, master);
    }
    if op == FlowOp::Create {
        if let Some((addr, port)) = nat.0 {
            put_nat(buf, cta::NAT_SRC, &addr, port);
        }
        if let Some((addr, port)) = nat.1 {
            put_nat(buf, cta::NAT_DST, &addr, port);
        }
    }
    if let Some(sp) = &flow.synproxy {
        let n = begin_nest(buf, cta::SYNPROXY);
        put_u32(buf, attr::synproxy::ISN, sp.isn);
        put_u32(buf, attr::synproxy::ITS, sp.its);
        put_u32(buf, attr::synproxy::TSOFF, sp.tsoff);
        end_nest(buf, n);
    }
    if full {
        for (kind, c) in [
            (cta::COUNTERS_ORIG, &flow.counters_orig),
            (cta::COUNTERS_REPLY, &flow.counters_reply),
        ] {
            if let Some(c) = c {
                let n = begin_nest(buf, kind);
                put_u64(buf, attr::counters::PACKETS, c.packets);
                put_u64(buf, attr::counters::BYTES, c.bytes);
                end_nest(buf, n);
            }
        }
        if let Some(ts) = &flow.timestamp {
            let n = begin_nest(buf, cta::TIMESTAMP);
            if let Some(v) = ts.start {
                put_u64(buf, attr::tstamp::START, v);
            }
            if let Some(v) = ts.stop {
                put_u64(buf, attr::tstamp::STOP, v);
            }
            end_nest(buf, n);
        }
        put_others(buf, &flow.other, Nest::Top);
    }
}

/// The message type and flags a conntrack request for `op` uses.
pub fn flow_op_header(op: FlowOp) -> (u8, u16) {
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    match op {
        FlowOp::Create => (attr::IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL),
        FlowOp::Update => (attr::IPCTNL_MSG_CT_NEW, 0),
        FlowOp::Delete => (attr::IPCTNL_MSG_CT_DELETE, 0),
        FlowOp::Get => (attr::IPCTNL_MSG_CT_GET, 0),
        FlowOp::Full => (attr::IPCTNL_MSG_CT_NEW, 0),
    }
}

/// Append one complete conntrack message for `op` on `flow`.
pub fn encode_flow(buf: &mut Vec<u8>, op: FlowOp, flow: &Flow, seq: u32, extra_flags: u16) {
    let (msg, flags) = flow_op_header(op);
    let start = begin_message(
        buf,
        attr::NFNL_SUBSYS_CTNETLINK,
        msg,
        flags | extra_flags,
        seq,
        flow.family().af(),
    );
    put_flow_attrs(buf, flow, op);
    end_message(buf, start);
}

/// Append a flush request for one family (`None`: both).
///
/// A flush with nfgenmsg version 0 empties every family whatever the family byte says
/// (`ctnetlink_flush_conntrack` filters by family only from version 1 on, kept for old
/// user space), so a one-family flush is sent as version 1.
pub fn encode_flush(buf: &mut Vec<u8>, family: Option<Family>, seq: u32, extra_flags: u16) {
    let af = family.map_or(libc::AF_UNSPEC as u8, Family::af);
    let start = begin_message(
        buf,
        attr::NFNL_SUBSYS_CTNETLINK,
        attr::IPCTNL_MSG_CT_DELETE,
        extra_flags,
        seq,
        af,
    );
    if family.is_some() {
        buf[start + 17] = 1; // nfgenmsg.version
    }
    end_message(buf, start);
}

/// What an expectation message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpOp {
    /// Create: master, tuple, mask, timeout, helper, zone, flags, class, NAT, function.
    Create,
    /// Delete or get: tuple and zone.
    Delete,
    /// Everything, as a dump carries it.
    Full,
}

/// Append the attributes of an expectation for `op`.
pub fn put_expectation_attrs(buf: &mut Vec<u8>, exp: &Expectation, op: ExpOp) {
    use attr::expect as e;
    if op != ExpOp::Delete {
        put_tuple(buf, e::MASTER, &exp.master);
    }
    put_tuple(buf, e::TUPLE, &exp.tuple);
    if op != ExpOp::Delete {
        put_tuple(buf, e::MASK, &exp.mask);
    }
    if let Some(zone) = exp.zone {
        put_u16(buf, e::ZONE, zone);
    }
    if op == ExpOp::Delete {
        return;
    }
    if let Some(v) = exp.timeout {
        put_u32(buf, e::TIMEOUT, v);
    }
    if let Some(v) = exp.id.filter(|_| op == ExpOp::Full) {
        put_u32(buf, e::ID, v);
    }
    if let Some(h) = &exp.helper {
        put_name(buf, e::HELP_NAME, h);
    }
    if let Some(v) = exp.flags {
        put_u32(buf, e::FLAGS, v);
    }
    if let Some(v) = exp.class {
        put_u32(buf, e::CLASS, v);
    }
    if let Some(nat) = &exp.nat {
        let n = begin_nest(buf, e::NAT);
        put_u32(buf, e::NAT_DIR, nat.dir);
        put_tuple(buf, e::NAT_TUPLE, &nat.tuple);
        end_nest(buf, n);
    }
    if let Some(f) = &exp.function {
        put_name(buf, e::FN, f);
    }
    if op == ExpOp::Full {
        put_others(buf, &exp.other, Nest::Top);
    }
}

/// Append one complete expectation message.
pub fn encode_expectation(
    buf: &mut Vec<u8>,
    op: ExpOp,
    exp: &Expectation,
    seq: u32,
    extra_flags: u16,
) {
    use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    let (msg, flags) = match op {
        ExpOp::Create => (attr::IPCTNL_MSG_EXP_NEW, NLM_F_CREATE | NLM_F_EXCL),
        ExpOp::Delete => (attr::IPCTNL_MSG_EXP_DELETE, 0),
        ExpOp::Full => (attr::IPCTNL_MSG_EXP_NEW, 0),
    };
    let start = begin_message(
        buf,
        attr::NFNL_SUBSYS_CTNETLINK_EXP,
        msg,
        flags | extra_flags,
        seq,
        exp.master.family().af(),
    );
    put_expectation_attrs(buf, exp, op);
    end_message(buf, start);
}
