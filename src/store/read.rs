//! The hit path's store half: a read of one results row from a kept snapshot (or a fresh read
//! transaction), lent to the decorator's decoder without a copy, and the access recorded in the
//! log. See ARCHITECTURE.md, "The hit path".

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::access::Access;
use super::chunks::{self, Manifest, TableParts};
use super::engine_error::engine_error;
use super::options::{AccessMode, ConcurrencyMode};
use super::schema::{ENTRIES, EntryMeta, RESULTS};
use super::{Shared, snapshot};
use crate::error::Error;
use crate::id::CheckpointId;
use crate::record::{self, Lent};
use redb::ReadableTable;

impl Shared {
    pub(super) fn read(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        if let Some(hot) = self.engine.hot()
            && self.max_age_ms.load(Ordering::Relaxed) == 0
            && let Some(record) = hot.get(id.as_bytes())
        {
            read(Lent::checked(&record));
            self.accessed(id, self.now_ms());
            return Ok(true);
        }
        self.read_guarded(id, Age::Unasked, |lent, _| read(lent))
    }

    /// As `read`, also lending the entry's age (from its metadata, read in the same
    /// transaction; `None` without metadata). Never served by the hot tier, which keeps no ages.
    pub(super) fn read_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        self.read_guarded(id, Age::Asked, &mut *read)
    }

    /// `read` for the near lookups (an async call's, before it fetches off its thread): after
    /// a local miss, a record `fetch_far` parked (a read-only file with a remote).
    pub(super) fn read_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        if self.read(id, read)? {
            return Ok(true);
        }
        Ok(self.read_parked(id, &mut |lent, _| read(lent)))
    }

    /// `read_aged` for the near lookups: as [`Shared::read_near`].
    pub(super) fn read_aged_near(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        if self.read_aged(id, read)? {
            return Ok(true);
        }
        Ok(self.read_parked(id, read))
    }

    /// Generic over `read` (not `dyn`): the plain hit path's adapter closure inlines away.
    #[inline]
    fn read_guarded(
        &self,
        id: &CheckpointId,
        age: Age,
        mut read: impl FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        // A panic of the caller's `read` is the caller's: carried past the engine's guard and
        // resumed.
        let mut caller_panic = None;
        let found = self.engine.guard("cannot read", || {
            self.read_inner(id, age, |bytes, age| {
                if let Err(p) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(bytes, age)))
                {
                    caller_panic = Some(p);
                }
            })
        });
        if let Some(p) = caller_panic {
            std::panic::resume_unwind(p);
        }
        found
    }

    /// The engine's slot is held only to begin a read transaction (`engine.rs`): the caller's
    /// `read`, which runs the user's `Deserialize`, runs under no store lock.
    #[inline]
    fn read_inner(
        &self,
        id: &CheckpointId,
        age: Age,
        mut read: impl FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        let now = self.now_ms();
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        let found = if max_age == 0 && self.concurrency == ConcurrencyMode::SingleProcess {
            // The fast path: a snapshot kept since an earlier hit, valid until the next commit
            // of this process (the only writer in this mode).
            let open = |generation| snapshot::open(&*self.engine.db()?, generation);
            self.engine.snapshots().with_snapshot(open, |snap| {
                let Some(row) = snap
                    .results
                    .get(id.as_bytes())
                    .map_err(|e| engine_error("cannot read a result", e))?
                else {
                    return Ok(false);
                };
                let row = row.value();
                let entry_age = match age {
                    Age::Unasked => None,
                    Age::Asked => saved_ago(snap.entries()?, id, now)?,
                };
                lend(row, id, &snap.txn, |lent| read(lent, entry_age))?;
                // Cheapest test first: the size, then the checksum.
                if let Some(hot) = self.engine.hot()
                    && hot.wants(id.as_bytes(), row.len())
                    && !chunks::claims_chunks(row)
                    && record::parse(row).is_ok()
                {
                    let generation = self.engine.snapshots().generation();
                    hot.admit(id.as_bytes(), row, snap.generation, generation);
                }
                Ok(true)
            })?
        } else {
            // Another process may have committed, or the entry's age must be read from the same
            // transaction: a fresh read transaction.
            let txn = self.engine.begin_read()?;
            let table = txn
                .open_table(RESULTS)
                .map_err(|e| engine_error("cannot open the results table", e))?;
            let Some(row) = table
                .get(id.as_bytes())
                .map_err(|e| engine_error("cannot read a result", e))?
            else {
                return Ok(false);
            };
            let entry_age = if max_age != 0 || age == Age::Asked {
                let entries = txn
                    .open_table(ENTRIES)
                    .map_err(|e| engine_error("cannot open the entries table", e))?;
                saved_ago(&entries, id, now)?
            } else {
                None
            };
            // Without metadata, an entry's age is unknown: expired under a store-wide max_age.
            if max_age != 0 && entry_age.is_none_or(|a| a > Duration::from_millis(max_age)) {
                return Ok(false);
            }
            lend(row.value(), id, &txn, |lent| read(lent, entry_age))?;
            true
        };
        if found {
            self.accessed(id, now);
        }
        Ok(found)
    }

    /// Records a hit in the access log (not in a read-only store, which writes no bookkeeping).
    #[inline]
    pub(super) fn accessed(&self, id: &CheckpointId, now: u64) {
        if self.access_mode == AccessMode::ReadOnly {
            return;
        }
        if !self.access.record(Access {
            id: *id.as_bytes(),
            at_ms: now,
        }) || self.access.half_full()
        {
            self.flusher.request_flush();
        }
    }
}

/// Whether the caller wants the entry's age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Unasked,
    Asked,
}

/// How long ago the entry under `id` was saved, by `now` (ms): `None` without metadata.
fn saved_ago(
    entries: &impl ReadableTable<&'static [u8; 16], &'static [u8; 64]>,
    id: &CheckpointId,
    now: u64,
) -> Result<Option<Duration>, Error> {
    let meta = entries
        .get(id.as_bytes())
        .map_err(|e| engine_error("cannot read entry metadata", e))?
        .and_then(|g| EntryMeta::decode(g.value()));
    Ok(meta.map(|m| Duration::from_millis(now.saturating_sub(m.created_ms))))
}

/// Runs `f` on the results row of `id` in `txn`; `None` when there is none.
pub(super) fn with_row<T>(
    txn: &redb::ReadTransaction,
    id: &CheckpointId,
    f: impl FnOnce(&[u8]) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let results = txn
        .open_table(RESULTS)
        .map_err(|e| engine_error("cannot open the results table", e))?;
    let Some(row) = results
        .get(id.as_bytes())
        .map_err(|e| engine_error("cannot read a result", e))?
    else {
        return Ok(None);
    };
    f(row.value()).map(Some)
}

/// Lends a results row: a record, whole; for a manifest, the record's chunks, read from the
/// same transaction.
#[inline]
pub(super) fn lend(
    row: &[u8],
    id: &CheckpointId,
    txn: &redb::ReadTransaction,
    mut read: impl FnMut(Lent<'_>),
) -> Result<(), Error> {
    let table = match Manifest::decode(row) {
        Some(manifest) => chunks::open_read(txn)
            .map_err(|e| engine_error("cannot open the chunks table", e))?
            .map(|table| (manifest, table)),
        None => None,
    };
    match &table {
        Some((manifest, table)) => {
            let parts = TableParts::new(table, *id.as_bytes(), *manifest);
            read(Lent::parts(&parts));
            if parts.broke_handle.get() {
                // The caller had the error; the store's guard must see one too, to reopen the
                // handle before the next operation.
                return Err(engine_error(
                    "cannot read a large record",
                    redb::StorageError::PreviousIo,
                ));
            }
        }
        // A record; or a manifest in a file without chunks, lent as it is: it fails a record's
        // checks.
        None => read(Lent::whole(row)),
    }
    Ok(())
}
