//! A proptest state-machine test of the store against an in-memory model: random sequences of
//! saves (small, and large enough to bypass group commit), retrieves, removes, decorated calls
//! (hits go through a deliberately tiny access log), FIFO eviction to an entry cap, expiry by
//! age, flushes, verifies and reopens, checked after every step. An injected clock advances one
//! millisecond per step, so "oldest" is always defined. Half the sequences run on a store with a
//! hot tier and 256-byte chunks (most saves then stored in chunks). `PROPTEST_CASES` sets the
//! number of sequences (default 64).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use ckpt::store::{Clock, EvictMode, ManualClock};
use ckpt::testing::{self, GROUP_COMMIT_MAX_BYTES};
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, EvictionPolicy, Function, Limits,
    OnError, Store,
};
use common::TempDir;
use proptest::prelude::*;

const FUNCTIONS: [&str; 3] = ["a", "b", "c"];

fn function(f: u8) -> Function {
    Function::new("model", FUNCTIONS[usize::from(f)])
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        key: u8,
        f: u8,
        len: usize,
        seed: u8,
    },
    Retrieve {
        key: u8,
    },
    Remove {
        key: u8,
    },
    Call {
        f: u8,
        arg: u8,
    },
    RemoveFunction {
        f: u8,
    },
    Clear,
    Flush,
    Verify,
    Reopen,
    /// Cap the entries at `keep`, oldest first (FIFO), evicting down to the cap.
    EvictOldest {
        keep: u8,
    },
    /// Expire the entries saved more than `age` ms ago.
    Expire {
        age: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        8 => 0usize..300,
        1 => Just(GROUP_COMMIT_MAX_BYTES + 1),
    ];
    prop_oneof![
        6 => (0u8..24, 0u8..3, len, any::<u8>())
            .prop_map(|(key, f, len, seed)| Op::Save { key, f, len, seed }),
        4 => (0u8..24).prop_map(|key| Op::Retrieve { key }),
        2 => (0u8..24).prop_map(|key| Op::Remove { key }),
        5 => (0u8..3, 0u8..8).prop_map(|(f, arg)| Op::Call { f, arg }),
        1 => (0u8..3).prop_map(|f| Op::RemoveFunction { f }),
        1 => Just(Op::Clear),
        1 => Just(Op::Flush),
        1 => Just(Op::Verify),
        1 => Just(Op::Reopen),
        1 => (0u8..12).prop_map(|keep| Op::EvictOldest { keep }),
        1 => (0u8..40).prop_map(|age| Op::Expire { age }),
    ]
}

fn raw_id(key: u8) -> CheckpointId {
    CheckpointId::from_u128(0x0d00_0000 + u128::from(key))
}

fn record(len: usize, seed: u8) -> Vec<u8> {
    let value: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    testing::encode_record(&value, Duration::from_micros(u64::from(seed))).unwrap()
}

fn call_value(f: u8, arg: u8) -> String {
    format!("{}({arg})", FUNCTIONS[usize::from(f)])
}

struct Model {
    /// id -> (function, stored bytes, saved at ms)
    entries: BTreeMap<CheckpointId, (u8, Vec<u8>, u64)>,
    /// Entries removed by `EvictOldest` and by `Expire`.
    evicted: u64,
    expired: u64,
}

impl Model {
    fn evict_oldest(&mut self, keep: usize) -> u64 {
        let mut by_age: Vec<(u64, CheckpointId)> =
            self.entries.iter().map(|(id, e)| (e.2, *id)).collect();
        by_age.sort();
        let n = by_age.len().saturating_sub(keep);
        for (_, id) in &by_age[..n] {
            self.entries.remove(id);
        }
        n as u64
    }

    fn expire(&mut self, cutoff: u64) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.2 >= cutoff);
        (before - self.entries.len()) as u64
    }
}

struct Harness {
    path: std::path::PathBuf,
    clock: ManualClock,
    store: Option<Store>,
    decos: Vec<DecoratorCheckpoint<AutoIdentifier, Store>>,
    /// Hits each function's decorators counted, over reopens.
    hits: [u64; 3],
    /// A hot tier, and small chunks.
    hot_and_chunks: bool,
}

impl Harness {
    fn open(&mut self) {
        let mut builder = Store::builder()
            .access_log_capacity(16)
            .clock(self.clock.clone());
        if self.hot_and_chunks {
            builder = builder.hot_tier(1 << 20).chunk_size(256);
        }
        let store = builder.open(&self.path).unwrap();
        self.decos = (0..3)
            .map(|f| {
                DecoratorCheckpoint::new(function(f), AutoIdentifier, store.clone())
                    .with_on_error(OnError::Raise)
            })
            .collect();
        self.store = Some(store);
    }

    fn close(&mut self) {
        for (f, d) in self.decos.iter().enumerate() {
            self.hits[f] += d.stats().hits;
        }
        self.decos.clear();
        self.store.take().unwrap().close().unwrap();
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }
}

fn check(h: &Harness, model: &Model) -> Result<(), TestCaseError> {
    let store = h.store();
    let entries = store.entries().unwrap();
    let ids: Vec<CheckpointId> = entries.iter().map(|e| e.id).collect();
    let want: Vec<CheckpointId> = model.entries.keys().copied().collect();
    prop_assert_eq!(ids, want);
    let stats = store.stats().unwrap();
    prop_assert_eq!(stats.entries, model.entries.len() as u64);
    prop_assert_eq!(stats.evictions.count, model.evicted);
    prop_assert_eq!(stats.evictions.age, model.expired);
    for f in 0..3u8 {
        let (n, bytes) = model
            .entries
            .values()
            .filter(|(g, _, _)| *g == f)
            .fold((0u64, 0u64), |(n, b), (_, v, _)| {
                (n + 1, b + v.len() as u64)
            });
        let row = store.function_stats(&function(f)).unwrap();
        prop_assert_eq!(
            row.as_ref().map_or((0, 0), |r| (r.entries, r.stored_bytes)),
            (n, bytes),
            "function {}",
            f
        );
        prop_assert_eq!(store.entries_of(&function(f)).unwrap().len() as u64, n);
    }
    Ok(())
}

fn run(ops: Vec<Op>, hot_and_chunks: bool) -> Result<(), TestCaseError> {
    let dir = TempDir::new("model");
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let now = || clock.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut h = Harness {
        path: dir.join("checkpoints.redb"),
        clock: clock.clone(),
        store: None,
        decos: Vec::new(),
        hits: [0; 3],
        hot_and_chunks,
    };
    h.open();
    let mut model = Model {
        entries: BTreeMap::new(),
        evicted: 0,
        expired: 0,
    };
    let mut expected_hits = [0u64; 3];
    for op in ops {
        clock.advance(Duration::from_millis(1));
        match op {
            Op::Save { key, f, len, seed } => {
                let bytes = record(len, seed);
                let fun = function(f);
                h.store()
                    .save(&raw_id(key), &testing::entry(&fun, &bytes, Duration::ZERO))
                    .unwrap();
                model.entries.insert(raw_id(key), (f, bytes, now()));
            }
            Op::Retrieve { key } => {
                let got = h.store().retrieve(&raw_id(key)).unwrap();
                prop_assert_eq!(got, model.entries.get(&raw_id(key)).map(|e| e.1.clone()));
            }
            Op::Remove { key } => {
                let was = h.store().remove(&raw_id(key)).unwrap();
                prop_assert_eq!(was, model.entries.remove(&raw_id(key)).is_some());
            }
            Op::Call { f, arg } => {
                let d = &h.decos[usize::from(f)];
                let id = d.identify(&arg).unwrap();
                let hit = model.entries.contains_key(&id);
                let got = d.call(arg, |a| call_value(f, a)).unwrap();
                prop_assert_eq!(got, call_value(f, arg));
                if hit {
                    expected_hits[usize::from(f)] += 1;
                } else {
                    let bytes = h.store().retrieve(&id).unwrap().unwrap();
                    model.entries.insert(id, (f, bytes, now()));
                }
            }
            Op::RemoveFunction { f } => {
                let n = h.store().remove_function(&function(f)).unwrap();
                let before = model.entries.len();
                model.entries.retain(|_, (g, _, _)| *g != f);
                prop_assert_eq!(n, (before - model.entries.len()) as u64);
            }
            Op::Clear => {
                let n = h.store().clear().unwrap();
                prop_assert_eq!(n, model.entries.len() as u64);
                model.entries.clear();
            }
            Op::Flush => h.store().flush().unwrap(),
            Op::Verify => {
                let report = h.store().verify().unwrap();
                prop_assert!(report.is_clean(), "{}", report);
            }
            Op::Reopen => {
                h.close();
                h.open();
            }
            Op::EvictOldest { keep } => {
                let limits = Limits::new()
                    .max_entries(u64::from(keep))
                    .policy(EvictionPolicy::fifo())
                    .low_water(1.0);
                let report = h.store().evict_with(&limits, EvictMode::Apply).unwrap();
                let n = model.evict_oldest(usize::from(keep));
                prop_assert_eq!(report.evicted.len() as u64, n);
                model.evicted += n;
            }
            Op::Expire { age } => {
                let limits = Limits::new().max_age(Duration::from_millis(u64::from(age)));
                let report = h.store().evict_with(&limits, EvictMode::Apply).unwrap();
                let n = model.expire(now().saturating_sub(u64::from(age)));
                prop_assert_eq!(report.evicted.len() as u64, n);
                model.expired += n;
            }
        }
        check(&h, &model)?;
    }
    // Hits counted by the decorators, and persisted per function over reopens.
    h.close();
    prop_assert_eq!(h.hits, expected_hits);
    h.open();
    for f in 0..3u8 {
        let persisted = h
            .store()
            .function_stats(&function(f))
            .unwrap()
            .map_or(0, |r| r.calls.hits);
        prop_assert_eq!(persisted, expected_hits[usize::from(f)]);
    }
    let report = h.store().verify().unwrap();
    prop_assert!(report.is_clean(), "{}", report);
    check(&h, &model)?;
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(
        ops in proptest::collection::vec(op(), 1..40),
        hot_and_chunks in any::<bool>(),
    ) {
        run(ops, hot_and_chunks)?;
    }
}
