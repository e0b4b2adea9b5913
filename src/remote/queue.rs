//! The background publishes' queue: bounded, never blocking the caller (a full queue drops its
//! oldest job), taken from by several workers, and waitable until the jobs pushed before the
//! wait are done (`flush`, drop).

use std::collections::{BTreeSet, VecDeque};

use parking_lot::{Condvar, Mutex};

pub(crate) struct Queue<J> {
    state: Mutex<State<J>>,
    /// A job was pushed (one sleeping worker is woken for it), or the queue stopped.
    pushed: Condvar,
    /// A job was done (what `wait_idle` waits for), or the queue stopped.
    finished: Condvar,
    capacity: usize,
}

struct State<J> {
    /// Waiting jobs, each with its number (in push order).
    jobs: VecDeque<(u64, J)>,
    /// The numbers of the jobs taken and not yet done.
    busy: BTreeSet<u64>,
    /// The number the next job pushed gets.
    next: u64,
    stopped: bool,
}

impl<J> Queue<J> {
    pub(crate) fn new(capacity: usize) -> Queue<J> {
        Queue {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                busy: BTreeSet::new(),
                next: 0,
                stopped: false,
            }),
            pushed: Condvar::new(),
            finished: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a job; says whether the oldest waiting job was dropped to make room.
    pub(crate) fn push(&self, job: J) -> bool {
        let mut state = self.state.lock();
        let dropped = state.jobs.len() >= self.capacity && state.jobs.pop_front().is_some();
        let number = state.next;
        state.next += 1;
        state.jobs.push_back((number, job));
        drop(state);
        // One worker: waking them all for one job would have the others wake for nothing (a
        // thread wake is tens of microseconds of CPU).
        self.pushed.notify_one();
        if dropped {
            // A job `wait_idle` may wait for is gone.
            self.finished.notify_all();
        }
        dropped
    }

    /// The next job and its number (busy until [`done`](Self::done) with that number), or
    /// `None` once stopped and empty.
    pub(crate) fn next(&self) -> Option<(u64, J)> {
        let mut state = self.state.lock();
        loop {
            if let Some((number, job)) = state.jobs.pop_front() {
                state.busy.insert(number);
                return Some((number, job));
            }
            if state.stopped {
                return None;
            }
            self.pushed.wait(&mut state);
        }
    }

    pub(crate) fn done(&self, number: u64) {
        self.state.lock().busy.remove(&number);
        self.finished.notify_all();
    }

    /// Waits until every job pushed before the call is done (or dropped). Jobs pushed while it
    /// waits are not waited for: a flush ends even while other threads keep saving.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.state.lock();
        let before = state.next;
        loop {
            let waiting = state.jobs.front().is_some_and(|(n, _)| *n < before);
            let running = state.busy.first().is_some_and(|n| *n < before);
            if !waiting && !running {
                return;
            }
            self.finished.wait(&mut state);
        }
    }

    /// Lets the workers finish the jobs left, then end.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.pushed.notify_all();
        self.finished.notify_all();
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
        assert_eq!(q.next(), Some((1, 2)));
        q.done(1);
        q.stop();
        assert_eq!(q.next(), Some((2, 3)));
        q.done(2);
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
                    while let Some((n, ms)) = q.next() {
                        std::thread::sleep(Duration::from_millis(ms));
                        finished.fetch_add(1, Ordering::SeqCst);
                        q.done(n);
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

    #[test]
    fn waiting_for_idle_does_not_wait_for_jobs_pushed_after() {
        use std::time::{Duration, Instant};

        let q = Queue::new(16);
        q.push(1);
        q.push(2);
        let (a, _) = q.next().unwrap();
        let (b, _) = q.next().unwrap();
        let finished = std::thread::scope(|s| {
            let waiter = s.spawn(|| q.wait_idle());
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !waiter.is_finished(),
                "idle while jobs pushed before are busy"
            );
            // Pushed while it waits: not waited for.
            q.push(3);
            q.done(a);
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !waiter.is_finished(),
                "idle while a job pushed before is busy"
            );
            q.done(b);
            let deadline = Instant::now() + Duration::from_secs(2);
            while !waiter.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let finished = waiter.is_finished();
            // Let a waiter that waits for the late job end, so that the scope can.
            let (c, _) = q.next().unwrap();
            q.done(c);
            finished
        });
        assert!(finished, "the wait waited for a job pushed after it began");
    }
}
