//! Memoizes a slow computation into the default store (`.ckpt/checkpoints.redb`, or under
//! `CKPT_DIR`). Run it twice: the second run is served from disk.
//!
//! ```text
//! cargo run --release --manifest-path quickstart/Cargo.toml
//! ```

use std::time::{Duration, Instant};

ckpt::checkpoint! {
    /// Counts the primes below `limit` by trial division: deliberately slow.
    fn count_primes(limit: u64) -> u64 {
        (2..limit)
            .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
            .count() as u64
    }
}

fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = ckpt::default_store()?;
    println!("ckpt quickstart: store {}\n", store.path().display());

    let started = Instant::now();
    for limit in [1_000_000, 2_000_000, 3_000_000, 4_000_000] {
        let t = Instant::now();
        let primes = count_primes(limit);
        let took = t.elapsed();
        let how = if took > Duration::from_millis(5) {
            "computed"
        } else {
            "from disk"
        };
        println!(
            "  count_primes({limit:>9}) = {primes:>6}   {how:<9} in {}",
            human(took)
        );
    }
    println!("\n  all calls: {}", human(started.elapsed()));

    let mine = count_primes::stats();
    println!(
        "\nthis run:  {} hits, {} misses, compute time saved {}",
        mine.hits,
        mine.misses,
        human(mine.time_saved())
    );
    let all = store.stats()?;
    println!(
        "all runs:  {} hits, {} misses, {} saves, {} entries ({} bytes stored, file {} KiB), \
         compute time saved {}",
        all.calls.hits,
        all.calls.misses,
        all.calls.saves,
        all.entries,
        all.stored_bytes,
        all.file_bytes / 1024,
        human(all.calls.time_saved())
    );
    if mine.misses > 0 {
        println!("\nRun it again: every call will be served from disk.");
    }
    Ok(())
}
