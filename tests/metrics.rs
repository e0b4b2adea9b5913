//! With the feature `metrics`, every call is counted live through the `metrics` facade, labelled
//! with its function, for whatever recorder the app installs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ckpt::store::ManualClock;
use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, Limits, OnError, Store};
use common::TempDir;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// A counter that is an atomic we can read.
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// Counters by name and sorted labels.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<BTreeMap<String, Arc<Cell>>>>);

impl Capture {
    fn key(name: &str, labels: &[(&str, &str)]) -> String {
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        format!("{name}{{{}}}", labels.join(","))
    }
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(&Self::key(name, labels))
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let name = Self::key(key.name(), &labels);
        let cell = Arc::clone(
            self.0
                .lock()
                .unwrap()
                .entry(name)
                .or_insert_with(|| Arc::new(Cell(AtomicU64::new(0)))),
        );
        Counter::from_arc(cell)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn calls_and_evictions_are_counted_live_per_function() {
    let dir = TempDir::new("metrics");
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
        let clock = ManualClock::new(SystemTime::now());
        let store = Store::builder()
            .clock(clock.clone())
            .limits(Limits::new().max_age(Duration::from_secs(60)))
            .open(dir.store_path())
            .unwrap();
        let f = DecoratorCheckpoint::new(Function::new("app", "square"), AutoIdentifier, store)
            .with_on_error(OnError::Raise);
        for x in [1u64, 2, 3, 1, 1, 2] {
            f.call(x, |x| {
                std::thread::sleep(Duration::from_millis(2));
                x * x
            })
            .unwrap();
        }
        let function = [("function", "app::square")];
        assert_eq!(capture.get("ckpt_hits_total", &function), 3);
        assert_eq!(capture.get("ckpt_misses_total", &function), 3);
        assert_eq!(capture.get("ckpt_saves_total", &function), 3);
        assert!(capture.get("ckpt_time_spent_nanoseconds_total", &function) >= 6_000_000);
        assert!(capture.get("ckpt_time_saved_nanoseconds_total", &function) >= 6_000_000);
        // The same counts as the decorator's own.
        assert_eq!(f.stats().hits, 3);

        // Three entries expire with the next write, counted by cause.
        clock.advance(Duration::from_secs(120));
        f.call(9u64, |x| x * x).unwrap();
        assert_eq!(
            capture.get(
                "ckpt_evictions_total",
                &[("function", "app::square"), ("cause", "age")]
            ),
            3
        );
    });
}
