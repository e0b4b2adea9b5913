//! The store in front of its remote tier (feature `remote`): a local miss asks the remote, a
//! sound object is backfilled into the file exactly as a local save would write it, and what
//! the store saves is published. See ARCHITECTURE.md, "The remote tier".

use std::collections::HashSet;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use super::options::{AccessMode, to_ms};
use super::{Shared, Store};
use crate::cache::{Entry, Lent};
use crate::error::Error;
use crate::id::{CheckpointId, Function};
use crate::remote::RemoteMode;
use crate::stats::RemoteStats;

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

    #[cold]
    fn fetch_remote(
        &self,
        id: &CheckpointId,
        read: &mut dyn FnMut(Lent<'_>, Option<Duration>),
    ) -> Result<bool, Error> {
        let Some(tier) = &self.remote else {
            return Ok(false);
        };
        let max_age = self.max_age_ms.load(Ordering::Relaxed);
        let Some(fetched) = tier.fetch(id, (max_age != 0).then_some(max_age))? else {
            return Ok(false);
        };
        if self.access_mode == AccessMode::ReadWrite {
            // The backfill: the same save a computed result gets (same id, same record bytes,
            // the function's metadata and counts), through the group-commit queue.
            let mut entry = Entry::new(
                &fetched.function,
                &fetched.record,
                Duration::from_nanos(fetched.compute_nanos),
            );
            if let Some(name) = fetched.value_type.as_deref().and_then(intern) {
                entry = entry.with_value_type(name);
            }
            entry.created_ms = Some(fetched.saved_ms);
            match self.save(id, &entry) {
                Ok(()) => tier.backfilled(),
                // Still a sound record: returned, not kept (a byte cap it cannot fit, a store
                // that degraded); the next call asks the remote again.
                Err(e) => tracing::debug!(
                    target: "ckpt",
                    id = %id,
                    error = %e,
                    "a remote hit was not written into the local file"
                ),
            }
        }
        let now = to_ms(self.clock.now());
        let age = Duration::from_millis(now.saturating_sub(fetched.saved_ms));
        read(Lent::whole(&fetched.record), Some(age));
        Ok(true)
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
            tier.publish(id, function, value_type, record);
        }
    }

    /// Waits for the background publishes queued so far.
    pub(super) fn flush_remote(&self) {
        if let Some(tier) = &self.remote {
            tier.flush();
        }
    }

    pub(crate) fn remote_stats(&self) -> Option<RemoteStats> {
        self.remote.as_ref().map(|tier| tier.stats())
    }
}

impl Store {
    /// The record of a large entry just saved, read back to be published.
    pub(super) fn record_to_publish(&self, id: &CheckpointId) -> Option<Vec<u8>> {
        self.read_record(id).ok().flatten()
    }
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
