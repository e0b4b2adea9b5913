//! Snapshots of the results table kept between hits.
//!
//! Opening a read transaction and then the results table costs about half of a hit (the
//! engine registers the transaction under its lock, walks its table directory, and decodes the
//! table's type names). A hit instead reads from a snapshot kept open since an earlier hit, as
//! long as nothing was committed since: every commit of this store goes through
//! [`Shared::write`](super::Shared::write), which calls [`Snapshots::invalidate`] after it, so a
//! snapshot taken at the current generation sees every committed write.
//!
//! Snapshots live in a few shards (one `try_lock` each, like the access log): a thread whose
//! shard is busy opens a one-off transaction instead of waiting, so hits never queue behind
//! each other. A snapshot pins the pages it can reach, so `invalidate` drops the stale ones it
//! can lock right away; one in use is replaced at its shard's next hit, or dropped by the
//! next commit.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use redb::{ReadOnlyTable, ReadTransaction};

use super::access::thread_slot;
use super::engine::Db;
use super::engine_error::engine_error;
use super::schema::{ENTRIES, RESULTS};
use crate::error::Error;

type Results = ReadOnlyTable<&'static [u8; 16], &'static [u8]>;
pub(crate) type Entries = ReadOnlyTable<&'static [u8; 16], &'static [u8; 64]>;

/// A read transaction, with its results table open.
pub(crate) struct Snapshot {
    /// The generation current when it was opened: it sees every commit before it.
    pub generation: u64,
    /// Kept for the tables a hit rarely needs (the chunks of a large record).
    pub txn: ReadTransaction,
    pub results: Results,
    /// The entries table, opened by the first hit that asks an entry's age (a function with a
    /// `max_age`), then kept like `results`.
    entries: OnceCell<Entries>,
}

impl Snapshot {
    pub(crate) fn entries(&self) -> Result<&Entries, Error> {
        if let Some(table) = self.entries.get() {
            return Ok(table);
        }
        let table = self
            .txn
            .open_table(ENTRIES)
            .map_err(|e| engine_error("cannot open the entries table", e))?;
        Ok(self.entries.get_or_init(|| table))
    }
}

pub(crate) struct Snapshots {
    /// Bumped after every commit: a snapshot of an older generation may miss it.
    generation: AtomicU64,
    shards: Box<[Mutex<Option<Snapshot>>]>,
}

/// Opens a snapshot of `db` labelled `generation` (read before the database handle was taken,
/// so that it sees at least that generation's commits).
pub(crate) fn open(db: &Db, generation: u64) -> Result<Snapshot, Error> {
    let txn = db
        .begin_read()
        .map_err(|e| engine_error("cannot begin a read", e))?;
    let results = txn
        .open_table(RESULTS)
        .map_err(|e| engine_error("cannot open the results table", e))?;
    Ok(Snapshot {
        generation,
        txn,
        results,
        entries: OnceCell::new(),
    })
}

impl Snapshots {
    pub(crate) fn new() -> Snapshots {
        let shards = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(2, 64)
            .next_power_of_two();
        Snapshots {
            generation: AtomicU64::new(0),
            shards: (0..shards).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The counter of commits that snapshots (and the hot tier) are checked against.
    pub(crate) fn generation(&self) -> &AtomicU64 {
        &self.generation
    }

    /// Runs `f` on a snapshot that sees every commit made before this call; `open` opens a new
    /// one labelled with the generation it is given (see [`open`]), holding the engine's slot
    /// only while it begins the transaction: `f`, which decodes the caller's value, runs under
    /// no lock but its shard's (which other hits `try_lock` and pass by).
    #[inline]
    pub(crate) fn with_snapshot<T>(
        &self,
        open: impl Fn(u64) -> Result<Snapshot, Error>,
        f: impl FnOnce(&Snapshot) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Read before opening: a snapshot opened now sees at least this generation's commits.
        let generation = self.generation.load(Ordering::Acquire);
        let shard = &self.shards[thread_slot() & (self.shards.len() - 1)];
        let Some(mut slot) = shard.try_lock() else {
            return f(&open(generation)?);
        };
        match &*slot {
            Some(s) if s.generation == generation => {}
            _ => {
                // Drop the stale snapshot before opening the next: it pins old pages.
                *slot = None;
                *slot = Some(open(generation)?);
            }
        }
        match &*slot {
            Some(s) => f(s),
            // invariant: the match above left a snapshot in the slot.
            None => f(&open(generation)?),
        }
    }

    /// Marks every snapshot stale; call after each commit, before the writer returns.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.release();
    }

    /// Drops the snapshots not in use (those in use are replaced when next used).
    pub(crate) fn release(&self) {
        for shard in self.shards.iter() {
            if let Some(mut slot) = shard.try_lock() {
                *slot = None;
            }
        }
    }
}
