//! The engine slot: the redb database behind a store, the boundary that keeps the engine's panics
//! from escaping, and the reopen that makes a store usable again after a failure.
//!
//! redb latches an I/O error: once a read, write or sync of its file fails, every later operation
//! of that database handle fails too (`PreviousIo`), even when the cause (a full disk, a flaky
//! network mount) has gone. A panic inside the engine leaves the handle in an unknown state. In
//! both cases the slot marks the handle broken, and the next operation closes it and opens the
//! file again, which runs the engine's crash recovery; until that succeeds, every operation
//! returns a typed error.
//!
//! The slot is a `RwLock`: transactions begin under the shared lock (hits hold it only while
//! their read transaction begins; a write transaction holds it until it commits), and only a
//! reopen, [`verify`](crate::Store::verify) and [`repair`](crate::Store::repair) take it
//! exclusively.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, TransactionError};

use super::engine_error::engine_error;
use super::hot::HotTier;
use super::snapshot::Snapshots;
use crate::error::{Error, ErrorKind, OpenError};

/// Opens the store's database again (same file, same options).
pub(crate) type Opener = Box<dyn Fn() -> Result<Db, OpenError> + Send + Sync>;

/// The engine's handle on the file: writable, or read-only (`StoreBuilder::read_only`), which
/// the engine opens without writing a byte and which has no way to write one.
pub(crate) enum Db {
    Writable(Database),
    ReadOnly(ReadOnlyDatabase),
}

impl Db {
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        match self {
            Db::Writable(db) => db.begin_read(),
            Db::ReadOnly(db) => db.begin_read(),
        }
    }

    /// The writable handle, or the typed error of a read-only store for `what`.
    pub(crate) fn writable(&self, what: &str) -> Result<&Database, Error> {
        match self {
            Db::Writable(db) => Ok(db),
            Db::ReadOnly(_) => Err(Error::read_only(what)),
        }
    }

    /// As [`writable`](Self::writable), for operations that need the handle to themselves.
    pub(crate) fn writable_mut(&mut self, what: &str) -> Result<&mut Database, Error> {
        match self {
            Db::Writable(db) => Ok(db),
            Db::ReadOnly(_) => Err(Error::read_only(what)),
        }
    }
}

pub(crate) struct Engine {
    /// Results-table snapshots kept between hits (see `snapshot.rs`). They are read
    /// transactions of the database in `slot`: dropped before it is closed, reopened or used
    /// exclusively.
    snapshots: Snapshots,
    /// Checked records of recent hits (see `hot.rs`), if the store keeps any.
    hot: Option<HotTier>,
    slot: RwLock<Option<Db>>,
    broken: AtomicBool,
    /// Closed for good (the process is exiting, see `exit.rs`): no reopen.
    closed: AtomicBool,
    reopen: Opener,
    path: PathBuf,
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Whether `err` means the database handle cannot be used again: redb latched an I/O failure.
pub(crate) fn breaks_handle(err: &Error) -> bool {
    let Some(source) = std::error::Error::source(err) else {
        return false;
    };
    matches!(
        source.downcast_ref::<redb::Error>(),
        Some(redb::Error::Io(_) | redb::Error::PreviousIo)
    )
}

impl Engine {
    pub(crate) fn new(db: Db, path: &Path, reopen: Opener, hot: Option<HotTier>) -> Engine {
        Engine {
            snapshots: Snapshots::new(),
            hot,
            slot: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reopen,
            path: path.to_path_buf(),
        }
    }

    /// The hits' snapshots.
    pub(crate) fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The hot tier, if the store keeps one.
    #[inline]
    pub(crate) fn hot(&self) -> Option<&HotTier> {
        self.hot.as_ref()
    }

    /// After a commit that saved or removed `changed`: hits see it from now on.
    pub(crate) fn committed(&self, changed: &[[u8; 16]]) {
        // The generation first: a record read before it is not admitted after.
        self.snapshots.invalidate();
        if let Some(hot) = &self.hot {
            for id in changed {
                hot.remove(id);
            }
        }
    }

    /// Before the file changes outside a write transaction (a check, a repair, a compaction, a
    /// reopen): nothing read before may be served after.
    fn forget_reads(&self) {
        self.snapshots.invalidate();
        if let Some(hot) = &self.hot {
            hot.clear();
        }
    }

    /// Closes the database now, cleanly, for good: later operations fail with
    /// `ErrorKind::Closed`. Waits for a write transaction in progress to end.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut slot = self.slot.write();
        self.forget_reads();
        if let Some(db) = slot.take() {
            // Closing the database can panic on a damaged file.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }

    fn closed_error(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!(
                "the store {} was closed as the process exits",
                self.path.display()
            ),
        )
    }

    /// Marks the handle unusable: the next operation reopens the file.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
        // Hits on a kept snapshot take no slot lock: make them take it (and reopen) too.
        self.forget_reads();
    }

    /// Runs `body`, an operation on the store, so that nothing escapes it but a typed error: a
    /// panic inside it (a damaged file can make the engine panic) becomes an error and marks the
    /// handle broken, as does an I/O failure.
    pub(crate) fn guard<T>(
        &self,
        what: &str,
        body: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if breaks_handle(&e) {
                    self.mark_broken();
                }
                Err(e)
            }
            Err(payload) => {
                self.mark_broken();
                Err(Error::corrupted(format!(
                    "{what}: the storage engine panicked ({}); the store file {} may be damaged: \
                     run Store::verify; if it is beyond repair, copy what is intact into a new store \
                     with Store::salvage, or delete it (checkpoints are recomputable)",
                    panic_message(&*payload),
                    self.path.display()
                )))
            }
        }
    }

    /// The database, shared, reopened first if the handle is broken. Hold the guard only to
    /// begin a transaction, or for the life of a write transaction.
    pub(crate) fn db(&self) -> Result<MappedRwLockReadGuard<'_, Db>, Error> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(self.closed_error());
            }
            if self.broken.load(Ordering::Acquire) {
                self.recover()?;
            }
            let slot = self.slot.read();
            if slot.is_some() && !self.broken.load(Ordering::Acquire) {
                return Ok(RwLockReadGuard::map(slot, |s| {
                    // invariant: `is_some()` was checked under this same guard.
                    s.as_ref().expect("the slot holds a database") // invariant
                }));
            }
            if slot.is_none() {
                drop(slot);
                self.broken.store(true, Ordering::Release);
            }
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, Error> {
        self.db()?
            .begin_read()
            .map_err(|e| engine_error("cannot begin a read", e))
    }

    /// Closes the broken handle and opens the file again.
    fn recover(&self) -> Result<(), Error> {
        let mut slot = self.slot.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        if !self.broken.load(Ordering::Acquire) && slot.is_some() {
            return Ok(());
        }
        // Drop the snapshots with the old handle. One that a hit is decoding under (it holds
        // its shard, not the slot) is dropped by the next forget, once the hit lets go of it.
        self.forget_reads();
        // Close the old handle first: it holds the file's lock.
        if let Some(old) = slot.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        }
        let opened = catch_unwind(AssertUnwindSafe(|| (self.reopen)())).unwrap_or_else(|p| {
            Err(OpenError::with_source(
                &self.path,
                crate::error::OpenErrorKind::Corrupted,
                format!("the storage engine panicked: {}", panic_message(&*p)),
            ))
        });
        let db = opened.map_err(|e| {
            Error::with_source(
                ErrorKind::Storage,
                "the store failed earlier and cannot be reopened yet",
                e,
            )
        })?;
        *slot = Some(db);
        self.broken.store(false, Ordering::Release);
        Ok(())
    }

    /// Runs `f` on the database with no other transaction alive: new ones wait for the exclusive
    /// lock, and live ones (hits finishing) are waited for, up to a minute: `f` returns `Ok(None)`
    /// when it found one (redb's `TransactionInProgress`), to be called again.
    pub(crate) fn exclusive<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Db) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        if self.broken.load(Ordering::Acquire) {
            self.recover()?;
        }
        let mut slot = self.slot.write();
        // Snapshots are open read transactions, which an exclusive operation cannot run beside;
        // nobody holds the slot now, so none is in use. What it changes, the hot tier must not
        // serve.
        self.forget_reads();
        let db = slot
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Closed, format!("{what}: store closed")))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = f(db)? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Storage,
                    format!("{what}: a transaction stayed open for a minute; try again"),
                ));
            }
            // A snapshot that was in use (a hit decoding its value) when they were forgotten
            // stays in its shard after the hit, and no hit can replace it while the slot is
            // held here: drop it as soon as it is free.
            self.snapshots.release();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Snapshots first: they are read transactions of the database.
        self.snapshots.release();
        // Closing the database can panic too on a damaged file; a destructor must not.
        if let Some(db) = self.slot.get_mut().take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}
