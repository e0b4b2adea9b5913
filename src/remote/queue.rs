//! The background publishes' queue: bounded, never blocking the caller (a full queue drops its
//! oldest job), taken from by several workers, and waitable until empty and idle (`flush`,
//! drop).

use std::collections::VecDeque;

use parking_lot::{Condvar, Mutex};

pub(crate) struct Queue<J> {
    state: Mutex<State<J>>,
    changed: Condvar,
    capacity: usize,
}

struct State<J> {
    jobs: VecDeque<J>,
    /// Jobs taken and not yet done.
    busy: usize,
    stopped: bool,
}

impl<J> Queue<J> {
    pub(crate) fn new(capacity: usize) -> Queue<J> {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                busy: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a job; says whether the oldest waiting job was dropped to make room.
    pub(crate) fn push(&self, job: J) -> bool {
        let mut state = self.state.lock();
        let dropped = state.jobs.len() >= self.capacity && state.jobs.pop_front().is_some();
        state.jobs.push_back(job);
        drop(state);
        self.changed.notify_all();
        dropped
    }

    /// The next job (marked busy until [`done`](Self::done)), or `None` once stopped and empty.
    pub(crate) fn next(&self) -> Option<J> {
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                state.busy += 1;
                return Some(job);
            }
            if state.stopped {
                return None;
            }
            self.changed.wait(&mut state);
        }
    }

    pub(crate) fn done(&self) {
        let mut state = self.state.lock();
        state.busy = state.busy.saturating_sub(1);
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until every job pushed so far is done.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.state.lock();
        while !state.jobs.is_empty() || state.busy > 0 {
            self.changed.wait(&mut state);
        }
    }

    /// Lets the workers finish the jobs left, then end.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_job() {
        let q = Queue::new(2);
        assert!(!q.push(1) && !q.push(2));
        assert!(q.push(3));
        assert_eq!(q.next(), Some(2));
        q.done();
        q.stop();
        assert_eq!(q.next(), Some(3));
        q.done();
        assert_eq!(q.next(), None);
        q.wait_idle();
    }

    #[test]
    fn waiting_for_idle_waits_for_every_worker() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        let q = Arc::new(Queue::new(16));
        let finished = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (q, finished) = (Arc::clone(&q), Arc::clone(&finished));
                std::thread::spawn(move || {
                    while let Some(ms) = q.next() {
                        std::thread::sleep(Duration::from_millis(ms));
                        finished.fetch_add(1, Ordering::SeqCst);
                        q.done();
                    }
                })
            })
            .collect();
        // The slowest job is taken first: the queue empties long before it is done.
        for ms in [300, 1, 1, 1, 1] {
            q.push(ms);
        }
        q.wait_idle();
        assert_eq!(
            finished.load(Ordering::SeqCst),
            5,
            "idle before every job was done"
        );
        q.stop();
        for w in workers {
            w.join().unwrap();
        }
    }
}
