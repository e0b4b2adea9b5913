//! Unit tests of the type-shape tracer: recursive, wide and std types trace; layouts are told
//! apart; what cannot be traced fails quickly; the build identity; the pinned encoding.

// The types below are only traced, never built.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::build::{code_file, hash_file, mapped_file};
use super::trace::Prim;
use super::*;

fn traced<T: DeserializeOwned>() -> Vec<u8> {
    match shape_bytes::<T>() {
        Ok(bytes) => bytes,
        Err(e) => panic!("{} untraceable: {e}", std::any::type_name::<T>()),
    }
}

fn untraceable<T: DeserializeOwned>() -> Untraceable {
    match shape_bytes::<T>() {
        Ok(_) => panic!("{} traced", std::any::type_name::<T>()),
        Err(e) => e,
    }
}

#[derive(Deserialize)]
enum Leaf {
    Nil,
    Cons(u32, Box<Leaf>),
}

/// The recursive variant first: a naive trace recurses without end here.
#[derive(Deserialize)]
enum List {
    Cons(u32, Box<List>),
    Nil,
}

#[derive(Deserialize)]
struct Tree {
    v: u32,
    children: Vec<Tree>,
    by_name: BTreeMap<String, Tree>,
    tag: Tag,
}

#[derive(Deserialize)]
enum Tag {
    A,
    B(Option<Box<Tree>>),
    C { x: i8 },
}

#[derive(Deserialize)]
struct Ping {
    pong: Option<Box<Pong>>,
    e: Tag,
}

#[derive(Deserialize)]
struct Pong {
    ping: Vec<Ping>,
    list: List,
}

#[derive(Deserialize)]
enum Expr {
    Lit(i64),
    Add(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Let {
        name: String,
        value: Box<Expr>,
        body: Box<Expr>,
    },
}

#[test]
fn recursive_and_nested_types_trace() {
    traced::<Leaf>();
    traced::<List>();
    traced::<Tree>();
    traced::<Ping>();
    traced::<Pong>();
    traced::<Expr>();
    traced::<Vec<Option<(List, Tag, HashMap<u8, Expr>)>>>();
    // Every variant of every enum reached is in the shape.
    let shape = traced::<Expr>();
    for name in ["Lit", "Add", "Neg", "Let", "name", "value", "body"] {
        let lp = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
        assert!(shape.windows(lp.len()).any(|w| w == lp), "{name} missing");
    }
}

macro_rules! wide_enum {
    ($name:ident($inner:ty): $($v:ident)*) => {
        #[derive(Deserialize)]
        enum $name { $($v($inner, Option<Box<$name>>),)* }
    };
}
wide_enum!(Inner(u8): A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13 A14 A15 A16 A17 A18 A19
    A20 A21 A22 A23 A24 A25 A26 A27 A28 A29 A30 A31 A32 A33 A34 A35 A36 A37 A38 A39);
wide_enum!(Outer(Vec<Inner>): B0 B1 B2 B3 B4 B5 B6 B7 B8 B9 B10 B11 B12 B13 B14 B15 B16 B17
    B18 B19 B20 B21 B22 B23 B24 B25 B26 B27 B28 B29 B30 B31 B32 B33 B34 B35 B36 B37 B38 B39);

#[test]
fn wide_recursive_enums_trace_quickly() {
    let start = std::time::Instant::now();
    let shape = traced::<(Outer, BTreeMap<u8, Outer>, Inner)>();
    // Generous: the point is that it ends, and soon.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    for name in ["A39", "B39"] {
        let lp = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
        assert!(shape.windows(lp.len()).any(|w| w == lp), "{name} missing");
    }
}

#[test]
fn std_types_trace() {
    traced::<(
        bool,
        i8,
        i16,
        i32,
        i64,
        i128,
        u8,
        u16,
        u32,
        u64,
        u128,
        f32,
        f64,
        char,
    )>();
    traced::<(
        String,
        Box<str>,
        Vec<u8>,
        std::path::PathBuf,
        std::ffi::OsString,
    )>();
    traced::<(std::time::Duration, std::time::SystemTime, std::net::IpAddr)>();
    traced::<(HashMap<String, Vec<u64>>, HashSet<u32>, BTreeMap<u8, ()>)>();
    traced::<([u8; 32], [(u8, u16); 3], Option<Option<u8>>)>();
    traced::<Result<Vec<String>, (u8, String)>>();
    traced::<(std::num::NonZeroU32, std::marker::PhantomData<u8>)>();
    traced::<Box<std::borrow::Cow<'static, str>>>();
}

#[test]
fn the_shape_tells_layouts_apart() {
    mod a {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub x: u32,
            pub y: u32,
        }
        #[derive(serde::Deserialize)]
        pub enum Shape {
            Circle(u32),
            Square(u32),
        }
    }
    mod swapped {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub y: u32,
            pub x: u32,
        }
    }
    mod signed {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub x: i32,
            pub y: u32,
        }
    }
    mod longer {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub x: u32,
            pub y: u32,
            pub z: u32,
        }
    }
    mod renamed {
        #[derive(serde::Deserialize)]
        pub enum Shape {
            Disc(u32),
            Square(u32),
        }
    }
    mod reordered {
        #[derive(serde::Deserialize)]
        pub enum Shape {
            Square(u32),
            Circle(u32),
        }
    }
    mod same {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub x: u32,
            pub y: u32,
        }
    }
    let point = traced::<a::Point>();
    assert_ne!(point, traced::<swapped::Point>());
    assert_ne!(point, traced::<signed::Point>());
    assert_ne!(point, traced::<longer::Point>());
    assert_eq!(point, traced::<same::Point>());
    let shape = traced::<a::Shape>();
    assert_ne!(shape, traced::<renamed::Shape>());
    assert_ne!(shape, traced::<reordered::Shape>());
    // Two types of one serde name inside one value are two containers.
    assert_ne!(
        traced::<(a::Point, same::Point)>(),
        traced::<(a::Point, signed::Point)>()
    );
    assert_ne!(traced::<u32>(), traced::<i32>());
    assert_ne!(traced::<Vec<u32>>(), traced::<Option<u32>>());
}

#[test]
fn what_cannot_be_traced_fails_without_running_away() {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        A(u32),
        B(String),
    }
    #[derive(Deserialize)]
    struct Infinite {
        again: Box<Infinite>,
    }
    #[derive(Deserialize)]
    enum Endless {
        Again(Box<Endless>),
    }
    struct Picky;
    impl<'de> Deserialize<'de> for Picky {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match u32::deserialize(d)? {
                7 => Ok(Picky),
                n => Err(de::Error::custom(format!("{n} is not 7"))),
            }
        }
    }
    struct Panics;
    impl<'de> Deserialize<'de> for Panics {
        fn deserialize<D: de::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            panic!("traced")
        }
    }
    assert_eq!(
        untraceable::<Untagged>(),
        Untraceable::NotSupported("deserialize_any")
    );
    assert_eq!(untraceable::<Infinite>(), Untraceable::TooDeep);
    assert!(matches!(
        untraceable::<Endless>(),
        Untraceable::TooDeep | Untraceable::Inconsistent(_)
    ));
    assert_eq!(
        untraceable::<Picky>(),
        Untraceable::Rejected("0 is not 7".into())
    );
    // Refused halfway through a variant's content: what it would read next is unknown.
    #[derive(Deserialize)]
    enum Halfway {
        Fine(u8),
        Half(u8, Picky, String),
    }
    assert_eq!(
        untraceable::<Halfway>(),
        Untraceable::Rejected("0 is not 7".into())
    );
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let panicked = untraceable::<Panics>();
    std::panic::set_hook(hook);
    assert_eq!(panicked, Untraceable::Panicked);
}

#[test]
fn an_untraceable_type_is_fingerprinted_with_the_build() {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        A(u32),
    }
    let fp = fingerprint::<Untagged>();
    assert_eq!(fp, fingerprint::<Untagged>());
    assert_eq!(
        fp,
        untraceable_fingerprint(std::any::type_name::<Untagged>(), build_id())
    );
    assert_ne!(
        fp,
        untraceable_fingerprint(std::any::type_name::<Untagged>(), build_id() ^ 1)
    );
    // The build is the file this code runs from, hashed.
    let (path, inode) = code_file().unwrap();
    assert_eq!(build_id(), hash_file(&path, inode).unwrap());
    #[cfg(target_os = "linux")]
    assert_eq!(path, std::env::current_exe().unwrap());
}

#[test]
fn maps_lines_parse() {
    let line =
        "55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234567                    /opt/my app/bin";
    assert_eq!(
        mapped_file(line, 0x55d0c0a00010),
        Some(("/opt/my app/bin".into(), 1234567))
    );
    assert_eq!(mapped_file(line, 0x55d0c0b00000), None);
    assert_eq!(
        mapped_file(
            "7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]",
            0x7ffd1000
        ),
        None
    );
}

#[test]
fn the_encoding_is_pinned() {
    #[derive(Deserialize)]
    struct P {
        x: u32,
        y: Option<Vec<i8>>,
    }
    let mut want = b"ckpt-shape\x01".to_vec();
    want.push(0x25);
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'P');
    want.push(0x33);
    want.extend_from_slice(&2u64.to_le_bytes());
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'x');
    want.push(Prim::U32 as u8);
    want.extend_from_slice(&1u64.to_le_bytes());
    want.push(b'y');
    want.extend_from_slice(&[0x20, 0x21, Prim::I8 as u8]);
    assert_eq!(traced::<P>(), want);
    assert_eq!(fingerprint::<P>(), 0x2df0_6613_7c4c_bc68);
}
