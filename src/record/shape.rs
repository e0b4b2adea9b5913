//! The type fingerprint: a hash of the shape a type's `Deserialize` reads.
//!
//! postcard is not self-describing: bytes written for one layout decode into another without
//! complaint (two `u32` fields swapped, a `u32` read as an `i32`). A record therefore carries a
//! fingerprint of the layout it was written with, and a read compares it with the layout it will
//! decode into. The layout is *traced*: the type's `Deserialize` is run once against a probe
//! deserializer that answers every request with a placeholder value and notes what was asked for
//! (a `u32`, a struct named `Point` with fields `x`, `y`, an enum's variant 2 named `Circle`, a
//! sequence of ...). That is exactly what postcard will ask of the stored bytes, so the trace
//! covers what decides how bytes are read: primitive types, field names and order, variant
//! indices and names, nesting, sequences, options, maps, tuples and their lengths, and every
//! named container reached (recursive types included).
//!
//! Enums are explored one variant at a time, and the type is traced again until every variant of
//! every enum reached has been seen. Where a type is recursive, an `Option`, a sequence or a map
//! whose content is already known is answered empty (the content was traced elsewhere), and an
//! enum met inside itself answers with a variant that ends. Nothing is unbounded: a trace that
//! nests deeper than [`MAX_DEPTH`] or needs more than [`MAX_PASSES`] passes fails.
//!
//! A trace fails (the type is *untraceable*) when the type's `Deserialize` asks for something
//! only a self-describing format answers (`deserialize_any`, `deserialize_identifier`,
//! `deserialize_ignored_any`: untagged, internally tagged or flattened types), rejects both sets
//! of placeholder values (a `Url` parsed from a string, a number checked against a range),
//! panics, nests too deep, or disagrees with itself (one container answering two shapes). Such a
//! type is fingerprinted by its name *and the identity of the running build* (see
//! [`build_id`]), so its records are read back only by the build that wrote them.
//!
//! This file holds the entry points (the fingerprint, its cache, why a trace fails); the rest
//! is one file an idea: `trace.rs` (the shape recorded so far and which part to explore next),
//! `probe.rs` (the serde `Deserializer` the type is run against), `encode.rs` (the shape's
//! canonical bytes), `build.rs` (the build identity of untraceable types).

mod build;
mod encode;
mod probe;
#[cfg(test)]
mod tests;
mod trace;

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use parking_lot::RwLock;
use serde::de::{self, DeserializeOwned};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use self::build::build_id;
use self::trace::Trace;

/// How deeply a trace may nest (containers, sequences, options, tuples, variants) before it is
/// abandoned. Real layouts stay far below it; a type that reaches it is either infinite (a
/// struct holding itself through a `Box` only) or better fingerprinted by the build.
pub(crate) const MAX_DEPTH: usize = 96;

/// Below this depth, options, sequences and maps are answered empty, and left for a pass that
/// reaches them higher up: a recursive type explored through its recursion would otherwise go as
/// deep as it has variants to try. A position reachable only this deep leaves the trace
/// incomplete (the type is then untraceable).
const EXPLORE_DEPTH: usize = 48;

/// How many times a type may be traced before its enums are all explored: each pass explores at
/// least one new variant, so this bounds the number of variants reached.
pub(crate) const MAX_PASSES: usize = 4096;

/// The fingerprint of `T`, computed once per type per process: later calls look it up here,
/// and a decorator keeps its own value type's at hand (no lookup at all).
pub(crate) fn fingerprint<T: DeserializeOwned>() -> u64 {
    static CACHE: LazyLock<RwLock<HashMap<TypeId, u64>>> = LazyLock::new(RwLock::default);
    let key = typeid::of::<T>();
    if let Some(&fp) = CACHE.read().get(&key) {
        return fp;
    }
    // Computed without the lock: the trace runs the type's own code.
    let fp = compute::<T>();
    *CACHE.write().entry(key).or_insert(fp)
}

/// Traces `T` and hashes its shape, or, where it cannot be traced, its name with the build.
fn compute<T: DeserializeOwned>() -> u64 {
    match shape_bytes::<T>() {
        Ok(bytes) => xxh3_64(&bytes),
        Err(_) => untraceable_fingerprint(std::any::type_name::<T>(), build_id()),
    }
}

/// The fingerprint of an untraceable type: its name, and the build that runs.
pub(crate) fn untraceable_fingerprint(type_name: &str, build: u64) -> u64 {
    let mut h = Xxh3::new();
    h.update(b"ckpt-build\x01");
    h.update(&(type_name.len() as u64).to_le_bytes());
    h.update(type_name.as_bytes());
    h.update(&build.to_le_bytes());
    h.digest()
}

/// Why a type could not be traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Untraceable {
    /// The type asked for something only a self-describing format answers.
    NotSupported(&'static str),
    /// The type's `Deserialize` returned an error (it rejected the placeholder values).
    Rejected(String),
    /// The type's `Deserialize` panicked.
    Panicked,
    /// Deeper than `MAX_DEPTH`, or more passes than `MAX_PASSES`.
    TooDeep,
    /// One position answered two different shapes, or an enum has no variant that ends.
    Inconsistent(&'static str),
    /// Passes stopped finding anything new before the whole shape was known.
    Incomplete,
}

impl fmt::Display for Untraceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untraceable::NotSupported(what) => write!(f, "{what} is not traceable"),
            Untraceable::Rejected(msg) => write!(f, "rejected the placeholder values: {msg}"),
            Untraceable::Panicked => f.write_str("panicked while traced"),
            Untraceable::TooDeep => f.write_str("nests too deep to trace"),
            Untraceable::Inconsistent(what) => write!(f, "inconsistent: {what}"),
            Untraceable::Incomplete => f.write_str("some of its shape could not be reached"),
        }
    }
}

impl std::error::Error for Untraceable {}

impl de::Error for Untraceable {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Untraceable::Rejected(msg.to_string())
    }
}

/// The canonical encoding of `T`'s shape (what the fingerprint hashes), or why there is none.
///
/// Two sets of placeholder values are tried in turn: zeros and empty strings, then ones and
/// `"a"` (a `NonZeroU32` rejects the first).
pub(crate) fn shape_bytes<T: DeserializeOwned>() -> Result<Vec<u8>, Untraceable> {
    let mut first = None;
    for values in [Values::ZERO, Values::ONE] {
        let traced = std::panic::catch_unwind(|| {
            let mut trace = Trace::new(values);
            trace.run::<T>().map(|root| trace.encode(root))
        });
        match traced.unwrap_or(Err(Untraceable::Panicked)) {
            Ok(bytes) => return Ok(bytes),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(Untraceable::Incomplete))
}

/// The placeholder values a trace answers with.
#[derive(Clone, Copy)]
struct Values {
    int: u8,
    boolean: bool,
    character: char,
    text: &'static str,
}

impl Values {
    const ZERO: Values = Values {
        int: 0,
        boolean: false,
        character: '\0',
        text: "",
    };
    const ONE: Values = Values {
        int: 1,
        boolean: true,
        character: 'a',
        text: "a",
    };
}
