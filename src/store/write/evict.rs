//! Eviction and expiry inside a write transaction: [`Tx::enforce`] removes, by the store's
//! policy, the entries over its caps or past their age, in the transaction that would exceed
//! them, picking victims from the order indexes at a cost proportional to what it removes. See
//! ARCHITECTURE.md, "Limits and eviction".

use redb::ReadableTable;

use super::{KeyedIds, Tx, id_of_key};
use crate::error::Error;
use crate::stats::EvictionCause;
use crate::store::engine_error::storage;
use crate::store::options::{Limits, PolicyKind, duration_ms};
use crate::store::schema::FunctionRecord;
use crate::store::schema::indexes::{ACCESS, CREATED, HITS};

/// An entry removed by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Victim {
    pub id: [u8; 16],
    pub fn_key: u64,
    pub size: u64,
    pub cause: EvictionCause,
}

impl Tx<'_> {
    /// Entries and stored bytes of the whole store, as this transaction leaves them so far.
    fn totals(&self) -> Result<(i64, i64), Error> {
        let e = storage("cannot read function rows");
        let (mut entries, mut bytes) = (0i64, 0i64);
        for row in self.functions.iter().map_err(&e)? {
            let (_, v) = row.map_err(&e)?;
            let r = FunctionRecord::decode(v.value())
                .ok_or_else(|| Error::corrupted("a function row is not one ckpt wrote"))?;
            entries += r.entries as i64;
            bytes += r.bytes as i64;
        }
        for d in self.deltas.values() {
            entries += d.entries;
            bytes += d.bytes;
        }
        Ok((entries, bytes))
    }

    fn evict(&mut self, id: &[u8; 16], cause: EvictionCause) -> Result<Option<Victim>, Error> {
        let Some(meta) = self.delete(id)? else {
            return Ok(None);
        };
        self.delta(meta.fn_key).evictions.add(cause);
        Ok(Some(Victim {
            id: *id,
            fn_key: meta.fn_key,
            size: meta.size,
            cause,
        }))
    }

    /// Up to `n` ids from the start of an order index, with keys after `after` and, when
    /// `below` is set, below it.
    fn first_ids(
        &self,
        which: u8,
        after: Option<&[u8]>,
        below: Option<u64>,
        n: usize,
    ) -> Result<KeyedIds, Error> {
        let e = storage("cannot read an order index");
        let mut out = Vec::new();
        macro_rules! scan {
            ($table:expr, $n:literal) => {{
                let Some(t) = $table.as_ref() else {
                    return Err(Error::corrupted("an order index is missing"));
                };
                let start: [u8; $n] = match after {
                    Some(k) => <[u8; $n]>::try_from(k).unwrap_or([0xff; $n]),
                    None => [0; $n],
                };
                for row in t.range::<&[u8; $n]>(&start..).map_err(&e)? {
                    let (k, _) = row.map_err(&e)?;
                    let key = k.value();
                    if after.is_some_and(|a| a == &key[..]) {
                        continue;
                    }
                    if below.is_some_and(|b| key[..8] >= b.to_be_bytes()[..]) {
                        break;
                    }
                    out.push((key.to_vec(), id_of_key(key)));
                    if out.len() >= n {
                        break;
                    }
                }
            }};
        }
        match which {
            CREATED => scan!(self.by_created, 24),
            ACCESS => scan!(self.by_access, 24),
            _ => scan!(self.by_hits, 32),
        }
        Ok(out)
    }

    /// Removes every entry whose index key (its first 8 bytes, a time) is below `cutoff`.
    fn expire_below(
        &mut self,
        which: u8,
        cutoff: u64,
        cause: EvictionCause,
        victims: &mut Vec<Victim>,
    ) -> Result<(), Error> {
        loop {
            let batch = self.first_ids(which, None, Some(cutoff), 256)?;
            if batch.is_empty() {
                return Ok(());
            }
            for (_, id) in batch {
                victims.extend(self.evict(&id, cause)?);
            }
        }
    }

    /// Applies `limits`: expires by age and idleness, then, if over a cap, evicts in the
    /// policy's order down to the low-water mark. Cost is proportional to what is removed (plus
    /// one pass over the function rows when there are caps).
    pub(crate) fn enforce(&mut self, limits: &Limits) -> Result<Vec<Victim>, Error> {
        let victims = self.enforce_inner(limits)?;
        // Reported once committed (`Reports`).
        for v in &victims {
            let at = match v.cause {
                EvictionCause::Size => 0,
                EvictionCause::Count => 1,
                EvictionCause::Age => 2,
                EvictionCause::Idle => 3,
            };
            self.reports.evicted[at] += 1;
        }
        Ok(victims)
    }

    /// Removes the entries of each function in `ages` (`(function key, ms)`) saved longer ago
    /// than its age. Walks the creation-order index up to the youngest cutoff, so it costs one
    /// metadata read per entry older than the smallest age: the store runs it every few seconds
    /// at most (`save.rs`), not with every write.
    fn expire_functions(
        &mut self,
        ages: &[(u64, u64)],
        victims: &mut Vec<Victim>,
    ) -> Result<(), Error> {
        let Some(youngest) = ages.iter().map(|&(_, age)| age).min() else {
            return Ok(());
        };
        let horizon = self.now_ms.saturating_sub(youngest);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = self.first_ids(CREATED, after.as_deref(), Some(horizon), 256)?;
            let Some((last, _)) = batch.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for (_, id) in batch {
                let Some(meta) = self.meta(&id)? else {
                    continue;
                };
                let expired = ages.iter().any(|&(key, age)| {
                    key == meta.fn_key && meta.created_ms < self.now_ms.saturating_sub(age)
                });
                if expired {
                    victims.extend(self.evict(&id, EvictionCause::Age)?);
                }
            }
        }
    }

    fn enforce_inner(&mut self, limits: &Limits) -> Result<Vec<Victim>, Error> {
        let mut victims = Vec::new();
        let ages = std::mem::take(&mut self.function_ages);
        if !ages.is_empty() && self.indexes() & CREATED != 0 {
            self.expire_functions(&ages, &mut victims)?;
        }
        if let Some(age) = limits.max_age_value() {
            let cutoff = self.now_ms.saturating_sub(duration_ms(age));
            self.expire_below(CREATED, cutoff, EvictionCause::Age, &mut victims)?;
        }
        if let Some(idle) = limits.max_idle_value() {
            let cutoff = self.now_ms.saturating_sub(duration_ms(idle));
            self.expire_below(ACCESS, cutoff, EvictionCause::Idle, &mut victims)?;
        }
        if !limits.has_caps() {
            return Ok(victims);
        }
        let (mut entries, mut bytes) = self.totals()?;
        let max_e = limits.max_entries_value().map(|m| m as i64);
        let max_b = limits.max_bytes_value().map(|m| m as i64);
        let over = |cap: Option<i64>, v: i64| cap.is_some_and(|c| v > c);
        if !over(max_e, entries) && !over(max_b, bytes) {
            return Ok(victims);
        }
        let low = limits.low_water_value();
        let target = |cap: Option<i64>| cap.map(|c| (c as f64 * low).floor() as i64);
        let (target_e, target_b) = (target(max_e), target(max_b));
        let which = match limits.eviction_policy().kind() {
            PolicyKind::Lru => ACCESS,
            PolicyKind::Lfu => HITS,
            PolicyKind::Fifo => CREATED,
        };
        // First every entry but this transaction's saves, then those (in the same order).
        let mut deferred = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut order_done = false;
        while over(target_e, entries) || over(target_b, bytes) {
            let batch = if order_done {
                if deferred.is_empty() {
                    break;
                }
                std::mem::take(&mut deferred)
            } else {
                let batch = self.first_ids(which, after.as_deref(), None, 256)?;
                if batch.is_empty() {
                    order_done = true;
                    continue;
                }
                after = batch.last().map(|(k, _)| k.clone());
                let (now, other): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|(_, id)| self.saved_now.contains(id));
                deferred.extend(now);
                other
            };
            for (_, id) in batch {
                if !(over(target_e, entries) || over(target_b, bytes)) {
                    break;
                }
                let cause = if over(target_b, bytes) {
                    EvictionCause::Size
                } else {
                    EvictionCause::Count
                };
                if let Some(v) = self.evict(&id, cause)? {
                    entries -= 1;
                    bytes -= v.size as i64;
                    victims.push(v);
                }
            }
        }
        Ok(victims)
    }
}
