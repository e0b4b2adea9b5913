//! The `--json` forms, and their documentation (each command's `--help`).
//!
//! Field names are stable: new fields may be added, none is renamed or removed. Sizes are
//! bytes, times milliseconds since the Unix epoch (`*_ms`) with an RFC 3339 copy, durations
//! nanoseconds (`*_ns`). Ids are 32 hex digits; function keys, code versions and hashes are 16
//! hex digits (strings: JSON numbers lose 64-bit precision in many readers).

use std::time::SystemTime;

use ckpt::CallStats;
use ckpt::stats::EvictionStats;
use ckpt::store::{EntryInfo, FunctionStats, StoreStats};
use serde_json::{Value, json};

use crate::human;

pub const STATS_HELP: &str = "\
JSON (--json): {store, file_bytes, reclaimable_bytes, entries, stored_bytes, calls, evictions, \
functions: [{function, module, name, key, code_version, code_hash, version, entries, \
stored_bytes, calls, evictions}]}
  calls: {hits, misses, reruns, saves, errors, corrupt, type_mismatches, hit_ratio (null before \
the first lookup), time_saved_ns, time_spent_ns}; corrupt counts the corrupt entries dropped
  evictions: {size, count, age, idle, total}
  key, code_version, code_hash: 16 hex digits (code_hash and version may be null)
Prometheus (--format prometheus): the text exposition format, version 0.0.4. Per function \
(labels store, function): ckpt_hits_total, ckpt_misses_total, ckpt_reruns_total, \
ckpt_saves_total, ckpt_errors_total, ckpt_corrupt_total, ckpt_type_mismatches_total, \
ckpt_time_saved_seconds_total, ckpt_time_spent_seconds_total, ckpt_entries, ckpt_stored_bytes, \
ckpt_evictions_total (label cause: size, count, age, idle). Per store (label store): \
ckpt_file_bytes, ckpt_reclaimable_bytes, ckpt_dropped_accesses_total";

pub const LS_HELP: &str = "\
JSON (--json): {store, total, entries: [ENTRY]}; total counts the entries before --limit
  ENTRY: {id, function (null if its function row is gone), function_key, code_version, stale, \
created_ms, created, last_access_ms, last_access, hits, size_bytes, compute_ns}
  created and last_access are RFC 3339 (UTC); last_access is the last hit or the save";

pub const SHOW_HELP: &str = "\
JSON (--json): ENTRY (see `ckpt ls --help`) and record: {valid, version, checksum, \
type_fingerprint, compressed, value_type, payload_bytes} (version, checksum, type_fingerprint \
and compressed null when the record is not valid; compressed: the payload is zstd-compressed; value_type, the Rust type name its function's newest code version \
saved, null when not recorded)
--raw writes the value's postcard bytes: the stored record without its 32-byte header \
(checksum, version, type fingerprint, compute time), as stored (a compressed record's: its \
length and zstd frame); a damaged record is refused.";

pub const RM_HELP: &str = "\
JSON (--json): {removed}; with ids, also {ids}. An unknown id removes nothing and exits 1.";

pub const CLEAR_HELP: &str = "JSON (--json): {removed}";

pub const EVICT_HELP: &str = "\
Caps are exact: eviction stops as soon as the store is within them. Sizes: B, KB, MB, GB, TB \
(powers of 1000), KiB, MiB, GiB, TiB or K, M, G, T (powers of 1024). Durations: ms, s, m, h, d, \
w, combinable (1h30m).
JSON (--json): {dry_run, evicted, bytes, by_cause: {size, count, age, idle}, entries: [{id, \
function, function_key, size_bytes, cause}]}";

pub const VERIFY_HELP: &str = "\
Exits 1 when problems were found and not repaired. Opening skips its own page check \
(--open-check does not apply): checking every page is this command's first step, and reports \
what the engine repaired.
JSON (--json): {clean, repaired, engine_repaired, entries_checked, problems, \
results_without_meta, meta_without_result, bad_records, bad_meta, size_mismatches, \
index_mismatches, function_count_mismatches, bad_function_rows, missing_function_rows, \
elapsed_ms}";

pub const COMPACT_HELP: &str = "\
JSON (--json): {file_bytes_before, file_bytes_after, reclaimed_bytes, elapsed_ms}";

pub const EXPORT_HELP: &str = "\
The archive is portable (any machine, any later ckpt), versioned and checksummed (every frame \
and the whole); ids and record bytes are unchanged by the trip. Entries whose function's name \
is lost, or whose record is damaged, are left out and counted.
JSON (--json): {file, functions, entries, record_bytes, archive_bytes, skipped_unnamed, \
skipped_damaged}";

pub const IMPORT_HELP: &str = "\
All or nothing: the archive is imported in one transaction, committed only when every checksum \
and count matches. Entries with ids already in the store are replaced.
JSON (--json): {file, archive_version, exported_at_ms, exported_at, functions, entries, \
record_bytes, replaced, archive_bytes}";

pub fn hex64(v: u64) -> String {
    format!("{v:016x}")
}

pub fn calls(c: &CallStats) -> Value {
    json!({
        "hits": c.hits,
        "misses": c.misses,
        "reruns": c.reruns,
        "saves": c.saves,
        "errors": c.errors,
        "corrupt": c.corrupt,
        "type_mismatches": c.type_mismatches,
        "hit_ratio": c.hit_ratio(),
        "time_saved_ns": c.saved_nanos,
        "time_spent_ns": c.spent_nanos,
    })
}

pub fn evictions(e: &EvictionStats) -> Value {
    json!({
        "size": e.size,
        "count": e.count,
        "age": e.age,
        "idle": e.idle,
        "total": e.total(),
    })
}

pub fn function(f: &FunctionStats) -> Value {
    json!({
        "function": f.path(),
        "module": f.module,
        "name": f.name,
        "key": hex64(f.key),
        "code_version": hex64(f.code_version),
        "code_hash": f.code_hash.map(hex64),
        "version": f.version,
        "entries": f.entries,
        "stored_bytes": f.stored_bytes,
        "calls": calls(&f.calls),
        "evictions": evictions(&f.evictions),
    })
}

pub fn stats(path: &str, s: &StoreStats) -> Value {
    json!({
        "store": path,
        "file_bytes": s.file_bytes,
        "reclaimable_bytes": s.reclaimable_bytes,
        "entries": s.entries,
        "stored_bytes": s.stored_bytes,
        "calls": calls(&s.calls),
        "evictions": evictions(&s.evictions),
        "functions": s.functions.iter().map(function).collect::<Vec<_>>(),
        // The remote tier's counts as the file records them; null if it never had one.
        "remote": s.remote_recorded,
    })
}

fn time(t: SystemTime) -> (u64, String) {
    (human::ms(t), human::rfc3339(t))
}

pub fn entry(e: &EntryInfo) -> Value {
    let (created_ms, created) = time(e.created);
    let (last_ms, last) = time(e.last_access);
    json!({
        "id": e.id.to_string(),
        "function": e.function,
        "function_key": hex64(e.function_key),
        "code_version": hex64(e.code_version),
        "stale": e.stale,
        "created_ms": created_ms,
        "created": created,
        "last_access_ms": last_ms,
        "last_access": last,
        "hits": e.hits,
        "size_bytes": e.size,
        "compute_ns": u64::try_from(e.compute_time.as_nanos()).unwrap_or(u64::MAX),
    })
}
