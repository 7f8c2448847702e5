//! The clear datagram header (docs/PROTOCOL.md §2), authenticated as AEAD associated data.
//!
//! ```text
//!  0      2   3   4        8                16               24
//!  +------+---+---+--------+----------------+----------------+
//!  |magic |ver|kid| node   | epoch          | packet number  |
//!  +------+---+---+--------+----------------+----------------+
//! ```
//! All fields big-endian. `packet` is the AEAD nonce: it never repeats for one
//! (node, epoch, key id).

use crate::WireError;

/// `0xC75C`: "ct sync".
pub const MAGIC: u16 = 0xC75C;
/// The datagram format version this crate writes. 2: the receiver's node id is
/// authenticated with the header (1 authenticated the header only; docs/PROTOCOL.md §10).
pub const VERSION: u8 = 2;
/// Bytes in the header.
pub const HEADER_LEN: usize = 24;

mod field {
    use std::ops::Range;
    pub(crate) const MAGIC: Range<usize> = 0..2;
    pub(crate) const VERSION: usize = 2;
    pub(crate) const KEY_ID: usize = 3;
    pub(crate) const NODE: Range<usize> = 4..8;
    pub(crate) const EPOCH: Range<usize> = 8..16;
    pub(crate) const PACKET: Range<usize> = 16..24;
}

/// A node's identity in the cluster (configured, unique per node).
pub type NodeId = u32;

/// The receiver id of a group (multicast) datagram, in its associated data
/// (docs/PROTOCOL.md §13.2): no node may have it.
pub const GROUP: NodeId = 0xFFFF_FFFF;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Datagram format version.
    pub version: u8,
    /// Which traffic key of the sender's epoch sealed the body.
    pub key_id: u8,
    /// Sender.
    pub node: NodeId,
    /// Sender's epoch: set at every start, larger is newer.
    pub epoch: u64,
    /// Packet number (the nonce).
    pub packet: u64,
}

fn be<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

impl Header {
    /// Parse the first [`HEADER_LEN`] bytes of a datagram.
    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        let h = buf.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
        if u16::from_be_bytes(be(&h[field::MAGIC])) != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = h[field::VERSION];
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        Ok(Header {
            version,
            key_id: h[field::KEY_ID],
            node: u32::from_be_bytes(be(&h[field::NODE])),
            epoch: u64::from_be_bytes(be(&h[field::EPOCH])),
            packet: u64::from_be_bytes(be(&h[field::PACKET])),
        })
    }

    /// Append the header to `buf`.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.push(self.version);
        buf.push(self.key_id);
        buf.extend_from_slice(&self.node.to_be_bytes());
        buf.extend_from_slice(&self.epoch.to_be_bytes());
        buf.extend_from_slice(&self.packet.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let h = Header {
            version: VERSION,
            key_id: 3,
            node: 7,
            epoch: 0x0102_0304_0506_0708,
            packet: 99,
        };
        let mut buf = Vec::new();
        h.emit(&mut buf);
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(Header::parse(&buf), Ok(h));
        assert_eq!(Header::parse(&buf[..23]), Err(WireError::Truncated));
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert_eq!(Header::parse(&bad), Err(WireError::BadMagic));
        for other in [1, VERSION + 1] {
            let mut v = buf.clone();
            v[2] = other;
            assert_eq!(Header::parse(&v), Err(WireError::UnsupportedVersion(other)));
        }
    }
}
