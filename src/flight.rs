//! Single flight: when several threads miss the same id at once, one runs the function and the
//! others wait for it.
//!
//! Flights are process-wide and keyed by the cache as well as the id ([`Cache::flight_scope`]):
//! eight decorators of one function over one store (one per worker or request, a normal
//! pattern) compute a missing id once, not eight times. A map shard's lock is held only to join
//! or leave a flight, never while user code runs. A leader that panics still leaves its flight
//! (its guard's `Drop` runs during unwinding), so waiters are never stranded.
//!
//! Async callers share the same flights: a task waits by leaving its `Waker` on the flight
//! ([`Flight::landed`]), not by blocking its thread, and a task leads with no thread of its own
//! ([`Flights::join_task`]). A task cannot be told by its thread (many tasks share one), so a
//! task-led flight is reentrant only while its leader's own future is being polled on this
//! thread: the leader marks its polls ([`Leading`]), and a join that meets a flight marked on
//! its thread is the leader's own body calling itself.
//!
//! [`Cache::flight_scope`]: crate::Cache::flight_scope

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
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
    /// The computing thread (a background refresh adopts the flight it was handed); `None`
    /// for a task, which no thread identifies.
    leader: Mutex<Option<ThreadId>>,
    /// Unique in the process: what a task leader's polls mark (see `Leading`).
    token: u64,
    landing: Mutex<LandingState>,
    landed: Condvar,
}

struct LandingState {
    landing: Landing,
    /// Tasks waiting for the landing (woken with the threads on `landed`).
    wakers: Vec<Waker>,
}

impl Flight {
    /// Blocks until the leader lands.
    pub(crate) fn wait(&self) -> Landing {
        let mut state = self.landing.lock();
        while state.landing == Landing::Running {
            self.landed.wait(&mut state);
        }
        state.landing
    }

    /// Waits, as a task, until the leader lands: no thread is held meanwhile.
    pub(crate) fn landed(self: Arc<Self>) -> Landed {
        Landed(self)
    }
}

/// The future of a flight's landing (see [`Flight::landed`]).
pub(crate) struct Landed(Arc<Flight>);

impl Future for Landed {
    type Output = Landing;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Landing> {
        let mut state = self.0.landing.lock();
        if state.landing != Landing::Running {
            return Poll::Ready(state.landing);
        }
        // Registered under the landing lock: a landing cannot slip between the check and this.
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Where flights' tokens come from.
static TOKENS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The tokens of the task-led flights whose leader's future is being polled on this thread,
    /// innermost last.
    static LEADING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Marks, while it lives, that this thread is polling the leader of the flight with `token`
/// (held around each poll of a task leader's computation, never across an await).
pub(crate) struct Leading(());

impl Leading {
    pub(crate) fn enter(token: u64) -> Leading {
        LEADING.with(|l| l.borrow_mut().push(token));
        Leading(())
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        LEADING.with(|l| {
            l.borrow_mut().pop();
        });
    }
}

fn leading(token: u64) -> bool {
    LEADING.with(|l| l.borrow().contains(&token))
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
    /// Joins, as this thread, the flight of `id` in the cache whose flight scope is `scope`.
    pub(crate) fn join(&self, scope: usize, id: CheckpointId) -> Joined<'_> {
        self.join_as(scope, id, Some(thread::current().id()))
    }

    /// Joins as a task (see the module's documentation): a flight it leads is reentrant only
    /// inside its own polls, which the leader marks with [`Leading`].
    pub(crate) fn join_task(&self, scope: usize, id: CheckpointId) -> Joined<'_> {
        self.join_as(scope, id, None)
    }

    fn join_as(&self, scope: usize, id: CheckpointId, me: Option<ThreadId>) -> Joined<'_> {
        let key = (scope, id);
        let mut map = self.shard(&key).lock();
        if let Some(flight) = map.get(&key) {
            let reentrant = {
                let leader = *flight.leader.lock();
                (leader.is_some() && leader == Some(thread::current().id()))
                    || leading(flight.token)
            };
            return if reentrant {
                Joined::Reentrant
            } else {
                Joined::Waiter(Arc::clone(flight))
            };
        }
        let flight = Arc::new(Flight {
            leader: Mutex::new(me),
            token: TOKENS.fetch_add(1, Ordering::Relaxed),
            landing: Mutex::new(LandingState {
                landing: Landing::Running,
                wakers: Vec::new(),
            }),
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
        *self.flight.leader.lock() = Some(thread::current().id());
    }

    /// The flight's token, for a task leader to mark its polls with ([`Leading`]).
    pub(crate) fn token(&self) -> u64 {
        self.flight.token
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
        let wakers = {
            let mut state = self.flight.landing.lock();
            state.landing = self.landing;
            std::mem::take(&mut state.wakers)
        };
        self.flight.landed.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Background refreshes in flight (see `Refresh::Stale`), to wait for.
#[derive(Default)]
pub(crate) struct Refreshes {
    running: Mutex<Running>,
    done: Condvar,
}

#[derive(Default)]
struct Running {
    count: usize,
    /// Tasks awaiting `idle`, woken when the count falls to zero.
    wakers: Vec<Waker>,
}

/// One refresh in flight: counted until dropped (by its thread or task, however it ends).
pub(crate) struct Pending(Arc<Refreshes>);

impl Refreshes {
    pub(crate) fn start(self: &Arc<Self>) -> Pending {
        self.running.lock().count += 1;
        Pending(Arc::clone(self))
    }

    /// Blocks until no refresh is in flight.
    pub(crate) fn wait(&self) {
        let mut running = self.running.lock();
        while running.count > 0 {
            self.done.wait(&mut running);
        }
    }

    /// Completes when no refresh is in flight.
    pub(crate) fn idle(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            let mut running = self.running.lock();
            if running.count == 0 {
                return Poll::Ready(());
            }
            if !running.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                running.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let wakers = {
            let mut running = self.0.running.lock();
            running.count -= 1;
            if running.count > 0 {
                return;
            }
            self.0.done.notify_all();
            std::mem::take(&mut running.wakers)
        };
        for waker in wakers {
            waker.wake();
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
    fn tasks_wait_on_one_thread_and_reenter_only_inside_their_leader() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let flights = Flights::default();
        let id = CheckpointId::from_u128(3);
        let Joined::Leader(guard) = flights.join_task(7, id) else {
            panic!("first joiner must lead")
        };
        // Another task on this same thread: a waiter, not the leader calling itself.
        let Joined::Waiter(flight) = flights.join_task(7, id) else {
            panic!("a second task must wait")
        };
        {
            let _polling = Leading::enter(guard.token());
            assert!(matches!(flights.join_task(7, id), Joined::Reentrant));
            assert!(matches!(flights.join(7, id), Joined::Reentrant));
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let mut landed = std::pin::pin!(flight.landed());
        assert!(landed.as_mut().poll(&mut cx).is_pending());
        assert!(landed.as_mut().poll(&mut cx).is_pending());
        drop(guard); // a cancelled leader
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(landed.poll(&mut cx), Poll::Ready(Landing::Abandoned));
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
