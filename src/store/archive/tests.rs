//! Unit tests of the archive format: the header and function frames round-trip, and damage to
//! either is refused, never a panic.

use std::time::{Duration, UNIX_EPOCH};

use xxhash_rust::xxh3::Xxh3Default;

use super::export::{function_body, header};
use super::import::{Reading, parse_function, read_header};
use super::*;

#[test]
fn header_round_trips_and_rejects_damage() {
    let h = header(1234);
    let read = |bytes: &[u8]| {
        let mut r = Reading {
            inner: bytes,
            hash: Xxh3Default::new(),
            bytes: 0,
        };
        read_header(&mut r)
    };
    assert_eq!(read(&h).unwrap(), UNIX_EPOCH + Duration::from_millis(1234));
    for i in 0..HEADER_LEN {
        let mut b = h;
        b[i] ^= 0x10;
        assert!(read(&b).is_err(), "flip in byte {i} accepted");
    }
    let mut newer = h;
    newer[8] = 2;
    assert!(read(&newer).unwrap_err().to_string().contains("newer"));
    assert!(
        read(&h[..5])
            .unwrap_err()
            .to_string()
            .contains("not a ckpt archive")
    );
    assert!(
        read(&h[..20])
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
}

#[test]
fn function_frames_round_trip() {
    let f = Function::new("a::b", "c")
        .with_code_hash(7)
        .with_version("v2");
    let record = FunctionRecord {
        module: "a::b".into(),
        name: "c".into(),
        code_version: f.code_version(),
        code_hash: Some(7),
        version: Some("v2".into()),
        ..Default::default()
    };
    assert!(identity_of(f.key(), &record).is_some());
    let body = function_body(f.key(), &record);
    let (key, back) = parse_function(&body).unwrap();
    assert_eq!(key, f.key());
    assert_eq!(back.function, f);
    // Every truncation is refused, never a panic.
    for cut in 0..body.len() {
        assert!(parse_function(&body[..cut]).is_err());
    }
    let mut lying = body.clone();
    lying[25..29].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_function(&lying).is_err());
}
