//! conntrackd's wire format (conntrack-tools 1.4.x, protocol version 1): the message
//! header, the control messages and the conntrack attributes (TLVs).
//!
//! Facts from conntrack-tools 1.4.7 (`include/network.h`, `src/build.c`, `src/parse.c`;
//! /work/shared/research/conntrackd.md §2 has them with line numbers):
//!
//! * a datagram is a plain concatenation of whole messages, no datagram header;
//! * a message is an 8-byte header `(version << 4) | type`, flags, `len` (BE u16, the
//!   whole message), `seq` (BE u32); ACK, NACK and RESYNC add `from` and `to` (BE u32);
//! * a conntrack message's body is TLVs: BE `len` (4 + payload, unpadded), BE id, the
//!   payload padded to 4 bytes;
//! * the NAT ports (`SPAT`, `DPAT`) and the ICMP id travel little-endian from x86
//!   peers (conntrackd applies `htons` to a value already in network order), so they
//!   are read and written little-endian here.
//!
//! Parsing is total: any bytes give messages or a [`CodecError`], never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ctnetlink::{
    DccpInfo, Flow, L4, Labels, Name, ProtoInfo, SctpInfo, SeqAdj, Status, TcpInfo, Tuple, ipproto,
};

/// The protocol version conntrackd 1.4.x speaks (`CONNTRACKD_PROTOCOL_VERSION`).
pub const VERSION: u8 = 1;
/// The header of every message.
pub const HEADER_LEN: usize = 8;
/// The header of ACK, NACK and RESYNC (with `from` and `to`).
pub const CTL_RANGE_LEN: usize = 16;

/// Message types (`NET_T_*`).
pub mod kind {
    /// A new conntrack.
    pub const CT_NEW: u8 = 0;
    /// A conntrack changed.
    pub const CT_UPD: u8 = 1;
    /// A conntrack is gone.
    pub const CT_DEL: u8 = 2;
    /// A new expectation.
    pub const EXP_NEW: u8 = 3;
    /// An expectation changed.
    pub const EXP_UPD: u8 = 4;
    /// An expectation is gone.
    pub const EXP_DEL: u8 = 5;
    /// A control message (ACK, NACK, RESYNC, ALIVE by its flags).
    pub const CTL: u8 = 10;
}

/// Header flags (`NET_F_*`).
pub mod flag {
    /// Send me your whole table.
    pub const RESYNC: u8 = 0x02;
    /// Send again the messages `from..=to`.
    pub const NACK: u8 = 0x04;
    /// Messages `from..=to` arrived.
    pub const ACK: u8 = 0x08;
    /// Nothing to say (an idle second).
    pub const ALIVE: u8 = 0x10;
    /// I (re)started: reset what you track of me.
    pub const HELLO: u8 = 0x20;
    /// I heard your HELLO.
    pub const HELLO_BACK: u8 = 0x40;
}

/// Conntrack attribute ids (`NTA_*`).
mod nta {
    pub(super) const IPV4: u16 = 0;
    pub(super) const IPV6: u16 = 1;
    pub(super) const L4PROTO: u16 = 2;
    pub(super) const PORT: u16 = 3;
    pub(super) const TCP_STATE: u16 = 4;
    pub(super) const STATUS: u16 = 5;
    pub(super) const TIMEOUT: u16 = 6;
    pub(super) const MARK: u16 = 7;
    pub(super) const MASTER_IPV4: u16 = 8;
    pub(super) const MASTER_IPV6: u16 = 9;
    pub(super) const MASTER_L4PROTO: u16 = 10;
    pub(super) const MASTER_PORT: u16 = 11;
    pub(super) const SNAT_IPV4: u16 = 12;
    pub(super) const DNAT_IPV4: u16 = 13;
    pub(super) const SPAT_PORT: u16 = 14;
    pub(super) const DPAT_PORT: u16 = 15;
    pub(super) const NAT_SEQ_ADJ: u16 = 16;
    pub(super) const SCTP_STATE: u16 = 17;
    pub(super) const SCTP_VTAG_ORIG: u16 = 18;
    pub(super) const SCTP_VTAG_REPL: u16 = 19;
    pub(super) const DCCP_STATE: u16 = 20;
    pub(super) const DCCP_ROLE: u16 = 21;
    pub(super) const ICMP_TYPE: u16 = 22;
    pub(super) const ICMP_CODE: u16 = 23;
    pub(super) const ICMP_ID: u16 = 24;
    pub(super) const TCP_WSCALE_ORIG: u16 = 25;
    pub(super) const TCP_WSCALE_REPL: u16 = 26;
    pub(super) const HELPER_NAME: u16 = 27;
    pub(super) const LABELS: u16 = 28;
    pub(super) const SNAT_IPV6: u16 = 29;
    pub(super) const DNAT_IPV6: u16 = 30;
    pub(super) const SYNPROXY: u16 = 31;
    pub(super) const ZONE: u16 = 32;
    /// Ids from here on are unknown to 1.4.7.
    pub(super) const MAX: u16 = 33;
}

/// The longest helper name conntrackd accepts (`nta_len <= 16`: 11 bytes and the NUL).
pub(super) const HELPER_MAX: usize = 11;

/// What was wrong with bytes received, or with a flow to send. Each is a reason label
/// on a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodecError {
    /// Fewer bytes than a header left in the datagram.
    Truncated,
    /// A `len` of 0, below the header, beyond the datagram, or short for its kind.
    BadLength,
    /// A protocol version other than 1.
    BadVersion,
    /// A type that is neither state (0-5) nor control (10), or a control message with no
    /// known flag.
    BadType,
    /// An attribute that overruns the message, is shorter than its header or has the
    /// wrong size for its id.
    BadAttribute,
    /// The original tuple is incomplete (addresses, protocol, ports or ICMP identity).
    NoTuple,
    /// A flow this dialect cannot carry (GRE, UDP-Lite, or no layer-4 identity).
    Unencodable,
}

impl CodecError {
    /// Its name, as the status and the metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            CodecError::Truncated => "truncated",
            CodecError::BadLength => "bad_length",
            CodecError::BadVersion => "bad_version",
            CodecError::BadType => "bad_type",
            CodecError::BadAttribute => "bad_attribute",
            CodecError::NoTuple => "no_tuple",
            CodecError::Unencodable => "unencodable",
        }
    }
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Its type ([`kind`]).
    pub kind: u8,
    /// Its flags ([`flag`]).
    pub flags: u8,
    /// Its sequence number.
    pub seq: u32,
    /// ACK, NACK, RESYNC: the range `from..=to`.
    pub range: Option<(u32, u32)>,
    /// What follows the header (a state message's attributes).
    pub body: &'a [u8],
}

/// What a message is, by its type and flags (`network.h`'s `IS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A conntrack state: new, changed or gone.
    Flow(u8),
    /// An expectation state: new, changed or gone (`ftfw::expect`).
    Expectation(u8),
    /// Messages `from..=to` arrived.
    Ack,
    /// Send `from..=to` again.
    Nack,
    /// Send the whole table.
    Resync,
    /// Nothing to say.
    Alive,
}

impl Message<'_> {
    /// What the message is; `None` for a type or flag combination conntrackd would
    /// call bad.
    pub fn class(&self) -> Option<Class> {
        let data_flags = self.flags & !(flag::HELLO | flag::HELLO_BACK) == 0;
        match self.kind {
            kind::CT_NEW | kind::CT_UPD | kind::CT_DEL if data_flags => {
                Some(Class::Flow(self.kind))
            }
            kind::EXP_NEW | kind::EXP_UPD | kind::EXP_DEL if data_flags => {
                Some(Class::Expectation(self.kind))
            }
            kind::CTL if self.flags & flag::ACK != 0 => Some(Class::Ack),
            kind::CTL if self.flags & flag::NACK != 0 => Some(Class::Nack),
            kind::CTL if self.flags & flag::RESYNC != 0 => Some(Class::Resync),
            kind::CTL if self.flags & flag::ALIVE != 0 => Some(Class::Alive),
            _ => None,
        }
    }
}

pub(super) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of a datagram, in order. A message with a bad header ends the walk
/// (its length cannot be trusted to find the next one); a message with a bad version
/// is skipped (its length is sound).
pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages {
        rest: datagram,
        done: false,
    }
}

/// Iterator of [`messages`].
#[derive(Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        if b.len() < HEADER_LEN {
            self.done = true;
            return Some(Err(CodecError::Truncated));
        }
        let len = usize::from(be16(b, 2).unwrap_or(0));
        if len < HEADER_LEN || len > b.len() {
            self.done = true;
            return Some(Err(CodecError::BadLength));
        }
        let (msg, rest) = b.split_at(len);
        self.rest = rest;
        let version = msg[0] >> 4;
        if version != VERSION {
            return Some(Err(CodecError::BadVersion));
        }
        let kind = msg[0] & 0x0f;
        let flags = msg[1];
        let seq = be32(msg, 4).unwrap_or(0);
        let ranged = kind == kind::CTL && flags & (flag::ACK | flag::NACK | flag::RESYNC) != 0;
        let (range, body) = if ranged {
            match (be32(msg, 8), be32(msg, 12)) {
                (Some(from), Some(to)) => (Some((from, to)), &msg[CTL_RANGE_LEN..]),
                _ => return Some(Err(CodecError::BadLength)),
            }
        } else {
            (None, &msg[HEADER_LEN..])
        };
        Some(Ok(Message {
            kind,
            flags,
            seq,
            range,
            body,
        }))
    }
}

/// Write a message header at the end of `out`; `len` is the whole message's.
pub fn put_header(out: &mut Vec<u8>, kind: u8, flags: u8, len: u16, seq: u32) {
    out.push((VERSION << 4) | (kind & 0x0f));
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Write a control message: ALIVE (8 bytes) or, with a range, ACK/NACK/RESYNC (16).
pub fn put_control(out: &mut Vec<u8>, flags: u8, seq: u32, range: Option<(u32, u32)>) {
    match range {
        Some((from, to)) => {
            put_header(out, kind::CTL, flags, CTL_RANGE_LEN as u16, seq);
            out.extend_from_slice(&from.to_be_bytes());
            out.extend_from_slice(&to.to_be_bytes());
        }
        None => put_header(out, kind::CTL, flags, HEADER_LEN as u16, seq),
    }
}

/// What a conntrack message's attributes say, before the flow is built from them.
#[derive(Default)]
struct Fields {
    addrs: Option<(IpAddr, IpAddr)>,
    proto: Option<u8>,
    ports: Option<(u16, u16)>,
    icmp: (Option<u8>, Option<u8>, Option<u16>),
    tcp_state: Option<u8>,
    wscale: (Option<u8>, Option<u8>),
    sctp: (Option<u8>, Option<u32>, Option<u32>),
    dccp: (Option<u8>, Option<u8>),
    status: Option<u32>,
    timeout: Option<u32>,
    mark: Option<u32>,
    master_addrs: Option<(IpAddr, IpAddr)>,
    master_proto: Option<u8>,
    master_ports: Option<(u16, u16)>,
    snat: Option<IpAddr>,
    dnat: Option<IpAddr>,
    spat: Option<u16>,
    dpat: Option<u16>,
    seq_adj: Option<(SeqAdj, SeqAdj)>,
    helper: Option<Name>,
    labels: Option<Labels>,
    zone: Option<u16>,
}

pub(super) fn v4(b: &[u8]) -> Option<IpAddr> {
    let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

pub(super) fn v6(b: &[u8]) -> Option<IpAddr> {
    let o: [u8; 16] = b.get(..16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

/// The payload must be exactly `n` bytes (conntrackd has no tolerance either).
pub(super) fn exact(p: &[u8], n: usize) -> Result<&[u8], CodecError> {
    if p.len() == n {
        Ok(p)
    } else {
        Err(CodecError::BadAttribute)
    }
}

fn le16(p: &[u8]) -> Result<u16, CodecError> {
    let p = exact(p, 2)?;
    Ok(u16::from_le_bytes([p[0], p[1]]))
}

pub(super) fn u32be(p: &[u8]) -> Result<u32, CodecError> {
    let p = exact(p, 4)?;
    Ok(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
}

pub(super) fn u8of(p: &[u8]) -> Result<u8, CodecError> {
    Ok(exact(p, 1)?[0])
}

pub(super) fn pair16(p: &[u8]) -> Result<(u16, u16), CodecError> {
    let p = exact(p, 4)?;
    Ok((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

pub(super) fn addr_pair(p: &[u8], n: usize) -> Result<(IpAddr, IpAddr), CodecError> {
    let p = exact(p, 2 * n)?;
    let one = |b: &[u8]| if n == 4 { v4(b) } else { v6(b) };
    match (one(&p[..n]), one(&p[n..])) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(CodecError::BadAttribute),
    }
}

impl Fields {
    fn take(&mut self, id: u16, p: &[u8]) -> Result<(), CodecError> {
        match id {
            nta::IPV4 => self.addrs = Some(addr_pair(p, 4)?),
            nta::IPV6 => self.addrs = Some(addr_pair(p, 16)?),
            nta::L4PROTO => self.proto = Some(u8of(p)?),
            nta::PORT => self.ports = Some(pair16(p)?),
            nta::TCP_STATE => self.tcp_state = Some(u8of(p)?),
            nta::STATUS => self.status = Some(u32be(p)?),
            nta::TIMEOUT => self.timeout = Some(u32be(p)?),
            nta::MARK => self.mark = Some(u32be(p)?),
            nta::MASTER_IPV4 => self.master_addrs = Some(addr_pair(p, 4)?),
            nta::MASTER_IPV6 => self.master_addrs = Some(addr_pair(p, 16)?),
            nta::MASTER_L4PROTO => self.master_proto = Some(u8of(p)?),
            nta::MASTER_PORT => self.master_ports = Some(pair16(p)?),
            nta::SNAT_IPV4 => self.snat = v4(exact(p, 4)?),
            nta::DNAT_IPV4 => self.dnat = v4(exact(p, 4)?),
            nta::SPAT_PORT => self.spat = Some(le16(p)?),
            nta::DPAT_PORT => self.dpat = Some(le16(p)?),
            nta::NAT_SEQ_ADJ => {
                let p = exact(p, 24)?;
                let w = |i: usize| be32(p, 4 * i).unwrap_or(0);
                let adj = |i: usize| SeqAdj {
                    correction_pos: w(i),
                    offset_before: w(i + 1),
                    offset_after: w(i + 2),
                };
                self.seq_adj = Some((adj(0), adj(3)));
            }
            nta::SCTP_STATE => self.sctp.0 = Some(u8of(p)?),
            nta::SCTP_VTAG_ORIG => self.sctp.1 = Some(u32be(p)?),
            nta::SCTP_VTAG_REPL => self.sctp.2 = Some(u32be(p)?),
            nta::DCCP_STATE => self.dccp.0 = Some(u8of(p)?),
            nta::DCCP_ROLE => self.dccp.1 = Some(u8of(p)?),
            nta::ICMP_TYPE => self.icmp.0 = Some(u8of(p)?),
            nta::ICMP_CODE => self.icmp.1 = Some(u8of(p)?),
            nta::ICMP_ID => self.icmp.2 = Some(le16(p)?),
            nta::TCP_WSCALE_ORIG => self.wscale.0 = Some(u8of(p)?),
            nta::TCP_WSCALE_REPL => self.wscale.1 = Some(u8of(p)?),
            nta::HELPER_NAME => {
                // NUL-terminated; conntrackd bounds nta_len by 16.
                if p.len() > HELPER_MAX + 1 {
                    return Err(CodecError::BadAttribute);
                }
                let name = p.split(|&c| c == 0).next().unwrap_or_default();
                self.helper = Name::new(name);
            }
            nta::LABELS => {
                // BE u32 words, bit b of word i = label 32·i+b; ctsync keeps 128 labels.
                if !p.len().is_multiple_of(4) || p.len() > 1024 {
                    return Err(CodecError::BadAttribute);
                }
                let mut bits = Vec::new();
                for (i, w) in p.chunks_exact(4).enumerate() {
                    let w = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                    for b in 0..32 {
                        let label = 32 * i + b;
                        if w & (1 << b) != 0 && label < Labels::LEN * 8 {
                            bits.push(label as u8);
                        }
                    }
                }
                if !bits.is_empty() {
                    self.labels = Some(Labels::from_bits(&bits));
                }
            }
            nta::SNAT_IPV6 => self.snat = v6(exact(p, 16)?),
            nta::DNAT_IPV6 => self.dnat = v6(exact(p, 16)?),
            // Zero-filled on every entry from a 1.4.7 sender; a synproxy entry is not
            // recreated from it here.
            nta::SYNPROXY => {
                exact(p, 12)?;
            }
            nta::ZONE => self.zone = Some(pair_or_u16(p)?),
            // Unknown to 1.4.7 (which rejects the whole message): skipped here, so that
            // a newer sender's flows still arrive.
            _ => {}
        }
        Ok(())
    }
}

fn pair_or_u16(p: &[u8]) -> Result<u16, CodecError> {
    let p = exact(p, 2)?;
    Ok(u16::from_be_bytes([p[0], p[1]]))
}

/// The flow a conntrack message (`CT_NEW`, `CT_UPD`, `CT_DEL`) describes: the reply
/// tuple rebuilt by inverting the original and applying the NAT attributes, as
/// conntrackd does on commit.
pub fn decode_flow(body: &[u8]) -> Result<Flow, CodecError> {
    let mut f = Fields::default();
    let mut rest = body;
    while rest.len() >= 4 {
        let len = usize::from(be16(rest, 0).unwrap_or(0));
        let id = be16(rest, 2).unwrap_or(0);
        if len < 4 || len > rest.len() {
            return Err(CodecError::BadAttribute);
        }
        f.take(id, &rest[4..len])?;
        let next = len.next_multiple_of(4).min(rest.len());
        rest = &rest[next..];
    }
    f.flow()
}

impl Fields {
    fn flow(self) -> Result<Flow, CodecError> {
        let (src, dst) = self.addrs.ok_or(CodecError::NoTuple)?;
        let proto = self.proto.ok_or(CodecError::NoTuple)?;
        let l4 = l4_of(proto, self.ports, self.icmp)?;
        let orig = Tuple {
            src,
            dst,
            proto,
            l4,
            zone: None,
        };
        let mut reply = orig.inverse();
        if let Some(a) = self.snat {
            reply.dst = a;
        }
        if let Some(a) = self.dnat {
            reply.src = a;
        }
        if let L4::Ports { src, dst } = &mut reply.l4 {
            if let Some(p) = self.spat {
                *dst = p;
            }
            if let Some(p) = self.dpat {
                *src = p;
            }
        }
        let mut flow = Flow::new(orig, reply);
        flow.zone = self.zone.filter(|&z| z != 0);
        flow.status = self.status.map(Status::from_bits_retain);
        flow.timeout = self.timeout;
        flow.mark = self.mark;
        flow.labels = self.labels;
        flow.helper = self.helper;
        if let Some((o, r)) = self.seq_adj {
            flow.seq_adj_orig = Some(o);
            flow.seq_adj_reply = Some(r);
        }
        flow.protoinfo = match proto {
            ipproto::TCP => Some(ProtoInfo::Tcp(TcpInfo {
                state: self.tcp_state,
                wscale_orig: self.wscale.0,
                wscale_reply: self.wscale.1,
                flags_orig: None,
                flags_reply: None,
            })),
            ipproto::SCTP => Some(ProtoInfo::Sctp(SctpInfo {
                state: self.sctp.0,
                vtag_orig: self.sctp.1,
                vtag_reply: self.sctp.2,
            })),
            ipproto::DCCP => Some(ProtoInfo::Dccp(DccpInfo {
                state: self.dccp.0,
                role: self.dccp.1,
                handshake_seq: None,
            })),
            _ => None,
        };
        if let (Some((ms, md)), Some(mp)) = (self.master_addrs, self.master_proto) {
            flow.master = Some(Tuple {
                src: ms,
                dst: md,
                proto: mp,
                l4: l4_of(mp, self.master_ports, (None, None, None)).unwrap_or(L4::None),
                zone: None,
            });
        }
        Ok(flow)
    }
}

fn l4_of(
    proto: u8,
    ports: Option<(u16, u16)>,
    (kind, code, id): (Option<u8>, Option<u8>, Option<u16>),
) -> Result<L4, CodecError> {
    match proto {
        ipproto::TCP | ipproto::UDP | ipproto::SCTP | ipproto::DCCP | ipproto::UDPLITE => {
            let (src, dst) = ports.ok_or(CodecError::NoTuple)?;
            Ok(L4::Ports { src, dst })
        }
        ipproto::ICMP | ipproto::ICMPV6 => match (kind, code, id) {
            (Some(kind), Some(code), Some(id)) => Ok(if proto == ipproto::ICMP {
                L4::Icmp { id, kind, code }
            } else {
                L4::Icmpv6 { id, kind, code }
            }),
            _ => Err(CodecError::NoTuple),
        },
        _ => Ok(L4::None),
    }
}

/// Append one attribute (header, payload, padding).
pub(super) fn put_attr(out: &mut Vec<u8>, id: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

pub(super) fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn put_addrs(out: &mut Vec<u8>, (v4id, v6id): (u16, u16), src: &IpAddr, dst: &IpAddr) {
    let mut p = addr_bytes(src);
    p.extend(addr_bytes(dst));
    put_attr(out, if src.is_ipv4() { v4id } else { v6id }, &p);
}

/// Append the attributes of `flow` (what conntrackd's `ct2msg` sends: the original
/// tuple, status, layer-4 state, timeout, mark, master, NAT, sequence adjustment,
/// helper, labels, zone) to `out`. GRE and UDP-Lite flows, which 1.4.7 cannot carry,
/// and tuples mixing families are [`CodecError::Unencodable`]; `out` is then unchanged.
pub fn encode_flow(flow: &Flow, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let o = &flow.orig;
    if o.src.is_ipv4() != o.dst.is_ipv4() {
        return Err(CodecError::Unencodable);
    }
    match (o.proto, o.l4) {
        (ipproto::TCP | ipproto::UDP | ipproto::SCTP | ipproto::DCCP, L4::Ports { .. }) => {}
        (ipproto::ICMP, L4::Icmp { .. }) | (ipproto::ICMPV6, L4::Icmpv6 { .. }) => {}
        _ => return Err(CodecError::Unencodable),
    }
    put_addrs(out, (nta::IPV4, nta::IPV6), &o.src, &o.dst);
    put_attr(
        out,
        nta::STATUS,
        &flow.status.map_or(0, |s| s.bits()).to_be_bytes(),
    );
    put_attr(out, nta::L4PROTO, &[o.proto]);
    match o.l4 {
        L4::Ports { src, dst } => {
            let mut p = src.to_be_bytes().to_vec();
            p.extend(dst.to_be_bytes());
            put_attr(out, nta::PORT, &p);
        }
        L4::Icmp { id, kind, code } | L4::Icmpv6 { id, kind, code } => {
            put_attr(out, nta::ICMP_TYPE, &[kind]);
            put_attr(out, nta::ICMP_CODE, &[code]);
            put_attr(out, nta::ICMP_ID, &id.to_le_bytes());
        }
        L4::None | L4::Gre { .. } => {}
    }
    match flow.protoinfo {
        Some(ProtoInfo::Tcp(t)) => {
            if let Some(s) = t.state {
                put_attr(out, nta::TCP_STATE, &[s]);
            }
        }
        Some(ProtoInfo::Sctp(s)) => {
            if let Some(st) = s.state {
                put_attr(out, nta::SCTP_STATE, &[st]);
            }
            if let Some(v) = s.vtag_orig {
                put_attr(out, nta::SCTP_VTAG_ORIG, &v.to_be_bytes());
            }
            if let Some(v) = s.vtag_reply {
                put_attr(out, nta::SCTP_VTAG_REPL, &v.to_be_bytes());
            }
        }
        Some(ProtoInfo::Dccp(d)) => {
            if let Some(st) = d.state {
                put_attr(out, nta::DCCP_STATE, &[st]);
            }
            if let Some(r) = d.role {
                put_attr(out, nta::DCCP_ROLE, &[r]);
            }
        }
        None => {}
    }
    if let Some(t) = flow.timeout {
        put_attr(out, nta::TIMEOUT, &t.to_be_bytes());
    }
    if let Some(m) = flow.mark {
        put_attr(out, nta::MARK, &m.to_be_bytes());
    }
    if let Some(m) = &flow.master
        && m.src.is_ipv4() == m.dst.is_ipv4()
    {
        put_addrs(out, (nta::MASTER_IPV4, nta::MASTER_IPV6), &m.src, &m.dst);
        put_attr(out, nta::MASTER_L4PROTO, &[m.proto]);
        if let L4::Ports { src, dst } = m.l4 {
            let mut p = src.to_be_bytes().to_vec();
            p.extend(dst.to_be_bytes());
            put_attr(out, nta::MASTER_PORT, &p);
        }
    }
    if let Some((addr, port)) = flow.snat() {
        let id = if addr.is_ipv4() {
            nta::SNAT_IPV4
        } else {
            nta::SNAT_IPV6
        };
        put_attr(out, id, &addr_bytes(&addr));
        if let (Some(p), L4::Ports { .. }) = (port, o.l4)
            && Some(p) != o.src_port()
        {
            put_attr(out, nta::SPAT_PORT, &p.to_le_bytes());
        }
    }
    if let Some((addr, port)) = flow.dnat() {
        let id = if addr.is_ipv4() {
            nta::DNAT_IPV4
        } else {
            nta::DNAT_IPV6
        };
        put_attr(out, id, &addr_bytes(&addr));
        if let (Some(p), L4::Ports { .. }) = (port, o.l4)
            && Some(p) != o.dst_port()
        {
            put_attr(out, nta::DPAT_PORT, &p.to_le_bytes());
        }
    }
    if let (Some(a), Some(b)) = (flow.seq_adj_orig, flow.seq_adj_reply) {
        let mut p = Vec::with_capacity(24);
        for adj in [a, b] {
            p.extend(adj.correction_pos.to_be_bytes());
            p.extend(adj.offset_before.to_be_bytes());
            p.extend(adj.offset_after.to_be_bytes());
        }
        put_attr(out, nta::NAT_SEQ_ADJ, &p);
    }
    if let Some(h) = &flow.helper
        && h.as_bytes().len() <= HELPER_MAX
    {
        let mut p = h.as_bytes().to_vec();
        p.push(0);
        put_attr(out, nta::HELPER_NAME, &p);
    }
    if let Some(l) = &flow.labels
        && l.0.iter().any(|&b| b != 0)
    {
        // Little-endian bytes of the kernel's bitmap → conntrackd's BE u32 words.
        let mut p = Vec::with_capacity(Labels::LEN);
        for w in l.0.chunks_exact(4) {
            p.extend(u32::from_le_bytes([w[0], w[1], w[2], w[3]]).to_be_bytes());
        }
        put_attr(out, nta::LABELS, &p);
    }
    if let Some(z) = flow.zone.filter(|&z| z != 0) {
        put_attr(out, nta::ZONE, &z.to_be_bytes());
    }
    Ok(())
}

/// A whole state message: header (`kind`, `flags`, `seq`) and `body` (attributes from
/// [`encode_flow`]), appended to `out`. `None` if it would exceed a u16 length.
pub fn put_state(out: &mut Vec<u8>, kind: u8, flags: u8, seq: u32, body: &[u8]) -> Option<()> {
    let len = u16::try_from(HEADER_LEN + body.len()).ok()?;
    put_header(out, kind, flags, len, seq);
    out.extend_from_slice(body);
    Some(())
}

/// Ids 1.4.7 knows (an id at or above this makes it reject the message).
pub const KNOWN_ATTRIBUTES: u16 = nta::MAX;

#[cfg(test)]
mod tests;
