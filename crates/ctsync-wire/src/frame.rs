//! Frames and messages inside a datagram's sealed body (docs/PROTOCOL.md §4).
//!
//! A body is a sequence of frames, each `type u8, length u16, payload`; receivers skip
//! frame types they do not know. The `DATA` frame carries numbered, reliable messages of
//! the sender's stream to this receiver; the other frames are per-datagram control.

use ctnetlink::{ExpectNat, Expectation, Flow, FlowKey, Name, Tuple};

use crate::WireError;
use crate::codec::{self, Reader, put_varint};

/// Frame type numbers.
pub mod frame_type {
    /// `HELLO`: who I am, a challenge for you.
    pub const HELLO: u8 = 1;
    /// `HELLO_ACK`: the answer to a challenge.
    pub const HELLO_ACK: u8 = 2;
    /// `ALIVE`: I am here (and my role).
    pub const ALIVE: u8 = 3;
    /// `ACK`: what I received of your stream.
    pub const ACK: u8 = 4;
    /// `NACK`: what I am missing of your stream.
    pub const NACK: u8 = 5;
    /// `DATA`: messages of my stream to you (in a group datagram: of my group stream).
    pub const DATA: u8 = 6;
    /// `GROUP_ACK`: what I received of your group stream (docs/PROTOCOL.md §13.2).
    pub const GROUP_ACK: u8 = 7;
    /// `GROUP_NACK`: what I am missing of your group stream.
    pub const GROUP_NACK: u8 = 8;
    /// `GROUP_DATA`: messages of my group stream, sent again to you alone (a repair
    /// you asked for with a `GROUP_NACK`).
    pub const GROUP_DATA: u8 = 9;
}

/// Message type numbers (inside `DATA`).
pub mod message_type {
    /// A new flow.
    pub const FLOW_NEW: u8 = 1;
    /// A changed flow.
    pub const FLOW_UPDATE: u8 = 2;
    /// A flow is gone.
    pub const FLOW_DELETE: u8 = 3;
    /// A new expectation.
    pub const EXP_NEW: u8 = 4;
    /// An expectation is gone.
    pub const EXP_DELETE: u8 = 5;
    /// A bulk transfer of my whole table starts.
    pub const BULK_BEGIN: u8 = 6;
    /// The bulk transfer is complete: drop what it did not mention.
    pub const BULK_END: u8 = 7;
    /// Digest of my table by bucket.
    pub const DIGEST: u8 = 8;
    /// A repair of one bucket starts.
    pub const BUCKET_BEGIN: u8 = 9;
    /// The repair of the bucket is complete.
    pub const BUCKET_END: u8 = 10;
    /// Send me your whole table.
    pub const RESYNC_REQUEST: u8 = 11;
    /// Send me these buckets of your table.
    pub const BUCKET_REQUEST: u8 = 12;
    /// Take the sender's group stream from this sequence number (PROTOCOL.md §13.3).
    pub const GROUP_JOIN: u8 = 13;
}

/// The role a node announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireRole {
    /// Not decided yet.
    Unknown,
    /// Primary: it owns the traffic.
    Primary,
    /// Backup.
    Backup,
    /// Fault: neither.
    Fault,
}

impl WireRole {
    fn to_u8(self) -> u8 {
        match self {
            WireRole::Unknown => 0,
            WireRole::Primary => 1,
            WireRole::Backup => 2,
            WireRole::Fault => 3,
        }
    }

    fn from_u8(v: u8) -> WireRole {
        match v {
            1 => WireRole::Primary,
            2 => WireRole::Backup,
            3 => WireRole::Fault,
            _ => WireRole::Unknown,
        }
    }
}

/// A half-open range of stream sequence numbers.
pub type SeqRange = (u32, u32);

/// At most this many ranges in one ACK or NACK.
pub const MAX_RANGES: usize = 32;

/// A reliable message of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A new flow (boxed: a decoded flow is 424 bytes, moved several times on its way
    /// from a datagram to a cache).
    FlowNew(Box<Flow>),
    /// A changed flow.
    FlowUpdate(Box<Flow>),
    /// A flow is gone.
    FlowDelete(FlowKey),
    /// A new expectation.
    ExpNew(Box<Expectation>),
    /// An expectation is gone: its tuple and zone.
    ExpDelete(Tuple, Option<u16>),
    /// A bulk transfer starts.
    BulkBegin {
        /// Transfer id.
        id: u32,
    },
    /// A bulk transfer ends: the receiver drops flows of this sender it did not mention.
    BulkEnd {
        /// Transfer id.
        id: u32,
        /// Flows the transfer carried.
        count: u64,
    },
    /// The sender's table, hashed by bucket: `hashes[b]` is the XOR of the hashes of
    /// the flows in bucket `b`.
    Digest {
        /// Flows in the table.
        count: u64,
        /// One hash per bucket.
        hashes: Vec<u64>,
    },
    /// A bucket repair starts.
    BucketBegin {
        /// The bucket.
        bucket: u16,
    },
    /// A bucket repair ends: drop flows of this bucket it did not mention.
    BucketEnd {
        /// The bucket.
        bucket: u16,
    },
    /// Ask the receiver for a bulk transfer of its table.
    ResyncRequest,
    /// Ask the receiver to repair these buckets.
    BucketRequest(Vec<u16>),
    /// From now on take the sender's group stream of this generation from `seq` on
    /// (docs/PROTOCOL.md §13.3).
    GroupJoin {
        /// The group stream's generation.
        generation: u32,
        /// The first sequence number for this receiver.
        seq: u64,
    },
}

impl Message {
    /// Append this message (type, length, body).
    pub fn put(&self, buf: &mut Vec<u8>) -> Result<(), WireError> {
        let start = buf.len();
        // Type, a one-byte length placeholder, then the body in place: no buffer per
        // message. A body of 128 bytes or more takes a longer varint, moved into place.
        buf.push(0);
        buf.push(0);
        let body_at = buf.len();
        let r = self.put_body(buf);
        let ty = match r {
            Ok(ty) => ty,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        buf[start] = ty;
        let len = (buf.len() - body_at) as u32;
        let mut varint = Vec::new();
        put_varint(&mut varint, len);
        if varint.len() == 1 {
            buf[start + 1] = varint[0];
        } else {
            buf.splice(start + 1..start + 2, varint);
        }
        Ok(())
    }

    fn put_body(&self, body: &mut Vec<u8>) -> Result<u8, WireError> {
        use message_type as t;
        Ok(match self {
            Message::FlowNew(f) => {
                codec::put_flow(body, f)?;
                t::FLOW_NEW
            }
            Message::FlowUpdate(f) => {
                codec::put_flow(body, f)?;
                t::FLOW_UPDATE
            }
            Message::FlowDelete(k) => {
                codec::put_flow(body, &Flow::from_key(k))?;
                t::FLOW_DELETE
            }
            Message::ExpNew(e) => {
                put_expectation(body, e)?;
                t::EXP_NEW
            }
            Message::ExpDelete(tuple, zone) => {
                let mut f = Flow::new(*tuple, tuple.inverse());
                f.zone = *zone;
                codec::put_flow(body, &f)?;
                t::EXP_DELETE
            }
            Message::BulkBegin { id } => {
                body.extend_from_slice(&id.to_be_bytes());
                t::BULK_BEGIN
            }
            Message::BulkEnd { id, count } => {
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&count.to_be_bytes());
                t::BULK_END
            }
            Message::Digest { count, hashes } => {
                body.extend_from_slice(&count.to_be_bytes());
                body.extend_from_slice(&(hashes.len() as u16).to_be_bytes());
                for h in hashes {
                    body.extend_from_slice(&h.to_be_bytes());
                }
                t::DIGEST
            }
            Message::BucketBegin { bucket } => {
                body.extend_from_slice(&bucket.to_be_bytes());
                t::BUCKET_BEGIN
            }
            Message::BucketEnd { bucket } => {
                body.extend_from_slice(&bucket.to_be_bytes());
                t::BUCKET_END
            }
            Message::ResyncRequest => t::RESYNC_REQUEST,
            Message::BucketRequest(b) => {
                body.extend_from_slice(&(b.len() as u16).to_be_bytes());
                for x in b {
                    body.extend_from_slice(&x.to_be_bytes());
                }
                t::BUCKET_REQUEST
            }
            Message::GroupJoin { generation, seq } => {
                body.extend_from_slice(&generation.to_be_bytes());
                body.extend_from_slice(&seq.to_be_bytes());
                t::GROUP_JOIN
            }
        })
    }

    /// Read one message; `Ok(None)` for a message this version does not know or cannot
    /// parse (skipped: forward compatibility, and no stalled stream); `Err` only when the
    /// framing itself is broken.
    pub fn read(r: &mut Reader<'_>) -> Result<Option<Message>, WireError> {
        let ty = r.u8()?;
        let len = r.varint()? as usize;
        let body = r.take(len)?;
        // The framing is sound, so a body we cannot parse is skipped like an unknown
        // type: it keeps its sequence number and the stream goes on (a stream stalled on
        // one bad message would be retransmitted forever).
        Ok(Self::read_body(ty, body).ok().flatten())
    }

    /// Append a flow update (`fresh`: a flow new) for a flow held as its state
    /// ([`codec::put_flow_state`]) with `timeout`: the same bytes as
    /// `Message::FlowUpdate(flow).put(buf)`, without decoding the flow.
    pub fn put_flow_from_state(
        buf: &mut Vec<u8>,
        fresh: bool,
        state: &[u8],
        timeout: Option<u32>,
    ) -> Result<(), WireError> {
        let start = buf.len();
        buf.push(if fresh {
            message_type::FLOW_NEW
        } else {
            message_type::FLOW_UPDATE
        });
        put_varint(
            buf,
            (state.len() + if timeout.is_some() { 4 } else { 0 }) as u32,
        );
        codec::put_state_with_timeout(buf, state, timeout).inspect_err(|_| buf.truncate(start))
    }

    /// Append a padding message: it fills a sequence number and means nothing. Sent in
    /// place of a message that could not be encoded.
    pub fn put_padding(buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[0, 0]);
    }

    fn read_body(ty: u8, body: &[u8]) -> Result<Option<Message>, WireError> {
        use message_type as t;
        let mut b = Reader::new(body);
        let m = match ty {
            t::FLOW_NEW => Message::FlowNew(codec::read_flow_boxed(&mut b)?),
            t::FLOW_UPDATE => Message::FlowUpdate(codec::read_flow_boxed(&mut b)?),
            t::FLOW_DELETE => Message::FlowDelete(codec::read_flow(&mut b)?.key()),
            t::EXP_NEW => Message::ExpNew(Box::new(read_expectation(&mut b)?)),
            t::EXP_DELETE => {
                let f = codec::read_flow(&mut b)?;
                Message::ExpDelete(f.orig, f.zone)
            }
            t::BULK_BEGIN => Message::BulkBegin { id: b.u32()? },
            t::BULK_END => Message::BulkEnd {
                id: b.u32()?,
                count: b.u64()?,
            },
            t::DIGEST => {
                let count = b.u64()?;
                let n = usize::from(b.u16()?);
                if b.remaining() != n * 8 {
                    return Err(WireError::Malformed);
                }
                let hashes = (0..n).map(|_| b.u64()).collect::<Result<_, _>>()?;
                Message::Digest { count, hashes }
            }
            t::BUCKET_BEGIN => Message::BucketBegin { bucket: b.u16()? },
            t::BUCKET_END => Message::BucketEnd { bucket: b.u16()? },
            t::RESYNC_REQUEST => Message::ResyncRequest,
            t::BUCKET_REQUEST => {
                let n = usize::from(b.u16()?);
                if b.remaining() != n * 2 {
                    return Err(WireError::Malformed);
                }
                Message::BucketRequest((0..n).map(|_| b.u16()).collect::<Result<_, _>>()?)
            }
            t::GROUP_JOIN => Message::GroupJoin {
                generation: b.u32()?,
                seq: b.u64()?,
            },
            _ => return Ok(None),
        };
        if b.remaining() != 0 {
            return Err(WireError::Malformed);
        }
        Ok(Some(m))
    }
}

fn put_expectation(buf: &mut Vec<u8>, e: &Expectation) -> Result<(), WireError> {
    // Three tuples as flows (so each carries its own family and zone), then the rest.
    for t in [&e.master, &e.tuple, &e.mask] {
        let mut f = Flow::new(*t, *t);
        f.zone = t.zone;
        f.orig.zone = None;
        f.reply.zone = None;
        put_len_prefixed(buf, |b| codec::put_flow(b, &f))?;
    }
    let present = [
        e.timeout.is_some(),
        e.helper.is_some(),
        e.zone.is_some(),
        e.flags.is_some(),
        e.class.is_some(),
        e.nat.is_some(),
        e.function.is_some(),
    ];
    buf.push(
        present
            .iter()
            .enumerate()
            .fold(0u8, |a, (i, &p)| if p { a | 1 << i } else { a }),
    );
    if let Some(v) = e.timeout {
        buf.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(h) = &e.helper {
        put_name(buf, h);
    }
    if let Some(v) = e.zone {
        buf.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(v) = e.flags {
        buf.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(v) = e.class {
        buf.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(n) = &e.nat {
        buf.extend_from_slice(&n.dir.to_be_bytes());
        let mut f = Flow::new(n.tuple, n.tuple);
        f.zone = n.tuple.zone;
        f.orig.zone = None;
        f.reply.zone = None;
        put_len_prefixed(buf, |b| codec::put_flow(b, &f))?;
    }
    if let Some(h) = &e.function {
        put_name(buf, h);
    }
    Ok(())
}

fn put_name(buf: &mut Vec<u8>, n: &Name) {
    buf.push(n.as_bytes().len() as u8);
    buf.extend_from_slice(n.as_bytes());
}

fn read_name(r: &mut Reader<'_>) -> Result<Name, WireError> {
    let n = usize::from(r.u8()?);
    Name::new(r.take(n)?).ok_or(WireError::Malformed)
}

fn put_len_prefixed(
    buf: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut inner = Vec::new();
    f(&mut inner)?;
    put_varint(buf, inner.len() as u32);
    buf.extend_from_slice(&inner);
    Ok(())
}

fn read_tuple_flow(r: &mut Reader<'_>) -> Result<Tuple, WireError> {
    let len = r.varint()? as usize;
    let mut inner = Reader::new(r.take(len)?);
    let f = codec::read_flow(&mut inner)?;
    let mut t = f.orig;
    t.zone = f.zone;
    Ok(t)
}

fn read_expectation(r: &mut Reader<'_>) -> Result<Expectation, WireError> {
    let master = read_tuple_flow(r)?;
    let tuple = read_tuple_flow(r)?;
    let mask = read_tuple_flow(r)?;
    let p = r.u8()?;
    let has = |bit: u8| p & (1 << bit) != 0;
    let timeout = if has(0) { Some(r.u32()?) } else { None };
    let helper = if has(1) { Some(read_name(r)?) } else { None };
    let zone = if has(2) { Some(r.u16()?) } else { None };
    let flags = if has(3) { Some(r.u32()?) } else { None };
    let class = if has(4) { Some(r.u32()?) } else { None };
    let nat = if has(5) {
        let dir = r.u32()?;
        Some(ExpectNat {
            dir,
            tuple: read_tuple_flow(r)?,
        })
    } else {
        None
    };
    let function = if has(6) { Some(read_name(r)?) } else { None };
    Ok(Expectation {
        master,
        tuple,
        mask,
        timeout,
        id: None,
        helper,
        zone,
        flags,
        class,
        nat,
        function,
        other: Vec::new(),
    })
}

/// A decoded frame. `Data` borrows its messages for lazy decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `HELLO`.
    Hello {
        /// A fresh random value the receiver must echo in a `HELLO_ACK`.
        challenge: u64,
        /// Lowest protocol version the sender speaks.
        min_version: u8,
        /// Highest protocol version the sender speaks.
        max_version: u8,
        /// The sender's role.
        role: WireRole,
        /// Whether the sender is ready to take over.
        ready: bool,
    },
    /// `HELLO_ACK`.
    HelloAck {
        /// The challenge answered.
        echo: u64,
        /// The version chosen.
        version: u8,
        /// The sender's current traffic-key generation, so the receiver can map key ids
        /// to generations however long the sender has been up (§3.2).
        generation: u32,
    },
    /// `ALIVE`.
    Alive {
        /// The sender's role.
        role: WireRole,
        /// Whether the sender is ready to take over.
        ready: bool,
    },
    /// `ACK`: every sequence number below `next` of stream generation `gen` arrived, and
    /// so did the `ranges` above it.
    Ack {
        /// Stream generation.
        generation: u32,
        /// Next sequence number expected.
        next: u32,
        /// Received ranges above `next`.
        ranges: Vec<SeqRange>,
    },
    /// `NACK`: these ranges are missing; send them again now.
    Nack {
        /// Stream generation.
        generation: u32,
        /// Missing ranges.
        ranges: Vec<SeqRange>,
    },
    /// `DATA`: `count` messages numbered from `first`.
    Data {
        /// Stream generation (a new one after a stream reset).
        generation: u32,
        /// Sequence number of the first message.
        first: u32,
        /// Messages.
        count: u16,
        /// Their encoding, read with [`DataMessages`].
        messages: &'a [u8],
    },
    /// `GROUP_ACK`: as [`Frame::Ack`], for the receiver's group stream (PROTOCOL.md §13.2).
    GroupAck {
        /// Group stream generation.
        generation: u32,
        /// Next sequence number expected.
        next: u32,
        /// Received ranges above `next`.
        ranges: Vec<SeqRange>,
    },
    /// `GROUP_NACK`: as [`Frame::Nack`], for the receiver's group stream.
    GroupNack {
        /// Group stream generation.
        generation: u32,
        /// Missing ranges.
        ranges: Vec<SeqRange>,
    },
    /// `GROUP_DATA`: as [`Frame::Data`], messages of the sender's group stream sent to
    /// this receiver alone (PROTOCOL.md §13.2).
    GroupData {
        /// Group stream generation.
        generation: u32,
        /// Sequence number of the first message.
        first: u32,
        /// Messages.
        count: u16,
        /// Their encoding, read with [`DataMessages`].
        messages: &'a [u8],
    },
    /// A frame type this version does not know (skipped).
    Unknown(u8),
}

/// The frames of a plaintext body.
#[derive(Debug)]
pub struct Frames<'a> {
    r: Reader<'a>,
    failed: bool,
}

/// Iterate over the frames of a plaintext body. A malformed frame ends the iteration
/// with one error (the rest of the body cannot be trusted).
pub fn frames(body: &[u8]) -> Frames<'_> {
    Frames {
        r: Reader::new(body),
        failed: false,
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let r = read_frame(&mut self.r);
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

fn read_ranges(r: &mut Reader<'_>) -> Result<Vec<SeqRange>, WireError> {
    let n = usize::from(r.u8()?);
    if n > MAX_RANGES {
        return Err(WireError::Malformed);
    }
    (0..n).map(|_| Ok((r.u32()?, r.u32()?))).collect()
}

fn read_frame<'a>(r: &mut Reader<'a>) -> Result<Frame<'a>, WireError> {
    use frame_type as t;
    let ty = r.u8()?;
    let len = usize::from(r.u16()?);
    let mut p = Reader::new(r.take(len)?);
    let f = match ty {
        t::HELLO => {
            let challenge = p.u64()?;
            let min_version = p.u8()?;
            let max_version = p.u8()?;
            let role = WireRole::from_u8(p.u8()?);
            let ready = p.u8()? & 1 != 0;
            Frame::Hello {
                challenge,
                min_version,
                max_version,
                role,
                ready,
            }
        }
        t::HELLO_ACK => Frame::HelloAck {
            echo: p.u64()?,
            version: p.u8()?,
            generation: p.u32()?,
        },
        t::ALIVE => Frame::Alive {
            role: WireRole::from_u8(p.u8()?),
            ready: p.u8()? & 1 != 0,
        },
        t::ACK => Frame::Ack {
            generation: p.u32()?,
            next: p.u32()?,
            ranges: read_ranges(&mut p)?,
        },
        t::NACK => Frame::Nack {
            generation: p.u32()?,
            ranges: read_ranges(&mut p)?,
        },
        t::GROUP_ACK => Frame::GroupAck {
            generation: p.u32()?,
            next: p.u32()?,
            ranges: read_ranges(&mut p)?,
        },
        t::GROUP_NACK => Frame::GroupNack {
            generation: p.u32()?,
            ranges: read_ranges(&mut p)?,
        },
        t::DATA => {
            let generation = p.u32()?;
            let first = p.u32()?;
            let count = p.u16()?;
            let messages = p.take(p.remaining())?;
            return Ok(Frame::Data {
                generation,
                first,
                count,
                messages,
            });
        }
        t::GROUP_DATA => {
            let generation = p.u32()?;
            let first = p.u32()?;
            let count = p.u16()?;
            let messages = p.take(p.remaining())?;
            return Ok(Frame::GroupData {
                generation,
                first,
                count,
                messages,
            });
        }
        other => return Ok(Frame::Unknown(other)),
    };
    if p.remaining() != 0 {
        return Err(WireError::Malformed);
    }
    Ok(f)
}

/// The messages of a `DATA` frame, in order. Unknown message types yield `Ok(None)` so
/// that the receiver still counts them in the sequence.
#[derive(Debug)]
pub struct DataMessages<'a> {
    r: Reader<'a>,
    left: u16,
}

impl<'a> DataMessages<'a> {
    /// The messages of a `DATA` frame's payload.
    pub fn new(messages: &'a [u8], count: u16) -> DataMessages<'a> {
        DataMessages {
            r: Reader::new(messages),
            left: count,
        }
    }
}

impl Iterator for DataMessages<'_> {
    type Item = Result<Option<Message>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let m = Message::read(&mut self.r);
        if m.is_err() {
            self.left = 0;
        }
        Some(m)
    }
}

/// Appends frames to a body under construction.
#[derive(Debug)]
pub struct FrameWriter<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> FrameWriter<'b> {
    /// Write frames at the end of `buf`.
    pub fn new(buf: &'b mut Vec<u8>) -> FrameWriter<'b> {
        FrameWriter { buf }
    }

    /// Bytes in the buffer so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn frame(&mut self, ty: u8, payload: impl FnOnce(&mut Vec<u8>)) {
        self.buf.push(ty);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        payload(self.buf);
        let len = (self.buf.len() - at - 2) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// `HELLO`.
    pub fn hello(
        &mut self,
        challenge: u64,
        min_version: u8,
        max_version: u8,
        role: WireRole,
        ready: bool,
    ) {
        self.frame(frame_type::HELLO, |b| {
            b.extend_from_slice(&challenge.to_be_bytes());
            b.extend_from_slice(&[min_version, max_version, role.to_u8(), u8::from(ready)]);
        });
    }

    /// `HELLO_ACK`.
    pub fn hello_ack(&mut self, echo: u64, version: u8, generation: u32) {
        self.frame(frame_type::HELLO_ACK, |b| {
            b.extend_from_slice(&echo.to_be_bytes());
            b.push(version);
            b.extend_from_slice(&generation.to_be_bytes());
        });
    }

    /// `ALIVE`.
    pub fn alive(&mut self, role: WireRole, ready: bool) {
        self.frame(frame_type::ALIVE, |b| {
            b.extend_from_slice(&[role.to_u8(), u8::from(ready)])
        });
    }

    /// `ACK` (at most [`MAX_RANGES`] ranges are written).
    pub fn ack(&mut self, generation: u32, next: u32, ranges: &[SeqRange]) {
        self.frame(frame_type::ACK, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            b.extend_from_slice(&next.to_be_bytes());
            put_ranges(b, ranges);
        });
    }

    /// `NACK` (at most [`MAX_RANGES`] ranges are written).
    pub fn nack(&mut self, generation: u32, ranges: &[SeqRange]) {
        self.frame(frame_type::NACK, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            put_ranges(b, ranges);
        });
    }

    /// `GROUP_ACK` (at most [`MAX_RANGES`] ranges are written).
    pub fn group_ack(&mut self, generation: u32, next: u32, ranges: &[SeqRange]) {
        self.frame(frame_type::GROUP_ACK, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            b.extend_from_slice(&next.to_be_bytes());
            put_ranges(b, ranges);
        });
    }

    /// `GROUP_NACK` (at most [`MAX_RANGES`] ranges are written).
    pub fn group_nack(&mut self, generation: u32, ranges: &[SeqRange]) {
        self.frame(frame_type::GROUP_NACK, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            put_ranges(b, ranges);
        });
    }

    /// `GROUP_DATA` with already-encoded messages of our group stream.
    pub fn group_data(&mut self, generation: u32, first: u32, count: u16, messages: &[u8]) {
        self.frame(frame_type::GROUP_DATA, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            b.extend_from_slice(&first.to_be_bytes());
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(messages);
        });
    }

    /// `DATA` with already-encoded messages (see [`Message::put`]).
    pub fn data(&mut self, generation: u32, first: u32, count: u16, messages: &[u8]) {
        self.frame(frame_type::DATA, |b| {
            b.extend_from_slice(&generation.to_be_bytes());
            b.extend_from_slice(&first.to_be_bytes());
            b.extend_from_slice(&count.to_be_bytes());
            b.extend_from_slice(messages);
        });
    }
}

fn put_ranges(b: &mut Vec<u8>, ranges: &[SeqRange]) {
    let n = ranges.len().min(MAX_RANGES);
    b.push(n as u8);
    for (s, e) in &ranges[..n] {
        b.extend_from_slice(&s.to_be_bytes());
        b.extend_from_slice(&e.to_be_bytes());
    }
}

/// Bytes a frame adds around its payload.
pub const FRAME_OVERHEAD: usize = 3;
/// Bytes of a `DATA` frame before its messages.
pub const DATA_OVERHEAD: usize = FRAME_OVERHEAD + 10;
