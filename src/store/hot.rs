//! The hot tier: records of recent hits kept in memory, already checked, so that a hit on one
//! skips the storage engine and the checksum (see `StoreBuilder::hot_tier`).
//!
//! Sharded by id, each shard under its own lock and bounded by bytes; eviction is CLOCK (second
//! chance): a hit marks its record, and the sweep spares a marked record once.
//!
//! Consistency with commits follows the snapshots' generation (see `snapshot.rs`): a record is
//! admitted only under its shard's lock and only if no commit has bumped the generation since
//! the snapshot it was read from was taken; every commit bumps the generation and then removes,
//! under the same locks, the ids it saved or removed; operations that change the file outside a
//! write transaction (verify, repair, compaction, a reopen) bump it and clear the tier. So a
//! record can be served from the tier only while it is the one committed under its id. A store
//! shared between processes, or with a `max_age` limit, does not use the tier.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

/// Bytes counted per record on top of its length: its map slot, queue slot and `Arc` header.
const OVERHEAD: usize = 96;
const SHARDS: usize = 16;

/// Ids are hashes already: their first 8 bytes are a good hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
    fn write_usize(&mut self, _len: usize) {}
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<[u8; 16], V, BuildHasherDefault<IdHasher>>;

struct Slot {
    record: Arc<[u8]>,
    /// Hit since the sweep last passed it.
    referenced: AtomicBool,
}

#[derive(Default)]
struct Shard {
    slots: IdMap<Slot>,
    /// Ids in admission order, for the sweep; may name ids removed since (skipped).
    queue: VecDeque<[u8; 16]>,
    bytes: usize,
}

pub(crate) struct HotTier {
    shards: Box<[RwLock<Shard>]>,
    /// Bytes per shard.
    budget: usize,
}

fn shard_of(id: &[u8; 16]) -> usize {
    // Other bits than the map's hash.
    usize::from(id[15]) % SHARDS
}

impl HotTier {
    /// A tier holding up to about `bytes` of records.
    pub(crate) fn new(bytes: usize) -> HotTier {
        HotTier {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            budget: bytes / SHARDS,
        }
    }

    /// The record under `id`, if the tier holds it.
    #[inline]
    pub(crate) fn get(&self, id: &[u8; 16]) -> Option<Arc<[u8]>> {
        let shard = self.shards[shard_of(id)].read();
        let slot = shard.slots.get(id)?;
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(&slot.record))
    }

    /// Keeps `record` (already checked) under `id`, if it was read at `read_at`, the generation
    /// `generation` still holds (no commit since), and it is small enough for the tier.
    /// Whether a record of `len` bytes for `id` would be admitted (it fits, and is not there
    /// already): asked before the record is checked for admission, which costs a pass over it.
    pub(crate) fn wants(&self, id: &[u8; 16], len: usize) -> bool {
        len + OVERHEAD <= self.budget / 8
            && !self.shards[shard_of(id)].read().slots.contains_key(id)
    }

    pub(crate) fn admit(&self, id: &[u8; 16], record: &[u8], read_at: u64, generation: &AtomicU64) {
        let need = record.len() + OVERHEAD;
        // A record may take an eighth of its shard at most: the tier is for many small ones.
        if need > self.budget / 8 {
            return;
        }
        let mut shard = self.shards[shard_of(id)].write();
        if generation.load(Ordering::Acquire) != read_at || shard.slots.contains_key(id) {
            return;
        }
        shard.make_room(need, self.budget);
        shard.slots.insert(
            *id,
            Slot {
                record: Arc::from(record),
                referenced: AtomicBool::new(false),
            },
        );
        shard.queue.push_back(*id);
        shard.bytes += need;
    }

    /// Forgets `id` (its record was replaced or removed).
    pub(crate) fn remove(&self, id: &[u8; 16]) {
        let mut shard = self.shards[shard_of(id)].write();
        if let Some(slot) = shard.slots.remove(id) {
            shard.bytes -= slot.record.len() + OVERHEAD;
        }
        // Ids left in the queue are skipped by the sweep; drop them before they pile up.
        if shard.queue.len() > 2 * shard.slots.len() + 64 {
            let Shard { slots, queue, .. } = &mut *shard;
            queue.retain(|id| slots.contains_key(id));
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.write() = Shard::default();
        }
    }

    /// Bytes held, overhead included.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.read().bytes).sum()
    }

    /// How many records the tier holds.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().slots.len()).sum()
    }
}

impl Shard {
    /// Evicts until `need` more bytes fit in `budget`: CLOCK, sparing a hit record once.
    fn make_room(&mut self, need: usize, budget: usize) {
        // Each queued id is looked at twice at most: once to clear its mark, once to evict it.
        let mut steps = 2 * self.queue.len();
        while self.bytes + need > budget && steps > 0 {
            steps -= 1;
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            if slot.referenced.swap(false, Ordering::Relaxed) {
                self.queue.push_back(id);
                continue;
            }
            if let Some(slot) = self.slots.remove(&id) {
                self.bytes -= slot.record.len() + OVERHEAD;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id[15] = (n % 3) as u8;
        id
    }

    #[test]
    fn stays_within_its_bytes_and_keeps_what_is_hit() {
        let tier = HotTier::new(16 * 64 * 1024);
        let generation = AtomicU64::new(5);
        let record = vec![1u8; 1000];
        // A record hit after every admission: CLOCK keeps it.
        tier.admit(&id(0), &record, 5, &generation);
        for n in 1..2000 {
            tier.admit(&id(n), &record, 5, &generation);
            assert!(tier.get(&id(0)).is_some(), "evicted at {n}");
            assert!(tier.bytes() <= 16 * 64 * 1024);
        }
        assert!(
            tier.get(&id(1)).is_none(),
            "the oldest unhit record went first"
        );
        assert!(tier.get(&id(1999)).is_some());
    }

    #[test]
    fn admits_nothing_read_before_a_commit() {
        let tier = HotTier::new(1 << 20);
        let generation = AtomicU64::new(7);
        tier.admit(&id(1), b"old", 6, &generation);
        assert!(tier.get(&id(1)).is_none());
        tier.admit(&id(1), b"new", 7, &generation);
        assert_eq!(&*tier.get(&id(1)).unwrap(), b"new");
        tier.remove(&id(1));
        assert!(tier.get(&id(1)).is_none());
        assert_eq!(tier.bytes(), 0);
        // Too large for the tier.
        tier.admit(&id(2), &vec![0; 1 << 20], 7, &generation);
        assert!(tier.get(&id(2)).is_none());
    }
}
