//! Single flight: when several threads miss the same id at once, one runs the function and the
//! others wait for it.
//!
//! Flights are process-wide and keyed by the cache as well as the id ([`Cache::flight_scope`]):
//! eight decorators of one function over one store (one per worker or request, a normal
//! pattern) compute a missing id once, not eight times. A map shard's lock is held only to join
//! or leave a flight, never while user code runs. A leader that panics still leaves its flight
//! (its guard's `Drop` runs during unwinding), so waiters are never stranded.
//!
//! [`Cache::flight_scope`]: crate::Cache::flight_scope

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::thread::{self, ThreadId};

use parking_lot::{Condvar, Mutex};

use crate::id::CheckpointId;

/// How a flight ended, as its waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    Running,
    /// The result is in the cache: read it.
    Stored,
    /// The leader ran but stored nothing (an `Err` not kept, or a failed save): run it yourself.
    NotStored,
    /// The leader panicked: run it yourself.
    Abandoned,
}

pub(crate) struct Flight {
    /// The computing thread (a background refresh adopts the flight it was handed).
    leader: Mutex<ThreadId>,
    landing: Mutex<Landing>,
    landed: Condvar,
}

impl Flight {
    /// Blocks until the leader lands.
    pub(crate) fn wait(&self) -> Landing {
        let mut landing = self.landing.lock();
        while *landing == Landing::Running {
            self.landed.wait(&mut landing);
        }
        *landing
    }
}

/// Which cache (see `Cache::flight_scope`) and which id a flight computes.
type Key = (usize, CheckpointId);

/// Shards of the flight map: misses of unrelated ids rarely meet on one lock.
const SHARDS: usize = 16;

/// The flights of this process, over every cache.
pub(crate) static FLIGHTS: LazyLock<Flights> = LazyLock::new(Flights::default);

#[derive(Default)]
pub(crate) struct Flights {
    shards: [Mutex<HashMap<Key, Arc<Flight>>>; SHARDS],
}

pub(crate) enum Joined<'a> {
    /// Nobody is computing this id: you are; land the guard when done.
    Leader(LeaderGuard<'a>),
    /// Another thread is computing it: wait.
    Waiter(Arc<Flight>),
    /// This thread is already computing it, further up its own stack (a recursive call with the
    /// same arguments): waiting would deadlock, so run without the cache.
    Reentrant,
}

impl Flights {
    /// Joins the flight of `id` in the cache whose flight scope is `scope`.
    pub(crate) fn join(&self, scope: usize, id: CheckpointId) -> Joined<'_> {
        let me = thread::current().id();
        let key = (scope, id);
        let mut map = self.shard(&key).lock();
        if let Some(flight) = map.get(&key) {
            return if *flight.leader.lock() == me {
                Joined::Reentrant
            } else {
                Joined::Waiter(Arc::clone(flight))
            };
        }
        let flight = Arc::new(Flight {
            leader: Mutex::new(me),
            landing: Mutex::new(Landing::Running),
            landed: Condvar::new(),
        });
        map.insert(key, Arc::clone(&flight));
        Joined::Leader(LeaderGuard {
            flights: self,
            key,
            flight,
            landing: Landing::Abandoned,
        })
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Arc<Flight>>> {
        // An id is a hash already: its low bits spread well.
        &self.shards[(usize::from(key.1.as_bytes()[0]) ^ key.0) % SHARDS]
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Held by the leader while it computes; dropping it lands the flight.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: Key,
    flight: Arc<Flight>,
    landing: Landing,
}

impl LeaderGuard<'_> {
    /// Makes the current thread the flight's leader (a guard handed to another thread).
    pub(crate) fn adopt(&self) {
        *self.flight.leader.lock() = thread::current().id();
    }

    /// Lands the flight with this outcome (a guard dropped without landing, as during a panic,
    /// lands as `Abandoned`).
    pub(crate) fn land(mut self, landing: Landing) {
        self.landing = landing;
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        {
            let mut map = self.flights.shard(&self.key).lock();
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        *self.flight.landing.lock() = self.landing;
        self.flight.landed.notify_all();
    }
}

/// Background refreshes in flight (see `Refresh::Stale`), to wait for.
#[derive(Default)]
pub(crate) struct Refreshes {
    running: Mutex<usize>,
    done: Condvar,
}

/// One refresh in flight: counted until dropped (by its thread, however it ends).
pub(crate) struct Pending(Arc<Refreshes>);

impl Refreshes {
    pub(crate) fn start(self: &Arc<Self>) -> Pending {
        *self.running.lock() += 1;
        Pending(Arc::clone(self))
    }

    /// Blocks until no refresh is in flight.
    pub(crate) fn wait(&self) {
        let mut running = self.running.lock();
        while *running > 0 {
            self.done.wait(&mut running);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut running = self.0.running.lock();
        *running -= 1;
        if *running == 0 {
            self.0.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_then_waiter_then_reentrant() {
        let flights = Flights::default();
        let id = CheckpointId::from_u128(1);
        let Joined::Leader(guard) = flights.join(7, id) else {
            panic!("first joiner must lead")
        };
        assert!(matches!(flights.join(7, id), Joined::Reentrant));
        let waiter = thread::scope(|s| {
            s.spawn(|| match flights.join(7, id) {
                Joined::Waiter(f) => f,
                _ => panic!("another thread must wait"),
            })
            .join()
            .unwrap()
        });
        guard.land(Landing::Stored);
        assert_eq!(waiter.wait(), Landing::Stored);
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn panicking_leader_abandons() {
        let flights = Flights::default();
        let id = CheckpointId::from_u128(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = match flights.join(7, id) {
                Joined::Leader(g) => g,
                _ => unreachable!(),
            };
            panic!("user code failed");
        }));
        assert!(result.is_err());
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join(7, id), Joined::Leader(_)));
    }
}
