//! The one flow model: a conntrack entry as ctnetlink can describe it.
//!
//! A [`Flow`] holds every attribute the kernel reports or accepts for a connection. All
//! fields are fixed-size, so a flow lives on the stack or inline in a cache slot with no
//! heap allocation; the only exception is [`Flow::other`], which holds attributes this
//! crate does not know and stays empty (unallocated) for every attribute of Linux 6.18.
//!
//! NAT is what the tuples say: a flow whose reply tuple is not the inverse of its original
//! tuple is NATed ([`Flow::snat`], [`Flow::dnat`]); the codec turns that into
//! `CTA_NAT_SRC`/`CTA_NAT_DST` when it creates the flow in a kernel.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IANA protocol numbers the model treats specially.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// DCCP.
    pub const DCCP: u8 = 33;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// UDP-Lite.
    pub const UDPLITE: u8 = 136;
}

/// The layer-3 family of a flow, as carried in the nfgenmsg header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    Ipv4,
    /// IPv6 (`AF_INET6`).
    Ipv6,
}

impl Family {
    /// The `AF_*` number.
    pub fn af(self) -> u8 {
        match self {
            Family::Ipv4 => libc::AF_INET as u8,
            Family::Ipv6 => libc::AF_INET6 as u8,
        }
    }

    /// The family of an `AF_*` number, if it is IPv4 or IPv6.
    pub fn from_af(af: u8) -> Option<Family> {
        match i32::from(af) {
            libc::AF_INET => Some(Family::Ipv4),
            libc::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The unspecified address of this family.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// The layer-4 part of a tuple (`CTA_TUPLE_PROTO` minus the protocol number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum L4 {
    /// No layer-4 identity (protocols the kernel tracks by address only).
    #[default]
    None,
    /// Source and destination port: TCP, UDP, UDP-Lite, SCTP, DCCP.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// GRE keys (PPTP call ids), carried in the port attributes.
    Gre {
        /// Source key.
        src_key: u16,
        /// Destination key.
        dst_key: u16,
    },
    /// ICMP identifier, type and code.
    Icmp {
        /// Echo identifier.
        id: u16,
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// ICMPv6 identifier, type and code.
    Icmpv6 {
        /// Echo identifier.
        id: u16,
        /// ICMPv6 type.
        kind: u8,
        /// ICMPv6 code.
        code: u8,
    },
}

/// One direction of a connection: addresses, protocol, layer-4 identity, and optionally
/// the zone the kernel keys this direction by (`CTA_TUPLE_ZONE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IANA protocol number (`CTA_PROTO_NUM`).
    pub proto: u8,
    /// Ports, keys or ICMP identity.
    pub l4: L4,
    /// Per-direction zone (`CTA_TUPLE_ZONE`), when the kernel reports one.
    pub zone: Option<u16>,
}

impl Tuple {
    /// The tuple packed into bytes: hashing one slice is several times cheaper than
    /// hashing each field (caches hash millions of keys per second).
    fn packed(&self) -> [u8; 42] {
        let mut b = [0u8; 42];
        let addr = |a: &IpAddr, out: &mut [u8]| match a {
            IpAddr::V4(a) => out[12..16].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
        };
        addr(&self.src, &mut b[0..16]);
        addr(&self.dst, &mut b[16..32]);
        b[32] = u8::from(matches!(self.src, IpAddr::V6(_)))
            | u8::from(matches!(self.dst, IpAddr::V6(_))) << 1;
        b[33] = self.proto;
        let (kind, x, y, z) = match self.l4 {
            L4::None => (0, 0, 0, 0),
            L4::Ports { src, dst } => (1, src, dst, 0),
            L4::Gre { src_key, dst_key } => (2, src_key, dst_key, 0),
            L4::Icmp { id, kind, code } => (3, id, u16::from(kind), u16::from(code)),
            L4::Icmpv6 { id, kind, code } => (4, id, u16::from(kind), u16::from(code)),
        };
        b[34] = kind;
        b[35..37].copy_from_slice(&x.to_ne_bytes());
        b[37..39].copy_from_slice(&y.to_ne_bytes());
        b[39] = z as u8;
        if let Some(z) = self.zone {
            b[40..42].copy_from_slice(&z.to_ne_bytes());
            b[32] |= 4;
        }
        b
    }

    /// A tuple with ports (TCP, UDP, UDP-Lite, SCTP, DCCP).
    pub fn ports(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple {
        Tuple {
            src,
            dst,
            proto,
            l4: L4::Ports {
                src: sport,
                dst: dport,
            },
            zone: None,
        }
    }

    /// The family of the source address.
    pub fn family(&self) -> Family {
        Family::of(&self.src)
    }

    /// The tuple of the other direction, as the kernel would build it without NAT.
    ///
    /// ICMP echo request becomes echo reply (types 8↔0, 128↔129, and the other pairs the
    /// kernel inverts); other ICMP types keep their type.
    pub fn inverse(&self) -> Tuple {
        let l4 = match self.l4 {
            L4::None => L4::None,
            L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
            L4::Gre { src_key, dst_key } => L4::Gre {
                src_key: dst_key,
                dst_key: src_key,
            },
            L4::Icmp { id, kind, code } => L4::Icmp {
                id,
                kind: invert_icmp_type(kind),
                code,
            },
            L4::Icmpv6 { id, kind, code } => L4::Icmpv6 {
                id,
                kind: invert_icmpv6_type(kind),
                code,
            },
        };
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            l4,
            zone: self.zone,
        }
    }

    /// The source port (or key, or ICMP id) of this tuple, if it has one.
    pub fn src_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { src, .. } => Some(src),
            L4::Gre { src_key, .. } => Some(src_key),
            L4::Icmp { id, .. } | L4::Icmpv6 { id, .. } => Some(id),
            L4::None => None,
        }
    }

    /// The destination port (or key, or ICMP id) of this tuple, if it has one.
    pub fn dst_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { dst, .. } => Some(dst),
            L4::Gre { dst_key, .. } => Some(dst_key),
            L4::Icmp { id, .. } | L4::Icmpv6 { id, .. } => Some(id),
            L4::None => None,
        }
    }
}

impl std::hash::Hash for Tuple {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.packed());
    }
}

/// `nf_ct_icmp`'s inverse map (`invmap` in `net/netfilter/nf_conntrack_proto_icmp.c`).
fn invert_icmp_type(kind: u8) -> u8 {
    match kind {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        15 => 16,
        16 => 15,
        17 => 18,
        18 => 17,
        other => other,
    }
}

/// `nf_ct_icmpv6`'s inverse map (`net/netfilter/nf_conntrack_proto_icmpv6.c`).
fn invert_icmpv6_type(kind: u8) -> u8 {
    match kind {
        128 => 129,
        129 => 128,
        139 => 140,
        140 => 139,
        other => other,
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proto={} src={} dst={}", self.proto, self.src, self.dst)?;
        match self.l4 {
            L4::None => Ok(()),
            L4::Ports { src, dst } => write!(f, " sport={src} dport={dst}"),
            L4::Gre { src_key, dst_key } => write!(f, " srckey={src_key} dstkey={dst_key}"),
            L4::Icmp { id, kind, code } | L4::Icmpv6 { id, kind, code } => {
                write!(f, " type={kind} code={code} id={id}")
            }
        }
    }
}

/// What identifies a flow in a kernel table: its original tuple and its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// The original-direction tuple.
    pub orig: Tuple,
    /// The conntrack zone (`CTA_ZONE`), 0 when absent.
    pub zone: u16,
}

impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut b = [0u8; 44];
        b[..42].copy_from_slice(&self.orig.packed());
        b[42..].copy_from_slice(&self.zone.to_ne_bytes());
        state.write(&b);
    }
}

bitflags::bitflags! {
    /// `enum ip_conntrack_status` (`nf_conntrack_common.h`). Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Status: u32 {
        /// `IPS_EXPECTED`: the flow was expected by a helper.
        const EXPECTED = 1 << 0;
        /// `IPS_SEEN_REPLY`: packets went both ways.
        const SEEN_REPLY = 1 << 1;
        /// `IPS_ASSURED`: the flow will not be early-dropped.
        const ASSURED = 1 << 2;
        /// `IPS_CONFIRMED`: the flow is in the table.
        const CONFIRMED = 1 << 3;
        /// `IPS_SRC_NAT`: source NAT applies.
        const SRC_NAT = 1 << 4;
        /// `IPS_DST_NAT`: destination NAT applies.
        const DST_NAT = 1 << 5;
        /// `IPS_SEQ_ADJUST`: TCP sequence numbers are adjusted.
        const SEQ_ADJUST = 1 << 6;
        /// `IPS_SRC_NAT_DONE`.
        const SRC_NAT_DONE = 1 << 7;
        /// `IPS_DST_NAT_DONE`.
        const DST_NAT_DONE = 1 << 8;
        /// `IPS_DYING`.
        const DYING = 1 << 9;
        /// `IPS_FIXED_TIMEOUT`.
        const FIXED_TIMEOUT = 1 << 10;
        /// `IPS_TEMPLATE`.
        const TEMPLATE = 1 << 11;
        /// `IPS_NAT_CLASH` (formerly `IPS_UNTRACKED`).
        const NAT_CLASH = 1 << 12;
        /// `IPS_HELPER`: a helper was assigned explicitly.
        const HELPER = 1 << 13;
        /// `IPS_OFFLOAD`: flowtable offload.
        const OFFLOAD = 1 << 14;
        /// `IPS_HW_OFFLOAD`.
        const HW_OFFLOAD = 1 << 15;
        const _ = !0;
    }
}

/// TCP connection tracking states (`enum tcp_conntrack`, `nf_conntrack_tcp.h`).
pub mod tcp_state {
    /// `TCP_CONNTRACK_NONE`.
    pub const NONE: u8 = 0;
    /// `TCP_CONNTRACK_SYN_SENT`.
    pub const SYN_SENT: u8 = 1;
    /// `TCP_CONNTRACK_SYN_RECV`.
    pub const SYN_RECV: u8 = 2;
    /// `TCP_CONNTRACK_ESTABLISHED`.
    pub const ESTABLISHED: u8 = 3;
    /// `TCP_CONNTRACK_FIN_WAIT`.
    pub const FIN_WAIT: u8 = 4;
    /// `TCP_CONNTRACK_CLOSE_WAIT`.
    pub const CLOSE_WAIT: u8 = 5;
    /// `TCP_CONNTRACK_LAST_ACK`.
    pub const LAST_ACK: u8 = 6;
    /// `TCP_CONNTRACK_TIME_WAIT`.
    pub const TIME_WAIT: u8 = 7;
    /// `TCP_CONNTRACK_CLOSE`.
    pub const CLOSE: u8 = 8;
    /// `TCP_CONNTRACK_SYN_SENT2`.
    pub const SYN_SENT2: u8 = 9;
}

/// TCP per-direction flags (`IP_CT_TCP_FLAG_*`, `nf_conntrack_tcp.h`).
pub mod tcp_flags {
    /// `IP_CT_TCP_FLAG_WINDOW_SCALE`.
    pub const WINDOW_SCALE: u8 = 0x01;
    /// `IP_CT_TCP_FLAG_SACK_PERM`.
    pub const SACK_PERM: u8 = 0x02;
    /// `IP_CT_TCP_FLAG_CLOSE_INIT`.
    pub const CLOSE_INIT: u8 = 0x04;
    /// `IP_CT_TCP_FLAG_BE_LIBERAL`.
    pub const BE_LIBERAL: u8 = 0x08;
    /// `IP_CT_TCP_FLAG_DATA_UNACKNOWLEDGED`.
    pub const DATA_UNACKNOWLEDGED: u8 = 0x10;
    /// `IP_CT_TCP_FLAG_MAXACK_SET`.
    pub const MAXACK_SET: u8 = 0x20;
}

/// `struct nf_ct_tcp_flags`: flags to set and the mask of flags the write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags {
    /// Flag values.
    pub flags: u8,
    /// Which flags the value applies to.
    pub mask: u8,
}

/// TCP protocol state (`CTA_PROTOINFO_TCP`). Each field is optional as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpInfo {
    /// State ([`tcp_state`]).
    pub state: Option<u8>,
    /// Window scale of the original direction.
    pub wscale_orig: Option<u8>,
    /// Window scale of the reply direction.
    pub wscale_reply: Option<u8>,
    /// Flags of the original direction.
    pub flags_orig: Option<TcpFlags>,
    /// Flags of the reply direction.
    pub flags_reply: Option<TcpFlags>,
}

/// SCTP protocol state (`CTA_PROTOINFO_SCTP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SctpInfo {
    /// State (`enum sctp_conntrack`).
    pub state: Option<u8>,
    /// Verification tag of the original direction.
    pub vtag_orig: Option<u32>,
    /// Verification tag of the reply direction.
    pub vtag_reply: Option<u32>,
}

/// DCCP protocol state (`CTA_PROTOINFO_DCCP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DccpInfo {
    /// State (`enum ct_dccp_states`).
    pub state: Option<u8>,
    /// Role (`enum ct_dccp_roles`).
    pub role: Option<u8>,
    /// Handshake sequence number.
    pub handshake_seq: Option<u64>,
}

/// Protocol-specific state (`CTA_PROTOINFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoInfo {
    /// TCP.
    Tcp(TcpInfo),
    /// SCTP.
    Sctp(SctpInfo),
    /// DCCP.
    Dccp(DccpInfo),
}

/// NAT sequence adjustment of one direction (`CTA_SEQ_ADJ_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqAdj {
    /// `CTA_SEQADJ_CORRECTION_POS`.
    pub correction_pos: u32,
    /// `CTA_SEQADJ_OFFSET_BEFORE`.
    pub offset_before: u32,
    /// `CTA_SEQADJ_OFFSET_AFTER`.
    pub offset_after: u32,
}

/// Packet and byte counters of one direction (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counters {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Start and stop time in nanoseconds (`CTA_TIMESTAMP`, read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timestamp {
    /// Start, when present.
    pub start: Option<u64>,
    /// Stop, when present (destroy events).
    pub stop: Option<u64>,
}

/// SYN proxy state (`CTA_SYNPROXY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Synproxy {
    /// `CTA_SYNPROXY_ISN`.
    pub isn: u32,
    /// `CTA_SYNPROXY_ITS`.
    pub its: u32,
    /// `CTA_SYNPROXY_TSOFF`.
    pub tsoff: u32,
}

/// Connection labels: the kernel's 128-bit label bitmap (`NF_CT_LABELS_MAX_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Labels(pub [u8; Labels::LEN]);

impl Labels {
    /// Bytes in the bitmap.
    pub const LEN: usize = 16;

    /// Labels with the given bit numbers set (as `conntrack --label` numbers them).
    pub fn from_bits(bits: &[u8]) -> Labels {
        let mut out = [0u8; Self::LEN];
        for &bit in bits {
            let bit = usize::from(bit) % (Self::LEN * 8);
            // The kernel's bitmap is an array of longs set with set_bit(): bit n lives in
            // byte n/8 of a little-endian machine's memory image.
            out[bit / 8] |= 1 << (bit % 8);
        }
        Labels(out)
    }
}

/// A short NUL-free name such as a helper name (`NF_CT_HELPER_NAME_LEN` = 16 with the NUL).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Name {
    len: u8,
    bytes: [u8; Name::CAPACITY],
}

impl Name {
    /// The longest name held inline. Helper and expectation-function names are shorter.
    pub const CAPACITY: usize = 31;

    /// A name from bytes; `None` if it is too long or contains a NUL.
    pub fn new(name: &[u8]) -> Option<Name> {
        if name.len() > Self::CAPACITY || name.contains(&0) {
            return None;
        }
        let mut bytes = [0u8; Self::CAPACITY];
        bytes[..name.len()].copy_from_slice(name);
        Some(Name {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Where an attribute this crate does not know was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nest {
    /// At the top level of the message.
    Top,
    /// Inside `CTA_PROTOINFO`.
    ProtoInfo,
    /// Inside the protocol's own nest within `CTA_PROTOINFO` (TCP, SCTP or DCCP).
    ProtoInfoProto,
}

/// An attribute kept verbatim because this crate does not know it (newer kernels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherAttr {
    /// Where it was found.
    pub nest: Nest,
    /// Its type, with the nested and byte-order flags as received.
    pub kind: u16,
    /// Its value.
    pub value: Box<[u8]>,
}

/// A conntrack entry: everything ctnetlink can say about one connection.
///
/// Fields that may be absent on the wire are `Option`s, so that decoding and encoding
/// round-trip exactly. Counters, timestamps, `use` and secmark are read-only: the codec
/// decodes them but never writes them to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Original direction (`CTA_TUPLE_ORIG`).
    pub orig: Tuple,
    /// Reply direction (`CTA_TUPLE_REPLY`); differs from `orig.inverse()` under NAT.
    pub reply: Tuple,
    /// Zone (`CTA_ZONE`).
    pub zone: Option<u16>,
    /// Status bits (`CTA_STATUS`).
    pub status: Option<Status>,
    /// Seconds until the entry expires (`CTA_TIMEOUT`).
    pub timeout: Option<u32>,
    /// Connection mark (`CTA_MARK`).
    pub mark: Option<u32>,
    /// Security mark (`CTA_SECMARK`, read-only).
    pub secmark: Option<u32>,
    /// Connection labels (`CTA_LABELS`).
    pub labels: Option<Labels>,
    /// Protocol state (`CTA_PROTOINFO`).
    pub protoinfo: Option<ProtoInfo>,
    /// Sequence adjustment of the original direction (`CTA_SEQ_ADJ_ORIG`).
    pub seq_adj_orig: Option<SeqAdj>,
    /// Sequence adjustment of the reply direction (`CTA_SEQ_ADJ_REPLY`).
    pub seq_adj_reply: Option<SeqAdj>,
    /// Helper name (`CTA_HELP`/`CTA_HELP_NAME`).
    pub helper: Option<Name>,
    /// The master connection of a related flow (`CTA_TUPLE_MASTER`).
    pub master: Option<Tuple>,
    /// The kernel's id for the entry (`CTA_ID`).
    pub id: Option<u32>,
    /// Reference count (`CTA_USE`, read-only).
    pub use_count: Option<u32>,
    /// Counters of the original direction (read-only).
    pub counters_orig: Option<Counters>,
    /// Counters of the reply direction (read-only).
    pub counters_reply: Option<Counters>,
    /// Start and stop time (read-only).
    pub timestamp: Option<Timestamp>,
    /// SYN proxy state (`CTA_SYNPROXY`).
    pub synproxy: Option<Synproxy>,
    /// Attributes this crate does not know, kept as received.
    pub other: Vec<OtherAttr>,
}

impl Flow {
    /// A flow with the given tuples and nothing else set.
    pub fn new(orig: Tuple, reply: Tuple) -> Flow {
        Flow {
            orig,
            reply,
            zone: None,
            status: None,
            timeout: None,
            mark: None,
            secmark: None,
            labels: None,
            protoinfo: None,
            seq_adj_orig: None,
            seq_adj_reply: None,
            helper: None,
            master: None,
            id: None,
            use_count: None,
            counters_orig: None,
            counters_reply: None,
            timestamp: None,
            synproxy: None,
            other: Vec::new(),
        }
    }

    /// The flow a key names, with nothing else set: the reply is the original's inverse
    /// and the zone is `CTA_ZONE` (absent for zone 0). What a delete or get request carries.
    pub fn from_key(key: &FlowKey) -> Flow {
        let mut reply = key.orig.inverse();
        reply.zone = None;
        let mut f = Flow::new(key.orig, reply);
        f.zone = (key.zone != 0).then_some(key.zone);
        f
    }

    /// The layer-3 family (that of the original tuple).
    pub fn family(&self) -> Family {
        self.orig.family()
    }

    /// The key that identifies this flow in a kernel table.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            orig: self.orig,
            zone: self.zone.unwrap_or(0),
        }
    }

    /// Source NAT as the tuples show it: the address and port (or ICMP id, or GRE key)
    /// the original source is rewritten to, or `None` when the reply is addressed to the
    /// original source unchanged.
    pub fn snat(&self) -> Option<(IpAddr, Option<u16>)> {
        (self.reply.dst != self.orig.src || self.reply.dst_port() != self.orig.src_port())
            .then(|| (self.reply.dst, self.reply.dst_port()))
    }

    /// Destination NAT as the tuples show it: the address and port the original
    /// destination is rewritten to, or `None` when the reply comes from it unchanged.
    pub fn dnat(&self) -> Option<(IpAddr, Option<u16>)> {
        (self.reply.src != self.orig.dst || self.reply.src_port() != self.orig.dst_port())
            .then(|| (self.reply.src, self.reply.src_port()))
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} | reply {}", self.orig, self.reply)?;
        if let Some(zone) = self.zone {
            write!(f, " zone={zone}")?;
        }
        if let Some(mark) = self.mark {
            write!(f, " mark={mark}")?;
        }
        if let Some(timeout) = self.timeout {
            write!(f, " timeout={timeout}")?;
        }
        Ok(())
    }
}

/// An expectation: a connection a helper (FTP, SIP, …) expects to see, related to a master.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expectation {
    /// The master connection's original tuple (`CTA_EXPECT_MASTER`).
    pub master: Tuple,
    /// The expected tuple (`CTA_EXPECT_TUPLE`).
    pub tuple: Tuple,
    /// Which bits of the expected tuple must match (`CTA_EXPECT_MASK`).
    pub mask: Tuple,
    /// Seconds until it expires (`CTA_EXPECT_TIMEOUT`).
    pub timeout: Option<u32>,
    /// The kernel's id (`CTA_EXPECT_ID`).
    pub id: Option<u32>,
    /// Helper name (`CTA_EXPECT_HELP_NAME`).
    pub helper: Option<Name>,
    /// Zone (`CTA_EXPECT_ZONE`).
    pub zone: Option<u16>,
    /// Flags (`CTA_EXPECT_FLAGS`: permanent, inactive, userspace).
    pub flags: Option<u32>,
    /// Expectation class (`CTA_EXPECT_CLASS`).
    pub class: Option<u32>,
    /// NAT of the expected connection (`CTA_EXPECT_NAT`).
    pub nat: Option<ExpectNat>,
    /// Expectation function (`CTA_EXPECT_FN`).
    pub function: Option<Name>,
    /// Attributes this crate does not know, kept as received.
    pub other: Vec<OtherAttr>,
}

impl Expectation {
    /// An expectation of `tuple` (matched under `mask`) related to the flow whose original
    /// tuple is `master`; every optional attribute absent.
    pub fn new(master: Tuple, tuple: Tuple, mask: Tuple) -> Expectation {
        Expectation {
            master,
            tuple,
            mask,
            timeout: None,
            id: None,
            helper: None,
            zone: None,
            flags: None,
            class: None,
            nat: None,
            function: None,
            other: Vec::new(),
        }
    }
}

/// `CTA_EXPECT_NAT`: direction and tuple of the expected connection's NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExpectNat {
    /// `CTA_EXPECT_NAT_DIR` (0 original, 1 reply).
    pub dir: u32,
    /// `CTA_EXPECT_NAT_TUPLE`.
    pub tuple: Tuple,
}
