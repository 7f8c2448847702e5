//! Messages as the streams queue them: encoded once, with their kind for coalescing.

use ctnetlink::FlowKey;
use ctsync_wire::Message;

/// An encoded message. Small ones (every IPv4 flow message) are held inline, so queuing
/// one costs no allocation; each peer's stream holds its own copy (a copy of 64 bytes is
/// cheaper than sharing through a reference-counted allocation).
pub type Encoded = smallvec::SmallVec<[u8; ENCODED_INLINE]>;

/// Bytes of a message held inline in an [`Encoded`] (the type is then 64 bytes long).
pub const ENCODED_INLINE: usize = 56;

/// What a queued message is, for coalescing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A flow the receiver has not heard of (a kernel NEW): a deletion before it is
    /// sent cancels both.
    FlowNew,
    /// A flow's state (update, bulk, repair).
    FlowUpdate,
    /// A flow is gone.
    FlowDelete,
    /// Anything else: a barrier that flow messages are not merged across.
    Control,
}

/// The flow a message is about, if any (what queued messages coalesce by).
pub fn flow_key(m: &Message) -> Option<FlowKey> {
    match m {
        Message::FlowNew(f) | Message::FlowUpdate(f) => Some(f.key()),
        Message::FlowDelete(k) => Some(*k),
        _ => None,
    }
}

impl Kind {
    /// The kind of a message.
    pub fn of(m: &Message) -> Kind {
        match m {
            Message::FlowNew(_) => Kind::FlowNew,
            Message::FlowUpdate(_) => Kind::FlowUpdate,
            Message::FlowDelete(_) => Kind::FlowDelete,
            _ => Kind::Control,
        }
    }
}

/// Encode a message for a stream. A message that cannot be encoded (never built by the
/// node: it refuses unencodable flows) becomes padding, which keeps its sequence number.
pub fn encode(m: &Message) -> Encoded {
    let mut buf = Vec::with_capacity(48);
    if m.put(&mut buf).is_err() {
        buf.clear();
        Message::put_padding(&mut buf);
    }
    Encoded::from_slice(&buf)
}
