//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz_targets/`) and by the stable
//! regression tests (`tests/fuzz_regressions.rs` in the crate, which includes this file), so
//! every input the fuzzer finds replays under `cargo test`.
//!
//! Inputs are read with a small byte reader rather than `arbitrary`, so the harness needs
//! nothing but ckpt and std.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ckpt::store::EvictMode;
use ckpt::testing::{
    self, Decoded, FaultOp, Faults, FaultyBackend, GROUP_COMMIT_MAX_BYTES, MemoryBackend,
};
use ckpt::{Cache, CheckpointId, ErrorKind, EvictionPolicy, Function, Limits, OpenCheck, Store};

/// Reads fuzz input; past its end every read gives zeros.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Panics that ckpt contains (the storage engine's, on a damaged file) are part of the contract,
/// not crashes: print them briefly instead of aborting, and count them. A panic that escapes
/// ckpt still aborts (libFuzzer's wrapper catches it).
pub fn allow_contained_panics() {
    static CONTAINED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::panic::set_hook(Box::new(|info| {
        let n = CONTAINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        eprintln!("panic #{n} (contained by ckpt unless the run aborts next): {info}");
    }));
}

fn typed(e: &ckpt::Error) {
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Storage | ErrorKind::Corrupted | ErrorKind::Closed | ErrorKind::Open
        ),
        "unexpected error kind {e:?}"
    );
    let msg = e.to_string();
    assert!(!msg.is_empty());
}

fn record(len: usize, seed: u8) -> Vec<u8> {
    let value: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed).collect();
    testing::encode_record(&value, Duration::from_nanos(u64::from(seed))).unwrap()
}

/// A record too large for group commit (encoded once per key: encoding is slow under the
/// fuzzer's instrumentation).
fn big_record(key: u8) -> Vec<u8> {
    static BIG: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BIG.get_or_init(|| {
        (0..16)
            .map(|k| record(GROUP_COMMIT_MAX_BYTES + 1, k))
            .collect()
    })[usize::from(key % 16)]
    .clone()
}

/// A record of a few chunks at the harness's chunk size (`CHUNK`).
fn chunked_record(key: u8, arg: u8) -> Vec<u8> {
    record(CHUNK as usize + usize::from(arg) * 40, key ^ arg)
}

/// The chunk length of the stores the harnesses build: small, so that chunked records are cheap.
const CHUNK: u32 = 4096;

fn id(key: u8) -> CheckpointId {
    CheckpointId::from_u128(0xf0_0000 + u128::from(key))
}

fn function(f: u8) -> Function {
    Function::new("fuzz", if f.is_multiple_of(2) { "even" } else { "odd" })
}

// ---------------------------------------------------------------------------------------------
// ops: random operation sequences against a model, with fault injection.

struct OpsRun {
    mem: MemoryBackend,
    faults: Arc<Faults>,
    store: Option<Store>,
    /// Per key, the states it may be in (`None`: absent); a missing key is absent.
    model: BTreeMap<u8, Vec<Option<Vec<u8>>>>,
    armed: bool,
}

impl OpsRun {
    fn open(&self) -> Result<Store, ckpt::OpenError> {
        let (mem, faults) = (self.mem.clone(), self.faults.clone());
        Store::builder()
            .cache_size(1 << 20)
            .access_log_capacity(16)
            .chunk_size(CHUNK)
            .open_backend("mem:fuzz-ops", move || {
                Ok(FaultyBackend::new(mem.clone(), faults.clone()))
            })
    }

    /// The store, opening it if the last open failed; `None` only while a fault is armed.
    fn store(&mut self) -> Option<Store> {
        if self.store.is_none() {
            match self.open() {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    assert!(self.armed, "the store does not open with no fault: {e}");
                    return None;
                }
            }
        }
        self.store.clone()
    }

    fn states(&self, key: u8) -> Vec<Option<Vec<u8>>> {
        self.model.get(&key).cloned().unwrap_or_else(|| vec![None])
    }

    fn failed(&self, e: &ckpt::Error, what: &str) {
        typed(e);
        assert!(self.armed, "{what} failed with no fault armed: {e}");
    }

    fn check_key(&self, store: &Store, key: u8) {
        match store.retrieve(&id(key)) {
            Ok(got) => {
                let states = self.states(key);
                assert!(
                    states.contains(&got),
                    "key {key}: the store holds {:?} bytes, the model allows {:?}",
                    got.as_ref().map(Vec::len),
                    states
                        .iter()
                        .map(|s| s.as_ref().map(Vec::len))
                        .collect::<Vec<_>>()
                );
            }
            Err(e) => self.failed(&e, "retrieve"),
        }
    }
}

/// Random operation sequences (save, retrieve, remove, evict, flush, verify, stats, reopen,
/// faults) checked against a model of what each key may hold.
pub fn ops(data: &[u8]) {
    let mut input = Input::new(data);
    let mut run = OpsRun {
        mem: MemoryBackend::new(),
        faults: Faults::new(),
        store: None,
        model: BTreeMap::new(),
        armed: false,
    };
    run.store = Some(run.open().expect("a new store opens"));
    let mut steps = 0;
    while !input.is_empty() && steps < 48 {
        steps += 1;
        let op = input.u8() % 13;
        let key = input.u8() % 16;
        let arg = input.u8();
        let Some(store) = run.store() else { continue };
        match op {
            0..=2 => {
                let fun = function(key);
                // Some saves are encoded as they are written (as large results are): the same
                // bytes must land.
                let (bytes, saved) = if arg % 4 == 2 {
                    let value: Vec<u8> = (0..usize::from(arg) * 40)
                        .map(|i| (i as u8) ^ key ^ arg)
                        .collect();
                    let bytes = testing::encode_record(&value, Duration::ZERO).unwrap();
                    let saved = testing::save_large(&store, &id(key), &fun, &value, Duration::ZERO);
                    (bytes, saved)
                } else {
                    let bytes = match arg % 16 {
                        0 => big_record(key),
                        8 => chunked_record(key, arg),
                        _ => record(usize::from(arg) * 5, key ^ arg),
                    };
                    let saved = store.save(&id(key), &testing::entry(&fun, &bytes, Duration::ZERO));
                    (bytes, saved)
                };
                match saved {
                    Ok(()) => {
                        run.model.insert(key, vec![Some(bytes)]);
                    }
                    Err(e) => {
                        run.failed(&e, "save");
                        let mut states = run.states(key);
                        states.push(Some(bytes));
                        run.model.insert(key, states);
                    }
                }
            }
            3 | 4 => run.check_key(&store, key),
            5 => match store.remove(&id(key)) {
                Ok(was) => {
                    assert!(
                        run.states(key).iter().any(|s| s.is_some() == was),
                        "remove of {key} said {was}"
                    );
                    run.model.insert(key, vec![None]);
                }
                Err(e) => {
                    run.failed(&e, "remove");
                    let mut states = run.states(key);
                    states.push(None);
                    run.model.insert(key, states);
                }
            },
            6 => {
                if let Err(e) = store.flush() {
                    run.failed(&e, "flush");
                }
            }
            7 => {
                drop(store);
                let old = run.store.take().unwrap();
                if let Err(e) = old.close() {
                    run.failed(&e, "close");
                }
            }
            8 => {
                let op = [
                    FaultOp::Write,
                    FaultOp::Sync,
                    FaultOp::Read,
                    FaultOp::SetLen,
                ][usize::from(key % 4)];
                run.faults.fail_after(op, u64::from(arg % 64));
                run.armed = true;
            }
            9 => {
                run.faults.clear();
                run.armed = false;
            }
            10 => match store.verify() {
                Ok(report) => assert!(run.armed || report.is_clean(), "{report}"),
                Err(e) => run.failed(&e, "verify"),
            },
            // Evict to a cap on entries (or bytes), under a policy the input picks: eviction
            // only ever removes, and the cap holds after it. Which entries go depends on
            // accesses the tiny access log may drop, so the model learns it from the store.
            11 => {
                let policy = [
                    EvictionPolicy::lru(),
                    EvictionPolicy::lfu(),
                    EvictionPolicy::fifo(),
                ][usize::from(key % 3)];
                let limits = if arg & 1 == 0 {
                    Limits::new().max_entries(u64::from(arg % 16))
                } else {
                    Limits::new().max_bytes(u64::from(arg) * 64)
                }
                .policy(policy);
                match store.evict_with(&limits, EvictMode::Apply) {
                    Ok(_) => {
                        for key in 0..16 {
                            match store.retrieve(&id(key)) {
                                Ok(got) => {
                                    let states = run.states(key);
                                    assert!(
                                        got.is_none() || states.contains(&got),
                                        "eviction changed key {key} instead of removing it"
                                    );
                                    run.model.insert(key, vec![got]);
                                }
                                Err(e) => {
                                    // The key may now be gone too.
                                    run.failed(&e, "retrieve");
                                    let mut states = run.states(key);
                                    states.push(None);
                                    run.model.insert(key, states);
                                }
                            }
                        }
                        if let Ok(stats) = store.stats() {
                            if let Some(cap) = limits.max_entries_value() {
                                assert!(
                                    stats.entries <= cap,
                                    "{} entries > cap {cap}",
                                    stats.entries
                                );
                            }
                            if let Some(cap) = limits.max_bytes_value() {
                                assert!(
                                    stats.stored_bytes <= cap,
                                    "{} bytes > cap {cap}",
                                    stats.stored_bytes
                                );
                            }
                        }
                    }
                    Err(e) => {
                        // Failed whole: nothing was removed; but the model cannot tell a failed
                        // commit that landed, so any key may be gone.
                        run.failed(&e, "evict");
                        for key in 0..16 {
                            let mut states = run.states(key);
                            states.push(None);
                            run.model.insert(key, states);
                        }
                    }
                }
            }
            // Stats agree with the entries.
            _ => match (store.stats(), store.entries()) {
                (Ok(stats), Ok(entries)) => {
                    assert_eq!(stats.entries, entries.len() as u64);
                }
                (Err(e), _) | (_, Err(e)) => run.failed(&e, "stats"),
            },
        }
    }
    // The fault clears: the same handle works, and so does a new one, with what the model says.
    run.faults.clear();
    run.armed = false;
    for pass in 0..2 {
        let store = run.store().expect("the store opens once faults clear");
        for key in 0..16 {
            run.check_key(&store, key);
        }
        let report = store.verify().expect("verify once faults clear");
        assert!(report.is_clean(), "pass {pass}: {report}");
        let stats = store.stats().unwrap();
        assert_eq!(stats.entries, store.entries().unwrap().len() as u64);
        drop(store);
        run.store.take().unwrap().close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// decode: arbitrary bytes as stored values, metadata rows and function rows.

fn decode_as<T>(bytes: &[u8], seal: bool, compressed: bool)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let record = if seal {
        let mut record = testing::seal_record::<T>(bytes);
        if compressed {
            // The payload as a compressed one: a declared length and a zstd frame.
            record[9] = 1;
            testing::reseal(&mut record);
        }
        record
    } else {
        bytes.to_vec()
    };
    let _ = testing::parse_record(&record);
    let whole = testing::decode_record::<T>(&record);
    // The same record lent in parts (as a chunked one is: the decoder reads each part through
    // pointers and switches parts mid-value) decodes to the same value, or is refused alike.
    let part_len = 1 + usize::from(bytes.first().copied().unwrap_or(0) % 40);
    let in_parts = testing::decode_record_in_parts::<T>(&record, part_len);
    match (&whole, &in_parts) {
        (Decoded::Value(a, _), Decoded::Value(b, _)) => assert_eq!(
            testing::encode_record(a, Duration::ZERO).unwrap(),
            testing::encode_record(b, Duration::ZERO).unwrap(),
            "the record decodes to another value in parts of {part_len}"
        ),
        (Decoded::Value(..), _) | (_, Decoded::Value(..)) if !compressed => {
            panic!("the record decodes whole or in parts of {part_len}, not both")
        }
        _ => {}
    }
    if let Decoded::Value(v, _) = whole {
        // What decodes re-encodes to a record that decodes to the same bytes again.
        let again = testing::encode_record(&v, Duration::ZERO).unwrap();
        match testing::decode_record::<T>(&again) {
            Decoded::Value(w, _) => {
                let third = testing::encode_record(&w, Duration::ZERO).unwrap();
                assert_eq!(again, third, "re-encoding is not stable");
            }
            other => panic!(
                "a re-encoded value does not decode: {:?}",
                other_kind(&other)
            ),
        }
    }
}

fn other_kind<T>(d: &Decoded<T>) -> &'static str {
    match d {
        Decoded::Value(..) => "value",
        Decoded::Corrupt => "corrupt",
        Decoded::TypeMismatch => "type mismatch",
        Decoded::Unsupported => "unsupported",
    }
}

/// Decodes arbitrary bytes as a record of several types (sealed with a valid header and
/// checksum, or raw), as a metadata row and as a function row.
pub fn decode(data: &[u8]) {
    let mut input = Input::new(data);
    let sel = input.u8();
    let seal = sel & 0x80 != 0;
    let compressed = sel & 0x40 != 0;
    let bytes = input.rest();
    match sel % 12 {
        0 => decode_as::<u64>(bytes, seal, compressed),
        1 => decode_as::<String>(bytes, seal, compressed),
        2 => decode_as::<Vec<u8>>(bytes, seal, compressed),
        3 => decode_as::<Vec<String>>(bytes, seal, compressed),
        4 => decode_as::<BTreeMap<u64, String>>(bytes, seal, compressed),
        5 => decode_as::<Option<(u32, i64)>>(bytes, seal, compressed),
        6 => decode_as::<(bool, char, Vec<Option<u16>>)>(bytes, seal, compressed),
        7 => decode_as::<(f32, f64)>(bytes, seal, compressed),
        8 => decode_as::<Result<u8, String>>(bytes, seal, compressed),
        9 => decode_as::<Vec<Vec<u64>>>(bytes, seal, compressed),
        10 => decode_as::<HashMap<u16, Vec<u8>>>(bytes, false, compressed),
        _ => decode_as::<(String, Box<[u8]>, [u32; 3])>(bytes, seal, compressed),
    }
    if let Some(row) = bytes.get(..64) {
        let _ = testing::decode_meta(row.try_into().unwrap());
    }
    let _ = testing::decode_function_row(bytes);
}

// ---------------------------------------------------------------------------------------------
// open: arbitrary bytes as a store file.

/// A small sound store, and what it holds.
pub struct Image {
    pub bytes: Vec<u8>,
    pub entries: Vec<(CheckpointId, Vec<u8>)>,
}

pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mem = MemoryBackend::new();
        let m = mem.clone();
        // Small chunks: the 9,000-byte value is stored in nine of them.
        let store = Store::builder()
            .chunk_size(1024)
            .open_backend("mem:fuzz-image", move || Ok(m.clone()))
            .unwrap();
        let mut entries = Vec::new();
        for key in 0..12u8 {
            let len = if key == 5 {
                9000
            } else {
                usize::from(key) * 40
            };
            let value: Vec<u8> = (0..len).map(|i| (i as u8) ^ key).collect();
            let bytes = testing::encode_record(&value, Duration::ZERO).unwrap();
            store
                .save(
                    &id(key),
                    &testing::entry(&function(key), &bytes, Duration::ZERO),
                )
                .unwrap();
            entries.push((id(key), value));
        }
        store.remove(&id(3)).unwrap();
        entries.retain(|(i, _)| *i != id(3));
        store.close().unwrap();
        Image {
            bytes: mem.to_bytes(),
            entries,
        }
    })
}

/// `CKPT_FUZZ_TRUST=1`: open with `open_check(OpenCheck::Trust)`, where the engine trusts the file.
/// A hang is then a documented possibility, not a bug, so CI does not set it; it finds panics
/// that a verified open would have refused to reach.
fn trust() -> bool {
    static TRUST: OnceLock<bool> = OnceLock::new();
    *TRUST.get_or_init(|| std::env::var_os("CKPT_FUZZ_TRUST").is_some_and(|v| v == "1"))
}

/// The storage engine's backend trait over a memory backend, to build hostile stores with the
/// engine directly.
#[derive(Debug)]
struct EngineBytes(MemoryBackend);

impl redb::StorageBackend for EngineBytes {
    fn len(&self) -> std::io::Result<u64> {
        testing::Backend::len(&self.0)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        testing::Backend::read(&self.0, offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        testing::Backend::set_len(&self.0, len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        testing::Backend::write(&self.0, offset, data)
    }
}

/// A sound redb file whose ckpt tables hold rows the input chooses: sound records or any bytes,
/// metadata rows well-formed or not, function rows and index rows pointing anywhere.
fn hostile_tables(input: &mut Input<'_>) -> Vec<u8> {
    use redb::TableDefinition;
    const INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("ckpt_info");
    const RESULTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("ckpt_results");
    const ENTRIES: TableDefinition<&[u8; 16], &[u8; 64]> = TableDefinition::new("ckpt_entries");
    const FUNCTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("ckpt_functions");
    const ORDER_CREATED: TableDefinition<&[u8; 24], ()> =
        TableDefinition::new("ckpt_order_created");
    const ORDER_ACCESS: TableDefinition<&[u8; 24], ()> = TableDefinition::new("ckpt_order_access");
    const ORDER_HITS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("ckpt_order_hits");
    const CHUNKS: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("ckpt_chunks");
    // A chunked record's manifest (format in ckpt's store/chunks.rs).
    fn manifest(checksum: &[u8], len: u64, count: u32, chunk_len: u32) -> [u8; 32] {
        let mut m = [0u8; 32];
        m[..8].copy_from_slice(&checksum[..8]);
        m[8] = 0xc1;
        m[16..24].copy_from_slice(&len.to_le_bytes());
        m[24..28].copy_from_slice(&count.to_le_bytes());
        m[28..32].copy_from_slice(&chunk_len.to_le_bytes());
        m
    }
    fn chunk_key(id: &[u8; 16], index: u32) -> [u8; 20] {
        let mut k = [0u8; 20];
        k[..16].copy_from_slice(id);
        k[16..].copy_from_slice(&index.to_be_bytes());
        k
    }
    let mem = MemoryBackend::new();
    let db = redb::Builder::new()
        .create_with_backend(EngineBytes(mem.clone()))
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut info = txn.open_table(INFO).unwrap();
        info.insert("format", &b"ckpt"[..]).unwrap();
        let schema: u32 = if input.u8() == 0xff { input.u32() } else { 1 };
        info.insert("schema", &schema.to_le_bytes()[..]).unwrap();
        // The order indexes the file claims to keep: usually sound bits, sometimes any byte.
        let mask = if input.u8() == 0xfe {
            input.u8()
        } else {
            input.u8() & 7
        };
        info.insert("indexes", &[mask][..]).unwrap();
        let mut results = txn.open_table(RESULTS).unwrap();
        let mut entries = txn.open_table(ENTRIES).unwrap();
        let mut functions = txn.open_table(FUNCTIONS).unwrap();
        let mut created = txn.open_table(ORDER_CREATED).unwrap();
        let mut access = txn.open_table(ORDER_ACCESS).unwrap();
        let mut hits = txn.open_table(ORDER_HITS).unwrap();
        let mut chunks = txn.open_table(CHUNKS).unwrap();
        let fn_key = |k: u8| function(k).key();
        for _ in 0..24 {
            if input.is_empty() {
                break;
            }
            let op = input.u8();
            let key = input.u8() % 16;
            let arg = input.u8();
            let id = *id(key).as_bytes();
            match op % 9 {
                0 => {
                    let rec = record(usize::from(arg), key);
                    results.insert(&id, rec.as_slice()).unwrap();
                }
                1 => {
                    let n = usize::from(arg) % 48;
                    let raw: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                    results.insert(&id, raw.as_slice()).unwrap();
                }
                2 => {
                    // A well-formed metadata row (format in ckpt's schema.rs).
                    let mut row = [0u8; 64];
                    row[0] = 1;
                    let size = if arg & 1 == 0 {
                        u64::from(arg) + 32
                    } else {
                        u64::from(input.u32())
                    };
                    let words = [fn_key(arg >> 1), 0, 1, 2, u64::from(arg), size, 3];
                    for (i, w) in words.iter().enumerate() {
                        row[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
                    }
                    entries.insert(&id, &row).unwrap();
                }
                3 => {
                    let mut row = [0u8; 64];
                    for b in row.iter_mut().take(usize::from(arg) % 65) {
                        *b = input.u8();
                    }
                    entries.insert(&id, &row).unwrap();
                }
                4 => {
                    // An order-index row: a time (or hit count) the input picks, then an id.
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&u64::from(input.u32()).to_be_bytes());
                    key[16..].copy_from_slice(&id);
                    let mut short = [0u8; 24];
                    short[..8].copy_from_slice(&key[..8]);
                    short[8..].copy_from_slice(&id);
                    match arg % 3 {
                        0 => created.insert(&short, ()).unwrap(),
                        1 => access.insert(&short, ()).unwrap(),
                        _ => hits.insert(&key, ()).unwrap(),
                    };
                }
                5 => {
                    let n = usize::from(arg) % 40;
                    let raw: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                    functions.insert(fn_key(key), raw.as_slice()).unwrap();
                }
                6 => {
                    // A sound record in chunks: the manifest, then the chunks.
                    let rec = record(200 + usize::from(arg) * 2, key);
                    let chunk_len = 64 * (1 + u32::from(arg % 4));
                    let pieces: Vec<&[u8]> = rec.chunks(chunk_len as usize).collect();
                    let m = manifest(&rec, rec.len() as u64, pieces.len() as u32, chunk_len);
                    results.insert(&id, &m[..]).unwrap();
                    for (i, piece) in pieces.iter().enumerate() {
                        chunks.insert(&chunk_key(&id, i as u32), *piece).unwrap();
                    }
                }
                7 => {
                    // A manifest whose fields the input picks.
                    let checksum: Vec<u8> = (0..8).map(|_| input.u8()).collect();
                    let m = manifest(
                        &checksum,
                        u64::from(input.u32()) % 100_000,
                        input.u32() % 64,
                        input.u32() % 4096,
                    );
                    results.insert(&id, &m[..]).unwrap();
                }
                _ => {
                    // A chunk row for any id and index.
                    let n = usize::from(arg) % 300;
                    let raw: Vec<u8> = (0..n).map(|_| input.u8()).collect();
                    let index = u32::from(input.u8() % 8);
                    chunks
                        .insert(&chunk_key(&id, index), raw.as_slice())
                        .unwrap();
                }
            }
        }
    }
    txn.commit().unwrap();
    drop(db);
    mem.to_bytes()
}

/// Opens arbitrary bytes as a store: raw bytes (first byte 0 mod 3); a sound store image with
/// byte patches and an optional truncation (1 mod 3); or a sound redb file whose ckpt tables hold
/// hostile rows (2 mod 3). Open fails with a typed error, or succeeds and then every operation
/// returns a right value, a miss, or a typed error, and repair leaves a store that verifies.
pub fn open(data: &[u8]) {
    open_with(data, trust());
}

/// As [`open`], with `open_check(OpenCheck::Trust)`.
pub fn open_trusting(data: &[u8]) {
    open_with(data, true);
}

fn open_with(data: &[u8], trust: bool) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let bytes = if mode.is_multiple_of(3) {
        input.rest().to_vec()
    } else if mode % 3 == 2 {
        hostile_tables(&mut input)
    } else {
        let mut bytes = image().bytes.clone();
        if mode & 2 != 0 {
            let cut = input.u32() as usize % bytes.len();
            bytes.truncate(cut);
        }
        let len = bytes.len().max(1);
        for _ in 0..32 {
            if input.is_empty() {
                break;
            }
            let at = input.u32() as usize % len;
            let x = input.u8();
            if let Some(b) = bytes.get_mut(at) {
                *b ^= x;
            }
        }
        bytes
    };
    if bytes.is_empty() {
        return;
    }
    let mem = MemoryBackend::from_bytes(bytes);
    let opened = Store::builder()
        .cache_size(64 << 10)
        .open_check(if trust {
            OpenCheck::Trust
        } else {
            OpenCheck::Full
        })
        .open_backend("mem:fuzz-open", move || Ok(mem.clone()));
    let store = match opened {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
        Ok(s) => s,
    };
    let deco = ckpt::DecoratorCheckpoint::new(function(0), ckpt::AutoIdentifier, store.clone())
        .with_on_error(ckpt::OnError::Raise);
    for key in 0..16 {
        // A damaged value is a miss (and removed), never an error or a wrong value.
        match deco.peek::<Vec<u8>>(&id(key)) {
            // Every value ever stored under id(key) has bytes i ^ key.
            Ok(Some(v)) => assert!(
                v.iter().enumerate().all(|(i, b)| *b == (i as u8) ^ key),
                "a wrong value for key {key}"
            ),
            Ok(None) => {}
            Err(e) => typed(&e),
        }
    }
    drop(deco);
    // Only a patched image has known contents.
    let known: &[(CheckpointId, Vec<u8>)] = if mode % 3 == 1 { &image().entries } else { &[] };
    for (id, want) in known {
        match store.retrieve(id) {
            Ok(Some(bytes)) => {
                if let Decoded::Value(v, _) = testing::decode_record::<Vec<u8>>(&bytes) {
                    assert_eq!(&v, want, "a wrong value for {id}");
                }
            }
            Ok(None) => {}
            Err(e) => typed(&e),
        }
    }
    for r in [
        store.stats().err(),
        store.entries().err(),
        store.verify().err(),
    ]
    .into_iter()
    .flatten()
    {
        typed(&r);
    }
    for r in [
        store.remove(&id(1)).err(),
        store.remove_function(&function(1)).err(),
        store.remove_all_stale().err(),
    ]
    .into_iter()
    .flatten()
    {
        typed(&r);
    }
    match store.repair() {
        Ok(_) => {
            // Once the engine's check passed, repair leaves consistent tables. (Trusting an
            // unverified file, the engine's damaged structure can defeat the repair: a row that
            // iteration yields and removal cannot find.)
            if let Ok(report) = store.verify()
                && !trust
            {
                assert_eq!(report.problems(), 0, "after repair: {report}");
            }
            // A repaired store works: stats agree with entries, clearing works.
            if let (Ok(stats), Ok(entries)) = (store.stats(), store.entries()) {
                assert_eq!(stats.entries, entries.len() as u64);
            }
        }
        Err(e) => typed(&e),
    }
    let bytes = record(100, 7);
    let new_id = CheckpointId::from_u128(7);
    match store.save(
        &new_id,
        &testing::entry(&function(1), &bytes, Duration::ZERO),
    ) {
        Ok(()) => match store.retrieve(&new_id) {
            Ok(got) => assert_eq!(got, Some(bytes)),
            Err(e) => typed(&e),
        },
        Err(e) => typed(&e),
    }
    if let Err(e) = store.close() {
        typed(&e);
    }
}
