//! Ids and stored results across processes.
//!
//! A parent test re-runs this test executable with `--exact <child test>` and an environment
//! variable that switches the child test on; without the variable the child tests do nothing.
//! Each process seeds its `HashMap`s with its own random state, and the child builds its maps and
//! sets in the opposite insertion order, so equal ids here mean the ids depend on neither.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;

use ckpt::{AutoIdentifier, CheckpointId, DecoratorCheckpoint, Function, OnError, Store};
use common::TempDir;
use serde::Serialize;

const IDS_VAR: &str = "CKPT_TEST_CHILD_PRINT_IDS";
const STORE_VAR: &str = "CKPT_TEST_CHILD_STORE";
const ID_LINE: &str = "ckpt-test-id ";

#[derive(Serialize)]
struct Config {
    name: String,
    weights: Vec<f64>,
    tags: HashSet<String>,
    limits: HashMap<String, (u32, Option<i64>)>,
}

#[derive(Serialize)]
enum Job {
    Idle,
    Run { config: Config, retries: u8 },
}

/// The calls both processes identify: `(label, id)`. `reversed` flips every insertion order.
fn ids(reversed: bool) -> Vec<(&'static str, CheckpointId)> {
    let f = Function::new("cross_process", "f");
    let versioned = Function::new("cross_process", "f")
        .with_code_hash(ckpt::code_hash("{ x * 2 }"))
        .with_version("7");
    let ordered = |n: usize| -> Vec<usize> {
        if reversed {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        }
    };
    let map: HashMap<String, u64> = ordered(64)
        .into_iter()
        .map(|i| (format!("key-{i}"), i as u64 * 31))
        .collect();
    let set: HashSet<i32> = ordered(100).into_iter().map(|i| i as i32 - 50).collect();
    let nested: HashMap<u8, HashSet<String>> = ordered(8)
        .into_iter()
        .map(|i| {
            let inner = ordered(i + 1)
                .into_iter()
                .map(|j| format!("{i}.{j}"))
                .collect();
            (i as u8, inner)
        })
        .collect();
    let config = || Config {
        name: "cfg".into(),
        weights: vec![0.5, -0.0, f64::NAN, 1e300],
        tags: ordered(5).into_iter().map(|i| format!("t{i}")).collect(),
        limits: ordered(4)
            .into_iter()
            .map(|i| {
                (
                    format!("l{i}"),
                    (i as u32, (i % 2 == 0).then_some(-(i as i64))),
                )
            })
            .collect(),
    };
    let btree: BTreeMap<String, Vec<u8>> = ordered(10)
        .into_iter()
        .map(|i| (i.to_string(), vec![i as u8; i]))
        .collect();

    let id = |f: &Function, args: &dyn erased::Args| args.id(f);
    vec![
        ("u64", id(&f, &42u64)),
        ("str", id(&f, &"hello, world")),
        ("tuple", id(&f, &(1u8, -2i64, "three", 4.5f32, 'x', true))),
        ("vec", id(&f, &vec![3u32, 1, 2])),
        ("option", id(&f, &(Some(1u16), None::<String>))),
        ("hashmap", id(&f, &map)),
        ("hashset", id(&f, &set)),
        ("nested", id(&f, &nested)),
        ("btreemap", id(&f, &btree)),
        (
            "btreeset",
            id(&f, &set.iter().copied().collect::<BTreeSet<_>>()),
        ),
        ("struct", id(&f, &config())),
        ("enum-unit", id(&f, &Job::Idle)),
        (
            "enum-struct",
            id(
                &f,
                &Job::Run {
                    config: config(),
                    retries: 3,
                },
            ),
        ),
        ("versioned", id(&versioned, &(&map, &set))),
    ]
}

/// Lets `ids` put arguments of different types in one table.
mod erased {
    use ckpt::{AutoIdentifier, CheckpointId, Function};
    use serde::Serialize;

    pub trait Args {
        fn id(&self, f: &Function) -> CheckpointId;
    }

    impl<T: Serialize + ?Sized> Args for T {
        fn id(&self, f: &Function) -> CheckpointId {
            AutoIdentifier.id_of(f, self).unwrap()
        }
    }
}

/// Runs the child test `name` of this executable with `envs`; returns its standard output.
fn run_child(name: &str, envs: &[(&str, &std::ffi::OsStr)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test process");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "child {name} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child {name} did not run exactly its test:\n{stdout}"
    );
    stdout
}

fn parse_ids(stdout: &str) -> Vec<(String, CheckpointId)> {
    stdout
        .lines()
        // The first line may follow libtest's own "test name ... " on the same line.
        .filter_map(|l| l.find(ID_LINE).map(|at| &l[at + ID_LINE.len()..]))
        .map(|l| {
            let (label, hex) = l.split_once(' ').expect("label and id");
            (label.to_string(), hex.parse().expect("an id"))
        })
        .collect()
}

#[test]
fn child_print_ids() {
    if std::env::var_os(IDS_VAR).is_none() {
        return;
    }
    for (label, id) in ids(true) {
        println!("{ID_LINE}{label} {id}");
    }
}

#[test]
fn the_same_call_has_the_same_id_in_another_process() {
    let stdout = run_child("child_print_ids", &[(IDS_VAR, "1".as_ref())]);
    let theirs = parse_ids(&stdout);
    let ours = ids(false);
    assert_eq!(theirs.len(), ours.len(), "child output:\n{stdout}");
    for ((label, mine), (their_label, theirs)) in ours.iter().zip(&theirs) {
        assert_eq!(label, their_label);
        assert_eq!(mine, theirs, "{label}: the id differs across processes");
    }
    // The table is not degenerate: every call has its own id, except that a set is a set
    // whichever type holds it.
    let distinct: BTreeSet<_> = ours.iter().map(|(_, id)| *id).collect();
    assert_eq!(distinct.len(), ours.len() - 1);
    let by_label = |l: &str| ours.iter().find(|(x, _)| *x == l).unwrap().1;
    assert_eq!(by_label("hashset"), by_label("btreeset"));
}

fn blend_deco(store: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(
        Function::new("cross_process", "blend").with_version("1"),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Raise)
}

fn blend_args(reversed: bool) -> (String, HashMap<String, f64>) {
    let mut pairs: Vec<(String, f64)> =
        (0..20).map(|i| (format!("w{i}"), i as f64 / 4.0)).collect();
    if reversed {
        pairs.reverse();
    }
    ("mix".to_string(), pairs.into_iter().collect())
}

fn blend_body((name, weights): (String, HashMap<String, f64>)) -> (String, f64) {
    (name, weights.values().sum())
}

#[test]
fn child_save_to_store() {
    let Some(path) = std::env::var_os(STORE_VAR) else {
        return;
    };
    let store = Store::open(&path).unwrap();
    let d = blend_deco(&store);
    let args = blend_args(true);
    let id = d.identify(&args).unwrap();
    let out = d.call(args, blend_body).unwrap();
    assert_eq!(d.stats().saves, 1, "the child computes and saves");
    println!("{ID_LINE}blend {id}");
    println!("child result {out:?}");
    store.close().unwrap();
}

#[test]
fn a_result_saved_by_another_process_is_a_hit() {
    let dir = TempDir::new("xproc");
    let path = dir.store_path();
    let stdout = run_child("child_save_to_store", &[(STORE_VAR, path.as_os_str())]);
    let their_id = parse_ids(&stdout)
        .into_iter()
        .find(|(l, _)| l == "blend")
        .map(|(_, id)| id)
        .expect("the child prints its id");

    let store = Store::open(&path).expect("the child released the file");
    let d = blend_deco(&store);
    let args = blend_args(false);
    assert_eq!(d.identify(&args).unwrap(), their_id);
    let out = d
        .call(args, |_| -> (String, f64) {
            panic!("saved by the child: a hit")
        })
        .unwrap();
    assert_eq!(
        out,
        ("mix".to_string(), (0..20).map(|i| i as f64 / 4.0).sum())
    );
    assert_eq!((d.stats().hits, d.stats().misses), (1, 0));
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, 1);
    // The child's counts were flushed to the file when it closed the store.
    assert_eq!(
        (stats.calls.misses, stats.calls.saves, stats.calls.hits),
        (1, 1, 1)
    );
}

const DEFAULT_DIR_VAR: &str = "CKPT_TEST_CHILD_DEFAULT_STORE";

mod memo {
    ckpt::checkpoint! {
        /// Memoized into the default store (`CKPT_DIR`), which lives in a static.
        pub fn square(x: u64) -> u64 {
            x * x
        }
    }
}

#[test]
fn child_use_the_default_store_and_exit() {
    if std::env::var_os(DEFAULT_DIR_VAR).is_none() {
        return;
    }
    assert_eq!(memo::square(12), 144); // a miss, saved
    assert_eq!(memo::square(12), 144); // a hit, buffered
    // No close, no drop: the process just exits, as a program using `checkpoint!` does.
}

/// A store in a static is never dropped; at exit it is still flushed and closed cleanly, so the
/// next open needs no recovery (a read-only open, such as `ckpt stats`, would refuse it) and the
/// buffered hit is in the file.
#[test]
fn the_default_store_is_closed_cleanly_at_exit() {
    let dir = TempDir::new("xproc-exit");
    run_child(
        "child_use_the_default_store_and_exit",
        &[
            (DEFAULT_DIR_VAR, "1".as_ref()),
            ("CKPT_DIR", dir.path().as_os_str()),
        ],
    );
    let path = dir.path().join("checkpoints.redb");
    let store = Store::builder()
        .read_only()
        .open(&path)
        .expect("closed cleanly: a read-only open needs no recovery");
    let stats = store.stats().unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(
        (stats.calls.misses, stats.calls.hits),
        (1, 1),
        "the hit was flushed"
    );
}
