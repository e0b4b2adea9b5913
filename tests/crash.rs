//! Crash consistency: a child process saves from several threads and prints each save once it
//! returned; the parent SIGKILLs it at a random moment, reopens the store and checks that it
//! opens, verifies clean, holds every acknowledged save with the right value (and none of the
//! acknowledged removals), and that its statistics agree with its entries.
//!
//! `CKPT_CRASH_ROUNDS` sets the number of rounds (default 100), `CKPT_CRASH_SEED` the seed.
//! The child is this test binary itself, re-run with `--ignored --exact crash_child`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};
use common::{Rng, TempDir, within};

const THREADS: u64 = 4;
const STORE_VAR: &str = "CKPT_CRASH_STORE";
const ROUND_VAR: &str = "CKPT_CRASH_ROUND";

type Key = (u64, u64, u64);
type Val = (Key, Vec<u8>);

fn value(key: Key) -> Val {
    let (round, thread, seq) = key;
    // Every 16th save of thread 0 is large enough to bypass group commit, and as many others
    // are large results: encoded as they are written, into chunks.
    let len = if thread == 0 && seq % 16 == 7 {
        700 * 1024
    } else if thread == 0 && seq % 16 == 15 {
        300 * 1024
    } else {
        ((round * 31 + seq * 7) % 900) as usize
    };
    (
        key,
        (0..len).map(|i| (i as u64 ^ seq ^ round) as u8).collect(),
    )
}

fn function(thread: u64) -> Function {
    Function::new(
        "crash",
        if thread.is_multiple_of(2) {
            "even"
        } else {
            "odd"
        },
    )
}

fn deco(store: &Store, thread: u64) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(function(thread), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise)
}

/// The child: saves in a loop from several threads until killed (or 30 s pass).
#[test]
#[ignore = "run by crash_consistency as its child process"]
fn crash_child() {
    let Some(path) = std::env::var_os(STORE_VAR) else {
        return;
    };
    let round: u64 = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
    let store = Store::open(&path).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let d = deco(&store, t);
                let mut seq = 0;
                while Instant::now() < deadline {
                    let key = (round, t, seq);
                    d.rerun(key, value).unwrap();
                    println!("ack {round} {t} {seq}");
                    // Thread 3 also removes its previous save, and says so once removed.
                    if t == 3 && seq > 0 && seq % 3 == 0 {
                        let old = d.identify(&(round, t, seq - 1)).unwrap();
                        assert!(store.remove(&old).unwrap());
                        println!("rm {round} {t} {}", seq - 1);
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Whether the child removes this save after its next one.
fn removable((_, thread, seq): Key) -> bool {
    thread == 3 && (seq + 1) % 3 == 0
}

fn parse(line: &str) -> Option<(bool, Key)> {
    let mut words = line.split_whitespace();
    let saved = match words.next()? {
        "ack" => true,
        "rm" => false,
        _ => return None,
    };
    let mut n = || words.next()?.parse::<u64>().ok();
    Some((saved, (n()?, n()?, n()?)))
}

/// Checks the reopened store; returns the number of entries checked.
fn check_store(path: &std::path::Path, acked: &BTreeMap<Key, bool>, sample: &[Key]) -> usize {
    let store = Store::open(path).unwrap_or_else(|e| panic!("the store does not open: {e}"));
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "after a crash: {report}");
    let decos: Vec<_> = (0..THREADS).map(|t| deco(&store, t)).collect();
    for key in sample {
        let d = &decos[key.1 as usize];
        let id = d.identify(key).unwrap();
        let got = d.peek::<Val>(&id).unwrap();
        match acked[key] {
            // Thread 3 may have removed it without getting to say so.
            true if removable(*key) => {
                assert!(
                    got.is_none() || got == Some(value(*key)),
                    "a wrong value for {key:?}"
                );
            }
            true => assert_eq!(got, Some(value(*key)), "acknowledged save {key:?} lost"),
            false => assert_eq!(got, None, "acknowledged removal {key:?} undone"),
        }
    }
    // Statistics agree with the entries.
    let stats = store.stats().unwrap();
    let entries = store.entries().unwrap();
    assert_eq!(stats.entries, entries.len() as u64);
    assert_eq!(
        stats.stored_bytes,
        entries.iter().map(|e| e.size).sum::<u64>()
    );
    for f in &stats.functions {
        let of = entries.iter().filter(|e| e.function_key == f.key).count() as u64;
        assert_eq!(f.entries, of, "function {}", f.path());
    }
    for t in 0..2 {
        let of = store.entries_of(&function(t)).unwrap().len() as u64;
        let row = store
            .function_stats(&function(t))
            .unwrap()
            .map_or(0, |f| f.entries);
        assert_eq!(row, of);
    }
    drop(decos);
    store.close().unwrap();
    sample.len()
}

#[cfg(unix)]
#[test]
fn crash_consistency() {
    let rounds: u64 = std::env::var("CKPT_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng::from_env("CKPT_CRASH_SEED", 0xc4a5_0001);
    let dir = TempDir::new("crash");
    let path = dir.join("checkpoints.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked: BTreeMap<Key, bool> = BTreeMap::new();
    let started = Instant::now();
    let (mut killed_before_ready, mut checked) = (0, 0);
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "crash_child", "--nocapture"])
            .env(STORE_VAR, &path)
            .env(ROUND_VAR, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // One round in ten is killed while it may still be opening (recovering) the store.
        let early = rng.below(10) == 0;
        let mut lines = Vec::new();
        if early {
            std::thread::sleep(Duration::from_millis(rng.below(15)));
        } else {
            loop {
                match rx.recv_timeout(Duration::from_secs(60)) {
                    Ok(l) if l == "ready" => break,
                    Ok(l) => lines.push(l),
                    Err(_) => panic!("round {round}: the child never got ready"),
                }
            }
            std::thread::sleep(Duration::from_millis(1 + rng.below(120)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut ready = !early;
        lines.extend(rx.try_iter());
        let mut this_round = Vec::new();
        for line in &lines {
            ready |= line == "ready";
            if let Some((saved, key)) = parse(line) {
                acked.insert(key, saved);
                this_round.push(key);
            }
        }
        if !ready {
            killed_before_ready += 1;
        }
        // This round's acknowledgements, and a sample of the earlier ones.
        let mut sample = this_round;
        let older: Vec<Key> = acked.keys().copied().collect();
        for _ in 0..100.min(older.len()) {
            sample.push(older[rng.below(older.len() as u64) as usize]);
        }
        let p = path.clone();
        let a = acked.clone();
        checked += within(120, &format!("round {round}: reopening"), move || {
            check_store(&p, &a, &sample)
        });
    }
    // Finally every acknowledged save and removal of every round.
    let all: Vec<Key> = acked.keys().copied().collect();
    let (p, a) = (path.clone(), acked.clone());
    checked += within(300, "the final check", move || check_store(&p, &a, &all));
    let saves = acked.values().filter(|s| **s).count();
    eprintln!(
        "{rounds} crash rounds in {:?}: {} acknowledged saves, {} acknowledged removals, {} \
         rounds killed before the child was ready, {checked} entry checks, store file {} bytes",
        started.elapsed(),
        saves,
        acked.len() - saves,
        killed_before_ready,
        std::fs::metadata(&path).map_or(0, |m| m.len())
    );
    assert!(saves > 0);
}
