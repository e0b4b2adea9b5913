//! The knobs of a store: limits and eviction policy, durability, sharing between processes, and
//! the clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which entries go first when a store is over its caps.
///
/// An opaque value (`EvictionPolicy::lru()`), so that new policies never break the API.
/// Ties (equal keys) go to the smaller id.
///
/// ```
/// use ckpt::{EvictionPolicy, Limits};
/// let limits = Limits::new().max_bytes(1 << 30).policy(EvictionPolicy::lfu());
/// assert_eq!(limits.eviction_policy(), EvictionPolicy::lfu());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EvictionPolicy(PolicyKind);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub(crate) enum PolicyKind {
    #[default]
    Lru,
    Lfu,
    Fifo,
}

impl EvictionPolicy {
    /// Least recently used (the default): the entry whose last hit (or save) is oldest.
    pub const fn lru() -> Self {
        EvictionPolicy(PolicyKind::Lru)
    }

    /// Least frequently used: the entry with the fewest hits, then the least recently used of
    /// those. Entries saved by the same transaction go last, so a save is not undone at once.
    pub const fn lfu() -> Self {
        EvictionPolicy(PolicyKind::Lfu)
    }

    /// First in, first out: the entry saved longest ago.
    pub const fn fifo() -> Self {
        EvictionPolicy(PolicyKind::Fifo)
    }

    /// `"lru"`, `"lfu"` or `"fifo"`.
    pub fn name(&self) -> &'static str {
        match self.0 {
            PolicyKind::Lru => "lru",
            PolicyKind::Lfu => "lfu",
            PolicyKind::Fifo => "fifo",
        }
    }

    pub(crate) fn kind(&self) -> PolicyKind {
        self.0
    }
}

impl fmt::Debug for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EvictionPolicy::{}()", self.name())
    }
}

impl std::str::FromStr for EvictionPolicy {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, crate::Error> {
        match s.to_ascii_lowercase().as_str() {
            "lru" => Ok(EvictionPolicy::lru()),
            "lfu" => Ok(EvictionPolicy::lfu()),
            "fifo" => Ok(EvictionPolicy::fifo()),
            _ => Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("unknown eviction policy {s:?}: expected lru, lfu or fifo"),
            )),
        }
    }
}

/// Caps on what a store holds, and when entries expire.
///
/// * `max_bytes`: the stored bytes (the sum of entries' record sizes) never exceed it at a
///   commit boundary;
/// * `max_entries`: the number of entries never exceeds it at a commit boundary;
/// * when a write would cross a cap, the same transaction evicts, in the
///   [policy](EvictionPolicy)'s order, down to the low-water mark (default 90% of each cap);
/// * `max_age`: an entry saved longer ago is expired: never returned again, removed by the next
///   write (or [`Store::expire`](crate::Store::expire));
/// * `max_idle`: an entry whose last hit (or save) is older is removed by the next write (or
///   [`Store::expire`](crate::Store::expire)); until then a hit still returns it, and counts as
///   an access.
///
/// [`EvictionStats`](crate::stats::EvictionStats) counts the entries removed by these rules. An expired
/// entry that is recomputed before a write collects it is replaced in place, and counted as a
/// miss rather than an expiration.
///
/// ```
/// use std::time::Duration;
/// use ckpt::{EvictionPolicy, Limits};
/// let limits = Limits::new()
///     .max_bytes(512 << 20)
///     .max_entries(100_000)
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .policy(EvictionPolicy::lru());
/// assert_eq!(limits.max_bytes_value(), Some(512 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    max_bytes: Option<u64>,
    max_entries: Option<u64>,
    max_age: Option<Duration>,
    max_idle: Option<Duration>,
    policy: EvictionPolicy,
    low_water: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: None,
            max_entries: None,
            max_age: None,
            max_idle: None,
            policy: EvictionPolicy::lru(),
            low_water: 0.9,
        }
    }
}

impl Limits {
    /// No caps, no expiry.
    pub fn new() -> Self {
        Limits::default()
    }

    /// Caps the stored bytes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Caps the number of entries.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = Some(entries);
        self
    }

    /// Expires entries saved longer ago than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Expires entries not hit (or saved) for longer than `idle`.
    pub fn max_idle(mut self, idle: Duration) -> Self {
        self.max_idle = Some(idle);
        self
    }

    /// The eviction policy (default [`EvictionPolicy::lru`]).
    pub fn policy(mut self, policy: EvictionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The fraction of each cap to evict down to, in `(0, 1]` (default 0.9); out-of-range values
    /// are clamped.
    pub fn low_water(mut self, fraction: f64) -> Self {
        self.low_water = if fraction.is_nan() {
            0.9
        } else {
            fraction.clamp(0.01, 1.0)
        };
        self
    }

    /// The byte cap, if any.
    pub fn max_bytes_value(&self) -> Option<u64> {
        self.max_bytes
    }

    /// The entry cap, if any.
    pub fn max_entries_value(&self) -> Option<u64> {
        self.max_entries
    }

    /// The maximum age, if any.
    pub fn max_age_value(&self) -> Option<Duration> {
        self.max_age
    }

    /// The maximum idle time, if any.
    pub fn max_idle_value(&self) -> Option<Duration> {
        self.max_idle
    }

    /// The eviction policy.
    pub fn eviction_policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// The low-water fraction.
    pub fn low_water_value(&self) -> f64 {
        self.low_water
    }

    pub(crate) fn has_caps(&self) -> bool {
        self.max_bytes.is_some() || self.max_entries.is_some()
    }

    /// The order indexes these limits need (see `schema::Indexes`).
    pub(crate) fn needed_indexes(&self) -> u8 {
        use super::schema::indexes::{ACCESS, CREATED, HITS};
        let mut need = 0;
        if self.has_caps() {
            need |= match self.policy.kind() {
                PolicyKind::Lru => ACCESS,
                PolicyKind::Lfu => HITS,
                PolicyKind::Fifo => CREATED,
            };
        }
        if self.max_age.is_some() {
            need |= CREATED;
        }
        if self.max_idle.is_some() {
            need |= ACCESS;
        }
        need
    }
}

/// When a save is durable.
///
/// | mode | a save is on disk | a crash (power loss, SIGKILL) can lose |
/// |---|---|---|
/// | `Immediate` (default) | when `save` returns | nothing acknowledged |
/// | `Relaxed { within }` | at most `within` after `save` returns | saves of the last `within` |
///
/// In both modes a crash never leaves half a save, and never damages earlier entries; buffered
/// bookkeeping (hit counts, last access) may lose its last unflushed updates. Concurrent saves
/// share one commit (group commit) in both modes. `Relaxed` is not available with
/// [`ConcurrencyMode::MultiProcess`], where every commit must reach the disk before other
/// processes may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every save is on disk when `save` returns: one `fsync` per commit.
    #[default]
    Immediate,
    /// Saves commit to memory and reach the disk within `within`, by a background sync (and on
    /// [`Store::flush`](crate::Store::flush), `close`, and drop).
    Relaxed {
        /// The longest a save stays volatile.
        within: Duration,
    },
}

/// Whether other processes may open the store at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ConcurrencyMode {
    /// The default: this process holds the file for itself, and another process opening it gets
    /// [`OpenErrorKind::AlreadyOpen`](crate::OpenErrorKind::AlreadyOpen) at once.
    #[default]
    SingleProcess,
    /// Any number of processes (a pool of workers) open the store and read and write it
    /// concurrently; every process must use this mode. Costs: each commit is two-phase (two
    /// `fsync`s) and records the allocator state; write transactions are serialized across
    /// processes by a file lock; a read that sees another process's new commit drops the page
    /// cache. Not available with [`Durability::Relaxed`]. Concurrent calls of one id in
    /// different processes may both compute (single flight is per process).
    MultiProcess,
}

/// Whether a store may change its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AccessMode {
    /// The default: reads, saves, and the bookkeeping of hits.
    #[default]
    ReadWrite,
    /// Reads only: opening changes no byte of the file (a missing file is an error, not a new
    /// store), hits are not recorded in the file, and every operation that would write
    /// (a save, a removal, eviction, compaction, repair, import, new limits) returns
    /// [`ErrorKind::ReadOnly`](crate::ErrorKind::ReadOnly). Works on a file this process may
    /// not write. [`Store::verify`](crate::Store::verify) then checks ckpt's tables but not the
    /// engine's page checksums (that check repairs what it finds, which writes).
    ReadOnly,
}

/// The source of time for a store's timestamps and expiry. Tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; clones share the time.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ckpt::store::{Clock, ManualClock};
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_060));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `start` (to the millisecond).
    pub fn new(start: SystemTime) -> Self {
        ManualClock(Arc::new(AtomicU64::new(to_ms(start))))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        self.0.store(to_ms(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What opening a store checks of its file.
///
/// Whatever the check, ckpt never returns a stored value that fails its record's checksum or
/// whose type shape differs from the caller's (that is checked at every hit), and an engine
/// panic on a damaged page is contained and returned as an
/// [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) error. The modes differ in what they
/// trust of the file's *structure* (its B-trees and allocator state):
///
/// - `Auto` (the default) opens a file that was closed cleanly in constant time, trusting the
///   structure the engine wrote and recorded at its last commit. A file that was not closed
///   cleanly (a crash, a kill, a power loss, a copy taken while it was open) is recovered by
///   the engine, which then reads every page and verifies its checksum. And once an operation
///   on the store fails in a way that breaks the handle (the engine panicked on a damaged page,
///   or an I/O error), the store reopens the file with the `Full` check before it is used
///   again: a damage found by using the file is repaired (rolled back to its last sound commit)
///   or refused, never worked around.
/// - `Full` reads every page of the file and verifies its checksum at every open, so a file
///   damaged or altered outside ckpt since it was closed is repaired or refused with
///   [`OpenErrorKind::Corrupted`](crate::OpenErrorKind::Corrupted) before anything is read
///   from it. Its cost grows with the file: about a second per GiB. For files on storage you
///   do not trust, or that other programs may write.
/// - `Trust` is `Auto` without the full check on reopen (the engine still recovers a file that
///   was not closed cleanly).
///
/// Under `Auto` and `Trust`, a file damaged *while it was closed* (a flipped bit on disk, an
/// edit by another program) is not looked for until it is used: a damaged value is a miss (the
/// record's checksum), a damaged page makes an operation fail and, under `Auto`, the file be
/// checked; in the worst case, a damaged page that the engine does not notice can make a
/// lookup miss an entry that is there. Run [`Store::verify`](crate::Store::verify) (or `ckpt
/// verify`) from a maintenance task to check every page of a store without closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OpenCheck {
    /// Constant time for a cleanly closed file; every page checked after an unclean shutdown
    /// and before the store is used again after a failure.
    #[default]
    Auto,
    /// Verify every page at every open.
    Full,
    /// Trust a cleanly closed file, and reopen without the check after a failure.
    Trust,
}
