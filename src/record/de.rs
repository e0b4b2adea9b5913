//! Decoding a record's value from its parts, without first joining them into one buffer.
//!
//! A large record is stored in parts (the redb store's chunks). Joining them before decoding
//! would hold the record and the value decoded from it in memory at once: twice the value. This
//! deserializer reads postcard's format (the same wire format, byte for byte, as
//! `postcard::Deserializer`, which `tests` below check against it) from one part at a time, and
//! hands every string or byte string that spans parts to serde as an owned buffer
//! (`visit_string`, `visit_byte_buf`), which `String`, `Vec<u8>` with `serde_bytes` and the like
//! adopt without a copy. A value is never borrowed from the input: this decodes owned types
//! (`DeserializeOwned`) only, which is all a cache hands back.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::lend::{Part, Parts};
use super::{HEADER_LEN, Header, RecordCheck, header_of};
use crate::error::{Error, ErrorKind};

/// Why a value could not be decoded from its parts.
pub(crate) enum PartsFailure {
    /// The bytes are not a value of the type: the record is damaged.
    Corrupt,
    /// The record's header names another type (the rest of the record is not checked).
    OtherType,
    /// The record is compressed (the rest of the record is not checked): decoded whole.
    Compressed,
    /// A part could not be read (not a sign of damage: a failed read).
    Read(Error),
}

/// Decodes the value of the record in `parts`, checking the record on the way: its header
/// before the value is decoded, its checksum (fed each part as it is read) before the value is
/// returned. One pass over the parts; a value decoded from a record that fails its checksum is
/// dropped, never returned.
pub(crate) fn record_from_parts<T: DeserializeOwned>(
    parts: &dyn Parts,
    fingerprint: u64,
) -> std::result::Result<(T, Header), PartsFailure> {
    let mut de = PartsDeserializer {
        input: Reader::new(parts),
    };
    de.input.check = Some(RecordCheck::new());
    let mut head = [0u8; HEADER_LEN];
    match de.input.take(HEADER_LEN) {
        Ok(Taken::Within(bytes)) => head.copy_from_slice(bytes),
        Ok(Taken::Joined(bytes)) => head.copy_from_slice(&bytes),
        Err(_) => return Err(de.failure()),
    };
    let header = header_of(&head).map_err(|_| PartsFailure::Corrupt)?;
    if header.fingerprint != fingerprint {
        return Err(PartsFailure::OtherType);
    }
    if header.compressed {
        return Err(PartsFailure::Compressed);
    }
    let value = T::deserialize(&mut de);
    let input = &mut de.input;
    if input.failure.is_some() {
        return Err(de.failure());
    }
    let whole = value.is_ok()
        && input.remaining == 0
        && input.next == input.count
        && input.at == input.current_len;
    match (value, input.check.take()) {
        (Ok(v), Some(check)) if whole && check.len() == parts.len() && check.finish().is_ok() => {
            Ok((v, header))
        }
        _ => Err(PartsFailure::Corrupt),
    }
}

/// Decodes the `T` in the bytes of `parts` after the first `skip`, which must be all of them
/// (unchecked: for the tests of the wire format).
#[cfg(test)]
fn from_parts<T: DeserializeOwned>(
    parts: &dyn Parts,
    skip: usize,
) -> std::result::Result<T, PartsFailure> {
    let mut de = PartsDeserializer {
        input: Reader::new(parts),
    };
    let value = de
        .input
        .take(skip)
        .map(drop)
        .and_then(|()| T::deserialize(&mut de));
    if de.input.failure.is_some() {
        return Err(de.failure());
    }
    match value {
        Ok(v) if de.input.remaining == 0 => Ok(v),
        _ => Err(PartsFailure::Corrupt),
    }
}

impl PartsDeserializer<'_> {
    /// Why reading stopped: a part that could not be read, or else a damaged record.
    fn failure(&mut self) -> PartsFailure {
        match self.input.failure.take() {
            Some(e) if e.kind() != ErrorKind::Corrupted => PartsFailure::Read(e),
            _ => PartsFailure::Corrupt,
        }
    }
}

/// A decoding failure. Its kind is not reported (any failure is a damaged record), so it only
/// carries what serde needs.
#[derive(Debug)]
pub(crate) struct DeError(&'static str);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        DeError("the value's Deserialize implementation failed")
    }
}

type Result<T> = std::result::Result<T, DeError>;

const END: DeError = DeError("unexpected end of the record");

/// A cursor over the parts of a record.
/// How many bytes of a part `pop` copies at a time.
const WINDOW: usize = 4096;

struct Reader<'p> {
    parts: &'p dyn Parts,
    count: u32,
    next: u32,
    current: Part<'p>,
    /// `current.len()`, kept: a part may be an engine guard whose bytes cost a lookup at every
    /// access.
    current_len: usize,
    at: usize,
    /// A copy of the current part's bytes from `window_at`, for `pop`: a value of plain bytes
    /// or numbers is decoded a byte at a time, and two lookups in the part for each byte made a
    /// 1 MiB `Vec<u8>` take 5-10 ms. `take`, which reads runs (bytes, strings), reads the part
    /// itself.
    window: Box<[u8; WINDOW]>,
    window_at: usize,
    window_len: usize,
    /// Bytes of the record after the cursor (the length the parts declare: reading past it is
    /// the end, whatever the parts hold).
    remaining: u64,
    /// A part that could not be read.
    failure: Option<Error>,
    /// Fed every part as it is read, if the record is to be checked.
    check: Option<RecordCheck>,
}

/// Bytes taken from the reader: borrowed from one part, or joined from several.
enum Taken<'r> {
    Within(&'r [u8]),
    Joined(Vec<u8>),
}

impl<'p> Reader<'p> {
    fn new(parts: &'p dyn Parts) -> Reader<'p> {
        Reader {
            parts,
            count: parts.count(),
            next: 0,
            current: Part::from(&[][..]),
            current_len: 0,
            window: Box::new([0; WINDOW]),
            window_at: 0,
            window_len: 0,
            at: 0,
            remaining: parts.len(),
            failure: None,
            check: None,
        }
    }

    /// Makes the cursor point at an unread byte of the current part.
    fn fill(&mut self) -> Result<()> {
        while self.at >= self.current_len {
            if self.next >= self.count {
                return Err(END);
            }
            match self.parts.part(self.next) {
                Ok(part) => {
                    if let Some(check) = &mut self.check {
                        check.feed(&part);
                    }
                    self.current_len = part.len();
                    self.current = part;
                    self.window_len = 0;
                }
                Err(e) => {
                    self.failure = Some(e);
                    return Err(DeError("a part could not be read"));
                }
            }
            self.next += 1;
            self.at = 0;
        }
        Ok(())
    }

    #[inline]
    fn pop(&mut self) -> Result<u8> {
        if self.remaining == 0 {
            return Err(END);
        }
        if self.at >= self.current_len {
            self.fill()?;
        }
        let i = self.at.wrapping_sub(self.window_at);
        let b = if i < self.window_len {
            self.window[i]
        } else {
            self.slide_window()
        };
        self.at += 1;
        self.remaining -= 1;
        Ok(b)
    }

    /// Copies the current part's bytes from the cursor into the window; returns the first.
    #[cold]
    fn slide_window(&mut self) -> u8 {
        let bytes = &self.current[self.at..self.current_len.min(self.at + WINDOW)];
        self.window[..bytes.len()].copy_from_slice(bytes);
        self.window_at = self.at;
        self.window_len = bytes.len();
        self.window[0]
    }

    /// The next `n` bytes. Checked against what is left before anything is allocated, so a
    /// damaged length cannot ask for more memory than the record holds.
    fn take(&mut self, n: usize) -> Result<Taken<'_>> {
        if n as u64 > self.remaining {
            return Err(END);
        }
        if n == 0 {
            return Ok(Taken::Within(&[]));
        }
        self.fill()?;
        self.remaining -= n as u64;
        if self.current_len - self.at >= n {
            let start = self.at;
            self.at += n;
            return Ok(Taken::Within(&self.current[start..start + n]));
        }
        let mut joined = Vec::with_capacity(n);
        while joined.len() < n {
            self.fill()?;
            let k = (n - joined.len()).min(self.current_len - self.at);
            joined.extend_from_slice(&self.current[self.at..self.at + k]);
            self.at += k;
        }
        Ok(Taken::Joined(joined))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.pop()?;
        }
        Ok(out)
    }
}

struct PartsDeserializer<'p> {
    input: Reader<'p>,
}

/// postcard's varint: 7 bits a byte, least significant first; at most as many bytes as the
/// type needs, the last holding only the bits that are left.
macro_rules! varint {
    ($name:ident, $ty:ty) => {
        fn $name(&mut self) -> Result<$ty> {
            const BITS: usize = <$ty>::BITS as usize;
            const MAX_BYTES: usize = BITS.div_ceil(7);
            const LAST_MAX: u8 = (1 << (BITS % 7)) - 1;
            let mut out: $ty = 0;
            for i in 0..MAX_BYTES {
                let byte = self.input.pop()?;
                out |= ((byte & 0x7f) as $ty) << (7 * i);
                if byte & 0x80 == 0 {
                    if i == MAX_BYTES - 1 && byte > LAST_MAX {
                        return Err(DeError("bad varint"));
                    }
                    return Ok(out);
                }
            }
            Err(DeError("bad varint"))
        }
    };
}

impl PartsDeserializer<'_> {
    varint!(varint_u16, u16);
    varint!(varint_u32, u32);
    varint!(varint_u64, u64);
    varint!(varint_u128, u128);

    fn varint_usize(&mut self) -> Result<usize> {
        usize::try_from(self.varint_u64()?).map_err(|_| DeError("bad length"))
    }
}

fn zigzag_i16(n: u16) -> i16 {
    ((n >> 1) as i16) ^ (-((n & 1) as i16))
}
fn zigzag_i32(n: u32) -> i32 {
    ((n >> 1) as i32) ^ (-((n & 1) as i32))
}
fn zigzag_i64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ (-((n & 1) as i64))
}
fn zigzag_i128(n: u128) -> i128 {
    ((n >> 1) as i128) ^ (-((n & 1) as i128))
}

struct Counted<'a, 'p> {
    de: &'a mut PartsDeserializer<'p>,
    len: usize,
}

impl<'de> de::SeqAccess<'de> for Counted<'_, '_> {
    type Error = DeError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // As postcard: no hint larger than the bytes left (one byte per element at least), so a
        // damaged count cannot make serde reserve much.
        (self.de.input.remaining >= self.len as u64).then_some(self.len)
    }
}

impl<'de> de::MapAccess<'de> for Counted<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len)
    }
}

impl<'de> de::Deserializer<'de> for &mut PartsDeserializer<'_> {
    type Error = DeError;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError("postcard is not self-describing"))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.input.pop()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(DeError("bad bool")),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.input.pop()? as i8)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u16()?;
        visitor.visit_i16(zigzag_i16(v))
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u32()?;
        visitor.visit_i32(zigzag_i32(v))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u64()?;
        visitor.visit_i64(zigzag_i64(v))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u128()?;
        visitor.visit_i128(zigzag_i128(v))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.input.pop()?)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u16()?;
        visitor.visit_u16(v)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u32()?;
        visitor.visit_u32(v)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u64()?;
        visitor.visit_u64(v)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u128()?;
        visitor.visit_u128(v)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bits = u32::from_le_bytes(self.input.array()?);
        visitor.visit_f32(f32::from_bits(bits))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bits = u64::from_le_bytes(self.input.array()?);
        visitor.visit_f64(f64::from_bits(bits))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        const BAD: DeError = DeError("bad char");
        let n = self.varint_usize()?;
        if n > 4 {
            return Err(BAD);
        }
        let mut buf = [0u8; 4];
        for b in &mut buf[..n] {
            *b = self.input.pop()?;
        }
        // As postcard: the first character of the UTF-8 text.
        let c = std::str::from_utf8(&buf[..n])
            .map_err(|_| BAD)?
            .chars()
            .next()
            .ok_or(BAD)?;
        visitor.visit_char(c)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        const BAD: DeError = DeError("bad UTF-8");
        let n = self.varint_usize()?;
        match self.input.take(n)? {
            Taken::Within(bytes) => visitor.visit_str(std::str::from_utf8(bytes).map_err(|_| BAD)?),
            Taken::Joined(bytes) => {
                visitor.visit_string(String::from_utf8(bytes).map_err(|_| BAD)?)
            }
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let n = self.varint_usize()?;
        match self.input.take(n)? {
            Taken::Within(bytes) => visitor.visit_bytes(bytes),
            Taken::Joined(bytes) => visitor.visit_byte_buf(bytes),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.input.pop()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => Err(DeError("bad option")),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.varint_usize()?;
        visitor.visit_seq(Counted { de: self, len })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(Counted { de: self, len })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.varint_usize()?;
        visitor.visit_map(Counted { de: self, len })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_enum(self)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError("postcard encodes no identifiers"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError("postcard cannot skip a value"))
    }
}

impl<'de> de::EnumAccess<'de> for &mut PartsDeserializer<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self)> {
        let index = self.varint_u32()?;
        let v = seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(index))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut PartsDeserializer<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Debug;

    use serde::{Deserialize, Serialize};

    use super::*;

    /// `bytes` cut into parts of `size` bytes (the last shorter).
    struct Cut<'a> {
        bytes: &'a [u8],
        size: usize,
    }

    impl Parts for Cut<'_> {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn count(&self) -> u32 {
            self.bytes.len().div_ceil(self.size) as u32
        }
        fn part(&self, index: u32) -> std::result::Result<Part<'_>, Error> {
            let start = index as usize * self.size;
            let end = (start + self.size).min(self.bytes.len());
            Ok(Part::from(&self.bytes[start..end]))
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(String),
        Tuple(i16, Vec<u8>),
        Struct { w: f32, h: f64, tag: char },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Mixed {
        flag: bool,
        small: (i8, u8, i32, u32, i64, u64),
        wide: (i128, u128),
        name: String,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        shapes: Vec<Shape>,
        map: BTreeMap<u16, Option<String>>,
        hash: HashMap<String, Vec<u64>>,
        unit: (),
        nested: Option<Box<Mixed>>,
    }

    fn sample() -> Mixed {
        let inner = Mixed {
            flag: false,
            small: (-1, 255, i32::MIN, u32::MAX, -5, u64::MAX),
            wide: (i128::MIN, u128::MAX),
            name: "ü∂ and ascii".repeat(3),
            blob: (0..=255).collect(),
            shapes: vec![Shape::Unit],
            map: BTreeMap::new(),
            hash: HashMap::new(),
            unit: (),
            nested: None,
        };
        Mixed {
            flag: true,
            small: (7, 8, 300, 70_000, -9_000_000_000, 1 << 40),
            wide: (-(1 << 100), 1 << 120),
            name: "a string long enough to cross a few part boundaries: ".repeat(4),
            blob: (0..3000u32).map(|i| (i * 7) as u8).collect(),
            shapes: vec![
                Shape::Newtype("n".into()),
                Shape::Tuple(-300, vec![1, 2, 3]),
                Shape::Struct {
                    w: 1.5,
                    h: -2.25e300,
                    tag: '€',
                },
                Shape::Unit,
            ],
            map: [
                (1, Some("one".into())),
                (2, None),
                (65535, Some(String::new())),
            ]
            .into(),
            hash: [("k".to_string(), vec![1, u64::MAX])].into(),
            unit: (),
            nested: Some(Box::new(inner)),
        }
    }

    fn agree<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let mut bytes = vec![0xaa; 5];
        bytes.extend(postcard::to_allocvec(value).unwrap());
        // Sizes around the window `pop` copies (4096), so that it slides inside a part and
        // across parts.
        for size in [
            1,
            2,
            3,
            5,
            7,
            16,
            61,
            1000,
            4095,
            4096,
            4097,
            9000,
            bytes.len(),
        ] {
            let parts = Cut {
                bytes: &bytes,
                size,
            };
            match from_parts::<T>(&parts, 5) {
                Ok(v) => assert_eq!(&v, value, "parts of {size}"),
                Err(_) => panic!("parts of {size}: does not decode"),
            }
        }
    }

    #[test]
    fn decodes_what_postcard_encodes_whatever_the_cut() {
        agree(&sample());
        agree(&vec![String::from("x"); 50]);
        agree(&(0u8, '\u{10FFFF}', -0.0f64, f32::NAN.to_bits()));
        agree(&Option::<u64>::None);
        agree(&());
        // Plain bytes and numbers, decoded a byte at a time, with runs (`take`) between them.
        let plain: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
        agree(&plain);
        agree(&(
            plain.clone(),
            "a run between".repeat(100),
            plain[..5000].to_vec(),
        ));
        agree(
            &(0..3000u32)
                .map(|i| i.wrapping_mul(2_654_435_761))
                .collect::<Vec<u32>>(),
        );
    }

    #[test]
    fn rejects_what_postcard_rejects_and_never_reads_past_the_end() {
        let bytes = postcard::to_allocvec(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            let parts = Cut {
                bytes: short,
                size: 7,
            };
            assert!(
                from_parts::<Mixed>(&parts, 0).is_err(),
                "{cut} bytes decoded"
            );
            assert!(postcard::from_bytes::<Mixed>(short).is_err());
        }
        // Trailing bytes: postcard's `take_from_bytes` leaves them, a record must not have them.
        let mut long = bytes.clone();
        long.push(0);
        let parts = Cut {
            bytes: &long,
            size: 7,
        };
        assert!(from_parts::<Mixed>(&parts, 0).is_err());
    }

    #[test]
    fn agrees_with_postcard_on_arbitrary_bytes() {
        // Every byte string postcard accepts as a value, this decodes to the same value, and the
        // other way round.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            check_agrees::<(u16, Option<i32>, String)>(&bytes);
            check_agrees::<Vec<Shape>>(&bytes);
            check_agrees::<(char, u128, bool)>(&bytes);
            check_agrees::<BTreeMap<u8, Vec<u8>>>(&bytes);
        }
    }

    fn check_agrees<T: DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
        let theirs = match postcard::take_from_bytes::<T>(bytes) {
            Ok((v, [])) => Some(v),
            _ => None,
        };
        let parts = Cut { bytes, size: 3 };
        let ours = from_parts::<T>(&parts, 0).ok();
        assert_eq!(ours, theirs, "{bytes:02x?}");
    }

    #[test]
    fn a_damaged_length_reserves_nothing() {
        // A byte string claiming 2^60 bytes, in a record of a few: an error, not an allocation.
        let mut bytes = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        bytes.extend([1, 2, 3]);
        let parts = Cut {
            bytes: &bytes,
            size: 4,
        };
        assert!(from_parts::<serde_bytes::ByteBuf>(&parts, 0).is_err());
        assert!(from_parts::<Vec<u64>>(&parts, 0).is_err());
    }
}
