//! Housekeeping of a remote (`ckpt remote ...`): listing its objects with what their headers
//! say, choosing the expired ones, removing them.
//!
//! Object stores record no access time, so expiry is by an object's age (its `last_modified`)
//! and by stale code version, judged among the remote's own objects (see [`Expiry`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::ObjectStoreExt as _;
use object_store::path::Path;

use super::error::classify;
use super::object;
use super::runtime::{self, RunError};
use super::{Remote, RemoteError, RemoteErrorKind};
use crate::id::{CheckpointId, Function};

/// How many header reads are in flight at once while listing.
const BATCH: usize = 32;
/// The first bytes of an object read to parse its header (a longer header is read again whole).
const HEAD_BYTES: u64 = 4096;

/// One object of a remote, as [`Remote::objects`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteObject {
    /// Its path in the object store (under the remote's prefix).
    pub location: String,
    /// The checkpoint id its name and header carry; `None` when its name is not an id or its
    /// header fails its checks (a damaged or foreign object).
    pub id: Option<CheckpointId>,
    /// The function that saved it, from its header (`None` as for `id`).
    pub function: Option<Function>,
    /// The Rust type name of its value, when recorded.
    pub value_type: Option<String>,
    /// Its size in bytes (header and record).
    pub size: u64,
    /// When it was written, by the remote's clock.
    pub last_modified: SystemTime,
}

impl RemoteObject {
    /// Whether its header was read and passed its checks.
    pub fn is_sound(&self) -> bool {
        self.function.is_some()
    }
}

/// A rule that makes remote objects expire (`ckpt remote gc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Expiry {
    /// Written longer ago than this (by `last_modified`; object stores keep no access time).
    OlderThan(Duration),
    /// Of a stale code version: its function has objects of another code version written more
    /// recently. The newest code version of a function is the one of its most recently written
    /// object, among the remote's objects: every machine that looks at the remote judges the
    /// same way, with or without a local store. (Two code versions in use at once, say two
    /// branches, take turns being the newest: run `gc --stale` when the old one is retired.)
    /// Objects whose header cannot be read are never stale (use `OlderThan`).
    StaleCode,
}

/// An object chosen by [`expired`], with the first rule that chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expired {
    /// The object.
    pub object: RemoteObject,
    /// The rule.
    pub cause: Expiry,
}

/// The objects among `objects` that any of `rules` makes expire at `now`, in the order given.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use ckpt::remote::{expired, Expiry};
/// # let objects = Vec::new();
/// let gone = expired(&objects, &[Expiry::OlderThan(Duration::from_secs(30 * 86_400))], SystemTime::now());
/// assert!(gone.is_empty());
/// ```
pub fn expired(objects: &[RemoteObject], rules: &[Expiry], now: SystemTime) -> Vec<Expired> {
    // Per function key: the newest write, and the code versions written at that instant.
    let mut newest: HashMap<u64, (SystemTime, Vec<u64>)> = HashMap::new();
    if rules.contains(&Expiry::StaleCode) {
        for o in objects {
            let Some(f) = &o.function else { continue };
            let e = newest
                .entry(f.key())
                .or_insert((o.last_modified, Vec::new()));
            if o.last_modified > e.0 {
                *e = (o.last_modified, vec![f.code_version()]);
            } else if o.last_modified == e.0 && !e.1.contains(&f.code_version()) {
                e.1.push(f.code_version());
            }
        }
    }
    let mut out = Vec::new();
    for o in objects {
        let cause = rules.iter().copied().find(|rule| match rule {
            Expiry::OlderThan(age) => now
                .duration_since(o.last_modified)
                .is_ok_and(|old| old > *age),
            Expiry::StaleCode => o.function.as_ref().is_some_and(|f| {
                newest
                    .get(&f.key())
                    .is_some_and(|(_, current)| !current.contains(&f.code_version()))
            }),
        });
        if let Some(cause) = cause {
            out.push(Expired {
                object: o.clone(),
                cause,
            });
        }
    }
    out
}

impl Remote {
    /// Every object in the remote's layout folder (`{prefix}/ckpt-v1/r/`), with what its header
    /// says (one listing, then a ranged read of each object's first bytes), sorted by location.
    /// `progress` is called with the number of objects read so far, out of the total.
    ///
    /// # Errors
    /// A [`RemoteError`] when the listing or a read fails or times out (each request within
    /// the remote's timeout).
    pub fn objects_with_progress(
        &self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<RemoteObject>, RemoteError> {
        let inner = &self.inner;
        let mut metas = self.list_results()?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let total = metas.len();
        let mut out = Vec::with_capacity(total);
        for batch in metas.chunks(BATCH) {
            let store = Arc::clone(&inner.store);
            let batch = batch.to_vec();
            let heads = self.run(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (i, meta) in batch.into_iter().enumerate() {
                    let store = Arc::clone(&store);
                    tasks.spawn(async move {
                        let head = read_head(&*store, &meta).await;
                        (i, meta, head)
                    });
                }
                let mut got = Vec::new();
                while let Some(done) = tasks.join_next().await {
                    // A read that panicked must not vanish from the listing (gc removes what
                    // it lists): the whole listing fails.
                    got.push(done.map_err(|e| object_store::Error::Generic {
                        store: "ckpt",
                        source: Box::new(e),
                    })?);
                }
                got.sort_by_key(|(i, _, _)| *i);
                Ok(got)
            })?;
            for (_, meta, head) in heads {
                let head = head.map_err(|e| self.error(e))?;
                out.push(describe(&meta, head.as_deref()));
            }
            progress(out.len(), total);
        }
        Ok(out)
    }

    /// Every object of the remote (see [`objects_with_progress`](Self::objects_with_progress)).
    ///
    /// # Errors
    /// As [`objects_with_progress`](Self::objects_with_progress).
    pub fn objects(&self) -> Result<Vec<RemoteObject>, RemoteError> {
        self.objects_with_progress(&mut |_, _| {})
    }

    /// Removes `objects` from the remote (by location); returns how many were there to remove
    /// (an object already gone is not counted where the store can tell).
    ///
    /// # Errors
    /// A [`RemoteError`] when a removal fails; the ones before it are done.
    pub fn remove(&self, objects: &[RemoteObject]) -> Result<u64, RemoteError> {
        let mut removed = 0;
        for o in objects {
            let store = Arc::clone(&self.inner.store);
            let at = Path::from(o.location.as_str());
            let gone = self.run(async move {
                match store.delete(&at).await {
                    Ok(()) => Ok(true),
                    // Removed meanwhile (a folder says so; S3 does not).
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })?;
            removed += u64::from(gone);
        }
        Ok(removed)
    }

    /// The objects directly in the results folder (not in folders below it), each page of the
    /// listing within the remote's timeout: a large bucket takes many pages, and is not cut off
    /// by one timeout for them all.
    fn list_results(&self) -> Result<Vec<object_store::ObjectMeta>, RemoteError> {
        let store = Arc::clone(&self.inner.store);
        let at = object::results(&self.inner.prefix);
        let timeout = self.inner.options.timeout;
        // Bounded page by page, below.
        let unbounded = Duration::from_secs(365 * 24 * 3600);
        let listed = runtime::run(unbounded, async move {
            use futures_util::StreamExt as _;
            let mut listing = store.list(Some(&at));
            let mut metas = Vec::new();
            loop {
                match tokio::time::timeout(timeout, listing.next()).await {
                    Ok(Some(Ok(meta))) => {
                        let direct = {
                            let mut below = meta.location.prefix_match(&at).into_iter().flatten();
                            below.next().is_some() && below.next().is_none()
                        };
                        if direct {
                            metas.push(meta);
                        }
                    }
                    Ok(Some(Err(e))) => return Ok(Err(e)),
                    Ok(None) => return Ok(Ok(metas)),
                    Err(_) => return Err(RunError::TimedOut),
                }
            }
        });
        match listed {
            Ok(Ok(Ok(metas))) => Ok(metas),
            Ok(Ok(Err(e))) => Err(self.error(e)),
            Ok(Err(_)) | Err(RunError::TimedOut) => Err(RemoteError::new(
                &self.inner.url,
                RemoteErrorKind::Unreachable,
                Some(format!("no page of the listing within {timeout:?}").into()),
            )),
            Err(RunError::NoRuntime(e)) => Err(RemoteError::new(
                &self.inner.url,
                RemoteErrorKind::Runtime,
                Some(e.into()),
            )),
        }
    }

    /// Runs a request on the internal runtime within the timeout, its failure a `RemoteError`.
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, RemoteError> {
        match runtime::run(self.inner.options.timeout, future) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e)),
            Err(RunError::TimedOut) => Err(RemoteError::new(
                &self.inner.url,
                RemoteErrorKind::Unreachable,
                Some(format!("no answer within {:?}", self.inner.options.timeout).into()),
            )),
            Err(RunError::NoRuntime(e)) => Err(RemoteError::new(
                &self.inner.url,
                RemoteErrorKind::Runtime,
                Some(e.into()),
            )),
        }
    }

    fn error(&self, e: object_store::Error) -> RemoteError {
        RemoteError::new(&self.inner.url, classify(&e), Some(Box::new(e)))
    }
}

/// The first bytes of an object, enough for its header; `None` when it vanished meanwhile.
async fn read_head(
    store: &dyn object_store::ObjectStore,
    meta: &object_store::ObjectMeta,
) -> object_store::Result<Option<Vec<u8>>> {
    if meta.size == 0 {
        return Ok(Some(Vec::new()));
    }
    let first = store
        .get_range(&meta.location, 0..meta.size.min(HEAD_BYTES))
        .await;
    let first = match first {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    // A header longer than the first read (long names): read it whole.
    if first.len() >= 12 {
        let len = u64::from(u32::from_le_bytes([
            first[8], first[9], first[10], first[11],
        ]));
        if len > first.len() as u64 && len <= meta.size && len <= 64 * 1024 {
            return match store.get_range(&meta.location, 0..len).await {
                Ok(b) => Ok(Some(b.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
    }
    Ok(Some(first.to_vec()))
}

fn describe(meta: &object_store::ObjectMeta, head: Option<&[u8]>) -> RemoteObject {
    let location = meta.location.to_string();
    let name = meta.location.filename().unwrap_or("");
    let named: Option<CheckpointId> = name.parse().ok();
    let header = match (named, head) {
        (Some(id), Some(head)) => object::parse_header(head, &id).ok(),
        _ => None,
    };
    let millis = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
    RemoteObject {
        location,
        id: header.as_ref().and(named),
        value_type: header.as_ref().and_then(|h| h.value_type.clone()),
        function: header.map(|h| h.function),
        size: meta.size,
        last_modified: UNIX_EPOCH + Duration::from_millis(millis),
    }
}
