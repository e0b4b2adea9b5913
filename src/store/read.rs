//! The hit path's store half: a read of one results row from a kept snapshot (or a fresh read
//! transaction), lent to the decorator's decoder without a copy, and the access recorded in the
//! log. See ARCHITECTURE.md, "The hit path".

use std::sync::atomic::Ordering;

use super::access::Access;
use super::chunks::{self, Manifest, TableParts};
use super::engine_error::engine_error;
use super::options::{AccessMode, ConcurrencyMode};
use super::schema::{ENTRIES, EntryMeta, RESULTS};
use super::{Shared, snapshot};
use crate::error::Error;
use crate::id::CheckpointId;
use crate::record::{self, Lent};

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
        // A panic of the caller's `read` is the caller's: carried past the engine's guard and
        // resumed.
        let mut caller_panic = None;
        let found = self.engine.guard("cannot read", || {
            self.read_inner(id, &mut |bytes| {
                if let Err(p) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(bytes)))
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
    pub(super) fn read_inner(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
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
                lend(row, id, &snap.txn, read)?;
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
            if max_age != 0 && self.expired(&txn, id, now, max_age)? {
                return Ok(false);
            }
            lend(row.value(), id, &txn, read)?;
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

    /// Whether the entry was saved more than `max_age` ms ago (it is then a miss, and the next
    /// write removes it).
    pub(super) fn expired(
        &self,
        txn: &redb::ReadTransaction,
        id: &CheckpointId,
        now: u64,
        max_age: u64,
    ) -> Result<bool, Error> {
        let entries = txn
            .open_table(ENTRIES)
            .map_err(|e| engine_error("cannot open the entries table", e))?;
        let meta = entries
            .get(id.as_bytes())
            .map_err(|e| engine_error("cannot read entry metadata", e))?
            .and_then(|g| EntryMeta::decode(g.value()));
        Ok(meta.is_none_or(|m| now.saturating_sub(m.created_ms) > max_age))
    }
}

/// Lends a results row: a record, whole; for a manifest, the record's chunks, read from the
/// same transaction.
#[inline]
pub(super) fn lend(
    row: &[u8],
    id: &CheckpointId,
    txn: &redb::ReadTransaction,
    read: &mut dyn FnMut(Lent<'_>),
) -> Result<(), Error> {
    let table = match Manifest::decode(row) {
        Some(manifest) => chunks::open_read(txn)
            .map_err(|e| engine_error("cannot open the chunks table", e))?
            .map(|table| (manifest, table)),
        None => None,
    };
    match &table {
        Some((manifest, table)) => read(Lent::parts(&TableParts {
            table,
            id: *id.as_bytes(),
            manifest: *manifest,
        })),
        // A record; or a manifest in a file without chunks, lent as it is: it fails a record's
        // checks.
        None => read(Lent::whole(row)),
    }
    Ok(())
}
