//! The AEAD envelope (docs/PROTOCOL.md §3): keys derived with HKDF-SHA256 from the
//! cluster's pre-shared key, one key per sender, epoch and key generation; the packet
//! number is the nonce.
//!
//! ```text
//! prk    = HKDF-Extract(salt = "ctsync v1 cluster", ikm = psk)
//! sender = HKDF-Expand(prk, "ctsync v1 sender" ‖ cipher ‖ node ‖ epoch, 32)
//! key_g  = HKDF-Expand(sender, "key" ‖ g, key length)
//! iv_g   = HKDF-Expand(sender, "iv" ‖ g, 12)
//! nonce  = iv_g XOR (0u32 ‖ packet number)        (as in TLS 1.3 and QUIC)
//! ```
//! Two senders never share a key, so no (key, nonce) pair repeats across the cluster as
//! long as each sender never reuses a packet number within an epoch. Under `cfg(fuzzing)`
//! sealing appends a zero tag and opening skips authentication, so fuzzers reach the
//! decoders behind it.

use aws_lc_rs::aead::{
    AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};
use zeroize::Zeroize;

use crate::WireError;
use crate::header::NodeId;

/// Bytes of the authentication tag appended to every datagram.
pub const TAG_LEN: usize = 16;
/// The shortest pre-shared key accepted.
pub const MIN_PSK_LEN: usize = 32;

/// The AEAD algorithm of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): the default; no practical confidentiality limit.
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM: fast with AES-NI; limited to 2^23 packets per key (RFC 9001 §6.6).
    Aes256Gcm,
}

impl Cipher {
    fn id(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    /// Packets one key may seal before the sender must move to the next generation.
    /// Half of the published limit, as margin.
    pub fn packet_limit(self) -> u64 {
        match self {
            // The integrity limit for ChaCha20-Poly1305 is about forged packets (2^36);
            // rotation by time keeps every key young anyway.
            Cipher::ChaCha20Poly1305 => 1 << 35,
            Cipher::Aes256Gcm => 1 << 22,
        }
    }
}

/// Four independent 64-bit values from `seed` for the purpose `label`, through HKDF
/// (one-way: what is derived for one label, even when it goes on the wire, tells nothing
/// of the seed or of another label's values). A node derives its challenges and the keys
/// of its hash tables from one seed so.
pub fn expand_seed(seed: u64, label: &[u8]) -> [u64; 4] {
    let prk = Salt::new(HKDF_SHA256, b"ctsync v1 seed").extract(&seed.to_be_bytes());
    let mut out = [0u8; 32];
    let filled = prk
        .expand(&[label], Len(32))
        .and_then(|okm| okm.fill(&mut out));
    if filled.is_err() {
        // HKDF-SHA256 fails only for outputs over 8,160 bytes; keep the seed's bits.
        return [
            seed,
            !seed,
            seed.rotate_left(32),
            seed ^ 0x5a5a_5a5a_5a5a_5a5a,
        ];
    }
    let mut v = [0u64; 4];
    for (x, chunk) in v.iter_mut().zip(out.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *x = u64::from_be_bytes(b);
    }
    out.zeroize();
    v
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The cluster secret, from which every traffic key is derived.
#[derive(Clone)]
pub struct ClusterSecret {
    prk: Prk,
    cipher: Cipher,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl ClusterSecret {
    /// The secret of a cluster whose pre-shared key is `psk` (at least 32 bytes).
    pub fn new(psk: &[u8], cipher: Cipher) -> Result<ClusterSecret, WireError> {
        if psk.len() < MIN_PSK_LEN {
            return Err(WireError::ShortKey);
        }
        let prk = Salt::new(HKDF_SHA256, b"ctsync v1 cluster").extract(psk);
        Ok(ClusterSecret { prk, cipher })
    }

    /// The secret of one replicated namespace (docs/PROTOCOL.md §14): derived from this
    /// one and the namespace's id, so that a datagram of one namespace never
    /// authenticates as another's.
    pub fn for_namespace(&self, id: &[u8]) -> Result<ClusterSecret, WireError> {
        let mut okm = [0u8; 32];
        let info: [&[u8]; 2] = [b"ctsync v1 namespace", id];
        self.prk
            .expand(&info, Len(32))
            .and_then(|k| k.fill(&mut okm))
            .map_err(|_| WireError::KeyDerivation)?;
        let prk = Prk::new_less_safe(HKDF_SHA256, &okm);
        okm.zeroize();
        Ok(ClusterSecret {
            prk,
            cipher: self.cipher,
        })
    }

    /// The cipher this cluster uses.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The traffic key of `node` in `epoch`, generation `generation`.
    pub fn traffic_key(
        &self,
        node: NodeId,
        epoch: u64,
        generation: u32,
    ) -> Result<TrafficKey, WireError> {
        let mut sender = [0u8; 32];
        let info: [&[u8]; 4] = [
            b"ctsync v1 sender",
            &[self.cipher.id()],
            &node.to_be_bytes(),
            &epoch.to_be_bytes(),
        ];
        self.prk
            .expand(&info, Len(32))
            .and_then(|okm| okm.fill(&mut sender))
            .map_err(|_| WireError::KeyDerivation)?;
        let sender_prk = Prk::new_less_safe(HKDF_SHA256, &sender);
        sender.zeroize();
        let alg = match self.cipher {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        };
        let g = generation.to_be_bytes();
        let mut key = [0u8; 32];
        let mut iv = [0u8; NONCE_LEN];
        let key_info: [&[u8]; 2] = [b"key", &g];
        let iv_info: [&[u8]; 2] = [b"iv", &g];
        sender_prk
            .expand(&key_info, Len(alg.key_len()))
            .and_then(|okm| okm.fill(&mut key[..alg.key_len()]))
            .map_err(|_| WireError::KeyDerivation)?;
        sender_prk
            .expand(&iv_info, Len(NONCE_LEN))
            .and_then(|okm| okm.fill(&mut iv))
            .map_err(|_| WireError::KeyDerivation)?;
        let unbound =
            UnboundKey::new(alg, &key[..alg.key_len()]).map_err(|_| WireError::KeyDerivation);
        key.zeroize();
        Ok(TrafficKey {
            key: LessSafeKey::new(unbound?),
            iv,
            generation,
        })
    }
}

/// One sender's key for one generation: seals and opens datagram bodies.
pub struct TrafficKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    generation: u32,
}

impl std::fmt::Debug for TrafficKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficKey")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Drop for TrafficKey {
    fn drop(&mut self) {
        self.iv.zeroize();
    }
}

impl TrafficKey {
    /// The generation this key belongs to.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn nonce(&self, packet: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(packet.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypt `buf[header_len..]` in place and append the tag; `buf[..header_len]` (the
    /// clear header) and the id of the node it is for (`to`) are authenticated as
    /// associated data, so that a datagram for one peer does not open at another
    /// (docs/PROTOCOL.md §3.1).
    pub fn seal(
        &self,
        packet: u64,
        buf: &mut Vec<u8>,
        header_len: usize,
        to: NodeId,
    ) -> Result<(), WireError> {
        if cfg!(fuzzing) {
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            return Ok(());
        }
        let (head, body) = buf.split_at_mut(header_len);
        let (aad, n) = associated(head, to)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(packet), Aad::from(&aad[..n]), body)
            .map_err(|_| WireError::Seal)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Authenticate and decrypt a datagram sealed by [`TrafficKey::seal`] for node `to`
    /// (the receiver: this node); returns the plaintext body. Nothing is returned unless
    /// the tag verifies.
    pub fn open<'a>(
        &self,
        packet: u64,
        buf: &'a mut [u8],
        header_len: usize,
        to: NodeId,
    ) -> Result<&'a [u8], WireError> {
        if buf.len() < header_len + TAG_LEN {
            return Err(WireError::Truncated);
        }
        if cfg!(fuzzing) {
            let end = buf.len() - TAG_LEN;
            return Ok(&buf[header_len..end]);
        }
        let (head, body) = buf.split_at_mut(header_len);
        let (aad, n) = associated(head, to)?;
        let plain = self
            .key
            .open_in_place(self.nonce(packet), Aad::from(&aad[..n]), body)
            .map_err(|_| WireError::Authentication)?;
        Ok(plain)
    }
}

/// The associated data of a datagram: its clear header, then the receiver's node id
/// (u32 BE). Returned in a buffer on the stack with its length.
fn associated(head: &[u8], to: NodeId) -> Result<([u8; AAD_MAX], usize), WireError> {
    let n = head.len() + 4;
    if n > AAD_MAX {
        return Err(WireError::Truncated);
    }
    let mut aad = [0u8; AAD_MAX];
    aad[..head.len()].copy_from_slice(head);
    aad[head.len()..n].copy_from_slice(&to.to_be_bytes());
    Ok((aad, n))
}

/// The longest associated data: a header of up to 60 bytes and the receiver's id.
const AAD_MAX: usize = 64;

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    fn secret(c: Cipher) -> ClusterSecret {
        ClusterSecret::new(&[7u8; 32], c).expect("32 bytes")
    }

    #[test]
    fn seal_open_round_trip_for_both_ciphers() {
        for c in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            let k = secret(c).traffic_key(1, 42, 0).unwrap();
            let mut buf = b"HEADERbody bytes".to_vec();
            k.seal(5, &mut buf, 6, 2).unwrap();
            assert_eq!(buf.len(), 16 + TAG_LEN);
            assert_ne!(&buf[6..16], b"body bytes");
            assert_eq!(k.open(5, &mut buf, 6, 2).unwrap(), b"body bytes");
        }
    }

    #[test]
    fn anything_else_fails_authentication() {
        let s = secret(Cipher::ChaCha20Poly1305);
        let k = s.traffic_key(1, 42, 0).unwrap();
        let mut sealed = b"HEADERbody".to_vec();
        k.seal(5, &mut sealed, 6, 2).unwrap();
        let others = [
            s.traffic_key(2, 42, 0).unwrap(), // another node
            s.traffic_key(1, 43, 0).unwrap(), // another epoch
            s.traffic_key(1, 42, 1).unwrap(), // another generation
            secret(Cipher::Aes256Gcm).traffic_key(1, 42, 0).unwrap(),
            ClusterSecret::new(&[8u8; 32], Cipher::ChaCha20Poly1305)
                .unwrap()
                .traffic_key(1, 42, 0)
                .unwrap(),
            // another namespace's secret (§14), and the cluster's seen from a namespace
            s.for_namespace(b"r1")
                .unwrap()
                .traffic_key(1, 42, 0)
                .unwrap(),
        ];
        for other in &others {
            let mut b = sealed.clone();
            assert_eq!(other.open(5, &mut b, 6, 2), Err(WireError::Authentication));
        }
        let mut b = sealed.clone();
        assert_eq!(
            k.open(5, &mut b, 6, 3),
            Err(WireError::Authentication),
            "another receiver"
        );
        let mut b = sealed.clone();
        assert_eq!(
            k.open(6, &mut b, 6, 2),
            Err(WireError::Authentication),
            "another packet number"
        );
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 0x10;
            assert_eq!(
                k.open(5, &mut b, 6, 2),
                Err(WireError::Authentication),
                "bit flip at {i}"
            );
        }
    }

    #[test]
    fn each_namespace_has_its_own_keys() {
        let s = secret(Cipher::Aes256Gcm);
        let (a, b) = (
            s.for_namespace(b"r1").unwrap(),
            s.for_namespace(b"r2").unwrap(),
        );
        assert_eq!(a.cipher(), Cipher::Aes256Gcm);
        let k = a.traffic_key(1, 42, 0).unwrap();
        let mut sealed = b"HEADERbody".to_vec();
        k.seal(5, &mut sealed, 6, 2).unwrap();
        let same = s
            .for_namespace(b"r1")
            .unwrap()
            .traffic_key(1, 42, 0)
            .unwrap();
        assert_eq!(same.open(5, &mut sealed.clone(), 6, 2).unwrap(), b"body");
        for other in [&b, &s] {
            let mut x = sealed.clone();
            let o = other.traffic_key(1, 42, 0).unwrap();
            assert_eq!(o.open(5, &mut x, 6, 2), Err(WireError::Authentication));
        }
    }

    #[test]
    fn seeds_expand_one_way_per_label() {
        assert_eq!(expand_seed(7, b"a"), expand_seed(7, b"a"));
        assert_ne!(expand_seed(7, b"a"), expand_seed(7, b"b"));
        assert_ne!(expand_seed(7, b"a"), expand_seed(8, b"a"));
        assert!(!expand_seed(7, b"a").contains(&7));
    }

    #[test]
    fn short_psk_is_refused() {
        assert_eq!(
            ClusterSecret::new(&[1u8; 31], Cipher::default()).err(),
            Some(WireError::ShortKey)
        );
    }
}
