//! The ctsync sync protocol on the wire (native dialect, version 1).
//!
//! A datagram is a clear [`header::Header`], then a body sealed with the sender's
//! [`crypto::TrafficKey`] (the header is the associated data), then the tag. The body is a
//! sequence of [`frame::Frame`]s; `DATA` frames carry the numbered [`frame::Message`]s of
//! a reliable stream, flows in the compact encoding of [`codec`].
//!
//! The crate is sans-IO and deterministic: no clock, no socket, no randomness. The full
//! specification is `docs/PROTOCOL.md`; section numbers in the code refer to it.

pub mod codec;
pub mod crypto;
pub mod frame;
pub mod header;
pub mod replay;
pub mod tag;

pub use crypto::{Cipher, ClusterSecret, TAG_LEN, TrafficKey, expand_seed};
pub use frame::{DataMessages, Frame, FrameWriter, Message, WireRole, frames};
pub use header::{GROUP, HEADER_LEN, Header, NodeId, VERSION};
pub use replay::{ReplayError, ReplayWindow};

/// Why bytes were refused. Small and `Copy`: each variant is a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Shorter than its structure says.
    #[error("truncated")]
    Truncated,
    /// Not a ctsync datagram.
    #[error("bad magic")]
    BadMagic,
    /// A datagram version we do not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The tag did not verify: forged, corrupted, or sealed with another key.
    #[error("authentication failed")]
    Authentication,
    /// A structure inside the body is inconsistent.
    #[error("malformed")]
    Malformed,
    /// The pre-shared key is shorter than 32 bytes.
    #[error("pre-shared key shorter than 32 bytes")]
    ShortKey,
    /// Key derivation failed (cannot happen with valid parameters).
    #[error("key derivation failed")]
    KeyDerivation,
    /// Sealing failed (cannot happen with valid parameters).
    #[error("sealing failed")]
    Seal,
    /// A flow the kernel cannot hold (tuples of different families).
    #[error("flow cannot be encoded")]
    Unencodable,
}
