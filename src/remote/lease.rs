//! Leases (`Dedup::Lease`): one machine computes a missing result, the others wait for it.
//!
//! A lease is the object `{prefix}/ckpt-v1/l/{id}`, 48 bytes, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `CKRL` |
//! | 4..6 | lease format version (1) |
//! | 6..8 | reserved, zero |
//! | 8..16 | owner token (random per lease taken) |
//! | 16..24 | ttl, ms |
//! | 24..32 | renewals (each renewal adds one, so the bytes change) |
//! | 32..48 | checkpoint id |
//!
//! The first caller creates it (create-if-absent) and renews it every ttl/3 (a conditional
//! update on its e-tag; on a folder, which has none, a read of the owner token and then an
//! overwrite). A waiter judges lapse by its own clock: the lease's bytes unchanged for longer
//! than its ttl since the waiter first saw them. It then takes over with a conditional update
//! on the stale e-tag (a folder: the stale bytes read again, deleted, created). The owner
//! publishes its result before it deletes its lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use tokio::sync::Notify;

use super::Remote;
use super::object::LAYOUT;
use super::runtime;
use crate::id::CheckpointId;

const MAGIC: [u8; 4] = *b"CKRL";
const VERSION: u16 = 1;
const LEN: usize = 48;

/// The folder of every lease object.
pub(crate) fn leases(prefix: &Path) -> Path {
    prefix.clone().join(LAYOUT).join("l")
}

/// Where the lease of `id` lives.
pub(crate) fn location(prefix: &Path, id: &CheckpointId) -> Path {
    leases(prefix).join(format!("{id}"))
}

/// The bytes of a lease.
pub(crate) fn encode(token: u64, ttl: Duration, renewals: u64, id: &CheckpointId) -> Bytes {
    let mut out = Vec::with_capacity(LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(ttl.as_millis() as u64).to_le_bytes());
    out.extend_from_slice(&renewals.to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    Bytes::from(out)
}

/// What a lease says: its owner's token and ttl; `None` for bytes that are not a lease.
pub(crate) fn parse(bytes: &[u8]) -> Option<(u64, Duration)> {
    if bytes.len() != LEN || bytes[..4] != MAGIC || bytes[4..6] != VERSION.to_le_bytes() {
        return None;
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Some((word(8), Duration::from_millis(word(16))))
}

/// A token no other lease has: a hash of the process, the time and a counter.
pub(crate) fn new_token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = [0u8; 24];
    seed[..8].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    seed[8..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&seed)
}

/// Runs one request within the remote's timeout; a failure as a stable reason.
fn request<T: Send + 'static>(
    remote: &Remote,
    future: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> Result<T, String> {
    runtime::request(remote.options().timeout, future)
}

fn version_of(put: object_store::PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    }
}

/// Creates the lease if there is none: its version, or `None` when another holds it.
pub(crate) fn create(
    remote: &Remote,
    at: &Path,
    bytes: Bytes,
) -> Result<Option<UpdateVersion>, String> {
    let store = Arc::clone(&remote.inner.store);
    let at = at.clone();
    request(remote, async move {
        match put(&*store, &at, bytes, PutMode::Create).await {
            Ok(done) => Ok(Some(version_of(done))),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

async fn put(
    store: &dyn ObjectStore,
    at: &Path,
    bytes: Bytes,
    mode: PutMode,
) -> object_store::Result<object_store::PutResult> {
    let options = PutOptions {
        mode,
        ..PutOptions::default()
    };
    store.put_opts(at, PutPayload::from(bytes), options).await
}

/// A lease as read: its bytes and the version to replace it on.
pub(crate) struct Seen {
    pub bytes: Bytes,
    pub version: UpdateVersion,
}

/// The lease as it is now, `None` when there is none.
pub(crate) fn read(remote: &Remote, at: &Path) -> Result<Option<Seen>, String> {
    let store = Arc::clone(&remote.inner.store);
    let at = at.clone();
    request(remote, async move { read_now(&*store, &at).await })
}

async fn read_now(store: &dyn ObjectStore, at: &Path) -> object_store::Result<Option<Seen>> {
    match store.get_opts(at, GetOptions::default()).await {
        Ok(got) => {
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let bytes = got.bytes().await?;
            Ok(Some(Seen { bytes, version }))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces a lapsed lease (`stale`, as read) with `bytes`: the new version, or `None` when
/// someone changed it first (its owner renewed it, another waiter took it over, it was
/// released).
pub(crate) fn take_over(
    remote: &Remote,
    at: &Path,
    stale: &Seen,
    bytes: Bytes,
) -> Result<Option<UpdateVersion>, String> {
    let store = Arc::clone(&remote.inner.store);
    let at = at.clone();
    let conditional = remote.inner.conditional_update;
    let (stale_bytes, stale_version) = (stale.bytes.clone(), stale.version.clone());
    request(remote, async move {
        if conditional {
            return match put(&*store, &at, bytes, PutMode::Update(stale_version)).await {
                Ok(done) => Ok(Some(version_of(done))),
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => Ok(None),
                Err(e) => Err(e),
            };
        }
        // A folder cannot replace on a version: the stale lease is read again, removed, and
        // created anew. Two waiters taking over in the same instant may both succeed (one
        // removing the other's fresh lease between its read and its removal): both compute,
        // and the second publish is `AlreadyExists`.
        match read_now(&*store, &at).await? {
            Some(now) if now.bytes == stale_bytes => {}
            _ => return Ok(None),
        }
        match store.delete(&at).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        match put(&*store, &at, bytes, PutMode::Create).await {
            Ok(done) => Ok(Some(version_of(done))),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// A lease held: renewed in the background every ttl/3 until dropped, which deletes it.
pub(crate) struct Renewing {
    control: Arc<Control>,
    done: std::sync::mpsc::Receiver<()>,
    timeout: Duration,
}

struct Control {
    release: Notify,
}

impl Renewing {
    /// Starts renewing the lease at `at` (created or taken over as `version`, with `token`).
    ///
    /// # Errors
    /// When the runtime cannot take the task (the lease is then left to lapse).
    pub(crate) fn start(
        remote: &Remote,
        at: Path,
        id: CheckpointId,
        token: u64,
        ttl: Duration,
        version: UpdateVersion,
    ) -> Result<Renewing, String> {
        let control = Arc::new(Control {
            release: Notify::new(),
        });
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        let task = Task {
            store: Arc::clone(&remote.inner.store),
            at,
            id,
            token,
            ttl,
            version,
            conditional: remote.inner.conditional_update,
            timeout: remote.options().timeout,
        };
        let timeout = remote.options().timeout;
        let c = Arc::clone(&control);
        runtime::detach(async move {
            task.run(&c).await;
            let _ = tx.send(());
        })
        .map_err(|e| e.reason())?;
        Ok(Renewing {
            control,
            done,
            timeout,
        })
    }
}

impl Drop for Renewing {
    /// Stops renewing and deletes the lease (if it is still this one's), waiting for that at
    /// most the remote's timeout (then the lease lapses by itself).
    fn drop(&mut self) {
        self.control.release.notify_one();
        let _ = self
            .done
            .recv_timeout(self.timeout + Duration::from_secs(1));
    }
}

/// The renewing task's state.
struct Task {
    store: Arc<dyn ObjectStore>,
    at: Path,
    id: CheckpointId,
    token: u64,
    ttl: Duration,
    version: UpdateVersion,
    conditional: bool,
    timeout: Duration,
}

impl Task {
    async fn run(mut self, control: &Control) {
        let period = (self.ttl / 3).max(Duration::from_millis(5));
        let mut renewals = 0u64;
        // Taken over by a waiter that judged it lapsed: no longer renewed, nor deleted.
        let mut lost = false;
        let mut next = Instant::now() + period;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            if tokio::time::timeout(wait, control.release.notified())
                .await
                .is_ok()
            {
                if !lost {
                    let _ = tokio::time::timeout(self.timeout, self.delete()).await;
                }
                return;
            }
            next = Instant::now() + period;
            if lost {
                continue;
            }
            renewals += 1;
            let bytes = encode(self.token, self.ttl, renewals, &self.id);
            match tokio::time::timeout(self.timeout, self.renew(bytes)).await {
                Ok(Ok(Some(version))) => self.version = version,
                Ok(Ok(None)) => {
                    lost = true;
                    tracing::warn!(
                        target: "ckpt",
                        id = %self.id,
                        "a lease was taken over while its result was computed (it was not \
                         renewed in time): both may compute"
                    );
                }
                // A failed renewal: tried again next period; the lease may lapse meanwhile.
                Ok(Err(_)) | Err(_) => {}
            }
        }
    }

    /// Renews the lease: its new version, or `None` when it is no longer this one's.
    async fn renew(&self, bytes: Bytes) -> object_store::Result<Option<UpdateVersion>> {
        let store = &*self.store;
        if self.conditional {
            let update = |version: UpdateVersion, bytes: Bytes| async move {
                match put(store, &self.at, bytes, PutMode::Update(version)).await {
                    Ok(done) => Ok(Some(version_of(done))),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            if let Some(version) = update(self.version.clone(), bytes.clone()).await? {
                return Ok(Some(version));
            }
            // The version held may be stale while the lease is still this one's: a renewal
            // the server applied but that was seen to fail (timed out, or retried after a 5xx
            // and refused on the version it had just changed). Still this owner's token:
            // renewed on the version read.
            return match read_now(store, &self.at).await? {
                Some(seen) if parse(&seen.bytes).is_some_and(|(t, _)| t == self.token) => {
                    update(seen.version, bytes).await
                }
                _ => Ok(None),
            };
        }
        if !self.is_mine(store).await? {
            return Ok(None);
        }
        put(store, &self.at, bytes, PutMode::Overwrite)
            .await
            .map(|done| Some(version_of(done)))
    }

    async fn is_mine(&self, store: &dyn ObjectStore) -> object_store::Result<bool> {
        Ok(read_now(store, &self.at)
            .await?
            .and_then(|seen| parse(&seen.bytes))
            .is_some_and(|(token, _)| token == self.token))
    }

    /// Deletes the lease if it is still this one's (object stores have no conditional delete:
    /// read, then delete).
    async fn delete(&self) {
        let store = &*self.store;
        if let Ok(true) = self.is_mine(store).await {
            let _ = store.delete(&self.at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_round_trips_and_lives_in_its_own_folder() {
        let id = CheckpointId::from_bytes([0xcd; 16]);
        let bytes = encode(7, Duration::from_millis(2500), 3, &id);
        assert_eq!(bytes.len(), LEN);
        assert_eq!(parse(&bytes), Some((7, Duration::from_millis(2500))));
        assert_eq!(parse(&bytes[..40]), None);
        let mut bad = bytes.to_vec();
        bad[0] ^= 1;
        assert_eq!(parse(&bad), None);
        assert_ne!(encode(7, Duration::from_secs(1), 4, &id), bytes);
        assert_eq!(
            location(&Path::from("team"), &id).as_ref(),
            "team/ckpt-v1/l/cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
        );
        assert_ne!(new_token(), new_token());
    }
}
