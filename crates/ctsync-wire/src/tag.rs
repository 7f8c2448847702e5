//! The namespace tag (docs/PROTOCOL.md §14): when one daemon replicates many network
//! namespaces over one sync socket, each datagram of a namespace's node goes out behind
//! a clear tag naming the namespace's id, and the receiving daemon hands it to its node
//! for the same id.
//!
//! ```text
//!  0      2     3
//!  +------+-----+---------------+------------------------
//!  |magic | len | id (len bytes)| the datagram (§2)
//!  +------+-----+---------------+------------------------
//! ```
//! The tag itself is not authenticated: each namespace's node seals with a secret
//! derived from the cluster's and the id ([`crate::ClusterSecret::for_namespace`]), so
//! a datagram behind another id fails authentication there and is dropped as forged.

use crate::WireError;

/// `0xC75E`: a tagged datagram (the untagged magic is `0xC75C`).
pub const TAG_MAGIC: u16 = 0xC75E;
/// The longest id a tag carries, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` can be carried in a tag: 1 to [`MAX_ID_LEN`] bytes.
pub fn valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
}

/// Append the tag for `id` to `buf` (the datagram follows). `id` must be valid
/// ([`valid_id`]); a longer one is cut to [`MAX_ID_LEN`] bytes.
pub fn put_tag(buf: &mut Vec<u8>, id: &[u8]) {
    let id = &id[..id.len().min(MAX_ID_LEN)];
    buf.extend_from_slice(&TAG_MAGIC.to_be_bytes());
    buf.push(id.len() as u8);
    buf.extend_from_slice(id);
}

/// Split a tagged datagram into its id and the datagram behind it.
pub fn split_tag(datagram: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let magic = datagram.get(..2).ok_or(WireError::Truncated)?;
    if u16::from_be_bytes([magic[0], magic[1]]) != TAG_MAGIC {
        return Err(WireError::BadMagic);
    }
    let len = usize::from(*datagram.get(2).ok_or(WireError::Truncated)?);
    if len == 0 || len > MAX_ID_LEN {
        return Err(WireError::Malformed);
    }
    let id = datagram.get(3..3 + len).ok_or(WireError::Truncated)?;
    Ok((id, &datagram[3 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let mut buf = Vec::new();
        put_tag(&mut buf, b"4f1c-router");
        buf.extend_from_slice(b"rest");
        assert_eq!(split_tag(&buf), Ok((&b"4f1c-router"[..], &b"rest"[..])));
        assert_eq!(split_tag(&buf[..1]), Err(WireError::Truncated));
        assert_eq!(split_tag(&buf[..2]), Err(WireError::Truncated));
        assert_eq!(split_tag(&buf[..5]), Err(WireError::Truncated));
        let mut bad = buf.clone();
        bad[1] = 0x5C;
        assert_eq!(split_tag(&bad), Err(WireError::BadMagic));
        for len in [0u8, 65, 255] {
            let mut b = buf.clone();
            b[2] = len;
            assert_eq!(split_tag(&b), Err(WireError::Malformed));
        }
        assert!(valid_id(b"x") && !valid_id(b"") && !valid_id(&[b'a'; 65]));
    }

    #[test]
    fn split_never_panics() {
        for len in 0..80 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = split_tag(&bytes);
            let mut tagged = vec![0xC7, 0x5E];
            tagged.extend_from_slice(&bytes);
            let _ = split_tag(&tagged);
        }
    }
}
