//! [`Tier`]: one store's use of a remote: fetching (checked, never trusted), publishing (in the
//! background or synchronously), replacing damaged objects, and the tier's counters.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::{
    GetOptions, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use parking_lot::Mutex;

use super::error::stable_reason;
use super::lease::{self, Renewing};
use super::object::{self, Damaged};
use super::queue::Queue;
use super::runtime;
use super::stream::{Download, Fault, Upload};
use super::{Dedup, PublishMode, Remote, RemoteMode};
use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function};
use crate::record::{self, RecordSink};
use crate::stats::RemoteStats;

/// A sound object fetched from the remote: the record and what a backfill needs.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub function: Function,
    pub value_type: Option<String>,
    pub body: Body,
    pub compute_nanos: u64,
    /// When the object was written (ms since the epoch, the remote's clock).
    pub saved_ms: u64,
}

/// The record of a fetched object.
#[derive(Debug)]
pub(crate) enum Body {
    /// In one buffer, checked (checksum, version, length).
    Whole(Bytes),
    /// A large object, its header checked, its record still to be read (and checked as it is).
    Streamed(Box<RemoteRecord>),
}

/// The record of a result to publish.
pub(crate) enum RecordSource {
    /// In one buffer.
    Whole(Vec<u8>),
    /// Read from the local file when it is published, part by part (a large record, never held
    /// whole): `stream` hands the record's bytes in order to its sink until the sink says stop,
    /// and says whether the record was there to hand.
    Streamed {
        len: u64,
        /// The record's type fingerprint, when the publisher knows it.
        fingerprint: Option<u64>,
        stream: LocalStream,
    },
}

/// See [`RecordSource::Streamed`].
pub(crate) type LocalStream =
    Box<dyn FnOnce(&mut dyn FnMut(&[u8]) -> bool) -> Result<bool, Error> + Send>;

impl RecordSource {
    fn fingerprint(&self) -> Option<u64> {
        match self {
            RecordSource::Whole(bytes) => bytes
                .get(16..24)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8]))),
            RecordSource::Streamed { fingerprint, .. } => *fingerprint,
        }
    }
}

/// A result to publish.
struct Job {
    id: CheckpointId,
    function: Function,
    value_type: Option<String>,
    record: RecordSource,
}

/// The result a publish is of.
struct Named<'a> {
    id: &'a CheckpointId,
    function: &'a Function,
    value_type: Option<&'a str>,
}

/// What publishing one result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Published {
    /// The object was created (or a damaged one replaced).
    Created,
    /// It was there already (results are write-once).
    AlreadyPresent,
    /// The publish failed (counted, and sent to the warning hook), or the breaker is open.
    Failed,
    /// The local entry was removed before it could be read to publish it.
    Gone,
}

/// What [`Tier::lease`] decided about a miss about to be computed.
pub(crate) enum Claimed {
    /// This store holds the lease: compute, publish, then drop it (which deletes the lease).
    Held(Held),
    /// Another machine's result arrived while waiting (and was backfilled by the poll).
    Served,
    /// No lease: none is configured, the store is not read-write, or the breaker is open.
    Unleased,
}

/// A lease this store holds: renewed until dropped. While it is held, the id's result is
/// published synchronously, so that it is in the remote before the lease goes.
pub(crate) struct Held {
    shared: Arc<TierShared>,
    id: CheckpointId,
    _renewing: Renewing,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut leased = self.shared.leased.lock();
        if let Slot::Occupied(mut held) = leased.entry(self.id) {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
            }
        }
        // Then `_renewing` drops: the renewals stop and the lease is deleted.
    }
}

/// A lease this store took: where, its owner token, its ttl.
struct Mine {
    at: object_store::path::Path,
    token: u64,
    ttl: Duration,
}

/// How a lookup is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A local miss: a remote miss is counted and remembered (the decorator's second look).
    Miss,
    /// A waiter polling for another machine's result: a miss is neither counted nor remembered.
    Poll,
}

/// The shortest lease ttl (renewals every third of it).
const MIN_TTL: Duration = Duration::from_millis(30);
/// The longest: a lease that claims more (`Duration::MAX` for "never lapses") lapses after a
/// day without renewal, and its arithmetic cannot overflow.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often a waiter polls: from the first delay, doubling to the last.
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_LAST: Duration = Duration::from_secs(1);

/// Damaged objects remembered for replacement (their e-tags), at most this many.
const REPLACE_MAX: usize = 4096;
/// Records parked for a store whose file is read-only (`Tier::park`).
const PARKED_MAX: usize = 64;

pub(crate) struct Tier {
    shared: Arc<TierShared>,
    /// The background publishers (none unless read-write with background publishing).
    workers: Vec<JoinHandle<()>>,
}

struct TierShared {
    remote: Remote,
    mode: RemoteMode,
    publish: PublishMode,
    dedup: Dedup,
    counters: Counters,
    /// The counts the local file has recorded (see `Tier::unflushed`).
    flushed: Mutex<RemoteStats>,
    /// Records fetched for a store that cannot keep them (its file opened read-only), by an
    /// async call's `fetch_far`, for that call and its flight's waiters to read: their age
    /// when fetched, and when. A few, the oldest dropped first.
    parked: Mutex<VecDeque<Parked>>,
    /// Ids whose lease this store holds (a count: one per holder), published synchronously.
    leased: Mutex<HashMap<CheckpointId, u32>>,
    /// Objects found damaged, by id: the next publish of the id replaces them (conditionally,
    /// on this version) instead of creating.
    replace: Mutex<HashMap<CheckpointId, UpdateVersion>>,
    /// Objects recently served, by id: their version and the type fingerprint of their record.
    /// A save of the id that follows (the caller computed after all) with another fingerprint
    /// means the object was of another type: it is replaced, as a damaged one is.
    served: Mutex<HashMap<CheckpointId, (UpdateVersion, u64)>>,
    queue: Queue<Job>,
    /// Unique among the tiers of this process (an address may be reused by the next): the
    /// key of a thread's memory of its last miss and failure.
    serial: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    backfills: AtomicU64,
    publishes: AtomicU64,
    already_present: AtomicU64,
    publish_failures: AtomicU64,
    dropped_publishes: AtomicU64,
    corrupt: AtomicU64,
    wrong_type: AtomicU64,
    replaced: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    fetches: AtomicU64,
    fetch_nanos: AtomicU64,
    leases_taken: AtomicU64,
    leases_taken_over: AtomicU64,
    lease_waits: AtomicU64,
    lease_served: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Tier {
    pub(crate) fn new(
        remote: Remote,
        mode: RemoteMode,
        publish: PublishMode,
        dedup: Dedup,
    ) -> Tier {
        let capacity = remote.options().queue_capacity();
        let shared = Arc::new(TierShared {
            remote,
            mode,
            publish,
            dedup,
            counters: Counters::default(),
            flushed: Mutex::new(RemoteStats::default()),
            parked: Mutex::new(VecDeque::new()),
            leased: Mutex::new(HashMap::new()),
            replace: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
            queue: Queue::new(capacity),
            serial: {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Relaxed)
            },
        });
        let publishers = if mode == RemoteMode::ReadWrite && publish == PublishMode::Background {
            shared.remote.options().publishers()
        } else {
            0
        };
        let workers = (0..publishers)
            .filter_map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("ckpt-publish".into())
                    .spawn(move || {
                        while let Some((number, job)) = shared.queue.next() {
                            // A panic (the app's warning hook's, say) must not leave the job
                            // busy: flush, drop and the exit hook wait for it.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                shared.publish_now(job)
                            }));
                            shared.queue.done(number);
                        }
                    })
                    .ok()
            })
            .collect();
        Tier { shared, workers }
    }

    pub(crate) fn mode(&self) -> RemoteMode {
        self.shared.mode
    }

    pub(crate) fn stats(&self) -> RemoteStats {
        let c = &self.shared.counters;
        RemoteStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            backfills: c.backfills.load(Relaxed),
            publishes: c.publishes.load(Relaxed),
            already_present: c.already_present.load(Relaxed),
            publish_failures: c.publish_failures.load(Relaxed),
            dropped_publishes: c.dropped_publishes.load(Relaxed),
            corrupt: c.corrupt.load(Relaxed),
            wrong_type: c.wrong_type.load(Relaxed),
            replaced: c.replaced.load(Relaxed),
            errors: c.errors.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            bytes_down: c.bytes_down.load(Relaxed),
            bytes_up: c.bytes_up.load(Relaxed),
            fetches: c.fetches.load(Relaxed),
            fetch_nanos: c.fetch_nanos.load(Relaxed),
            leases_taken: c.leases_taken.load(Relaxed),
            leases_taken_over: c.leases_taken_over.load(Relaxed),
            lease_waits: c.lease_waits.load(Relaxed),
            lease_served: c.lease_served.load(Relaxed),
        }
    }

    /// The counts now, and what of them the file has not recorded yet (`None`: nothing).
    pub(crate) fn unflushed(&self) -> Option<(RemoteStats, RemoteStats)> {
        let now = self.stats();
        let delta = now.minus(&self.shared.flushed.lock());
        (delta != RemoteStats::default()).then_some((now, delta))
    }

    /// Marks the counts `now` (from [`unflushed`](Self::unflushed)) as recorded in the file.
    pub(crate) fn flushed(&self, now: RemoteStats) {
        // Writes are serialized from their plan to this confirmation (the store's writer
        // lock): no other snapshot was taken meanwhile.
        *self.shared.flushed.lock() = now;
    }

    /// Keeps a record fetched for a store that cannot write it (see `TierShared::parked`).
    pub(crate) fn park(&self, id: &CheckpointId, record: Vec<u8>, saved_ms: Option<u64>) {
        let mut parked = self.shared.parked.lock();
        parked.retain(|p| p.id != *id);
        if parked.len() >= PARKED_MAX {
            parked.pop_front();
        }
        parked.push_back(Parked {
            id: *id,
            record: record.into(),
            saved_ms,
        });
    }

    /// A record parked for `id`, and when its object was written (ms since the epoch, on the
    /// clock of the store that parked it), if known.
    pub(crate) fn parked(&self, id: &CheckpointId) -> Option<(Arc<[u8]>, Option<u64>)> {
        let parked = self.shared.parked.lock();
        let p = parked.iter().find(|p| p.id == *id)?;
        Some((Arc::clone(&p.record), p.saved_ms))
    }

    /// Forgets the record parked for `id` (one too old to serve).
    pub(crate) fn unpark(&self, id: &CheckpointId) {
        self.shared.parked.lock().retain(|p| p.id != *id);
    }

    /// Counts a fetched record written into the local file.
    pub(crate) fn backfilled(&self) {
        bump(&self.shared.counters.backfills);
    }

    /// The sound object stored under `id`, if any (and, with `max_age_ms`, not older). A
    /// damaged object is a miss, counted and remembered for replacement. A large object comes
    /// as a stream ([`Body::Streamed`]), its record checked as it is read.
    ///
    /// # Errors
    /// When the remote fails or does not answer in time (while the breaker is open, no request
    /// is made: a miss).
    pub(crate) fn fetch(
        &self,
        id: &CheckpointId,
        max_age_ms: Option<u64>,
        lookup: Lookup,
    ) -> Result<Option<Fetched>, Error> {
        let s = &self.shared;
        let c = &s.counters;
        if s.mode == RemoteMode::Off {
            return Ok(None);
        }
        if lookup == Lookup::Miss && (just_missed(s, id) || just_failed(s, id)) {
            return Ok(None);
        }
        let miss = || {
            if lookup == Lookup::Miss {
                bump(&c.misses);
                missed(s, id);
            }
        };
        if !s.remote.inner.breaker.allow() {
            bump(&c.skipped);
            return Ok(None);
        }
        let store = Arc::clone(&s.remote.inner.store);
        let at = object::location(&s.remote.inner.prefix, id);
        let timeout = s.remote.options().timeout;
        let stream_above = s.remote.options().stream_above();
        let started = Instant::now();
        let got = runtime::run(timeout, async move {
            match store.get_opts(&at, GetOptions::default()).await {
                Ok(r) if r.meta.size > stream_above => {
                    let meta = r.meta.clone();
                    Ok(Some((meta, Got::Stream(r.into_stream()))))
                }
                Ok(r) => {
                    let meta = r.meta.clone();
                    r.bytes().await.map(|b| Some((meta, Got::Whole(b))))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        bump(&c.fetches);
        c.fetch_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        let (meta, got) = match got {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => {
                s.remote.inner.breaker.succeeded();
                miss();
                return Ok(None);
            }
            Ok(Err(e)) => {
                failed_for(s, id);
                return Err(s.failed("cannot fetch a checkpoint", stable_reason(&e)));
            }
            Err(e) => {
                failed_for(s, id);
                return Err(s.failed("cannot fetch a checkpoint", e.reason()));
            }
        };
        s.remote.inner.breaker.succeeded();
        let saved_ms = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
        let version = UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        };
        if let Some(max_age) = max_age_ms {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if now.saturating_sub(meta.last_modified.timestamp_millis()) > max_age as i64 {
                // Too old for this store: a miss, and the result computed for it replaces the
                // object (results are write-once otherwise, and a leased owner's result, only
                // created, would leave its waiters finding the old object, and computing one
                // after another).
                s.remember_replace(id, version);
                miss();
                return Ok(None);
            }
        }
        match got {
            Got::Whole(bytes) => {
                c.bytes_down.fetch_add(bytes.len() as u64, Relaxed);
                match check(&bytes, id) {
                    Ok((header, record)) => {
                        bump(&c.hits);
                        s.served(id, version, record.fingerprint);
                        Ok(Some(Fetched {
                            function: header.function,
                            value_type: header.value_type,
                            body: Body::Whole(bytes.slice(header.header_len..)),
                            compute_nanos: record.compute_nanos,
                            saved_ms,
                        }))
                    }
                    Err(damage) => {
                        s.damaged(id, damage, version, lookup);
                        Ok(None)
                    }
                }
            }
            Got::Stream(stream) => match Download::open(stream, timeout, id, meta.size) {
                Ok(download) => {
                    let header = download.header().clone();
                    Ok(Some(Fetched {
                        function: header.function,
                        value_type: header.value_type,
                        compute_nanos: download.compute_nanos(),
                        saved_ms,
                        body: Body::Streamed(Box::new(RemoteRecord {
                            shared: Arc::clone(s),
                            id: *id,
                            version,
                            download,
                            lookup,
                            damaged: false,
                        })),
                    }))
                }
                Err(Fault::Damaged(damage)) => {
                    s.damaged(id, damage, version, lookup);
                    Ok(None)
                }
                Err(Fault::Remote(reason)) => {
                    failed_for(s, id);
                    Err(s.failed("cannot fetch a checkpoint", reason))
                }
                Err(Fault::Local(e)) => Err(e),
            },
        }
    }

    /// Publishes the record just saved locally under `id` (read-write mode only): queued, or
    /// now with [`PublishMode::Sync`]. A failed publish never fails the save: it is counted and
    /// goes to the warning hook. If the remote served this id an object of another type (so
    /// the caller computed it again), the object is replaced.
    pub(crate) fn publish(
        &self,
        id: &CheckpointId,
        function: &Function,
        value_type: Option<&str>,
        record: impl FnOnce() -> Option<RecordSource>,
    ) {
        let s = &*self.shared;
        if s.mode != RemoteMode::ReadWrite {
            return;
        }
        let Some(record) = record() else { return };
        let served = s.served.lock().remove(id);
        if let Some((version, fingerprint)) = served
            && record.fingerprint() != Some(fingerprint)
        {
            bump(&s.counters.wrong_type);
            tracing::debug!(
                target: "ckpt",
                url = s.remote.url(),
                id = %id,
                "the remote's object is of another type than the value computed: replaced"
            );
            s.remember_replace(id, version);
        }
        let job = Job {
            id: *id,
            function: function.clone(),
            value_type: value_type.map(str::to_string),
            record,
        };
        if self.publishes_inline(id) {
            let _ = s.publish_now(job);
        } else if s.queue.push(job) {
            bump(&s.counters.dropped_publishes);
        }
    }

    /// Whether a publish of `id` uploads on the calling thread instead of queueing:
    /// [`PublishMode::Sync`], or, whatever the mode, while the id's lease is held (the result
    /// is published before the call returns: the lease is released after, and waiters must
    /// find the result then). `false` in any mode but read-write, where nothing is published.
    pub(crate) fn publishes_inline(&self, id: &CheckpointId) -> bool {
        let s = &*self.shared;
        if s.mode != RemoteMode::ReadWrite {
            return false;
        }
        let leased = matches!(s.dedup, Dedup::Lease { .. }) && s.leased.lock().contains_key(id);
        s.publish == PublishMode::Sync || self.workers.is_empty() || leased
    }

    /// Whether a miss takes a lease before it is computed (`Dedup::Lease`, read-write only).
    pub(crate) fn leases(&self) -> bool {
        matches!(self.shared.dedup, Dedup::Lease { .. })
            && self.shared.mode == RemoteMode::ReadWrite
    }

    /// Publishes one result now, whatever the store's [`PublishMode`] (`ckpt remote push`):
    /// create-if-absent, as every publish.
    pub(crate) fn publish_sync(
        &self,
        id: &CheckpointId,
        function: &Function,
        value_type: Option<&str>,
        record: RecordSource,
    ) -> Published {
        self.shared.publish_now(Job {
            id: *id,
            function: function.clone(),
            value_type: value_type.map(str::to_string),
            record,
        })
    }

    /// Before computing a miss of `id` (`Dedup::Lease`, read-write only): takes the id's lease,
    /// or waits while another machine holds it, calling `poll` (a lookup of the result that
    /// backfills it; `true` when found) between waits, until the result appears
    /// ([`Claimed::Served`]) or the lease lapses and is taken over.
    ///
    /// # Errors
    /// When the remote fails (counted; the breaker may open): the caller computes unleased.
    pub(crate) fn lease(
        &self,
        id: &CheckpointId,
        poll: &mut dyn FnMut() -> Result<bool, Error>,
    ) -> Result<Claimed, Error> {
        let s = &*self.shared;
        let c = &s.counters;
        let Dedup::Lease { ttl } = s.dedup else {
            return Ok(Claimed::Unleased);
        };
        // Not after this call's lookup failed: the remote would most likely fail again, and
        // the call would wait another timeout for it.
        if s.mode != RemoteMode::ReadWrite || just_failed(s, id) {
            return Ok(Claimed::Unleased);
        }
        let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
        let remote = &s.remote;
        let breaker = &remote.inner.breaker;
        let at = lease::location(&remote.inner.prefix, id);
        let token = lease::new_token();
        let mine = lease::encode(token, ttl, 0, id);
        let fail = |reason| s.failed("cannot take a lease", reason);
        // The lease as last seen, and since when (this machine's clock) it has not changed.
        let mut seen: Option<(lease::Seen, Instant)> = None;
        let mut delay = POLL_FIRST;
        let mut create = true;
        let mut waited = false;
        loop {
            if !breaker.allow() {
                bump(&c.skipped);
                return Ok(Claimed::Unleased);
            }
            if create {
                create = false;
                if let Some(version) = lease::create(remote, &at, mine.clone()).map_err(fail)? {
                    breaker.succeeded();
                    return self.held(id, Mine { at, token, ttl }, version, false, poll);
                }
            }
            let Some(now) = lease::read(remote, &at).map_err(fail)? else {
                // Released (or taken over and released) since: try again at once.
                create = true;
                continue;
            };
            breaker.succeeded();
            if !waited {
                waited = true;
                bump(&c.lease_waits);
            }
            // Lapse is judged by this machine's clock: the bytes unchanged for the lease's ttl
            // (its owner renews it every third of that, changing them).
            // The ttl the lease carries (its owner's), at most four times this store's: a
            // lease claiming years is not waited for years.
            let lease_ttl =
                lease::parse(&now.bytes).map_or(ttl, |(_, t)| t.clamp(MIN_TTL, ttl * 4));
            match seen.take() {
                Some((before, since)) if before.bytes == now.bytes => {
                    if since.elapsed() > lease_ttl {
                        if let Some(version) =
                            lease::take_over(remote, &at, &now, mine.clone()).map_err(fail)?
                        {
                            tracing::info!(
                                target: "ckpt",
                                url = remote.url(),
                                id = %id,
                                "a lapsed lease was taken over: its owner stopped renewing it"
                            );
                            return self.held(id, Mine { at, token, ttl }, version, true, poll);
                        }
                    } else {
                        seen = Some((before, since));
                    }
                }
                _ => seen = Some((now, Instant::now())),
            }
            if poll()? {
                bump(&c.lease_served);
                return Ok(Claimed::Served);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(POLL_LAST).min(ttl / 2);
        }
    }

    /// A lease just taken: renewed from now on; unless the result arrived meanwhile (an owner
    /// that published and released between this store's lookup and its lease), then released.
    fn held(
        &self,
        id: &CheckpointId,
        mine: Mine,
        version: UpdateVersion,
        taken_over: bool,
        poll: &mut dyn FnMut() -> Result<bool, Error>,
    ) -> Result<Claimed, Error> {
        let s = &self.shared;
        let renewing = Renewing::start(&s.remote, mine.at, *id, mine.token, mine.ttl, version)
            .map_err(|reason| s.failed("cannot renew a lease", reason))?;
        *s.leased.lock().entry(*id).or_insert(0) += 1;
        let held = Held {
            shared: Arc::clone(s),
            id: *id,
            _renewing: renewing,
        };
        if poll()? {
            bump(&s.counters.lease_served);
            return Ok(Claimed::Served);
        }
        bump(&s.counters.leases_taken);
        if taken_over {
            bump(&s.counters.leases_taken_over);
        }
        Ok(Claimed::Held(held))
    }

    /// Waits for the background publishes queued so far.
    pub(crate) fn flush(&self) {
        if !self.workers.is_empty() {
            self.shared.queue.wait_idle();
        }
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.shared.queue.stop();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl TierShared {
    /// Counts a failed request (the breaker may open) and builds its error: the same message
    /// for every object, so that the default warning hook says it once.
    fn failed(&self, what: &str, reason: String) -> Error {
        bump(&self.counters.errors);
        let url = self.remote.url();
        if self.remote.inner.breaker.failed() {
            tracing::warn!(
                target: "ckpt",
                url,
                "remote failing: paused; calls are served locally until it answers again"
            );
        }
        Error::with_source(ErrorKind::Remote, format!("remote {url}: {what}"), reason)
    }

    /// Remembers an object served under `id`, for [`Tier::publish`] to tell whether it was of
    /// another type.
    fn served(&self, id: &CheckpointId, version: UpdateVersion, fingerprint: u64) {
        // A sound object is there now: one remembered for replacement (damaged, too old) was
        // replaced already, and the next publish must not replace this one (on a folder: delete
        // it) in its stead.
        self.replace.lock().remove(id);
        remember(&mut self.served.lock(), id, (version, fingerprint));
    }

    /// Counts a damaged object under `id` and remembers it for replacement; after a local miss
    /// ([`Lookup::Miss`]), counts the miss too. An object is counted (and warned of) once: a
    /// waiter polling for another machine's result, or a store that does not replace it (read
    /// only), may find the same damaged object again and again.
    fn damaged(&self, id: &CheckpointId, damage: Damaged, version: UpdateVersion, lookup: Lookup) {
        let c = &self.counters;
        if lookup == Lookup::Miss {
            bump(&c.misses);
            missed(self, id);
        }
        {
            let mut replace = self.replace.lock();
            if replace.get(id) == Some(&version) {
                return;
            }
            remember(&mut replace, id, version);
        }
        bump(&c.corrupt);
        tracing::warn!(
            target: "ckpt",
            url = self.remote.url(),
            id = %id,
            damage = ?damage,
            "a remote object failed its checks: a miss; the next save replaces it"
        );
    }

    /// The next publish of `id` replaces the object of `version` instead of creating one.
    fn remember_replace(&self, id: &CheckpointId, version: UpdateVersion) {
        remember(&mut self.replace.lock(), id, version);
    }

    fn publish_now(&self, job: Job) -> Published {
        let c = &self.counters;
        if !self.remote.inner.breaker.allow() {
            bump(&c.publish_failures);
            return Published::Failed;
        }
        let Job {
            id,
            function,
            value_type,
            record,
        } = job;
        let named = Named {
            id: &id,
            function: &function,
            value_type: value_type.as_deref(),
        };
        let (len, fingerprint, stream) = match record {
            RecordSource::Whole(record) => return self.put_whole(&named, Bytes::from(record)),
            RecordSource::Streamed {
                len,
                fingerprint,
                stream,
            } => (len, fingerprint, stream),
        };
        if len > self.remote.options().stream_above() {
            return self.put_streamed(&named, len, fingerprint, stream);
        }
        // Short enough for one request: read whole.
        let mut record = Vec::with_capacity(len as usize);
        let got = stream(&mut |bytes| {
            record.extend_from_slice(bytes);
            true
        });
        match got {
            Ok(true)
                if record.len() as u64 == len
                    && fingerprint
                        .is_none_or(|f| record.get(16..24) == Some(&f.to_le_bytes()[..])) =>
            {
                // Read back from the file (`Store::push`, a large save's publish): checked, so
                // that a record damaged in the local file never reaches the team's bucket.
                match record::parse(&record) {
                    Ok(_) => self.put_whole(&named, Bytes::from(record)),
                    Err(_) => self.publish_failed(damaged_locally()),
                }
            }
            // Removed, or replaced by another record, since it was saved.
            Ok(_) => Published::Gone,
            Err(e) => self.publish_failed(e),
        }
    }

    /// A publish that failed on this side (reading the local record): counted and warned.
    fn publish_failed(&self, e: Error) -> Published {
        bump(&self.counters.publish_failures);
        crate::warn::warn(&e);
        Published::Failed
    }

    /// Counts a publish that reached the remote and the object it created or replaced.
    fn published(&self, len: u64, replaced: bool) -> Published {
        let c = &self.counters;
        self.remote.inner.breaker.succeeded();
        bump(&c.publishes);
        c.bytes_up.fetch_add(len, Relaxed);
        if replaced {
            bump(&c.replaced);
        }
        Published::Created
    }

    /// Counts a publish the remote failed (or did not answer in time).
    fn remote_failed(&self, reason: String) -> Published {
        bump(&self.counters.publish_failures);
        let err = self.failed("cannot publish a checkpoint", reason);
        crate::warn::warn(&err);
        Published::Failed
    }

    fn put_whole(&self, job: &Named<'_>, record: Bytes) -> Published {
        let c = &self.counters;
        let header =
            object::encode_header(job.id, job.function, job.value_type, record.len() as u64);
        let len = (header.len() + record.len()) as u64;
        let payload = PutPayload::from_iter([Bytes::from(header), record]);
        let replacing = self.replace.lock().remove(job.id);
        let was_replacing = replacing.is_some();
        let inner = &self.remote.inner;
        let store = Arc::clone(&inner.store);
        let at = object::location(&inner.prefix, job.id);
        let conditional = inner.conditional_update;
        let put = runtime::run(self.remote.options().timeout, async move {
            let mode = match replacing {
                Some(version) if conditional => PutMode::Update(version),
                Some(_) => {
                    // A folder cannot replace on a version: the damaged object is removed and
                    // created again (a racing writer's object may go with it: a later miss,
                    // never a wrong value).
                    let _ = store.delete(&at).await;
                    PutMode::Create
                }
                None => PutMode::Create,
            };
            let update = matches!(mode, PutMode::Update(_));
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            match store.put_opts(&at, payload.clone(), options).await {
                // A store answers a conditional update of a missing object with a failed
                // precondition too: the damaged object may have been removed meanwhile (`ckpt
                // remote gc`). Created, then, unless another writer's object is there by now.
                Err(object_store::Error::Precondition { .. }) if update => store
                    .put_opts(&at, payload, PutMode::Create.into())
                    .await
                    .map(|_| ()),
                put => put.map(|_| ()),
            }
        });
        match put {
            Ok(Ok(())) => self.published(len, was_replacing),
            // Results are write-once: someone published this id first (or replaced the damaged
            // object first; a store may report a create that lost as a failed precondition).
            Ok(Err(object_store::Error::AlreadyExists { .. }))
            | Ok(Err(object_store::Error::Precondition { .. })) => {
                inner.breaker.succeeded();
                bump(&c.already_present);
                Published::AlreadyPresent
            }
            Ok(Err(e)) => self.remote_failed(stable_reason(&e)),
            Err(e) => self.remote_failed(e.reason()),
        }
    }

    /// Publishes a large record as a multipart upload fed from the local file, checked as it
    /// is read. A multipart upload cannot be create-if-absent: the object is looked for first
    /// (two machines racing may both upload the same record bytes; the last complete wins).
    fn put_streamed(
        &self,
        job: &Named<'_>,
        len: u64,
        fingerprint: Option<u64>,
        stream: LocalStream,
    ) -> Published {
        let c = &self.counters;
        let inner = &self.remote.inner;
        let options = self.remote.options();
        let timeout = options.timeout;
        let at = object::location(&inner.prefix, job.id);
        let replacing = self.replace.lock().remove(job.id).is_some();
        if !replacing {
            let store = Arc::clone(&inner.store);
            let at = at.clone();
            match runtime::run(timeout, async move { store.head(&at).await }) {
                Ok(Ok(_)) => {
                    inner.breaker.succeeded();
                    bump(&c.already_present);
                    return Published::AlreadyPresent;
                }
                Ok(Err(object_store::Error::NotFound { .. })) => {}
                Ok(Err(e)) => return self.remote_failed(stable_reason(&e)),
                Err(e) => return self.remote_failed(e.reason()),
            }
        }
        let store = Arc::clone(&inner.store);
        let upload = match runtime::request(timeout, async move { store.put_multipart(&at).await })
        {
            Ok(upload) => upload,
            Err(reason) => return self.remote_failed(reason),
        };
        let mut upload = Upload::new(
            upload,
            options.part_size_of(),
            Arc::clone(&inner.parts),
            timeout,
        );
        let header = object::encode_header(job.id, job.function, job.value_type, len);
        let mut failed = upload.write(&header).err();
        let mut check = record::RecordCheck::new();
        // The record's first 24 bytes, for its type fingerprint (bytes 16..24).
        let mut head = Vec::with_capacity(24);
        let streamed = if failed.is_none() {
            stream(&mut |bytes| {
                check.feed(bytes);
                if check.len() > len {
                    return false;
                }
                if head.len() < 24 {
                    let was = head.len();
                    head.extend_from_slice(&bytes[..bytes.len().min(24 - was)]);
                    // Another record under the id since it was queued (one of another type,
                    // saved since): not published under this one's header.
                    if head.len() == 24
                        && fingerprint.is_some_and(|f| head[16..24] != f.to_le_bytes())
                    {
                        return false;
                    }
                }
                match upload.write(bytes) {
                    Ok(()) => true,
                    Err(reason) => {
                        failed = Some(reason);
                        false
                    }
                }
            })
        } else {
            Ok(false)
        };
        match (failed, streamed) {
            (Some(reason), _) => {
                upload.abort();
                self.remote_failed(reason)
            }
            (None, Err(e)) => {
                upload.abort();
                self.publish_failed(e)
            }
            (None, Ok(true)) if check.len() == len && check.finish().is_ok() => {
                match upload.complete() {
                    Ok(sent) => self.published(sent, replacing),
                    Err(reason) => self.remote_failed(reason),
                }
            }
            // All of it read, in one read transaction, and failing its checks: damaged in the
            // local file.
            (None, Ok(true)) if check.len() == len => {
                upload.abort();
                self.publish_failed(damaged_locally())
            }
            // Removed since it was saved, or changed under the read, or failing its checks:
            // not published.
            (None, Ok(_)) => {
                upload.abort();
                Published::Gone
            }
        }
    }
}

/// A local record that failed its checks when it was read back to be published.
fn damaged_locally() -> Error {
    Error::corrupted("a record in the local file failed its checks: not published")
}

/// Inserts into one of the tier's memories of objects, which hold at most `REPLACE_MAX` ids
/// (past that, they start over: a forgotten object is only not replaced this time).
fn remember<V>(map: &mut HashMap<CheckpointId, V>, id: &CheckpointId, value: V) {
    if map.len() >= REPLACE_MAX {
        map.clear();
    }
    map.insert(*id, value);
}

/// A record kept in memory for a store whose file is read-only (`Tier::park`): its age when
/// fetched, and when that was.
struct Parked {
    id: CheckpointId,
    record: Arc<[u8]>,
    /// When its object was written: its age is taken from the store's clock when it is read,
    /// as a local entry's is.
    saved_ms: Option<u64>,
}

/// What a get answered with: a small object whole, a large one as a stream.
enum Got {
    Whole(Bytes),
    Stream(futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>),
}

/// A large object's record, read from the remote as the local file takes it (see
/// [`Body::Streamed`]).
pub(crate) struct RemoteRecord {
    shared: Arc<TierShared>,
    id: CheckpointId,
    version: UpdateVersion,
    download: Download,
    lookup: Lookup,
    damaged: bool,
}

impl std::fmt::Debug for RemoteRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRecord")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl RemoteRecord {
    /// The record's length, as the object states it.
    pub(crate) fn len(&self) -> u64 {
        self.download.header().record_len
    }

    /// The type fingerprint the record states (checked with the record).
    pub(crate) fn fingerprint(&self) -> u64 {
        self.download.fingerprint()
    }

    /// Whether the object turned out damaged (counted, and remembered for replacement): a
    /// miss, not a failure.
    pub(crate) fn was_damaged(&self) -> bool {
        self.damaged
    }

    /// Reads the record into `out`, its checksum zero, checking every byte; returns the
    /// checksum. Any fault is an error (the writer must abandon what it wrote); a damaged object
    /// is also counted, and noted ([`was_damaged`](Self::was_damaged)).
    pub(crate) fn write_unsealed(&mut self, out: &mut dyn RecordSink) -> Result<u64, Error> {
        let done = self.download.write_unsealed(out);
        self.settle(done)
    }

    /// The record in one buffer, checked; `None` when the object is damaged.
    pub(crate) fn collect(mut self) -> Result<Option<Bytes>, Error> {
        let collected = self.download.collect();
        match self.settle(collected) {
            Ok(record) => Ok(Some(record)),
            Err(_) if self.damaged => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn settle<T>(&mut self, done: Result<T, Fault>) -> Result<T, Error> {
        let s = &self.shared;
        match done {
            Ok(out) => {
                let c = &s.counters;
                bump(&c.hits);
                c.bytes_down.fetch_add(
                    self.download.header().header_len as u64 + self.len(),
                    Relaxed,
                );
                s.served(&self.id, self.version.clone(), self.download.fingerprint());
                Ok(out)
            }
            Err(Fault::Damaged(damage)) => {
                self.damaged = true;
                s.damaged(&self.id, damage, self.version.clone(), self.lookup);
                Err(Error::corrupted("a remote object failed its checks"))
            }
            Err(Fault::Remote(reason)) => {
                // As a failed lookup: the rest of the call does not ask again.
                failed_for(s, &self.id);
                Err(s.failed("cannot fetch a checkpoint", reason))
            }
            Err(Fault::Local(e)) => Err(e),
        }
    }
}

thread_local! {
    /// The last remote miss of this thread: (tier, id, when). The decorator looks an id up
    /// twice around its single-flight join (`fetch`, then `fetch_again`); the second look must
    /// not cost (and count) a second request.
    static LAST_MISS: std::cell::Cell<Option<(usize, CheckpointId, Instant)>> =
        const { std::cell::Cell::new(None) };
}

/// How long a thread's remote miss answers its own next lookup of the same id.
const MISS_MEMORY: Duration = Duration::from_secs(1);

fn missed(tier: &TierShared, id: &CheckpointId) {
    let at = tier.serial;
    LAST_MISS.with(|m| m.set(Some((at, *id, Instant::now()))));
}

fn just_missed(tier: &TierShared, id: &CheckpointId) -> bool {
    let at = tier.serial;
    LAST_MISS.with(|m| match m.get() {
        Some((t, last, when)) if t == at && last == *id && when.elapsed() < MISS_MEMORY => {
            m.set(None);
            true
        }
        _ => false,
    })
}

thread_local! {
    /// The last failed lookup of this thread: (tier, id, when). The rest of the same call (the
    /// second look after the single-flight join, the lease) does not ask again: a remote that
    /// does not answer costs a call one timeout, and counts one error.
    static LAST_FAILURE: std::cell::Cell<Option<(usize, CheckpointId, Instant)>> =
        const { std::cell::Cell::new(None) };
}

fn failed_for(tier: &TierShared, id: &CheckpointId) {
    let at = tier.serial;
    LAST_FAILURE.with(|m| m.set(Some((at, *id, Instant::now()))));
}

/// Whether this thread's lookup of `id` failed within `MISS_MEMORY` (not forgotten by asking:
/// the second look and the lease both see it).
fn just_failed(tier: &TierShared, id: &CheckpointId) -> bool {
    let at = tier.serial;
    LAST_FAILURE.with(|m| {
        matches!(m.get(), Some((t, last, when))
            if t == at && last == *id && when.elapsed() < MISS_MEMORY)
    })
}

/// Checks an object stored under `id`: its header, its length, its record's checksum.
fn check(
    bytes: &[u8],
    id: &CheckpointId,
) -> Result<(object::ObjectHeader, record::Header), Damaged> {
    let header = object::parse_header(bytes, id)?;
    let record = &bytes[header.header_len..];
    if record.len() as u64 != header.record_len {
        return Err(Damaged::Truncated);
    }
    let (parsed, _) = record::parse(record).map_err(|_| Damaged::Record)?;
    Ok((header, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large record (streamed from the local file when published) and its fingerprint.
    fn large_record() -> (Vec<u8>, u64) {
        let record = record::encode(&vec![7u8; 1 << 20], Duration::ZERO).unwrap();
        let fingerprint = u64::from_le_bytes(record[16..24].try_into().unwrap());
        (record, fingerprint)
    }

    fn streamed(record: Vec<u8>, fingerprint: u64) -> RecordSource {
        RecordSource::Streamed {
            len: record.len() as u64,
            fingerprint: Some(fingerprint),
            stream: Box::new(move |sink| {
                for piece in record.chunks(64 << 10) {
                    if !sink(piece) {
                        break;
                    }
                }
                Ok(true)
            }),
        }
    }

    #[test]
    fn a_large_record_of_another_type_than_the_one_queued_is_not_published() {
        let remote = Remote::builder("memory://")
            .part_size(64 << 10)
            .open()
            .unwrap();
        let tier = Tier::new(
            remote.clone(),
            RemoteMode::ReadWrite,
            PublishMode::Sync,
            Dedup::None,
        );
        let function = Function::new("tier", "large");
        let (record, fingerprint) = large_record();
        assert!(record.len() as u64 > remote.options().stream_above());
        let id = CheckpointId::from_u128(1);
        // Queued as a record of another type; the local file holds this one by now.
        let published = tier.publish_sync(
            &id,
            &function,
            Some("another"),
            streamed(record.clone(), fingerprint ^ 1),
        );
        assert_eq!(published, Published::Gone);
        assert!(remote.objects().unwrap().is_empty());
        // Its own type: published.
        let published = tier.publish_sync(
            &id,
            &function,
            Some("Vec<u8>"),
            streamed(record, fingerprint),
        );
        assert_eq!(published, Published::Created);
        assert_eq!(remote.objects().unwrap().len(), 1);
    }
}
