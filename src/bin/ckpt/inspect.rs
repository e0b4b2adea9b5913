//! `stats`, `ls`, `show`: looking inside a store, changing nothing.

use std::io::IsTerminal;
use std::time::SystemTime;

use ckpt::stats::EvictionStats;
use ckpt::{AccessMode, Record};
use serde_json::json;

use crate::human::{self, Table};
use crate::open::{self, Missing};
use crate::output::{Failure, Result};
use crate::{Context, LsArgs, ShowArgs, SortKey, StatsArgs, StatsFormat, json, prometheus};

/// `5 (size 4, age 1)`, or `0`.
fn evictions(e: &EvictionStats) -> String {
    let parts: Vec<String> = [
        (e.size, "size"),
        (e.count, "count"),
        (e.age, "age"),
        (e.idle, "idle"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{what} {n}"))
    .collect();
    if parts.is_empty() {
        "0".to_string()
    } else {
        format!("{} ({})", e.total(), parts.join(", "))
    }
}

pub fn stats(cx: &mut Context, args: StatsArgs) -> Result {
    if cx.json && args.format == StatsFormat::Prometheus {
        return Err(Failure::usage(
            "--json and --format prometheus ask for two formats: give one",
        ));
    }
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadOnly)?;
    let s = store.stats()?;
    if args.format == StatsFormat::Prometheus {
        return cx
            .out
            .text(&prometheus::render(&cx.path.display().to_string(), &s));
    }
    if cx.json || args.format == StatsFormat::Json {
        return cx
            .out
            .json(&json::stats(&cx.path.display().to_string(), &s));
    }
    let c = &s.calls;
    let mut head = Table::new(&[("", false), ("", false)]);
    let mut kv = |k: &str, v: String| head.row(vec![k.to_string(), v]);
    kv("store", cx.path.display().to_string());
    kv(
        "file",
        format!(
            "{} (about {} reclaimable by `ckpt compact`)",
            human::size(s.file_bytes),
            human::size(s.reclaimable_bytes)
        ),
    );
    kv(
        "entries",
        format!("{} ({} stored)", s.entries, human::size(s.stored_bytes)),
    );
    kv(
        "calls",
        format!(
            "{} hits, {} misses, hit ratio {}; {} saves, {} reruns, {} errors",
            c.hits,
            c.misses,
            human::percent(c.hit_ratio()),
            c.saves,
            c.reruns,
            c.errors
        ),
    );
    kv(
        "compute",
        format!(
            "{} saved by hits, {} spent on misses",
            human::duration(c.time_saved()),
            human::duration(c.time_spent())
        ),
    );
    kv("evictions", evictions(&s.evictions));
    kv(
        "corrupt",
        format!(
            "{} corrupt entries dropped, {} type mismatches",
            c.corrupt, c.type_mismatches
        ),
    );
    if let Some(r) = &s.remote_recorded {
        kv(
            "remote",
            format!(
                "{} hits, {} misses, {} backfilled; {} published, {} failed, {} dropped; \
                 {} corrupt, {} errors; {} down, {} up; mean fetch {}",
                r.hits,
                r.misses,
                r.backfills,
                r.publishes,
                r.publish_failures,
                r.dropped_publishes,
                r.corrupt,
                r.errors,
                human::size(r.bytes_down),
                human::size(r.bytes_up),
                r.mean_fetch_time().map_or("-".to_string(), human::duration),
            ),
        );
        if r.leases_taken + r.lease_waits > 0 {
            kv(
                "leases",
                format!(
                    "{} taken ({} taken over), {} waited, {} served by another machine",
                    r.leases_taken, r.leases_taken_over, r.lease_waits, r.lease_served
                ),
            );
        }
    }
    // The key-value block has no header row.
    let block = head.render();
    cx.out
        .text(block.split_once('\n').map_or("", |(_, rest)| rest))?;
    if s.functions.is_empty() {
        return cx.out.line("\nno functions yet");
    }
    let mut t = Table::new(&[
        ("FUNCTION", false),
        ("ENTRIES", true),
        ("STORED", true),
        ("HITS", true),
        ("MISSES", true),
        ("HIT RATIO", true),
        ("SAVED", true),
        ("CORRUPT", true),
        ("EVICTIONS", false),
    ]);
    for f in &s.functions {
        let name = if f.name.is_empty() {
            format!("(unnamed {})", json::hex64(f.key))
        } else {
            f.path()
        };
        t.row(vec![
            name,
            f.entries.to_string(),
            human::size(f.stored_bytes),
            f.calls.hits.to_string(),
            f.calls.misses.to_string(),
            human::percent(f.calls.hit_ratio()),
            human::duration(f.calls.time_saved()),
            f.calls.corrupt.to_string(),
            evictions(&f.evictions),
        ]);
    }
    cx.out.line("")?;
    cx.out.text(&t.render())
}

pub fn ls(cx: &mut Context, args: LsArgs) -> Result {
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadOnly)?;
    let mut entries = match &args.function {
        Some(f) => {
            let row = open::function(&store, f)?;
            store.entries_of(&open::identity(&row))?
        }
        None => store.entries()?,
    };
    match args.sort {
        None => {}
        Some(SortKey::Size) => entries.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id))),
        Some(SortKey::Hits) => entries.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.id.cmp(&b.id))),
        Some(SortKey::Age) => {
            entries.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        }
        Some(SortKey::LastHit) => {
            entries.sort_by(|a, b| b.last_access.cmp(&a.last_access).then(a.id.cmp(&b.id)))
        }
    }
    if args.reverse {
        entries.reverse();
    }
    let total = entries.len();
    let total_bytes: u64 = entries.iter().map(|e| e.size).sum();
    if let Some(n) = args.limit {
        entries.truncate(n);
    }
    if cx.json {
        return cx.out.json(&json!({
            "store": cx.path.display().to_string(),
            "total": total,
            "entries": entries.iter().map(json::entry).collect::<Vec<_>>(),
        }));
    }
    let now = SystemTime::now();
    let mut t = Table::new(&[
        ("ID", false),
        ("FUNCTION", false),
        ("SIZE", true),
        ("HITS", true),
        ("CREATED", true),
        ("LAST HIT", true),
        ("COMPUTE", true),
        ("", false),
    ]);
    for e in &entries {
        t.row(vec![
            e.id.to_string(),
            e.function.clone().unwrap_or_else(|| "?".to_string()),
            human::size(e.size),
            e.hits.to_string(),
            human::ago(e.created, now),
            // The last access of an entry never hit is its save: no hit to show.
            if e.hits == 0 {
                "-".to_string()
            } else {
                human::ago(e.last_access, now)
            },
            human::duration(e.compute_time),
            if e.stale { "stale" } else { "" }.to_string(),
        ]);
    }
    if !entries.is_empty() {
        cx.out.text(&t.render())?;
    }
    let shown = if entries.len() < total {
        format!(" (showing {})", entries.len())
    } else {
        String::new()
    };
    cx.out.line(&format!(
        "{total} {}, {}{shown}",
        if total == 1 { "entry" } else { "entries" },
        human::size(total_bytes)
    ))
}

pub fn show(cx: &mut Context, args: ShowArgs) -> Result {
    if args.raw && std::io::stdout().is_terminal() {
        return Err(Failure::usage(
            "--raw writes binary bytes: redirect stdout to a file or a pipe (ckpt show ID --raw > \
             value.bin)",
        ));
    }
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadOnly)?;
    let id = open::resolve_id(&store, &cx.path, &args.id)?;
    let unknown = || Failure::fail(format!("no entry with id {id} in {}", cx.path.display()));
    let info = store.entry(&id)?.ok_or_else(unknown)?;
    let bytes = store.read_record(&id)?.ok_or_else(|| {
        Failure::fail(format!(
            "entry {id} has metadata but no stored record; `ckpt verify --repair` drops it"
        ))
    })?;
    let record = Record::parse(&bytes).ok();
    // The type name is recorded for a function's newest code version only.
    let value_type = store
        .stats()?
        .functions
        .into_iter()
        .find(|f| f.key == info.function_key && f.code_version == info.code_version)
        .and_then(|f| f.value_type);
    if args.raw {
        let Some(record) = record else {
            return Err(Failure::fail(format!(
                "the record of {} is damaged (it fails its checksum): no sound value to write; \
                 `ckpt verify --repair` drops it",
                id
            )));
        };
        return cx.out.bytes(record.payload());
    }
    if cx.json {
        let mut v = json::entry(&info);
        v["record"] = json!({
            "valid": record.is_some(),
            "version": record.map(|r| r.version()),
            "checksum": record.map(|r| json::hex64(r.checksum())),
            "type_fingerprint": record.map(|r| json::hex64(r.type_fingerprint())),
            "compressed": record.map(|r| r.is_compressed()),
            "value_type": value_type,
            "payload_bytes": bytes.len().saturating_sub(Record::HEADER_LEN),
        });
        return cx.out.json(&v);
    }
    let now = SystemTime::now();
    let mut t = Table::new(&[("", false), ("", false)]);
    let mut kv = |k: &str, v: String| t.row(vec![k.to_string(), v]);
    kv("id", info.id.to_string());
    kv(
        "function",
        info.function
            .clone()
            .unwrap_or_else(|| format!("? (key {})", json::hex64(info.function_key))),
    );
    kv(
        "code version",
        format!(
            "{}{}",
            json::hex64(info.code_version),
            if info.stale {
                " (stale: the function has a newer one)"
            } else {
                ""
            }
        ),
    );
    let when = |t| format!("{} ({})", human::timestamp(t), human::ago(t, now));
    kv("created", when(info.created));
    kv(
        "last hit",
        if info.hits == 0 {
            "none".to_string()
        } else {
            when(info.last_access)
        },
    );
    kv("hits", info.hits.to_string());
    kv("compute time", human::duration(info.compute_time));
    kv(
        "size",
        format!(
            "{} ({} bytes; value {} bytes)",
            human::size(info.size),
            info.size,
            bytes.len().saturating_sub(Record::HEADER_LEN)
        ),
    );
    match record {
        Some(r) => {
            kv(
                "record",
                format!(
                    "valid (version {}{}, checksum {})",
                    r.version(),
                    if r.is_compressed() { ", zstd-compressed" } else { "" },
                    json::hex64(r.checksum())
                ),
            );
            let fingerprint = json::hex64(r.type_fingerprint());
            kv(
                "value type",
                match &value_type {
                    Some(name) => format!("{name} (fingerprint {fingerprint})"),
                    None => format!("not recorded (fingerprint {fingerprint})"),
                },
            );
        }
        None => kv(
            "record",
            "DAMAGED: fails its checksum (a call would recompute it; `ckpt verify --repair` drops it)"
                .to_string(),
        ),
    }
    let block = t.render();
    cx.out
        .text(block.split_once('\n').map_or("", |(_, rest)| rest))
}
