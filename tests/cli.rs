//! The `ckpt` binary, run for real on store files the library made: each command's output on a
//! known store, `--json` parsed and checked, export → import between two stores, and every bad
//! input's one-line message and exit code.

mod cli_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ckpt::{CheckpointId, ConcurrencyMode, Function, Record, Store};
use cli_support::*;
use common::TempDir;
use serde_json::Value;

#[test]
fn help_documents_exit_codes_and_json() {
    let out = ok(ckpt_in(None, &["--help"]));
    assert!(out.contains("Exit status: 0 success; 1 failure"), "{out}");
    assert!(out.contains("2 usage"), "{out}");
    for cmd in [
        "stats", "ls", "show", "rm", "clear", "evict", "verify", "compact", "export", "import",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
        let help = ok(ckpt_in(None, &[cmd, "--help"]));
        assert!(help.contains("JSON (--json)"), "{cmd} --help: {help}");
    }
    // Usage errors exit 2, as clap's do.
    let o = ckpt_in(None, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ckpt_in(None, &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn stats_text_and_json() {
    let dir = TempDir::new("cli-stats");
    let path = known_store(&dir);
    let out = ok(ckpt(&path, &["stats"]));
    assert!(
        out.contains(&format!("store      {}", path.display())),
        "{out}"
    );
    assert!(out.contains("entries    9 ("), "{out}");
    assert!(out.contains("5 hits, 9 misses, hit ratio 35.7%"), "{out}");
    assert!(out.contains("reclaimable"), "{out}");
    assert!(out.contains("0 corrupt entries dropped"), "{out}");
    // The function table: a header and one aligned row per function, sorted by path.
    let lines: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("FUNCTION"))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with(RESIZE) && lines[2].starts_with(EMBED),
        "{out}"
    );
    let col = |l: &str, what: &str| l.find(what).map(|i| i + what.len());
    let entries_end = col(lines[0], "ENTRIES").unwrap();
    assert_eq!(col(lines[1], " 2 "), Some(entries_end + 1), "{out}");
    assert_eq!(col(lines[2], " 7 "), Some(entries_end + 1), "{out}");
    assert!(lines[2].contains("41.7%"), "{out}");

    let v = json(ckpt(&path, &["stats", "--json"]));
    assert_eq!(v["store"], path.display().to_string());
    assert_eq!(v["entries"], 9);
    assert!(v["file_bytes"].as_u64().unwrap() > 0);
    assert!(v["reclaimable_bytes"].is_u64());
    assert_eq!(v["calls"]["hits"], 5);
    assert_eq!(v["calls"]["misses"], 9);
    assert_eq!(v["calls"]["saves"], 9);
    assert_eq!(v["calls"]["corrupt"], 0);
    assert!((v["calls"]["hit_ratio"].as_f64().unwrap() - 5.0 / 14.0).abs() < 1e-9);
    assert!(v["calls"]["time_saved_ns"].is_u64());
    assert_eq!(v["evictions"]["total"], 0);
    let fs = v["functions"].as_array().unwrap();
    assert_eq!(fs.len(), 2);
    assert_eq!(fs[0]["function"], RESIZE);
    assert_eq!(fs[0]["code_hash"], "0000000000000007");
    assert_eq!(fs[0]["entries"], 2);
    assert_eq!(fs[1]["function"], EMBED);
    assert_eq!(fs[1]["module"], "app::text");
    assert_eq!(fs[1]["name"], "embed");
    assert_eq!(fs[1]["version"], "2");
    assert_eq!(fs[1]["key"], format!("{:016x}", embed("2").key()));
    assert_eq!(
        fs[1]["code_version"],
        format!("{:016x}", embed("2").code_version())
    );
    assert_eq!(fs[1]["entries"], 7);
    assert_eq!(fs[1]["calls"]["hits"], 5);
    assert_eq!(fs[1]["evictions"]["age"], 0);
    let stored: u64 = fs.iter().map(|f| f["stored_bytes"].as_u64().unwrap()).sum();
    assert_eq!(v["stored_bytes"].as_u64().unwrap(), stored);
}

#[test]
fn default_store_honours_ckpt_dir() {
    let dir = TempDir::new("cli-default");
    known_store(&dir);
    let v = json(ckpt_in(Some(dir.path()), &["stats", "--json"]));
    assert_eq!(v["entries"], 9);
    assert_eq!(v["store"], dir.store_path().display().to_string());
}

#[test]
fn ls_filters_sorts_and_limits() {
    let dir = TempDir::new("cli-ls");
    let path = known_store(&dir);
    let out = ok(ckpt(&path, &["ls"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST HIT"),
        "{out}"
    );
    assert!(lines[10].starts_with("9 entries, "), "{out}");
    assert_eq!(out.matches("stale").count(), 3, "{out}");
    assert!(
        out.contains("30d 0h ago") || out.contains("29d 23h ago"),
        "{out}"
    );

    let out = ok(ckpt(&path, &["ls", "--function", "resize"]));
    assert_eq!(out.matches(RESIZE).count(), 2, "{out}");
    assert!(out.ends_with("2 entries, 19.6 KiB\n"), "{out}");

    let v = json(ckpt(
        &path,
        &["ls", "--json", "--sort", "size", "--limit", "3"],
    ));
    assert_eq!(v["total"], 9);
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["function"], RESIZE);
    assert_eq!(e[1]["function"], RESIZE);
    assert!(e[0]["size_bytes"].as_u64() >= e[1]["size_bytes"].as_u64());
    assert!(e[1]["size_bytes"].as_u64() > e[2]["size_bytes"].as_u64());
    for k in [
        "id",
        "function_key",
        "code_version",
        "stale",
        "created_ms",
        "created",
        "last_access_ms",
        "last_access",
        "hits",
        "compute_ns",
    ] {
        assert!(!e[0][k].is_null(), "{k} in {}", e[0]);
    }
    assert!(e[0]["created"].as_str().unwrap().ends_with('Z'));

    let v = json(ckpt(
        &path,
        &["ls", "--json", "--sort", "hits", "-f", EMBED],
    ));
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 7);
    let hits: Vec<u64> = e.iter().map(|x| x["hits"].as_u64().unwrap()).collect();
    assert_eq!(hits, [2, 2, 1, 0, 0, 0, 0]);
    assert_eq!(e.iter().filter(|x| x["stale"] == true).count(), 3);

    let v = json(ckpt(&path, &["ls", "--json", "--sort", "age", "--reverse"]));
    let created: Vec<u64> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["created_ms"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
}

#[test]
fn show_metadata_json_and_raw() {
    let dir = TempDir::new("cli-show");
    let path = known_store(&dir);
    let id = ids_of(&path, &resize())[0];
    let text = id.to_string();
    let out = ok(ckpt(&path, &["show", &text]));
    assert!(out.starts_with(&format!("id            {text}\n")), "{out}");
    assert!(out.contains(&format!("function      {RESIZE}")), "{out}");
    assert!(out.contains("record        valid (version 1"), "{out}");
    assert!(out.contains("created       20"), "{out}");
    // The value's type by name, as the saving process's compiler spelled it.
    let vec_u8 = std::any::type_name::<Vec<u8>>();
    assert!(
        out.contains(&format!("value type    {vec_u8} (fingerprint ")),
        "{out}"
    );
    // A unique prefix names the entry, as git takes a commit's.
    assert_eq!(ok(ckpt(&path, &["show", &text[..8]])), out);

    let v = json(ckpt(&path, &["show", &text, "--json"]));
    assert_eq!(v["id"], text);
    assert_eq!(v["function"], RESIZE);
    assert_eq!(v["stale"], false);
    assert_eq!(v["record"]["valid"], true);
    assert_eq!(v["record"]["version"], 1);
    assert_eq!(v["record"]["value_type"], vec_u8);
    assert_eq!(
        v["record"]["type_fingerprint"],
        format!("{:016x}", ckpt::type_fingerprint::<Vec<u8>>())
    );

    let raw = ckpt(&path, &["show", &text, "--raw"]);
    assert!(raw.status.success(), "{}", stderr(&raw));
    let store = Store::open(&path).unwrap();
    let record = store.read_record(&id).unwrap().unwrap();
    let record = Record::parse(&record).unwrap();
    assert_eq!(
        raw.stdout,
        record.payload(),
        "--raw is the postcard payload"
    );
    assert_eq!(v["record"]["payload_bytes"], record.payload().len());
    // Showing counted no hit.
    assert_eq!(store.entry(&id).unwrap().unwrap().hits, 0);
}

#[test]
fn rm_and_clear() {
    let dir = TempDir::new("cli-rm");
    let path = known_store(&dir);
    let ids = ids_of(&path, &resize());
    let v = json(ckpt(&path, &["rm", &ids[0].to_string(), "--json"]));
    assert_eq!(v["removed"], 1);
    assert_eq!(v["ids"][0], ids[0].to_string());
    // An unknown id among known ones removes nothing.
    let unknown = CheckpointId::from_bytes([0xee; 16]).to_string();
    fails(
        ckpt(&path, &["rm", &ids[1].to_string(), &unknown]),
        1,
        &format!("no entry with id {unknown}"),
    );
    assert_eq!(ids_of(&path, &resize()).len(), 1);

    let out = ok(ckpt(&path, &["rm", "--stale"]));
    assert_eq!(out, "removed 3 stale entries\n");
    let out = ok(ckpt(&path, &["rm", "--function", "resize"]));
    assert_eq!(out, format!("removed 1 entry of {RESIZE}\n"));
    fails(
        ckpt(&path, &["rm", "--function", "nope"]),
        1,
        "no function nope",
    );
    // Nothing to say which entries: usage.
    assert_eq!(ckpt(&path, &["rm"]).status.code(), Some(2));

    fails(ckpt(&path, &["clear"]), 2, "--yes");
    assert_eq!(
        ok(ckpt(&path, &["clear", "--yes"])),
        "removed 4 entries (statistics kept)\n"
    );
    let v = json(ckpt(&path, &["stats", "--json"]));
    assert_eq!(v["entries"], 0);
    assert_eq!(v["calls"]["hits"], 5, "statistics kept");
}

#[test]
fn evict_dry_run_then_for_real() {
    let dir = TempDir::new("cli-evict");
    let path = known_store(&dir);
    let out = ok(ckpt(&path, &["evict", "--max-entries", "5", "--dry-run"]));
    assert!(out.starts_with("would evict 4 entries ("), "{out}");
    assert!(out.contains(": 4 by count"), "{out}");
    assert_eq!(json(ckpt(&path, &["stats", "--json"]))["entries"], 9);

    let v = json(ckpt(
        &path,
        &["evict", "--max-entries", "5", "--policy", "fifo", "--json"],
    ));
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["evicted"], 4);
    assert_eq!(v["by_cause"]["count"], 4);
    // FIFO: the three v1 entries (oldest), then the oldest v2 one.
    let evicted = v["entries"].as_array().unwrap();
    assert!(
        evicted
            .iter()
            .all(|e| e["function"] == EMBED && e["cause"] == "count")
    );
    assert_eq!(json(ckpt(&path, &["stats", "--json"]))["entries"], 5);

    // LRU: the three embed entries (last used an hour before the resize ones), then one resize.
    let v = json(ckpt(&path, &["evict", "--max-bytes", "10KiB", "--json"]));
    assert_eq!(v["evicted"], 4, "{v}");
    assert_eq!(v["by_cause"]["size"], 4);
    let last = v["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["function"], RESIZE);

    let out = ok(ckpt(&path, &["evict", "--older-than", "52w"]));
    assert_eq!(out, "evicted 0 entries (0 B)\n");
    let out = ok(ckpt(&path, &["evict", "--older-than", "7d"]));
    assert!(
        out.starts_with("evicted 1 entry (9.8 KiB): 1 by age\n"),
        "{out}"
    );
    assert!(out.contains(RESIZE), "{out}");
    let v = json(ckpt(&path, &["stats", "--json"]));
    assert_eq!(v["entries"], 0);
    assert_eq!(v["evictions"]["count"], 4);
    assert_eq!(v["evictions"]["size"], 4);
    assert_eq!(v["evictions"]["age"], 1);
}

#[test]
fn verify_repair_and_compact() {
    let dir = TempDir::new("cli-verify");
    let path = known_store(&dir);
    let o = ckpt(&path, &["verify"]);
    assert_eq!(
        stderr(&o),
        "",
        "no progress line when stderr is not a terminal"
    );
    let out = ok(o);
    assert!(out.starts_with("checked 9 entries in "), "{out}");
    assert!(out.trim_end().ends_with("no problems"), "{out}");

    let id = ids_of(&path, &resize())[0];
    damage_one_record(&path, &id);
    let show = ok(ckpt(&path, &["show", &id.to_string()]));
    assert!(show.contains("DAMAGED"), "{show}");
    fails(
        ckpt(&path, &["show", &id.to_string(), "--raw"]),
        1,
        "is damaged",
    );
    let o = ckpt(&path, &["verify"]);
    assert!(
        stdout(&o).contains("  1 damaged result\n"),
        "{}",
        stdout(&o)
    );
    fails(o, 1, "run `ckpt verify --repair`");
    let v: Value = serde_json::from_slice(&ckpt(&path, &["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["bad_records"], 1);
    assert_eq!(v["problems"], 1);

    let out = ok(ckpt(&path, &["verify", "--repair"]));
    assert!(out.contains("1 problem, repaired"), "{out}");
    let v = json(ckpt(&path, &["verify", "--json"]));
    assert_eq!(v["clean"], true);
    assert_eq!(v["entries_checked"], 8);

    ok(ckpt(&path, &["clear", "--yes"]));
    let v = json(ckpt(&path, &["compact", "--json"]));
    let before = v["file_bytes_before"].as_u64().unwrap();
    let after = v["file_bytes_after"].as_u64().unwrap();
    assert_eq!(v["reclaimed_bytes"].as_u64().unwrap(), before - after);
    assert!(after <= before);
    let out = ok(ckpt(&path, &["compact"]));
    assert!(out.starts_with("compacted in "), "{out}");
    assert!(out.contains("reclaimed"), "{out}");
}

#[test]
fn an_entry_without_its_record() {
    let dir = TempDir::new("cli-no-record");
    let path = known_store(&dir);
    let id = ids_of(&path, &resize())[0];
    {
        use redb::Database;
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(common::RESULTS)
            .unwrap()
            .remove(id.as_bytes())
            .unwrap();
        txn.commit().unwrap();
    }
    fails(
        ckpt(&path, &["show", &id.to_string()]),
        1,
        "has metadata but no stored record; `ckpt verify --repair` drops it",
    );
    let v: Value = serde_json::from_slice(&ckpt(&path, &["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["meta_without_result"], 1);
    let out = ok(ckpt(&path, &["verify", "--repair"]));
    assert!(out.contains("1 metadata row without a result"), "{out}");
    fails(
        ckpt(&path, &["show", &id.to_string()]),
        1,
        &format!("no entry with id {id}"),
    );
}

#[test]
fn export_import_round_trip_between_two_stores() {
    let dir = TempDir::new("cli-archive");
    let a = known_store(&dir);
    let b = dir.join("other/copy.redb");
    let archive = dir.join("all.ckpt");
    let v = json(ckpt(&a, &["export", archive.to_str().unwrap(), "--json"]));
    assert_eq!(v["entries"], 9);
    assert_eq!(v["functions"], 2);
    assert_eq!(
        v["archive_bytes"].as_u64().unwrap(),
        std::fs::metadata(&archive).unwrap().len()
    );
    // The target does not exist yet: import creates it.
    let out = ok(ckpt(&b, &["import", archive.to_str().unwrap()]));
    assert!(
        out.starts_with("imported 9 entries of 2 functions ("),
        "{out}"
    );

    let list = |p: &Path| json(ckpt(p, &["ls", "--json"]))["entries"].clone();
    assert_eq!(list(&a), list(&b), "identical entries and metadata");
    let (sa, sb) = (Store::open(&a).unwrap(), Store::open(&b).unwrap());
    let entries = sa.entries().unwrap();
    assert_eq!(entries, sb.entries().unwrap());
    for e in &entries {
        assert_eq!(
            sa.read_record(&e.id).unwrap(),
            sb.read_record(&e.id).unwrap(),
            "record bytes of {}",
            e.id
        );
    }
    drop((sa, sb));

    // Refuses to overwrite without --force; one function only; through stdout and stdin.
    fails(
        ckpt(&a, &["export", archive.to_str().unwrap()]),
        1,
        "give --force",
    );
    let v = json(ckpt(
        &a,
        &[
            "export",
            archive.to_str().unwrap(),
            "--force",
            "-f",
            "resize",
            "--json",
        ],
    ));
    assert_eq!(
        (v["entries"].as_u64(), v["functions"].as_u64()),
        (Some(2), Some(1))
    );
    let piped = ckpt(&a, &["export", "-"]);
    assert!(piped.status.success());
    assert!(stderr(&piped).starts_with("exported 9 entries of 2 functions"));
    // With --json too, stdout holds only the archive; the summary goes to stderr.
    let piped_json = ckpt(&a, &["export", "-", "--json"]);
    let summary: Value = serde_json::from_slice(&piped_json.stderr).unwrap();
    assert_eq!(summary["entries"], 9);
    assert_eq!(
        piped_json.stdout.len() as u64,
        summary["archive_bytes"].as_u64().unwrap()
    );
    let c = dir.join("third.redb");
    let mut child = Command::new(BIN)
        .args(["--store", c.to_str().unwrap(), "import", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&piped.stdout).unwrap();
    }
    let v = json(child.wait_with_output().unwrap());
    assert_eq!(v["entries"], 9);
    assert_eq!(v["archive_version"], 1);
    assert_eq!(list(&c), list(&a));
}

#[test]
fn bad_archives_are_refused_whole() {
    let dir = TempDir::new("cli-bad-archive");
    let a = known_store(&dir);
    let archive = dir.join("a.ckpt");
    ok(ckpt(&a, &["export", archive.to_str().unwrap()]));
    let good = std::fs::read(&archive).unwrap();
    let b = dir.join("b.redb");
    let bad = dir.join("bad.ckpt");

    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x40;
    std::fs::write(&bad, &flipped).unwrap();
    fails(
        ckpt(&b, &["import", bad.to_str().unwrap()]),
        1,
        "fails its checksum; nothing was imported",
    );
    // Nothing at all: a failed import into a missing store leaves no store behind (issue 10,
    // item 8; this asserted an empty store before).
    assert!(!b.exists(), "a failed import left {}", b.display());

    let mut newer = good.clone();
    newer[8] = 9;
    std::fs::write(&bad, &newer).unwrap();
    fails(
        ckpt(&b, &["import", bad.to_str().unwrap()]),
        1,
        "format version 9, newer than the 1 this ckpt reads",
    );
    std::fs::write(&bad, &good[..good.len() - 3]).unwrap();
    fails(ckpt(&b, &["import", bad.to_str().unwrap()]), 1, "truncated");
    std::fs::write(&bad, b"hello, world").unwrap();
    fails(
        ckpt(&b, &["import", bad.to_str().unwrap()]),
        1,
        "not a ckpt archive",
    );
    fails(
        ckpt(&b, &["import", dir.join("nope.ckpt").to_str().unwrap()]),
        1,
        "no archive at",
    );
    assert!(!b.exists(), "a failed import left {}", b.display());
    // Into an existing store, a failed import leaves it as it was.
    fails(
        ckpt(&a, &["import", bad.to_str().unwrap()]),
        1,
        "not a ckpt archive",
    );
    assert!(a.exists());
    assert_eq!(json(ckpt(&a, &["stats", "--json"]))["entries"], 9);
}

#[test]
fn bad_inputs_get_one_line_and_an_exit_code() {
    let dir = TempDir::new("cli-bad");
    let path = known_store(&dir);

    // A missing file is an error, and no empty store is created.
    let missing = dir.join("missing/checkpoints.redb");
    for cmd in [
        &["stats"][..],
        &["ls"],
        &["verify"],
        &["compact"],
        &["export", "x"],
    ] {
        fails(ckpt(&missing, cmd), 1, "no checkpoint store at");
    }
    assert!(!missing.exists() && !dir.join("missing").exists());
    fails(
        ckpt_in(Some(&dir.join("nowhere")), &["stats"]),
        1,
        "does not exist",
    );

    // A file that is not a store.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a store at all, just some text\n".repeat(100)).unwrap();
    fails(ckpt(&text, &["stats"]), 1, "is not a ckpt checkpoint store");
    fails(ckpt(dir.path(), &["stats"]), 1, "is a directory");

    // Unknown and malformed ids, sizes, durations, functions.
    let unknown = CheckpointId::from_bytes([0x11; 16]).to_string();
    fails(
        ckpt(&path, &["show", &unknown]),
        1,
        &format!("no entry with id {unknown}"),
    );
    fails(ckpt(&path, &["show", "xyz"]), 2, "malformed id \"xyz\"");
    fails(
        ckpt(&path, &["rm", "012"]),
        2,
        "malformed id \"012\": an id is 32 hex digits (or a unique prefix of at least 4)",
    );
    // Four digits are a prefix (as git takes them); one that starts no id is a failure.
    let prefix = &unknown[..6];
    fails(
        ckpt(&path, &["rm", prefix]),
        1,
        &format!("no entry with an id starting {prefix}"),
    );
    fails(
        ckpt(&path, &["evict", "--max-bytes", "12XB"]),
        2,
        "unknown unit \"XB\"",
    );
    fails(
        ckpt(&path, &["evict", "--max-bytes", "lots"]),
        2,
        "malformed size \"lots\"",
    );
    fails(
        ckpt(&path, &["evict", "--older-than", "7"]),
        2,
        "a number needs a unit",
    );
    fails(
        ckpt(&path, &["evict", "--older-than", "7 fortnights"]),
        2,
        "unknown unit \"fortnights\"",
    );
    fails(
        ckpt(&path, &["evict", "--max-entries", "lots"]),
        2,
        "--max-entries",
    );
    fails(
        ckpt(&path, &["ls", "--function", "nope"]),
        1,
        "no function nope",
    );
    fails(ckpt(&path, &["ls", "--sort", "colour"]), 2, "colour");
    // The store is unchanged by all of that.
    assert_eq!(json(ckpt(&path, &["stats", "--json"]))["entries"], 9);
}

#[test]
fn ambiguous_function_names_are_explained() {
    let dir = TempDir::new("cli-ambiguous");
    let path = dir.store_path();
    let store = Store::open(&path).unwrap();
    deco(&store, Function::new("a", "run"))
        .call(1u8, |x| x)
        .unwrap();
    deco(&store, Function::new("b", "run"))
        .call(1u8, |x| x)
        .unwrap();
    drop(store);
    fails(
        ckpt(&path, &["ls", "--function", "run"]),
        1,
        "function run is ambiguous: it matches a::run, b::run; give the full path",
    );
    let v = json(ckpt(&path, &["ls", "--function", "b::run", "--json"]));
    assert_eq!(v["total"], 1);
}

#[test]
fn a_store_held_by_another_process() {
    let dir = TempDir::new("cli-held");
    let path = known_store(&dir);

    // Held in single-process mode (the default): refused, saying which mode would allow it.
    let held = Store::open(&path).unwrap();
    fails(
        ckpt(&path, &["stats"]),
        1,
        "held by another process in single-process mode; to inspect it while that process \
         runs, have it open the store with ConcurrencyMode::MultiProcess",
    );
    drop(held);

    // Held in multi-process mode: inspected live, and what the app saves shows up.
    let live = Store::builder()
        .concurrency(ConcurrencyMode::MultiProcess)
        .open(&path)
        .unwrap();
    let v = json(ckpt(&path, &["stats", "--json"]));
    assert_eq!(v["entries"], 9);
    deco(&live, resize())
        .call(9u32, |i| vec![i as u8; 5])
        .unwrap();
    let v = json(ckpt(&path, &["ls", "--json", "-f", RESIZE]));
    assert_eq!(v["total"], 3);
    let out = ok(ckpt(&path, &["verify"]));
    assert!(out.contains("no problems"), "{out}");
    drop(live);
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = TempDir::new("cli-pipe");
    let path = known_store(&dir);
    let mut child = Command::new(BIN)
        .args(["--store", path.to_str().unwrap(), "ls"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 1));
}

/// On a terminal (a pseudo-terminal from `script`, where available), verify draws a progress
/// line on stderr and erases it.
#[test]
fn progress_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to run the tool on a pseudo-terminal");
        return;
    }
    let dir = TempDir::new("cli-tty");
    let path = known_store(&dir);
    let log = dir.join("typescript");
    let cmd = format!("{BIN} --store {} verify", path.display());
    let o = Command::new("script")
        .args(["-qec", &cmd, log.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("skipped: script failed: {}", stderr(&o));
        return;
    }
    let seen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(seen.contains("verifying"), "{seen:?}");
    assert!(seen.contains("\r\x1b[2K"), "the line is erased: {seen:?}");
    assert!(seen.contains("checked 9 entries"), "{seen:?}");
}

/// Builds the known store in `$CKPT_DEMO_DIR` to try the tool by hand:
/// `CKPT_DEMO_DIR=/tmp/demo cargo test --test cli demo_store -- --ignored`, then
/// `CKPT_DIR=/tmp/demo cargo run --features cli -- stats`.
#[test]
#[ignore]
fn demo_store() {
    let Some(dir) = std::env::var_os("CKPT_DEMO_DIR") else {
        return;
    };
    let dir = TempDir(PathBuf::from(dir));
    std::fs::create_dir_all(dir.path()).unwrap();
    known_store(&dir);
    std::mem::forget(dir);
}

/// `ckpt stats --format prometheus` is the text exposition format: each family's HELP and TYPE
/// once, before its samples; every sample `name{labels} value`; and the values are the
/// statistics `--json` gives.
#[test]
fn stats_in_prometheus_format() {
    let dir = TempDir::new("cli-prom");
    let path = known_store(&dir);
    let text = ok(ckpt(&path, &["stats", "--format", "prometheus"]));
    let stats = json(ckpt(&path, &["stats", "--json"]));
    let mut families: Vec<String> = Vec::new();
    let mut samples = std::collections::BTreeMap::new();
    let mut last_type: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!families.contains(&name), "HELP of {name} twice");
            families.push(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(Some(name), families.last().map(String::as_str), "{line}");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
            last_type = Some(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap();
            assert_eq!(
                Some(name),
                last_type.as_deref(),
                "a sample outside its family: {line}"
            );
            assert!(
                labels.ends_with('}') && labels.contains("store=\""),
                "{line}"
            );
            let value: f64 = value.parse().unwrap();
            samples.insert(series.to_string(), value);
        }
    }
    let store = path.display().to_string();
    for f in stats["functions"].as_array().unwrap() {
        let function = format!(
            "{}::{}",
            f["module"].as_str().unwrap(),
            f["name"].as_str().unwrap()
        );
        let series = |name: &str| format!("{name}{{store=\"{store}\",function=\"{function}\"}}");
        for (metric, field) in [
            ("ckpt_hits_total", "hits"),
            ("ckpt_misses_total", "misses"),
            ("ckpt_saves_total", "saves"),
        ] {
            assert_eq!(
                samples[&series(metric)],
                f["calls"][field].as_u64().unwrap() as f64,
                "{metric} of {function}"
            );
        }
        assert_eq!(
            samples[&series("ckpt_entries")],
            f["entries"].as_u64().unwrap() as f64
        );
        assert_eq!(
            samples[&series("ckpt_stored_bytes")],
            f["stored_bytes"].as_u64().unwrap() as f64
        );
    }
    assert_eq!(
        samples[&format!("ckpt_file_bytes{{store=\"{store}\"}}")],
        stats["file_bytes"].as_u64().unwrap() as f64
    );
    // The known store's totals are not all zero: the check above compares real counts.
    assert!(stats["calls"]["hits"].as_u64().unwrap() > 0);
    // One format at a time.
    fails(
        ckpt(&path, &["stats", "--json", "--format", "prometheus"]),
        2,
        "two formats",
    );
}
