//! A save that completes later: what [`Cache::save_deferred`](crate::Cache::save_deferred)
//! returns, so that an async caller awaits a durable write instead of blocking its executor
//! thread on it; and a lease taken later ([`Cache::lease_far`](crate::Cache::lease_far)), alike.
//! Both are a one-shot channel with a `Waker`, std and `parking_lot` only: ckpt depends on no
//! async runtime.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use parking_lot::Mutex;

use super::Lease;
use crate::error::{Error, ErrorKind};

/// A save handed to a cache, finished by the cache later: a future of its result.
///
/// [`PendingSave::ready`] wraps a save already done (what the default
/// [`Cache::save_deferred`](crate::Cache::save_deferred) returns); [`PendingSave::channel`]
/// gives a cache that writes elsewhere (a background thread, a network client) the
/// [`SaveCompleter`] to finish it with. Dropping a `PendingSave` does not cancel the save: the
/// cache still writes it, and nobody is told.
///
/// ```
/// use std::task::{Context, Poll, Waker};
/// use ckpt::cache::PendingSave;
///
/// let (done, pending) = PendingSave::channel();
/// std::thread::spawn(move || done.complete(Ok(()))); // the cache's writer
/// let mut pending = std::pin::pin!(pending);
/// let mut cx = Context::from_waker(Waker::noop());
/// loop {
///     // An executor would sleep until woken instead of spinning.
///     if let Poll::Ready(saved) = pending.as_mut().poll(&mut cx) {
///         assert!(saved.is_ok());
///         break;
///     }
///     std::thread::yield_now();
/// }
/// ```
#[must_use = "a save's result is known only by awaiting it"]
pub struct PendingSave(Pending<()>);

/// Finishes a [`PendingSave`]: the cache's half of [`PendingSave::channel`]. Dropping it
/// without [`complete`](Self::complete) finishes the save with an error
/// ([`ErrorKind::Closed`]), so an awaiting caller is never left waiting forever.
pub struct SaveCompleter(Completer<()>);

impl PendingSave {
    /// A save that is already done, with this result.
    pub fn ready(result: Result<(), Error>) -> PendingSave {
        PendingSave(Pending::ready(result))
    }

    /// A pending save and the completer that finishes it.
    pub fn channel() -> (SaveCompleter, PendingSave) {
        let (done, pending) = channel();
        (SaveCompleter(done), PendingSave(pending))
    }

    /// Runs `then(saved)` when the save ends (at once if it has), instead of anyone awaiting
    /// it: a leader dropped while its save is in flight lands its flight from here.
    pub(crate) fn then(self, then: impl FnOnce(bool) + Send + 'static) {
        self.0.then(move |result| then(result.is_ok()));
    }
}

impl Future for PendingSave {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl SaveCompleter {
    /// Finishes the save with `result`, waking whoever awaits it.
    pub fn complete(self, result: Result<(), Error>) {
        self.0.complete(result);
    }
}

/// A [`Lease`] a cache takes later: what [`Cache::lease_far`](crate::Cache::lease_far)
/// returns, so that an async caller awaits another machine's computation instead of blocking
/// its executor thread on it. Dropped before it completes, it releases whatever lease it was
/// granted.
#[must_use = "a lease is known only by awaiting it"]
pub struct PendingLease(Pending<Lease>);

/// Finishes a [`PendingLease`]: the cache's half of [`PendingLease::channel`]. Dropping it
/// without [`complete`](Self::complete) finishes the lease with an error
/// ([`ErrorKind::Closed`]).
pub struct LeaseCompleter(Completer<Lease>);

impl PendingLease {
    /// A pending lease and the completer that finishes it.
    pub fn channel() -> (LeaseCompleter, PendingLease) {
        let (done, pending) = channel();
        (LeaseCompleter(done), PendingLease(pending))
    }
}

impl Future for PendingLease {
    type Output = Result<Lease, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl LeaseCompleter {
    /// Finishes the lease with `result`, waking whoever awaits it.
    pub fn complete(self, result: Result<Lease, Error>) {
        self.0.complete(result);
    }

    /// Whether nobody awaits the lease any more: its [`PendingLease`] was dropped (the caller's
    /// future was cancelled). A cache waiting for another machine's lease can stop there; a
    /// lease it completes anyway is released at once.
    ///
    /// ```
    /// use ckpt::cache::PendingLease;
    ///
    /// let (done, pending) = PendingLease::channel();
    /// assert!(!done.is_abandoned());
    /// drop(pending);
    /// assert!(done.is_abandoned());
    /// ```
    pub fn is_abandoned(&self) -> bool {
        self.0.is_abandoned()
    }
}

/// A one-shot result of `Result<T, Error>`, finished by a [`Completer`]: the core of
/// [`PendingSave`] and [`PendingLease`].
struct Pending<T>(State<T>);

enum State<T> {
    /// Finished when made; `None` once its result was taken.
    Done(Option<Result<T, Error>>),
    Waiting(Arc<Slot<T>>),
}

/// What the completer and the pending result share.
struct Slot<T>(Mutex<SlotState<T>>);

#[allow(clippy::type_complexity)]
struct SlotState<T> {
    result: Option<Result<T, Error>>,
    waker: Option<Waker>,
    /// Set when the pending result was dropped with something to do once it ends (see
    /// `then`): run by the completer instead of storing the result.
    then: Option<Box<dyn FnOnce(Result<T, Error>) + Send>>,
}

struct Completer<T>(Option<Arc<Slot<T>>>);

fn channel<T>() -> (Completer<T>, Pending<T>) {
    let slot = Arc::new(Slot(Mutex::new(SlotState {
        result: None,
        waker: None,
        then: None,
    })));
    (
        Completer(Some(Arc::clone(&slot))),
        Pending(State::Waiting(slot)),
    )
}

impl<T> Pending<T> {
    fn ready(result: Result<T, Error>) -> Self {
        Pending(State::Done(Some(result)))
    }

    fn then(self, then: impl FnOnce(Result<T, Error>) + Send + 'static) {
        match self.0 {
            State::Done(result) => then(result.unwrap_or_else(|| Err(polled_again()))),
            State::Waiting(slot) => {
                let mut state = slot.0.lock();
                match state.result.take() {
                    Some(result) => {
                        drop(state);
                        then(result);
                    }
                    None => {
                        state.waker = None;
                        state.then = Some(Box::new(then));
                    }
                }
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, Error>> {
        let result = match &mut self.0 {
            State::Done(result) => result.take(),
            State::Waiting(slot) => {
                let mut state = slot.0.lock();
                match state.result.take() {
                    Some(result) => Some(result),
                    None => {
                        if !state
                            .waker
                            .as_ref()
                            .is_some_and(|w| w.will_wake(cx.waker()))
                        {
                            state.waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                }
            }
        };
        self.0 = State::Done(None);
        Poll::Ready(result.unwrap_or_else(|| Err(polled_again())))
    }

    fn is_done(&self) -> bool {
        match &self.0 {
            State::Done(_) => true,
            State::Waiting(slot) => slot.0.lock().result.is_some(),
        }
    }
}

fn polled_again() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "a pending result was polled again after it completed",
    )
}

impl<T> Completer<T> {
    /// Whether the pending side was dropped with nothing to do once it ends (no `then`).
    fn is_abandoned(&self) -> bool {
        match &self.0 {
            Some(slot) => Arc::strong_count(slot) == 1 && slot.0.lock().then.is_none(),
            None => true,
        }
    }

    fn complete(mut self, result: Result<T, Error>) {
        if let Some(slot) = self.0.take() {
            slot.finish(result);
        }
    }
}

impl<T> Slot<T> {
    fn finish(&self, result: Result<T, Error>) {
        let mut state = self.0.lock();
        if let Some(then) = state.then.take() {
            drop(state);
            then(result);
            return;
        }
        state.result = Some(result);
        let waker = state.waker.take();
        drop(state);
        // Woken outside the lock: the woken task may poll at once, on another thread.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.finish(Err(Error::new(
                ErrorKind::Closed,
                "the cache dropped a pending save or lease before finishing it",
            )));
        }
    }
}

/// Runs `future` on this thread, parked between polls until woken: for a thread of ckpt's own
/// that waits for a future (a background refresh, a save beside an upload).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

impl fmt::Debug for PendingSave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingSave")
            .field("done", &self.0.is_done())
            .finish()
    }
}

impl fmt::Debug for SaveCompleter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaveCompleter").finish_non_exhaustive()
    }
}

impl fmt::Debug for PendingLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLease")
            .field("done", &self.0.is_done())
            .finish()
    }
}

impl fmt::Debug for LeaseCompleter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseCompleter").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn completes_and_wakes_once() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        let (done, pending) = PendingSave::channel();
        let mut pending = std::pin::pin!(pending);
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        done.complete(Ok(()));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            pending.as_mut().poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(matches!(
            pending.as_mut().poll(&mut cx),
            Poll::Ready(Err(_))
        ));
    }

    #[test]
    fn a_dropped_completer_is_an_error() {
        let (done, pending) = PendingSave::channel();
        drop(done);
        let mut cx = Context::from_waker(Waker::noop());
        let polled = std::pin::pin!(pending).poll(&mut cx);
        assert!(matches!(polled, Poll::Ready(Err(e)) if e.kind() == ErrorKind::Closed));
    }

    #[test]
    fn then_runs_when_the_save_ends() {
        let (done, pending) = PendingSave::channel();
        let ran = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&ran);
        pending.then(move |saved| seen.store(saved, Ordering::SeqCst));
        assert!(!ran.load(Ordering::SeqCst));
        done.complete(Ok(()));
        assert!(ran.load(Ordering::SeqCst));
    }
}
