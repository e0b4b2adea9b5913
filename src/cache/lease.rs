//! Computing once across machines: what [`Cache::lease`](crate::Cache::lease) answers before
//! the decorator computes a miss. A cache shared by several machines (the redb
//! [`Store`](crate::Store) with a remote tier and `Dedup::Lease`) lets one of them compute and
//! the others wait for its result; every other cache grants at once and holds nothing.

use std::fmt;

/// What a cache decided about a miss the decorator is about to compute
/// ([`Cache::lease`](crate::Cache::lease)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Lease {
    /// Compute it: nobody else is, or the cache does not coordinate. The guard holds whatever
    /// the cache took (a lease object in a shared store) until it is dropped, after the result
    /// is saved, or when the computation fails or panics, so that others take over at once.
    Granted(LeaseGuard),
    /// Another machine computed it while this one waited, and the cache has it now: the
    /// decorator looks it up again instead of computing.
    Served,
}

/// What a granted [`Lease`] holds until dropped. Dropping it releases the lease (a shared
/// store deletes its lease object); [`LeaseGuard::none`] holds nothing.
///
/// A cache of its own that coordinates through something else (a database row, a lock
/// service) wraps what it took: a value whose `Drop` releases it.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use ckpt::cache::LeaseGuard;
///
/// struct Lock(Arc<AtomicBool>);
/// impl Drop for Lock {
///     fn drop(&mut self) {
///         self.0.store(false, Ordering::SeqCst); // released
///     }
/// }
///
/// let taken = Arc::new(AtomicBool::new(true));
/// let guard = LeaseGuard::new(Lock(Arc::clone(&taken)));
/// assert!(guard.is_held());
/// drop(guard);
/// assert!(!taken.load(Ordering::SeqCst));
/// assert!(!LeaseGuard::none().is_held());
/// ```
#[must_use = "dropping the guard releases the lease"]
pub struct LeaseGuard {
    held: Option<Box<dyn Send>>,
}

impl LeaseGuard {
    /// A guard holding nothing: what every cache that does not coordinate grants.
    pub fn none() -> Self {
        LeaseGuard { held: None }
    }

    /// A guard holding `held` until dropped; `held`'s own `Drop` releases the lease.
    pub fn new(held: impl Send + 'static) -> Self {
        LeaseGuard {
            held: Some(Box::new(held)),
        }
    }

    /// Whether it holds something (a lease was taken).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }
}

impl Default for LeaseGuard {
    fn default() -> Self {
        LeaseGuard::none()
    }
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("held", &self.is_held())
            .finish()
    }
}
