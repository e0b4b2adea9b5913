//! The remote tier against a real S3-compatible server (moto's, on loopback), each figure a
//! ratio to a raw object_store client doing the same transfer, the systems interleaved in
//! rounds in one process (medians reported):
//!
//! * `hit`: a remote hit (local miss, remote get, checks, backfill into the local file) against a
//!   raw object_store `get` of the same object's bytes (target ≤ 1.3×); a backfill the store's
//!   background thread saves after the call (records of 128 KiB and more) is not timed, but
//!   the flush that waits for those still waiting after the last call is reported;
//! * `publish`: 10,000 calls (misses that compute and save) with background publishing against
//!   the same calls on a store with no remote (target ≤ 1.1×); the publishes left in the queue
//!   when the calls end are not timed (flush), but reported, with the drops;
//! * `publish_file` (not run by default): the same, publishing to a `file://` remote on the local
//!   disk, so that no server's CPU competes with the calls (moto runs on the same cores);
//! * `publish_null` (not run by default): the same, publishing to an S3 endpoint in this process
//!   that does nearly nothing (200 to a PUT, 404 to a GET): the client's own cost;
//! * `notfound` (not run by default): a raw GET that finds nothing against one that finds a small
//!   object and a HEAD that finds nothing, what each miss of `publish` asks first;
//! * `large`: publishing one large entry (`Store::push`: the record read from the file, its
//!   header, one put) against a raw object_store multipart put of the same bytes (target ≥ 0.8×
//!   the throughput); 256 MiB by default (`CKPT_BENCH_LARGE_MIB`).
//!
//! ```text
//! cd benches && CKPT_MOTO_VENV=../target/moto/venv cargo bench --bench remote
//! CKPT_BENCH_REMOTE=hit,publish cargo bench --bench remote    # some parts only
//! ```
//! The moto server comes from `CKPT_MOTO_VENV` (a virtual environment with `moto[server]`), or
//! `../target/moto/venv` (where tests/remote_s3.rs installs it), or is installed into
//! `target/moto/venv` here. `CKPT_BENCH_ROUNDS` sets the rounds (default 7).

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ckpt::remote::RemoteCheck;
use ckpt::{Durability, PublishMode, Remote, RemoteMode, Store};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};

use common::*;

const BUCKET: &str = "ckpt-bench";
const PREFIX: &str = "bench";

fn main() {
    let parts = std::env::var("CKPT_BENCH_REMOTE").unwrap_or_else(|_| "hit,publish,large".into());
    // `cargo bench` passes --bench; a filter argument, if any, picks parts too.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |p: &str| {
        parts.split(',').any(|x| x == p)
            && (filter.is_empty() || filter.iter().any(|f| p.contains(f.as_str())))
    };
    let rounds: usize =
        std::env::var("CKPT_BENCH_ROUNDS").map_or(7, |v| v.parse().expect("rounds"));
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw: Arc<dyn ObjectStore> = Arc::new(moto.bucket());
    println!("moto server at {} (rounds: {rounds})", moto.endpoint());
    if wants("hit") {
        for size in [1usize << 10, 64 << 10, 1 << 20] {
            hit(&moto, &rt, &raw, rounds, size);
        }
    }
    if wants("publish") {
        publish(&remote(&moto), "moto", rounds);
    }
    if wants("publish_file") {
        // The same calls publishing to a `file://` remote on the local disk: what background
        // publishing costs the calls when no server shares their 2 cores.
        let folder = Scratch::new("remote-publish-file");
        let url = format!("file://{}", folder.file("team").display());
        std::fs::create_dir_all(folder.file("team")).unwrap();
        publish(&Remote::open(&url).unwrap(), "file://", rounds);
    }
    if wants("large") {
        large(&moto, &rt, &raw, rounds.min(5));
    }
    if wants("publish_null") {
        // The same calls publishing to a server that does nearly nothing (in this process: it
        // answers every PUT with 200 and every GET with 404), so that what is measured is the
        // client's own cost: the calls, the publishers, the runtime, the requests.
        let null = NullS3::start();
        let team = Remote::builder(&format!("s3://{BUCKET}/{PREFIX}"))
            .endpoint(&null.endpoint())
            .option("aws_access_key_id", "testing")
            .option("aws_secret_access_key", "testing")
            .option("aws_region", "us-east-1")
            .check(RemoteCheck::Skip)
            .open()
            .expect("open the null remote");
        publish(&team, "a null server", rounds);
        println!("null server: {} requests", null.requests());
    }
    if wants("notfound") {
        not_found(&rt, &raw, rounds);
    }
}

/// An S3 endpoint that stores nothing: 200 to every PUT (its body read and dropped), 404 to
/// every other request, HTTP/1.1 with keep-alive, a thread per connection.
struct NullS3 {
    port: u16,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl NullS3 {
    fn start() -> NullS3 {
        use std::io::BufRead as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let _ = conn.set_nodelay(true);
                let counted = Arc::clone(&counted);
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let (mut first, mut len) = (String::new(), 0usize);
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                            if first.is_empty() {
                                first = line.clone();
                            }
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let answer: &[u8] = if first.starts_with("PUT ") {
                            b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                        };
                        if conn.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        NullS3 { port, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// (not run by default) What a GET that finds nothing costs on this server against one that
/// finds a small object, and against a HEAD that finds nothing: raw object_store, interleaved.
fn not_found(rt: &tokio::runtime::Runtime, raw: &Arc<dyn ObjectStore>, rounds: usize) {
    const KEYS: usize = 100;
    let present = ObjectPath::from(format!("{PREFIX}/notfound/present"));
    rt.block_on(raw.put(&present, vec![7u8; 1024].into()))
        .unwrap();
    let (mut hits, mut misses, mut heads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let started = Instant::now();
        for _ in 0..KEYS {
            rt.block_on(async { raw.get(&present).await.unwrap().bytes().await.unwrap() });
        }
        hits.push(started.elapsed().as_secs_f64() / KEYS as f64);
        let started = Instant::now();
        for k in 0..KEYS {
            let p = ObjectPath::from(format!("{PREFIX}/notfound/absent-{round}-{k}"));
            assert!(rt.block_on(raw.get(&p)).is_err());
        }
        misses.push(started.elapsed().as_secs_f64() / KEYS as f64);
        let started = Instant::now();
        for k in 0..KEYS {
            let p = ObjectPath::from(format!("{PREFIX}/notfound/absent-h-{round}-{k}"));
            assert!(rt.block_on(raw.head(&p)).is_err());
        }
        heads.push(started.elapsed().as_secs_f64() / KEYS as f64);
    }
    println!(
        "not found: get of a 1 KiB object {:.3} ms, get that finds nothing {:.3} ms, head that \
         finds nothing {:.3} ms",
        median(hits) * 1e3,
        median(misses) * 1e3,
        median(heads) * 1e3
    );
}

fn remote(moto: &Moto) -> Remote {
    Remote::builder(&format!("s3://{BUCKET}/{PREFIX}"))
        .endpoint(&moto.endpoint())
        .option("aws_access_key_id", "testing")
        .option("aws_secret_access_key", "testing")
        .option("aws_region", "us-east-1")
        .timeout(Duration::from_secs(600))
        .open()
        .expect("open the remote")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// (a) A remote hit against a raw get of the same object.
fn hit(
    moto: &Moto,
    rt: &tokio::runtime::Runtime,
    raw: &Arc<dyn ObjectStore>,
    rounds: usize,
    size: usize,
) {
    const KEYS: u64 = 40;
    let scratch = Scratch::new("remote-hit");
    let team = remote(moto);
    let name: &'static str = Box::leak(format!("hit_{size}").into_boxed_str());
    // Publish KEYS results once.
    {
        let a = Store::builder()
            .remote(team.clone(), RemoteMode::ReadWrite)
            .publish(PublishMode::Sync)
            .open(scratch.file("a.redb"))
            .unwrap();
        let d = ckpt_decorator(&a, name);
        for k in 0..KEYS {
            ckpt_call(&d, k, ARG, size);
        }
        assert_eq!(a.stats().unwrap().remote.unwrap().publishes, KEYS);
    }
    let paths: Vec<ObjectPath> = Store::open(scratch.file("a.redb"))
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| ObjectPath::from(format!("{PREFIX}/ckpt-v1/r/{}", e.id)))
        .collect();
    let (mut ours, mut relaxed, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut flushes, mut fetch_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // ckpt: a store with an empty file; each call a local miss the remote answers. Then the
        // same with relaxed durability, which shows the backfill's fsync's share.
        for (label, durability, times) in [
            ("immediate", Durability::Immediate, &mut ours),
            (
                "relaxed",
                Durability::Relaxed {
                    within: Duration::from_secs(1),
                },
                &mut relaxed,
            ),
        ] {
            let b = Store::builder()
                .durability(durability)
                .remote(team.clone(), RemoteMode::ReadWrite)
                .open(scratch.file(&format!("b{round}-{label}.redb")))
                .unwrap();
            let d = ckpt_decorator(&b, name);
            let started = Instant::now();
            for k in 0..KEYS {
                let v = d
                    .call((k, ARG), |_| -> Blob {
                        panic!("computed: the remote should answer")
                    })
                    .unwrap();
                assert_eq!(v.0.len(), size);
            }
            times.push(started.elapsed().as_secs_f64() / KEYS as f64);
            // Backfills of large records are saved by the store's background thread after
            // their calls return: those still waiting are saved here, not timed, but reported.
            let flushing = Instant::now();
            b.flush().unwrap();
            if label == "immediate" {
                flushes.push(flushing.elapsed().as_secs_f64());
            }
            let s = b.stats().unwrap();
            assert_eq!((s.remote.unwrap().backfills, s.entries), (KEYS, KEYS));
            if label == "immediate" {
                fetch_times.push(s.remote.unwrap().mean_fetch_time().unwrap().as_secs_f64());
            }
            // The next call is a local hit: no new fetch.
            ckpt_call(&d, 0, ARG, size);
            assert_eq!(b.stats().unwrap().remote.unwrap().fetches, KEYS);
        }
        // raw: object_store get of the same objects, bytes collected.
        let started = Instant::now();
        for p in &paths {
            let got = rt.block_on(async { raw.get(p).await.unwrap().bytes().await.unwrap() });
            assert!(got.len() > size);
        }
        theirs.push(started.elapsed().as_secs_f64() / KEYS as f64);
    }
    let per_round = median(ours.iter().zip(&theirs).map(|(o, t)| o / t).collect());
    let (o, r, t) = (median(ours), median(relaxed), median(theirs));
    println!(
        "hit {:>8}: ckpt remote hit {:>8.3} ms   raw get {:>8.3} ms   ratio {:.2}x (target <= 1.3x; \
         median of per-round ratios {:.2}x); \
         with Durability::Relaxed {:.3} ms, {:.2}x; ckpt's get alone {:.3} ms; then flush {:.3} ms \
         (saves the backfills still waiting, syncs the file)",
        human_size(size),
        o * 1e3,
        t * 1e3,
        o / t,
        per_round,
        r * 1e3,
        r / t,
        median(fetch_times) * 1e3,
        median(flushes) * 1e3
    );
}

/// How the 10,000 calls of (b) reach the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Calls {
    /// `call` with fresh arguments: each a local miss, which (with a remote) first asks the
    /// remote, then computes, saves and publishes.
    Misses,
    /// `rerun`: computes and saves without a lookup, so only the publishing differs.
    Reruns,
}

/// 10,000 calls on a fresh store, with or without a remote; the calls' time, then the flush's
/// and the publishes dropped.
fn calls(scratch: &Scratch, team: Option<&Remote>, how: Calls, file: &str) -> (f64, f64, u64) {
    const CALLS: u64 = 10_000;
    const SIZE: usize = 256;
    let mut b = Store::builder();
    if let Some(team) = team {
        b = b.remote(team.clone(), RemoteMode::ReadWrite);
    }
    let store = b.open(scratch.file(file)).unwrap();
    let d = ckpt_decorator(&store, "publish");
    // Each run's arguments are new (fresh keys): every call computes, saves and publishes.
    let base = fresh() << 20;
    let started = Instant::now();
    for k in 0..CALLS {
        match how {
            Calls::Misses => {
                ckpt_call(&d, base + k, ARG, SIZE);
            }
            Calls::Reruns => {
                d.rerun((base + k, ARG), |(n, s)| compute(n, s, SIZE))
                    .unwrap();
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    let started = Instant::now();
    store.flush().unwrap();
    let flush = started.elapsed().as_secs_f64();
    let dropped = store
        .stats()
        .unwrap()
        .remote
        .map_or(0, |r| r.dropped_publishes);
    (took, flush, dropped)
}

/// (b) 10,000 calls with background publishing (to `team`, named `to` in the report) against
/// the same calls with no remote.
fn publish(team: &Remote, to: &str, rounds: usize) {
    let scratch = Scratch::new("remote-publish");
    for how in [Calls::Reruns, Calls::Misses] {
        let (mut ours, mut theirs, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
        let mut dropped = 0;
        // The miss rounds ask the remote 10,000 times each: fewer of them.
        let rounds = if how == Calls::Misses {
            rounds.min(3)
        } else {
            rounds
        };
        for round in 0..rounds {
            let (t, f, d) = calls(&scratch, Some(team), how, &format!("with{round}.redb"));
            ours.push(t);
            flushes.push(f);
            dropped += d;
            theirs.push(calls(&scratch, None, how, &format!("without{round}.redb")).0);
        }
        let (o, t) = (median(ours), median(theirs));
        let what = match how {
            Calls::Misses => "misses (call)",
            Calls::Reruns => "saves (rerun)",
        };
        println!(
            "publish 10,000 {what} to {to}: with background publishing {o:.3} s   no remote {t:.3} s   \
             ratio {:.2}x (target <= 1.1x); then flush {:.3} s; publishes dropped (queue full) \
             over {rounds} rounds: {dropped}",
            o / t,
            median(flushes)
        );
    }
}

/// (c) A large publish against a raw multipart put of the same bytes.
fn large(moto: &Moto, rt: &tokio::runtime::Runtime, raw: &Arc<dyn ObjectStore>, rounds: usize) {
    let mib: usize = std::env::var("CKPT_BENCH_LARGE_MIB").map_or(256, |v| v.parse().expect("MiB"));
    let size = mib << 20;
    let scratch = Scratch::new("remote-large");
    let team = remote(moto);
    // Saved with no remote first, so that only the push publishes it.
    {
        let alone = Store::open(scratch.file("large.redb")).unwrap();
        let d = ckpt_decorator(&alone, "large");
        ckpt_call(&d, 7, ARG, size);
    }
    let store = Store::builder()
        .remote(team.clone(), RemoteMode::ReadWrite)
        .publish(PublishMode::Sync)
        .open(scratch.file("large.redb"))
        .unwrap();
    let id = store.entries().unwrap()[0].id;
    let record = Bytes::from(store.read_record(&id).unwrap().unwrap());
    let object = ObjectPath::from(format!("{PREFIX}/ckpt-v1/r/{id}"));
    let copy = ObjectPath::from(format!("{PREFIX}/raw/large"));
    let (mut ours, mut theirs, mut single) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        rt.block_on(async { raw.delete(&object).await.unwrap() });
        let started = Instant::now();
        let report = store.push(&mut |_, _| {}).unwrap();
        ours.push(started.elapsed().as_secs_f64());
        assert_eq!(report.published, 1, "{report:?}");

        rt.block_on(async { raw.delete(&copy).await.unwrap() });
        let started = Instant::now();
        rt.block_on(async {
            let upload = raw.put_multipart(&copy).await.unwrap();
            let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
            w.put(record.clone());
            w.finish().await.unwrap();
        });
        theirs.push(started.elapsed().as_secs_f64());

        rt.block_on(async { raw.delete(&copy).await.unwrap() });
        let started = Instant::now();
        rt.block_on(async { raw.put(&copy, record.clone().into()).await.unwrap() });
        single.push(started.elapsed().as_secs_f64());
    }
    let s1 = median(single);
    let (o, t) = (median(ours), median(theirs));
    let mb = record.len() as f64 / (1 << 20) as f64;
    println!(
        "large {mib} MiB publish: ckpt push {:.3} s ({:.0} MiB/s)   raw multipart put {:.3} s ({:.0} MiB/s)   throughput ratio {:.2}x (target >= 0.8x)",
        o,
        mb / o,
        t,
        mb / t,
        t / o
    );
    println!(
        "large {mib} MiB: raw single put {s1:.3} s ({:.0} MiB/s): ckpt push / single put throughput {:.2}x",
        mb / s1,
        s1 / o
    );
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

// ---------------------------------------------------------------------------------------------
// The moto server (as tests/remote_s3.rs starts it).

fn moto_server() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut venvs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("CKPT_MOTO_VENV") {
        venvs.push(PathBuf::from(v));
    }
    venvs.push(here.join("../target/moto/venv"));
    venvs.push(here.join("target/moto/venv"));
    for v in &venvs {
        let bin = v.join("bin").join("moto_server");
        if bin.exists() {
            return bin;
        }
    }
    let venv = here.join("target/moto/venv");
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "moto[server]"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "cannot install moto[server] into {}", venv.display());
    venv.join("bin").join("moto_server")
}

struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "cannot create the bucket: {out}"
        );
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn bucket(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_region("us-east-1")
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(600)),
            )
            .build()
            .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
