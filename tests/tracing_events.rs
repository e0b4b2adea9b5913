//! ckpt tells the app's `tracing` subscriber what it does: a call's outcome at TRACE, each
//! computation as a span, a dropped corrupt entry and a degraded store at WARN, evictions at
//! DEBUG with their counts, opening, verifying and compacting at INFO with their duration.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ckpt::store::ManualClock;
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Limits, OnError, Store};
use common::TempDir;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event or span as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    span: bool,
    level: Level,
    target: String,
    name: String,
    fields: Vec<(String, String)>,
    /// The spans entered on this thread when the event was emitted, innermost last.
    inside: Vec<String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

/// A subscriber that keeps everything it is told, in order.
#[derive(Clone, Default)]
struct Collector {
    seen: Arc<Mutex<Vec<Seen>>>,
    names: Arc<Mutex<Vec<String>>>,
    stack: Arc<Mutex<Vec<u64>>>,
    next: Arc<AtomicU64>,
}

impl Collector {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut names = self.names.lock().unwrap();
        names.resize(id as usize + 1, String::new());
        names[id as usize] = span.metadata().name().to_string();
        self.seen.lock().unwrap().push(Seen {
            span: true,
            level: *span.metadata().level(),
            target: span.metadata().target().to_string(),
            name: span.metadata().name().to_string(),
            fields,
            inside: Vec::new(),
        });
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let names = self.names.lock().unwrap();
        let inside = self
            .stack
            .lock()
            .unwrap()
            .iter()
            .map(|id| names[*id as usize].clone())
            .collect();
        self.seen.lock().unwrap().push(Seen {
            span: false,
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            name: event.metadata().name().to_string(),
            fields,
            inside,
        });
    }
    fn enter(&self, span: &Id) {
        self.stack.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, span: &Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(at) = stack.iter().rposition(|id| *id == span.into_u64()) {
            stack.remove(at);
        }
    }
}

fn ckpt_events(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.target == "ckpt").collect()
}

#[test]
fn a_call_s_outcome_and_its_computation() {
    let dir = TempDir::new("tracing-calls");
    let collector = Collector::default();
    tracing::subscriber::with_default(collector.clone(), || {
        let store = Store::open(dir.store_path()).unwrap();
        let opened = collector.take();
        let open = ckpt_events(&opened)
            .into_iter()
            .find(|s| s.field("message") == Some("store opened"))
            .expect("opening is an INFO event");
        assert_eq!(open.level, Level::INFO);
        assert!(open.field("elapsed_ms").is_some(), "{open:?}");

        let f = DecoratorCheckpoint::new(Function::new("traced", "square"), AutoIdentifier, store)
            .with_on_error(OnError::Raise);
        let computed = f
            .call(7u64, |x| {
                tracing::info!(target: "app", "inside the function");
                x * x
            })
            .unwrap();
        assert_eq!(computed, 49);
        let miss = collector.take();
        let span = ckpt_events(&miss)
            .into_iter()
            .find(|s| s.span && s.name == "compute")
            .expect("the computation is a span");
        assert_eq!(span.level, Level::DEBUG);
        assert_eq!(span.field("function"), Some("square"));
        assert_eq!(span.field("module"), Some("traced"));
        let id = f.identify(&7u64).unwrap().to_string();
        assert_eq!(span.field("id"), Some(id.as_str()));
        let inner = miss.iter().find(|s| s.target == "app").unwrap();
        assert_eq!(
            inner.inside,
            ["compute"],
            "the function's own events nest in the span"
        );
        let outcome = ckpt_events(&miss)
            .into_iter()
            .find(|s| s.field("outcome") == Some("computed"))
            .expect("a computation's outcome");
        assert_eq!(outcome.level, Level::TRACE);
        assert!(outcome.field("compute_ns").is_some());

        assert_eq!(f.call(7u64, |_| -> u64 { unreachable!() }).unwrap(), 49);
        let hit = collector.take();
        let hit = ckpt_events(&hit)
            .into_iter()
            .find(|s| s.field("outcome") == Some("hit"))
            .expect("a hit's outcome");
        assert_eq!(hit.level, Level::TRACE);
        assert_eq!(hit.field("id"), Some(id.as_str()));
        assert!(hit.field("saved_ns").is_some());
    });
}

#[test]
fn upkeep_and_damage_at_their_levels() {
    let dir = TempDir::new("tracing-upkeep");
    let collector = Collector::default();
    tracing::subscriber::with_default(collector.clone(), || {
        let clock = ManualClock::new(std::time::SystemTime::now());
        let store = Store::builder()
            .clock(clock.clone())
            .limits(Limits::new().max_age(Duration::from_secs(60)))
            .open(dir.store_path())
            .unwrap();
        let f =
            DecoratorCheckpoint::new(Function::new("traced", "f"), AutoIdentifier, store.clone())
                .with_on_error(OnError::Raise);
        for i in 0..3u64 {
            f.call(i, |x| x + 1).unwrap();
        }
        clock.advance(Duration::from_secs(120));
        collector.take();
        // The next write expires the three.
        f.call(99u64, |x| x + 1).unwrap();
        let seen = collector.take();
        let evicted = ckpt_events(&seen)
            .into_iter()
            .find(|s| s.field("evicted").is_some())
            .expect("expirations are a DEBUG event");
        assert_eq!(evicted.level, Level::DEBUG);
        assert_eq!(evicted.field("evicted"), Some("3"));
        assert_eq!(evicted.field("age"), Some("3"));

        // A damaged record: dropped with a WARN.
        let id = f.identify(&99u64).unwrap();
        let garbage = vec![0x5a; 64];
        ckpt::Cache::save(
            &store,
            &id,
            &ckpt::testing::entry(f.function(), &garbage, Duration::ZERO),
        )
        .unwrap();
        assert_eq!(f.call(99u64, |x| x + 1).unwrap(), 100);
        let seen = collector.take();
        let dropped = ckpt_events(&seen)
            .into_iter()
            .find(|s| s.level == Level::WARN)
            .expect("a dropped corrupt entry is a WARN event");
        assert_eq!(dropped.field("id"), Some(id.to_string().as_str()));

        store.verify().unwrap();
        store.compact().unwrap();
        let seen = collector.take();
        for message in ["store verified", "store compacted"] {
            let e = ckpt_events(&seen)
                .into_iter()
                .find(|s| s.field("message") == Some(message))
                .unwrap_or_else(|| panic!("no {message:?} event in {seen:?}"));
            assert_eq!(e.level, Level::INFO);
            assert!(e.field("elapsed_ms").is_some());
        }
    });
}

/// A subscriber that calls `Store::stats` when it is told of evictions, and the first time
/// also makes a call that saves.
struct StatsOnEviction {
    store: Arc<std::sync::OnceLock<Store>>,
    entries_seen: Arc<Mutex<Vec<u64>>>,
    saved: std::sync::atomic::AtomicBool,
    inner: Arc<Mutex<Option<u64>>>,
}

impl Subscriber for StatsOnEviction {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        if fields.iter().any(|(name, _)| name == "evicted")
            && let Some(store) = self.store.get()
        {
            let entries = store.stats().unwrap().entries;
            self.entries_seen.lock().unwrap().push(entries);
            if !self.saved.swap(true, Ordering::SeqCst) {
                let inner = Function::new("traced", "inner");
                let d = DecoratorCheckpoint::new(inner, AutoIdentifier, store.clone())
                    .with_on_error(OnError::Raise);
                *self.inner.lock().unwrap() = d.call(5u64, |x| x * 2).ok();
            }
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A subscriber may call the store from the eviction event, even save: it is emitted once the
/// write has committed and let go of the store's writer, and once a group commit has handed out
/// its results. (Before, it was emitted inside the write, and this deadlocked.)
#[test]
fn a_subscriber_may_call_the_store_from_an_eviction_event() {
    let dir = TempDir::new("tracing-reentrant");
    let store = Store::builder()
        .limits(Limits::new().max_entries(2))
        .open(dir.store_path())
        .unwrap();
    let cell = Arc::new(std::sync::OnceLock::new());
    let _ = cell.set(store.clone());
    let entries_seen = Arc::new(Mutex::new(Vec::new()));
    let inner = Arc::new(Mutex::new(None));
    let subscriber = StatsOnEviction {
        store: cell,
        entries_seen: Arc::clone(&entries_seen),
        saved: std::sync::atomic::AtomicBool::new(false),
        inner: Arc::clone(&inner),
    };
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || {
            let f = DecoratorCheckpoint::new(Function::new("traced", "g"), AutoIdentifier, store)
                .with_on_error(OnError::Raise);
            for i in 0..4u64 {
                f.call(i, |x| x + 1).unwrap();
            }
        });
        let _ = done.send(());
    });
    if finished.recv_timeout(Duration::from_secs(20)).is_err() {
        // Not a panic: the process could not exit (its exit hook flushes the store, whose
        // writer the deadlocked thread holds).
        eprintln!("the calls deadlocked in the subscriber");
        std::process::abort();
    }
    let seen = entries_seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no eviction event");
    assert!(seen.iter().all(|&n| n <= 2), "{seen:?}");
    assert_eq!(
        *inner.lock().unwrap(),
        Some(10),
        "the call made by the subscriber"
    );
}

/// With a subscriber and no warning hook, a degraded store's warning is a WARN event (not a line
/// on standard error).
#[test]
fn warnings_go_to_the_subscriber() {
    let collector = Collector::default();
    tracing::subscriber::with_default(collector.clone(), || {
        struct Down;
        impl ckpt::Cache for Down {
            fn save(&self, _: &ckpt::CheckpointId, _: &ckpt::cache::Entry<'_>) -> ckpt::Result<()> {
                Err(ckpt::Error::cache(
                    "tracing test: the cache is down",
                    std::io::Error::other("refused"),
                ))
            }
            fn retrieve(&self, _: &ckpt::CheckpointId) -> ckpt::Result<Option<Vec<u8>>> {
                Err(ckpt::Error::cache(
                    "tracing test: the cache is down",
                    std::io::Error::other("refused"),
                ))
            }
        }
        let f = DecoratorCheckpoint::new(Function::new("traced", "down"), AutoIdentifier, Down);
        assert_eq!(f.call(1u64, |x| x + 1).unwrap(), 2);
        let seen = collector.take();
        let warned = ckpt_events(&seen)
            .into_iter()
            .find(|s| s.level == Level::WARN)
            .expect("the warning is a WARN event");
        assert!(
            warned
                .field("message")
                .unwrap()
                .contains("the cache is down"),
            "{warned:?}"
        );
    });
}
