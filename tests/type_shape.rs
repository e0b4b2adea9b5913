//! The type fingerprint covers the shape of a result type, not its name: a record saved as one
//! layout and read as another is a miss (a counted type mismatch), never a wrong value, even
//! when the two types have the same name. Each pair of types below is declared in two blocks of
//! one function, where `std::any::type_name` spells both alike (the test checks it), so a
//! name-based fingerprint cannot tell them apart.

mod common;

use std::fmt::Debug;

use ckpt::{
    AutoIdentifier, Cache, CallStats, DecoratorCheckpoint, Function, MemoryCache, OnError, Store,
};
use common::TempDir;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn deco<C: Cache>(cache: C, name: &'static str) -> DecoratorCheckpoint<AutoIdentifier, C> {
    DecoratorCheckpoint::new(Function::new("type_shape", name), AutoIdentifier, cache)
        .with_on_error(OnError::Raise)
}

/// Saves `a` as the result of a call, then makes the same call expecting a `B` whose fresh
/// value is `b`: returns what the second call returned and its stats.
fn save_then_read<A, B, C>(cache: C, name: &'static str, a: A, b: B) -> (B, CallStats)
where
    A: Serialize + DeserializeOwned + Debug,
    B: Serialize + DeserializeOwned + Debug,
    C: Cache + Clone,
{
    assert_eq!(
        std::any::type_name_of_val(&a),
        std::any::type_name_of_val(&b),
        "the two types must share a name for this test to mean anything"
    );
    let first = deco(cache.clone(), name);
    first.call(1u32, |_| a).unwrap();
    assert_eq!(first.stats().saves, 1);
    let second = deco(cache, name);
    let got = second.call(1u32, |_| b).unwrap();
    (got, second.stats())
}

/// The second call computed `want` (a miss counted as a type mismatch) rather than decoding
/// the first call's bytes into another layout.
fn assert_recomputed<B: Debug>(case: &str, (got, stats): (B, CallStats), want: &str) {
    let got = format!("{got:?}");
    // Only the start of a wrong value: a large one would flood the output.
    let start: String = got.chars().take(120).collect();
    assert!(got == want, "{case}: a wrong value: {start}");
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.type_mismatches,
            stats.corrupt
        ),
        (0, 1, 1, 0),
        "{case}: {stats:?}"
    );
}

#[test]
fn reordered_fields_are_another_type() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
            y: u32,
        }
        Point { x: 1, y: 2 }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            y: u32,
            x: u32,
        }
        Point { y: 9, x: 8 }
    };
    let got = save_then_read(MemoryCache::new(), "swap", a, b);
    assert_recomputed("swapped fields", got, "Point { y: 9, x: 8 }");
}

#[test]
fn a_field_of_another_primitive_type_is_another_type() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
        }
        Point { x: 4 }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: i32,
        }
        Point { x: -5 }
    };
    let got = save_then_read(MemoryCache::new(), "sign", a, b);
    assert_recomputed("u32 → i32", got, "Point { x: -5 }");
}

#[test]
fn an_added_field_is_another_type() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
            y: u32,
        }
        Point { x: 1, y: 2 }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
            y: u32,
            z: u32,
        }
        Point { x: 1, y: 2, z: 3 }
    };
    // Read by name, the short payload would fail to decode: a miss too, but taken for damage.
    let got = save_then_read(MemoryCache::new(), "added", a, b);
    assert_recomputed("added field", got, "Point { x: 1, y: 2, z: 3 }");
}

#[test]
fn a_renamed_variant_is_another_type() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        enum Shape {
            Circle(u32),
        }
        Shape::Circle(3)
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        enum Shape {
            Disc(u32),
        }
        Shape::Disc(4)
    };
    let got = save_then_read(MemoryCache::new(), "variant", a, b);
    assert_recomputed("renamed variant", got, "Disc(4)");
}

#[test]
fn a_changed_nested_type_is_another_type() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Inner(u16, u16);
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Outer {
            items: Vec<Option<Inner>>,
        }
        Outer {
            items: vec![Some(Inner(1, 2))],
        }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Inner(u16, i16);
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Outer {
            items: Vec<Option<Inner>>,
        }
        Outer {
            items: vec![Some(Inner(5, -6))],
        }
    };
    let got = save_then_read(MemoryCache::new(), "nested", a, b);
    assert_recomputed(
        "nested change",
        got,
        "Outer { items: [Some(Inner(5, -6))] }",
    );
}

#[test]
fn the_same_shape_in_another_place_still_hits() {
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
            y: u32,
        }
        Point { x: 1, y: 2 }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Point {
            x: u32,
            y: u32,
        }
        Point { x: 8, y: 9 }
    };
    let (got, stats) = save_then_read(MemoryCache::new(), "same", a, b);
    assert_eq!(format!("{got:?}"), "Point { x: 1, y: 2 }");
    assert_eq!((stats.hits, stats.misses), (1, 0));
}

/// A large record, lent by the store in chunks, is checked against the shape as well.
#[test]
fn a_large_record_in_chunks_of_another_layout_is_a_miss() {
    let dir = TempDir::new("type-shape-large");
    let store = Store::open(dir.store_path()).unwrap();
    let a = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Table {
            rows: Vec<u32>,
            scale: u32,
        }
        Table {
            rows: vec![7; 300_000],
            scale: 1,
        }
    };
    let b = {
        #[derive(serde::Serialize, serde::Deserialize, Debug)]
        struct Table {
            rows: Vec<i32>,
            scale: u32,
        }
        Table {
            rows: vec![-1; 2],
            scale: 2,
        }
    };
    let got = save_then_read(store, "large", a, b);
    assert_recomputed("large", got, "Table { rows: [-1, -1], scale: 2 }");
}

/// A type whose `Deserialize` rejects the tracer's placeholder values cannot be traced: it is
/// fingerprinted by its name and the running build, and still round-trips within a build.
#[test]
fn an_untraceable_type_round_trips_and_is_not_fingerprinted_by_name_alone() {
    let traced = {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct Email(String);
        ckpt::type_fingerprint::<Email>()
    };
    let (untraced, name) = {
        #[derive(serde::Serialize, Debug, PartialEq)]
        struct Email(String);
        impl<'de> serde::Deserialize<'de> for Email {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s.contains('@') {
                    Ok(Email(s))
                } else {
                    Err(serde::de::Error::custom("not an address"))
                }
            }
        }
        let cache = MemoryCache::new();
        let d = deco(cache.clone(), "untraceable");
        let make = |n: u32| Email(format!("user{n}@example.org"));
        assert_eq!(d.call(5u32, make).unwrap(), make(5));
        assert_eq!(
            d.call(5u32, |_| -> Email { unreachable!("saved") })
                .unwrap(),
            make(5)
        );
        assert_eq!((d.stats().hits, d.stats().misses), (1, 1));
        (
            ckpt::type_fingerprint::<Email>(),
            std::any::type_name::<Email>(),
        )
    };
    // Same name, same bytes on the wire; one traced, one not: two fingerprints.
    assert_ne!(traced, untraced);
    assert_ne!(
        untraced,
        xxhash_rust::xxh3::xxh3_64(name.as_bytes()),
        "not the name alone"
    );
}
