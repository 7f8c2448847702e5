//! What a node knows of each peer: its verified epoch, receive keys and replay window,
//! liveness, role, and the two stream halves.

use std::time::Instant;

use ctsync_wire::{ClusterSecret, NodeId, ReplayWindow, TrafficKey, WireError, WireRole};

use crate::stream::{RecvStream, SendStream};

/// Key id 0 is the handshake key (generation 0); traffic keys have generations from 1,
/// with key id `(generation - 1) % 255 + 1` (docs/PROTOCOL.md §3.2).
pub fn key_id_of(generation: u32) -> u8 {
    if generation == 0 {
        0
    } else {
        ((generation - 1) % 255 + 1) as u8
    }
}

/// The generation with key id `kid` nearest to `current`.
pub fn generation_of(kid: u8, current: u32) -> u32 {
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

/// A paced bulk transfer in progress to one peer.
#[derive(Debug)]
pub struct BulkOut {
    /// Transfer id.
    pub id: u32,
    /// Flows still to send (a snapshot of keys; each is looked up when sent).
    pub keys: Vec<crate::cache::Keyed>,
    /// Flows sent so far.
    pub sent: u64,
}

/// One peer.
#[derive(Debug)]
pub struct Peer {
    /// Its node id.
    pub id: NodeId,
    /// Its epoch, once proven live by a challenge.
    pub epoch: Option<u64>,
    /// Our outstanding challenge to it.
    pub challenge: Option<u64>,
    /// When we last sent a `HELLO`.
    pub hello_sent: Option<Instant>,
    /// A challenge of its to answer.
    pub hello_ack_due: Option<u64>,
    /// Replay window of its verified epoch.
    pub replay: ReplayWindow,
    /// An unverified epoch seen, with its own window (hello frames only).
    pub candidate: Option<(u64, ReplayWindow)>,
    rx_keys: Vec<TrafficKey>,
    rx_epoch: u64,
    /// Which of the node's accepted cluster keys this peer's datagrams verified under
    /// last (0: the sending key); tried first.
    pub rx_secret: usize,
    /// Highest traffic-key generation seen.
    pub rx_generation: u32,
    /// Last authenticated datagram from it.
    pub last_heard: Option<Instant>,
    /// Last datagram sent to it.
    pub last_sent: Option<Instant>,
    /// Whether it counts as up.
    pub up: bool,
    /// Its announced role.
    pub role: WireRole,
    /// Whether it says it is ready.
    pub ready: bool,
    /// Whether it was ever seen as primary (then our readiness depends on its data).
    pub was_primary: bool,
    /// Our stream to it.
    pub send: SendStream,
    /// Its stream to us.
    pub recv: RecvStream,
    /// When a standalone ACK is due.
    pub ack_at: Option<Instant>,
    /// Messages delivered since our last ACK.
    pub unacked: usize,
    /// When we last sent a NACK.
    pub nack_sent: Option<Instant>,
    /// A bulk transfer to it in progress.
    pub bulk: Option<BulkOut>,
    /// It must be resynchronised when it is reachable again.
    pub resync_needed: bool,
    /// Its whole table arrived (bulk complete).
    pub bulk_done: bool,
    /// Its last digest matched our copy.
    pub digest_ok: bool,
    /// Bucket repairs requested and not finished.
    pub repairs_pending: usize,
    /// The role and readiness we last told it.
    pub announced: Option<(WireRole, bool)>,
    /// Its verified epoch must be proven live again (it was down: its key generation
    /// may have moved on further than key ids can tell).
    pub reverify: bool,
    /// Role and readiness from a HELLO of an epoch not verified yet, with that epoch;
    /// applied when (and only if) that epoch is verified.
    pub pending_role: Option<(u64, WireRole, bool)>,
}

impl Peer {
    /// A peer not heard from yet.
    pub fn new(id: NodeId, window: usize, queue_limit: usize) -> Peer {
        Peer {
            id,
            epoch: None,
            challenge: None,
            hello_sent: None,
            hello_ack_due: None,
            replay: ReplayWindow::default(),
            candidate: None,
            rx_keys: Vec::new(),
            rx_epoch: 0,
            rx_secret: 0,
            rx_generation: 0,
            last_heard: None,
            last_sent: None,
            up: false,
            role: WireRole::Unknown,
            ready: false,
            was_primary: false,
            send: SendStream::new(window, queue_limit),
            recv: RecvStream::new(window * 4),
            ack_at: None,
            unacked: 0,
            nack_sent: None,
            bulk: None,
            resync_needed: false,
            bulk_done: false,
            digest_ok: false,
            repairs_pending: 0,
            announced: None,
            reverify: false,
            pending_role: None,
        }
    }

    /// Whether its copy of what it sent us is complete (our readiness): the last bulk
    /// transfer arrived, the last digest agreed and no repair is outstanding. A gap in
    /// the stream does not count: under load a datagram lost now and then is normal and
    /// comes again within a retransmission timeout, and readiness that dropped at each
    /// one would make keepalived's track_file flap the node between BACKUP and FAULT,
    /// so that a primary failing at such a moment would not be replaced at all.
    pub fn synced(&self) -> bool {
        self.bulk_done && self.digest_ok && self.repairs_pending == 0
    }

    /// Forget cached receive keys (the cluster keys changed, or another one verified).
    pub fn forget_rx_keys(&mut self) {
        self.rx_keys.clear();
    }

    /// The receive key of `epoch`, generation `generation` (cached: current and previous).
    pub fn rx_key(
        &mut self,
        secret: &ClusterSecret,
        epoch: u64,
        generation: u32,
    ) -> Result<&TrafficKey, WireError> {
        if self.rx_epoch != epoch {
            self.rx_keys.clear();
            self.rx_epoch = epoch;
        }
        if let Some(i) = self
            .rx_keys
            .iter()
            .position(|k| k.generation() == generation)
        {
            return Ok(&self.rx_keys[i]);
        }
        let key = secret.traffic_key(self.id, epoch, generation)?;
        if self.rx_keys.len() >= 3 {
            self.rx_keys.remove(0);
        }
        self.rx_keys.push(key);
        self.rx_keys.last().ok_or(WireError::KeyDerivation)
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
}
