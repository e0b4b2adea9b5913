//! Async calls against sync calls of the same function, interleaved in one process (issue 14),
//! and a 1 ms ticker's lateness beside durable saves on a current-thread runtime.
//!
//! ```text
//! cargo bench --bench async_calls                 # 256 B values, 31 rounds
//! cargo bench --bench async_calls -- 4096 51      # value size, rounds
//! ```
//!
//! * hit: `call` against `call_async(..).await` (inside one tokio current-thread `block_on`,
//!   so the executor's cost is not counted per call), the same ids of one store;
//! * miss + durable save (`Durability::Immediate`): `call` (its thread leads the group commit
//!   and fsyncs) against `call_async` (the save queued, committed by the store's background
//!   thread, awaited), fresh ids each;
//! * ticker: 1,000 awaited misses with durable saves on a current-thread runtime, beside a task
//!   ticking every 1 ms; its worst lateness (tick time to the moment it ran), the same ticker's
//!   alone for as long, and the longest single poll of a call's future (how long ckpt, and the
//!   function's synchronous work, held the executor's thread at once);
//! * yielder: the same saves beside a task that yields at once each time it runs; the longest
//!   gap between two of its polls (the executor's thread held by anything else: the calls, the
//!   runtime, the machine), and the same alone. Unlike the ticker's, no timer is in it.
//!
//! Each round runs every system for the same number of calls back to back, in alternating
//! order; the table gives each system's median ns per call and the median per-round ratio.

mod common;

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const HIT_CALLS: u64 = 5_000;
const MISS_CALLS: u64 = 200;
const TICKER_SAVES: u64 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let size = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(31);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let scratch = Scratch::new("async");
    let store = ckpt_store(&scratch.file("ckpt.redb"));
    let deco = ckpt_decorator(&store, "work");
    let entries = entries_for(size);
    ckpt_fill(&deco, entries, size);
    store.flush().expect("flush");

    println!("interleaved: {rounds} rounds, {size}-byte values, tokio current-thread runtime");
    println!("| call | sync ns/call | async ns/call | median per-round ratio async/sync |");
    println!("|---|---|---|---|");

    let hit_sync = |round: u64| {
        let started = Instant::now();
        for i in 0..HIT_CALLS {
            let n = scattered(round * HIT_CALLS + i, entries);
            black_box(ckpt_call(&deco, n, ARG, size));
        }
        per_call(started, HIT_CALLS)
    };
    let hit_async = |round: u64| {
        rt.block_on(async {
            let started = Instant::now();
            for i in 0..HIT_CALLS {
                let n = scattered(round * HIT_CALLS + i, entries);
                let v = deco
                    .call_async((n, ARG), |(n, s)| async move { compute(n, s, size) })
                    .await
                    .expect("async hit");
                black_box(v);
            }
            per_call(started, HIT_CALLS)
        })
    };
    row("hit", rounds, hit_sync, hit_async);

    let miss_sync = |_| {
        let started = Instant::now();
        for _ in 0..MISS_CALLS {
            black_box(ckpt_call(&deco, fresh(), ARG, size));
        }
        per_call(started, MISS_CALLS)
    };
    let miss_async = |_| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..MISS_CALLS {
                let v = deco
                    .call_async((fresh(), ARG), |(n, s)| async move { compute(n, s, size) })
                    .await
                    .expect("async miss");
                black_box(v);
            }
            per_call(started, MISS_CALLS)
        })
    };
    row("miss + durable save", rounds, miss_sync, miss_async);

    let (mut lags, mut alone, mut polls, mut cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut gaps, mut gaps_cpu, mut gaps_alone) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let run = ticker(&rt, Probe::Ticker, Some(&deco), size, Duration::ZERO);
        lags.push(run.worst);
        polls.push(run.longest_poll);
        cpus.push(run.most_poll_cpu);
        // The control: the ticker as long on its own, for what the machine and the timer add.
        alone.push(ticker(&rt, Probe::Ticker, None, size, run.took).worst);
        let run = ticker(&rt, Probe::Yielder, Some(&deco), size, Duration::ZERO);
        gaps.push(run.worst);
        gaps_cpu.push(run.worst_cpu);
        polls.push(run.longest_poll);
        cpus.push(run.most_poll_cpu);
        gaps_alone.push(ticker(&rt, Probe::Yielder, None, size, run.took).worst);
    }
    gaps.sort();
    gaps_cpu.sort();
    gaps_alone.sort();
    lags.sort();
    alone.sort();
    polls.sort();
    cpus.sort();
    println!();
    println!(
        "ticker: a 1 ms interval task beside {TICKER_SAVES} awaited durable saves, 3 runs: worst lag {:?} (runs: {:?}); alone for as long: {:?}",
        lags[2], lags, alone
    );
    println!(
        "yielder: a task yielding at once beside {TICKER_SAVES} awaited durable saves, 3 runs: longest gap between its polls {gaps:?}, the most CPU time of its thread in one gap {gaps_cpu:?}; alone for as long: {gaps_alone:?}"
    );
    println!(
        "longest single poll of a call (the executor's thread held by ckpt and the function's own synchronous work), 6 runs (the ticker's and the yielder's): wall {polls:?}, the most CPU time of one poll {cpus:?}"
    );
}

fn per_call(started: Instant, calls: u64) -> f64 {
    started.elapsed().as_nanos() as f64 / calls as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs both systems `rounds` times (after one warm-up round), alternating which goes first,
/// and prints their medians.
fn row(name: &str, rounds: u64, sync: impl Fn(u64) -> f64, asynch: impl Fn(u64) -> f64) {
    let (mut s, mut a, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let (ns_s, ns_a) = if round % 2 == 0 {
            let x = sync(round);
            (x, asynch(round))
        } else {
            let y = asynch(round);
            (sync(round), y)
        };
        if round == 0 {
            continue;
        }
        s.push(ns_s);
        a.push(ns_a);
        ratios.push(ns_a / ns_s);
    }
    println!(
        "| {name} | {:.0} | {:.0} | {:.3} |",
        median(&mut s),
        median(&mut a),
        median(&mut ratios)
    );
}

/// What one run of [`ticker`] saw.
struct Run {
    /// The ticker's worst lateness, or the yielder's longest gap between polls.
    worst: Duration,
    /// The yielder's most CPU time of its thread between two of its polls (zero for the ticker).
    worst_cpu: Duration,
    /// How long the saves took.
    took: Duration,
    /// The longest single poll of a call's future, on the clock and in the thread's CPU time.
    longest_poll: Duration,
    most_poll_cpu: Duration,
}

/// What runs beside the calls on the executor.
#[derive(Clone, Copy)]
enum Probe {
    /// A task ticking every 1 ms (tokio's timer): its worst lateness.
    Ticker,
    /// A task that yields at once, every time it runs: the longest gap between two of its
    /// polls, the longest the executor's thread was held by something else (no timer involved,
    /// so the timer's millisecond rounding and the thread's wake-up from its park are not in it).
    Yielder,
}

/// The worst lateness of a 1 ms ticker task (or the yielder's longest gap) while [`TICKER_SAVES`] awaited durable saves run
/// on the same current-thread runtime (without a decorator: while the main task sleeps for
/// `idle`), how long the saves took, and the longest single poll of a call's future.
fn ticker(
    rt: &tokio::runtime::Runtime,
    probe: Probe,
    deco: Option<&Ckpt>,
    size: usize,
    idle: Duration,
) -> Run {
    rt.block_on(async {
        let worst = Arc::new(Mutex::new(Duration::ZERO));
        let worst_cpu = Arc::new(Mutex::new(Duration::ZERO));
        let ticking = {
            let (worst, worst_cpu) = (worst.clone(), worst_cpu.clone());
            tokio::spawn(async move {
                match probe {
                    Probe::Ticker => {
                        let mut every = tokio::time::interval(Duration::from_millis(1));
                        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                        loop {
                            let due = every.tick().await;
                            let late = tokio::time::Instant::now() - due;
                            let mut w = worst.lock().expect("lag");
                            *w = (*w).max(late);
                        }
                    }
                    Probe::Yielder => loop {
                        let (yielded, cpu) = (Instant::now(), thread_cpu());
                        tokio::task::yield_now().await;
                        let gap = yielded.elapsed();
                        let gap_cpu = thread_cpu().saturating_sub(cpu);
                        let mut w = worst.lock().expect("gap");
                        *w = (*w).max(gap);
                        let mut c = worst_cpu.lock().expect("gap");
                        *c = (*c).max(gap_cpu);
                    },
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        let (mut longest, mut most_cpu) = (Duration::ZERO, Duration::ZERO);
        match deco {
            Some(deco) => {
                for _ in 0..TICKER_SAVES {
                    let mut call =
                        std::pin::pin!(deco.call_async((fresh(), ARG), |(n, s)| async move {
                            compute(n, s, size)
                        }));
                    let v = std::future::poll_fn(|cx| {
                        let (polled, cpu) = (Instant::now(), thread_cpu());
                        let poll = call.as_mut().poll(cx);
                        longest = longest.max(polled.elapsed());
                        most_cpu = most_cpu.max(thread_cpu().saturating_sub(cpu));
                        poll
                    })
                    .await
                    .expect("async miss");
                    black_box(v);
                }
            }
            None => tokio::time::sleep(idle).await,
        }
        let took = started.elapsed();
        // The ticker records a late tick when it runs again.
        tokio::time::sleep(Duration::from_millis(5)).await;
        ticking.abort();
        let (worst, worst_cpu) = (*worst.lock().expect("lag"), *worst_cpu.lock().expect("gap"));
        Run {
            worst,
            worst_cpu,
            took,
            longest_poll: longest,
            most_poll_cpu: most_cpu,
        }
    })
}

/// This thread's CPU time: a poll that took long on the clock but not on the CPU was preempted
/// (the machine's doing), not busy.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
