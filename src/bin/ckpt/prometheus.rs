//! `ckpt stats --format prometheus`: the store's statistics in Prometheus's text exposition
//! format (version 0.0.4), for a node exporter's textfile collector or a push gateway.
//!
//! One family per statistic, each sample labelled with the store's path and the function's
//! `module::name`; sum over `function` for the store's totals. Counters end in `_total`, times
//! are in seconds, sizes in bytes.

use std::fmt::Write as _;

use ckpt::store::{FunctionStats, StoreStats};

/// A label value, escaped as the format asks: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A family of one sample per function.
struct Family {
    name: &'static str,
    help: &'static str,
    value: fn(&FunctionStats) -> f64,
}

const PER_FUNCTION: &[Family] = &[
    Family {
        name: "ckpt_hits_total",
        help: "Calls answered from the store.",
        value: |f| f.calls.hits as f64,
    },
    Family {
        name: "ckpt_misses_total",
        help: "Calls that found nothing usable and ran the function.",
        value: |f| f.calls.misses as f64,
    },
    Family {
        name: "ckpt_reruns_total",
        help: "Forced runs (rerun).",
        value: |f| f.calls.reruns as f64,
    },
    Family {
        name: "ckpt_saves_total",
        help: "Results saved.",
        value: |f| f.calls.saves as f64,
    },
    Family {
        name: "ckpt_errors_total",
        help: "Failures to identify, retrieve or save.",
        value: |f| f.calls.errors as f64,
    },
    Family {
        name: "ckpt_corrupt_total",
        help: "Stored values dropped because they failed their checks.",
        value: |f| f.calls.corrupt as f64,
    },
    Family {
        name: "ckpt_type_mismatches_total",
        help: "Stored values dropped because they were of another type.",
        value: |f| f.calls.type_mismatches as f64,
    },
    Family {
        name: "ckpt_time_saved_seconds_total",
        help: "Compute time saved by hits.",
        value: |f| f.calls.saved_nanos as f64 / 1e9,
    },
    Family {
        name: "ckpt_time_spent_seconds_total",
        help: "Time spent running the function on misses and reruns.",
        value: |f| f.calls.spent_nanos as f64 / 1e9,
    },
    Family {
        name: "ckpt_entries",
        help: "Entries stored.",
        value: |f| f.entries as f64,
    },
    Family {
        name: "ckpt_stored_bytes",
        help: "Bytes of stored records.",
        value: |f| f.stored_bytes as f64,
    },
];

/// A family's HELP and TYPE lines; its type follows from its name (counters end in `_total`).
fn header(out: &mut String, name: &str, help: &str) {
    let kind = if name.ends_with("_total") {
        "counter"
    } else {
        "gauge"
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The statistics of the store at `store` in the text exposition format.
pub fn render(store: &str, s: &StoreStats) -> String {
    let store = escape(store);
    let mut out = String::new();
    let labels: Vec<String> = s
        .functions
        .iter()
        .map(|f| format!("store=\"{store}\",function=\"{}\"", escape(&f.path())))
        .collect();
    for family in PER_FUNCTION {
        header(&mut out, family.name, family.help);
        for (f, labels) in s.functions.iter().zip(&labels) {
            let _ = writeln!(out, "{}{{{labels}}} {}", family.name, (family.value)(f));
        }
    }
    header(
        &mut out,
        "ckpt_evictions_total",
        "Entries removed by limits, by cause.",
    );
    for (f, labels) in s.functions.iter().zip(&labels) {
        let e = &f.evictions;
        for (cause, n) in [
            ("size", e.size),
            ("count", e.count),
            ("age", e.age),
            ("idle", e.idle),
        ] {
            let _ = writeln!(
                out,
                "ckpt_evictions_total{{{labels},cause=\"{cause}\"}} {n}"
            );
        }
    }
    for (name, help, value) in [
        ("ckpt_file_bytes", "Size of the store file.", s.file_bytes),
        (
            "ckpt_reclaimable_bytes",
            "Bytes of the file holding nothing (about; ckpt compact gives them back).",
            s.reclaimable_bytes,
        ),
        (
            "ckpt_dropped_accesses_total",
            "Hits whose bookkeeping was dropped because the access log was full.",
            s.dropped_accesses,
        ),
    ] {
        header(&mut out, name, help);
        let _ = writeln!(out, "{name}{{store=\"{store}\"}} {value}");
    }
    // The remote tier's counts as the file records them (every process that used it).
    if let Some(r) = &s.remote_recorded {
        for (name, help, value) in [
            (
                "ckpt_remote_hits_total",
                "Local misses the remote answered.",
                r.hits,
            ),
            (
                "ckpt_remote_misses_total",
                "Local misses the remote had nothing for.",
                r.misses,
            ),
            (
                "ckpt_remote_backfills_total",
                "Remote hits written into the file.",
                r.backfills,
            ),
            (
                "ckpt_remote_publishes_total",
                "Objects created in the remote.",
                r.publishes,
            ),
            (
                "ckpt_remote_publish_failures_total",
                "Publishes that failed.",
                r.publish_failures,
            ),
            (
                "ckpt_remote_dropped_publishes_total",
                "Background publishes dropped by a full queue.",
                r.dropped_publishes,
            ),
            (
                "ckpt_remote_corrupt_total",
                "Remote objects that failed their checks.",
                r.corrupt,
            ),
            (
                "ckpt_remote_errors_total",
                "Failed or timed-out fetches.",
                r.errors,
            ),
            (
                "ckpt_remote_bytes_down_total",
                "Bytes fetched.",
                r.bytes_down,
            ),
            ("ckpt_remote_bytes_up_total", "Bytes published.", r.bytes_up),
            (
                "ckpt_remote_fetches_total",
                "Fetch requests made.",
                r.fetches,
            ),
        ] {
            header(&mut out, name, help);
            let _ = writeln!(out, "{name}{{store=\"{store}\"}} {value}");
        }
        let name = "ckpt_remote_fetch_seconds_total";
        header(&mut out, name, "Time spent in fetch requests.");
        let secs = r.fetch_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}{{store=\"{store}\"}} {secs}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }
}
