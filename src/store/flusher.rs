//! The background flusher: one thread per open store that makes relaxed commits durable on
//! time, writes the access log when it fills, writes buffered bookkeeping every few seconds
//! so that a long run of hits without saves still reaches the file, leads the group commits
//! of deferred saves (async callers) that no saver of their own waits to lead, and saves the
//! large backfills that remote hits left to it (feature `remote`).
//!
//! It holds only a `Weak` reference to the store, upgraded for the length of one flush, and the
//! last `Store` handle stops and joins it before the file is closed, so dropping a store
//! releases the file deterministically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;

/// How often buffered bookkeeping is written when nothing else writes.
const BOOKKEEPING_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Flusher {
    state: Mutex<State>,
    wake: Condvar,
    /// Set by a hit that finds the access log half full; cleared by the flush.
    flush_requested: AtomicBool,
}

#[derive(Default)]
struct State {
    stop: bool,
    /// When the oldest relaxed commit must be on disk.
    sync_by: Option<Instant>,
    flush_wanted: bool,
    /// Deferred saves are queued with nobody leading their commit.
    commit_wanted: bool,
    /// Backfills wait to be saved (feature `remote`).
    backfill_wanted: bool,
    /// The thread is running (and will lead deferred saves' commits until it stops).
    alive: bool,
}

impl Flusher {
    /// Asks for the access log to be written soon; cheap to call on every hit.
    #[inline]
    pub(crate) fn request_flush(&self) {
        if !self.flush_requested.swap(true, Ordering::Relaxed) {
            self.state.lock().flush_wanted = true;
            self.wake.notify_one();
        }
    }

    /// Makes sure a sync happens by `deadline` (an earlier pending one stands).
    pub(crate) fn sync_by(&self, deadline: Instant) {
        let mut state = self.state.lock();
        if state.sync_by.is_none_or(|t| t > deadline) {
            state.sync_by = Some(deadline);
            self.wake.notify_one();
        }
    }

    /// A sync happened: nothing volatile is left.
    pub(crate) fn synced(&self) {
        self.state.lock().sync_by = None;
    }

    /// Asks the thread to lead the commit of queued deferred saves; `false` when it is not
    /// running (never started, or stopped): the caller must commit them itself.
    pub(crate) fn request_commit(&self) -> bool {
        self.request(|state| &mut state.commit_wanted)
    }

    /// Asks the thread to save the backfills waiting; `false` when it is not running: the
    /// caller saves them itself.
    #[cfg(feature = "remote")]
    pub(crate) fn request_backfill(&self) -> bool {
        self.request(|state| &mut state.backfill_wanted)
    }

    /// Raises the request flag `wanted` picks and wakes the thread for it (once, until it
    /// takes the request); `false` when the thread is not running.
    fn request(&self, wanted: impl FnOnce(&mut State) -> &mut bool) -> bool {
        let mut state = self.state.lock();
        if !state.alive || state.stop {
            return false;
        }
        let wanted = wanted(&mut state);
        if !*wanted {
            *wanted = true;
            self.wake.notify_one();
        }
        true
    }

    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    pub(crate) fn spawn(store: Weak<Shared>, flusher: Arc<Flusher>) -> Option<JoinHandle<()>> {
        // Alive before the thread runs: a deferred save right after the open is its to commit.
        flusher.state.lock().alive = true;
        let running = Arc::clone(&flusher);
        let thread = std::thread::Builder::new()
            .name("ckpt-flusher".into())
            .spawn(move || running.run(store))
            .ok();
        if thread.is_none() {
            flusher.state.lock().alive = false;
        }
        thread
    }

    fn run(&self, store: Weak<Shared>) {
        let mut last_flush = Instant::now();
        loop {
            let (sync, flush, commit, backfill) = {
                let mut state = self.state.lock();
                loop {
                    if state.stop {
                        // Deferred saves still queued are committed before the thread goes:
                        // their callers may be gone, but the saves were accepted.
                        state.alive = false;
                        drop(state);
                        if let Some(shared) = store.upgrade() {
                            shared.lead_deferred();
                            #[cfg(feature = "remote")]
                            shared.save_all_waiting();
                        }
                        return;
                    }
                    let now = Instant::now();
                    let sync = state.sync_by.is_some_and(|t| t <= now);
                    let flush = state.flush_wanted || now >= last_flush + BOOKKEEPING_EVERY;
                    let commit = std::mem::take(&mut state.commit_wanted);
                    let backfill = std::mem::take(&mut state.backfill_wanted);
                    if sync || flush || commit || backfill {
                        state.flush_wanted = false;
                        break (sync, flush, commit, backfill);
                    }
                    let next = state.sync_by.map_or(last_flush + BOOKKEEPING_EVERY, |t| {
                        t.min(last_flush + BOOKKEEPING_EVERY)
                    });
                    self.wake.wait_until(&mut state, next);
                }
            };
            let Some(shared) = store.upgrade() else {
                return;
            };
            if commit {
                shared.lead_deferred();
            }
            #[cfg(feature = "remote")]
            if backfill {
                shared.save_waiting_in_background();
            }
            #[cfg(not(feature = "remote"))]
            let _ = backfill;
            if !(sync || flush) {
                continue;
            }
            self.flush_requested.store(false, Ordering::Relaxed);
            // Failures are not lost: the work stays pending, and callers see the same failure
            // on their own writes. Retry a sync a little later.
            if sync {
                if shared.sync().is_err() {
                    self.sync_by(Instant::now() + Duration::from_millis(100));
                }
            } else if flush && shared.has_bookkeeping() {
                let _ = shared.flush();
            }
            drop(shared);
            last_flush = Instant::now();
        }
    }
}
