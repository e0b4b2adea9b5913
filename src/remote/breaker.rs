//! The circuit breaker: after repeated failures the remote is not asked for a while, so a dead
//! remote does not add its timeout to every miss; after the pause one caller probes it, and a
//! success closes the breaker again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    pause: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Until when (ms since `epoch`, plus one; 0: closed) no request is made.
    open_until: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, pause: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            pause,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether to make a request now. While open, no; once the pause is over, yes for one
    /// caller (the probe: the pause starts again for the others).
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        if now < until {
            return false;
        }
        let next = now + self.pause.as_millis() as u64;
        self.open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until.store(0, Ordering::Release);
    }

    /// Counts a failure; says whether it opened the breaker (it was closed).
    pub(crate) fn failed(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures < self.threshold {
            return false;
        }
        let next = self.now() + self.pause.as_millis() as u64;
        let before = self.open_until.swap(next, Ordering::AcqRel);
        before == 0
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_after_the_pause_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(!b.failed() && !b.failed());
        assert!(b.allow());
        assert!(b.failed(), "the third failure opens it");
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one probe after the pause");
        assert!(!b.allow(), "only one");
        b.succeeded();
        assert!(b.allow() && !b.is_open());
    }
}
