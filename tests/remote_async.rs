//! Async calls with a remote tier (features `remote`): the remote lookup of a miss is awaited,
//! off the executor's thread, so a slow or hanging remote never stalls the other tasks of a
//! current-thread runtime.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ckpt::remote::RemoteCheck;
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, PublishMode, Remote, RemoteMode, Store};
use common::TempDir;

/// An "S3 server" that accepts connections and never answers: every request hangs until the
/// remote's timeout.
fn hanging_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let accept = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(64) {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    (endpoint, accept)
}

fn hanging_remote(endpoint: &str, timeout: Duration) -> Remote {
    Remote::builder("s3://bucket/team")
        .endpoint(endpoint)
        .option("aws_access_key_id", "x")
        .option("aws_secret_access_key", "x")
        .option("aws_region", "us-east-1")
        .timeout(timeout)
        .retries(0)
        // Never paused: every miss asks, and waits out the timeout.
        .breaker(1_000, Duration::from_millis(1))
        .check(RemoteCheck::Skip)
        .open()
        .unwrap()
}

/// Runs `calls` async misses against a remote that hangs for `timeout` each, on a
/// current-thread runtime beside a 1 ms ticker task; returns the ticker's worst lateness.
fn worst_tick_lag_during_misses(
    dir: &TempDir,
    timeout: Duration,
    calls: u64,
    publish: PublishMode,
) -> Duration {
    let (endpoint, _server) = hanging_server();
    let store = Store::builder()
        .remote(hanging_remote(&endpoint, timeout), RemoteMode::ReadWrite)
        .publish(publish)
        .open(dir.join("a.redb"))
        .unwrap();
    let deco = DecoratorCheckpoint::new(
        Function::new("remote_async", "double"),
        AutoIdentifier,
        store.clone(),
    );
    let computed = AtomicUsize::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ((), worst) = runtime.block_on(common::beside_ticker(async {
        for x in 0..calls {
            let got = deco
                .call_async(x, |x| {
                    computed.fetch_add(1, Ordering::SeqCst);
                    async move { x * 2 }
                })
                .await
                .unwrap();
            assert_eq!(got, x * 2);
        }
    }));
    assert_eq!(
        computed.load(Ordering::SeqCst),
        calls as usize,
        "each miss computed"
    );
    let remote = store.stats().unwrap().remote.unwrap();
    assert!(remote.errors >= calls, "each lookup timed out: {remote:?}");
    if publish == PublishMode::Sync {
        assert_eq!(
            remote.publish_failures, calls,
            "each publish timed out: {remote:?}"
        );
    }
    worst
}

#[test]
fn a_hanging_remote_never_stalls_the_executor_of_an_async_call() {
    let dir = TempDir::new("remote-async-hang");
    let timeout = Duration::from_millis(400);
    let worst = worst_tick_lag_during_misses(&dir, timeout, 3, PublishMode::Background);
    eprintln!("worst ticker lag {worst:?} while the remote hung for {timeout:?} three times");
    // Blocking on the lookup would hold the ticker back a whole timeout each time.
    assert!(
        worst < Duration::from_millis(150),
        "a ticker task was {worst:?} late while the remote hung for {timeout:?}"
    );
}

/// `remote_async::{name}` of `arg` through `store`, as an async call awaited here; each run of
/// its body is counted in `runs`.
fn async_call<A, V>(
    store: &Store,
    name: &'static str,
    arg: A,
    runs: &AtomicUsize,
    f: fn(A) -> V,
) -> V
where
    A: serde::Serialize,
    V: serde::Serialize + serde::de::DeserializeOwned,
{
    let deco = DecoratorCheckpoint::new(
        Function::new("remote_async", name),
        AutoIdentifier,
        store.clone(),
    );
    futures_executor::block_on(deco.call_async(arg, |arg| {
        runs.fetch_add(1, Ordering::SeqCst);
        async move { f(arg) }
    }))
    .unwrap()
}

/// A store in `dir` named `name`, reading and writing through `team`.
fn read_write(team: &Remote, dir: &TempDir, name: &str) -> Store {
    Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .open(dir.join(name))
        .unwrap()
}

#[test]
fn an_async_call_is_served_by_the_remote_and_backfills_the_file() {
    let dir = TempDir::new("remote-async-hit");
    let team = Remote::open("memory://").unwrap();
    let open = |name: &str| read_write(&team, &dir, name);
    let runs = AtomicUsize::new(0);
    let call = |store: &Store, x: u64| async_call(store, "square", x, &runs, |x| x * x);
    let a = open("a.redb");
    for x in 0..4 {
        assert_eq!(call(&a, x), x * x);
    }
    a.flush().unwrap();
    let b = open("b.redb");
    for x in 0..4 {
        assert_eq!(call(&b, x), x * x);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "the second store computed nothing"
    );
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!((remote.hits, remote.backfills, remote.fetches), (4, 4, 4));
    // Backfilled: the next calls are local hits, with no request.
    for x in 0..4 {
        assert_eq!(call(&b, x), x * x);
    }
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 4);
    assert_eq!(b.stats().unwrap().calls.hits, 8);
}

/// An async call served a large object does not await its backfill's save: the store's
/// background thread saves it, and the calls that follow meanwhile are served from memory.
#[test]
fn an_async_call_served_a_large_object_does_not_await_its_save() {
    let dir = TempDir::new("remote-async-later");
    let team = Remote::open("memory://").unwrap();
    let open = |name: &str| read_write(&team, &dir, name);
    let runs = AtomicUsize::new(0);
    let call = |store: &Store, seed: u8| {
        async_call(store, "half_mib", seed, &runs, |seed| {
            (0..512 * 1024)
                .map(|i| (i as u8) ^ seed)
                .collect::<Vec<u8>>()
        })
    };
    let a = open("a.redb");
    let want = call(&a, 5);
    a.flush().unwrap();
    let b = open("b.redb");
    ckpt::testing::hold_backfills(&b, true);
    for _ in 0..3 {
        assert!(call(&b, 5) == want);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the second store computed nothing"
    );
    let remote = b.stats().unwrap().remote.unwrap();
    assert_eq!((remote.fetches, remote.backfills), (1, 0));
    assert_eq!(
        b.stats().unwrap().entries,
        0,
        "saved before the call returned"
    );
    b.flush().unwrap();
    let (remote, entries) = (
        b.stats().unwrap().remote.unwrap(),
        b.stats().unwrap().entries,
    );
    assert_eq!((remote.backfills, entries), (1, 1));
    assert!(call(&b, 5) == want);
    assert_eq!(b.stats().unwrap().remote.unwrap().fetches, 1);
}

#[test]
fn a_synchronous_publish_is_awaited_off_the_executor_thread() {
    let dir = TempDir::new("remote-async-sync-publish");
    let timeout = Duration::from_millis(400);
    let worst = worst_tick_lag_during_misses(&dir, timeout, 3, PublishMode::Sync);
    eprintln!(
        "worst ticker lag {worst:?} while the remote hung for {timeout:?} on each lookup and each publish"
    );
    // Uploading on the executor's thread would hold the ticker back a whole timeout each time.
    assert!(
        worst < Duration::from_millis(150),
        "a ticker task was {worst:?} late while synchronous publishes hung for {timeout:?}"
    );
}

#[test]
fn an_async_call_returns_after_its_synchronous_publish() {
    let dir = TempDir::new("remote-async-sync-published");
    let team = Remote::open("memory://").unwrap();
    let a = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .publish(PublishMode::Sync)
        .open(dir.join("a.redb"))
        .unwrap();
    let deco = DecoratorCheckpoint::new(
        Function::new("remote_async", "cube"),
        AutoIdentifier,
        a.clone(),
    );
    futures_executor::block_on(async {
        for x in 0..3u64 {
            assert_eq!(
                deco.call_async(x, |x| async move { x * x * x })
                    .await
                    .unwrap(),
                x * x * x
            );
        }
    });
    // No flush: each call returned after its object was in the remote.
    let remote = a.stats().unwrap().remote.unwrap();
    assert_eq!(
        (remote.publishes, remote.publish_failures),
        (3, 0),
        "{remote:?}"
    );
    let b = Store::builder()
        .remote(team, RemoteMode::ReadOnly)
        .open(dir.join("b.redb"))
        .unwrap();
    let reader = DecoratorCheckpoint::new(
        Function::new("remote_async", "cube"),
        AutoIdentifier,
        b.clone(),
    );
    for x in 0..3u64 {
        assert_eq!(
            reader
                .call(x, |_| -> u64 { unreachable!("published") })
                .unwrap(),
            x * x * x
        );
    }
    assert_eq!(b.stats().unwrap().remote.unwrap().hits, 3);
}

/// The body of a call the remote must answer.
async fn served_by_the_remote() -> u64 {
    unreachable!("served by the remote")
}

#[test]
fn a_read_only_file_is_served_by_the_remote_without_holding_the_executor() {
    let dir = TempDir::new("remote-async-read-only-file");
    let team = Remote::open("memory://").unwrap();
    // A writer publishes three results; the reader's file exists (empty) and is opened
    // read-only: it can keep nothing the remote serves.
    let a = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .publish(PublishMode::Sync)
        .open(dir.join("a.redb"))
        .unwrap();
    let square = |store: &Store| {
        DecoratorCheckpoint::new(
            Function::new("remote_async", "ro"),
            AutoIdentifier,
            store.clone(),
        )
    };
    for x in 0..3u64 {
        assert_eq!(square(&a).call(x, |x| x * x).unwrap(), x * x);
    }
    Store::open(dir.join("b.redb")).unwrap().close().unwrap();
    let b = Store::builder()
        .read_only()
        .remote(team, RemoteMode::ReadOnly)
        .open(dir.join("b.redb"))
        .unwrap();
    let reader = square(&b);
    futures_executor::block_on(async {
        for _ in 0..2 {
            for x in 0..3u64 {
                let got = reader
                    .call_async(x, |_| served_by_the_remote())
                    .await
                    .unwrap();
                assert_eq!(got, x * x);
            }
        }
    });
    let r = b.stats().unwrap().remote.unwrap();
    // Parked, not kept: the second round is read from memory, with no request.
    assert_eq!((r.hits, r.fetches, r.backfills), (3, 3, 0), "{r:?}");
    assert_eq!(reader.stats().hits, 6);
}

#[test]
fn a_hanging_remote_never_stalls_an_async_call_on_a_read_only_file() {
    let dir = TempDir::new("remote-async-read-only-hang");
    let (endpoint, _server) = hanging_server();
    Store::open(dir.join("b.redb")).unwrap().close().unwrap();
    let b = Store::builder()
        .read_only()
        .remote(
            hanging_remote(&endpoint, Duration::from_millis(400)),
            RemoteMode::ReadOnly,
        )
        .open(dir.join("b.redb"))
        .unwrap();
    let deco = DecoratorCheckpoint::new(
        Function::new("remote_async", "ro_hang"),
        AutoIdentifier,
        b.clone(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ((), worst) = runtime.block_on(common::beside_ticker(async {
        for x in 0..3u64 {
            assert_eq!(
                deco.call_async(x, |x| async move { x + 1 }).await.unwrap(),
                x + 1
            );
        }
    }));
    eprintln!("worst ticker lag {worst:?} beside a read-only file's hanging remote lookups");
    assert!(
        worst < Duration::from_millis(150),
        "a ticker task was {worst:?} late while a read-only file's remote hung"
    );
    assert!(b.stats().unwrap().remote.unwrap().errors >= 3);
}

/// A writer publishing to `team`, and a reader of it whose file is read-only (it parks what
/// its async calls fetch), with the reader's store built by `reader`.
fn writer_and_read_only_reader(
    dir: &TempDir,
    team: &Remote,
    reader: impl FnOnce(ckpt::StoreBuilder) -> ckpt::StoreBuilder,
) -> (Store, Store) {
    let a = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .publish(PublishMode::Sync)
        .open(dir.join("a.redb"))
        .unwrap();
    Store::open(dir.join("b.redb")).unwrap().close().unwrap();
    let b = reader(
        Store::builder()
            .read_only()
            .remote(team.clone(), RemoteMode::ReadOnly),
    )
    .open(dir.join("b.redb"))
    .unwrap();
    (a, b)
}

fn parked_fn(store: &Store) -> DecoratorCheckpoint<AutoIdentifier, Store> {
    DecoratorCheckpoint::new(
        Function::new("remote_async", "parked"),
        AutoIdentifier,
        store.clone(),
    )
}

#[test]
fn a_parked_record_older_than_the_stores_max_age_is_not_served() {
    use ckpt::store::ManualClock;
    let dir = TempDir::new("remote-async-parked-age");
    let team = Remote::open("memory://").unwrap();
    let clock = ManualClock::new(std::time::SystemTime::now());
    let (a, b) = writer_and_read_only_reader(&dir, &team, |builder| {
        builder
            .clock(clock.clone())
            .limits(ckpt::Limits::new().max_age(Duration::from_secs(60)))
    });
    assert_eq!(parked_fn(&a).call(4u64, |x| x * x).unwrap(), 16);
    let runs = AtomicUsize::new(0);
    let call = || {
        futures_executor::block_on(parked_fn(&b).call_async(4u64, |x| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { x * x }
        }))
        .unwrap()
    };
    // Fetched and parked, then read from memory.
    assert_eq!((call(), call()), (16, 16));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // Two minutes later on the store's clock, the parked record is past the store's max age,
    // as a local entry saved then would be: not served, so the call computes.
    clock.advance(Duration::from_secs(120));
    assert_eq!(call(), 16);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "an expired parked record was served"
    );
}

#[test]
fn a_parked_record_does_not_hide_a_newer_object_from_a_sync_call() {
    let dir = TempDir::new("remote-async-parked-sync");
    let folder = dir.join("remote");
    std::fs::create_dir_all(&folder).unwrap();
    let team = Remote::open(&format!("file://{}", folder.display())).unwrap();
    let (a, b) = writer_and_read_only_reader(&dir, &team, |builder| builder);
    assert_eq!(parked_fn(&a).call(5u64, |_| 1u64).unwrap(), 1);
    let got = futures_executor::block_on(parked_fn(&b).call_async(5u64, |_| async { 0u64 }));
    assert_eq!(got.unwrap(), 1, "served by the remote, and parked");
    // The object goes (`ckpt remote gc`, say) and the writer publishes the id again, anew.
    std::fs::remove_dir_all(folder.join("ckpt-v1").join("r")).unwrap();
    assert_eq!(parked_fn(&a).rerun(5u64, |_| 2u64).unwrap(), 2);
    // A sync call reads through to the remote, not the parked record.
    let sync = parked_fn(&b).call(5u64, |_| 0u64).unwrap();
    assert_eq!(
        sync, 2,
        "a parked record hid the remote's object from a sync call"
    );
}

#[test]
fn an_async_call_publishes_nothing_its_read_only_file_refused() {
    let dir = TempDir::new("remote-async-refused");
    let folder = dir.join("remote");
    std::fs::create_dir_all(&folder).unwrap();
    let team = Remote::open(&format!("file://{}", folder.display())).unwrap();
    Store::open(dir.join("b.redb")).unwrap().close().unwrap();
    // A read-only file with a read-write remote: a computed result can be kept nowhere.
    for publish in [PublishMode::Sync, PublishMode::Background] {
        let b = Store::builder()
            .read_only()
            .remote(team.clone(), RemoteMode::ReadWrite)
            .publish(publish)
            .open(dir.join("b.redb"))
            .unwrap();
        let d = parked_fn(&b);
        let got = futures_executor::block_on(d.call_async(6u64, |x| async move { x + 1 }));
        assert_eq!(got.unwrap(), 7);
        assert_eq!(d.call(8u64, |x| x + 1).unwrap(), 9);
        b.flush().unwrap_or(());
        drop(b);
        let objects = std::fs::read_dir(folder.join("ckpt-v1").join("r"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            objects, 0,
            "{publish:?}: a result the local file refused was published"
        );
    }
}

#[test]
fn async_calls_against_a_silent_remote_with_leases_wait_one_timeout_each() {
    let dir = TempDir::new("remote-async-one-timeout");
    let (endpoint, _accept) = hanging_server();
    let store = Store::builder()
        .remote(
            hanging_remote(&endpoint, Duration::from_millis(300)),
            RemoteMode::ReadWrite,
        )
        .dedup(ckpt::Dedup::Lease {
            ttl: Duration::from_secs(3),
        })
        .open(dir.store_path())
        .unwrap();
    let d = std::sync::Arc::new(
        DecoratorCheckpoint::new(
            Function::new("remote_async", "sq"),
            AutoIdentifier,
            store.clone(),
        )
        .with_on_error(ckpt::OnError::Ignore),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Several at once, so that their lookups and leases run on several of the remote's
    // threads: the lease after a failed lookup must not ask again, on whatever thread.
    let got = runtime.block_on(async {
        let calls = (0..6u64).map(|x| {
            let d = std::sync::Arc::clone(&d);
            tokio::spawn(async move { d.call_async(x, |x| async move { x * x }).await.unwrap() })
        });
        let mut got = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            got.push(call.await.unwrap());
        }
        got
    });
    assert_eq!(got, [0, 1, 4, 9, 16, 25]);
    // The results' publishes fail too (counted as errors): waited for, and told apart.
    store.flush().unwrap();
    let r = store.stats().unwrap().remote.unwrap();
    assert_eq!(
        (r.errors - r.publish_failures, r.leases_taken),
        (6, 0),
        "one failed lookup a call, no lease asked after it: {r:?}"
    );
}
