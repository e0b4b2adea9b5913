//! `Dedup::Lease`: a missing result computed once across machines sharing a remote. Machines
//! are processes here (this test binary re-run as children, each with its own local file, one
//! `file://` remote), or stores in one process sharing a `memory://` remote.
//!
//! The children are this binary re-run with `--exact <child test>` and an environment variable
//! saying what to do; without it the child tests do nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ckpt::{
    AutoIdentifier, DecoratorCheckpoint, Dedup, Function, OnError, Remote, RemoteMode, Store,
};
use common::TempDir;

const ROLE: &str = "CKPT_LEASE_ROLE";
const DIR: &str = "CKPT_LEASE_DIR";
const INDEX: &str = "CKPT_LEASE_INDEX";
const TTL: &str = "CKPT_LEASE_TTL_MS";
/// How long the slow function computes: longer than the four-process test's lease ttl, so that
/// only renewals keep the others waiting.
const COMPUTE: Duration = Duration::from_millis(2000);

fn file_url(folder: &Path) -> String {
    format!("file://{}", folder.display())
}

fn leased_store(path: &Path, remote: &Remote, ttl: Duration) -> Store {
    Store::builder()
        .remote(remote.clone(), RemoteMode::ReadWrite)
        .dedup(Dedup::Lease { ttl })
        .open(path)
        .unwrap()
}

fn slow(store: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(
        Function::new("remote_lease", "slow"),
        AutoIdentifier,
        store.clone(),
    )
    .with_on_error(OnError::Raise)
}

/// Records one computation: a file of its own in `dir/computed`, named by who computed.
fn record_computation(dir: &Path, who: &str) {
    let computed = dir.join("computed");
    std::fs::create_dir_all(&computed).unwrap();
    std::fs::write(computed.join(format!("{who}-{}", std::process::id())), b"").unwrap();
}

fn computations(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("computed"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The files in a `file://` remote's folder `ckpt-v1/{sub}` (object_store's staging files,
/// `#`-suffixed, left out).
fn files(remote: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(remote.join("ckpt-v1").join(sub))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.retain(|p| !p.file_name().unwrap().to_string_lossy().contains('#'));
    out
}

fn child(test: &str, role: &str, dir: &Path, index: u32, ttl: Duration) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(INDEX, index.to_string())
        .env(TTL, ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Child: opens its own store on the shared folder, waits for the go-file, then calls the slow
/// function (or, as `hold`, computes for a minute, to be killed).
#[test]
fn child_caller() {
    let role = std::env::var(ROLE).unwrap_or_default();
    if role != "call" && role != "hold" {
        return;
    }
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let me: u32 = std::env::var(INDEX).unwrap().parse().unwrap();
    let ttl = Duration::from_millis(std::env::var(TTL).unwrap().parse().unwrap());
    let remote = Remote::open(&file_url(&dir.join("remote"))).unwrap();
    let store = leased_store(&dir.join(format!("local-{me}.redb")), &remote, ttl);
    let d = slow(&store);
    std::fs::write(dir.join(format!("ready-{me}")), b"").unwrap();
    wait_for(&dir.join("go"), Duration::from_secs(60));
    let compute = if role == "hold" {
        Duration::from_secs(60)
    } else {
        COMPUTE
    };
    let v = d
        .call(21u64, |x| {
            record_computation(&dir, &format!("child{me}"));
            std::thread::sleep(compute);
            x * 2
        })
        .unwrap();
    let r = store.stats().unwrap().remote.unwrap();
    println!(
        "VALUE {v} taken {} waits {} served {}",
        r.leases_taken, r.lease_waits, r.lease_served
    );
    store.close().unwrap();
}

fn output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn four_processes_call_one_slow_function_at_once_and_it_is_computed_once() {
    let dir = TempDir::new("lease-four");
    let ttl = Duration::from_millis(900);
    let children: Vec<_> = (0..4)
        .map(|i| child("child_caller", "call", dir.path(), i, ttl))
        .collect();
    for i in 0..4 {
        wait_for(&dir.join(&format!("ready-{i}")), Duration::from_secs(60));
    }
    let started = Instant::now();
    std::fs::write(dir.join("go"), b"").unwrap();
    let outputs: Vec<String> = children.into_iter().map(output).collect();
    let took = started.elapsed();
    for out in &outputs {
        assert!(out.contains("VALUE 42"), "{out}");
    }
    assert_eq!(
        computations(dir.path()).len(),
        1,
        "computed once: {:?}\n{outputs:#?}",
        computations(dir.path())
    );
    let served = outputs
        .iter()
        .filter(|o| o.contains("waits 1 served 1"))
        .count();
    assert_eq!(served, 3, "three waited and were served: {outputs:#?}");
    eprintln!("4 processes, one computation of {COMPUTE:?}: {took:?}");
    // The lease is gone; the listing knows only the result.
    let remote_dir = dir.join("remote");
    assert!(files(&remote_dir, "l").is_empty(), "lease released");
    assert_eq!(files(&remote_dir, "r").len(), 1);
    let remote = Remote::open(&file_url(&remote_dir)).unwrap();
    let objects = remote.objects().unwrap();
    assert_eq!(objects.len(), 1);
    assert!(objects[0].is_sound());
}

#[test]
fn a_crashed_owners_lease_lapses_and_another_machine_takes_over() {
    let dir = TempDir::new("lease-crash");
    let ttl = Duration::from_millis(1500);
    let mut owner = child("child_caller", "hold", dir.path(), 0, ttl);
    wait_for(&dir.join("ready-0"), Duration::from_secs(60));
    std::fs::write(dir.join("go"), b"").unwrap();
    // The owner has taken the lease once it computes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while computations(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "the owner never computed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        files(&dir.join("remote"), "l").len(),
        1,
        "the owner's lease"
    );
    // Let it renew a few times, then crash it (SIGKILL: no destructor releases the lease).
    std::thread::sleep(ttl);
    owner.kill().unwrap();
    owner.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(files(&dir.join("remote"), "l").len(), 1, "left behind");

    let remote = Remote::open(&file_url(&dir.join("remote"))).unwrap();
    let store = leased_store(&dir.join("mine.redb"), &remote, ttl);
    let v = slow(&store)
        .call(21u64, |x| {
            record_computation(dir.path(), "taker");
            x * 2
        })
        .unwrap();
    let waited = killed.elapsed();
    assert_eq!(v, 42);
    // Lapsed by this machine's clock: unchanged for a ttl since it first saw it.
    assert!(waited >= ttl, "took over after {waited:?}, before the ttl");
    assert!(waited < ttl + Duration::from_secs(3), "waited {waited:?}");
    let r = store.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.lease_waits, r.leases_taken, r.leases_taken_over),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(
        computations(dir.path()).len(),
        2,
        "the owner once, the taker once"
    );
    assert!(files(&dir.join("remote"), "l").is_empty(), "released");

    // Its result is served: a third machine computes nothing and waits for nobody.
    store.flush().unwrap();
    let third = leased_store(&dir.join("third.redb"), &remote, ttl);
    let v = slow(&third)
        .call(21u64, |_| -> u64 { unreachable!("served from the remote") })
        .unwrap();
    assert_eq!(v, 42);
    let r = third.stats().unwrap().remote.unwrap();
    assert_eq!((r.hits, r.lease_waits, r.leases_taken), (1, 0, 0), "{r:?}");
}

#[test]
fn a_panicking_leader_releases_its_lease_and_a_waiter_computes_at_once() {
    let dir = TempDir::new("lease-panic");
    let team = Remote::open("memory://").unwrap();
    // Long enough that a waiter taking over a lapsed lease would fail the timing below.
    let ttl = Duration::from_secs(20);
    let a = leased_store(&dir.join("a.redb"), &team, ttl);
    let b = leased_store(&dir.join("b.redb"), &team, ttl);
    let runs_b = Arc::new(AtomicUsize::new(0));
    let leading = Arc::new(Barrier::new(2));

    let leader = {
        let (a, b, leading) = (a.clone(), b.clone(), Arc::clone(&leading));
        std::thread::spawn(move || {
            slow(&a).call(5u64, |_| -> u64 {
                leading.wait();
                // Until the other store has found the lease and waits for it.
                let deadline = Instant::now() + Duration::from_secs(20);
                while b.stats().unwrap().remote.unwrap().lease_waits == 0 {
                    assert!(Instant::now() < deadline, "b never waited");
                    std::thread::sleep(Duration::from_millis(5));
                }
                panic!("the leader's computation fails");
            })
        })
    };
    leading.wait();
    let waiter = {
        let (b, runs_b) = (b.clone(), Arc::clone(&runs_b));
        std::thread::spawn(move || {
            slow(&b)
                .call(5u64, |x| {
                    runs_b.fetch_add(1, Ordering::SeqCst);
                    x + 1
                })
                .unwrap()
        })
    };
    assert!(leader.join().is_err(), "the leader panicked");
    let panicked = Instant::now();
    assert_eq!(waiter.join().unwrap(), 6);
    let after = panicked.elapsed();
    assert_eq!(runs_b.load(Ordering::SeqCst), 1, "the waiter computed");
    assert!(
        after < Duration::from_secs(5),
        "the waiter computed {after:?} after the panic (ttl {ttl:?}): the lease was released"
    );
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.lease_waits, r.leases_taken, r.leases_taken_over),
        (1, 1, 0),
        "{r:?}"
    );
    let r = a.stats().unwrap().remote.unwrap();
    assert_eq!(r.leases_taken, 1, "{r:?}");
}

#[test]
fn read_only_stores_read_only_files_and_stores_without_dedup_take_no_lease() {
    let dir = TempDir::new("lease-none");
    let folder = dir.join("remote");
    let remote = Remote::open(&file_url(&folder)).unwrap();
    let reader = Store::builder()
        .remote(remote.clone(), RemoteMode::ReadOnly)
        .dedup(Dedup::Lease {
            ttl: Duration::from_secs(5),
        })
        .open(dir.join("reader.redb"))
        .unwrap();
    let plain = Store::builder()
        .remote(remote.clone(), RemoteMode::ReadWrite)
        .open(dir.join("plain.redb"))
        .unwrap();
    // A file opened read-only, with a read-write remote: it can publish nothing it computes,
    // so a lease it held would only make other machines wait for nothing.
    Store::open(dir.join("ro.redb")).unwrap().close().unwrap();
    let read_only_file = Store::builder()
        .read_only()
        .remote(remote.clone(), RemoteMode::ReadWrite)
        .dedup(Dedup::Lease {
            ttl: Duration::from_secs(5),
        })
        .open(dir.join("ro.redb"))
        .unwrap();
    for (i, store) in [&reader, &plain, &read_only_file].into_iter().enumerate() {
        // (The read-only file's save fails: ignored here, as a warning would be.)
        let d = slow(store).with_on_error(OnError::Ignore);
        assert_eq!(d.call(i as u64, |x| x + 1).unwrap(), i as u64 + 1);
        store.flush().unwrap_or(());
        let r = store.stats().unwrap().remote.unwrap();
        assert_eq!((r.leases_taken, r.lease_waits), (0, 0), "{r:?}");
    }
    let got = futures_executor::block_on(
        slow(&read_only_file)
            .with_on_error(OnError::Ignore)
            .call_async(10u64, |x| async move { x + 1 }),
    );
    assert_eq!(got.unwrap(), 11);
    let r = read_only_file.stats().unwrap().remote.unwrap();
    assert_eq!((r.leases_taken, r.lease_waits), (0, 0), "async: {r:?}");
    assert!(!folder.join("ckpt-v1").join("l").exists());
    assert_eq!(
        files(&folder, "r").len(),
        1,
        "only the read-write store published"
    );
}

#[test]
fn a_remote_that_fails_while_leasing_degrades_to_computing() {
    let dir = TempDir::new("lease-dead");
    // Nothing listens there: the lease request fails fast, the call computes and warns.
    let dead = Remote::builder("s3://nowhere/team")
        .endpoint("http://127.0.0.1:9")
        .option("aws_access_key_id", "x")
        .option("aws_secret_access_key", "x")
        .option("aws_region", "us-east-1")
        .timeout(Duration::from_millis(500))
        .retries(0)
        .check(ckpt::remote::RemoteCheck::Skip)
        .open()
        .unwrap();
    let store = leased_store(&dir.join("a.redb"), &dead, Duration::from_secs(5));
    let d = slow(&store).with_on_error(OnError::Ignore);
    let started = Instant::now();
    assert_eq!(d.call(1u64, |x| x + 1).unwrap(), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = store.stats().unwrap().remote.unwrap();
    assert_eq!(r.leases_taken, 0, "{r:?}");
    assert!(r.errors >= 1, "{r:?}");
}

#[test]
fn the_owner_publishes_before_it_releases_its_lease_whatever_the_publish_mode() {
    let dir = TempDir::new("lease-publish");
    let folder = dir.join("remote");
    let team = Remote::open(&file_url(&folder)).unwrap();
    // Background publishing (the default): a leased result still goes up before the call
    // returns, or waiters would find the lease gone and no result, and compute again. Large
    // values, so that a background upload would still be running when the call returned.
    let a = leased_store(&dir.join("a.redb"), &team, Duration::from_secs(5));
    let big = DecoratorCheckpoint::new(
        Function::new("remote_lease", "big"),
        AutoIdentifier,
        a.clone(),
    )
    .with_on_error(OnError::Raise);
    for x in 0..2u8 {
        let v = big.call(x, |x| vec![x; 24 << 20]).unwrap();
        assert_eq!(v.len(), 24 << 20);
        let r = a.stats().unwrap().remote.unwrap();
        let n = u64::from(x) + 1;
        assert_eq!((r.publishes, r.leases_taken), (n, n), "{r:?}");
        assert!(files(&folder, "l").is_empty(), "released");
    }
    assert_eq!(team.objects().unwrap().len(), 2);
}

#[test]
fn an_async_call_waits_for_another_machines_lease_without_holding_its_executor() {
    let dir = TempDir::new("lease-async");
    let folder = dir.join("remote");
    let team = Remote::open(&file_url(&folder)).unwrap();
    // Long enough that no waiter takes over: b is served by a's result, or computes.
    let ttl = Duration::from_secs(20);
    let a = leased_store(&dir.join("a.redb"), &team, ttl);
    let b = leased_store(&dir.join("b.redb"), &team, ttl);
    let (computing, started) = std::sync::mpsc::channel();
    let leader = {
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            runtime.block_on(slow(&a).call_async(5u64, |x| async move {
                computing.send(()).unwrap();
                // Until the other store waits for this lease, then a while longer.
                let deadline = Instant::now() + Duration::from_secs(20);
                while b.stats().unwrap().remote.unwrap().lease_waits == 0 {
                    assert!(Instant::now() < deadline, "b never waited");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
                x + 1
            }))
        })
    };
    started.recv().unwrap();
    let runs_b = AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (got, worst) = runtime.block_on(common::beside_ticker(async {
        slow(&b)
            .call_async(5u64, |x| {
                runs_b.fetch_add(1, Ordering::SeqCst);
                async move { x + 100 }
            })
            .await
            .unwrap()
    }));
    assert_eq!(leader.join().unwrap().unwrap(), 6);
    assert_eq!(got, 6, "served by the lease holder's result");
    assert_eq!(
        runs_b.load(Ordering::SeqCst),
        0,
        "the waiter computed nothing"
    );
    eprintln!("worst ticker lag {worst:?} while the async call waited for a lease");
    // Waiting on the executor's thread would hold the ticker back for the whole wait (400 ms+).
    assert!(
        worst < Duration::from_millis(150),
        "a ticker task was {worst:?} late while an async call waited for a lease"
    );
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.lease_waits, r.lease_served, r.leases_taken),
        (1, 1, 0),
        "{r:?}"
    );
    let r = a.stats().unwrap().remote.unwrap();
    assert_eq!((r.leases_taken, r.publishes), (1, 1), "{r:?}");
    // Released (from the remote's runtime) once the call returned.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files(&folder, "l").is_empty() {
        assert!(Instant::now() < deadline, "the lease was never released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_cancelled_async_leader_holds_its_lease_until_its_result_is_published() {
    use std::future::Future;
    use std::sync::atomic::AtomicBool;
    use std::task::Poll;

    let dir = TempDir::new("lease-async-cancel");
    let folder = dir.join("remote");
    let team = Remote::open(&file_url(&folder)).unwrap();
    let a = leased_store(&dir.join("a.redb"), &team, Duration::from_secs(20));
    let d = slow(&a);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let returned = Arc::new(AtomicBool::new(false));
    let mut call = Box::pin(d.call_async(9u64, {
        let returned = returned.clone();
        move |x| async move {
            returned.store(true, Ordering::SeqCst);
            x * 3
        }
    }));
    // Polled until the function has returned: the call then awaits its save (the commit, then
    // the upload, made while the lease is held).
    let finished = runtime.block_on(std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if returned.load(Ordering::SeqCst) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }));
    assert!(finished.is_none(), "the save completed within the poll");
    assert_eq!(files(&folder, "l").len(), 1, "the lease is held");
    // Cancelled (a timeout, a dropped request) while its save is under way.
    drop(call);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files(&folder, "l").is_empty() {
        assert!(Instant::now() < deadline, "the lease was never released");
        std::thread::sleep(Duration::from_micros(200));
    }
    // Released: by then the result is in the remote, for a machine that waited on the lease.
    assert_eq!(
        files(&folder, "r").len(),
        1,
        "the lease was released before the result was published"
    );
    // The save is counted once it completes, as if it had been awaited.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stats().saves != 1 {
        assert!(
            Instant::now() < deadline,
            "the save was not counted: {:?}",
            d.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((d.stats().misses, d.stats().saves), (1, 1));
}

#[test]
fn an_async_call_cancelled_while_it_waits_for_a_lease_stops_polling() {
    let dir = TempDir::new("lease-async-abandoned");
    let folder = dir.join("remote");
    let team = Remote::open(&file_url(&folder)).unwrap();
    let ttl = Duration::from_secs(20);
    let a = leased_store(&dir.join("a.redb"), &team, ttl);
    let b = leased_store(&dir.join("b.redb"), &team, ttl);
    let (computing, started) = std::sync::mpsc::channel();
    let leader = {
        let a = a.clone();
        std::thread::spawn(move || {
            slow(&a).call(3u64, |x| {
                computing.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(3));
                x + 1
            })
        })
    };
    started.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // A request timing out while it waits for a's lease.
    let timed_out = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(150),
            slow(&b).call_async(3u64, |x| async move { x + 100 }),
        )
        .await
    });
    assert!(timed_out.is_err(), "the call waited for the lease");
    let fetches = || b.stats().unwrap().remote.unwrap().fetches;
    std::thread::sleep(Duration::from_millis(500));
    let settled = fetches();
    // Still waiting, b would poll again after 400 ms and 800 ms of back-off.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        fetches(),
        settled,
        "b kept polling for a lease nobody waits for"
    );
    assert_eq!(leader.join().unwrap().unwrap(), 4);
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.lease_waits, r.leases_taken, r.lease_served),
        (1, 0, 0),
        "{r:?}"
    );
}

/// `a` computes `slow(5)` under its lease, and holds it until `b` waits for it, then `hold`
/// longer; `b` calls meanwhile. Both get the result; returns how often `b` computed it.
fn a_leads_while_b_waits(a: &Store, b: &Store, hold: Duration) -> usize {
    let leading = Arc::new(Barrier::new(2));
    let leader = {
        let (a, b, leading) = (a.clone(), b.clone(), Arc::clone(&leading));
        std::thread::spawn(move || {
            slow(&a)
                .call(5u64, |x| {
                    leading.wait();
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while b.stats().unwrap().remote.unwrap().lease_waits == 0 {
                        assert!(Instant::now() < deadline, "b never waited");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::thread::sleep(hold);
                    x + 1
                })
                .unwrap()
        })
    };
    leading.wait();
    let runs_b = AtomicUsize::new(0);
    let got = slow(b)
        .call(5u64, |x| {
            runs_b.fetch_add(1, Ordering::SeqCst);
            x + 1
        })
        .unwrap();
    assert_eq!((leader.join().unwrap(), got), (6, 6));
    runs_b.load(Ordering::SeqCst)
}

#[test]
fn a_damaged_object_found_while_waiting_for_a_lease_is_counted_once() {
    let dir = TempDir::new("lease-damaged");
    let folder = dir.join("remote");
    let team = Remote::open(&file_url(&folder)).unwrap();
    // A store without leases publishes the result, and the object is damaged in the folder.
    {
        let c = Store::builder()
            .remote(team.clone(), RemoteMode::ReadWrite)
            .open(dir.join("c.redb"))
            .unwrap();
        assert_eq!(slow(&c).call(5u64, |x| x + 1).unwrap(), 6);
    }
    let objects = files(&folder, "r");
    assert_eq!(objects.len(), 1);
    let mut bytes = std::fs::read(&objects[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&objects[0], bytes).unwrap();

    // a finds it damaged and computes under its lease; b finds it damaged too, then waits for
    // a's lease, polling the same damaged object until a replaces it.
    let ttl = Duration::from_secs(20);
    let a = leased_store(&dir.join("a.redb"), &team, ttl);
    let b = leased_store(&dir.join("b.redb"), &team, ttl);
    // Long enough for several of b's polls (50 ms, doubling).
    let runs_b = a_leads_while_b_waits(&a, &b, Duration::from_millis(1600));
    assert_eq!(runs_b, 0, "b was served a's result");
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.lease_waits, r.lease_served, r.corrupt, r.misses),
        (1, 1, 1, 1),
        "one damaged object, found by one local miss: {r:?}"
    );
    let r = a.stats().unwrap().remote.unwrap();
    assert_eq!((r.corrupt, r.replaced), (1, 1), "{r:?}");
}

#[test]
fn a_lease_that_never_lapses_is_waited_for_without_overflowing() {
    let dir = TempDir::new("lease-forever");
    let team = Remote::open("memory://").unwrap();
    // "Never lapses": capped, not overflowed.
    let a = leased_store(&dir.join("a.redb"), &team, Duration::MAX);
    let b = leased_store(&dir.join("b.redb"), &team, Duration::MAX);
    let runs_b = a_leads_while_b_waits(&a, &b, Duration::ZERO);
    assert_eq!(runs_b, 0, "b was served a's result");
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!((r.lease_waits, r.lease_served), (1, 1), "{r:?}");
}

#[test]
fn an_object_too_old_for_the_stores_is_replaced_by_the_leased_result_and_waiters_are_served() {
    let dir = TempDir::new("lease-too-old");
    // A folder: a replacement there is a delete, then a create.
    let team = Remote::open(&file_url(&dir.join("remote"))).unwrap();
    let max_age = Duration::from_secs(2);
    // An old result of the id, published long enough ago to be too old for the stores below.
    {
        let c = Store::builder()
            .remote(team.clone(), RemoteMode::ReadWrite)
            .open(dir.join("c.redb"))
            .unwrap();
        assert_eq!(slow(&c).call(5u64, |x| x + 1).unwrap(), 6);
    }
    std::thread::sleep(max_age + Duration::from_millis(500));
    let aged = |name: &str| {
        Store::builder()
            .remote(team.clone(), RemoteMode::ReadWrite)
            .dedup(Dedup::Lease {
                ttl: Duration::from_secs(20),
            })
            .limits(ckpt::Limits::new().max_age(max_age))
            .open(dir.join(name))
            .unwrap()
    };
    let (a, b) = (aged("a.redb"), aged("b.redb"));
    let runs_b = a_leads_while_b_waits(&a, &b, Duration::ZERO);
    assert_eq!(
        runs_b, 0,
        "b was served a's result, not left to compute after a"
    );
    let r = a.stats().unwrap().remote.unwrap();
    assert_eq!((r.publishes, r.replaced), (1, 1), "{r:?}");
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!((r.lease_waits, r.lease_served), (1, 1), "{r:?}");
    // b was served a's object: what b publishes next of the id finds it there, and does not
    // replace it (on a folder, delete it first) as if the old one were still there.
    slow(&b).rerun(5u64, |x| x + 1).unwrap();
    b.flush().unwrap();
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!((r.already_present, r.replaced), (1, 0), "{r:?}");
}
