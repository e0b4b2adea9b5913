//! The access log: hits recorded in memory, applied to entry metadata with the next write.
//!
//! A hit must not open a write transaction, so it only appends `(id, time)` to one of several
//! small shards (one `try_lock`, no allocation: the shards keep their capacity). A contended or
//! full shard sends the thread to the next one; when all are full the access is dropped and
//! counted. Losing accesses costs only precision of `hits` / `last access` per entry (the
//! per-function hit counts come from atomic counters and are exact).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    pub id: [u8; 16],
    pub at_ms: u64,
}

pub(crate) struct AccessLog {
    shards: Box<[Mutex<Vec<Access>>]>,
    per_shard: usize,
    len: AtomicUsize,
    dropped: AtomicU64,
}

/// A small number each thread keeps, to spread threads over shards.
#[inline]
pub(crate) fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: Cell<usize> = const { Cell::new(usize::MAX) });
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Relaxed));
        }
        s.get()
    })
}

impl AccessLog {
    /// A log holding up to about `capacity` accesses.
    pub(crate) fn new(capacity: usize) -> AccessLog {
        let shards = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(2, 64)
            .next_power_of_two();
        let per_shard = capacity.div_ceil(shards).max(16);
        AccessLog {
            shards: (0..shards)
                .map(|_| Mutex::new(Vec::with_capacity(per_shard)))
                .collect(),
            per_shard,
            len: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records an access; returns false when it had to be dropped.
    #[inline]
    pub(crate) fn record(&self, access: Access) -> bool {
        let n = self.shards.len();
        let start = thread_slot();
        for k in 0..n {
            if let Some(mut shard) = self.shards[(start + k) & (n - 1)].try_lock()
                && shard.len() < self.per_shard
            {
                shard.push(access);
                self.len.fetch_add(1, Relaxed);
                return true;
            }
        }
        self.dropped.fetch_add(1, Relaxed);
        false
    }

    /// Approximately how many accesses are waiting.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether the log is at least half full: time to write it.
    #[inline]
    pub(crate) fn half_full(&self) -> bool {
        self.len() * 2 >= self.per_shard * self.shards.len()
    }

    /// Accesses dropped because the log was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Moves every waiting access into `out`.
    pub(crate) fn drain_into(&self, out: &mut Vec<Access>) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            self.len.fetch_sub(shard.len(), Relaxed);
            out.extend(shard.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_drains_and_drops_when_full() {
        let log = AccessLog::new(32);
        let cap = log.per_shard * log.shards.len();
        for i in 0..cap as u64 {
            assert!(log.record(Access {
                id: [0; 16],
                at_ms: i
            }));
        }
        assert!(!log.record(Access {
            id: [1; 16],
            at_ms: 0
        }));
        assert_eq!(log.dropped(), 1);
        let mut out = Vec::new();
        log.drain_into(&mut out);
        assert_eq!(out.len(), cap);
        assert_eq!(log.len(), 0);
        assert!(log.record(Access {
            id: [2; 16],
            at_ms: 0
        }));
    }
}
