//! Byte-level reading and writing shared by the codecs: a bounds-checked reader that
//! never panics, and the compact flow encoding (docs/PROTOCOL.md §5).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ctnetlink::{
    DccpInfo, Flow, FlowKey, L4, Labels, Name, ProtoInfo, SctpInfo, SeqAdj, Status, TcpFlags,
    TcpInfo, Tuple, ipproto,
};

use crate::WireError;

/// A cursor over untrusted bytes: every read is checked.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Take the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// An unsigned LEB128 number of at most 32 bits.
    pub fn varint(&mut self) -> Result<u32, WireError> {
        let mut v: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(WireError::Malformed)?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::Malformed)
    }

    fn addr(&mut self, v6: bool) -> Result<IpAddr, WireError> {
        Ok(if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        })
    }
}

/// Append an unsigned LEB128 number.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf.push(b);
            return;
        }
        buf.push(b | 0x80);
    }
}

fn put_addr(buf: &mut Vec<u8>, a: &IpAddr) {
    match a {
        IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
    }
}

/// Flow flags (docs/PROTOCOL.md §5.1).
mod flag {
    pub(crate) const IPV6: u16 = 1 << 0;
    pub(crate) const REPLY_FULL: u16 = 1 << 1;
    pub(crate) const SNAT: u16 = 1 << 2;
    pub(crate) const DNAT: u16 = 1 << 3;
    pub(crate) const ZONE: u16 = 1 << 4;
    pub(crate) const MARK: u16 = 1 << 5;
    pub(crate) const TIMEOUT: u16 = 1 << 6;
    pub(crate) const STATUS: u16 = 1 << 7;
    pub(crate) const PROTOINFO: u16 = 1 << 8;
    pub(crate) const LABELS: u16 = 1 << 9;
    pub(crate) const HELPER: u16 = 1 << 10;
    pub(crate) const MASTER: u16 = 1 << 11;
    pub(crate) const SEQADJ_ORIG: u16 = 1 << 12;
    pub(crate) const SEQADJ_REPLY: u16 = 1 << 13;
    pub(crate) const TUPLE_ZONES: u16 = 1 << 14;
    pub(crate) const L4_EXPLICIT: u16 = 1 << 15;
}

/// The layer-4 shape a protocol has in the kernel's tuples.
fn canonical_l4_kind(proto: u8) -> u8 {
    match proto {
        ipproto::TCP | ipproto::UDP | ipproto::UDPLITE | ipproto::SCTP | ipproto::DCCP => 1,
        ipproto::GRE => 2,
        ipproto::ICMP => 3,
        ipproto::ICMPV6 => 4,
        _ => 0,
    }
}

fn l4_kind(l4: &L4) -> u8 {
    match l4 {
        L4::None => 0,
        L4::Ports { .. } => 1,
        L4::Gre { .. } => 2,
        L4::Icmp { .. } => 3,
        L4::Icmpv6 { .. } => 4,
    }
}

fn put_tuple_body(buf: &mut Vec<u8>, t: &Tuple) {
    put_addr(buf, &t.src);
    put_addr(buf, &t.dst);
    buf.push(t.proto);
    match t.l4 {
        L4::None => {}
        L4::Ports { src, dst }
        | L4::Gre {
            src_key: src,
            dst_key: dst,
        } => {
            buf.extend_from_slice(&src.to_be_bytes());
            buf.extend_from_slice(&dst.to_be_bytes());
        }
        L4::Icmp { id, kind, code } | L4::Icmpv6 { id, kind, code } => {
            buf.extend_from_slice(&id.to_be_bytes());
            buf.push(kind);
            buf.push(code);
        }
    }
}

fn read_tuple_body(r: &mut Reader<'_>, v6: bool, kind: Option<u8>) -> Result<Tuple, WireError> {
    let src = r.addr(v6)?;
    let dst = r.addr(v6)?;
    let proto = r.u8()?;
    let l4 = match kind.unwrap_or_else(|| canonical_l4_kind(proto)) {
        0 => L4::None,
        1 => L4::Ports {
            src: r.u16()?,
            dst: r.u16()?,
        },
        2 => L4::Gre {
            src_key: r.u16()?,
            dst_key: r.u16()?,
        },
        3 => L4::Icmp {
            id: r.u16()?,
            kind: r.u8()?,
            code: r.u8()?,
        },
        4 => L4::Icmpv6 {
            id: r.u16()?,
            kind: r.u8()?,
            code: r.u8()?,
        },
        _ => return Err(WireError::Malformed),
    };
    Ok(Tuple {
        src,
        dst,
        proto,
        l4,
        zone: None,
    })
}

fn set_dst_port(t: &mut Tuple, port: u16) {
    match &mut t.l4 {
        L4::Ports { dst, .. } | L4::Gre { dst_key: dst, .. } => *dst = port,
        L4::Icmp { id, .. } | L4::Icmpv6 { id, .. } => *id = port,
        L4::None => {}
    }
}

fn set_src_port(t: &mut Tuple, port: u16) {
    match &mut t.l4 {
        L4::Ports { src, .. } | L4::Gre { src_key: src, .. } => *src = port,
        L4::Icmp { id, .. } | L4::Icmpv6 { id, .. } => *id = port,
        L4::None => {}
    }
}

/// The reply a flow would have if its original were inverted and the NAT applied.
fn derive_reply(
    orig: &Tuple,
    snat: Option<(IpAddr, Option<u16>)>,
    dnat: Option<(IpAddr, Option<u16>)>,
) -> Tuple {
    let mut reply = orig.inverse();
    reply.zone = None;
    if let Some((addr, port)) = dnat {
        reply.src = addr;
        if let Some(p) = port {
            set_src_port(&mut reply, p);
        }
    }
    if let Some((addr, port)) = snat {
        reply.dst = addr;
        if let Some(p) = port {
            set_dst_port(&mut reply, p);
        }
    }
    reply
}

/// What the compact encoding keeps of a flow: the state replication needs. Read-only
/// kernel attributes (id, use, counters, timestamps, secmark), SYN proxy state and
/// unknown attributes are not carried; a mark of 0 is carried as no mark; TCP flag masks
/// are carried as the flags themselves (what a kernel write needs).
pub fn normalize(f: &Flow) -> Flow {
    let mut n = Flow::new(f.orig, f.reply);
    n.zone = f.zone;
    n.status = f.status;
    n.timeout = f.timeout;
    n.mark = f.mark.filter(|&m| m != 0);
    n.labels = f.labels;
    n.protoinfo = f.protoinfo.map(|p| match p {
        ProtoInfo::Tcp(mut t) => {
            t.flags_orig = t.flags_orig.map(|x| TcpFlags {
                flags: x.flags,
                mask: x.flags,
            });
            t.flags_reply = t.flags_reply.map(|x| TcpFlags {
                flags: x.flags,
                mask: x.flags,
            });
            ProtoInfo::Tcp(t)
        }
        other => other,
    });
    n.seq_adj_orig = f.seq_adj_orig;
    n.seq_adj_reply = f.seq_adj_reply;
    n.helper = f.helper;
    n.master = f.master;
    n
}

/// Whether [`put_flow`] can encode `f` (all its tuples of one family, as the kernel's are).
pub fn encodable(f: &Flow) -> bool {
    let v6 = matches!(f.orig.src, IpAddr::V6(_));
    let same =
        |t: &Tuple| matches!(t.src, IpAddr::V6(_)) == v6 && matches!(t.dst, IpAddr::V6(_)) == v6;
    same(&f.orig) && same(&f.reply) && f.master.as_ref().is_none_or(same)
}

/// Append the compact encoding of `f` (its [`normalize`]d form).
///
/// Fails only for flows the kernel cannot hold: tuples of different families.
pub fn put_flow(buf: &mut Vec<u8>, f: &Flow) -> Result<(), WireError> {
    put_flow_with(buf, f, f.timeout)
}

/// Like [`put_flow`], without the timeout: a flow's replicated state, which two faithful
/// copies share while their kernels count the timeout down apart. [`read_flow`] reads
/// it back with no timeout.
pub fn put_flow_state(buf: &mut Vec<u8>, f: &Flow) -> Result<(), WireError> {
    put_flow_with(buf, f, None)
}

fn put_flow_with(buf: &mut Vec<u8>, f: &Flow, timeout: Option<u32>) -> Result<(), WireError> {
    let v6 = matches!(f.orig.src, IpAddr::V6(_));
    let same_family =
        |t: &Tuple| matches!(t.src, IpAddr::V6(_)) == v6 && matches!(t.dst, IpAddr::V6(_)) == v6;
    if !same_family(&f.orig)
        || !same_family(&f.reply)
        || f.master.as_ref().is_some_and(|m| !same_family(m))
    {
        return Err(WireError::Unencodable);
    }
    let mut flags = if v6 { flag::IPV6 } else { 0 };
    let (snat, dnat) = (f.snat(), f.dnat());
    let mut reply_plain = f.reply;
    reply_plain.zone = None;
    let derived = derive_reply(&f.orig, snat, dnat) == reply_plain;
    if derived {
        flags |= if snat.is_some() { flag::SNAT } else { 0 }
            | if dnat.is_some() { flag::DNAT } else { 0 };
    } else {
        flags |= flag::REPLY_FULL;
    }
    let explicit_l4 = l4_kind(&f.orig.l4) != canonical_l4_kind(f.orig.proto)
        || l4_kind(&f.reply.l4) != canonical_l4_kind(f.reply.proto)
        || f.master
            .as_ref()
            .is_some_and(|m| l4_kind(&m.l4) != canonical_l4_kind(m.proto));
    let mark = f.mark.filter(|&m| m != 0);
    for (present, bit) in [
        (f.zone.is_some(), flag::ZONE),
        (mark.is_some(), flag::MARK),
        (timeout.is_some(), flag::TIMEOUT),
        (f.status.is_some(), flag::STATUS),
        (f.protoinfo.is_some(), flag::PROTOINFO),
        (f.labels.is_some(), flag::LABELS),
        (f.helper.is_some(), flag::HELPER),
        (f.master.is_some(), flag::MASTER),
        (f.seq_adj_orig.is_some(), flag::SEQADJ_ORIG),
        (f.seq_adj_reply.is_some(), flag::SEQADJ_REPLY),
        (
            f.orig.zone.is_some()
                || f.reply.zone.is_some()
                || f.master.is_some_and(|m| m.zone.is_some()),
            flag::TUPLE_ZONES,
        ),
        (explicit_l4, flag::L4_EXPLICIT),
    ] {
        if present {
            flags |= bit;
        }
    }
    buf.extend_from_slice(&flags.to_be_bytes());
    if explicit_l4 {
        let m = f.master.as_ref().map_or(0, |m| l4_kind(&m.l4));
        buf.push(l4_kind(&f.orig.l4) | l4_kind(&f.reply.l4) << 4);
        buf.push(m);
    }
    put_tuple_body(buf, &f.orig);
    if derived {
        for (addr, port) in [dnat, snat].into_iter().flatten() {
            put_addr(buf, &addr);
            if let Some(p) = port {
                buf.extend_from_slice(&p.to_be_bytes());
            }
        }
    } else {
        put_tuple_body(buf, &f.reply);
    }
    if let Some(z) = f.zone {
        buf.extend_from_slice(&z.to_be_bytes());
    }
    if let Some(m) = mark {
        buf.extend_from_slice(&m.to_be_bytes());
    }
    if let Some(t) = timeout {
        buf.extend_from_slice(&t.to_be_bytes());
    }
    if let Some(s) = f.status {
        buf.extend_from_slice(&s.bits().to_be_bytes());
    }
    if let Some(p) = &f.protoinfo {
        put_protoinfo(buf, p);
    }
    if let Some(l) = &f.labels {
        buf.extend_from_slice(&l.0);
    }
    if let Some(h) = &f.helper {
        buf.push(h.as_bytes().len() as u8);
        buf.extend_from_slice(h.as_bytes());
    }
    if let Some(m) = &f.master {
        put_tuple_body(buf, m);
    }
    for s in [&f.seq_adj_orig, &f.seq_adj_reply].into_iter().flatten() {
        buf.extend_from_slice(&s.correction_pos.to_be_bytes());
        buf.extend_from_slice(&s.offset_before.to_be_bytes());
        buf.extend_from_slice(&s.offset_after.to_be_bytes());
    }
    if flags & flag::TUPLE_ZONES != 0 {
        let zones = [f.orig.zone, f.reply.zone, f.master.and_then(|m| m.zone)];
        let mut present = 0u8;
        for (i, z) in zones.iter().enumerate() {
            if z.is_some() {
                present |= 1 << i;
            }
        }
        buf.push(present);
        for z in zones.into_iter().flatten() {
            buf.extend_from_slice(&z.to_be_bytes());
        }
    }
    Ok(())
}

fn put_protoinfo(buf: &mut Vec<u8>, p: &ProtoInfo) {
    // One byte: protocol in the top two bits, field presence in the low six.
    match p {
        ProtoInfo::Tcp(t) => {
            let present = [
                t.state.is_some(),
                t.wscale_orig.is_some(),
                t.wscale_reply.is_some(),
                t.flags_orig.is_some(),
                t.flags_reply.is_some(),
            ];
            buf.push(0x40 | bits(&present));
            buf.extend(t.state);
            buf.extend(t.wscale_orig);
            buf.extend(t.wscale_reply);
            buf.extend(t.flags_orig.map(|f| f.flags));
            buf.extend(t.flags_reply.map(|f| f.flags));
        }
        ProtoInfo::Sctp(s) => {
            buf.push(
                0x80 | bits(&[
                    s.state.is_some(),
                    s.vtag_orig.is_some(),
                    s.vtag_reply.is_some(),
                ]),
            );
            buf.extend(s.state);
            for v in [s.vtag_orig, s.vtag_reply].into_iter().flatten() {
                buf.extend_from_slice(&v.to_be_bytes());
            }
        }
        ProtoInfo::Dccp(d) => {
            buf.push(
                0xc0 | bits(&[
                    d.state.is_some(),
                    d.role.is_some(),
                    d.handshake_seq.is_some(),
                ]),
            );
            buf.extend(d.state);
            buf.extend(d.role);
            if let Some(v) = d.handshake_seq {
                buf.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

fn bits(present: &[bool]) -> u8 {
    present
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &p)| if p { acc | 1 << i } else { acc })
}

fn opt<T>(
    present: u8,
    bit: u8,
    read: impl FnOnce() -> Result<T, WireError>,
) -> Result<Option<T>, WireError> {
    if present & (1 << bit) != 0 {
        read().map(Some)
    } else {
        Ok(None)
    }
}

fn read_protoinfo(r: &mut Reader<'_>) -> Result<ProtoInfo, WireError> {
    let b = r.u8()?;
    let p = b & 0x3f;
    Ok(match b >> 6 {
        1 => {
            let state = opt(p, 0, || r.u8())?;
            let wscale_orig = opt(p, 1, || r.u8())?;
            let wscale_reply = opt(p, 2, || r.u8())?;
            let flags_orig = opt(p, 3, || r.u8())?.map(|f| TcpFlags { flags: f, mask: f });
            let flags_reply = opt(p, 4, || r.u8())?.map(|f| TcpFlags { flags: f, mask: f });
            ProtoInfo::Tcp(TcpInfo {
                state,
                wscale_orig,
                wscale_reply,
                flags_orig,
                flags_reply,
            })
        }
        2 => {
            let state = opt(p, 0, || r.u8())?;
            let vtag_orig = opt(p, 1, || r.u32())?;
            let vtag_reply = opt(p, 2, || r.u32())?;
            ProtoInfo::Sctp(SctpInfo {
                state,
                vtag_orig,
                vtag_reply,
            })
        }
        3 => {
            let state = opt(p, 0, || r.u8())?;
            let role = opt(p, 1, || r.u8())?;
            let handshake_seq = opt(p, 2, || r.u64())?;
            ProtoInfo::Dccp(DccpInfo {
                state,
                role,
                handshake_seq,
            })
        }
        _ => return Err(WireError::Malformed),
    })
}

fn read_nat(
    r: &mut Reader<'_>,
    v6: bool,
    has_port: bool,
) -> Result<(IpAddr, Option<u16>), WireError> {
    let addr = r.addr(v6)?;
    let port = if has_port { Some(r.u16()?) } else { None };
    Ok((addr, port))
}

/// The layer-4 shapes of the original, reply and master tuples when the flags say they
/// are given (the two bytes after the flags); `None` each: the protocol's own.
fn l4_kinds(r: &mut Reader<'_>, flags: u16) -> Result<[Option<u8>; 3], WireError> {
    if flags & flag::L4_EXPLICIT == 0 {
        return Ok([None; 3]);
    }
    let a = r.u8()?;
    let m = r.u8()?;
    Ok([Some(a & 0x0f), Some(a >> 4), Some(m)])
}

/// Where a flow encoding's timeout sits (or would sit): the offset just past its
/// tuples, NAT, zone and mark, found without decoding the flow. Returns the flags too.
fn timeout_offset(bytes: &[u8]) -> Result<(u16, usize), WireError> {
    let mut r = Reader::new(bytes);
    let flags = r.u16()?;
    let addr = if flags & flag::IPV6 != 0 { 16 } else { 4 };
    let [k_orig, k_reply, _] = l4_kinds(&mut r, flags)?;
    // A tuple body: two addresses, the protocol, then its layer-4 identity (4 bytes for
    // every shape but none; the shape is the protocol's unless given). Returns the shape.
    let tuple = |r: &mut Reader<'_>, kind: Option<u8>| -> Result<u8, WireError> {
        r.take(2 * addr)?;
        let proto = r.u8()?;
        let kind = kind.unwrap_or_else(|| canonical_l4_kind(proto));
        match kind {
            0 => {}
            1..=4 => {
                r.take(4)?;
            }
            _ => return Err(WireError::Malformed),
        }
        Ok(kind)
    };
    let orig = tuple(&mut r, k_orig)?;
    if flags & flag::REPLY_FULL != 0 {
        tuple(&mut r, k_reply)?;
    } else {
        // NAT carries a port when the tuples have one (as `read_flow` decides).
        let port = if orig == 0 { 0 } else { 2 };
        for bit in [flag::DNAT, flag::SNAT] {
            if flags & bit != 0 {
                r.take(addr + port)?;
            }
        }
    }
    if flags & flag::ZONE != 0 {
        r.take(2)?;
    }
    if flags & flag::MARK != 0 {
        r.take(4)?;
    }
    Ok((flags, bytes.len() - r.remaining()))
}

/// Append the encoding of a flow with `timeout`, from its state ([`put_flow_state`]'s
/// output): the timeout spliced in, nothing decoded. What [`put_flow`] would write for
/// that flow with that timeout.
pub fn put_state_with_timeout(
    buf: &mut Vec<u8>,
    state: &[u8],
    timeout: Option<u32>,
) -> Result<(), WireError> {
    let (flags, at) = timeout_offset(state)?;
    if flags & flag::TIMEOUT != 0 {
        return Err(WireError::Malformed);
    }
    match timeout {
        None => buf.extend_from_slice(state),
        Some(t) => {
            buf.extend_from_slice(&(flags | flag::TIMEOUT).to_be_bytes());
            buf.extend_from_slice(&state[2..at]);
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&state[at..]);
        }
    }
    Ok(())
}

/// Decode a flow written by [`put_flow`].
pub fn read_flow(r: &mut Reader<'_>) -> Result<Flow, WireError> {
    let h = read_flow_head(r)?;
    let mut f = Flow::new(h.orig, h.reply);
    read_flow_rest(r, &h, &mut f)?;
    Ok(f)
}

/// The key of an encoded flow ([`Flow::key`]: its original tuple and zone), read without
/// decoding the rest: tables that keep flows in this form find them by it. A flow whose
/// tuples carry their own zones (rare) is decoded whole, those zones being at its end.
pub fn read_key(bytes: &[u8]) -> Result<FlowKey, WireError> {
    let mut r = Reader::new(bytes);
    let flags = r.u16()?;
    if flags & flag::TUPLE_ZONES != 0 {
        return read_flow(&mut Reader::new(bytes)).map(|f| f.key());
    }
    let v6 = flags & flag::IPV6 != 0;
    let [k_orig, k_reply, _] = l4_kinds(&mut r, flags)?;
    let orig = read_tuple_body(&mut r, v6, k_orig)?;
    let mut zone = 0;
    if flags & flag::ZONE != 0 {
        // The zone follows the reply's tuple or NAT.
        if flags & flag::REPLY_FULL != 0 {
            read_tuple_body(&mut r, v6, k_reply)?;
        } else {
            let has_port = !matches!(orig.inverse().l4, L4::None);
            for bit in [flag::DNAT, flag::SNAT] {
                if flags & bit != 0 {
                    read_nat(&mut r, v6, has_port)?;
                }
            }
        }
        zone = r.u16()?;
    }
    Ok(FlowKey { orig, zone })
}

/// [`read_flow`] into a box, decoded in place (a received flow is not built on the stack
/// and then copied: a flow is 424 bytes).
pub fn read_flow_boxed(r: &mut Reader<'_>) -> Result<Box<Flow>, WireError> {
    let h = read_flow_head(r)?;
    let mut f = Box::new(Flow::new(h.orig, h.reply));
    read_flow_rest(r, &h, &mut f)?;
    Ok(f)
}

/// What an encoded flow starts with: its flags and tuples.
struct FlowHead {
    flags: u16,
    v6: bool,
    /// The master tuple's L4 kind, if explicit.
    k_master: Option<u8>,
    orig: Tuple,
    reply: Tuple,
}

fn read_flow_head(r: &mut Reader<'_>) -> Result<FlowHead, WireError> {
    let flags = r.u16()?;
    let v6 = flags & flag::IPV6 != 0;
    let [k_orig, k_reply, k_master] = l4_kinds(r, flags)?;
    let orig = read_tuple_body(r, v6, k_orig)?;
    let reply = if flags & flag::REPLY_FULL != 0 {
        read_tuple_body(r, v6, k_reply)?
    } else {
        // Which shape the reply's ports have decides whether NAT carries a port.
        let has_port = !matches!(orig.inverse().l4, L4::None);
        let dnat = if flags & flag::DNAT != 0 {
            Some(read_nat(r, v6, has_port)?)
        } else {
            None
        };
        let snat = if flags & flag::SNAT != 0 {
            Some(read_nat(r, v6, has_port)?)
        } else {
            None
        };
        derive_reply(&orig, snat, dnat)
    };
    Ok(FlowHead {
        flags,
        v6,
        k_master,
        orig,
        reply,
    })
}

/// The attributes after the tuples, into `f`.
fn read_flow_rest(r: &mut Reader<'_>, h: &FlowHead, f: &mut Flow) -> Result<(), WireError> {
    let &FlowHead {
        flags,
        v6,
        k_master,
        ..
    } = h;
    if flags & flag::ZONE != 0 {
        f.zone = Some(r.u16()?);
    }
    if flags & flag::MARK != 0 {
        f.mark = Some(r.u32()?).filter(|&m| m != 0);
    }
    if flags & flag::TIMEOUT != 0 {
        f.timeout = Some(r.u32()?);
    }
    if flags & flag::STATUS != 0 {
        f.status = Some(Status::from_bits_retain(r.u32()?));
    }
    if flags & flag::PROTOINFO != 0 {
        f.protoinfo = Some(read_protoinfo(r)?);
    }
    if flags & flag::LABELS != 0 {
        let mut l = [0u8; Labels::LEN];
        l.copy_from_slice(r.take(Labels::LEN)?);
        f.labels = Some(Labels(l));
    }
    if flags & flag::HELPER != 0 {
        let n = usize::from(r.u8()?);
        f.helper = Some(Name::new(r.take(n)?).ok_or(WireError::Malformed)?);
    }
    if flags & flag::MASTER != 0 {
        f.master = Some(read_tuple_body(r, v6, k_master)?);
    }
    for (bit, slot) in [
        (flag::SEQADJ_ORIG, &mut f.seq_adj_orig),
        (flag::SEQADJ_REPLY, &mut f.seq_adj_reply),
    ] {
        if flags & bit != 0 {
            *slot = Some(SeqAdj {
                correction_pos: r.u32()?,
                offset_before: r.u32()?,
                offset_after: r.u32()?,
            });
        }
    }
    if flags & flag::TUPLE_ZONES != 0 {
        let present = r.u8()?;
        if present & 1 != 0 {
            f.orig.zone = Some(r.u16()?);
        }
        if present & 2 != 0 {
            f.reply.zone = Some(r.u16()?);
        }
        if present & 4 != 0 {
            let z = r.u16()?;
            if let Some(m) = &mut f.master {
                m.zone = Some(z);
            } else {
                return Err(WireError::Malformed);
            }
        }
    }
    Ok(())
}
