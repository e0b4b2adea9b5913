//! The remote tier against a real S3-compatible server on loopback: moto's server (PyPI
//! `moto[server]`), installed by this file into a virtual environment under `target/moto/` on
//! first use (`python3 -m venv`, `pip install 'moto[server]'`), started on a free port per test,
//! and killed at the end. If it cannot be installed or started, these tests fail: they never
//! pass without a server. By hand: see README, "Sharing a store".

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ckpt::remote::{RemoteCheck, RemoteErrorKind};
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Remote, RemoteMode, Store};
use common::TempDir;

const BUCKET: &str = "ckpt-test";

/// The virtual environment's `moto_server`, installed once (a lock file keeps two test
/// binaries from installing at once).
fn moto_server() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("moto");
    let bin = root.join("venv").join("bin").join("moto_server");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&root).unwrap();
    let run = |cmd: &mut Command, what: &str| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (the S3 tests need python3 with venv and pip, and PyPI):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(root.join("venv")),
        "python3 -m venv target/moto/venv",
    );
    run(
        Command::new(root.join("venv").join("bin").join("pip")).args([
            "install",
            "-q",
            "moto[server]",
        ]),
        "pip install 'moto[server]'",
    );
    assert!(
        bin.exists(),
        "moto_server missing after installing moto[server]"
    );
    bin
}

/// A moto server on a free loopback port, with the test bucket; killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        Moto::start_on(port)
    }

    fn start_on(port: u16) -> Moto {
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = moto.http("PUT", &format!("/{BUCKET}"), b"");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "cannot create the bucket: {status}"
        );
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain request (moto checks no signature); the response as text.
    fn http(&self, method: &str, path: &str, body: &[u8]) -> String {
        String::from_utf8_lossy(&self.http_raw(method, path, body)).into_owned()
    }

    fn http_raw(&self, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    /// The bucket through object_store itself (signed requests), for reading and damaging
    /// objects behind ckpt's back.
    fn bucket(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .build()
            .unwrap()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt as _;
        let bucket = self.bucket();
        let key = object_store::path::Path::from(key);
        block_on(async move {
            bucket
                .get(&key)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt as _;
        let bucket = self.bucket();
        let key = object_store::path::Path::from(key);
        block_on(async move { bucket.put(&key, bytes.into()).await.unwrap() });
    }

    /// The keys in the bucket under `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let listing = self.http(
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix={prefix}"),
            b"",
        );
        listing
            .split("<Key>")
            .skip(1)
            .map(|k| k.split("</Key>").next().unwrap().to_string())
            .collect()
    }

    fn remote(&self, prefix: &str) -> Remote {
        remote_at(&self.endpoint(), prefix, RemoteCheck::Probe).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn remote_at(
    endpoint: &str,
    prefix: &str,
    check: RemoteCheck,
) -> Result<Remote, ckpt::remote::RemoteError> {
    Remote::builder(&format!("s3://{BUCKET}/{prefix}"))
        .endpoint(endpoint)
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .option("aws_region", "us-east-1")
        .timeout(Duration::from_secs(2))
        .breaker(2, Duration::from_millis(300))
        .check(check)
        .open()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn square(store: &Store, x: u64, runs: &AtomicUsize) -> u64 {
    let d = DecoratorCheckpoint::new(
        Function::new("remote_s3", "square"),
        AutoIdentifier,
        store.clone(),
    );
    d.call(x, |x| {
        runs.fetch_add(1, Ordering::SeqCst);
        x * x
    })
    .unwrap()
}

fn open(path: &Path, remote: &Remote, mode: RemoteMode) -> Store {
    Store::builder()
        .remote(remote.clone(), mode)
        .open(path)
        .unwrap()
}

#[test]
fn s3_a_second_store_computes_nothing_and_damage_is_replaced() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-two");
    let runs = AtomicUsize::new(0);
    {
        let a = open(
            &dir.join("a.redb"),
            &moto.remote("team"),
            RemoteMode::ReadWrite,
        );
        for x in 0..10 {
            square(&a, x, &runs);
        }
    }
    let keys = moto.keys("team/ckpt-v1/r/");
    assert_eq!(keys.len(), 10, "{keys:?}");
    {
        let b = open(
            &dir.join("b.redb"),
            &moto.remote("team"),
            RemoteMode::ReadWrite,
        );
        for x in 0..10 {
            assert_eq!(square(&b, x, &runs), x * x);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 10, "b computed nothing");
        assert_eq!(b.stats().unwrap().remote.unwrap().hits, 10);
    }
    // Damage one object: the next store recomputes it and replaces it on its e-tag.
    let object = moto.get(&keys[0]);
    let mut bad = object.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    moto.put(&keys[0], bad.clone());
    {
        let c = open(
            &dir.join("c.redb"),
            &moto.remote("team"),
            RemoteMode::ReadWrite,
        );
        for x in 0..10 {
            assert_eq!(square(&c, x, &runs), x * x);
        }
        c.flush().unwrap();
        let r = c.stats().unwrap().remote.unwrap();
        assert_eq!((r.hits, r.corrupt, r.replaced), (9, 1, 1), "{r:?}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 11);
    let replaced = moto.get(&keys[0]);
    assert_ne!(replaced, bad);
    assert_eq!(replaced.len(), object.len());
}

#[test]
fn s3_read_only_leaves_the_bucket_unchanged() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-ro");
    let runs = AtomicUsize::new(0);
    let ci = open(
        &dir.join("ci.redb"),
        &moto.remote("ro"),
        RemoteMode::ReadOnly,
    );
    for x in 0..5 {
        square(&ci, x, &runs);
    }
    ci.flush().unwrap();
    assert_eq!(moto.keys("ro/").len(), 0);
}

#[test]
fn s3_a_missing_bucket_is_an_error_at_open() {
    let moto = Moto::start();
    let err = Remote::builder("s3://no-such-bucket/x")
        .endpoint(&moto.endpoint())
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .open()
        .unwrap_err();
    assert_eq!(err.kind(), RemoteErrorKind::BucketNotFound, "{err}");
}

#[test]
fn s3_the_server_killed_mid_run_never_fails_a_call_and_publishing_resumes() {
    let mut moto = Moto::start();
    let port = moto.port;
    let dir = TempDir::new("s3-kill");
    let runs = AtomicUsize::new(0);
    let s = open(
        &dir.join("a.redb"),
        &moto.remote("kill"),
        RemoteMode::ReadWrite,
    );
    for x in 0..10 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().remote.unwrap().publishes, 10);
    moto.kill();
    let started = Instant::now();
    for x in 0..40 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    s.flush().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let down = s.stats().unwrap().remote.unwrap();
    assert!(down.errors + down.publish_failures >= 2, "{down:?}");
    // A new server on the same port (moto keeps nothing: an empty bucket): after the breaker's
    // pause, publishing resumes by itself.
    let moto = Moto::start_on(port);
    std::thread::sleep(Duration::from_millis(400));
    for x in 100..110 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    s.flush().unwrap();
    let up = s.stats().unwrap().remote.unwrap();
    assert!(up.publishes > down.publishes, "{up:?}");
    assert!(!moto.keys("kill/").is_empty());
}

/// The child of the two-process test (does nothing unless started by it).
#[test]
fn s3_child_process() {
    let Ok(endpoint) = std::env::var("CKPT_S3_CHILD_ENDPOINT") else {
        return;
    };
    let store_path = std::env::var("CKPT_S3_CHILD_STORE").unwrap();
    let remote = remote_at(&endpoint, "procs", RemoteCheck::Probe).unwrap();
    let s = open(Path::new(&store_path), &remote, RemoteMode::ReadWrite);
    let runs = AtomicUsize::new(0);
    for x in 0..20 {
        assert_eq!(square(&s, x, &runs), x * x);
    }
    s.flush().unwrap();
    println!("RUNS={}", runs.load(Ordering::SeqCst));
}

#[test]
fn s3_two_processes_with_their_own_files_share_one_bucket() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-procs");
    let child = |name: &str| -> usize {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "s3_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CKPT_S3_CHILD_ENDPOINT", moto.endpoint())
            .env("CKPT_S3_CHILD_STORE", dir.join(name))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.split_once("RUNS=").map(|(_, n)| n.trim()))
            .unwrap_or_else(|| panic!("no RUNS line: {stdout}"))
            .parse()
            .unwrap()
    };
    assert_eq!(child("first.redb"), 20);
    assert_eq!(
        child("second.redb"),
        0,
        "the second process computed nothing"
    );
}

/// `ckpt remote ... gc --stale` on the S3 server, through the binary and the AWS_* environment:
/// it removes exactly the objects it lists (the bucket's keys before and after).
#[test]
fn s3_cli_gc_removes_exactly_what_it_lists() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-cli-gc");
    let remote = moto.remote("cli");
    let store = Store::builder()
        .remote(remote, RemoteMode::ReadWrite)
        .publish(ckpt::PublishMode::Sync)
        .open(dir.store_path())
        .unwrap();
    let f = |v: &str| {
        DecoratorCheckpoint::new(
            Function::new("s3cli", "f").with_version(v.to_string()),
            AutoIdentifier,
            store.clone(),
        )
    };
    for x in 0..3u64 {
        f("1").call(x, |x| x + 1).unwrap();
    }
    let old: Vec<String> = moto.keys("cli/");
    assert_eq!(old.len(), 3);
    // S3 times objects to the second or the millisecond: v2's are written later.
    std::thread::sleep(Duration::from_millis(1100));
    for x in 0..2u64 {
        f("2").call(x, |x| x + 2).unwrap();
    }
    drop(store);
    let before = moto.keys("cli/");
    assert_eq!(before.len(), 5);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ckpt"))
            .args(["remote", "--remote", &format!("s3://{BUCKET}/cli")])
            .args(args)
            .arg("--json")
            .env("AWS_ENDPOINT_URL", moto.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = run(&["ls"]);
    assert_eq!(listed.matches("\"location\"").count(), 5, "{listed}");
    let gc = run(&["gc", "--stale"]);
    assert!(gc.contains("\"removed\": 3"), "{gc}");
    for key in &old {
        assert!(gc.contains(key.as_str()), "{key} not listed: {gc}");
    }
    let mut after = moto.keys("cli/");
    let mut expected: Vec<String> = before.into_iter().filter(|k| !old.contains(k)).collect();
    after.sort();
    expected.sort();
    assert_eq!(after, expected);
}

#[test]
fn s3_a_large_value_goes_up_in_parts_and_comes_down_as_a_stream() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-large");
    // Parts of 5 MiB, the least S3 takes: a 12 MiB value is uploaded in three.
    let remote = || {
        Remote::builder(&format!("s3://{BUCKET}/big"))
            .endpoint(&moto.endpoint())
            .option("aws_access_key_id", "testing")
            .option("aws_secret_access_key", "testing")
            .option("aws_region", "us-east-1")
            .part_size(5 << 20)
            .open()
            .unwrap()
    };
    let value: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let runs = AtomicUsize::new(0);
    let call = |s: &Store| -> serde_bytes::ByteBuf {
        DecoratorCheckpoint::new(Function::new("remote_s3", "big"), AutoIdentifier, s.clone())
            .call(1u8, |_| {
                runs.fetch_add(1, Ordering::SeqCst);
                serde_bytes::ByteBuf::from(value.clone())
            })
            .unwrap()
    };
    {
        let a = open(&dir.join("a.redb"), &remote(), RemoteMode::ReadWrite);
        call(&a);
        a.flush().unwrap();
        let r = a.stats().unwrap().remote.unwrap();
        assert_eq!((r.publishes, r.publish_failures), (1, 0), "{r:?}");
    }
    let keys = moto.keys("big/ckpt-v1/r/");
    assert_eq!(keys.len(), 1);
    let b = open(&dir.join("b.redb"), &remote(), RemoteMode::ReadWrite);
    assert_eq!(call(&b).into_vec(), value);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "b computed nothing");
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!((r.hits, r.backfills), (1, 1), "{r:?}");
    assert_eq!(r.bytes_down, moto.get(&keys[0]).len() as u64);
}

/// `Dedup::Lease` on S3 (create with `If-None-Match`, renewals with `If-Match`): four stores,
/// each with its own file and its own client, call one function at once that computes longer
/// than the lease's ttl; it is computed once, and the lease is gone afterwards.
#[test]
fn s3_four_stores_with_leases_compute_once() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-lease");
    let ttl = Duration::from_millis(900);
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let store = Store::builder()
                .remote(moto.remote("lease"), RemoteMode::ReadWrite)
                .dedup(ckpt::Dedup::Lease { ttl })
                .open(dir.join(&format!("{i}.redb")))
                .unwrap();
            let (runs, start) = (runs.clone(), start.clone());
            std::thread::spawn(move || {
                let d = DecoratorCheckpoint::new(
                    Function::new("remote_s3", "slow"),
                    AutoIdentifier,
                    store.clone(),
                )
                .with_on_error(ckpt::OnError::Raise);
                start.wait();
                let v = d
                    .call(21u64, |x| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_secs(2));
                        x * 2
                    })
                    .unwrap();
                (v, store.stats().unwrap().remote.unwrap())
            })
        })
        .collect();
    let stats: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(stats.iter().all(|(v, _)| *v == 42));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once: {stats:#?}");
    let taken: u64 = stats.iter().map(|(_, r)| r.leases_taken).sum();
    let served: u64 = stats.iter().map(|(_, r)| r.lease_served).sum();
    assert_eq!((taken, served), (1, 3), "{stats:#?}");
    assert!(moto.keys("lease/ckpt-v1/l/").is_empty(), "released");
    assert_eq!(moto.keys("lease/ckpt-v1/r/").len(), 1);
}

#[test]
fn s3_a_renewal_the_owner_did_not_see_applied_does_not_lose_its_lease() {
    let moto = Moto::start();
    let dir = TempDir::new("s3-lease-renewal");
    let ttl = Duration::from_millis(900);
    let leased = |name: &str| {
        Store::builder()
            .remote(moto.remote("renew"), RemoteMode::ReadWrite)
            .dedup(ckpt::Dedup::Lease { ttl })
            .open(dir.join(name))
            .unwrap()
    };
    let (a, b) = (leased("a.redb"), leased("b.redb"));
    let f = |s: &Store| {
        DecoratorCheckpoint::new(
            Function::new("remote_s3", "renewed"),
            AutoIdentifier,
            s.clone(),
        )
        .with_on_error(ckpt::OnError::Raise)
    };
    let runs = AtomicUsize::new(0);
    let compute = |x: u64| {
        runs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(3));
        x * 2
    };
    std::thread::scope(|scope| {
        let owner = scope.spawn(|| f(&a).call(21u64, compute).unwrap());
        // Once a holds the lease: a renewal of a's that a did not see applied (the server
        // changed the lease, a still holds the version before), then b asks.
        let deadline = Instant::now() + Duration::from_secs(20);
        let key = loop {
            if let Some(key) = moto.keys("renew/ckpt-v1/l/").pop() {
                break key;
            }
            assert!(Instant::now() < deadline, "a never took the lease");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut lease = moto.get(&key);
        lease[24..32].copy_from_slice(&999u64.to_le_bytes());
        moto.put(&key, lease);
        let waiter = scope.spawn(|| f(&b).call(21u64, compute).unwrap());
        assert_eq!((owner.join().unwrap(), waiter.join().unwrap()), (42, 42));
    });
    let r = b.stats().unwrap().remote.unwrap();
    assert_eq!(
        (
            runs.load(Ordering::SeqCst),
            r.leases_taken_over,
            r.lease_served
        ),
        (1, 0, 1),
        "a kept renewing its lease, and b waited for its result: {r:?}"
    );
}
