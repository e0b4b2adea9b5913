//! What an eviction would remove, worked out from a read transaction: a dry run
//! ([`EvictMode::DryRun`](crate::store::EvictMode::DryRun)) writes nothing, so it also runs on a
//! read-only store.
//!
//! It follows `Tx::enforce` step by step (expiry by age, then by idleness, then the caps down to
//! the low-water mark in the policy's order), reading the order from the metadata rows rather
//! than the order indexes, which a store maintains only while a limit needs them: an index key
//! is built from its entry's metadata row, so both give the same order. The cost is one scan
//! and one sort of the metadata, where the write path reads only the victims; a dry run is an
//! administrative call.

use std::collections::HashSet;

use redb::{ReadTransaction, ReadableTable};

use super::engine_error::engine_error;
use super::options::{Limits, PolicyKind, duration_ms};
use super::schema::{ENTRIES, EntryMeta, FUNCTIONS, FunctionRecord};
use super::write::Victim;
use crate::error::Error;
use crate::stats::EvictionCause;

/// The entries `limits` would remove at `now_ms`, in the order they would go.
pub(crate) fn victims(
    txn: &ReadTransaction,
    limits: &Limits,
    now_ms: u64,
) -> Result<Vec<Victim>, Error> {
    let e = |err: redb::StorageError| engine_error("cannot scan entries", err);
    let mut entries = Vec::new();
    let table = txn
        .open_table(ENTRIES)
        .map_err(|err| engine_error("cannot open the entries table", err))?;
    for row in table.iter().map_err(e)? {
        let (k, v) = row.map_err(e)?;
        let meta = EntryMeta::decode(v.value())
            .ok_or_else(|| Error::corrupted("an entry's metadata row is not one ckpt wrote"))?;
        entries.push((*k.value(), meta));
    }
    let mut victims = Vec::new();
    let mut gone: HashSet<[u8; 16]> = HashSet::new();

    if let Some(age) = limits.max_age_value() {
        let cutoff = now_ms.saturating_sub(duration_ms(age));
        let mut old: Vec<_> = entries
            .iter()
            .filter(|(_, m)| m.created_ms < cutoff)
            .collect();
        old.sort_by_key(|(id, m)| m.created_key(id));
        for (id, meta) in old {
            gone.insert(*id);
            victims.push(victim(id, meta, EvictionCause::Age));
        }
    }
    if let Some(idle) = limits.max_idle_value() {
        let cutoff = now_ms.saturating_sub(duration_ms(idle));
        let mut idle: Vec<_> = entries
            .iter()
            .filter(|(id, m)| m.last_access_ms < cutoff && !gone.contains(id))
            .collect();
        idle.sort_by_key(|(id, m)| m.access_key(id));
        for (id, meta) in idle {
            gone.insert(*id);
            victims.push(victim(id, meta, EvictionCause::Idle));
        }
    }
    if !limits.has_caps() {
        return Ok(victims);
    }

    // The totals as the function rows keep them (as the write path reads them), less what
    // expiry took.
    let e = |err: redb::StorageError| engine_error("cannot read function rows", err);
    let functions = txn
        .open_table(FUNCTIONS)
        .map_err(|err| engine_error("cannot open the functions table", err))?;
    let (mut count, mut bytes) = (0i64, 0i64);
    for row in functions.iter().map_err(e)? {
        let (_, v) = row.map_err(e)?;
        let r = FunctionRecord::decode(v.value())
            .ok_or_else(|| Error::corrupted("a function row is not one ckpt wrote"))?;
        count += r.entries as i64;
        bytes += r.bytes as i64;
    }
    for v in &victims {
        count -= 1;
        bytes -= v.size as i64;
    }
    let max_e = limits.max_entries_value().map(|m| m as i64);
    let max_b = limits.max_bytes_value().map(|m| m as i64);
    let over = |cap: Option<i64>, v: i64| cap.is_some_and(|c| v > c);
    if !over(max_e, count) && !over(max_b, bytes) {
        return Ok(victims);
    }
    let low = limits.low_water_value();
    let target = |cap: Option<i64>| cap.map(|c| (c as f64 * low).floor() as i64);
    let (target_e, target_b) = (target(max_e), target(max_b));
    let mut rest: Vec<&([u8; 16], EntryMeta)> = entries
        .iter()
        .filter(|(id, _)| !gone.contains(id))
        .collect();
    match limits.eviction_policy().kind() {
        PolicyKind::Lru => rest.sort_by_key(|(id, m)| m.access_key(id)),
        PolicyKind::Lfu => rest.sort_by_key(|(id, m)| m.hits_key(id)),
        PolicyKind::Fifo => rest.sort_by_key(|(id, m)| m.created_key(id)),
    }
    for (id, meta) in rest {
        if !(over(target_e, count) || over(target_b, bytes)) {
            break;
        }
        let cause = if over(target_b, bytes) {
            EvictionCause::Size
        } else {
            EvictionCause::Count
        };
        victims.push(victim(id, meta, cause));
        count -= 1;
        bytes -= meta.size as i64;
    }
    Ok(victims)
}

fn victim(id: &[u8; 16], meta: &EntryMeta, cause: EvictionCause) -> Victim {
    Victim {
        id: *id,
        fn_key: meta.fn_key,
        size: meta.size,
        cause,
    }
}
