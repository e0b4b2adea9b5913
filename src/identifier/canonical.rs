//! The canonical argument encoding: a serde `Serializer` that streams a value's canonical bytes
//! straight into a hasher, with no intermediate buffer.
//!
//! The byte format is part of the id contract and is written down in ARCHITECTURE.md ("The id
//! scheme"); `tests/golden_ids.rs` pins it. Changing anything here changes ids: bump
//! `ID_SCHEME` in `identifier/mod.rs` and the golden vectors together, deliberately.

use std::fmt;

use serde::ser::{self, Serialize};
use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

/// Where canonical bytes go: a hasher, or (in tests and docs) a byte vector.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Xxh3Default {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// How many bytes [`Hasher128`] gathers before it streams.
const INLINE: usize = 256;

/// xxh3-128 of the bytes put into it: the digest `Xxh3Default` gives for the same bytes, but
/// computed faster for the short inputs most calls make.
///
/// Up to [`INLINE`] bytes are gathered in a stack buffer and hashed in one call at the end;
/// past that, the buffer is fed to a streaming hasher and the rest follows it. xxh3's one-shot
/// and streaming forms give the same digest for the same bytes, so ids do not depend on which
/// path ran. The streaming state is only built when needed: a short input skips its setup
/// (zeroing ~600 bytes) and its per-piece bookkeeping, which cost more than the hash itself.
pub(crate) struct Hasher128 {
    /// Bytes gathered so far; `INLINE + 1` once streaming.
    len: usize,
    buf: [u8; INLINE],
    stream: Option<Xxh3Default>,
}

impl Hasher128 {
    #[inline]
    pub(crate) fn new() -> Self {
        Hasher128 {
            len: 0,
            buf: [0; INLINE],
            stream: None,
        }
    }

    /// The xxh3-128 digest of everything put so far.
    #[inline]
    pub(crate) fn digest128(&self) -> u128 {
        match &self.stream {
            Some(stream) => stream.digest128(),
            None => xxh3_128(&self.buf[..self.len]),
        }
    }

    #[cold]
    #[inline(never)]
    fn spill(&mut self, bytes: &[u8]) {
        let gathered = &self.buf[..self.len.min(INLINE)];
        let stream = self.stream.get_or_insert_with(|| {
            let mut stream = Xxh3Default::new();
            stream.update(gathered);
            stream
        });
        stream.update(bytes);
        self.len = INLINE + 1;
    }
}

impl Sink for Hasher128 {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(room) = self.buf.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
            self.len = end;
        } else {
            self.spill(bytes);
        }
    }
}

pub(crate) mod tag {
    pub const BOOL: u8 = 0x01;
    pub const I8: u8 = 0x02;
    pub const I16: u8 = 0x03;
    pub const I32: u8 = 0x04;
    pub const I64: u8 = 0x05;
    pub const I128: u8 = 0x06;
    pub const U8: u8 = 0x07;
    pub const U16: u8 = 0x08;
    pub const U32: u8 = 0x09;
    pub const U64: u8 = 0x0a;
    pub const U128: u8 = 0x0b;
    pub const F32: u8 = 0x0c;
    pub const F64: u8 = 0x0d;
    pub const CHAR: u8 = 0x0e;
    pub const STR: u8 = 0x0f;
    pub const BYTES: u8 = 0x10;
    pub const NONE: u8 = 0x11;
    pub const SOME: u8 = 0x12;
    pub const UNIT: u8 = 0x13;
    pub const UNIT_STRUCT: u8 = 0x14;
    pub const UNIT_VARIANT: u8 = 0x15;
    pub const NEWTYPE_STRUCT: u8 = 0x16;
    pub const NEWTYPE_VARIANT: u8 = 0x17;
    pub const SEQ: u8 = 0x18;
    pub const TUPLE: u8 = 0x19;
    pub const TUPLE_STRUCT: u8 = 0x1a;
    pub const TUPLE_VARIANT: u8 = 0x1b;
    pub const STRUCT: u8 = 0x1c;
    pub const STRUCT_VARIANT: u8 = 0x1d;
    pub const MAP: u8 = 0x1e;
    pub const SET: u8 = 0x1f;
    pub const FIELD: u8 = 0x20;
    pub const END: u8 = 0x21;
    pub const ORDERED_MAP: u8 = 0x22;
}

/// The newtype name by which [`Unordered`](crate::Unordered) asks for set semantics.
pub(crate) const UNORDERED_MARKER: &str = "ckpt::Unordered";

/// The error a `Serialize` implementation raised while being identified.
#[derive(Debug)]
pub(crate) struct EncodeError(pub(crate) String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// Writes the canonical encoding of `value` into `sink`.
#[inline]
pub(crate) fn encode<S: Sink, T: Serialize + ?Sized>(
    sink: &mut S,
    value: &T,
) -> Result<(), EncodeError> {
    value.serialize(Canonical {
        sink,
        unordered: false,
    })
}

/// The xxh3-128 digest of one element (or one map entry) of an unordered collection.
fn element_digest<T: Serialize + ?Sized>(value: &T) -> Result<u128, EncodeError> {
    let mut h = Hasher128::new();
    encode(&mut h, value)?;
    Ok(h.digest128())
}

/// The std and hashbrown sets, whose iteration order is arbitrary (hash sets) or a function of
/// their contents (`BTreeSet`): only these are encoded as sets without being asked.
const ARBITRARY_ORDER_SETS: &[&str] = &[
    "std::collections::hash::set::HashSet",
    "alloc::collections::btree::set::BTreeSet",
    "hashbrown::set::HashSet",
];

/// The std and hashbrown maps, likewise. A map written through `collect_map` by any other type
/// (`IndexMap`, a user's own) keeps its order; see [`Canonical::collect_map`].
const ARBITRARY_ORDER_MAPS: &[&str] = &[
    "std::collections::hash::map::HashMap",
    "alloc::collections::btree::map::BTreeMap",
    "hashbrown::map::HashMap",
];

/// Whether the collection type `I`, handed to `collect_seq` or `collect_map`, is one of `known`:
/// a type whose iteration order is arbitrary, so that order must not change the id.
///
/// serde serializes `HashSet` and `Vec` identically, so the collection type is the only clue.
/// Only the exact std and hashbrown types count, by their full path: a user type named
/// `ChangeSet` whose order matters is a sequence (an earlier version went by the name's
/// ending, which gave `[create, delete]` and `[delete, create]` one id). Other unordered
/// collections opt in with [`Unordered`](crate::Unordered). Should a future toolchain print a
/// path differently, the collection becomes ordered: a miss, never a wrong hit.
/// `tests/identifier_props.rs` and the unit tests below pin the detection.
fn is_arbitrary_order<I>(known: &[&str]) -> bool {
    let mut name = std::any::type_name::<I>();
    loop {
        if let Some(rest) = name.strip_prefix('&') {
            name = rest;
        } else if let Some(rest) = name.strip_prefix("mut ") {
            name = rest;
        } else {
            break;
        }
    }
    let base = name.split('<').next().unwrap_or(name);
    known.contains(&base)
}

struct Canonical<'s, S: Sink> {
    sink: &'s mut S,
    /// Set by [`Unordered`](crate::Unordered): the next sequence is a set.
    unordered: bool,
}

impl<S: Sink> Canonical<'_, S> {
    #[inline]
    fn tag(&mut self, t: u8) {
        self.sink.put(&[t]);
    }

    #[inline]
    fn len_prefixed(&mut self, bytes: &[u8]) {
        self.sink.put(&(bytes.len() as u64).to_le_bytes());
        self.sink.put(bytes);
    }

    fn tagged_name(&mut self, t: u8, name: &str) {
        self.tag(t);
        self.len_prefixed(name.as_bytes());
    }

    fn tagged_variant(&mut self, t: u8, name: &str, variant: &str) {
        self.tagged_name(t, name);
        self.len_prefixed(variant.as_bytes());
    }
}

/// A compound being written in order: elements (or fields) follow its header, then `END`.
pub(crate) struct Ordered<'s, S: Sink> {
    sink: &'s mut S,
}

impl<S: Sink> Ordered<'_, S> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        encode(self.sink, value)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), EncodeError> {
        self.sink.put(&[tag::FIELD]);
        self.sink.put(&(key.len() as u64).to_le_bytes());
        self.sink.put(key.as_bytes());
        encode(self.sink, value)
    }

    fn end(self) -> Result<(), EncodeError> {
        self.sink.put(&[tag::END]);
        Ok(())
    }
}

/// A set or map: each element (or entry) is digested on its own and the digests are summed,
/// so the result does not depend on iteration order.
pub(crate) struct Unordered<'s, S: Sink> {
    sink: &'s mut S,
    tag: u8,
    count: u64,
    sum: u128,
    /// The entry being digested, between a map's key and its value.
    entry: Option<Hasher128>,
}

impl<'s, S: Sink> Unordered<'s, S> {
    fn new(sink: &'s mut S, tag: u8) -> Self {
        Unordered {
            sink,
            tag,
            count: 0,
            sum: 0,
            entry: None,
        }
    }

    fn add(&mut self, digest: u128) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(digest);
    }

    fn end(self) -> Result<(), EncodeError> {
        if self.entry.is_some() {
            return Err(EncodeError("map key serialized without a value".into()));
        }
        self.sink.put(&[self.tag]);
        self.sink.put(&self.count.to_le_bytes());
        self.sink.put(&self.sum.to_le_bytes());
        Ok(())
    }
}

/// The two ways a sequence may be written. It lives on the stack for one sequence, so the size
/// of the unordered variant (a hasher state) costs nothing; boxing it would allocate.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SeqState<'s, S: Sink> {
    Ordered(Ordered<'s, S>),
    Unordered(Unordered<'s, S>),
}

macro_rules! fixed {
    ($method:ident, $ty:ty, $tag:expr) => {
        #[inline]
        fn $method(mut self, v: $ty) -> Result<(), EncodeError> {
            self.tag($tag);
            self.sink.put(&v.to_le_bytes());
            Ok(())
        }
    };
}

impl<'s, S: Sink> ser::Serializer for Canonical<'s, S> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = SeqState<'s, S>;
    type SerializeTuple = Ordered<'s, S>;
    type SerializeTupleStruct = Ordered<'s, S>;
    type SerializeTupleVariant = Ordered<'s, S>;
    type SerializeMap = Unordered<'s, S>;
    type SerializeStruct = Ordered<'s, S>;
    type SerializeStructVariant = Ordered<'s, S>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.sink.put(&[tag::BOOL, v as u8]);
        Ok(())
    }

    fixed!(serialize_i8, i8, tag::I8);
    fixed!(serialize_i16, i16, tag::I16);
    fixed!(serialize_i32, i32, tag::I32);
    fixed!(serialize_i64, i64, tag::I64);
    fixed!(serialize_i128, i128, tag::I128);
    fixed!(serialize_u8, u8, tag::U8);
    fixed!(serialize_u16, u16, tag::U16);
    fixed!(serialize_u32, u32, tag::U32);
    fixed!(serialize_u64, u64, tag::U64);
    fixed!(serialize_u128, u128, tag::U128);

    fn serialize_f32(mut self, v: f32) -> Result<(), EncodeError> {
        // Every NaN is the same argument.
        let bits = if v.is_nan() { 0x7fc0_0000 } else { v.to_bits() };
        self.tag(tag::F32);
        self.sink.put(&bits.to_le_bytes());
        Ok(())
    }

    fn serialize_f64(mut self, v: f64) -> Result<(), EncodeError> {
        let bits = if v.is_nan() {
            0x7ff8_0000_0000_0000
        } else {
            v.to_bits()
        };
        self.tag(tag::F64);
        self.sink.put(&bits.to_le_bytes());
        Ok(())
    }

    fn serialize_char(mut self, v: char) -> Result<(), EncodeError> {
        self.tag(tag::CHAR);
        self.sink.put(&(v as u32).to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_str(mut self, v: &str) -> Result<(), EncodeError> {
        self.tag(tag::STR);
        self.len_prefixed(v.as_bytes());
        Ok(())
    }

    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), EncodeError> {
        self.tag(tag::BYTES);
        self.len_prefixed(v);
        Ok(())
    }

    fn serialize_none(mut self) -> Result<(), EncodeError> {
        self.tag(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(mut self, value: &T) -> Result<(), EncodeError> {
        self.tag(tag::SOME);
        encode(self.sink, value)
    }

    fn serialize_unit(mut self) -> Result<(), EncodeError> {
        self.tag(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(mut self, name: &'static str) -> Result<(), EncodeError> {
        self.tagged_name(tag::UNIT_STRUCT, name);
        Ok(())
    }

    fn serialize_unit_variant(
        mut self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.tagged_variant(tag::UNIT_VARIANT, name, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        if name == UNORDERED_MARKER {
            return value.serialize(Canonical {
                sink: self.sink,
                unordered: true,
            });
        }
        self.tagged_name(tag::NEWTYPE_STRUCT, name);
        encode(self.sink, value)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.tagged_variant(tag::NEWTYPE_VARIANT, name, variant);
        encode(self.sink, value)
    }

    fn serialize_seq(mut self, _len: Option<usize>) -> Result<SeqState<'s, S>, EncodeError> {
        if self.unordered {
            return Ok(SeqState::Unordered(Unordered::new(self.sink, tag::SET)));
        }
        self.tag(tag::SEQ);
        Ok(SeqState::Ordered(Ordered { sink: self.sink }))
    }

    fn collect_seq<I>(self, iter: I) -> Result<(), EncodeError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let unordered = self.unordered || is_arbitrary_order::<I>(ARBITRARY_ORDER_SETS);
        let mut seq = Canonical {
            sink: self.sink,
            unordered,
        }
        .serialize_seq(None)?;
        for item in iter {
            ser::SerializeSeq::serialize_element(&mut seq, &item)?;
        }
        ser::SerializeSeq::end(seq)
    }

    fn serialize_tuple(mut self, _len: usize) -> Result<Ordered<'s, S>, EncodeError> {
        self.tag(tag::TUPLE);
        Ok(Ordered { sink: self.sink })
    }

    fn serialize_tuple_struct(
        mut self,
        name: &'static str,
        _len: usize,
    ) -> Result<Ordered<'s, S>, EncodeError> {
        self.tagged_name(tag::TUPLE_STRUCT, name);
        Ok(Ordered { sink: self.sink })
    }

    fn serialize_tuple_variant(
        mut self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Ordered<'s, S>, EncodeError> {
        self.tagged_variant(tag::TUPLE_VARIANT, name, variant);
        Ok(Ordered { sink: self.sink })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Unordered<'s, S>, EncodeError> {
        Ok(Unordered::new(self.sink, tag::MAP))
    }

    /// std's and hashbrown's maps (and any map under [`Unordered`](crate::Unordered)) are
    /// maps, whose order does not count; a map of any other type that names itself here
    /// (`IndexMap`, a user's type over a list of pairs) keeps its order: `ORDERED_MAP`, then
    /// each key and value in turn, then `END`. A map serialized through `serialize_map`
    /// directly carries no type to tell by (a `#[serde(flatten)]` struct, a JSON object): its
    /// keys are unique names, and it stays a map.
    fn collect_map<K, V, I>(self, iter: I) -> Result<(), EncodeError>
    where
        K: Serialize,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        if self.unordered || is_arbitrary_order::<I>(ARBITRARY_ORDER_MAPS) {
            let mut map = self.serialize_map(None)?;
            for (k, v) in iter {
                ser::SerializeMap::serialize_entry(&mut map, &k, &v)?;
            }
            return ser::SerializeMap::end(map);
        }
        let mut ordered = Ordered { sink: self.sink };
        ordered.sink.put(&[tag::ORDERED_MAP]);
        for (k, v) in iter {
            ordered.element(&k)?;
            ordered.element(&v)?;
        }
        ordered.end()
    }

    fn serialize_struct(
        mut self,
        name: &'static str,
        _len: usize,
    ) -> Result<Ordered<'s, S>, EncodeError> {
        self.tagged_name(tag::STRUCT, name);
        Ok(Ordered { sink: self.sink })
    }

    fn serialize_struct_variant(
        mut self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Ordered<'s, S>, EncodeError> {
        self.tagged_variant(tag::STRUCT_VARIANT, name, variant);
        Ok(Ordered { sink: self.sink })
    }

    fn collect_str<T: fmt::Display + ?Sized>(mut self, value: &T) -> Result<(), EncodeError> {
        // Byte-identical to serialize_str of the displayed text, without allocating it: one pass
        // counts the bytes for the length prefix, a second streams them.
        struct Count(u64);
        impl fmt::Write for Count {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 += s.len() as u64;
                Ok(())
            }
        }
        struct Stream<'a, S: Sink>(&'a mut S);
        impl<S: Sink> fmt::Write for Stream<'_, S> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.put(s.as_bytes());
                Ok(())
            }
        }
        let mut count = Count(0);
        fmt::write(&mut count, format_args!("{value}"))
            .map_err(|_| EncodeError("a Display implementation failed".into()))?;
        self.tag(tag::STR);
        self.sink.put(&count.0.to_le_bytes());
        let mut stream = Stream(self.sink);
        fmt::write(&mut stream, format_args!("{value}"))
            .map_err(|_| EncodeError("a Display implementation failed".into()))
    }
}

impl<S: Sink> ser::SerializeSeq for SeqState<'_, S> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        match self {
            SeqState::Ordered(o) => o.element(value),
            SeqState::Unordered(u) => {
                let d = element_digest(value)?;
                u.add(d);
                Ok(())
            }
        }
    }

    fn end(self) -> Result<(), EncodeError> {
        match self {
            SeqState::Ordered(o) => o.end(),
            SeqState::Unordered(u) => u.end(),
        }
    }
}

macro_rules! ordered_elements {
    ($trait:ident, $method:ident) => {
        impl<S: Sink> ser::$trait for Ordered<'_, S> {
            type Ok = ();
            type Error = EncodeError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.element(value)
            }

            fn end(self) -> Result<(), EncodeError> {
                Ordered::end(self)
            }
        }
    };
}

ordered_elements!(SerializeTuple, serialize_element);
ordered_elements!(SerializeTupleStruct, serialize_field);
ordered_elements!(SerializeTupleVariant, serialize_field);

macro_rules! ordered_fields {
    ($trait:ident) => {
        impl<S: Sink> ser::$trait for Ordered<'_, S> {
            type Ok = ();
            type Error = EncodeError;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), EncodeError> {
                Ordered::end(self)
            }
        }
    };
}

ordered_fields!(SerializeStruct);
ordered_fields!(SerializeStructVariant);

impl<S: Sink> ser::SerializeMap for Unordered<'_, S> {
    type Ok = ();
    type Error = EncodeError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        if self.entry.is_some() {
            return Err(EncodeError(
                "map key serialized twice without a value".into(),
            ));
        }
        let mut h = Hasher128::new();
        encode(&mut h, key)?;
        self.entry = Some(h);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let Some(mut h) = self.entry.take() else {
            return Err(EncodeError("map value serialized without a key".into()));
        };
        encode(&mut h, value)?;
        self.add(h.digest128());
        Ok(())
    }

    fn end(self) -> Result<(), EncodeError> {
        Unordered::end(self)
    }
}

#[cfg(test)]
mod tests;
