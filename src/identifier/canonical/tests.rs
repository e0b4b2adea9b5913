//! Unit tests of the canonical encoding: `Hasher128` against the streaming hasher, the bytes of
//! scalars and sequences, NaN, `collect_str`, which sets and maps count as unordered and that
//! their order does not matter.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

fn bytes<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, v).unwrap();
    out
}

#[test]
fn hasher128_digests_as_the_streaming_hasher_does() {
    let data: Vec<u8> = (0..1200u32).map(|i| (i * 31 % 251) as u8).collect();
    for len in (0..=600).chain([767, 768, 769, 1024, 1200]) {
        for chunk in [1, 3, 8, 17, 64, 255, 256, 257, 1200] {
            let mut fast = Hasher128::new();
            let mut slow = Xxh3Default::new();
            for piece in data[..len].chunks(chunk) {
                fast.put(piece);
                slow.put(piece);
            }
            assert_eq!(
                fast.digest128(),
                slow.digest128(),
                "len {len}, chunk {chunk}"
            );
            assert_eq!(fast.digest128(), xxh3_128(&data[..len]));
        }
    }
}

#[test]
fn ids_are_unchanged_by_the_buffered_hasher() {
    // Computed with the streaming hasher before Hasher128 replaced it: short and long
    // arguments, a map, an unordered sequence with a long element, nested collections.
    use crate::{AutoIdentifier, Function};
    use std::collections::BTreeMap;
    let f = Function::new("golden", "f").with_version("1");
    let long = "x".repeat(1000);
    let id = |v: &dyn Fn() -> crate::CheckpointId| v().to_string();
    let m: HashMap<String, u32> = (0..20).map(|i| (i.to_string(), i)).collect();
    let b: BTreeMap<u8, Vec<u8>> = (0..5).map(|i| (i, vec![i; 300])).collect();
    let unordered = crate::Unordered(vec![long.clone(), "a".into()]);
    let cases: [(String, &str); 6] = [
        (
            id(&|| {
                AutoIdentifier
                    .id_of(&f, &(7u64, "0123456789abcdef0123456789abcdef"))
                    .unwrap()
            }),
            "b25b88f00f1fd23baa23c2ae84915d24",
        ),
        (
            id(&|| {
                AutoIdentifier
                    .id_of(&f, &(long.as_str(), 1.5f64, Some(3u8)))
                    .unwrap()
            }),
            "56c201b502b7bfe2ddde8e684b644f0e",
        ),
        (
            id(&|| AutoIdentifier.id_of(&f, &m).unwrap()),
            "cf9994f871cf08a35776447735d214bb",
        ),
        (
            id(&|| AutoIdentifier.id_of(&f, &unordered).unwrap()),
            "d8c099b9b16bb983cae75216b0899ff7",
        ),
        (
            id(&|| AutoIdentifier.id_of(&f, &b).unwrap()),
            "0f88aac6d5007d849cdd6914da751c62",
        ),
        (
            id(&|| AutoIdentifier.id_of(&f, &()).unwrap()),
            "cf621e2a2b76a641e225bfabf54dfd02",
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
}

#[test]
fn scalars_are_tagged_little_endian() {
    assert_eq!(bytes(&7u32), [tag::U32, 7, 0, 0, 0]);
    assert_eq!(bytes(&-1i8), [tag::I8, 0xff]);
    assert_eq!(bytes(&true), [tag::BOOL, 1]);
    assert_eq!(bytes("ab"), [tag::STR, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b']);
    assert_eq!(bytes(&None::<u8>), [tag::NONE]);
    assert_eq!(bytes(&Some(1u8)), [tag::SOME, tag::U8, 1]);
}

#[test]
fn sequences_and_tuples_are_delimited() {
    assert_eq!(
        bytes(&vec![1u8, 2]),
        [tag::SEQ, tag::U8, 1, tag::U8, 2, tag::END]
    );
    assert_eq!(bytes(&(1u8,)), [tag::TUPLE, tag::U8, 1, tag::END]);
    // ([1], [2]) and ([1, 2], []) must differ.
    assert_ne!(
        bytes(&(vec![1u8], vec![2u8])),
        bytes(&(vec![1u8, 2], Vec::<u8>::new()))
    );
}

#[test]
fn nan_is_canonical() {
    assert_eq!(bytes(&f64::NAN), bytes(&-f64::NAN));
    assert_ne!(bytes(&0.0f64), bytes(&-0.0f64));
}

#[test]
fn collect_str_equals_serialize_str() {
    struct Shown;
    impl Serialize for Shown {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("{}-{}", 12, "x"))
        }
    }
    assert_eq!(bytes(&Shown), bytes("12-x"));
}

#[test]
fn set_detection_by_type_name() {
    assert!(is_arbitrary_order::<&HashSet<u32>>(ARBITRARY_ORDER_SETS));
    assert!(is_arbitrary_order::<&BTreeSet<Vec<u8>>>(
        ARBITRARY_ORDER_SETS
    ));
    assert!(!is_arbitrary_order::<&Vec<HashSet<u32>>>(
        ARBITRARY_ORDER_SETS
    ));
    assert!(!is_arbitrary_order::<&[u32]>(ARBITRARY_ORDER_SETS));
    assert!(!is_arbitrary_order::<&[HashSet<u32>]>(ARBITRARY_ORDER_SETS));
    assert!(!is_arbitrary_order::<&[BTreeSet<u32>]>(
        ARBITRARY_ORDER_SETS
    ));
    assert!(!is_arbitrary_order::<&HashMap<u32, u32>>(
        ARBITRARY_ORDER_SETS
    ));
    assert!(is_arbitrary_order::<&HashMap<u32, u32>>(
        ARBITRARY_ORDER_MAPS
    ));
    assert!(is_arbitrary_order::<&BTreeMap<u32, u32>>(
        ARBITRARY_ORDER_MAPS
    ));
    // A name is not a type: a user's `…Set` or `…Map` is not one of them.
    struct ChangeSet;
    struct OrderedMap;
    assert!(!is_arbitrary_order::<&ChangeSet>(ARBITRARY_ORDER_SETS));
    assert!(!is_arbitrary_order::<&OrderedMap>(ARBITRARY_ORDER_MAPS));
}

#[test]
fn sets_and_maps_ignore_order() {
    let a: HashSet<u32> = (0..100).collect();
    let b: HashSet<u32> = (0..100).rev().collect();
    assert_eq!(bytes(&a), bytes(&b));
    assert_eq!(bytes(&a), bytes(&(0..100).collect::<BTreeSet<u32>>()));
    let m1: HashMap<String, u32> = (0..50).map(|i| (i.to_string(), i)).collect();
    let m2: HashMap<String, u32> = (0..50).rev().map(|i| (i.to_string(), i)).collect();
    assert_eq!(bytes(&m1), bytes(&m2));
    // ...but a vector keeps its order.
    assert_ne!(bytes(&vec![1u8, 2]), bytes(&vec![2u8, 1]));
}
