//! Hooks for fault-injection tests and fuzzing (cargo feature `fault-injection`). Not part of the
//! documented API: no stability promise.
//!
//! * [`Backend`] and `StoreBuilder::open_backend`: a store over bytes that are not a file opened
//!   by path; [`MemoryBackend`] and [`FileBytes`] are two such;
//! * [`FaultyBackend`]: wraps a backend, and fails its reads, writes, syncs or resizes after a
//!   given number of them, as [`Faults`] says, until the faults are cleared;
//! * raw access to the stored formats: building an [`Entry`] from bytes, and decoding records,
//!   metadata rows and function rows as the store does.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(unix)]
pub use crate::store::backend::FileBytes;
pub use crate::store::backend::{Backend, MemoryBackend};

use crate::cache::Entry;
use crate::error::Error;
use crate::id::Function;

/// Saves larger than this bypass group commit and write their own transaction.
pub const GROUP_COMMIT_MAX_BYTES: usize = crate::store::GROUP_COMMIT_MAX_BYTES;

/// An [`Entry`] of `function` with these encoded bytes, for saving raw bytes through
/// [`Cache::save`](crate::Cache::save).
pub fn entry<'a>(function: &'a Function, bytes: &'a [u8], compute: Duration) -> Entry<'a> {
    Entry::new(function, bytes, compute)
}

/// Saves `value` through [`Cache::save_large`](crate::Cache::save_large), encoded as the cache
/// writes it, as the decorator does for a large result.
///
/// # Errors
/// As `save_large`.
pub fn save_large<T: Serialize + DeserializeOwned>(
    cache: &dyn crate::Cache,
    id: &crate::CheckpointId,
    function: &Function,
    value: &T,
    compute: Duration,
) -> Result<(), Error> {
    let encoder = crate::record::Encoder {
        value,
        fingerprint: crate::record::fingerprint::<T>(),
        compute,
    };
    cache.save_large(
        id,
        &crate::cache::LargeEntry::new(function, &encoder, compute),
    )
}

/// Marks the store's engine handle broken, as an I/O failure or a contained panic does: the next
/// operation closes the handle and reopens the store.
pub fn break_engine(store: &crate::Store) {
    store.shared().engine().mark_broken();
}

/// How many records the store's hot tier holds (0 without one).
pub fn hot_records(store: &crate::Store) -> usize {
    store.shared().engine().hot().map_or(0, |h| h.len())
}

/// Encodes `value` as the decorator does before saving it.
///
/// # Errors
/// When the value cannot be serialized.
pub fn encode_record<T: Serialize + DeserializeOwned>(
    value: &T,
    compute: Duration,
) -> Result<Vec<u8>, Error> {
    crate::record::encode(value, compute)
}

/// A record around `payload` that passes every check for a `T` (header, type fingerprint,
/// checksum), whatever the payload: for fuzzing the payload's decoding.
pub fn seal_record<T: DeserializeOwned>(payload: &[u8]) -> Vec<u8> {
    let mut out = crate::record::encode(&(), Duration::ZERO).unwrap_or_default();
    out.truncate(crate::record::HEADER_LEN);
    out[16..24].copy_from_slice(&crate::record::fingerprint::<T>().to_le_bytes());
    out.extend_from_slice(payload);
    let sum = xxhash_rust::xxh3::xxh3_64(&out[8..]);
    out[..8].copy_from_slice(&sum.to_le_bytes());
    out
}

/// How the decorator judges stored bytes read back as a `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A sound record of a `T`, with its recorded compute time in nanoseconds.
    Value(T, u64),
    /// Damaged: too short, failing its checksum, an unknown version, or a payload that does not
    /// decode (a miss, counted as corrupt).
    Corrupt,
    /// A sound record of another type (a miss, counted as a type mismatch).
    TypeMismatch,
    /// A sound record this build cannot decode (compressed, without the `zstd` feature): a
    /// miss, left in place.
    Unsupported,
}

/// While `f` runs, this thread decodes compressed records as a build without the `zstd` feature
/// does (a miss that leaves them in place), so that a test can play a mixed fleet.
#[cfg(feature = "zstd")]
pub fn as_if_without_zstd<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            crate::record::AS_IF_WITHOUT_ZSTD.set(self.0);
        }
    }
    let _reset = Reset(crate::record::AS_IF_WITHOUT_ZSTD.replace(true));
    f()
}

/// While `f` runs, this thread cannot make the temporary file a large backfill is downloaded
/// into (as in a folder the store may not write), so that a test can take the other way.
#[cfg(feature = "remote")]
pub fn without_spool<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            crate::store::NO_SPOOL.set(self.0);
        }
    }
    let _reset = Reset(crate::store::NO_SPOOL.replace(true));
    f()
}

/// While `held`, the background thread of `store` saves none of the large backfills its remote
/// hits leave to it (they stay readable from memory; `flush`, a removal or closing the store
/// still saves them), so that a test can look between the call and the save. Releasing has the
/// thread save them.
#[cfg(feature = "remote")]
pub fn hold_backfills(store: &crate::Store, held: bool) {
    store.hold_backfills(held);
}

/// Recomputes the checksum of `record` (at least a header long) after a test changed it.
pub fn reseal(record: &mut [u8]) {
    let sum = xxhash_rust::xxh3::xxh3_64(&record[8..]);
    record[..8].copy_from_slice(&sum.to_le_bytes());
}

/// Decodes stored bytes as the decorator does.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Decoded<T> {
    match crate::record::decode::<T>(bytes) {
        Ok((v, h)) => Decoded::Value(v, h.compute_nanos),
        Err(crate::record::Rejected::Corrupt) => Decoded::Corrupt,
        Err(crate::record::Rejected::TypeMismatch) => Decoded::TypeMismatch,
        Err(crate::record::Rejected::Unsupported) => Decoded::Unsupported,
    }
}

/// Decodes stored bytes lent in parts of `part_len` bytes (at least 1), as the decorator decodes
/// a chunked record.
pub fn decode_record_in_parts<T: DeserializeOwned>(bytes: &[u8], part_len: usize) -> Decoded<T> {
    struct Cut<'a>(&'a [u8], usize);
    impl crate::record::Parts for Cut<'_> {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn count(&self) -> u32 {
            u32::try_from(self.0.len().div_ceil(self.1)).unwrap_or(u32::MAX)
        }
        // Owned parts, as the store's engine guards are (the decoder reads a held part through
        // pointers taken once): not a needless copy.
        #[allow(clippy::unnecessary_to_owned)]
        fn part(&self, index: u32) -> Result<crate::record::Part<'_>, Error> {
            let start = index as usize * self.1;
            Ok(crate::record::Part::new(
                self.0[start..(start + self.1).min(self.0.len())].to_vec(),
            ))
        }
    }
    let parts = Cut(bytes, part_len.max(1));
    match crate::record::decode_parts::<T>(&parts, crate::record::fingerprint::<T>()) {
        Ok(Ok((v, h))) => Decoded::Value(v, h.compute_nanos),
        Ok(Err(crate::record::Rejected::TypeMismatch)) => Decoded::TypeMismatch,
        Ok(Err(crate::record::Rejected::Unsupported)) => Decoded::Unsupported,
        _ => Decoded::Corrupt,
    }
}

/// Checks a record's header and checksum as `verify` does; returns the payload.
pub fn parse_record(bytes: &[u8]) -> Option<&[u8]> {
    crate::record::parse(bytes).ok().map(|(_, payload)| payload)
}

/// Decodes a metadata row; returns its fields (function key, code version, created, last access,
/// hits, size, compute nanos) and checks they encode back to the same row.
pub fn decode_meta(row: &[u8; 64]) -> Option<[u64; 7]> {
    let m = crate::store::schema::EntryMeta::decode(row)?;
    assert_eq!(
        &m.encode(),
        row,
        "a decoded metadata row re-encodes differently"
    );
    Some([
        m.fn_key,
        m.code_version,
        m.created_ms,
        m.last_access_ms,
        m.hits,
        m.size,
        m.compute_nanos,
    ])
}

/// Decodes a function row; returns its module and name.
pub fn decode_function_row(bytes: &[u8]) -> Option<(String, String)> {
    crate::store::schema::FunctionRecord::decode(bytes).map(|r| (r.module, r.name))
}

/// Which backend operation a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `read`
    Read,
    /// `write`
    Write,
    /// `sync_data`
    Sync,
    /// `set_len`
    SetLen,
}

const OPS: [FaultOp; 4] = [
    FaultOp::Read,
    FaultOp::Write,
    FaultOp::Sync,
    FaultOp::SetLen,
];

/// When a [`FaultyBackend`] fails: per operation, how many more succeed before every one fails.
#[derive(Default)]
pub struct Faults {
    /// Per operation: successes left, plus one (0: disarmed).
    armed: [AtomicU64; 4],
    done: [AtomicU64; 4],
    injected: AtomicU64,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// No faults.
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    fn slot(op: FaultOp) -> usize {
        OPS.iter().position(|o| *o == op).unwrap_or(0)
    }

    /// Lets `n` more `op`s succeed, then fails every one until [`clear`](Self::clear).
    pub fn fail_after(&self, op: FaultOp, n: u64) {
        self.armed[Faults::slot(op)].store(n.saturating_add(1), SeqCst);
    }

    /// Disarms every fault: operations succeed again.
    pub fn clear(&self) {
        for a in &self.armed {
            a.store(0, SeqCst);
        }
    }

    /// Faults injected so far (failed operations).
    pub fn injected(&self) -> u64 {
        self.injected.load(SeqCst)
    }

    /// `op`s attempted so far.
    pub fn count(&self, op: FaultOp) -> u64 {
        self.done[Faults::slot(op)].load(SeqCst)
    }

    fn check(&self, op: FaultOp) -> io::Result<()> {
        let i = Faults::slot(op);
        self.done[i].fetch_add(1, SeqCst);
        let armed = &self.armed[i];
        let mut left = armed.load(SeqCst);
        loop {
            match left {
                0 => return Ok(()),
                1 => {
                    self.injected.fetch_add(1, SeqCst);
                    return Err(io::Error::other(format!("injected {op:?} fault")));
                }
                n => match armed.compare_exchange(n, n - 1, SeqCst, SeqCst) {
                    Ok(_) => return Ok(()),
                    Err(now) => left = now,
                },
            }
        }
    }
}

/// A backend that fails as its [`Faults`] say.
#[derive(Debug, Clone)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Arc<Faults>,
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, faults: Arc<Faults>) -> Self {
        FaultyBackend { inner, faults }
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.faults.check(FaultOp::Read)?;
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.check(FaultOp::SetLen)?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.check(FaultOp::Sync)?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.faults.check(FaultOp::Write)?;
        self.inner.write(offset, data)
    }
}
