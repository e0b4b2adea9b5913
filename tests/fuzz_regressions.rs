//! The fuzz harnesses (`fuzz/src/lib.rs`) on stable: every input in `fuzz/regressions/<target>/`
//! (each crash or hang the fuzzer found, kept once fixed) replays here, then a batch of
//! generated inputs. `CKPT_FUZZ_SMOKE` sets how many generated inputs per target (default 64).

mod common;

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

use common::{Rng, within};

fn replay(target: &'static str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"));
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        eprintln!("{target}: replaying {}", file.display());
        within(120, &file.display().to_string(), move || run(&data));
    }
    let n: u64 = std::env::var("CKPT_FUZZ_SMOKE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let mut rng = Rng::from_env("CKPT_FUZZ_SEED", 0xf022);
    for i in 0..n {
        let len = rng.below(if i % 4 == 0 { 2048 } else { 96 }) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        within(120, &format!("{target} generated input {i}"), move || {
            run(&data)
        });
    }
    eprintln!(
        "{target}: {} regression files, {n} generated inputs",
        files.len()
    );
}

#[test]
fn ops_regressions() {
    replay("ops", harness::ops);
}

#[test]
fn decode_regressions() {
    replay("decode", harness::decode);
}

#[test]
fn open_regressions() {
    replay("open", harness::open);
}

/// The open inputs again with `open_check(OpenCheck::Trust)` (`CKPT_FUZZ_TRUST=1` in the fuzzer).
#[test]
fn open_trusting_regressions() {
    replay("open", harness::open_trusting);
}
