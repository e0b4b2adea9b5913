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
