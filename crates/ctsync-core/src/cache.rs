//! The caches: this node's kernel table (internal) and what peers told us (external),
//! each with an incrementally maintained digest by bucket for anti-entropy.

use hashbrown::hash_table::Entry as Slot;

use ctnetlink::{Flow, FlowKey};
use ctsync_wire::{Message, codec};
use smallvec::SmallVec;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::key::{KeyHasher, Keyed};
use crate::message::Encoded;
use crate::shards::ShardedTable;

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

/// Ask the processor to load the cache line of `at` (a hint: nothing is read).
pub(crate) fn prefetch_line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and
        // changes nothing the program can observe. (SSE is part of x86_64.)
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
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

    /// The digest's count and bucket hashes in 128 bits: what a node keeps of the last
    /// digest it sent a peer, to tell whether the next one is the same (16 bytes, where
    /// the digest is 520; a node of many namespaces keeps one per router and peer).
    pub fn fingerprint(&self) -> u128 {
        let mut bytes = [0u8; 8 * (BUCKETS + 1)];
        for (chunk, v) in bytes
            .chunks_exact_mut(8)
            .zip(std::iter::once(&self.count).chain(&self.hashes))
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        xxh3_128(&bytes)
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

    /// The timeout it was last reported with, in seconds, if known.
    pub fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// The flow, decoded (`None` only for a state this process did not encode).
    pub fn flow(&self) -> Option<Flow> {
        let mut f = codec::read_flow(&mut codec::Reader::new(&self.state)).ok()?;
        f.timeout = self.timeout;
        Some(f)
    }
}

/// Entries in one chunk of a table's slab. The first chunk grows to it from the table's
/// initial room (a namespace's small table stays small); the others are allocated whole,
/// so a table of any size wastes less than one chunk, where a table that doubles holds
/// up to twice its content (a million flows sat in room for two). A whole chunk is 1.25
/// MiB: above the daemon's mmap threshold (1 MiB, see `give_back_large_blocks`), so each
/// is a mapping of its own, returned to the system when a compaction frees it (freed
/// from the middle of the heap, it would stay in the process).
const CHUNK: usize = 16384;

/// Entries up to which a slab's first chunk grows by a quarter (80 KiB).
const SMALL_CHUNK: usize = 1024;

/// [`Entry::flags`]: counted in the digest (the internal table holds back flows younger
/// than the sync delay: they are neither replicated nor counted).
const COUNTED: u8 = 1;
/// [`Entry::flags`]: `timeout` holds the timeout last reported.
const TIMED: u8 = 2;
/// [`Entry::flags`]: the slot is free, on the slab's free list.
const VACANT: u8 = 4;

/// One flow as a table holds it, decoded on demand: 80 bytes, aligned to 16 so that it
/// lies in at most two cache lines (the two [`FlowTable::prefetch`] fetches). The key is
/// not stored a second time: it is the state's first field, read back
/// ([`codec::read_key`]) when a lookup meets an entry of the same key hash.
#[derive(Debug, Clone)]
#[repr(align(16))]
struct Entry {
    /// [`codec::put_flow_state`] of the flow: everything replicated but the timeout.
    state: State,
    /// The key's hash, by the table's hasher.
    key_hash: u64,
    /// The content hash: `xxh3_64(state)`.
    hash: u64,
    /// The mark of the last transfer or dump that mentioned it (see [`FlowTable::sweep`]).
    mark: u64,
    /// The timeout last reported (when [`TIMED`]).
    timeout: u32,
    bucket: u16,
    /// [`COUNTED`], [`TIMED`], [`VACANT`].
    flags: u8,
}

impl Entry {
    fn vacant() -> Entry {
        Entry {
            state: State::new(),
            key_hash: 0,
            hash: 0,
            mark: 0,
            timeout: 0,
            bucket: 0,
            flags: VACANT,
        }
    }

    fn is_live(&self) -> bool {
        self.flags & VACANT == 0
    }

    fn counted(&self) -> bool {
        self.flags & COUNTED != 0
    }

    fn timeout(&self) -> Option<u32> {
        (self.flags & TIMED != 0).then_some(self.timeout)
    }

    fn set_timeout(&mut self, timeout: Option<u32>) {
        self.timeout = timeout.unwrap_or(0);
        self.flags = (self.flags & !TIMED) | if timeout.is_some() { TIMED } else { 0 };
    }

    /// Whether it is the flow of `key`: the hash first, then the key in the state.
    fn is(&self, key: &Keyed) -> bool {
        self.key_hash == key.hash && self.key().as_ref() == Some(&key.key)
    }

    fn key(&self) -> Option<FlowKey> {
        codec::read_key(&self.state).ok()
    }

    fn keyed(&self) -> Option<Keyed> {
        Some(Keyed {
            key: self.key()?,
            hash: self.key_hash,
        })
    }

    /// Its flow message (a flow new when `fresh`, else an update), built from the stored
    /// state: nothing decoded or encoded again.
    fn message(&self, fresh: bool) -> Option<Encoded> {
        state_message(&self.state, fresh, self.timeout())
    }

    fn flow(&self) -> Option<Flow> {
        let mut f = codec::read_flow(&mut codec::Reader::new(&self.state)).ok()?;
        f.timeout = self.timeout();
        Some(f)
    }

    fn stored(&self) -> StoredFlow {
        StoredFlow {
            state: self.state.clone(),
            timeout: self.timeout(),
        }
    }
}

/// A table's entries, in chunks, at positions that do not change while they live (a
/// freed slot is reused by a later flow): a walk in position order meets every flow that
/// lives through it exactly once ([`FlowTable::next_counted`]).
#[derive(Debug, Clone, Default)]
struct Slab {
    chunks: Vec<Vec<Entry>>,
    /// Vacant positions, reused last freed first.
    free: Vec<u32>,
}

impl Slab {
    /// Room for `n` entries in its first chunk; nothing allocated for none (a table that
    /// stays empty, as a backup's own in a router that serves nothing, costs nothing).
    fn with_capacity(n: usize) -> Slab {
        if n == 0 {
            return Slab::default();
        }
        Slab {
            chunks: vec![Vec::with_capacity(n.clamp(16, CHUNK))],
            free: Vec::new(),
        }
    }

    /// Positions in use or free.
    fn slots(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    fn get(&self, at: u32) -> &Entry {
        let at = at as usize;
        &self.chunks[at / CHUNK][at % CHUNK]
    }

    fn get_mut(&mut self, at: u32) -> &mut Entry {
        let at = at as usize;
        &mut self.chunks[at / CHUNK][at % CHUNK]
    }

    /// Store `e`; returns its position.
    fn put(&mut self, e: Entry) -> u32 {
        if let Some(at) = self.free.pop() {
            *self.get_mut(at) = e;
            return at;
        }
        let at = self.slots() as u32;
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                if last.len() == last.capacity() {
                    // Never past a chunk; by a quarter while small, so that a router's
                    // hundred flows keep little room they do not use, then doubling, so
                    // that a large table's first chunk leaves few freed blocks behind.
                    let step = if last.len() < SMALL_CHUNK {
                        (last.len() / 4).max(16)
                    } else {
                        last.len()
                    };
                    last.reserve_exact(step.min(CHUNK - last.len()));
                }
                last.push(e);
            }
            _ => {
                let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 16 } else { CHUNK });
                chunk.push(e);
                self.chunks.push(chunk);
            }
        }
        at
    }

    /// Take the entry at `at` out; its slot is free.
    fn take(&mut self, at: u32) -> Entry {
        let e = std::mem::replace(self.get_mut(at), Entry::vacant());
        self.free.push(at);
        e
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten().filter(|e| e.is_live())
    }

    /// The live entries' key hashes and positions, in position order (a sequential read).
    fn positions(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| e.is_live())
            .map(|(at, e)| (e.key_hash, at as u32))
    }
}

/// Where a walk over a table's counted flows stands (see [`FlowTable::next_counted`]).
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    at: usize,
    layout: u64,
}

/// A flow table with a digest, keyed by [`FlowKey`]. Flows are kept in their compact
/// wire form, in a [`Slab`] of chunks, found through an index of positions by key hash
/// (5 bytes a slot, in a `ShardedTable` that grows by an eighth): about 86 bytes a flow
/// for an IPv4 flow at any size. The methods that return flows decode them.
#[derive(Debug, Clone, Default)]
pub struct FlowTable {
    index: ShardedTable<u32>,
    slab: Slab,
    hasher: KeyHasher,
    digest: Digest,
    scratch: Vec<u8>,
    /// Counts the times entries moved (a compaction, a clear): a walk begun before
    /// starts again.
    layout: u64,
}

impl PartialEq for FlowTable {
    /// The same flows with the same states and timeouts.
    fn eq(&self, other: &FlowTable) -> bool {
        self.digest == other.digest
            && self.len() == other.len()
            && self.slab.iter().all(|e| {
                e.key().is_some_and(|k| {
                    other
                        .find(&other.hasher.keyed(k))
                        .is_some_and(|o| o.state == e.state && o.timeout() == e.timeout())
                })
            })
    }
}

impl Eq for FlowTable {}

impl FlowTable {
    /// An empty table with room for `n` flows, hashing keys with `hasher` (the keys
    /// passed in must be hashed by the same one).
    pub fn new(hasher: &KeyHasher, n: usize) -> FlowTable {
        FlowTable {
            index: ShardedTable::with_capacity(n),
            slab: Slab::with_capacity(n),
            hasher: hasher.clone(),
            digest: Digest::default(),
            scratch: Vec::new(),
            layout: 0,
        }
    }

    /// `key` hashed by this table's hasher (the node's: see [`KeyHasher`]).
    pub fn keyed(&self, key: FlowKey) -> Keyed {
        self.hasher.keyed(key)
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        // Every live slab entry is in the index: a count, not a sum over its shards.
        let n = self.slab.slots() - self.slab.free.len();
        debug_assert_eq!(n, self.index.len(), "the slab and the index disagree");
        n
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of the counted flows.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The position of the flow of `key`.
    fn position(&self, key: &Keyed) -> Option<u32> {
        self.check(key);
        let slab = &self.slab;
        self.index
            .find(key.hash, |&at| slab.get(at).is(key))
            .copied()
    }

    fn find(&self, key: &Keyed) -> Option<&Entry> {
        self.position(key).map(|at| self.slab.get(at))
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

    /// Ask the processor to load what looking up `keys` will read: first the index
    /// slots whose tags match, then the entries they point at. A batch of lookups
    /// prefetched first overlaps its cache misses instead of waiting out each in turn
    /// (a table of 500,000 flows is far larger than the cache). Only hints: nothing is
    /// compared, and a wrong guess costs one wasted load.
    pub fn prefetch<'a>(&self, keys: impl Iterator<Item = &'a Keyed> + Clone) {
        for k in keys.clone() {
            if let Some(slot) = self.index.find(k.hash, |_| true) {
                prefetch_line(std::ptr::from_ref(slot).cast());
            }
        }
        for k in keys {
            if let Some(&at) = self.index.find(k.hash, |_| true)
                && (at as usize) < self.slab.slots()
            {
                // An entry is 80 bytes at a multiple of 16: two lines at most.
                let e = std::ptr::from_ref(self.slab.get(at)).cast::<u8>();
                prefetch_line(e);
                prefetch_line(e.wrapping_add(size_of::<Entry>() - 1));
            }
        }
    }

    /// A flow by key (decoded).
    pub fn get(&self, key: &Keyed) -> Option<Flow> {
        self.find(key).and_then(Entry::flow)
    }

    /// The flow held for `key` when its reply tuple is not `reply`: another NAT for the
    /// same original tuple (the flow closed and opened again). A flow with `reply`
    /// replaces it only if it is deleted first: a kernel update cannot change an
    /// entry's tuples.
    pub fn other_reply(&self, key: &Keyed, reply: &ctnetlink::Tuple) -> Option<Flow> {
        if self.is_empty() {
            return None;
        }
        self.get(key).filter(|f| f.reply != *reply)
    }

    /// A flow by key in compact form, with its content hash (of its state, the timeout
    /// aside).
    pub(crate) fn stored(&self, key: &Keyed) -> Option<(StoredFlow, u64)> {
        self.find(key).map(|e| (e.stored(), e.hash))
    }

    /// The flow message of a counted flow (a flow new when `fresh`, else an update),
    /// from its stored state: what a transfer sends, with nothing decoded.
    pub fn message(&self, key: &Keyed, fresh: bool) -> Option<Encoded> {
        self.find(key).filter(|e| e.counted())?.message(fresh)
    }

    /// Whether a flow is held.
    pub fn contains(&self, key: &Keyed) -> bool {
        self.position(key).is_some()
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
        let slab = &self.slab;
        if let Some(n) = self.index.relayout_due(key.hash) {
            // Read the slab in order, not each entry where the index points.
            self.index
                .refill(n, slab.positions(), |&at| slab.get(at).key_hash);
        }
        let slot = self.index.entry(
            key.hash,
            |&at| slab.get(at).is(key),
            |&at| slab.get(at).key_hash,
        );
        let v = match slot {
            Slot::Occupied(o) => {
                let e = self.slab.get_mut(*o.get());
                e.mark = mark;
                e.set_timeout(flow.timeout);
                if e.hash == hash {
                    if counted && !e.counted() {
                        e.flags |= COUNTED;
                        self.digest.add(e.bucket, e.hash);
                    }
                    return Upsert::Same;
                }
                if e.counted() {
                    self.digest.remove(e.bucket, e.hash);
                }
                if e.state.len() == self.scratch.len() {
                    e.state.copy_from_slice(&self.scratch);
                } else {
                    e.state = State::from_slice(&self.scratch);
                }
                e.hash = hash;
                e.flags = (e.flags & !COUNTED) | if counted { COUNTED } else { 0 };
                if counted {
                    self.digest.add(e.bucket, hash);
                }
                return Upsert::Changed;
            }
            Slot::Vacant(v) => v,
        };
        let bucket = bucket_of(&key.key);
        let mut e = Entry {
            state: State::from_slice(&self.scratch),
            key_hash: key.hash,
            hash,
            mark,
            timeout: 0,
            bucket,
            flags: if counted { COUNTED } else { 0 },
        };
        e.set_timeout(flow.timeout);
        v.insert(self.slab.put(e));
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
        if let Some(at) = self.position(key) {
            let e = self.slab.get_mut(at);
            if !e.counted() {
                e.flags |= COUNTED;
                self.digest.add(e.bucket, e.hash);
            }
        }
    }

    /// Whether a flow is counted in the digest.
    pub fn is_counted(&self, key: &Keyed) -> bool {
        self.find(key).is_some_and(Entry::counted)
    }

    /// Remove by key; returns whether it was there.
    pub fn remove(&mut self, key: &Keyed) -> bool {
        self.check(key);
        let slab = &self.slab;
        let Some(o) = self.index.find_entry(key.hash, |&at| slab.get(at).is(key)) else {
            return false;
        };
        let (at, _) = o.remove();
        let e = self.slab.take(at);
        if e.counted() {
            self.digest.remove(e.bucket, e.hash);
        }
        self.shrink();
        true
    }

    /// Give memory back when the table holds less than a quarter of its room (after
    /// mass deletions or a sweep), keeping room for twice its content: the table stays
    /// sized to what it holds, and the cost, a move of what is left, is amortised over
    /// the deletions that made it so.
    fn shrink(&mut self) {
        let len = self.len();
        if self.slab.slots() > CHUNK && len < self.slab.slots() / 4 {
            self.compact();
        }
        let cap = self.index.capacity();
        if len == 0 && cap > 0 {
            self.index = ShardedTable::default();
        } else if cap > 4096 && len < cap / 4 {
            let slab = &self.slab;
            self.index
                .refill(len * 2, slab.positions(), |&at| slab.get(at).key_hash);
        }
    }

    /// Move every flow to the front of a new slab, in their order, the old chunks freed
    /// as they are emptied, and index them again. Positions change: walks begun before
    /// start again (`layout`).
    fn compact(&mut self) {
        let n = self.len();
        let old = std::mem::take(&mut self.slab);
        let mut slab = Slab::with_capacity(n);
        for e in old.chunks.into_iter().flatten().filter(Entry::is_live) {
            slab.put(e);
        }
        self.index
            .refill(n + n / 8, slab.positions(), |&at| slab.get(at).key_hash);
        self.slab = slab;
        self.layout += 1;
    }

    /// Remove every flow `stale` says is stale; returns their keys.
    fn remove_where(&mut self, stale: impl Fn(&Entry) -> bool) -> Vec<FlowKey> {
        let mut gone = Vec::new();
        for at in 0..self.slab.slots() as u32 {
            let e = self.slab.get(at);
            if !e.is_live() || !stale(e) {
                continue;
            }
            if let Some(o) = self.index.find_entry(e.key_hash, |&i| i == at) {
                o.remove();
            }
            let e = self.slab.take(at);
            if e.counted() {
                self.digest.remove(e.bucket, e.hash);
            }
            gone.extend(e.key());
        }
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
    /// in one pass, from their stored states (nothing decoded but their keys).
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
        for e in self.slab.iter().filter(|e| e.counted()) {
            if let Some(&i) = slot.get(usize::from(e.bucket))
                && let Some((_, v)) = out.get_mut(i)
                && let Some(k) = e.keyed()
                && let Some(m) = e.message(false)
            {
                v.push((k, m));
            }
        }
        out
    }

    /// A walk over the counted flows, from the first position ([`FlowTable::next_counted`]).
    pub fn walk(&self) -> Walk {
        Walk {
            at: 0,
            layout: self.layout,
        }
    }

    /// The next counted flow of a walk, with its update message (its state now): what
    /// a paced bulk transfer sends, with no snapshot of the table. Flows keep their
    /// positions while they live, so one that lives through the walk is met exactly
    /// once, whatever else is added or removed; one added behind the walk is not met (a
    /// transfer sends it live). Only a compaction after mass deletions moves flows: the
    /// walk then starts again (flows met twice, none missed).
    pub fn next_counted(&self, walk: &mut Walk) -> Option<(Keyed, Encoded)> {
        if walk.layout != self.layout {
            *walk = self.walk();
        }
        while walk.at < self.slab.slots() {
            let e = self.slab.get(walk.at as u32);
            walk.at += 1;
            if e.is_live()
                && e.counted()
                && let Some(k) = e.keyed()
                && let Some(m) = e.message(false)
            {
                return Some((k, m));
            }
        }
        None
    }

    /// Every flow, the table consumed (each decoded as it is taken, the table's memory
    /// freed chunk by chunk).
    pub fn into_flows(self) -> impl Iterator<Item = Flow> {
        self.slab
            .chunks
            .into_iter()
            .flatten()
            .filter(Entry::is_live)
            .filter_map(|e| e.flow())
    }

    /// Every flow, in compact form.
    pub fn stored_flows(&self) -> impl Iterator<Item = StoredFlow> + '_ {
        self.slab.iter().map(Entry::stored)
    }

    /// The flows `due` accepts, in compact form; `due` is given each flow's key hash
    /// (by this table's hasher), content hash (of its state, the timeout aside) and
    /// timeout in seconds, if known.
    pub(crate) fn stored_flows_due<'a>(
        &'a self,
        mut due: impl FnMut(u64, u64, Option<u32>) -> bool + 'a,
    ) -> impl Iterator<Item = StoredFlow> + 'a {
        self.slab
            .iter()
            .filter(move |e| due(e.key_hash, e.hash, e.timeout()))
            .map(Entry::stored)
    }

    /// The flows `keep` accepts, in compact form; `keep` is given each flow's key hash
    /// (by this table's hasher) and content hash (of its state, the timeout aside).
    pub(crate) fn stored_flows_where<'a>(
        &'a self,
        mut keep: impl FnMut(u64, u64) -> bool + 'a,
    ) -> impl Iterator<Item = StoredFlow> + 'a {
        self.slab
            .iter()
            .filter(move |e| keep(e.key_hash, e.hash))
            .map(Entry::stored)
    }

    /// Every flow, decoded.
    pub fn flows(&self) -> impl Iterator<Item = Flow> + '_ {
        self.slab.iter().filter_map(Entry::flow)
    }

    /// Drop everything (and the memory it took).
    pub fn clear(&mut self) {
        self.index = ShardedTable::default();
        self.slab = Slab::default();
        self.digest = Digest::default();
        self.layout += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use ctnetlink::{Tuple, ipproto};

    use super::*;

    #[test]
    fn a_fingerprint_tells_every_change_of_a_digest() {
        let mut d = Digest::default();
        let empty = d.fingerprint();
        assert_eq!(empty, Digest::default().fingerprint());
        d.add(5, 0xdead_beef);
        let one = d.fingerprint();
        assert_ne!(one, empty);
        // The same hash in another bucket, and the count alone, are other digests.
        let mut other = Digest::default();
        other.add(6, 0xdead_beef);
        assert_ne!(other.fingerprint(), one);
        let mut counted = d.clone();
        counted.count += 1;
        assert_ne!(counted.fingerprint(), one);
        d.remove(5, 0xdead_beef);
        assert_eq!(d.fingerprint(), empty);
    }

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
        // A table entry lies in two cache lines at most (see `prefetch`).
        assert_eq!(size_of::<Entry>(), 80);
        assert_eq!(align_of::<Entry>(), 16);
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

    fn many(i: u32) -> Flow {
        let [_, _, a, b] = i.to_be_bytes();
        let t = Tuple::ports(
            ipproto::TCP,
            IpAddr::V4(Ipv4Addr::new(198, 18, a, b)),
            (i >> 16) as u16 + 1024,
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            443,
        );
        let mut f = Flow::new(t, t.inverse());
        f.timeout = Some(120);
        f
    }

    #[test]
    fn a_walk_meets_each_flow_that_lives_through_it_exactly_once() {
        let h = KeyHasher::default();
        let mut t = FlowTable::new(&h, 16);
        for i in 0..10_000 {
            t.insert(&many(i), 0, true);
        }
        let mut met = std::collections::HashMap::<FlowKey, u32>::new();
        let mut walk = t.walk();
        let mut removed = std::collections::HashSet::new();
        let mut step = 0u32;
        while let Some((k, _)) = t.next_counted(&mut walk) {
            *met.entry(k.key).or_default() += 1;
            step += 1;
            // Under way: flows go (met or not yet), and new ones come into their slots
            // and at the end.
            if step.is_multiple_of(7) {
                let gone = (step * 13) % 10_000;
                if t.remove(&h.keyed(many(gone).key())) {
                    removed.insert(many(gone).key());
                }
                t.insert(&many(20_000 + step), 0, true);
            }
            assert!(step < 100_000, "the walk does not end");
        }
        for i in 0..10_000 {
            let k = many(i).key();
            if !removed.contains(&k) {
                assert_eq!(met.get(&k), Some(&1), "flow {i}");
            }
        }
        assert!(met.values().all(|&n| n == 1), "a flow met twice");
    }

    #[test]
    fn a_table_holds_its_flows_in_little_more_than_their_entries_and_gives_room_back() {
        let h = KeyHasher::default();
        let mut t = FlowTable::new(&h, 16);
        for i in 0..100_000 {
            t.insert(&many(i), 0, true);
        }
        // Within one chunk of the content, however the size falls.
        assert!(t.slab.slots() < 100_000 + CHUNK);
        // The index, laid out anew as it grew, finds every one.
        assert!((0..100_000).all(|i| t.contains(&h.keyed(many(i).key()))));
        assert!(
            t.index.slots() * 4 < 100_000 * 5,
            "{} slots",
            t.index.slots()
        );
        let before = t.digest().clone();
        let mut walk = t.walk();
        for _ in 0..50_000 {
            assert!(t.next_counted(&mut walk).is_some());
        }
        for i in 0..90_000 {
            assert!(t.remove(&h.keyed(many(i).key())));
        }
        assert_eq!(t.len(), 10_000);
        assert!(t.slab.slots() < 40_000, "{} slots", t.slab.slots());
        assert!(t.index.capacity() < 65_536, "{}", t.index.capacity());
        for i in 90_000..100_000 {
            assert!(t.contains(&h.keyed(many(i).key())), "flow {i} lost");
        }
        // The flows moved: the walk starts again and meets every one.
        let mut n = 0;
        while t.next_counted(&mut walk).is_some() {
            n += 1;
        }
        assert_eq!(n, 10_000);
        for i in 0..90_000 {
            t.insert(&many(i), 0, true);
        }
        assert_eq!(t.digest(), &before);
    }
}
