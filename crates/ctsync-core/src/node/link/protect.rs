//! Packet protection: sealing what this node sends ([`Sealer`]: its traffic keys, packet
//! numbers and rekeying) and opening what a peer sends ([`RxKeys`] and the replay
//! windows of [`Link::open`]). docs/PROTOCOL.md §3.

use std::time::Instant;

use ctsync_wire::header::{HEADER_LEN, Header, VERSION};
use ctsync_wire::{ClusterSecret, NodeId, ReplayError, ReplayWindow, TrafficKey, WireError};
use smallvec::SmallVec;

use super::Link;
use crate::DropReason;

/// Key id 0 is the handshake key (generation 0); traffic keys have generations from 1,
/// with key id `(generation - 1) % 255 + 1` (docs/PROTOCOL.md §3.2).
pub(crate) fn key_id_of(generation: u32) -> u8 {
    if generation == 0 {
        0
    } else {
        ((generation - 1) % 255 + 1) as u8
    }
}

/// The generation with key id `kid` nearest to `current`.
pub(crate) fn generation_of(kid: u8, current: u32) -> u32 {
    if kid == 0 {
        return 0;
    }
    let current = current.max(1);
    let base = current - (current - 1) % 255; // first generation of current's cycle
    let g = base + u32::from(kid) - 1;
    if g + 127 < current {
        g + 255
    } else if g > current + 128 && g > 255 {
        g - 255
    } else {
        g
    }
}

/// How long the handshake key is kept after its last use. It seals only HELLOs and what
/// goes to a peer not yet verified, at most one datagram an alive interval once the
/// handshake is over; a built key holds the cipher's context (about 600 bytes, in every
/// router's node of a daemon of namespaces), and deriving it again costs microseconds.
const HANDSHAKE_KEPT: std::time::Duration = std::time::Duration::from_secs(10);

/// What seals this node's datagrams: the cluster keys, the traffic key of the current
/// generation, the handshake key and the packet number (the nonce, never repeated under
/// one key: it goes on across rekeying and key rotation).
pub(crate) struct Sealer {
    node: NodeId,
    epoch: u64,
    secret: ClusterSecret,
    /// Further cluster keys accepted from peers (a rotation's overlap period).
    accept: Vec<ClusterSecret>,
    tx_key: TrafficKey,
    /// Built when a datagram needs it, dropped [`HANDSHAKE_KEPT`] after its last use.
    handshake_key: Option<TrafficKey>,
    handshake_used: Instant,
    packet: u64,
    key_started: Instant,
    key_packets: u64,
}

impl Sealer {
    /// Keys for `node`'s datagrams of `epoch`.
    pub(crate) fn new(
        node: NodeId,
        epoch: u64,
        secret: ClusterSecret,
        now: Instant,
    ) -> Result<Sealer, WireError> {
        Ok(Sealer {
            tx_key: secret.traffic_key(node, epoch, 1)?,
            handshake_key: None,
            handshake_used: now,
            node,
            epoch,
            secret,
            accept: Vec::new(),
            packet: 0,
            key_started: now,
            key_packets: 0,
        })
    }

    /// Change the cluster keys (online rotation): send under `send`, accept it and
    /// `accept`. The generation and packet numbers go on.
    pub(crate) fn set_secrets(
        &mut self,
        send: ClusterSecret,
        accept: Vec<ClusterSecret>,
    ) -> Result<(), WireError> {
        let g = self.tx_key.generation();
        self.tx_key = send.traffic_key(self.node, self.epoch, g)?;
        self.handshake_key = None;
        self.secret = send;
        self.accept = accept;
        Ok(())
    }

    /// The cluster keys a datagram may be sealed under: the sending one first.
    pub(crate) fn secrets(&self) -> SmallVec<[&ClusterSecret; 4]> {
        std::iter::once(&self.secret)
            .chain(self.accept.iter())
            .collect()
    }

    /// The current traffic-key generation.
    pub(crate) fn generation(&self) -> u32 {
        self.tx_key.generation()
    }

    /// The packet number the next datagram will carry.
    pub(crate) fn next_packet(&self) -> u64 {
        self.packet
    }

    /// Move to the next traffic key when the current one reached its packet limit or
    /// its age limit.
    pub(crate) fn maybe_rekey(&mut self, now: Instant, rekey_interval: std::time::Duration) {
        let limit = self.secret.cipher().packet_limit();
        if self.key_packets >= limit || now >= self.key_started + rekey_interval {
            let g = self.tx_key.generation() + 1;
            if let Ok(k) = self.secret.traffic_key(self.node, self.epoch, g) {
                self.tx_key = k;
                self.key_started = now;
                self.key_packets = 0;
            }
        }
        if self.handshake_key.is_some() && now >= self.handshake_used + HANDSHAKE_KEPT {
            self.handshake_key = None;
        }
    }

    /// Write the header into `buf[..HEADER_LEN]` and seal the body after it for node
    /// `to`, under the traffic key (`traffic`) or the handshake key. `false` if sealing
    /// failed (then nothing may be sent).
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        traffic: bool,
        buf: &mut Vec<u8>,
        to: NodeId,
    ) -> bool {
        let key = if traffic {
            &self.tx_key
        } else {
            self.handshake_used = now;
            match &mut self.handshake_key {
                Some(k) => &*k,
                slot @ None => match self.secret.traffic_key(self.node, self.epoch, 0) {
                    Ok(k) => &*slot.insert(k),
                    Err(_) => {
                        buf.clear();
                        return false;
                    }
                },
            }
        };
        let h = Header {
            version: VERSION,
            key_id: key_id_of(key.generation()),
            node: self.node,
            epoch: self.epoch,
            packet: self.packet,
        };
        let mut head = Vec::with_capacity(HEADER_LEN);
        h.emit(&mut head);
        buf[..HEADER_LEN].copy_from_slice(&head);
        if key.seal(self.packet, buf, HEADER_LEN, to).is_err() {
            buf.clear();
            return false;
        }
        self.packet += 1;
        self.key_packets += 1;
        true
    }
}

/// A peer's receive keys: the current and previous generations of its epoch, derived
/// on first use.
#[derive(Debug, Default)]
pub(crate) struct RxKeys {
    keys: Vec<TrafficKey>,
    epoch: u64,
    /// Which of the node's accepted cluster keys this peer's datagrams verified under
    /// last (0: the sending key); tried first.
    pub(crate) secret: usize,
}

impl RxKeys {
    /// Forget cached keys (the cluster keys changed, or another one verified).
    pub(crate) fn forget(&mut self) {
        self.keys.clear();
    }

    /// The receive key of `peer`'s `epoch`, generation `generation`.
    fn key(
        &mut self,
        peer: NodeId,
        secret: &ClusterSecret,
        epoch: u64,
        generation: u32,
    ) -> Result<&TrafficKey, WireError> {
        if self.epoch != epoch {
            self.keys.clear();
            self.epoch = epoch;
        }
        if let Some(i) = self.keys.iter().position(|k| k.generation() == generation) {
            return Ok(&self.keys[i]);
        }
        let key = secret.traffic_key(peer, epoch, generation)?;
        if self.keys.len() >= 3 {
            self.keys.remove(0);
        }
        self.keys.push(key);
        self.keys.last().ok_or(WireError::KeyDerivation)
    }
}

fn replay_drop(e: ReplayError) -> DropReason {
    match e {
        ReplayError::Duplicate => DropReason::Replay,
        ReplayError::TooOld => DropReason::TooOld,
    }
}

impl Link {
    /// Check, open (in place) and record a datagram from this peer to node `me`. Returns
    /// whether its epoch is the verified one (else only handshake frames count). The
    /// replay window is checked before decrypting and updated only after the tag
    /// verified; a datagram sealed for another node does not verify.
    pub(crate) fn open(
        &mut self,
        h: &Header,
        buf: &mut [u8],
        secrets: &[&ClusterSecret],
        me: NodeId,
    ) -> Result<bool, DropReason> {
        // Any epoch but the verified one, lower ones too (a clock stepped back, a state
        // directory lost), may only carry handshake frames until it answers a fresh
        // challenge, which no recording can (docs/PROTOCOL.md §3.4).
        let verified = self.epoch == Some(h.epoch);
        if verified {
            self.replay.check(h.packet).map_err(replay_drop)?;
        } else {
            if h.key_id != 0 {
                return Err(DropReason::Unverified);
            }
            if let Some((e, w)) = &self.candidate
                && *e == h.epoch
            {
                w.check(h.packet).map_err(replay_drop)?;
            }
        }
        let generation = if verified {
            generation_of(h.key_id, self.rx_generation)
        } else {
            0
        };
        if verified && generation > self.rx_generation.saturating_add(2) {
            return Err(DropReason::Authentication);
        }
        // During a key rotation more than one cluster key is accepted: the one this peer
        // used last is tried first; a failed open leaves the buffer unspecified, so the
        // others get a fresh copy.
        let mut opened = false;
        if let [secret] = secrets {
            let key = self
                .rx
                .key(self.id, secret, h.epoch, generation)
                .map_err(|_| DropReason::Authentication)?;
            opened = key.open(h.packet, buf, HEADER_LEN, me).is_ok();
        } else if !secrets.is_empty() {
            let original = buf.to_vec();
            let first = self.rx.secret.min(secrets.len() - 1);
            for i in std::iter::once(first).chain((0..secrets.len()).filter(|&i| i != first)) {
                if i != self.rx.secret {
                    self.rx.forget();
                    self.rx.secret = i;
                }
                buf.copy_from_slice(&original);
                let Ok(key) = self.rx.key(self.id, secrets[i], h.epoch, generation) else {
                    continue;
                };
                if key.open(h.packet, buf, HEADER_LEN, me).is_ok() {
                    opened = true;
                    break;
                }
            }
        }
        if !opened {
            return Err(DropReason::Authentication);
        }
        if verified {
            self.replay.insert(h.packet);
            self.rx_generation = self.rx_generation.max(generation);
        } else {
            match &mut self.candidate {
                Some((e, w)) if *e == h.epoch => w.insert(h.packet),
                _ => {
                    let mut w = ReplayWindow::default();
                    w.insert(h.packet);
                    self.candidate = Some((h.epoch, w));
                }
            }
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_map_back_to_nearby_generations() {
        for current in [1u32, 2, 200, 254, 255, 256, 300, 1000, 70_000] {
            for g in current.saturating_sub(2).max(1)..current + 3 {
                assert_eq!(
                    generation_of(key_id_of(g), current),
                    g,
                    "g {g} near {current}"
                );
            }
        }
        assert_eq!(generation_of(0, 500), 0);
        assert_eq!(key_id_of(0), 0);
        assert!((1..1000).all(|g| key_id_of(g) != 0));
    }
    #[allow(clippy::disallowed_methods)] // the sealer's clock is the caller's: any instant
    #[test]
    fn the_handshake_key_is_built_when_needed_and_dropped_when_idle() {
        use ctsync_wire::Cipher;
        let secret = ClusterSecret::new(&[7u8; 32], Cipher::ChaCha20Poly1305).unwrap();
        let t0 = Instant::now();
        let mut sealer = Sealer::new(1, 42, secret.clone(), t0).unwrap();
        assert!(sealer.handshake_key.is_none(), "nothing is sealed yet");
        let datagram = |sealer: &mut Sealer, at: Instant| {
            let mut buf = vec![0u8; HEADER_LEN];
            buf.extend_from_slice(b"hello");
            assert!(sealer.seal(at, false, &mut buf, 2));
            buf
        };
        // The peer opens both datagrams under generation 0 of our epoch: the key built
        // again after the drop is the same key.
        let opens = |buf: &mut Vec<u8>| {
            let h = Header::parse(buf).unwrap();
            assert_eq!(h.key_id, 0);
            let key = secret.traffic_key(1, 42, 0).unwrap();
            key.open(h.packet, buf, HEADER_LEN, 2).map(<[u8]>::to_vec)
        };
        let mut first = datagram(&mut sealer, t0);
        assert!(sealer.handshake_key.is_some());
        sealer.maybe_rekey(
            t0 + HANDSHAKE_KEPT / 2,
            std::time::Duration::from_secs(3600),
        );
        assert!(sealer.handshake_key.is_some(), "used lately: kept");
        sealer.maybe_rekey(t0 + HANDSHAKE_KEPT, std::time::Duration::from_secs(3600));
        assert!(sealer.handshake_key.is_none(), "idle: dropped");
        let mut second = datagram(&mut sealer, t0 + HANDSHAKE_KEPT);
        assert_eq!(opens(&mut first).unwrap(), b"hello");
        assert_eq!(opens(&mut second).unwrap(), b"hello");
    }
}
