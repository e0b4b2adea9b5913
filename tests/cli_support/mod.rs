//! Helpers shared by the command-line tool's tests (`tests/cli.rs`, `tests/cli_safety.rs`): running
//! the real binary, reading its output, and a known store to run it on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::TempDir;
use ckpt::store::ManualClock;
use ckpt::{AutoIdentifier, CheckpointId, DecoratorCheckpoint, Function, OnError, Store};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ckpt");

/// Runs `ckpt ARGS` (no CKPT_DIR from the environment unless `dir` is given).
pub fn ckpt_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("CKPT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.env("CKPT_DIR", d);
    }
    cmd.output().expect("run the ckpt binary")
}

pub fn ckpt(store: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--store", store.to_str().unwrap()];
    all.extend_from_slice(args);
    ckpt_in(None, &all)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success; returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[track_caller]
pub fn json(o: Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts exit `code` with exactly one line on stderr containing `needle`; returns the line.
#[track_caller]
pub fn fails(o: Output, code: i32, needle: &str) -> String {
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(&o)
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace") && !err.contains("internal"),
        "{err}"
    );
    err
}

pub const EMBED: &str = "app::text::embed";
pub const RESIZE: &str = "app::images::resize";

pub fn embed(version: &str) -> Function {
    Function::new("app::text", "embed").with_version(version.to_string())
}

pub fn resize() -> Function {
    Function::new("app::images", "resize").with_code_hash(7)
}

pub fn deco(store: &Store, f: Function) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(f, AutoIdentifier, store.clone()).with_on_error(OnError::Raise)
}

/// A known store, closed: `embed` v1 saved 3 entries (stale), v2 saved 4 (two of them hit
/// twice, one once), `resize` saved 2 of 10 kB. Saved 30 days ago by the store's clock.
pub fn known_store(dir: &TempDir) -> PathBuf {
    let path = dir.store_path();
    let clock = ManualClock::new(SystemTime::now() - Duration::from_secs(30 * 86_400));
    let store = Store::builder().clock(clock.clone()).open(&path).unwrap();
    let v1 = deco(&store, embed("1"));
    for i in 0..3u64 {
        v1.call(i, |i| vec![i as f32; 4]).unwrap();
    }
    clock.advance(Duration::from_secs(3600));
    let v2 = deco(&store, embed("2"));
    for i in 0..4u64 {
        v2.call(i, |i| vec![i as f32; 8]).unwrap();
    }
    for i in [0u64, 0, 1, 1, 2] {
        v2.call(i, |i| vec![i as f32; 8]).unwrap();
    }
    clock.advance(Duration::from_secs(3600));
    let r = deco(&store, resize());
    for i in 0..2u32 {
        r.call(i, |i| vec![i as u8; 10_000]).unwrap();
    }
    drop((v1, v2, r));
    store.close().unwrap();
    path
}

pub fn ids_of(store: &Path, function: &Function) -> Vec<CheckpointId> {
    let s = Store::open(store).unwrap();
    s.entries_of(function)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Damages one stored record in a closed store file (flips its last byte).
pub fn damage_one_record(path: &Path, id: &CheckpointId) {
    use redb::{Database, ReadableTable as _};
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(crate::common::RESULTS).unwrap();
        let mut bytes = t.get(id.as_bytes()).unwrap().unwrap().value().to_vec();
        *bytes.last_mut().unwrap() ^= 0xff;
        t.insert(id.as_bytes(), bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}
