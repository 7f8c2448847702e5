//! A hash table whose room grows by an eighth at most, not by doubling.
//!
//! A hashbrown table has a power-of-two number of slots and doubles when it is 7/8 full,
//! so a table is between 44 % and 88 % full, and the memory per entry depends on where
//! its size falls: a million flows sit in room for two million (48 % full), where 200,000
//! sit in room for 262,144 (76 %). For the tables that hold one entry per flow (a flow
//! table's index and the hot-standby mirror), that made a flow cost 14 bytes more at a
//! million than at 200,000.
//!
//! [`ShardedTable`] keeps the same hashbrown tables, with their fast probing, but above
//! 4,096 slots it splits its entries by hash across 8 to 15 tables of one power-of-two
//! size: its room is 8 to 15 times a power of two, and it steps from one to the next
//! (9 × 2ᵏ → 10 × 2ᵏ → … → 15 × 2ᵏ → 8 × 2ᵏ⁺¹), moving every entry, when one of its
//! tables is full. While it grows, a table is then between about 77 % and 88 % full at
//! any size. A shard that fills with the tombstones of removals is rebuilt at its size
//! alone while it holds at most 3/4 of its room; above, the table grows, so a table that
//! churns (entries removed and others inserted, as a firewall's do) settles between about
//! 60 % and 75 % full, still above a doubling table's average. Growing and shrinking are
//! the table's: when more entries fall into one shard than its room (at the first split,
//! 9 shards of 448 entries, a few percent of the time), the table is laid out again with
//! more room instead of leaving that shard doubled.

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, OccupiedEntry};

/// Slots of the largest table kept in one shard.
const ONE_SHARD_MAX: usize = 4096;

/// The hash bits that choose a shard: above those a shard's own slots use (its low
/// bits, for a shard of up to 2²⁵ slots) and below its tag (the top 7).
const SHARD_BITS_SHIFT: u32 = 25;

/// Entries a hashbrown table of `slots` slots (a power of two, at least 8) holds.
const fn usable(slots: usize) -> usize {
    slots / 8 * 7
}

/// Shards and slots a shard for room for `n` entries: one shard up to
/// [`ONE_SHARD_MAX`] slots, then 8 to 15 shards of a power of two.
fn layout(n: usize) -> (usize, usize) {
    let mut slots = 8;
    while slots < ONE_SHARD_MAX && usable(slots) < n {
        slots *= 2;
    }
    if usable(slots) >= n {
        return (1, slots);
    }
    for shift in ONE_SHARD_MAX.trailing_zeros() - 3..usize::BITS - 5 {
        let slots = 1 << shift;
        for shards in 8..=15 {
            if shards * usable(slots) >= n {
                return (shards, slots);
            }
        }
    }
    (15, 1 << (usize::BITS - 6))
}

/// The shard of `hash` among `shards`, by the hash's middle bits.
fn shard_of(hash: u64, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let bits = u64::from((hash >> SHARD_BITS_SHIFT) as u32);
    // Fits: the product is below shards × 2³², shifted down by 32.
    ((bits * shards as u64) >> 32) as usize
}

/// A hash table of `T` found by a 64-bit hash given with each call, as hashbrown's
/// [`HashTable`], with room that grows by an eighth at most (see the module's text).
#[derive(Debug, Clone)]
pub(crate) struct ShardedTable<T> {
    shards: Vec<HashTable<T>>,
    /// Slots of each shard (0 before anything is allocated).
    slots: usize,
}

impl<T> Default for ShardedTable<T> {
    fn default() -> ShardedTable<T> {
        ShardedTable::with_capacity(0)
    }
}

impl<T> ShardedTable<T> {
    /// An empty table with room for `n` entries (nothing allocated when `n` is 0).
    pub(crate) fn with_capacity(n: usize) -> ShardedTable<T> {
        let mut t = ShardedTable {
            shards: Vec::new(),
            slots: 0,
        };
        if n > 0 {
            let (shards, slots) = layout(n);
            t.shards = (0..shards)
                .map(|_| HashTable::with_capacity(usable(slots)))
                .collect();
            t.slots = slots;
        }
        t
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(HashTable::is_empty)
    }

    /// Entries it has room for before it grows.
    pub(crate) fn capacity(&self) -> usize {
        self.shards.len() * usable(self.slots)
    }

    /// Slots allocated (what its memory is proportional to), as the shards hold them.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.shards.iter().map(HashTable::num_buckets).sum()
    }

    fn shard(&self, hash: u64) -> Option<&HashTable<T>> {
        self.shards.get(shard_of(hash, self.shards.len()))
    }

    fn shard_mut(&mut self, hash: u64) -> Option<&mut HashTable<T>> {
        let n = self.shards.len();
        self.shards.get_mut(shard_of(hash, n))
    }

    /// The entry of `hash` that `eq` accepts.
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.shard(hash)?.find(hash, eq)
    }

    /// The entry of `hash` that `eq` accepts, to change (not its hash).
    pub(crate) fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.shard_mut(hash)?.find_mut(hash, eq)
    }

    /// The entry of `hash` that `eq` accepts, to remove.
    pub(crate) fn find_entry(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
    ) -> Option<OccupiedEntry<'_, T>> {
        self.shard_mut(hash)?.find_entry(hash, eq).ok()
    }

    /// The entry of `hash` that `eq` accepts, or the place to insert one; `hasher` gives
    /// an entry's hash when entries move.
    pub(crate) fn entry(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        hasher: impl Fn(&T) -> u64,
    ) -> Entry<'_, T> {
        self.make_room(hash, &hasher);
        let n = self.shards.len();
        // make_room left at least one shard.
        let i = shard_of(hash, n).min(n.saturating_sub(1));
        self.shards[i].entry(hash, eq, hasher)
    }

    /// Keep only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        for s in &mut self.shards {
            s.retain(&mut keep);
        }
    }

    /// Room for `n` entries (at least what is held), when that is less than now: the
    /// memory above is given back.
    pub(crate) fn shrink_to(&mut self, n: usize, hasher: impl Fn(&T) -> u64) {
        let n = n.max(self.len());
        if n == 0 {
            *self = ShardedTable::with_capacity(0);
        } else if let (shards, slots) = layout(n)
            && shards * usable(slots) < self.capacity()
        {
            self.relayout(n, &hasher);
        }
    }

    /// Room for how many entries the table must be laid out anew with before the shard
    /// of `hash` can take one more entry, if it must (one of its shards is full of what it
    /// holds). A caller that can list the entries in a cheaper order than the table's
    /// (a slab, in position order) then calls [`ShardedTable::refill`] itself.
    pub(crate) fn relayout_due(&self, hash: u64) -> Option<usize> {
        let shard = self.shard(hash)?;
        if shard.len() < shard.capacity() || shard.len() * 4 <= usable(self.slots) * 3 {
            return None;
        }
        let len = self.len();
        Some((len + len / 16 + 1).max(self.capacity() + 1))
    }

    /// Lay the table out anew with room for `n` entries, from `entries` (with their
    /// hashes): every entry it held, and nothing else.
    pub(crate) fn refill(
        &mut self,
        n: usize,
        entries: impl Iterator<Item = (u64, T)>,
        hasher: impl Fn(&T) -> u64,
    ) {
        let (shards, slots) = layout(n.max(1));
        // The old shards go first: the new ones take their memory.
        self.shards = Vec::new();
        self.shards = (0..shards)
            .map(|_| HashTable::with_capacity(usable(slots)))
            .collect();
        self.slots = slots;
        for (h, x) in entries {
            self.shards[shard_of(h, shards)].insert_unique(h, x, &hasher);
        }
        self.even_out(&hasher);
    }

    /// When hashbrown grew a shard on its own (more entries fell into it than its room),
    /// lay the table out again with more room; at most a few times, each with more.
    fn even_out(&mut self, hasher: &impl Fn(&T) -> u64) {
        for _ in 0..4 {
            let room = usable(self.slots);
            if self.shards.iter().all(|s| s.capacity() <= room) {
                return;
            }
            let n = self.capacity() + 1;
            self.relayout_once(n, hasher);
        }
    }

    /// Make sure the shard of `hash` can take one more entry without growing on its own.
    fn make_room(&mut self, hash: u64, hasher: &impl Fn(&T) -> u64) {
        if self.shards.is_empty() {
            *self = ShardedTable::with_capacity(1);
        }
        // Bounded: each turn either returns or grows the table's room past what it holds.
        for _ in 0..8 {
            if let Some(n) = self.relayout_due(hash) {
                self.relayout(n, hasher);
                continue;
            }
            let room = usable(self.slots);
            let Some(shard) = self.shard_mut(hash) else {
                return;
            };
            if shard.len() == shard.capacity() {
                // Full of tombstones: rebuild this shard at its size.
                let old = std::mem::replace(shard, HashTable::with_capacity(room));
                for x in old {
                    shard.insert_unique(hasher(&x), x, hasher);
                }
            }
            return;
        }
    }

    /// Move every entry into the layout with room for `n`, shard after shard: a shard
    /// covers a range of the hash's bits, so the entries of old shard `i` go to the new
    /// shards around `i` alone. Each new shard is allocated when its first entry comes and
    /// each old one freed once emptied, so a step between layouts of one shard size holds
    /// one or two shards more than the table at most, and each new shard takes the
    /// memory of an old one just freed (their sizes are the same) instead of leaving it
    /// as a hole in the heap. (Allocated all at once, the steps of a table of 200,000
    /// flows left 6 MiB of such holes.)
    fn relayout(&mut self, n: usize, hasher: &impl Fn(&T) -> u64) {
        self.relayout_once(n, hasher);
        self.even_out(hasher);
    }

    fn relayout_once(&mut self, n: usize, hasher: &impl Fn(&T) -> u64) {
        let (shards, slots) = layout(n.max(1));
        let old = std::mem::take(&mut self.shards);
        let mut new: Vec<HashTable<T>> = (0..shards).map(|_| HashTable::new()).collect();
        for table in old {
            for x in table {
                let h = hasher(&x);
                let s = &mut new[shard_of(h, shards)];
                if s.capacity() == 0 {
                    *s = HashTable::with_capacity(usable(slots));
                }
                s.insert_unique(h, x, hasher);
            }
        }
        for s in &mut new {
            if s.capacity() == 0 {
                *s = HashTable::with_capacity(usable(slots));
            }
        }
        self.shards = new;
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spread of 64-bit hashes (splitmix64).
    fn hash(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn insert(t: &mut ShardedTable<u64>, i: u64) {
        match t.entry(hash(i), |&x| x == i, |&x| hash(x)) {
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }

    #[test]
    fn layouts_step_by_an_eighth_at_most() {
        // Every layout in turn: each is the smallest with room for one more than the last.
        let mut prev = 0;
        for _ in 0..200 {
            let (shards, slots) = layout(prev + 1);
            let room = shards * usable(slots);
            assert!(room > prev, "{shards} × {slots}");
            if prev >= usable(ONE_SHARD_MAX) {
                assert!(room * 8 <= prev * 9, "{prev} → {room}");
            }
            prev = room;
        }
        assert!(prev > 100_000_000);
        assert_eq!(layout(200_000), (14, 16_384));
        assert_eq!(layout(1_000_000), (9, 131_072));
    }

    #[test]
    fn a_million_entries_fill_their_room_as_200_000_do() {
        let fill = |n: u64| {
            let mut t = ShardedTable::with_capacity(0);
            for i in 0..n {
                insert(&mut t, i);
            }
            assert_eq!(t.len(), n as usize);
            assert!(
                (0..n)
                    .step_by(101)
                    .all(|i| t.find(hash(i), |&x| x == i).is_some())
            );
            n as f64 / t.slots() as f64
        };
        let (small, large) = (fill(200_000), fill(1_000_000));
        // And through the first splits of tables of many key sets, no shard doubled on its
        // own (more of its entries than its room fall into one shard now and then).
        for set in 0..64 {
            let mut t = ShardedTable::with_capacity(0);
            for i in 0..6000 {
                insert(&mut t, set << 32 | i);
                assert_eq!(
                    t.slots(),
                    t.shards.len() * t.slots,
                    "{set}/{i}: a shard grew alone"
                );
            }
        }
        // A single hashbrown table: 0.76 and 0.48.
        assert!(large >= 0.77 && small >= 0.77, "{small} {large}");
    }

    #[test]
    fn removals_and_inserts_in_turn_keep_the_room() {
        let mut t = ShardedTable::with_capacity(0);
        for i in 0..50_000 {
            insert(&mut t, i);
        }
        let slots = t.slots();
        // Churn: every removal leaves a tombstone, every insert a new key.
        for i in 0..500_000 {
            let gone = i;
            let o = t.find_entry(hash(gone), |&x| x == gone).expect("held");
            o.remove();
            insert(&mut t, i + 50_000);
        }
        assert_eq!(t.len(), 50_000);
        // Grown while more than 3/4 full, then rebuilt shard by shard at its size.
        assert!(t.slots() <= slots * 3 / 2, "{slots} → {}", t.slots());
        assert!((500_000..550_000).all(|i| t.find(hash(i), |&x| x == i).is_some()));
    }

    #[test]
    fn it_shrinks_to_what_it_holds() {
        let mut t = ShardedTable::with_capacity(0);
        for i in 0..300_000 {
            insert(&mut t, i);
        }
        t.retain(|&mut x| x < 1000);
        assert_eq!(t.len(), 1000);
        t.shrink_to(2000, |&x| hash(x));
        assert!(t.slots() <= 4096, "{}", t.slots());
        assert!((0..1000).all(|i| t.find(hash(i), |&x| x == i).is_some()));
        t.shrink_to(0, |&x| hash(x));
        assert!(t.slots() <= 4096);
        t.retain(|_| false);
        t.shrink_to(0, |&x| hash(x));
        assert_eq!(t.slots(), 0);
        insert(&mut t, 7);
        assert_eq!(t.len(), 1);
    }
}
