//! Call statistics: the counters a decorator keeps in memory, and their snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Live counters of one decorated function, updated with relaxed atomics on every call.
///
/// A decorator owns one and hands it to its cache through
/// [`Cache::register`](crate::Cache::register); the redb [`Store`](crate::Store) adds what they
/// counted to the file with its next write, so the counts survive restarts.
#[derive(Debug, Default)]
pub struct Counters {
    /// With the feature `metrics`: the same counts, live, through the `metrics` facade.
    #[cfg(feature = "metrics")]
    live: live::Live,
    hits: AtomicU64,
    misses: AtomicU64,
    reruns: AtomicU64,
    saves: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    type_mismatches: AtomicU64,
    saved_nanos: AtomicU64,
    spent_nanos: AtomicU64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit { saved_nanos: u64 },
    Miss,
    Rerun,
    Saved { spent_nanos: u64 },
    NotSaved { spent_nanos: u64 },
    Error,
    Corrupt,
    TypeMismatch,
}

impl Counters {
    /// Counters for the function whose `module::name` `path` gives, the label of its live
    /// metrics (feature `metrics`; without it the path is never built).
    pub(crate) fn for_function(path: impl FnOnce() -> String) -> Counters {
        #[cfg(not(feature = "metrics"))]
        let _ = path;
        Counters {
            #[cfg(feature = "metrics")]
            live: live::Live::new(path()),
            ..Counters::default()
        }
    }

    #[inline]
    pub(crate) fn record(&self, event: Event) {
        #[cfg(feature = "metrics")]
        self.live.record(event);
        match event {
            Event::Hit { saved_nanos } => {
                self.hits.fetch_add(1, Relaxed);
                self.saved_nanos.fetch_add(saved_nanos, Relaxed);
            }
            Event::Miss => {
                self.misses.fetch_add(1, Relaxed);
            }
            Event::Rerun => {
                self.reruns.fetch_add(1, Relaxed);
            }
            Event::Saved { spent_nanos } => {
                self.saves.fetch_add(1, Relaxed);
                self.spent_nanos.fetch_add(spent_nanos, Relaxed);
            }
            Event::NotSaved { spent_nanos } => {
                self.spent_nanos.fetch_add(spent_nanos, Relaxed);
            }
            Event::Error => {
                self.errors.fetch_add(1, Relaxed);
            }
            Event::Corrupt => {
                self.corrupt.fetch_add(1, Relaxed);
            }
            Event::TypeMismatch => {
                self.type_mismatches.fetch_add(1, Relaxed);
            }
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> CallStats {
        CallStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            reruns: self.reruns.load(Relaxed),
            saves: self.saves.load(Relaxed),
            errors: self.errors.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            type_mismatches: self.type_mismatches.load(Relaxed),
            saved_nanos: self.saved_nanos.load(Relaxed),
            spent_nanos: self.spent_nanos.load(Relaxed),
        }
    }
}

/// Counts of calls and their outcomes: a decorator's since it was created
/// ([`DecoratorCheckpoint::stats`](crate::DecoratorCheckpoint::stats)), or a function's over the
/// store's whole life ([`FunctionStats::calls`](crate::store::FunctionStats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallStats {
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that found nothing usable and ran the function.
    pub misses: u64,
    /// Forced runs ([`rerun`](crate::DecoratorCheckpoint::rerun)).
    pub reruns: u64,
    /// Results saved.
    pub saves: u64,
    /// Failures to identify, retrieve or save (whatever the [`OnError`](crate::OnError) policy
    /// did with them).
    pub errors: u64,
    /// Stored values dropped because they failed their checksum or did not decode.
    pub corrupt: u64,
    /// Stored values dropped because they were of another type than the caller expected.
    pub type_mismatches: u64,
    /// Compute time saved by hits: for each hit, the compute time recorded when it was saved.
    pub saved_nanos: u64,
    /// Time spent running the function on misses and reruns.
    pub spent_nanos: u64,
}

impl CallStats {
    /// Compute time saved by hits.
    pub fn time_saved(&self) -> Duration {
        Duration::from_nanos(self.saved_nanos)
    }

    /// Time spent computing.
    pub fn time_spent(&self) -> Duration {
        Duration::from_nanos(self.spent_nanos)
    }

    /// Hits over lookups (hits + misses); `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }

    /// Field-by-field sum, saturating.
    pub(crate) fn plus(&self, o: &CallStats) -> CallStats {
        CallStats {
            hits: self.hits.saturating_add(o.hits),
            misses: self.misses.saturating_add(o.misses),
            reruns: self.reruns.saturating_add(o.reruns),
            saves: self.saves.saturating_add(o.saves),
            errors: self.errors.saturating_add(o.errors),
            corrupt: self.corrupt.saturating_add(o.corrupt),
            type_mismatches: self.type_mismatches.saturating_add(o.type_mismatches),
            saved_nanos: self.saved_nanos.saturating_add(o.saved_nanos),
            spent_nanos: self.spent_nanos.saturating_add(o.spent_nanos),
        }
    }

    /// Field-by-field difference (`self` is the later snapshot of the same counters).
    pub(crate) fn minus(&self, o: &CallStats) -> CallStats {
        CallStats {
            hits: self.hits.saturating_sub(o.hits),
            misses: self.misses.saturating_sub(o.misses),
            reruns: self.reruns.saturating_sub(o.reruns),
            saves: self.saves.saturating_sub(o.saves),
            errors: self.errors.saturating_sub(o.errors),
            corrupt: self.corrupt.saturating_sub(o.corrupt),
            type_mismatches: self.type_mismatches.saturating_sub(o.type_mismatches),
            saved_nanos: self.saved_nanos.saturating_sub(o.saved_nanos),
            spent_nanos: self.spent_nanos.saturating_sub(o.spent_nanos),
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        *self == CallStats::default()
    }
}

/// Entries removed by limits, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvictionStats {
    /// Evicted to keep the stored bytes under the byte cap.
    pub size: u64,
    /// Evicted to keep the number of entries under the entry cap.
    pub count: u64,
    /// Expired by age.
    pub age: u64,
    /// Expired by idleness.
    pub idle: u64,
}

/// Why an entry was removed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionCause {
    /// The byte cap.
    Size,
    /// The entry cap.
    Count,
    /// `max_age`.
    Age,
    /// `max_idle`.
    Idle,
}

impl EvictionStats {
    /// All evictions and expirations.
    pub fn total(&self) -> u64 {
        self.size + self.count + self.age + self.idle
    }

    pub(crate) fn add(&mut self, cause: EvictionCause) {
        match cause {
            EvictionCause::Size => self.size += 1,
            EvictionCause::Count => self.count += 1,
            EvictionCause::Age => self.age += 1,
            EvictionCause::Idle => self.idle += 1,
        }
    }

    pub(crate) fn plus(&self, o: &EvictionStats) -> EvictionStats {
        EvictionStats {
            size: self.size + o.size,
            count: self.count + o.count,
            age: self.age + o.age,
            idle: self.idle + o.idle,
        }
    }
}

/// Live counters through the `metrics` facade (feature `metrics`): whatever recorder the app
/// installed (Prometheus, StatsD, OpenTelemetry exporters) sees every call as it happens.
#[cfg(feature = "metrics")]
mod live {
    use std::sync::OnceLock;

    use super::Event;

    /// The handles of one function's counters, taken from the recorder installed when the
    /// function is first called (install the recorder before: handles taken with none are
    /// no-ops for good).
    #[derive(Debug, Default)]
    pub(super) struct Live {
        function: String,
        handles: OnceLock<Handles>,
    }

    struct Handles {
        hits: metrics::Counter,
        misses: metrics::Counter,
        reruns: metrics::Counter,
        saves: metrics::Counter,
        errors: metrics::Counter,
        corrupt: metrics::Counter,
        type_mismatches: metrics::Counter,
        saved_ns: metrics::Counter,
        spent_ns: metrics::Counter,
    }

    impl std::fmt::Debug for Handles {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Handles")
        }
    }

    impl Live {
        pub(super) fn new(function: String) -> Live {
            Live {
                function,
                handles: OnceLock::new(),
            }
        }

        fn handles(&self) -> &Handles {
            self.handles.get_or_init(|| {
                let counter = |name: &'static str| {
                    metrics::counter!(name, "function" => self.function.clone())
                };
                Handles {
                    hits: counter("ckpt_hits_total"),
                    misses: counter("ckpt_misses_total"),
                    reruns: counter("ckpt_reruns_total"),
                    saves: counter("ckpt_saves_total"),
                    errors: counter("ckpt_errors_total"),
                    corrupt: counter("ckpt_corrupt_total"),
                    type_mismatches: counter("ckpt_type_mismatches_total"),
                    saved_ns: counter("ckpt_time_saved_nanoseconds_total"),
                    spent_ns: counter("ckpt_time_spent_nanoseconds_total"),
                }
            })
        }

        #[inline]
        pub(super) fn record(&self, event: Event) {
            let h = self.handles();
            match event {
                Event::Hit { saved_nanos } => {
                    h.hits.increment(1);
                    h.saved_ns.increment(saved_nanos);
                }
                Event::Miss => h.misses.increment(1),
                Event::Rerun => h.reruns.increment(1),
                Event::Saved { spent_nanos } => {
                    h.saves.increment(1);
                    h.spent_ns.increment(spent_nanos);
                }
                Event::NotSaved { spent_nanos } => h.spent_ns.increment(spent_nanos),
                Event::Error => h.errors.increment(1),
                Event::Corrupt => h.corrupt.increment(1),
                Event::TypeMismatch => h.type_mismatches.increment(1),
            }
        }
    }
}

/// A store's use of its remote tier (feature `remote`) since it was opened: what the local file
/// missed and the remote answered, what was published, and what went wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Local misses the remote answered with a sound object.
    pub hits: u64,
    /// Local misses the remote had nothing (usable) for.
    pub misses: u64,
    /// Remote hits written into the local file.
    pub backfills: u64,
    /// Objects created (or replaced) in the remote.
    pub publishes: u64,
    /// Publishes that found the result there already (results are write-once).
    pub already_present: u64,
    /// Publishes that failed (or were not tried while the breaker was open).
    pub publish_failures: u64,
    /// Background publishes dropped because the queue was full.
    pub dropped_publishes: u64,
    /// Remote objects that failed their checks (misses; replaced by the next save), each
    /// counted once however often it is found again before it is replaced.
    pub corrupt: u64,
    /// Remote objects of another type than the caller's (its type changed, its version did
    /// not): served, decoded as a mismatch, computed again, and replaced by the next publish.
    pub wrong_type: u64,
    /// Objects replaced by a publish: damaged ones, ones of another type, ones too old for the
    /// store's `max_age`.
    pub replaced: u64,
    /// Failed or timed-out requests: fetches, publishes, and lease requests.
    pub errors: u64,
    /// Lookups not made because the breaker was open.
    pub skipped: u64,
    /// Bytes fetched.
    pub bytes_down: u64,
    /// Bytes published.
    pub bytes_up: u64,
    /// Fetch requests made.
    pub fetches: u64,
    /// Time spent in them, ns.
    pub fetch_nanos: u64,
    /// Leases held to compute a miss (`Dedup::Lease`), take-overs included (a lease taken and
    /// given back at once because the result had just arrived is counted in `lease_served`).
    pub leases_taken: u64,
    /// Of those, leases taken over from an owner that stopped renewing them (a crashed
    /// machine).
    pub leases_taken_over: u64,
    /// Misses that found another machine's lease and waited.
    pub lease_waits: u64,
    /// Misses served another machine's result while (or just after) taking a lease: computed
    /// once, elsewhere.
    pub lease_served: u64,
}

impl RemoteStats {
    /// How many counts a `RemoteStats` has, in the order of [`counts`](Self::counts): the
    /// order they are recorded in the file (`ckpt_info`, key `remote`), new ones at the end.
    pub(crate) const COUNTS: usize = 20;

    /// Mean latency of a fetch; `None` before the first.
    pub fn mean_fetch_time(&self) -> Option<Duration> {
        (self.fetches > 0).then(|| Duration::from_nanos(self.fetch_nanos / self.fetches))
    }

    /// Every count, in recording order.
    pub(crate) fn counts(&self) -> [u64; Self::COUNTS] {
        [
            self.hits,
            self.misses,
            self.backfills,
            self.publishes,
            self.already_present,
            self.publish_failures,
            self.dropped_publishes,
            self.corrupt,
            self.wrong_type,
            self.replaced,
            self.errors,
            self.skipped,
            self.bytes_down,
            self.bytes_up,
            self.fetches,
            self.fetch_nanos,
            self.leases_taken,
            self.leases_taken_over,
            self.lease_waits,
            self.lease_served,
        ]
    }

    /// The counts back from [`counts`](Self::counts) order; counts missing from the end (a
    /// file recorded by an older version) are zero.
    pub(crate) fn from_counts(counts: &[u64]) -> Self {
        let at = |i: usize| counts.get(i).copied().unwrap_or(0);
        RemoteStats {
            hits: at(0),
            misses: at(1),
            backfills: at(2),
            publishes: at(3),
            already_present: at(4),
            publish_failures: at(5),
            dropped_publishes: at(6),
            corrupt: at(7),
            wrong_type: at(8),
            replaced: at(9),
            errors: at(10),
            skipped: at(11),
            bytes_down: at(12),
            bytes_up: at(13),
            fetches: at(14),
            fetch_nanos: at(15),
            leases_taken: at(16),
            leases_taken_over: at(17),
            lease_waits: at(18),
            lease_served: at(19),
        }
    }

    pub(crate) fn plus(&self, other: &RemoteStats) -> RemoteStats {
        let (a, b) = (self.counts(), other.counts());
        RemoteStats::from_counts(&std::array::from_fn::<u64, { Self::COUNTS }, _>(|i| {
            a[i].saturating_add(b[i])
        }))
    }

    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn minus(&self, other: &RemoteStats) -> RemoteStats {
        let (a, b) = (self.counts(), other.counts());
        RemoteStats::from_counts(&std::array::from_fn::<u64, { Self::COUNTS }, _>(|i| {
            a[i].saturating_sub(b[i])
        }))
    }
}
