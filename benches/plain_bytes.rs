//! `cargo bench --bench plain_bytes [-- SIZE]` (from benches/). Hits of a 1 MiB result (or SIZE bytes): a plain Vec<u8> against a ByteBuf, and postcard decoding the same
//! bytes from one buffer, interleaved round by round; medians of 15 rounds of 20 hits.
use std::time::Instant;

use ckpt::{AutoIdentifier, DecoratorCheckpoint, Function, OnError, Store};
use serde_bytes::ByteBuf;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let size: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(1 << 20, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("vecbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(dir.join("s.redb")).unwrap();
    let value: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let vec_d = DecoratorCheckpoint::new(Function::new("b", "vec"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    let buf_d = DecoratorCheckpoint::new(Function::new("b", "buf"), AutoIdentifier, store.clone())
        .with_on_error(OnError::Raise);
    vec_d.call(1u64, |_| value.clone()).unwrap();
    buf_d.call(1u64, |_| ByteBuf::from(value.clone())).unwrap();
    let encoded = postcard::to_allocvec(&value).unwrap();
    let (mut tv, mut tb, mut tp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..20 {
            let v: Vec<u8> = vec_d.call(1u64, |_| -> Vec<u8> { unreachable!() }).unwrap();
            std::hint::black_box(v);
        }
        tv.push(t.elapsed().as_secs_f64() / 20.0);
        let t = Instant::now();
        for _ in 0..20 {
            let v: ByteBuf = buf_d.call(1u64, |_| -> ByteBuf { unreachable!() }).unwrap();
            std::hint::black_box(v);
        }
        tb.push(t.elapsed().as_secs_f64() / 20.0);
        let t = Instant::now();
        for _ in 0..20 {
            let v: Vec<u8> = postcard::from_bytes(std::hint::black_box(&encoded)).unwrap();
            std::hint::black_box(v);
        }
        tp.push(t.elapsed().as_secs_f64() / 20.0);
    }
    let (v, b, p) = (median(tv), median(tb), median(tp));
    println!(
        "size {size}: Vec<u8> hit {:.1} us, ByteBuf hit {:.1} us, postcard::from_bytes {:.1} us; Vec/ByteBuf {:.2}x, Vec/postcard {:.2}x",
        v * 1e6,
        b * 1e6,
        p * 1e6,
        v / b,
        v / p
    );
    drop((vec_d, buf_d, store));
    let _ = std::fs::remove_dir_all(&dir);
}
