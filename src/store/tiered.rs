//! The store in front of its remote tier (feature `remote`): a local miss asks the remote, a
//! sound object is backfilled into the file exactly as a local save would write it, and what
//! the store saves is published. See ARCHITECTURE.md, "The remote tier".

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::chunks::Manifest;
use super::options::{AccessMode, to_ms};
use super::read::{lend, with_row};
use super::save::Commit;
use super::{Shared, Store};
use crate::cache::{
    Entry, LargeEntry, Lease, LeaseGuard, Lent, PendingLease, PendingSave, block_on,
};
use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::record::{EncodeRecord, LentBytes, RecordSink};
use crate::remote::{Body, Claimed, Lookup, Published, RecordSource, RemoteMode, RemoteRecord};
use crate::stats::RemoteStats;

// Large backfills saved after their call returns, readable meanwhile.
mod backfill;

pub(crate) use self::backfill::Backfills;
use self::backfill::{Backfill, LATER_FROM};

/// When a backfill is written into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Before the lookup returns (a lease's poll, whose caller reads the file next; a pull).
    Now,
    /// A large record after the call returns, by the store's background thread (see
    /// `backfill.rs`); a small one at once.
    Soon,
}

impl Shared {
    /// The hit path with the remote behind it: the local file first; on a miss, the remote.
    #[inline]
    pub(super) fn read_through(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>),
    ) -> Result<bool, Error> {
        if self.read(id, read)? {
            return Ok(true);
        }
        match &self.remote {
            Some(tier) if tier.mode() != RemoteMode::Off => {
                self.fetch_remote(id, &mut |lent, _| read(lent))
            }
            _ => Ok(false),
        }
    }

    /// As `read_through`, lending the entry's age: a remote object's is its write time's, and
    /// its backfill keeps it (an old result does not become fresh by crossing machines).
    pub(super) fn read_through_aged(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        if self.read_aged(id, read)? {
            return Ok(true);
        }
        match &self.remote {
            Some(tier) if tier.mode() != RemoteMode::Off => self.fetch_remote(id, read),
            _ => Ok(false),
        }
    }

    /// After a local miss: a backfill still waiting to be saved, else the remote.
    #[cold]
    fn fetch_remote(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        if self.read_waiting(id, read) {
            return Ok(true);
        }
        Ok(self
            .fetch_backfill(id, Lookup::Miss, Keep::Soon, read)?
            .is_some())
    }

    /// After a local miss of a store whose file is read-only: the record an async call's
    /// `fetch_far` parked for `id`, if any, lent with its age. Only the near lookups ask (the
    /// async path, which fetches through `fetch_far`); the through lookups ask the remote, so
    /// that a parked record never hides a newer object from them. A record older than the
    /// store's `max_age` is not served, as a local entry or a remote object that old is not.
    pub(super) fn read_parked(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> bool {
        if self.access_mode == AccessMode::ReadWrite {
            return self.read_waiting(id, read);
        }
        let Some(tier) = self.remote.as_ref() else {
            return false;
        };
        let Some((record, saved_ms)) = tier.parked(id) else {
            return false;
        };
        let age = saved_ms.map(|saved| Duration::from_millis(self.now_ms().saturating_sub(saved)));
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        if max_age != 0 && age.is_none_or(|a| a > Duration::from_millis(max_age)) {
            tier.unpark(id);
            return false;
        }
        read(Lent::whole(&record), age);
        true
    }

    /// Before the decorator computes a miss of `id`: the id's lease in the remote
    /// (`Dedup::Lease`), or another machine's result, backfilled, if it arrives while waiting.
    pub(super) fn lease(&self, id: &CheckpointId) -> Result<Lease, Error> {
        self.lease_unless(id, &|| false)
    }

    /// As `lease`, giving up (`Closed`) at the next poll once `abandoned` says nobody awaits
    /// the lease any more: an async caller cancelled while it waits for another machine's
    /// lease does not leave a thread polling for it until the lease ends.
    fn lease_unless(
        &self,
        id: &CheckpointId,
        abandoned: &dyn Fn() -> bool,
    ) -> Result<Lease, Error> {
        let Some(tier) = &self.remote else {
            return Ok(Lease::Granted(LeaseGuard::none()));
        };
        // A file opened read-only keeps, and so publishes, nothing it computes: a lease it held
        // would only have other machines wait for a result that never comes.
        if self.access_mode != AccessMode::ReadWrite {
            return Ok(Lease::Granted(LeaseGuard::none()));
        }
        let mut poll = || {
            if abandoned() {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "nobody waits for this lease any more",
                ));
            }
            Ok(self
                .fetch_backfill(id, Lookup::Poll, Keep::Now, &mut |_, _| {})?
                .is_some())
        };
        Ok(match tier.lease(id, &mut poll)? {
            Claimed::Held(held) => Lease::Granted(LeaseGuard::new(held)),
            Claimed::Unleased => Lease::Granted(LeaseGuard::none()),
            Claimed::Served => Lease::Served,
        })
    }

    /// A remote lookup of `id` and its backfill: `None` on a remote miss, else whether the
    /// object was (or, `Keep::Soon`, will be) written into the local file.
    fn fetch_backfill(
        &self,
        id: &CheckpointId,
        lookup: Lookup,
        keep: Keep,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<Option<bool>, Error> {
        let Some(tier) = &self.remote else {
            return Ok(None);
        };
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        let Some(fetched) = tier.fetch(id, (max_age != 0).then_some(max_age), lookup)? else {
            return Ok(None);
        };
        let now = to_ms(self.clock.now());
        let age = Duration::from_millis(now.saturating_sub(fetched.saved_ms));
        let value_type = fetched.value_type.as_deref().and_then(intern);
        let compute = Duration::from_nanos(fetched.compute_nanos);
        let record = match fetched.body {
            Body::Whole(record) => record,
            Body::Streamed(remote) if self.access_mode == AccessMode::ReadWrite => {
                match Spool::create(&self.path) {
                    Ok(spool) => {
                        return self.backfill_spooled(
                            id,
                            &fetched.function,
                            value_type,
                            compute,
                            fetched.saved_ms,
                            spool,
                            remote,
                            age,
                            read,
                        );
                    }
                    // No room beside the store (a folder it may not write): read whole, then
                    // saved as a smaller record is, so that the store's writer is never held
                    // while the network trickles.
                    Err(e) => {
                        not_spooled(id, &e);
                        match remote.collect()? {
                            Some(record) => record,
                            None => return Ok(None),
                        }
                    }
                }
            }
            // A store that cannot keep it: read whole (and checked) to be lent.
            Body::Streamed(remote) => match remote.collect()? {
                Some(record) => record,
                None => return Ok(None),
            },
        };
        let mut kept = false;
        if self.access_mode == AccessMode::ReadWrite {
            // The backfill: the same save a computed result gets (same id, same record bytes,
            // the function's metadata and counts), committed without waiting for the disk; a
            // large one after the call returns (`backfill.rs`).
            let backfill = Arc::new(Backfill {
                function: fetched.function.clone(),
                record: record.clone(),
                value_type,
                compute,
                saved_ms: fetched.saved_ms,
                fetched_ms: now,
                served: Default::default(),
            });
            if keep == Keep::Soon && record.len() >= LATER_FROM && self.save_later(id, &backfill) {
                kept = true;
            } else {
                match self.save_backfill(id, &backfill.entry()) {
                    Ok(()) => {
                        tier.backfilled();
                        kept = true;
                    }
                    // Still a sound record: returned, not kept (a byte cap it cannot fit, a
                    // store that degraded); the next call asks the remote again.
                    Err(e) => not_kept(id, &e),
                }
            }
        }
        // Checked already (`Tier::fetch` parsed the whole record, or the stream was checked as
        // it was read): the decoder does not hash it a second time.
        read(Lent::checked(&record), Some(age));
        Ok(Some(kept))
    }

    /// The backfill of a large object: spooled to a temporary file beside the store as it
    /// arrives, checked as it is (a damaged object leaves nothing behind), then saved from that
    /// file into the store's chunks and lent from the store, so that the record is never held
    /// whole, and the store's writer is held for a local copy, never for the network.
    #[allow(clippy::too_many_arguments)]
    fn backfill_spooled(
        &self,
        id: &CheckpointId,
        function: &Function,
        value_type: Option<&'static str>,
        compute: Duration,
        saved_ms: u64,
        mut spool: Spool,
        mut remote: Box<RemoteRecord>,
        age: Duration,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<Option<bool>, Error> {
        let spooled = match remote.write_unsealed(&mut spool) {
            Ok(checksum) => Spooled {
                spool: RefCell::new(spool),
                checksum,
                fingerprint: remote.fingerprint(),
            },
            Err(_) if remote.was_damaged() => return Ok(None),
            Err(e) => {
                // Not kept, and the stream is spent: the next call asks the remote again.
                not_kept(id, &e);
                return Err(e);
            }
        };
        let mut entry = LargeEntry::new(function, &spooled, compute);
        if let Some(name) = value_type {
            entry = entry.with_value_type(name);
        }
        entry.created_ms = Some(saved_ms);
        if let Err(e) = self.save_large(id, &entry, Commit::Relaxed) {
            not_kept(id, &e);
            return Err(e);
        }
        if let Some(tier) = &self.remote {
            tier.backfilled();
        }
        let found = self.read(id, &mut |lent| read(lent, Some(age)))?;
        Ok(found.then_some(true))
    }

    /// Publishes what was just saved under `id` (read-write remotes only).
    pub(super) fn publish(
        &self,
        id: &CheckpointId,
        function: &Function,
        value_type: Option<&str>,
        record: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        if let Some(tier) = &self.remote {
            tier.publish(id, function, value_type, || {
                record().map(RecordSource::Whole)
            });
        }
    }

    /// The length of the record under `id`, from its results row.
    fn record_len(&self, id: &CheckpointId) -> Result<Option<u64>, Error> {
        self.engine.guard("cannot read a record", || {
            let txn = self.engine.begin_read()?;
            with_row(&txn, id, |row| {
                Ok(Manifest::decode(row).map_or(row.len() as u64, |m| m.len))
            })
        })
    }

    /// Hands the record under `id` to `sink` in order, part by part, from one read
    /// transaction, until `sink` says stop; says whether the record was there. Nothing is
    /// counted as an access.
    fn stream_record(
        &self,
        id: &CheckpointId,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<bool, Error> {
        self.engine.guard("cannot read a record", || {
            let txn = self.engine.begin_read()?;
            let streamed = with_row(&txn, id, |row| {
                let mut streamed = Ok(true);
                lend(row, id, &txn, |lent| {
                    streamed = match lent.bytes() {
                        LentBytes::Whole(b) | LentBytes::Checked(b) => Ok(sink(b)),
                        LentBytes::Parts(parts) => (0..parts.count())
                            .try_fold(true, |go, i| Ok(go && sink(&parts.part(i)?))),
                    };
                })?;
                streamed
            })?;
            Ok(streamed.unwrap_or(false))
        })
    }

    /// Saves the backfills waiting, and waits for the background publishes queued so far.
    pub(super) fn flush_remote(&self) {
        self.save_all_waiting();
        if let Some(tier) = &self.remote {
            tier.flush();
        }
    }

    pub(crate) fn remote_stats(&self) -> Option<RemoteStats> {
        self.remote.as_ref().map(|tier| tier.stats())
    }

    /// The remote's counts now, and what of them the file has not recorded yet.
    pub(super) fn remote_unflushed(&self) -> Option<(RemoteStats, RemoteStats)> {
        self.remote.as_ref()?.unflushed()
    }

    /// The counts `now` are recorded in the file (a write committed them).
    pub(super) fn remote_flushed(&self, now: RemoteStats) {
        if let Some(tier) = &self.remote {
            tier.flushed(now);
        }
    }
}

/// What [`Store::push`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushReport {
    /// Local entries the remote did not have, published.
    pub published: u64,
    /// Local entries the remote had already (results are write-once: left as they are).
    pub already_present: u64,
    /// Local entries of a code version older than their function's newest in this store: the
    /// store keeps no identity (version, code hash) for those, so they cannot be published.
    pub skipped: u64,
    /// Publishes that failed (each also went to the warning hook).
    pub failed: u64,
    /// Record bytes of the entries published.
    pub bytes: u64,
}

/// What [`Store::pull`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullReport {
    /// Objects fetched, checked and written into the local file.
    pub pulled: u64,
    /// Objects whose id the local file has already (not fetched).
    pub already_local: u64,
    /// Objects not written: gone meanwhile, damaged, too old for the store's `max_age`, or
    /// refused by the local file (a byte cap).
    pub not_pulled: u64,
    /// Record bytes written into the local file.
    pub bytes: u64,
}

impl Store {
    /// Publishes every entry of the local file to the store's remote (`ckpt remote push`), each
    /// now and create-if-absent, whatever the [`PublishMode`](crate::PublishMode): an object
    /// already there is left as it is and counted. `progress` is called after each entry with
    /// the entries done and their total.
    ///
    /// ```
    /// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Remote, RemoteMode, Store};
    /// # let dir = std::env::temp_dir().join(format!("ckpt-doc-push-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let alone = Store::open(dir.join("a.redb"))?; // no remote when it computed
    /// let f = DecoratorCheckpoint::new(Function::new("doc", "double"), AutoIdentifier, alone.clone());
    /// f.call(21u64, |x| x * 2)?;
    /// drop((f, alone));
    ///
    /// let team = Remote::open("memory://")?;
    /// let store = Store::builder().remote(team.clone(), RemoteMode::ReadWrite).open(dir.join("a.redb"))?;
    /// let report = store.push(&mut |_, _| {})?;
    /// assert_eq!(report.published, 1);
    /// assert_eq!(team.objects()?.len(), 1);
    /// assert_eq!(store.push(&mut |_, _| {})?.already_present, 1);
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] when the store has no remote
    /// in [`RemoteMode::ReadWrite`]; a storage error reading the file. A failed publish is not
    /// an error: it is counted in the report.
    pub fn push(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<PushReport, Error> {
        let shared = self.shared();
        let tier = match &shared.remote {
            Some(tier) if tier.mode() == RemoteMode::ReadWrite => tier,
            _ => {
                return Err(Error::new(
                    crate::error::ErrorKind::Unsupported,
                    "cannot push: the store has no read-write remote (StoreBuilder::remote)",
                ));
            }
        };
        // The identity of each function's newest code version, as its row records it.
        let mut newest: HashMap<u64, (u64, Function, Option<String>)> = HashMap::new();
        for row in self.stats()?.functions {
            if row.name.is_empty() {
                continue;
            }
            let mut f = Function::new(row.module.clone(), row.name.clone());
            if let Some(h) = row.code_hash {
                f = f.with_code_hash(h);
            }
            if let Some(v) = &row.version {
                f = f.with_version(v.clone());
            }
            newest.insert(row.key, (row.code_version, f, row.value_type.clone()));
        }
        let entries = self.entries()?;
        let total = entries.len() as u64;
        let mut report = PushReport::default();
        for (done, e) in entries.iter().enumerate() {
            match newest.get(&e.function_key) {
                Some((version, f, value_type))
                    if *version == e.code_version && f.code_version() == e.code_version =>
                {
                    // Read from the file as it is published (a large record part by part).
                    let Some(len) = shared.record_len(&e.id)? else {
                        continue; // Removed meanwhile: nothing to publish.
                    };
                    let record = self.local_source(&e.id, len, None);
                    match tier.publish_sync(&e.id, f, value_type.as_deref(), record) {
                        Published::Created => {
                            report.published += 1;
                            report.bytes += len;
                        }
                        Published::AlreadyPresent => report.already_present += 1,
                        Published::Failed => report.failed += 1,
                        Published::Gone => {}
                    }
                }
                _ => report.skipped += 1,
            }
            progress(done as u64 + 1, total);
        }
        Ok(report)
    }

    /// Prefetches `objects` of the store's remote (from [`Remote::objects`](crate::Remote::objects),
    /// say one function's) into the local file (`ckpt remote pull`): each is fetched, checked
    /// and backfilled as a local miss would, unless the file has its id already. `progress` is
    /// called after each object with the objects done and their total.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] when the store has no remote
    /// (or it is off); [`ErrorKind::ReadOnly`] on a read-only
    /// store; [`ErrorKind::Remote`] when a fetch fails.
    pub fn pull(
        &self,
        objects: &[crate::remote::RemoteObject],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PullReport, Error> {
        let shared = self.shared();
        match &shared.remote {
            Some(tier) if tier.mode() != RemoteMode::Off => {}
            _ => {
                return Err(Error::new(
                    crate::error::ErrorKind::Unsupported,
                    "cannot pull: the store has no remote (StoreBuilder::remote)",
                ));
            }
        }
        if shared.access_mode != AccessMode::ReadWrite {
            return Err(Error::read_only("pull from the remote"));
        }
        let local: HashSet<CheckpointId> = self.entries()?.into_iter().map(|e| e.id).collect();
        let total = objects.len() as u64;
        let mut report = PullReport::default();
        for (done, o) in objects.iter().enumerate() {
            match o.id {
                Some(id) if local.contains(&id) => report.already_local += 1,
                Some(id) => {
                    let mut len = 0;
                    match shared.fetch_backfill(&id, Lookup::Miss, Keep::Now, &mut |lent, _| {
                        len = lent.len()
                    })? {
                        Some(true) => {
                            report.pulled += 1;
                            report.bytes += len;
                        }
                        _ => report.not_pulled += 1,
                    }
                }
                None => report.not_pulled += 1,
            }
            progress(done as u64 + 1, total);
        }
        // The backfills' commits did not wait for the disk: one durable commit for them all
        // (which writes the buffered bookkeeping too).
        shared.write(Commit::Durably, |_| Ok(()))?;
        Ok(report)
    }

    /// Publishes a large entry just saved: read back from the file as it is published, part
    /// by part (in the background by default), never whole.
    pub(super) fn publish_large(&self, id: &CheckpointId, entry: &LargeEntry<'_>) {
        let Some(tier) = &self.shared().remote else {
            return;
        };
        tier.publish(id, entry.function(), entry.value_type(), || {
            let len = self.shared().record_len(id).ok().flatten()?;
            Some(self.local_source(id, len, Some(entry.fingerprint())))
        });
    }

    /// Publishes the record of a deferred save ([`Cache::save_deferred`]) and returns the save
    /// to await. A publish that would upload on this thread ([`PublishMode::Sync`]) runs on a
    /// thread of the remote's runtime (its blocking pool) instead, and the save returned
    /// completes when both its commit and the upload are done: an async caller awaits the
    /// upload, and its executor's thread never waits for the network.
    ///
    /// [`Cache::save_deferred`]: crate::Cache::save_deferred
    /// [`PublishMode::Sync`]: crate::PublishMode::Sync
    pub(super) fn publish_deferred(
        &self,
        id: &CheckpointId,
        entry: &Entry<'_>,
        committed: PendingSave,
    ) -> PendingSave {
        let shared = self.shared();
        let Some(tier) = &shared.remote else {
            return committed;
        };
        if !tier.publishes_inline(id) || !crate::remote::runtime_available() {
            shared.publish(id, entry.function(), entry.value_type(), || {
                Some(entry.bytes().to_vec())
            });
            return committed;
        }
        let (done, pending) = PendingSave::channel();
        let store = self.clone();
        let (id, function) = (*id, entry.function().clone());
        let value_type = entry.value_type().map(str::to_string);
        let record = entry.bytes().to_vec();
        // invariant: the runtime is available (checked above), so the task is started; were it
        // not, the completer would drop with it, and the save end as an error, not hang.
        let _ = crate::remote::off_thread(move || {
            store
                .shared()
                .publish(&id, &function, value_type.as_deref(), || Some(record));
            done.complete(block_on(committed));
        });
        pending
    }

    /// [`Shared::lease`] on a thread of the remote's runtime (its blocking pool), for an async
    /// call to await (`Cache::lease_far`): taking the lease, or waiting for another machine's
    /// result, never holds the executor's thread. The guard granted releases the lease from
    /// that pool too when it is dropped (the release is a request). `None` when this store
    /// takes no leases.
    pub(super) fn lease_off_thread(&self, id: &CheckpointId) -> Option<PendingLease> {
        let tier = self.shared().remote.as_ref()?;
        if !tier.leases() || !crate::remote::runtime_available() {
            return None;
        }
        let (done, pending) = PendingLease::channel();
        let store = self.clone();
        let id = *id;
        // invariant: the runtime is available (checked above); were the task not started,
        // the completer would drop with it, and the lease end as an error, not hang.
        let _ = crate::remote::off_thread(move || {
            let lease = store
                .shared()
                .lease_unless(&id, &|| done.is_abandoned())
                .map(|lease| match lease {
                    Lease::Granted(guard) if guard.is_held() => {
                        Lease::Granted(LeaseGuard::new(ReleasedOffThread(Some(guard))))
                    }
                    other => other,
                });
            done.complete(lease);
        });
        Some(pending)
    }

    /// A remote lookup of `id` and its backfill, on a thread of the remote's runtime (its
    /// blocking pool), for an async call to await (`Cache::fetch_far`); `None` when there is
    /// no remote. A file that cannot take a backfill (opened read-only) has the record parked
    /// in memory for the near lookups instead (`Shared::read_parked`).
    pub(super) fn fetch_remote_off_thread(&self, id: &CheckpointId) -> Option<PendingSave> {
        let shared = self.shared();
        match &shared.remote {
            Some(tier) if tier.mode() != RemoteMode::Off => {}
            _ => return None,
        }
        let (done, pending) = PendingSave::channel();
        let store = self.clone();
        let id = *id;
        let started = crate::remote::off_thread(move || {
            let shared = store.shared();
            if shared.access_mode == AccessMode::ReadWrite {
                // A large record is saved after the call (the near lookup that follows finds
                // it waiting), so that the awaiting call does not wait for its save.
                let found = shared.fetch_backfill(&id, Lookup::Miss, Keep::Soon, &mut |_, _| {});
                done.complete(found.map(|_| ()));
                return;
            }
            // A file that cannot take a backfill: the record is parked for the near lookups
            // (`read_parked`) instead.
            let mut got = None;
            let found = shared.fetch_backfill(&id, Lookup::Miss, Keep::Now, &mut |lent, age| {
                // Its write time, on the store's clock (the age lent was taken from it).
                let saved_ms = age.map(|a| {
                    let ago = u64::try_from(a.as_millis()).unwrap_or(u64::MAX);
                    shared.now_ms().saturating_sub(ago)
                });
                got = Some(lent.to_vec().map(|record| (record, saved_ms)));
            });
            let parked = match (found, got) {
                (Ok(_), Some(Ok((record, saved_ms)))) => {
                    if let Some(tier) = &shared.remote {
                        tier.park(&id, record, saved_ms);
                    }
                    Ok(())
                }
                (Ok(_), None) => Ok(()),
                (Ok(_), Some(Err(e))) | (Err(e), _) => Err(e),
            };
            done.complete(parked);
        });
        started.then_some(pending)
    }

    /// The record under `id` (`len` bytes, of type `fingerprint` if known), to be read from
    /// the file when it is published. The publisher holds the store's state weakly: a store
    /// closing waits for its publishes first (`Drop for Handle`).
    fn local_source(&self, id: &CheckpointId, len: u64, fingerprint: Option<u64>) -> RecordSource {
        let shared = Arc::downgrade(&self.handle.shared);
        let id = *id;
        RecordSource::Streamed {
            len,
            fingerprint,
            stream: Box::new(move |sink| match shared.upgrade() {
                Some(shared) => shared.stream_record(&id, sink),
                None => Ok(false),
            }),
        }
    }
}

/// A lease guard released on a thread of the remote's runtime when dropped: the release
/// deletes the lease object, a request an async caller must not wait for on its executor.
struct ReleasedOffThread(Option<LeaseGuard>);

impl Drop for ReleasedOffThread {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            // Refused only without a runtime: the guard then drops (and releases) here.
            let _ = crate::remote::off_thread(move || drop(guard));
        }
    }
}

/// A temporary file beside the store that a large remote object is downloaded into before it
/// is saved. On Unix it has no name once created (a crash leaves nothing behind); elsewhere it
/// is removed when dropped.
struct Spool {
    file: std::fs::File,
    #[cfg(not(unix))]
    path: std::path::PathBuf,
}

impl Spool {
    fn create(store: &std::path::Path) -> Result<Spool, Error> {
        #[cfg(feature = "fault-injection")]
        if NO_SPOOL.get() {
            return Err(spool_error(std::io::Error::other(
                "refused by testing::without_spool",
            )));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            ".{}.ckpt-download-{}-{}",
            store
                .file_name()
                .map_or_else(|| "store".into(), |n| n.to_string_lossy()),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = store.with_file_name(name);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(spool_error)?;
        #[cfg(unix)]
        {
            let _ = std::fs::remove_file(&path);
            Ok(Spool { file })
        }
        #[cfg(not(unix))]
        Ok(Spool { file, path })
    }
}

#[cfg(feature = "fault-injection")]
thread_local! {
    /// Tests only (`testing::without_spool`): this thread makes no temporary file.
    pub(crate) static NO_SPOOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(not(unix))]
impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn spool_error(e: std::io::Error) -> Error {
    Error::with_source(
        crate::error::ErrorKind::Storage,
        "cannot write a downloaded record beside the store",
        e,
    )
}

impl RecordSink for Spool {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        std::io::Write::write_all(&mut self.file, bytes).map_err(spool_error)
    }
}

/// A downloaded record, checked, as the encoder a large save writes from.
struct Spooled {
    spool: RefCell<Spool>,
    checksum: u64,
    fingerprint: u64,
}

impl EncodeRecord for Spooled {
    fn write_unsealed(&self, out: &mut dyn RecordSink) -> Result<u64, Error> {
        use std::io::{Read, Seek};
        let file = &mut self.spool.borrow_mut().file;
        file.rewind().map_err(spool_error)?;
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(spool_error)?;
            if n == 0 {
                return Ok(self.checksum);
            }
            out.write(&buf[..n])?;
        }
    }

    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

fn not_spooled(id: &CheckpointId, e: &Error) {
    tracing::debug!(
        target: "ckpt",
        id = %id,
        error = %e,
        "a large remote hit is read whole: no temporary file beside the store"
    );
}

fn not_kept(id: &CheckpointId, e: &Error) {
    tracing::debug!(
        target: "ckpt",
        id = %id,
        error = %e,
        "a remote hit was not written into the local file"
    );
}

/// A type name from a remote object as the `&'static str` an entry carries. Names are few (one
/// per value type); past 1,024 distinct ones (a hostile remote) they are dropped, not leaked.
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut names = NAMES.lock();
    if let Some(known) = names.get(name) {
        return Some(known);
    }
    if names.len() >= 1024 {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    Some(leaked)
}
