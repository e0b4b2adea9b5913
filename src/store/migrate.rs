//! Bringing a store of an older schema up to this build's, in place, when it is opened for
//! writing.
//!
//! Schema 1 → 2: function rows may end with the value type's name. A version-1 row still
//! decodes (`FunctionRecord::decode` reads both layouts) and is rewritten in the new layout by
//! the next transaction that touches it, so the migration only records the new version: one
//! small transaction, atomic like every commit (a crash leaves the file at version 1 or 2,
//! both of which open). It runs so that a build that knows only version 1 refuses the file
//! with `NewerSchema` rather than reading a new row as damaged.

use std::path::Path;

use redb::{Database, ReadableDatabase};

use super::schema::{INFO, SCHEMA_KEY, SCHEMA_VERSION};
use crate::error::{OpenError, OpenErrorKind};

/// Records `SCHEMA_VERSION` in a file of an older (already checked, ≥ 1) schema.
pub(crate) fn to_current(path: &Path, db: &Database) -> Result<(), OpenError> {
    let io = |e: redb::Error| OpenError::with_source(path, OpenErrorKind::Io, e);
    let current = SCHEMA_VERSION.to_le_bytes();
    {
        let txn = db.begin_read().map_err(|e| io(e.into()))?;
        let info = txn.open_table(INFO).map_err(|e| io(e.into()))?;
        let found = info.get(SCHEMA_KEY).map_err(|e| io(e.into()))?;
        if found.is_some_and(|v| v.value() == current.as_slice()) {
            return Ok(());
        }
    }
    let txn = db.begin_write().map_err(|e| io(e.into()))?;
    {
        let mut info = txn.open_table(INFO).map_err(|e| io(e.into()))?;
        info.insert(SCHEMA_KEY, current.as_slice())
            .map_err(|e| io(e.into()))?;
    }
    txn.commit().map_err(|e| io(e.into()))
}
