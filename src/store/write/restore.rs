//! Saving an entry that comes from another store (an archive, see `store/archive.rs`): the same
//! save as any other, then the metadata it had there.

use redb::ReadableTable as _;

use super::{SaveOp, Tx, storage};
use crate::error::Error;
use crate::store::schema::{EntryMeta, FunctionRecord};

impl Tx<'_> {
    /// Saves `op` as [`put`](Tx::put) does, then gives the entry the metadata it had in its
    /// source store: code version, created, last access, hits and compute time from `restored`
    /// (function key and size stay those of `op`). Returns whether an entry with the id was
    /// replaced.
    ///
    /// `op.function` is the newest identity of the function in the source store: it becomes the
    /// function's identity here only if this file has no named row for the function, so that an
    /// import never makes the entries of the code running here stale.
    pub(crate) fn put_restored(
        &mut self,
        op: &SaveOp<'_>,
        restored: &EntryMeta,
    ) -> Result<bool, Error> {
        let key = op.function.key();
        let replaced = self.meta(&op.id)?.is_some();
        let named = self
            .functions
            .get(key)
            .map_err(storage("cannot read a function row"))?
            .and_then(|g| FunctionRecord::decode(g.value()))
            .is_some_and(|r| !r.name.is_empty());
        let identity_before = self.deltas.get(&key).and_then(|d| d.identity.clone());
        self.put(op)?;
        if named {
            self.delta(key).identity = identity_before;
        }
        let Some(saved) = self.meta(&op.id)? else {
            return Err(Error::corrupted(
                "an entry saved by this transaction has no metadata",
            ));
        };
        let meta = EntryMeta {
            fn_key: saved.fn_key,
            size: saved.size,
            ..*restored
        };
        self.unindex(&op.id, &saved)?;
        self.entries
            .insert(&op.id, &meta.encode())
            .map_err(storage("cannot save a result"))?;
        self.index(&op.id, &meta)?;
        Ok(replaced)
    }
}

/// Saving what [`Store::salvage`](crate::Store::salvage) recovered from a damaged store into a
/// new one: rows copied as they were (records already checked, metadata as it was read), with
/// the function counts kept exact by the transaction as for any save.
impl Tx<'_> {
    /// Writes a function row as the damaged store had it (identity, call and eviction counts),
    /// with no entries yet: each salvaged entry adds itself.
    pub(crate) fn put_salvaged_function(
        &mut self,
        key: u64,
        row: &FunctionRecord,
    ) -> Result<(), Error> {
        let row = FunctionRecord {
            entries: 0,
            bytes: 0,
            ..row.clone()
        };
        self.functions
            .insert(key, row.encode().as_slice())
            .map_err(storage("cannot save a salvaged function row"))?;
        Ok(())
    }

    /// Writes chunk `index` of the large record under `id`; its manifest follows with
    /// [`put_salvaged`](Tx::put_salvaged) once every chunk passed the record's check.
    pub(crate) fn put_salvaged_chunk(
        &mut self,
        id: &[u8; 16],
        index: u32,
        chunk: &[u8],
    ) -> Result<(), Error> {
        self.chunks()?
            .insert(&crate::store::chunks::chunk_key(id, index), chunk)
            .map_err(storage("cannot save a salvaged chunk"))?;
        Ok(())
    }

    /// Removes the chunks written for `id` whose record then failed its check.
    pub(crate) fn drop_salvaged_chunks(&mut self, id: &[u8; 16]) -> Result<(), Error> {
        crate::store::chunks::remove_chunks(self.chunks()?, id, 0)
    }

    /// Saves a checked results row (a record, or the manifest of one whose chunks were written)
    /// under `id` with `meta`, whose size must be the record's. The store is new: no entry is
    /// replaced.
    pub(crate) fn put_salvaged(
        &mut self,
        id: &[u8; 16],
        row: &[u8],
        meta: &EntryMeta,
    ) -> Result<(), Error> {
        let e = storage("cannot save a salvaged entry");
        self.entries.insert(id, &meta.encode()).map_err(&e)?;
        self.results.insert(id, row).map_err(&e)?;
        self.index(id, meta)?;
        self.changed.push(*id);
        let delta = self.delta(meta.fn_key);
        delta.entries += 1;
        delta.bytes += meta.size as i64;
        Ok(())
    }
}
