//! The background flusher: one thread per open store that makes relaxed commits durable on
//! time, writes the access log when it fills, and writes buffered bookkeeping every few seconds
//! so that a long run of hits without saves still reaches the file.
//!
//! It holds only a `Weak` reference to the store, upgraded for the length of one flush, and the
//! last `Store` handle stops and joins it before the file is closed, so dropping a store
//! releases the file deterministically.

use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
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

    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    pub(crate) fn spawn(
        store: Weak<Shared>,
        flusher: std::sync::Arc<Flusher>,
    ) -> Option<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ckpt-flusher".into())
            .spawn(move || flusher.run(store))
            .ok()
    }

    fn run(&self, store: Weak<Shared>) {
        let mut last_flush = Instant::now();
        loop {
            let (sync, flush) = {
                let mut state = self.state.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let now = Instant::now();
                    let sync = state.sync_by.is_some_and(|t| t <= now);
                    let flush = state.flush_wanted || now >= last_flush + BOOKKEEPING_EVERY;
                    if sync || flush {
                        state.flush_wanted = false;
                        break (sync, flush);
                    }
                    let next = state.sync_by.map_or(last_flush + BOOKKEEPING_EVERY, |t| {
                        t.min(last_flush + BOOKKEEPING_EVERY)
                    });
                    self.wake.wait_until(&mut state, next);
                }
            };
            self.flush_requested.store(false, Ordering::Relaxed);
            let Some(shared) = store.upgrade() else {
                return;
            };
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
