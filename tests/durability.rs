//! What a crash (SIGKILL) can lose in each durability mode: nothing acknowledged in the
//! immediate mode; only saves younger than the bound in the relaxed mode.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Durability, Function, OnError, Store};
use common::TempDir;

const ROLE: &str = "CKPT_DUR_ROLE";
const PATH: &str = "CKPT_DUR_PATH";
const COUNT: u64 = 200;

fn deco(store: Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(Function::new("durability", "f"), AutoIdentifier, store)
        .with_on_error(OnError::Raise)
}

/// Child: saves COUNT values, says so, then (relaxed) waits out the bound and says so, then
/// waits to be killed.
#[test]
fn child_writer() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = std::env::var(PATH).unwrap();
    let durability = match role.as_str() {
        "relaxed" => Durability::Relaxed {
            within: Duration::from_millis(200),
        },
        _ => Durability::Immediate,
    };
    let store = Store::builder().durability(durability).open(&path).unwrap();
    let d = deco(store.clone());
    for i in 0..COUNT {
        d.call(i, |i| i * 3).unwrap();
    }
    println!("ACKED");
    if role == "relaxed" {
        std::thread::sleep(Duration::from_millis(600));
        println!("BOUND PASSED");
    }
    // Keep the store open until killed: nothing is flushed by a clean exit.
    std::thread::sleep(Duration::from_secs(120));
}

fn kill_after(role: &str, marker: &str) -> TempDir {
    let dir = TempDir::new(&format!("dur-{role}"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PATH, dir.store_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = false;
    for line in out.lines() {
        if line.unwrap().contains(marker) {
            seen = true;
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert!(seen, "the child never printed {marker}");
    dir
}

fn assert_all_present(dir: &TempDir) {
    let store = Store::open(dir.store_path()).expect("the store opens after a crash");
    let d = deco(store.clone());
    for i in 0..COUNT {
        let id = d.identify(&i).unwrap();
        assert_eq!(d.peek::<u64>(&id).unwrap(), Some(i * 3), "entry {i} lost");
    }
    assert_eq!(store.stats().unwrap().entries, COUNT);
}

#[test]
fn immediate_mode_loses_nothing_acknowledged() {
    let dir = kill_after("immediate", "ACKED");
    assert_all_present(&dir);
}

#[test]
fn relaxed_mode_is_durable_once_its_bound_has_passed() {
    let dir = kill_after("relaxed", "BOUND PASSED");
    assert_all_present(&dir);
}

#[test]
fn relaxed_saves_are_visible_at_once_and_durable_after_flush() {
    let dir = TempDir::new("dur-flush");
    let store = Store::builder()
        .durability(Durability::Relaxed {
            within: Duration::from_secs(3600),
        })
        .open(dir.store_path())
        .unwrap();
    let d = deco(store.clone());
    d.call(1u64, |x| x + 1).unwrap();
    assert_eq!(d.peek::<u64>(&d.identify(&1u64).unwrap()).unwrap(), Some(2));
    store.flush().unwrap();
    drop(d);
    drop(store);
    let reopened = Store::open(dir.store_path()).unwrap();
    assert_eq!(reopened.stats().unwrap().entries, 1);
}

#[test]
fn relaxed_durability_is_refused_in_multi_process_mode() {
    let dir = TempDir::new("dur-mp");
    let err = Store::builder()
        .durability(Durability::Relaxed {
            within: Duration::from_secs(1),
        })
        .concurrency(ckpt::ConcurrencyMode::MultiProcess)
        .open(dir.store_path())
        .unwrap_err();
    assert_eq!(*err.kind(), ckpt::OpenErrorKind::Unsupported);
    assert!(err.to_string().contains("relaxed durability"), "{err}");
}
