//! Caps hold at every commit, and the survivors are the ones each policy says, checked against a
//! model that applies the documented rules.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use ckpt::stats::EvictionCause;
use ckpt::store::{EvictMode, ManualClock};
use ckpt::{
    AutoIdentifier, CheckpointId, DecoratorCheckpoint, Durability, EvictionPolicy, Function,
    Limits, OnError, Store,
};
use common::{Rng, TempDir, record_size_of_bytes};

#[derive(Debug, Clone, Copy)]
struct Meta {
    size: u64,
    created: u64,
    last: u64,
    hits: u64,
}

/// The documented rules: accesses apply before the write's own changes; a write that leaves the
/// store over a cap evicts in policy order (ties by id), this write's saves last, down to
/// floor(cap × low water).
struct Model {
    entries: BTreeMap<[u8; 16], Meta>,
    pending: Vec<([u8; 16], u64)>,
    policy: &'static str,
    max_bytes: Option<u64>,
    max_entries: Option<u64>,
    low: f64,
    evicted: u64,
}

impl Model {
    fn new(limits: &Limits) -> Model {
        Model {
            entries: BTreeMap::new(),
            pending: Vec::new(),
            policy: limits.eviction_policy().name(),
            max_bytes: limits.max_bytes_value(),
            max_entries: limits.max_entries_value(),
            low: limits.low_water_value(),
            evicted: 0,
        }
    }

    fn hit(&mut self, id: [u8; 16], now: u64) -> bool {
        if self.entries.contains_key(&id) {
            self.pending.push((id, now));
            true
        } else {
            false
        }
    }

    fn save(&mut self, id: [u8; 16], size: u64, now: u64) {
        for (id, t) in self.pending.drain(..) {
            if let Some(m) = self.entries.get_mut(&id) {
                m.hits += 1;
                m.last = m.last.max(t);
            }
        }
        self.entries.insert(
            id,
            Meta {
                size,
                created: now,
                last: now,
                hits: 0,
            },
        );
        self.enforce(id);
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.entries.len() as u64,
            self.entries.values().map(|m| m.size).sum(),
        )
    }

    fn enforce(&mut self, saved_now: [u8; 16]) {
        let over = |cap: Option<u64>, v: u64| cap.is_some_and(|c| v > c);
        let (e, b) = self.totals();
        if !over(self.max_entries, e) && !over(self.max_bytes, b) {
            return;
        }
        let target = |cap: Option<u64>| cap.map(|c| (c as f64 * self.low).floor() as u64);
        let (te, tb) = (target(self.max_entries), target(self.max_bytes));
        // (id, the policy's sort key).
        type Keyed = ([u8; 16], (u64, u64, [u8; 16]));
        let mut order: Vec<Keyed> = self
            .entries
            .iter()
            .map(|(id, m)| {
                let key = match self.policy {
                    "lru" => (m.last, 0, *id),
                    "lfu" => (m.hits, m.last, *id),
                    _ => (m.created, 0, *id),
                };
                (*id, key)
            })
            .collect();
        order.sort_by_key(|(id, key)| (*id == saved_now, *key));
        for (id, _) in order {
            let (e, b) = self.totals();
            if !over(te, e) && !over(tb, b) {
                break;
            }
            self.entries.remove(&id);
            self.evicted += 1;
        }
    }
}

struct Harness {
    _dir: TempDir,
    clock: ManualClock,
    store: Store,
    deco: DecoratorCheckpoint<AutoIdentifier, Store>,
    model: Model,
    sizes: BTreeMap<u64, usize>,
    limits: Limits,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let dir = TempDir::new("evict");
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let store = Store::builder()
            .limits(limits)
            .clock(clock.clone())
            .durability(Durability::Relaxed {
                within: Duration::from_secs(5),
            })
            .open(dir.store_path())
            .unwrap();
        let deco = DecoratorCheckpoint::new(
            Function::new("eviction", "value"),
            AutoIdentifier,
            store.clone(),
        )
        .with_on_error(OnError::Raise);
        Harness {
            _dir: dir,
            clock,
            model: Model::new(&limits),
            store,
            deco,
            sizes: BTreeMap::new(),
            limits,
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms_for_test()
    }

    /// Calls the function for `key`: a hit if stored, else computed and saved.
    fn call(&mut self, key: u64, size: usize) {
        self.clock.advance(Duration::from_millis(1));
        let now = self.now();
        let id = *self.deco.identify(&key).unwrap().as_bytes();
        let size = *self.sizes.entry(key).or_insert(size);
        let before = self.deco.stats().hits;
        let value = self.deco.call(key, |k| vec![k as u8; size]).unwrap();
        assert_eq!(value.len(), size);
        let hit = self.deco.stats().hits > before;
        let model_hit = self.model.hit(id, now);
        assert_eq!(
            hit, model_hit,
            "hit/miss disagrees with the model for key {key}"
        );
        if !hit {
            self.model.save(id, record_size_of_bytes(size), now);
        }
        self.check();
    }

    fn check(&self) {
        let stats = self.store.stats().unwrap();
        if let Some(cap) = self.limits.max_bytes_value() {
            assert!(
                stats.stored_bytes <= cap,
                "stored {} > cap {cap}",
                stats.stored_bytes
            );
        }
        if let Some(cap) = self.limits.max_entries_value() {
            assert!(
                stats.entries <= cap,
                "entries {} > cap {cap}",
                stats.entries
            );
        }
        let entries = self.store.entries().unwrap();
        let stored: BTreeSet<[u8; 16]> = entries.iter().map(|e| *e.id.as_bytes()).collect();
        let modelled: BTreeSet<[u8; 16]> = self.model.entries.keys().copied().collect();
        assert_eq!(
            stored, modelled,
            "survivors differ from the {} model",
            self.model.policy
        );
        let sum: u64 = entries.iter().map(|e| e.size).sum();
        assert_eq!(
            sum, stats.stored_bytes,
            "entry sizes disagree with the totals"
        );
        assert_eq!(stats.entries, entries.len() as u64);
    }
}

/// `ManualClock` reads as a `SystemTime`; the store keeps milliseconds.
trait MsForTest {
    fn now_ms_for_test(&self) -> u64;
}

impl MsForTest for ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        use ckpt::store::Clock;
        self.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }
}

/// Inserts about ten times the byte cap of mixed-size values, with hits mixed in.
fn run_against_model(limits: Limits, seed: u64) -> Harness {
    let mut h = Harness::new(limits);
    let mut rng = Rng::new(seed);
    let cap = limits.max_bytes_value().unwrap_or(32 * 1024);
    let mut inserted = 0u64;
    let mut next_key = 0u64;
    while inserted < 10 * cap {
        if next_key > 0 && rng.below(3) == 0 {
            // Revisit a recent key: a hit if it survived, a recompute if not.
            let back = rng.below(next_key.min(40)) + 1;
            h.call(next_key - back, 0);
        } else {
            let size = 100 + rng.below(1900) as usize;
            h.call(next_key, size);
            inserted += record_size_of_bytes(size);
            next_key += 1;
        }
    }
    assert!(h.model.evicted > 0, "the test must exercise eviction");
    h
}

#[test]
fn lru_byte_cap_holds_and_matches_model() {
    let limits = Limits::new()
        .max_bytes(32 * 1024)
        .policy(EvictionPolicy::lru());
    let h = run_against_model(limits, 1);
    let stats = h.store.stats().unwrap();
    assert_eq!(stats.evictions.size, h.model.evicted);
    assert_eq!(stats.evictions.count, 0);
}

#[test]
fn lfu_byte_cap_holds_and_matches_model() {
    let limits = Limits::new()
        .max_bytes(32 * 1024)
        .policy(EvictionPolicy::lfu());
    run_against_model(limits, 2);
}

#[test]
fn fifo_byte_cap_holds_and_matches_model() {
    let limits = Limits::new()
        .max_bytes(32 * 1024)
        .policy(EvictionPolicy::fifo());
    run_against_model(limits, 3);
}

#[test]
fn entry_cap_and_both_caps_match_model() {
    for policy in [
        EvictionPolicy::lru(),
        EvictionPolicy::lfu(),
        EvictionPolicy::fifo(),
    ] {
        let limits = Limits::new().max_entries(20).policy(policy);
        let h = run_against_model(limits, 4);
        let stats = h.store.stats().unwrap();
        assert_eq!(stats.evictions.count, h.model.evicted);
        let both = Limits::new()
            .max_entries(25)
            .max_bytes(24 * 1024)
            .low_water(0.75)
            .policy(policy);
        run_against_model(both, 5);
    }
}

#[test]
fn cap_holds_under_concurrent_group_commits() {
    let dir = TempDir::new("evict-threads");
    let cap = 64 * 1024;
    let store = Store::builder()
        .limits(Limits::new().max_bytes(cap))
        .open(dir.store_path())
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = store.clone();
            s.spawn(move || {
                let deco = DecoratorCheckpoint::new(
                    Function::new("eviction", "threads"),
                    AutoIdentifier,
                    store.clone(),
                )
                .with_on_error(OnError::Raise);
                let mut rng = Rng::new(t + 10);
                for i in 0..150u64 {
                    let size = 200 + rng.below(3000) as usize;
                    deco.call((t, i), |_| vec![7u8; size]).unwrap();
                    // Every commit this thread can observe respects the cap.
                    let stats = store.stats().unwrap();
                    assert!(stats.stored_bytes <= cap, "{} > {cap}", stats.stored_bytes);
                }
            });
        }
    });
    let stats = store.stats().unwrap();
    assert!(stats.evictions.size > 0);
    let sum: u64 = store.entries().unwrap().iter().map(|e| e.size).sum();
    assert_eq!(sum, stats.stored_bytes);
}

#[test]
fn a_value_larger_than_the_cap_is_refused_not_stored() {
    let dir = TempDir::new("evict-too-large");
    let store = Store::builder()
        .limits(Limits::new().max_bytes(1000))
        .open(dir.store_path())
        .unwrap();
    let deco = DecoratorCheckpoint::new(Function::new("e", "big"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let err = deco.call(1u8, |_| vec![0u8; 5000]).unwrap_err();
    assert_eq!(err.kind(), ckpt::ErrorKind::TooLarge);
    assert_eq!(store.stats().unwrap().entries, 0);
    // Under the default policy the call still returns its value.
    let warn = DecoratorCheckpoint::new(Function::new("e", "big"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Ignore);
    assert_eq!(warn.call(1u8, |_| vec![0u8; 5000]).unwrap().len(), 5000);
}

#[test]
fn set_limits_on_an_open_store_evicts_at_once_and_dry_run_changes_nothing() {
    let dir = TempDir::new("evict-set");
    // One millisecond between saves, so that "newest" is well defined.
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = Store::builder()
        .clock(clock.clone())
        .open(dir.store_path())
        .unwrap();
    let deco = DecoratorCheckpoint::new(Function::new("e", "set"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let mut ids = Vec::new();
    for i in 0..50u64 {
        clock.advance(Duration::from_millis(1));
        deco.call(i, |_| vec![1u8; 1000]).unwrap();
        ids.push(deco.identify(&i).unwrap());
    }
    assert_eq!(store.stats().unwrap().entries, 50);

    let fifo = Limits::new().max_entries(10).policy(EvictionPolicy::fifo());
    let dry = store.evict_with(&fifo, EvictMode::DryRun).unwrap();
    assert_eq!(dry.evicted.len(), 41, "down to floor(10 × 0.9) = 9 entries");
    assert!(dry.evicted.iter().all(|e| e.cause == EvictionCause::Count));
    assert_eq!(
        store.stats().unwrap().entries,
        50,
        "a dry run removes nothing"
    );

    let report = store.set_limits(fifo).unwrap();
    assert_eq!(report.evicted.len(), 41);
    let left: BTreeSet<CheckpointId> = store.entries().unwrap().iter().map(|e| e.id).collect();
    // FIFO: the nine newest survive.
    let newest: BTreeSet<CheckpointId> = ids[41..].iter().copied().collect();
    assert_eq!(left, newest);
    assert_eq!(store.limits(), fifo);
    assert_eq!(store.stats().unwrap().evictions.count, 41);
}

/// `stats` beside `compact`: neither waits for the other for long. (`stats` once kept its read
/// transaction open while it waited for the engine's slot, which a compaction holds while it
/// waits for every read transaction to end: each compaction that came between then waited a
/// minute and failed.)
#[test]
fn stats_beside_compact_never_stall_each_other() {
    let dir = TempDir::new("evict-compact-stats");
    let store = Store::open(dir.store_path()).unwrap();
    let deco = DecoratorCheckpoint::new(Function::new("e", "stall"), AutoIdentifier, store.clone());
    for i in 0..50u64 {
        deco.call(i, |_| vec![5u8; 4_000]).unwrap();
    }
    let until = std::time::Instant::now() + Duration::from_secs(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            while std::time::Instant::now() < until {
                store.stats().unwrap();
            }
        });
        while std::time::Instant::now() < until {
            let started = std::time::Instant::now();
            store.compact().unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a compaction waited {:?} for stats",
                started.elapsed()
            );
        }
    });
}

/// A value whose decoding takes a while (a hit of it holds its snapshot that long).
#[derive(serde::Serialize, Debug, PartialEq)]
struct SlowToDecode(u64);

static DECODING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl<'de> serde::Deserialize<'de> for SlowToDecode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u64::deserialize(d)?;
        DECODING.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        Ok(SlowToDecode(v))
    }
}

/// A compaction that starts while a hit decodes its value proceeds once the hit is done.
/// (Before, the hit's snapshot, in use when the compaction forgot the snapshots, stayed open
/// after the hit, and nothing dropped it while the compaction held the engine: the compaction
/// waited a minute for it and failed.)
#[test]
fn a_compaction_beside_a_slow_decode_waits_only_for_the_decode() {
    let dir = TempDir::new("evict-compact-decode");
    let store = Store::open(dir.store_path()).unwrap();
    let deco = DecoratorCheckpoint::new(Function::new("e", "slow"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    assert_eq!(deco.call(7u64, SlowToDecode).unwrap(), SlowToDecode(7));
    DECODING.store(false, std::sync::atomic::Ordering::SeqCst);
    std::thread::scope(|s| {
        let hit = s.spawn(|| {
            deco.call(7u64, |_| -> SlowToDecode { panic!("a hit was expected") })
                .unwrap()
        });
        while !DECODING.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = std::time::Instant::now();
        let compacted = store.compact();
        let took = started.elapsed();
        assert_eq!(hit.join().unwrap(), SlowToDecode(7));
        compacted.unwrap();
        assert!(
            took < Duration::from_secs(10),
            "the compaction took {took:?}"
        );
    });
}

#[test]
fn compact_gives_back_space_and_stats_report_it() {
    let dir = TempDir::new("evict-compact");
    let store = Store::open(dir.store_path()).unwrap();
    let deco =
        DecoratorCheckpoint::new(Function::new("e", "compact"), AutoIdentifier, store.clone())
            .with_on_error(OnError::Raise);
    for i in 0..200u64 {
        deco.call(i, |_| vec![3u8; 20_000]).unwrap();
    }
    assert_eq!(store.clear().unwrap(), 200);
    let before = store.stats().unwrap();
    assert!(before.reclaimable_bytes < before.file_bytes);
    assert!(
        before.reclaimable_bytes > 2_000_000,
        "{} reclaimable",
        before.reclaimable_bytes
    );
    let report = store.compact().unwrap();
    assert!(report.file_bytes_after < report.file_bytes_before);
    let after = store.stats().unwrap();
    assert!(after.file_bytes < before.file_bytes);
    assert!(after.reclaimable_bytes < before.reclaimable_bytes);
    // What compaction gave back is about what was reported reclaimable.
    let freed = report.file_bytes_before - report.file_bytes_after;
    assert!(
        freed.abs_diff(before.reclaimable_bytes) <= freed / 20,
        "{freed} freed, {} reported",
        before.reclaimable_bytes
    );
    // Still a working store.
    deco.call(1u64, |_| vec![1u8; 10]).unwrap();
    assert_eq!(
        deco.call(1u64, |_| -> Vec<u8> { unreachable!() }).unwrap(),
        vec![1u8; 10]
    );
}
