//! `rm`, `clear`, `evict`, `verify`, `compact`: keeping a store healthy.

use std::collections::HashMap;
use std::time::Instant;

use ckpt::stats::EvictionCause;
use ckpt::store::{EvictMode, VerifyReport};
use ckpt::{AccessMode, EvictionPolicy, Limits, OpenCheck};
use serde_json::json;

use crate::human::{self, Table};
use crate::open::{self, Missing};
use crate::output::{Failure, Result};
use crate::progress::Progress;
use crate::{ClearArgs, Context, EvictArgs, Policy, RmArgs, VerifyArgs, json};

pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn rm(cx: &mut Context, args: RmArgs) -> Result {
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadWrite)?;
    if !args.ids.is_empty() {
        // Every id must be there (and every prefix unique), or nothing is removed.
        let mut ids = Vec::with_capacity(args.ids.len());
        for arg in &args.ids {
            let id = open::resolve_id(&store, &cx.path, arg)
                .map_err(|f| f.with_suffix("; nothing removed"))?;
            if store.entry(&id)?.is_none() {
                return Err(Failure::fail(format!(
                    "no entry with id {id} in {}; nothing removed",
                    cx.path.display()
                )));
            }
            ids.push(id);
        }
        let mut removed = 0u64;
        for id in &ids {
            removed += u64::from(store.remove(id)?);
        }
        if cx.json {
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            return cx.out.json(&json!({ "removed": removed, "ids": ids }));
        }
        return cx
            .out
            .line(&format!("removed {}", plural(removed, "entry", "entries")));
    }
    let (removed, what) = match (&args.function, args.stale) {
        (Some(f), stale) => {
            let row = open::function(&store, f)?;
            let function = open::identity(&row);
            if stale {
                if function.code_version() != row.code_version {
                    return Err(Failure::fail(format!(
                        "the newest code version of {} is not known well enough to tell stale \
                         entries apart",
                        row.path()
                    )));
                }
                let n = store.remove_stale(&function)?;
                (
                    n,
                    format!(
                        "{} of {}",
                        plural(n, "stale entry", "stale entries"),
                        row.path()
                    ),
                )
            } else {
                let n = store.remove_function(&function)?;
                (
                    n,
                    format!("{} of {}", plural(n, "entry", "entries"), row.path()),
                )
            }
        }
        (None, _) => {
            let n = store.remove_all_stale()?;
            (n, plural(n, "stale entry", "stale entries"))
        }
    };
    if cx.json {
        return cx.out.json(&json!({ "removed": removed }));
    }
    cx.out.line(&format!("removed {what}"))
}

pub fn clear(cx: &mut Context, args: ClearArgs) -> Result {
    if !args.yes {
        return Err(Failure::usage(format!(
            "clear removes every entry of {}; run it again with --yes to confirm",
            cx.path.display()
        )));
    }
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadWrite)?;
    let removed = store.clear()?;
    if cx.json {
        return cx.out.json(&json!({ "removed": removed }));
    }
    cx.out.line(&format!(
        "removed {} (statistics kept)",
        plural(removed, "entry", "entries")
    ))
}

fn cause_name(c: EvictionCause) -> &'static str {
    match c {
        EvictionCause::Size => "size",
        EvictionCause::Count => "count",
        EvictionCause::Age => "age",
        _ => "idle",
    }
}

pub fn evict(cx: &mut Context, args: EvictArgs) -> Result {
    // A dry run reads only: it opens the store read-only, and changes no byte of it.
    let access = if args.dry_run {
        AccessMode::ReadOnly
    } else {
        AccessMode::ReadWrite
    };
    let store = open::open(&cx.path, cx.check, Missing::Fail, access)?;
    let mut limits = Limits::new().low_water(1.0).policy(match args.policy {
        Policy::Lru => EvictionPolicy::lru(),
        Policy::Lfu => EvictionPolicy::lfu(),
        Policy::Fifo => EvictionPolicy::fifo(),
    });
    if let Some(b) = args.max_bytes {
        limits = limits.max_bytes(b);
    }
    if let Some(n) = args.max_entries {
        limits = limits.max_entries(n);
    }
    if let Some(age) = args.older_than {
        limits = limits.max_age(age);
    }
    let mode = if args.dry_run {
        EvictMode::DryRun
    } else {
        EvictMode::Apply
    };
    let report = store.evict_with(&limits, mode)?;
    let names: HashMap<u64, String> = store
        .stats()?
        .functions
        .into_iter()
        .map(|f| (f.key, f.path()))
        .collect();
    let mut by_cause: HashMap<&str, u64> = HashMap::new();
    for e in &report.evicted {
        *by_cause.entry(cause_name(e.cause)).or_default() += 1;
    }
    let count = |c: &str| by_cause.get(c).copied().unwrap_or(0);
    if cx.json {
        let entries: Vec<_> = report
            .evicted
            .iter()
            .map(|e| {
                json!({
                    "id": e.id.to_string(),
                    "function": names.get(&e.function_key),
                    "function_key": json::hex64(e.function_key),
                    "size_bytes": e.size,
                    "cause": cause_name(e.cause),
                })
            })
            .collect();
        return cx.out.json(&json!({
            "dry_run": args.dry_run,
            "evicted": report.evicted.len(),
            "bytes": report.bytes,
            "by_cause": {
                "size": count("size"),
                "count": count("count"),
                "age": count("age"),
                "idle": count("idle"),
            },
            "entries": entries,
        }));
    }
    let n = report.evicted.len() as u64;
    let causes: Vec<String> = ["size", "count", "age"]
        .iter()
        .filter(|c| count(c) > 0)
        .map(|c| format!("{} by {c}", count(c)))
        .collect();
    let verb = if args.dry_run {
        "would evict"
    } else {
        "evicted"
    };
    let mut line = format!(
        "{verb} {} ({})",
        plural(n, "entry", "entries"),
        human::size(report.bytes)
    );
    if !causes.is_empty() {
        line.push_str(&format!(": {}", causes.join(", ")));
    }
    cx.out.line(&line)?;
    if n == 0 {
        return Ok(());
    }
    let mut per: HashMap<u64, (u64, u64)> = HashMap::new();
    for e in &report.evicted {
        let p = per.entry(e.function_key).or_default();
        p.0 += 1;
        p.1 += e.size;
    }
    let mut rows: Vec<(String, u64, u64)> = per
        .into_iter()
        .map(|(k, (n, b))| {
            let name = names
                .get(&k)
                .cloned()
                .unwrap_or_else(|| format!("(unnamed {})", json::hex64(k)));
            (name, n, b)
        })
        .collect();
    rows.sort();
    let mut t = Table::new(&[("FUNCTION", false), ("ENTRIES", true), ("SIZE", true)]);
    for (name, n, b) in rows {
        t.row(vec![name, n.to_string(), human::size(b)]);
    }
    cx.out.text(&t.render())
}

fn verify_json(r: &VerifyReport, elapsed_ms: u128) -> serde_json::Value {
    json!({
        "clean": r.is_clean(),
        "repaired": r.repaired,
        "engine_repaired": r.engine_repaired,
        "entries_checked": r.entries_checked,
        "problems": r.problems(),
        "results_without_meta": r.results_without_meta,
        "meta_without_result": r.meta_without_result,
        "bad_records": r.bad_records,
        "bad_meta": r.bad_meta,
        "size_mismatches": r.size_mismatches,
        "index_mismatches": r.index_mismatches,
        "function_count_mismatches": r.function_count_mismatches,
        "bad_function_rows": r.bad_function_rows,
        "missing_function_rows": r.missing_function_rows,
        "elapsed_ms": elapsed_ms,
    })
}

pub fn verify(cx: &mut Context, args: VerifyArgs) -> Result {
    // Verifying reads every page itself: opening need not do it first (and would repair
    // damaged pages silently before the check could report them).
    // Without --repair, read-only: the check changes no byte of the file (the engine's check of
    // the pages runs with its repairs kept in memory, see `Store::verify`).
    let access = if args.repair {
        AccessMode::ReadWrite
    } else {
        AccessMode::ReadOnly
    };
    let store = open::open(&cx.path, OpenCheck::Trust, Missing::Fail, access)?;
    let started = Instant::now();
    let report = {
        let _progress = Progress::start(
            if args.repair {
                "verifying and repairing"
            } else {
                "verifying"
            },
            None,
        );
        if args.repair {
            store.repair()?
        } else {
            store.verify()?
        }
    };
    let elapsed = started.elapsed();
    let unrepaired = report.problems() > 0 && !report.repaired;
    if cx.json {
        cx.out.json(&verify_json(&report, elapsed.as_millis()))?;
    } else {
        let mut lines = vec![format!(
            "checked {} in {}: {}",
            plural(report.entries_checked, "entry", "entries"),
            human::duration(elapsed),
            if report.is_clean() {
                "no problems".to_string()
            } else if report.problems() == 0 {
                "no problems in ckpt's tables".to_string()
            } else {
                format!(
                    "{}{}",
                    plural(report.problems(), "problem", "problems"),
                    if report.repaired { ", repaired" } else { "" }
                )
            }
        )];
        if report.engine_repaired {
            lines.push(
                "the storage engine found damaged pages and rolled the file back to its last \
                 sound commit"
                    .to_string(),
            );
        }
        let counts = [
            (
                report.results_without_meta,
                "result without metadata",
                "results without metadata",
            ),
            (
                report.meta_without_result,
                "metadata row without a result",
                "metadata rows without a result",
            ),
            (report.bad_records, "damaged result", "damaged results"),
            (
                report.bad_meta,
                "damaged metadata row",
                "damaged metadata rows",
            ),
            (
                report.size_mismatches,
                "wrong recorded size",
                "wrong recorded sizes",
            ),
            (
                report.index_mismatches,
                "order index mismatch",
                "order index mismatches",
            ),
            (
                report.function_count_mismatches,
                "wrong function count",
                "wrong function counts",
            ),
            (
                report.bad_function_rows,
                "damaged function row",
                "damaged function rows",
            ),
            (
                report.missing_function_rows,
                "missing function row",
                "missing function rows",
            ),
        ];
        for (n, one, many) in counts {
            if n > 0 {
                lines.push(format!("  {}", plural(n, one, many)));
            }
        }
        for l in lines {
            cx.out.line(&l)?;
        }
    }
    if unrepaired {
        cx.out.flush()?;
        return Err(Failure::fail(format!(
            "{} has {}; run `ckpt verify --repair` to fix them",
            cx.path.display(),
            plural(report.problems(), "problem", "problems")
        )));
    }
    Ok(())
}

pub fn compact(cx: &mut Context) -> Result {
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadWrite)?;
    let started = Instant::now();
    let report = {
        let _progress = Progress::start("compacting", None);
        store.compact()?
    };
    let elapsed = started.elapsed();
    let reclaimed = report
        .file_bytes_before
        .saturating_sub(report.file_bytes_after);
    if cx.json {
        return cx.out.json(&json!({
            "file_bytes_before": report.file_bytes_before,
            "file_bytes_after": report.file_bytes_after,
            "reclaimed_bytes": reclaimed,
            "elapsed_ms": elapsed.as_millis(),
        }));
    }
    if report.file_bytes_after > report.file_bytes_before {
        // Only another process's writes during the compaction make the file grow.
        return cx.out.line(&format!(
            "compacted in {}, but the file grew: {} -> {} (another process wrote to the store \
             meanwhile; to reclaim space, compact when no other process has it open)",
            human::duration(elapsed),
            human::size(report.file_bytes_before),
            human::size(report.file_bytes_after),
        ));
    }
    cx.out.line(&format!(
        "compacted in {}: {} -> {} ({} reclaimed)",
        human::duration(elapsed),
        human::size(report.file_bytes_before),
        human::size(report.file_bytes_after),
        human::size(reclaimed)
    ))
}
