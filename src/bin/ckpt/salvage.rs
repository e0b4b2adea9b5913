//! `salvage`: copy what is intact out of a damaged store into a new one.

use std::path::PathBuf;
use std::time::Instant;

use ckpt::Store;
use ckpt::store::{SalvageMethod, SalvageReport};
use clap::Args;
use serde_json::json;

use crate::Context;
use crate::human;
use crate::maintain::plural;
use crate::output::{Failure, Result, for_the_tool};
use crate::progress::Progress;

pub const SALVAGE_HELP: &str = "\
DAMAGED is only read, never written. NEW must not exist: it is created complete, or not at all. \
The global --store and --open-check do not apply. Exits 0 when a new store was written (even if \
entries were lost: the report says how many), 1 when nothing could be salvaged (a damaged file \
in which no record passes its checks: no new store is left then). entries_lost is exact when \
stats_recovered is true, a lower bound otherwise.
JSON (--json): {damaged, new, method (\"checked\": the file passed the storage engine's check; \
\"unchecked\": it did not, and each record was checked alone; \"scanned\": the engine could not \
open it, and its pages were scanned), truncated, entries_recovered, entries_scanned, \
entries_lost, record_bytes, metadata_rebuilt, functions_recovered, functions_rebuilt, \
stats_recovered, file_bytes, elapsed_ms}";

#[derive(Args, Debug)]
pub struct SalvageArgs {
    /// The damaged store file (read only)
    #[arg(value_name = "DAMAGED")]
    damaged: PathBuf,
    /// The new store to create (must not exist)
    #[arg(value_name = "NEW")]
    new: PathBuf,
}

fn method(m: SalvageMethod) -> &'static str {
    match m {
        SalvageMethod::Checked => "checked",
        SalvageMethod::Scanned => "scanned",
        _ => "unchecked",
    }
}

pub fn salvage(cx: &mut Context, args: SalvageArgs) -> Result {
    let started = Instant::now();
    let report = {
        let _progress = Progress::start("salvaging", None);
        // The storage engine can panic reading a damaged file; the library contains it (and the
        // tool's panic hook prints nothing), so only a panic of salvage itself lands here.
        let result = std::panic::catch_unwind(|| Store::salvage(&args.damaged, &args.new));
        match result {
            Ok(r) => r.map_err(|e| Failure::fail(for_the_tool(&e.to_string())))?,
            Err(p) => {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(Failure::fail(format!(
                    "internal error ({what}); please report it"
                )));
            }
        }
    };
    let elapsed = started.elapsed();
    if report.entries_recovered == 0 && report.method != SalvageMethod::Checked {
        // A damaged file that gave nothing: a failure, and no empty store left behind as if
        // it were a result.
        let _ = std::fs::remove_file(&args.new);
        return Err(Failure::fail(format!(
            "nothing could be salvaged from {}: no record in it passes its checks{}",
            args.damaged.display(),
            if report.truncated {
                " (the file is truncated: its records were in the missing part)"
            } else {
                ""
            }
        )));
    }
    if cx.json {
        return cx
            .out
            .json(&report_json(&args, &report, elapsed.as_millis()));
    }
    // Without the function rows' counts, what is lost is only what left a trace: say so.
    let lost = if report.stats_recovered {
        report.entries_lost.to_string()
    } else {
        format!("at least {}", report.entries_lost)
    };
    let mut lines = vec![format!(
        "salvaged {} ({} of records) from {} into {} in {}; lost {lost}",
        plural(report.entries_recovered, "entry", "entries"),
        human::size(report.record_bytes),
        args.damaged.display(),
        args.new.display(),
        human::duration(elapsed),
    )];
    lines.push(
        match report.method {
            SalvageMethod::Checked => "the file passed the storage engine's check",
            SalvageMethod::Scanned => {
                "the storage engine cannot open the file: its pages were scanned, and each \
                 record checked alone"
            }
            _ => "the file failed the storage engine's check: each record was checked alone",
        }
        .to_string(),
    );
    if report.truncated {
        lines.push("the file was truncated: its missing end was read as zeros".to_string());
    }
    if report.metadata_rebuilt > 0 {
        lines.push(format!(
            "{} rebuilt under the function ckpt::salvage::unknown",
            plural(report.metadata_rebuilt, "metadata row", "metadata rows")
        ));
    }
    if report.functions_rebuilt > 0 {
        lines.push(format!(
            "{} rebuilt without names or call statistics",
            plural(report.functions_rebuilt, "function row", "function rows")
        ));
    }
    lines.push(if report.stats_recovered {
        format!(
            "statistics recovered ({})",
            plural(report.functions_recovered, "function", "functions")
        )
    } else {
        format!(
            "some statistics were lost ({} recovered)",
            plural(report.functions_recovered, "function", "functions")
        )
    });
    for line in lines {
        cx.out.line(&line)?;
    }
    Ok(())
}

fn report_json(args: &SalvageArgs, r: &SalvageReport, elapsed_ms: u128) -> serde_json::Value {
    json!({
        "damaged": args.damaged.display().to_string(),
        "new": args.new.display().to_string(),
        "method": method(r.method),
        "truncated": r.truncated,
        "entries_recovered": r.entries_recovered,
        "entries_scanned": r.entries_scanned,
        "entries_lost": r.entries_lost,
        "record_bytes": r.record_bytes,
        "metadata_rebuilt": r.metadata_rebuilt,
        "functions_recovered": r.functions_recovered,
        "functions_rebuilt": r.functions_rebuilt,
        "stats_recovered": r.stats_recovered,
        "file_bytes": r.file_bytes,
        "elapsed_ms": elapsed_ms,
    })
}
