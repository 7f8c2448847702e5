//! The caches: this node's kernel table (internal) and what peers told us (external),
//! each with an incrementally maintained digest by bucket for anti-entropy.

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;

use ctnetlink::{Flow, FlowKey};
use ctsync_wire::{Message, codec};
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::key::{KeyHasher, Keyed};
use crate::message::Encoded;

/// Buckets of a digest. Both sides must agree; it is fixed by the protocol version.
pub const BUCKETS: usize = 64;

/// The bucket of a flow: a hash of its key, the same on every node (docs/PROTOCOL.md §7).
pub fn bucket_of(key: &FlowKey) -> u16 {
    let f = Flow::from_key(key);
    // A key always encodes (one family); an encoding error leaves the buffer short but
    // still deterministic.
    with_buf(|buf| {
        let _ = codec::put_flow(buf, &f);
        (xxh3_64(buf) % BUCKETS as u64) as u16
    })
}

/// Run `f` with a cleared, reused encoding buffer (no allocation per flow).
fn with_buf<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(256));
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => {
            b.clear();
            f(&mut b)
        }
        Err(_) => f(&mut Vec::with_capacity(256)),
    })
}

/// The flow message for a flow's stored state and timeout, ready to queue.
pub(crate) fn state_message(state: &[u8], fresh: bool, timeout: Option<u32>) -> Option<Encoded> {
    with_buf(|buf| {
        Message::put_flow_from_state(buf, fresh, state, timeout).ok()?;
        Some(Encoded::from(&buf[..]))
    })
}

/// What [`FlowTable::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The flow was not there.
    New,
    /// The flow was there with another state.
    Changed,
    /// The flow was there with the same state (timeouts aside).
    Same,
}

/// Per-bucket XOR of content hashes, plus a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Flows counted.
    pub count: u64,
    /// One XOR per bucket.
    pub hashes: [u64; BUCKETS],
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            count: 0,
            hashes: [0; BUCKETS],
        }
    }
}

impl Digest {
    fn add(&mut self, bucket: u16, hash: u64) {
        self.hashes[usize::from(bucket)] ^= hash;
        self.count += 1;
    }

    fn remove(&mut self, bucket: u16, hash: u64) {
        self.hashes[usize::from(bucket)] ^= hash;
        self.count = self.count.saturating_sub(1);
    }

    /// The DIGEST message that tells a peer this digest (docs/PROTOCOL.md §7).
    pub fn message(&self) -> Message {
        Message::Digest {
            count: self.count,
            hashes: self.hashes.to_vec(),
        }
    }

    /// Buckets where `self` and `hashes` differ.
    pub fn differing(&self, hashes: &[u64]) -> Vec<u16> {
        (0..BUCKETS)
            .filter(|&b| hashes.get(b).copied().unwrap_or(0) != self.hashes[b])
            .map(|b| b as u16)
            .collect()
    }
}

/// A flow's replicated state in wire form ([`codec::put_flow_state`]: everything but
/// the timeout): about 33 bytes for an IPv4 TCP flow with SNAT, where a decoded [`Flow`]
/// takes 424. Held inline up to [`STATE_INLINE`] bytes (IPv6 flows spill to the heap), so
/// a table's entry needs no allocation of its own and lies in two adjacent cache lines.
pub type State = SmallVec<[u8; STATE_INLINE]>;

/// Bytes of state held inline (the type is then 48 bytes long).
pub const STATE_INLINE: usize = 40;

/// A flow in compact form: its state and timeout, decoded when it is used (what a
/// kernel operation carries: 4,096 queued writes take 256 KB, not 1.7 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFlow {
    state: State,
    timeout: Option<u32>,
}

impl StoredFlow {
    /// A state this process encoded, with a timeout.
    pub(crate) fn new(state: &[u8], timeout: Option<u32>) -> StoredFlow {
        StoredFlow {
            state: State::from_slice(state),
            timeout,
        }
    }

    /// The flow, decoded (`None` only for a state this process did not encode).
    pub fn flow(&self) -> Option<Flow> {
        let mut f = codec::read_flow(&mut codec::Reader::new(&self.state)).ok()?;
        f.timeout = self.timeout;
        Some(f)
    }
}

/// One flow as a table holds it, decoded on demand. Aligned to a cache line: its 128
/// bytes then lie in exactly two lines, the two [`FlowTable::prefetch`] fetches.
/// Unaligned (16-byte steps, as the table lays entries out), most entries straddled
/// three, and the fields at the end missed the cache on every update.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Entry {
    key: FlowKey,
    /// [`codec::put_flow_state`] of the flow: everything replicated but the timeout.
    state: State,
    /// The content hash: `xxh3_64(state)`.
    hash: u64,
    /// The mark of the last transfer or dump that mentioned it (see [`FlowTable::sweep`]).
    mark: u64,
    /// The timeout last reported.
    timeout: Option<u32>,
    bucket: u16,
    /// Whether it is in the digest (the internal table holds back flows younger than
    /// the sync delay: they are neither replicated nor counted).
    counted: bool,
}

impl Entry {
    /// Its flow message (a flow new when `fresh`, else an update), built from the stored
    /// state: nothing decoded or encoded again.
    fn message(&self, fresh: bool) -> Option<Encoded> {
        state_message(&self.state, fresh, self.timeout)
    }

    fn flow(&self) -> Option<Flow> {
        let mut f = codec::read_flow(&mut codec::Reader::new(&self.state)).ok()?;
        f.timeout = self.timeout;
        Some(f)
    }

    fn stored(&self) -> StoredFlow {
        StoredFlow {
            state: self.state.clone(),
            timeout: self.timeout,
        }
    }
}

/// A flow table with a digest, keyed by [`FlowKey`]. Flows are kept in their compact
/// wire form: the methods that return flows decode them.
#[derive(Debug, Clone, Default)]
pub struct FlowTable {
    map: HashTable<Entry>,
    hasher: KeyHasher,
    digest: Digest,
    scratch: Vec<u8>,
}

impl PartialEq for FlowTable {
    /// The same flows with the same states and timeouts.
    fn eq(&self, other: &FlowTable) -> bool {
        self.digest == other.digest
            && self.map.len() == other.map.len()
            && self.map.iter().all(|e| {
                other
                    .find(&other.hasher.keyed(e.key))
                    .is_some_and(|o| o.state == e.state && o.timeout == e.timeout)
            })
    }
}

impl Eq for FlowTable {}

impl FlowTable {
    /// An empty table with room for `n` flows, hashing keys with `hasher` (the keys
    /// passed in must be hashed by the same one).
    pub fn new(hasher: &KeyHasher, n: usize) -> FlowTable {
        FlowTable {
            map: HashTable::with_capacity(n),
            hasher: hasher.clone(),
            digest: Digest::default(),
            scratch: Vec::with_capacity(256),
        }
    }

    /// `key` hashed by this table's hasher (the node's: see [`KeyHasher`]).
    pub fn keyed(&self, key: FlowKey) -> Keyed {
        self.hasher.keyed(key)
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The digest of the counted flows.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    fn find(&self, key: &Keyed) -> Option<&Entry> {
        self.check(key);
        self.map.find(key.hash, |e| e.key == key.key)
    }

    /// In tests: `key` was hashed by this table's hasher (one hashed by another would
    /// silently miss).
    fn check(&self, key: &Keyed) {
        debug_assert_eq!(
            key.hash,
            self.hasher.hash(&key.key),
            "key of another hasher"
        );
    }

    /// Ask the processor to load the slot where `key` would be, if a slot's tag matches
    /// it (a batch of lookups prefetched first overlaps its cache misses instead of
    /// waiting out each in turn; a table of 500,000 flows is far larger than the cache).
    /// Only a hint: the slot itself is not read, and a wrong guess costs one wasted load.
    pub fn prefetch(&self, key: &Keyed) {
        #[cfg(target_arch = "x86_64")]
        if let Some(e) = self.map.find(key.hash, |_| true) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let at = std::ptr::from_ref(e).cast::<i8>();
            // SAFETY: a prefetch is a hint: it never faults, whatever the address, and
            // changes nothing the program can observe. (SSE is part of x86_64.) An entry
            // is two cache lines, aligned ([`Entry`]).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(at);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    /// A flow by key (decoded).
    pub fn get(&self, key: &Keyed) -> Option<Flow> {
        self.find(key).and_then(Entry::flow)
    }

    /// The flow message of a counted flow (a flow new when `fresh`, else an update),
    /// from its stored state: what a transfer sends, with nothing decoded.
    pub fn message(&self, key: &Keyed, fresh: bool) -> Option<Encoded> {
        self.find(key).filter(|e| e.counted)?.message(fresh)
    }

    /// Whether a flow is held.
    pub fn contains(&self, key: &Keyed) -> bool {
        self.find(key).is_some()
    }

    /// Insert or replace, unless the table already holds the same state (by content
    /// hash): then only the mark (and the flow's timeout) is refreshed. One encoding and
    /// one hash: this is the hot path of every event and every received flow. A flow
    /// that cannot be encoded (tuples of two families, which no kernel makes) is not
    /// stored ([`Upsert::Same`]). `key` is the flow's key.
    pub fn upsert(&mut self, key: &Keyed, flow: &Flow, mark: u64, counted: bool) -> Upsert {
        self.upsert_state(key, flow, mark, counted).0
    }

    /// [`FlowTable::upsert`], returning the flow's encoded state as well: the event path
    /// builds its message from it, the receive path its kernel write, without encoding
    /// the flow again.
    pub fn upsert_state(
        &mut self,
        key: &Keyed,
        flow: &Flow,
        mark: u64,
        counted: bool,
    ) -> (Upsert, &[u8]) {
        let outcome = self.upsert_inner(key, flow, mark, counted);
        (outcome, &self.scratch)
    }

    fn upsert_inner(&mut self, key: &Keyed, flow: &Flow, mark: u64, counted: bool) -> Upsert {
        debug_assert_eq!(key.key, flow.key());
        self.check(key);
        self.scratch.clear();
        if codec::put_flow_state(&mut self.scratch, flow).is_err() {
            self.scratch.clear();
            return Upsert::Same;
        }
        let hash = xxh3_64(&self.scratch);
        let hasher = &self.hasher;
        let slot = self
            .map
            .entry(key.hash, |e| e.key == key.key, |e| hasher.hash(&e.key));
        if let Slot::Occupied(mut o) = slot {
            let e = o.get_mut();
            e.mark = mark;
            e.timeout = flow.timeout;
            if e.hash == hash {
                if counted && !e.counted {
                    e.counted = true;
                    self.digest.add(e.bucket, e.hash);
                }
                return Upsert::Same;
            }
            if e.counted {
                self.digest.remove(e.bucket, e.hash);
            }
            if e.state.len() == self.scratch.len() {
                e.state.copy_from_slice(&self.scratch);
            } else {
                e.state = State::from_slice(&self.scratch);
            }
            e.hash = hash;
            e.counted = counted;
            if counted {
                self.digest.add(e.bucket, hash);
            }
            return Upsert::Changed;
        }
        let Slot::Vacant(v) = slot else {
            return Upsert::Same;
        };
        let bucket = bucket_of(&key.key);
        v.insert(Entry {
            key: key.key,
            state: State::from_slice(&self.scratch),
            hash,
            mark,
            timeout: flow.timeout,
            bucket,
            counted,
        });
        if counted {
            self.digest.add(bucket, hash);
        }
        Upsert::New
    }

    /// Insert or replace with the given mark; `counted` says whether the flow enters the
    /// digest. Returns whether it replaced a flow.
    pub fn insert(&mut self, flow: &Flow, mark: u64, counted: bool) -> bool {
        let key = self.hasher.keyed(flow.key());
        let had = self.remove(&key);
        self.upsert(&key, flow, mark, counted);
        had
    }

    /// Count a held-back flow in the digest (it is replicated now).
    pub fn count_in(&mut self, key: &Keyed) {
        if let Some(e) = self
            .map
            .find_mut(key.hash, |e| e.key == key.key && !e.counted)
        {
            e.counted = true;
            self.digest.add(e.bucket, e.hash);
        }
    }

    /// Whether a flow is counted in the digest.
    pub fn is_counted(&self, key: &Keyed) -> bool {
        self.find(key).is_some_and(|e| e.counted)
    }

    /// Remove by key; returns whether it was there.
    pub fn remove(&mut self, key: &Keyed) -> bool {
        self.check(key);
        let Ok(o) = self.map.find_entry(key.hash, |e| e.key == key.key) else {
            return false;
        };
        let (e, _) = o.remove();
        if e.counted {
            self.digest.remove(e.bucket, e.hash);
        }
        self.shrink();
        true
    }

    /// Give memory back when the table holds less than a quarter of its room (after
    /// mass deletions or a sweep), keeping room for twice its content: the table stays
    /// sized to what it holds, and the cost, a rehash of what is left, is amortised over
    /// the deletions that made it so.
    fn shrink(&mut self) {
        let (len, cap) = (self.map.len(), self.map.capacity());
        if cap > 4096 && len < cap / 4 {
            let hasher = &self.hasher;
            self.map.shrink_to(len * 2, |e| hasher.hash(&e.key));
        }
    }

    /// Remove every flow `stale` says is stale; returns their keys.
    fn remove_where(&mut self, stale: impl Fn(&Entry) -> bool) -> Vec<FlowKey> {
        let mut gone = Vec::new();
        let digest = &mut self.digest;
        self.map.retain(|e| {
            if !stale(e) {
                return true;
            }
            if e.counted {
                digest.remove(e.bucket, e.hash);
            }
            gone.push(e.key);
            false
        });
        self.shrink();
        gone
    }

    /// Remove every flow (optionally only in `bucket`) whose mark is below `mark`;
    /// returns their keys.
    pub fn sweep(&mut self, mark: u64, bucket: Option<u16>) -> Vec<FlowKey> {
        self.remove_where(|e| e.mark < mark && bucket.is_none_or(|b| e.bucket == b))
    }

    /// Like [`FlowTable::sweep`] for several buckets at once, each with its own mark, in
    /// one pass over the table (a repair of many buckets costs one scan, not one each).
    pub fn sweep_buckets(&mut self, marks: &[(u16, u64)]) -> Vec<FlowKey> {
        let mut by_bucket = [None; BUCKETS];
        for &(b, m) in marks {
            if let Some(slot) = by_bucket.get_mut(usize::from(b)) {
                *slot = Some(m);
            }
        }
        self.remove_where(|e| {
            by_bucket
                .get(usize::from(e.bucket))
                .copied()
                .flatten()
                .is_some_and(|m| e.mark < m)
        })
    }

    /// The flow updates of the counted flows of the given buckets, grouped by bucket,
    /// in one pass, from their stored states (nothing decoded).
    pub fn messages_of_buckets(&self, buckets: &[u16]) -> Vec<(u16, Vec<(Keyed, Encoded)>)> {
        let mut slot = [usize::MAX; BUCKETS];
        let mut out: Vec<(u16, Vec<(Keyed, Encoded)>)> = Vec::new();
        for &b in buckets {
            if let Some(s) = slot.get_mut(usize::from(b))
                && *s == usize::MAX
            {
                *s = out.len();
                out.push((b, Vec::new()));
            }
        }
        for e in self.map.iter().filter(|e| e.counted) {
            if let Some(&i) = slot.get(usize::from(e.bucket))
                && let Some((_, v)) = out.get_mut(i)
                && let Some(m) = e.message(false)
            {
                v.push((self.hasher.keyed(e.key), m));
            }
        }
        out
    }

    /// Every flow, the table consumed (each decoded as it is taken, the table's memory
    /// freed as a whole at the end).
    pub fn into_flows(self) -> impl Iterator<Item = Flow> {
        self.map.into_iter().filter_map(|e| e.flow())
    }

    /// Every flow, in compact form.
    pub fn stored_flows(&self) -> impl Iterator<Item = StoredFlow> + '_ {
        self.map.iter().map(Entry::stored)
    }

    /// The flows a timeout refresh of round `round` resets: those whose timeout is below
    /// `long` seconds (or unknown) every round, the others in turn, one in `every` by
    /// their content hash. In compact form.
    pub fn refresh_due(
        &self,
        round: u64,
        every: u64,
        long: u32,
    ) -> impl Iterator<Item = StoredFlow> + '_ {
        let every = every.max(1);
        self.map
            .iter()
            .filter(move |e| e.timeout.is_none_or(|t| t < long) || e.hash % every == round % every)
            .map(Entry::stored)
    }

    /// The flows `keep` accepts, in compact form; `keep` is given each flow's key hash
    /// (by this table's hasher) and content hash (of its state, the timeout aside).
    pub(crate) fn stored_flows_where<'a>(
        &'a self,
        mut keep: impl FnMut(u64, u64) -> bool + 'a,
    ) -> impl Iterator<Item = StoredFlow> + 'a {
        self.map
            .iter()
            .filter(move |e| keep(self.hasher.hash(&e.key), e.hash))
            .map(Entry::stored)
    }

    /// Every flow, decoded.
    pub fn flows(&self) -> impl Iterator<Item = Flow> + '_ {
        self.map.iter().filter_map(Entry::flow)
    }

    /// Keys of every counted flow (a snapshot for a paced bulk transfer).
    pub fn counted_keys(&self) -> Vec<Keyed> {
        self.map
            .iter()
            .filter(|e| e.counted)
            .map(|e| self.hasher.keyed(e.key))
            .collect()
    }

    /// Drop everything (and the memory it took).
    pub fn clear(&mut self) {
        self.map = HashTable::new();
        self.digest = Digest::default();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use ctnetlink::{Tuple, ipproto};

    use super::*;

    fn flow(i: u8, mark: u32) -> Flow {
        let t = Tuple::ports(
            ipproto::UDP,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)),
            1000,
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            53,
        );
        let mut f = Flow::new(t, t.inverse());
        f.mark = Some(mark);
        f.timeout = Some(u32::from(i));
        f
    }

    #[test]
    fn compact_forms_stay_compact() {
        // What the doc comments promise (and what the core benchmark measured with).
        assert_eq!(size_of::<State>(), 48);
        assert_eq!(size_of::<Encoded>(), 64);
        assert!(size_of::<crate::KernelOp>() <= 64);
        // A table entry is exactly two cache lines (see `prefetch`).
        assert_eq!(size_of::<Entry>(), 128);
        assert_eq!(align_of::<Entry>(), 64);
    }

    #[test]
    fn digest_follows_content_not_order_or_timeouts() {
        let mut a = FlowTable::default();
        let mut b = FlowTable::default();
        for i in 0..50 {
            a.insert(&flow(i, 1), 0, true);
        }
        for i in (0..50).rev() {
            let mut f = flow(i, 1);
            f.timeout = Some(999);
            b.insert(&f, 0, true);
        }
        assert_eq!(a.digest(), b.digest());
        b.insert(&flow(7, 2), 0, true);
        assert_eq!(
            a.digest().differing(&b.digest().hashes),
            vec![bucket_of(&flow(7, 2).key())]
        );
        b.insert(&flow(7, 1), 0, true);
        assert_eq!(a.digest(), b.digest());
        b.remove(&KeyHasher::default().keyed(flow(3, 1).key()));
        assert_eq!(b.digest().count, 49);
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn uncounted_flows_stay_out_of_the_digest_until_counted() {
        let mut t = FlowTable::default();
        t.insert(&flow(1, 1), 0, false);
        assert_eq!(t.digest(), &Digest::default());
        t.count_in(&KeyHasher::default().keyed(flow(1, 1).key()));
        assert_eq!(t.digest().count, 1);
        t.remove(&KeyHasher::default().keyed(flow(1, 1).key()));
        assert_eq!(t.digest(), &Digest::default());
    }

    #[test]
    fn sweep_removes_what_a_transfer_did_not_mention() {
        let mut t = FlowTable::default();
        for i in 0..10 {
            t.insert(&flow(i, 1), 1, true);
        }
        for i in 0..5 {
            t.insert(&flow(i, 1), 2, true);
        }
        let mut gone = t.sweep(2, None);
        gone.sort_by_key(|k| k.orig.src);
        assert_eq!(gone.len(), 5);
        assert_eq!(t.len(), 5);
        assert_eq!(t.digest().count, 5);
    }
}
