//! A save that completes later: what [`Cache::save_deferred`](crate::Cache::save_deferred)
//! returns, so that an async caller awaits a durable write instead of blocking its executor
//! thread on it. A one-shot channel with a `Waker`, std and `parking_lot` only: ckpt depends on
//! no async runtime.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use parking_lot::Mutex;

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
pub struct PendingSave(State);

enum State {
    /// Finished when made; `None` once its result was taken.
    Done(Option<Result<(), Error>>),
    Waiting(Arc<Slot>),
}

/// What the completer and the pending save share.
#[derive(Default)]
struct Slot(Mutex<SlotState>);

#[derive(Default)]
struct SlotState {
    result: Option<Result<(), Error>>,
    waker: Option<Waker>,
    /// Set when the `PendingSave` was dropped with something to do once the save ends (see
    /// `then`): run by the completer instead of storing the result.
    then: Option<Box<dyn FnOnce(bool) + Send>>,
}

/// Finishes a [`PendingSave`]: the cache's half of [`PendingSave::channel`]. Dropping it
/// without [`complete`](Self::complete) finishes the save with an error
/// ([`ErrorKind::Closed`]), so an awaiting caller is never left waiting forever.
pub struct SaveCompleter(Option<Arc<Slot>>);

impl PendingSave {
    /// A save that is already done, with this result.
    pub fn ready(result: Result<(), Error>) -> PendingSave {
        PendingSave(State::Done(Some(result)))
    }

    /// A pending save and the completer that finishes it.
    pub fn channel() -> (SaveCompleter, PendingSave) {
        let slot = Arc::new(Slot::default());
        (
            SaveCompleter(Some(Arc::clone(&slot))),
            PendingSave(State::Waiting(slot)),
        )
    }

    /// Runs `then(saved)` when the save ends (at once if it has), instead of anyone awaiting
    /// it: a leader dropped while its save is in flight lands its flight from here.
    pub(crate) fn then(self, then: impl FnOnce(bool) + Send + 'static) {
        match self.0 {
            State::Done(result) => then(matches!(result, Some(Ok(())))),
            State::Waiting(slot) => {
                let mut state = slot.0.lock();
                match state.result.take() {
                    Some(result) => {
                        drop(state);
                        then(result.is_ok());
                    }
                    None => {
                        state.waker = None;
                        state.then = Some(Box::new(then));
                    }
                }
            }
        }
    }
}

impl Future for PendingSave {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.0 {
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
        this.0 = State::Done(None);
        Poll::Ready(result.unwrap_or_else(|| {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "a pending save was polled again after it completed",
            ))
        }))
    }
}

impl SaveCompleter {
    /// Finishes the save with `result`, waking whoever awaits it.
    pub fn complete(mut self, result: Result<(), Error>) {
        if let Some(slot) = self.0.take() {
            slot.finish(result);
        }
    }
}

impl Slot {
    fn finish(&self, result: Result<(), Error>) {
        let mut state = self.0.lock();
        if let Some(then) = state.then.take() {
            drop(state);
            then(result.is_ok());
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

impl Drop for SaveCompleter {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.finish(Err(Error::new(
                ErrorKind::Closed,
                "the cache dropped a save before finishing it",
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
        let done = match &self.0 {
            State::Done(_) => true,
            State::Waiting(slot) => slot.0.lock().result.is_some(),
        };
        f.debug_struct("PendingSave").field("done", &done).finish()
    }
}

impl fmt::Debug for SaveCompleter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaveCompleter").finish_non_exhaustive()
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
