//! The shared tier (feature `remote`): checkpoints shared through an object store (an
//! S3-compatible bucket, a shared folder, memory) behind the local file, which stays the near
//! cache. See README "Sharing a store" and ARCHITECTURE.md "The remote tier".
//!
//! [`Remote`] is where (a URL and the usual environment); the store's
//! [`StoreBuilder::remote`](crate::StoreBuilder::remote) says how ([`RemoteMode`],
//! [`PublishMode`]), and [`StoreBuilder::dedup`](crate::StoreBuilder::dedup) whether a miss is
//! computed once across machines ([`Dedup`]: a lease object `{prefix}/ckpt-v1/l/{id}` next to
//! the results `{prefix}/ckpt-v1/r/{id}`; its bytes are in `lease.rs` and ARCHITECTURE.md).
//! object_store's types stay inside this module.

mod admin;
mod breaker;
mod error;
mod lease;
mod object;
mod queue;
mod runtime;
mod stream;
mod tier;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;

pub use self::admin::{Expired, Expiry, RemoteObject, expired};
use self::breaker::Breaker;
pub use self::error::{RemoteError, RemoteErrorKind};
pub(crate) use self::runtime::{available as runtime_available, off_thread};
pub(crate) use self::tier::{Body, Claimed, Lookup, Published, RecordSource, RemoteRecord, Tier};

/// A shared tier: an object store that several machines' stores read through and write
/// through. Cheap to clone (an `Arc` inside); two stores given clones of one `Remote` share it
/// (which is how two stores in one process share a `memory://` remote).
///
/// ```
/// use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Remote, RemoteMode, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-remote-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let team = Remote::open("memory://")?;
/// let a = Store::builder().remote(team.clone(), RemoteMode::ReadWrite).open(dir.join("a.redb"))?;
/// let b = Store::builder().remote(team.clone(), RemoteMode::ReadWrite).open(dir.join("b.redb"))?;
///
/// let f = |store: &Store| DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, store.clone());
/// assert_eq!(f(&a).call(12u64, |x| x * x)?, 144);
/// a.flush()?; // waits for the background publish
/// // b has its own file, empty: the result comes from the remote, nothing is computed.
/// assert_eq!(f(&b).call(12u64, |_| -> u64 { unreachable!() })?, 144);
/// assert_eq!(b.stats()?.remote.unwrap().hits, 1);
/// # drop((a, b)); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    options: RemoteBuilder,
    /// Whether the store replaces an object on its e-tag (`PutMode::Update`); a folder does not,
    /// and a damaged object there is deleted and created again.
    conditional_update: bool,
    breaker: Breaker,
    /// Parts of large uploads in flight at once, across this remote's uploads.
    parts: Arc<stream::PartSlots>,
}

/// How a store uses its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RemoteMode {
    /// Local misses ask the remote; results computed here are published to it.
    #[default]
    ReadWrite,
    /// Local misses ask the remote; nothing is ever written to it (CI runners and laptops that
    /// read the team's results).
    ReadOnly,
    /// The remote is not used.
    Off,
}

/// When a result computed here is published to the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PublishMode {
    /// By a background thread, after the call returns: a bounded queue
    /// ([`RemoteBuilder::publish_queue`]) that never blocks a call; when it is full the oldest
    /// publish is dropped and counted. [`Store::flush`](crate::Store::flush) and dropping the
    /// store wait for the queue.
    #[default]
    Background,
    /// Before the save returns (the call waits for the upload). An async call awaits it: the
    /// upload runs on a thread of the remote's own runtime, not on the executor's.
    Sync,
}

/// Whether a missing result is computed once across the machines sharing a remote
/// ([`StoreBuilder::dedup`](crate::StoreBuilder::dedup)).
///
/// With [`Dedup::Lease`], the first store to miss an id takes a lease on it in the remote (an
/// object of its own, next to the results, created if absent) and renews it while it computes;
/// stores on other machines that miss the same id meanwhile wait for its result (polling, 50 ms
/// doubling to 1 s) and are served it from the remote, or take over once the lease lapses (not
/// renewed for `ttl`, by the waiter's own clock: a crashed owner). The owner publishes its
/// result before it releases the lease (synchronously, whatever the [`PublishMode`]); a
/// computation that fails or panics releases it at once. A remote that fails, or a breaker that
/// is open, is never waited for: the call computes (and warns under its
/// [`OnError`](crate::OnError)). Only [`RemoteMode::ReadWrite`] stores take or wait for leases;
/// a read-only store computes a miss at once, as before. Async calls lease and wait as tasks
/// (see [`Cache::lease_far`](crate::Cache::lease_far)). Without leases two machines may both
/// compute; the second publish is a harmless "already present". Within one process, concurrent
/// calls compute once anyway (single flight).
///
/// ```
/// use std::time::Duration;
/// use ckpt::{AutoIdentifier, Dedup, DecoratorCheckpoint, Function, Remote, RemoteMode, Store};
/// # let dir = std::env::temp_dir().join(format!("ckpt-doc-dedup-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let team = Remote::open("memory://")?; // s3://bucket/prefix across machines
/// let store = Store::builder()
///     .remote(team, RemoteMode::ReadWrite)
///     .dedup(Dedup::Lease { ttl: Duration::from_secs(30) })
///     .open(dir.join("checkpoints.redb"))?;
/// let train = DecoratorCheckpoint::new(Function::new("doc", "train"), AutoIdentifier, store.clone());
/// assert_eq!(train.call(3u64, |x| x + 1)?, 4); // leased, computed, published, released
/// assert_eq!(store.stats()?.remote.unwrap().leases_taken, 1);
/// # drop((train, store)); std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Dedup {
    /// No coordination: each machine that misses an id computes it (the default).
    #[default]
    None,
    /// One machine computes a missing result, the others wait for it. `ttl` is how long a
    /// lease lives without renewal (its owner renews it every `ttl / 3`): how long waiters wait
    /// for a crashed owner, at least. A few seconds to a minute; at least 30 ms, at most a day.
    Lease {
        /// How long a lease lives without renewal.
        ttl: Duration,
    },
}

/// Whether opening a remote contacts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RemoteCheck {
    /// List the prefix once: a missing bucket, refused credentials or an unreachable server is
    /// an error at open.
    #[default]
    Probe,
    /// Open without a request (the first call finds out, and degrades to local).
    Skip,
}

/// The S3 client's limit on one whole request, body included: far above any operation's own
/// timeout, which ckpt enforces (see `RemoteBuilder::open`).
const CLIENT_TIMEOUT: &str = "24h";

/// Options for opening a [`Remote`].
#[derive(Debug, Clone)]
pub struct RemoteBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
    retries: usize,
    breaker_failures: u32,
    breaker_pause: Duration,
    queue: usize,
    publishers: usize,
    part: usize,
    check: RemoteCheck,
    /// S3 settings given here rather than through the environment (they win over it).
    options: Vec<(String, String)>,
}

impl Remote {
    /// Opens the remote at `url` with default options (see [`RemoteBuilder::open`]).
    ///
    /// # Errors
    /// As [`RemoteBuilder::open`].
    pub fn open(url: &str) -> Result<Remote, RemoteError> {
        Remote::builder(url).open()
    }

    /// Options for opening the remote at `url`.
    pub fn builder(url: &str) -> RemoteBuilder {
        RemoteBuilder {
            url: url.to_string(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            breaker_failures: 3,
            breaker_pause: Duration::from_secs(30),
            queue: 1024,
            publishers: 4,
            part: 8 << 20,
            check: RemoteCheck::Probe,
            options: Vec::new(),
        }
    }

    /// The URL it was opened from.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether the breaker is open: the remote failed repeatedly and is not being asked.
    pub fn is_paused(&self) -> bool {
        self.inner.breaker.is_open()
    }

    pub(crate) fn options(&self) -> &RemoteBuilder {
        &self.inner.options
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl RemoteBuilder {
    /// The longest any one operation (a get, a put, with its retries) may take before it
    /// counts as a failure (default 10 s). A large object, streamed in or out
    /// ([`part_size`](Self::part_size)), is bounded piece by piece: each part or piece within
    /// it, however long the whole takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a connection may take to open (default 2 s; S3 only).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times the client retries a failed request within the timeout (default 2; S3
    /// only).
    pub fn retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// After `failures` consecutive failures the remote is not asked for `pause` (default 3
    /// and 30 s); then one call probes it, and a success resumes.
    pub fn breaker(mut self, failures: u32, pause: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_pause = pause;
        self
    }

    /// How many background publishes may wait (default 1,024); beyond, the oldest is dropped.
    pub fn publish_queue(mut self, publishes: usize) -> Self {
        self.queue = publishes.max(1);
        self
    }

    /// How many background publishes run at once (default 4, at least 1), each one upload in
    /// flight. A publish to S3 waits tens of milliseconds for the server, so one at a time keeps
    /// up with only a few dozen saves a second; beyond that the queue fills and drops. A large
    /// record's upload holds up to three parts in memory ([`part_size`](Self::part_size)), so
    /// this also bounds the memory of large publishes. Their parts go up three at a time
    /// whatever the number of uploads, each within the [`timeout`](Self::timeout) from when it is
    /// sent: uploads at once share the link, they do not each take a third of it.
    ///
    /// ```
    /// # fn main() -> Result<(), ckpt::remote::RemoteError> {
    /// let remote = ckpt::remote::Remote::builder("memory://")
    ///     .publish_concurrency(16)
    ///     .publish_queue(10_000)
    ///     .open()?;
    /// # Ok(()) }
    /// ```
    pub fn publish_concurrency(mut self, publishes: usize) -> Self {
        self.publishers = publishes.max(1);
        self
    }

    /// Whether opening contacts the remote (default [`RemoteCheck::Probe`]).
    pub fn check(mut self, check: RemoteCheck) -> Self {
        self.check = check;
        self
    }

    /// The S3 endpoint (an S3-compatible server), instead of `AWS_ENDPOINT_URL`; a plain
    /// `http://` endpoint is allowed by giving it here.
    pub fn endpoint(self, url: &str) -> Self {
        let allow_http = url.starts_with("http://");
        let builder = self.option("aws_endpoint", url);
        if allow_http {
            builder.option("aws_allow_http", "true")
        } else {
            builder
        }
    }

    /// One S3 setting by its object_store name (`aws_access_key_id`, `aws_region`,
    /// `aws_allow_http`, ...; the environment variables' names in lower case), winning over
    /// the environment. An unknown name is an error at open.
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options
            .push((key.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The part length of large objects (default 8 MiB, at least 64 KiB): a record longer
    /// than two parts is published as a multipart upload of parts this long, fed from the local
    /// file, and fetched as a stream into the local file's chunks, so that it never sits in
    /// memory whole beside the value. S3 refuses parts under 5 MiB (but the last).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part = bytes.max(64 << 10);
        self
    }

    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue
    }

    pub(crate) fn publishers(&self) -> usize {
        self.publishers
    }

    pub(crate) fn part_size_of(&self) -> usize {
        self.part
    }

    /// Objects (and records) longer than this are streamed, not held whole.
    pub(crate) fn stream_above(&self) -> u64 {
        2 * self.part as u64
    }

    /// Opens the remote: `s3://bucket/prefix` (AWS or any S3-compatible server, configured by
    /// the usual `AWS_*` environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` for a plain-http server),
    /// `file:///shared/folder` (created if missing; creates are atomic), or `memory://` (this
    /// process only).
    ///
    /// # Errors
    /// A [`RemoteError`] naming the URL and what is wrong: an invalid URL or scheme, a setting
    /// the client refuses, and with [`RemoteCheck::Probe`] missing credentials, a bucket that
    /// does not exist, or a server that cannot be reached.
    pub fn open(self) -> Result<Remote, RemoteError> {
        let url = self.url.clone();
        let parsed = url::Url::parse(&url).map_err(|e| {
            let why: Box<dyn std::error::Error + Send + Sync> = match e {
                // A bare path: say how to name a folder.
                url::ParseError::RelativeUrlWithoutBase if url.starts_with('/') => {
                    format!("no scheme: a folder is named file://{url}").into()
                }
                e => Box::new(e),
            };
            RemoteError::new(&url, RemoteErrorKind::InvalidUrl, Some(why))
        })?;
        // What object_store would refuse as an unknown scheme, or take for another folder than
        // meant, said for what it is.
        let host = parsed.host_str().unwrap_or_default();
        let after_scheme = url.get(parsed.scheme().len() + 1..).unwrap_or_default();
        let misread = match parsed.scheme() {
            // `file:relative` parses as `file:///relative`: a folder at the root.
            "file" if !after_scheme.starts_with('/') => Some(format!(
                "`{after_scheme}` is a relative folder: a file:// URL names an absolute folder \
                 (file:///absolute/{after_scheme})"
            )),
            // `file://./team` or `file://../team`: meant relative, which a URL cannot be.
            "file" if host == "." || host == ".." => Some(format!(
                "`{host}` is a relative folder: a file:// URL names an absolute folder \
                 (file:///absolute/path/to/it)"
            )),
            "file" if !host.is_empty() && host != "localhost" => Some(format!(
                "`{host}` reads as a host: a file:// URL names an absolute folder \
                 (file:///{host}{})",
                parsed.path()
            )),
            "s3" if host.is_empty() => Some("it names no bucket".to_string()),
            _ => None,
        };
        if let Some(why) = misread {
            return Err(RemoteError::new(
                &url,
                RemoteErrorKind::InvalidUrl,
                Some(why.into()),
            ));
        }
        let (scheme, path) = object_store::ObjectStoreScheme::parse(&parsed).map_err(|e| {
            RemoteError::new(&url, RemoteErrorKind::UnsupportedScheme, Some(Box::new(e)))
        })?;
        let (store, prefix, conditional_update): (Arc<dyn ObjectStore>, Path, bool) = match scheme {
            object_store::ObjectStoreScheme::Memory => (
                Arc::new(object_store::memory::InMemory::new()),
                Path::default(),
                true,
            ),
            object_store::ObjectStoreScheme::Local => {
                let folder = parsed
                    .to_file_path()
                    .map_err(|()| RemoteError::new(&url, RemoteErrorKind::InvalidUrl, None))?;
                std::fs::create_dir_all(&folder).map_err(|e| {
                    let kind = match e.kind() {
                        std::io::ErrorKind::PermissionDenied => RemoteErrorKind::Credentials,
                        _ => RemoteErrorKind::BucketNotFound,
                    };
                    let why = format!("cannot create the folder {}: {e}", folder.display());
                    RemoteError::new(&url, kind, Some(why.into()))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&folder)
                    .map_err(|e| RemoteError::new(&url, error::classify(&e), Some(Box::new(e))))?;
                (Arc::new(fs), Path::default(), false)
            }
            object_store::ObjectStoreScheme::AmazonS3 => {
                let prefix = Path::parse(path).map_err(|e| {
                    RemoteError::new(&url, RemoteErrorKind::InvalidUrl, Some(Box::new(e)))
                })?;
                let retry = object_store::RetryConfig {
                    max_retries: self.retries,
                    retry_timeout: self.timeout,
                    backoff: object_store::BackoffConfig {
                        init_backoff: Duration::from_millis(50),
                        max_backoff: Duration::from_secs(1),
                        base: 2.0,
                    },
                };
                // The timeouts as settings, not as a `ClientOptions`, which would replace every
                // client setting read from the environment (AWS_ALLOW_HTTP among them). ckpt
                // bounds every operation itself (a request within `timeout`, a streamed object
                // each piece within it), so the client's own limit on a whole request, body
                // included, is lifted: it would cut off a large object arriving steadily.
                use object_store::ClientConfigKey as C;
                use object_store::aws::AmazonS3ConfigKey as K;
                let mut s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_config(K::Client(C::Timeout), CLIENT_TIMEOUT)
                    .with_config(
                        K::Client(C::ConnectTimeout),
                        format!("{}ms", self.connect_timeout.as_millis()),
                    )
                    .with_retry(retry);
                for (key, value) in &self.options {
                    let key = key.parse().map_err(|e: object_store::Error| {
                        RemoteError::new(&url, RemoteErrorKind::Config, Some(Box::new(e)))
                    })?;
                    s3 = s3.with_config(key, value);
                }
                let s3 = s3.build().map_err(|e| {
                    let kind = match error::classify(&e) {
                        RemoteErrorKind::Unreachable => RemoteErrorKind::Config,
                        kind => kind,
                    };
                    RemoteError::new(&url, kind, Some(Box::new(e)))
                })?;
                (Arc::new(s3), prefix, true)
            }
            _ => {
                return Err(RemoteError::new(
                    &url,
                    RemoteErrorKind::UnsupportedScheme,
                    None,
                ));
            }
        };
        let breaker = Breaker::new(self.breaker_failures, self.breaker_pause);
        let remote = Remote {
            inner: Arc::new(Inner {
                url: url.clone(),
                store,
                prefix,
                conditional_update,
                breaker,
                parts: stream::PartSlots::new(stream::IN_FLIGHT),
                options: self,
            }),
        };
        if remote.inner.options.check == RemoteCheck::Probe {
            remote.probe()?;
        }
        tracing::info!(target: "ckpt", url = %url, "remote opened");
        Ok(remote)
    }
}

impl Remote {
    /// Lists the layout's folder once: the bucket exists, the credentials work, the server
    /// answers.
    fn probe(&self) -> Result<(), RemoteError> {
        let store = Arc::clone(&self.inner.store);
        let at = object::results(&self.inner.prefix);
        // The first page of the listing only: a bucket of many objects is not listed whole at
        // every open.
        let listed = runtime::run(self.inner.options.timeout, async move {
            use futures_util::StreamExt as _;
            match store.list(Some(&at)).next().await {
                Some(Err(e)) => Err(e),
                Some(Ok(_)) | None => Ok(()),
            }
        });
        let url = &self.inner.url;
        match listed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RemoteError::new(
                url,
                error::classify(&e),
                Some(Box::new(e)),
            )),
            Err(runtime::RunError::TimedOut) => Err(RemoteError::new(
                url,
                RemoteErrorKind::Unreachable,
                Some(format!("no answer within {:?}", self.inner.options.timeout).into()),
            )),
            Err(runtime::RunError::NoRuntime(e)) => Err(RemoteError::new(
                url,
                RemoteErrorKind::Runtime,
                Some(e.into()),
            )),
        }
    }
}
