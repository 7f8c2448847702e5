//! Flow keys hashed once. Each node hashes with its own [`KeyHasher`], derived from the
//! seed it was started with, and carries the hash ([`Keyed`]) to every table and queue
//! that looks the flow up: hashing a 44-byte key costs more than a probe of a table that
//! is in cache.

use ahash::RandomState;
use ctnetlink::FlowKey;

/// SplitMix64: a small deterministic generator for challenges and transfer ids (seeded
/// one way from the node's seed: see [`KeyHasher::from_seed`]).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    /// A generator starting from `seed`.
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next value.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The hasher of flow keys: aHash keyed from a node's seed. Flow keys are partly chosen
/// by whoever sends traffic through the firewall, so the daemon seeds nodes from real
/// randomness and the keys stay secret; a simulation seeds them fixed, and then the same
/// inputs give the same tables, the same iteration orders and the same datagrams.
#[derive(Clone)]
pub struct KeyHasher(RandomState);

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    /// The hasher for a node started with `seed`.
    pub fn from_seed(seed: u64) -> KeyHasher {
        // A stream apart from the node's challenges: the seed is stirred first.
        let mut g = SplitMix::new(seed ^ 0x6b65_7968_6173_6865);
        KeyHasher(RandomState::with_seeds(
            g.next(),
            g.next(),
            g.next(),
            g.next(),
        ))
    }

    /// Hash a key.
    pub fn keyed(&self, key: FlowKey) -> Keyed {
        Keyed {
            hash: self.0.hash_one(key),
            key,
        }
    }

    /// The hash of a key.
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.0.hash_one(key)
    }

    /// The underlying build hasher (for maps keyed by other things than flows).
    pub(crate) fn build(&self) -> RandomState {
        self.0.clone()
    }
}

impl Default for KeyHasher {
    /// A hasher with a fixed seed (0): for tests and tools whose keys no attacker picks.
    fn default() -> KeyHasher {
        KeyHasher::from_seed(0)
    }
}

/// A flow key with its hash (by one node's [`KeyHasher`]; meaningless to another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    pub(crate) key: FlowKey,
    pub(crate) hash: u64,
}

impl Keyed {
    /// The key.
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// Its hash.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_hash_two_seeds_two() {
        let t = ctnetlink::Tuple::ports(
            ctnetlink::ipproto::UDP,
            std::net::Ipv4Addr::new(198, 18, 0, 1).into(),
            1000,
            std::net::Ipv4Addr::new(198, 19, 0, 1).into(),
            53,
        );
        let key = ctnetlink::Flow::new(t, t.inverse()).key();
        assert_eq!(
            KeyHasher::from_seed(7).hash(&key),
            KeyHasher::from_seed(7).hash(&key)
        );
        assert_ne!(
            KeyHasher::from_seed(7).hash(&key),
            KeyHasher::from_seed(8).hash(&key)
        );
    }
}
