//! `ckpt remote --remote URL ls | stats | gc | push | pull`, the real binary on a `file://`
//! remote that the library filled: gc removes exactly what it lists (the folder before and
//! after), stats counts what is there, push publishes the local file, pull prefetches into a new
//! store that then answers without the remote.

mod cli_support;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ckpt::{PublishMode, Remote, RemoteMode, Store};
use cli_support::*;
use common::TempDir;
use serde_json::Value;

fn url(folder: &Path) -> String {
    format!("file://{}", folder.display())
}

/// `ckpt [--store STORE] remote --remote URL ARGS --json`, parsed.
fn remote_json(store: Option<&Path>, folder: &Path, args: &[&str]) -> Value {
    let u = url(folder);
    let mut all = vec!["remote", "--remote", u.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    match store {
        Some(s) => json(ckpt(s, &all)),
        None => json(ckpt_in(None, &all)),
    }
}

/// The object files in the remote folder, by name (the ids).
fn files(folder: &Path) -> BTreeSet<String> {
    std::fs::read_dir(folder.join("ckpt-v1").join("r"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn set_age(folder: &Path, id: &str, age: Duration) {
    let p = folder.join("ckpt-v1").join("r").join(id);
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn ids(v: &Value, list: &str) -> BTreeSet<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

const DAY: Duration = Duration::from_secs(86_400);

/// A remote folder filled through a store: `embed` v1 (3 objects, 50 days old), v2 (4, 10 days
/// old), `resize` (2, 40 days old). Returns the folder and the ids of each.
fn filled(dir: &TempDir) -> (PathBuf, [BTreeSet<String>; 3]) {
    let folder = dir.join("team");
    let remote = Remote::open(&url(&folder)).unwrap();
    let store = Store::builder()
        .remote(remote, RemoteMode::ReadWrite)
        .publish(PublishMode::Sync)
        .open(dir.join("filler.redb"))
        .unwrap();
    let mut sets: [BTreeSet<String>; 3] = Default::default();
    let mut before = files(&folder);
    let mut take = |sets: &mut BTreeSet<String>| {
        let now = files(&folder);
        sets.extend(now.difference(&before).cloned());
        before = now;
    };
    let v1 = deco(&store, embed("1"));
    for i in 0..3u64 {
        v1.call(i, |i| vec![i as f32; 4]).unwrap();
    }
    take(&mut sets[0]);
    let v2 = deco(&store, embed("2"));
    for i in 0..4u64 {
        v2.call(i, |i| vec![i as f32; 8]).unwrap();
    }
    take(&mut sets[1]);
    let r = deco(&store, resize());
    for i in 0..2u32 {
        r.call(i, |i| vec![i as u8; 10_000]).unwrap();
    }
    take(&mut sets[2]);
    drop((v1, v2, r));
    store.close().unwrap();
    for (set, age) in sets.iter().zip([50 * DAY, 10 * DAY, 40 * DAY]) {
        for id in set {
            set_age(&folder, id, age);
        }
    }
    assert_eq!(
        sets.iter().map(BTreeSet::len).collect::<Vec<_>>(),
        [3, 4, 2]
    );
    (folder, sets)
}

#[test]
fn ls_lists_every_object_with_its_function_and_staleness() {
    let dir = TempDir::new("cli-remote-ls");
    let (folder, [v1, v2, rs]) = filled(&dir);
    let v = remote_json(None, &folder, &["ls"]);
    assert_eq!(v["total"], 9);
    assert_eq!(ids(&v, "objects"), files(&folder));
    for o in v["objects"].as_array().unwrap() {
        let id = o["id"].as_str().unwrap();
        let (function, stale) = if v1.contains(id) {
            (EMBED, true)
        } else if v2.contains(id) {
            (EMBED, false)
        } else {
            assert!(rs.contains(id));
            (RESIZE, false)
        };
        assert_eq!(o["function"], function, "{o}");
        assert_eq!(o["stale"], stale, "{o}");
        assert!(o["size_bytes"].as_u64().unwrap() > 0);
    }
    let only = remote_json(None, &folder, &["ls", "--function", "resize"]);
    assert_eq!(ids(&only, "objects"), rs);
    let text = ok(ckpt_in(None, &["remote", "--remote", &url(&folder), "ls"]));
    assert!(text.contains("9 objects of 9"), "{text}");
    assert!(text.contains("(stale)"), "{text}");
}

#[test]
fn gc_removes_exactly_what_it_lists() {
    let dir = TempDir::new("cli-remote-gc");
    let (folder, [v1, v2, rs]) = filled(&dir);
    let all = files(&folder);
    assert_eq!(all.len(), 9);

    // A dry run lists the stale ones and removes nothing.
    let dry = remote_json(None, &folder, &["gc", "--stale", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"], 3);
    assert_eq!(ids(&dry, "objects"), v1);
    assert_eq!(files(&folder), all);

    let gc = remote_json(None, &folder, &["gc", "--stale"]);
    assert_eq!(gc["removed"], 3);
    assert_eq!(gc["by_cause"]["stale"], 3);
    assert_eq!(ids(&gc, "objects"), v1);
    let after: BTreeSet<String> = all.difference(&v1).cloned().collect();
    assert_eq!(files(&folder), after);

    // By age: resize's objects (40 days) go, embed v2's (10 days) stay.
    let gc = remote_json(None, &folder, &["gc", "--older-than", "30d"]);
    assert_eq!(gc["removed"], 2);
    assert_eq!(gc["by_cause"]["age"], 2);
    assert_eq!(ids(&gc, "objects"), rs);
    assert_eq!(files(&folder), v2);

    // Nothing left to remove.
    let gc = remote_json(None, &folder, &["gc", "--older-than", "30d", "--stale"]);
    assert_eq!(gc["removed"], 0);
    assert_eq!(files(&folder), v2);

    // A rule is required (usage, exit 2).
    let o = ckpt_in(None, &["remote", "--remote", &url(&folder), "gc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn stats_counts_objects_and_bytes_per_function() {
    let dir = TempDir::new("cli-remote-stats");
    let (folder, _) = filled(&dir);
    // A foreign file under an id's name: counted, unreadable, never attributed.
    std::fs::write(
        folder
            .join("ckpt-v1")
            .join("r")
            .join("00000000000000000000000000000001"),
        b"not an object",
    )
    .unwrap();
    let bytes: u64 = std::fs::read_dir(folder.join("ckpt-v1").join("r"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let v = remote_json(None, &folder, &["stats"]);
    assert_eq!(v["objects"], 10);
    assert_eq!(v["bytes"], bytes);
    assert_eq!(v["unreadable"], 1);
    assert_eq!(v["stale_objects"], 3);
    let fs = v["functions"].as_array().unwrap();
    assert_eq!(fs.len(), 2);
    assert_eq!(fs[0]["function"], RESIZE);
    assert_eq!(fs[0]["objects"], 2);
    assert_eq!(fs[0]["code_versions"], 1);
    assert_eq!(fs[1]["function"], EMBED);
    assert_eq!(fs[1]["objects"], 7);
    assert_eq!(fs[1]["code_versions"], 2);
    assert_eq!(fs[1]["stale_objects"], 3);
    let text = ok(ckpt_in(
        None,
        &["remote", "--remote", &url(&folder), "stats"],
    ));
    assert!(text.contains("objects    10 ("), "{text}");
    assert!(text.contains("Store::stats().remote"), "{text}");
}

#[test]
fn push_publishes_the_local_file_and_pull_prefetches_it() {
    let dir = TempDir::new("cli-remote-push");
    let path = known_store(&dir);
    let folder = dir.join("team");
    let local: BTreeSet<String> = Store::open(&path)
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .filter(|e| !e.stale)
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(local.len(), 6);

    let v = remote_json(Some(&path), &folder, &["push"]);
    assert_eq!(v["published"], 6, "{v}");
    assert_eq!(v["skipped"], 3, "{v}");
    assert_eq!(v["failed"], 0);
    assert_eq!(files(&folder), local);
    // Write-once: a second push finds them there.
    let v = remote_json(Some(&path), &folder, &["push"]);
    assert_eq!(
        (v["published"].as_u64(), v["already_present"].as_u64()),
        (Some(0), Some(6))
    );

    // Another machine: an empty store, prefetching embed from the remote.
    let fresh = dir.join("fresh").join("ckpt.redb");
    let v = remote_json(Some(&fresh), &folder, &["pull", "--function", "embed"]);
    assert_eq!(v["function"], EMBED);
    assert_eq!(v["pulled"], 4, "{v}");
    let pulled: BTreeSet<String> = Store::open(&fresh)
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let v2_ids: BTreeSet<String> = Store::open(&path)
        .unwrap()
        .entries_of(&embed("2"))
        .unwrap()
        .into_iter()
        .filter(|e| !e.stale)
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(v2_ids.len(), 4);
    assert_eq!(pulled, v2_ids);
    // The pulled store answers by itself, with no remote.
    let store = Store::open(&fresh).unwrap();
    let v2 = deco(&store, embed("2"));
    assert_eq!(
        v2.call(3u64, |_| -> Vec<f32> { unreachable!("pulled") })
            .unwrap(),
        vec![3.0f32; 8]
    );
    drop((v2, store));
    let v = remote_json(Some(&fresh), &folder, &["pull", "--function", "embed"]);
    assert_eq!(
        (v["pulled"].as_u64(), v["already_local"].as_u64()),
        (Some(0), Some(4))
    );
}

#[test]
fn pull_takes_only_the_newest_code_version() {
    let dir = TempDir::new("cli-remote-pull");
    let (folder, [v1, v2, _]) = filled(&dir);
    let fresh = dir.join("fresh.redb");
    let v = remote_json(Some(&fresh), &folder, &["pull", "--function", EMBED]);
    assert_eq!(v["objects"], 4, "{v}");
    assert_eq!(v["pulled"], 4, "{v}");
    let store = Store::open(&fresh).unwrap();
    let local: BTreeSet<String> = store
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| {
            assert!(!e.stale);
            e.id.to_string()
        })
        .collect();
    assert_eq!(local, v2);
    assert!(local.is_disjoint(&v1));
}

#[test]
fn bad_remotes_and_functions_fail_in_one_line() {
    let dir = TempDir::new("cli-remote-bad");
    fails(
        ckpt_in(None, &["remote", "--remote", "ftp://x/y", "ls"]),
        1,
        "scheme",
    );
    let (folder, _) = filled(&dir);
    fails(
        ckpt_in(
            None,
            &[
                "remote",
                "--remote",
                &url(&folder),
                "ls",
                "--function",
                "nope",
            ],
        ),
        1,
        "no objects of function nope",
    );
    // push needs an existing local store.
    fails(
        ckpt(
            &dir.join("missing.redb"),
            &["remote", "--remote", &url(&folder), "push"],
        ),
        1,
        "does not exist",
    );
}

#[test]
fn ckpt_stats_shows_the_remote_counts_the_file_recorded() {
    let dir = TempDir::new("cli-remote-recorded");
    let (folder, sets) = filled(&dir);
    // Two processes' worth of use of one file: each opens it with the remote, is served,
    // and closes. The counts add up in the file.
    let path = dir.join("reader.redb");
    for (round, expect_hits) in [(0u64, 3u64), (1, 7)] {
        let remote = Remote::open(&url(&folder)).unwrap();
        let store = Store::builder()
            .remote(remote, RemoteMode::ReadOnly)
            .open(&path)
            .unwrap();
        let d = deco(&store, embed(if round == 0 { "1" } else { "2" }));
        let calls = if round == 0 { 3 } else { 4 };
        for i in 0..calls {
            d.call(i, |_| -> Vec<f32> { unreachable!("served by the remote") })
                .unwrap();
        }
        let s = store.stats().unwrap();
        assert_eq!(s.remote.unwrap().hits, calls, "this process's");
        assert_eq!(
            s.remote_recorded.unwrap().hits,
            expect_hits,
            "the file's life"
        );
        drop(d);
        store.close().unwrap();
    }
    // Opened without the remote, read-only, by the CLI: the recorded counts, unchanged.
    let v = json(ckpt(&path, &["stats", "--json"]));
    assert_eq!(v["remote"]["hits"], 7, "{v}");
    assert_eq!(v["remote"]["backfills"], 7, "{v}");
    assert_eq!(v["remote"]["publishes"], 0, "{v}");
    assert!(v["remote"]["bytes_down"].as_u64().unwrap() > 0, "{v}");
    let human = ok(ckpt(&path, &["stats"]));
    let line = human
        .lines()
        .find(|l| l.starts_with("remote"))
        .unwrap_or_else(|| panic!("no remote line in:\n{human}"));
    assert!(line.contains("7 hits, 0 misses, 7 backfilled"), "{line}");
    let prom = ok(ckpt(&path, &["stats", "--format", "prometheus"]));
    assert!(prom.contains("ckpt_remote_hits_total{store="), "{prom}");
    assert!(
        prom.lines()
            .any(|l| l.starts_with("ckpt_remote_hits_total") && l.ends_with(" 7")),
        "{prom}"
    );
    // The filler store published every object, and recorded it.
    let filler = json(ckpt(&dir.join("filler.redb"), &["stats", "--json"]));
    let published: usize = sets.iter().map(BTreeSet::len).sum();
    assert_eq!(filler["remote"]["publishes"], published as u64, "{filler}");
    // A store that never had a remote shows none.
    let plain = dir.join("plain.redb");
    let store = Store::open(&plain).unwrap();
    deco(&store, resize())
        .call(1u32, |i| vec![i as u8; 3])
        .unwrap();
    store.close().unwrap();
    let v = json(ckpt(&plain, &["stats", "--json"]));
    assert!(v["remote"].is_null(), "{v}");
    assert!(
        !ok(ckpt(&plain, &["stats"]))
            .lines()
            .any(|l| l.starts_with("remote"))
    );
}
