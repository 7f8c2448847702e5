//! What a hot-standby backup knows its kernel holds of the flows it wrote there: per
//! flow, a fingerprint of the state it last wrote. A flow whose fingerprint is the same
//! is not written again, whatever brings it (a resync, a bulk transfer, a repair, a
//! commit, a peer becoming primary): on a complete kernel a resync writes nothing.
//!
//! The fingerprint is the content hash of the flow's replicated state
//! ([`ctsync_wire::codec::put_flow_state`]: tuples, status bits, NAT, mark, labels,
//! helper, protocol state; the timeout aside, which the refresh timer keeps up), the hash
//! the caches and the digests already use. What makes the knowledge stale forgets it:
//! a kernel event for the flow that we did not cause (the kernel destroyed it, or someone
//! else wrote it), a kernel write that failed, shortened timeouts (every entry's timeout
//! class changed), a table read that no longer finds it. It is kept across a flush of
//! the external caches: the kernel still holds those flows.
//!
//! An entry is two words (the flow key's hash, by the node's hasher, and the
//! fingerprint) and a control byte, in a [`ShardedTable`] 77 % to 88 % full while it
//! grows: about 20 bytes a flow at any size (a single hashbrown table, half full at a
//! million, took 34).

use crate::shards::ShardedTable;

/// A flow this node wrote to its kernel: its key's hash and the fingerprint of what was
/// written, whose lowest bit is the parity of the last table read that saw it.
#[derive(Debug, Clone, Copy)]
struct Known {
    key_hash: u64,
    fingerprint: u64,
}

/// The fingerprints of the flows written to this node's kernel on peers' behalf.
#[derive(Debug, Default)]
pub(super) struct KernelMirror {
    map: ShardedTable<Known>,
    /// The parity of the table read under way (or last done).
    parity: u64,
}

impl KernelMirror {
    /// `fingerprint` with the current read's parity in its lowest bit.
    fn stamped(&self, fingerprint: u64) -> u64 {
        (fingerprint & !1) | self.parity
    }

    /// Whether the kernel is not known to hold this state of the flow (a write is
    /// needed); it is then recorded as written. `key_hash` is the flow key's hash by the
    /// node's hasher, `fingerprint` its state's content hash.
    pub(super) fn write_needed(&mut self, key_hash: u64, fingerprint: u64) -> bool {
        let stamped = self.stamped(fingerprint);
        match self
            .map
            .entry(key_hash, |k| k.key_hash == key_hash, |k| k.key_hash)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let k = o.get_mut();
                if k.fingerprint | 1 == stamped | 1 {
                    return false;
                }
                k.fingerprint = stamped;
                true
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Known {
                    key_hash,
                    fingerprint: stamped,
                });
                true
            }
        }
    }

    /// Ask the processor to load the slots of these flows (a receive batch looks them
    /// all up: their cache misses then overlap, as [`crate::FlowTable::prefetch`]'s do).
    pub(super) fn prefetch(&self, key_hashes: impl Iterator<Item = u64>) {
        if self.map.is_empty() {
            return;
        }
        for h in key_hashes {
            if let Some(k) = self.map.find(h, |_| true) {
                crate::cache::prefetch_line(std::ptr::from_ref(k).cast());
            }
        }
    }

    /// Whether the kernel is known to hold this state of the flow (nothing recorded).
    pub(super) fn holds(&self, key_hash: u64, fingerprint: u64) -> bool {
        self.map
            .find(key_hash, |k| k.key_hash == key_hash)
            .is_some_and(|k| k.fingerprint | 1 == fingerprint | 1)
    }

    /// Whether the flow was written by us (in whatever state).
    pub(super) fn contains(&self, key_hash: u64) -> bool {
        self.map
            .find(key_hash, |k| k.key_hash == key_hash)
            .is_some()
    }

    /// The kernel's copy of the flow is gone or unknown (deleted, destroyed, written by
    /// someone else, a write refused).
    pub(super) fn forget(&mut self, key_hash: u64) {
        if let Some(o) = self.map.find_entry(key_hash, |k| k.key_hash == key_hash) {
            o.remove();
            self.shrink();
        }
    }

    /// Nothing is known any more (timeouts shortened, the node became primary); the
    /// memory is returned.
    pub(super) fn clear(&mut self) {
        self.map = ShardedTable::default();
    }

    /// A read of the whole kernel table begins (not a restart of one under way).
    pub(super) fn begin_read(&mut self) {
        self.parity ^= 1;
    }

    /// The read found the flow: its fingerprint stays known.
    pub(super) fn seen(&mut self, key_hash: u64) {
        let parity = self.parity;
        if let Some(k) = self.map.find_mut(key_hash, |k| k.key_hash == key_hash) {
            k.fingerprint = (k.fingerprint & !1) | parity;
        }
    }

    /// The read is complete: flows it did not find are forgotten (the kernel lost them,
    /// and their events were lost too). Returns how many.
    pub(super) fn end_read(&mut self) -> usize {
        let before = self.map.len();
        let parity = self.parity;
        self.map.retain(|k| k.fingerprint & 1 == parity);
        self.shrink();
        before - self.map.len()
    }

    /// Flows known.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Give memory back when the table holds less than a quarter of its room (after a
    /// flush or a mass deletion), keeping room for twice its content.
    fn shrink(&mut self) {
        let (len, cap) = (self.map.len(), self.map.capacity());
        if cap > 1024 && len < cap / 4 {
            self.map.shrink_to(len * 2, |k| k.key_hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_state_is_not_written_again_until_forgotten() {
        let mut m = KernelMirror::default();
        assert!(m.write_needed(1, 100));
        assert!(!m.write_needed(1, 100));
        assert!(!m.write_needed(1, 101), "the parity bit is not content");
        assert!(m.write_needed(1, 102), "another state");
        assert!(m.holds(1, 102));
        m.forget(1);
        assert!(!m.contains(1));
        assert!(m.write_needed(1, 102));
    }

    #[test]
    fn a_table_read_forgets_what_it_did_not_find() {
        let mut m = KernelMirror::default();
        for k in 0..10 {
            m.write_needed(k, k * 1000);
        }
        m.begin_read();
        for k in 0..5 {
            m.seen(k);
        }
        assert_eq!(m.end_read(), 5);
        assert!((0..5).all(|k| m.holds(k, k * 1000)));
        assert!((5..10).all(|k| !m.contains(k)));
        // A flow written during a read counts as seen by it.
        m.begin_read();
        m.write_needed(20, 7);
        assert_eq!(m.end_read(), 5);
        assert!(m.holds(20, 7));
    }
}
