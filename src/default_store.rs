//! The default store: `.ckpt/checkpoints.redb` under the working directory, or under `CKPT_DIR`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::{Cache, Entry, LargeEntry, Lent, PendingSave};
use crate::error::{Error, OpenError};
use crate::id::{CheckpointId, Function};
use crate::stats::Counters;
use crate::store::Store;

/// The environment variable naming the default store's folder.
pub const DIR_VAR: &str = "CKPT_DIR";
/// The default store's folder when `CKPT_DIR` is unset, relative to the working directory.
pub const DEFAULT_DIR: &str = ".ckpt";
/// The default store's file name inside its folder.
pub const DEFAULT_FILE: &str = "checkpoints.redb";

/// The path of the default store: `$CKPT_DIR/checkpoints.redb`, or
/// `.ckpt/checkpoints.redb` under the working directory.
pub fn default_store_path() -> PathBuf {
    let dir = std::env::var_os(DIR_VAR)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
    dir.join(DEFAULT_FILE)
}

static DEFAULT: OnceLock<Store> = OnceLock::new();

/// The process-wide handle to the default store, opened on first use.
///
/// Every [`checkpoint!`](crate::checkpoint) function without a `cache = ...` option shares it.
/// When the process exits normally its buffered bookkeeping is flushed and its file closed
/// cleanly (an `atexit` handler, as for every store still open then); a crash loses only the
/// counts since the last write.
///
/// # Errors
/// When the store cannot be opened. The failure is not remembered: the next call tries again.
pub fn default_store() -> Result<Store, OpenError> {
    if let Some(store) = DEFAULT.get() {
        return Ok(store.clone());
    }
    // Serialize first opens: two threads opening the file at once would lock each other out.
    static OPENING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _guard = OPENING.lock();
    if let Some(store) = DEFAULT.get() {
        return Ok(store.clone());
    }
    let store = Store::open(default_store_path())?;
    let store = DEFAULT.get_or_init(|| store).clone();
    Ok(store)
}

/// A [`Cache`] that is the [default store](default_store), opened on first use.
///
/// Opening failures surface as errors of each call (under the decorator's
/// [`OnError`](crate::OnError) policy) until the store opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DefaultStore;

fn store() -> Result<Store, Error> {
    default_store().map_err(Error::from)
}

impl Cache for DefaultStore {
    fn flight_scope(&self) -> usize {
        // Every `DefaultStore` is the one default store (a zero-sized value has no address of
        // its own to tell it by).
        std::ptr::addr_of!(DEFAULT).addr()
    }

    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), Error> {
        store()?.save(id, entry)
    }

    fn save_many(&self, entries: &[(CheckpointId, Entry<'_>)]) -> Result<(), Error> {
        store()?.save_many(entries)
    }

    fn save_deferred(&self, id: &CheckpointId, entry: &Entry<'_>) -> PendingSave {
        match store() {
            Ok(store) => store.save_deferred(id, entry),
            Err(e) => PendingSave::ready(Err(e)),
        }
    }

    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, Error> {
        store()?.retrieve(id)
    }

    fn retrieve_parts(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        match DEFAULT.get() {
            Some(s) => s.retrieve_parts(id, read),
            None => store()?.retrieve_parts(id, read),
        }
    }

    fn save_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) -> Result<(), Error> {
        store()?.save_large(id, entry)
    }

    fn retrieve_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        store()?.retrieve_aged(id, read)
    }

    fn expire_function(&self, function: &Function, max_age: Duration) -> Result<(), Error> {
        store()?.expire_function(function, max_age)
    }

    fn remove(&self, id: &CheckpointId) -> Result<bool, Error> {
        Cache::remove(&store()?, id)
    }

    fn register(&self, function: &Function, counters: &Arc<Counters>) -> Result<(), Error> {
        store()?.register(function, counters)
    }

    fn lease(&self, id: &CheckpointId) -> Result<crate::cache::Lease, Error> {
        store()?.lease(id)
    }

    fn lease_far(&self, id: &CheckpointId) -> Option<crate::cache::PendingLease> {
        store().ok()?.lease_far(id)
    }

    fn compression(&self) -> crate::record::Compression {
        // The default store is opened with default options: its default is `None` until open.
        DEFAULT
            .get()
            .map_or_else(Default::default, Cache::compression)
    }
}
