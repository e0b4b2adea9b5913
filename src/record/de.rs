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
use std::marker::PhantomData;
use std::mem::ManuallyDrop;

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
    let value = seed_of(&mut de, PhantomData::<T>);
    let input = &mut de.input;
    if input.failure.is_some() {
        return Err(de.failure());
    }
    let whole = value.is_ok() && input.at_end();
    input.feed();
    match (value, input.check.take()) {
        (Ok(v), Some(check)) if whole && check.len() == parts.len() && check.finish().is_ok() => {
            Ok((v, header))
        }
        _ => Err(PartsFailure::Corrupt),
    }
}

/// Decodes the `T` that is all of `bytes` (a record's payload, already checked), as
/// `postcard::from_bytes` does, with runs of plain numbers and bytes copied as runs (`seed_of`).
pub(crate) fn value_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut de = PartsDeserializer {
        input: Reader::over(bytes),
    };
    let value = seed_of(&mut de, PhantomData::<T>).ok()?;
    de.input.at_end().then_some(value)
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
        .and_then(|()| seed_of(&mut de, PhantomData::<T>));
    if de.input.failure.is_some() {
        return Err(de.failure());
    }
    match value {
        Ok(v) if de.input.remaining() == 0 => Ok(v),
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
/// carries what serde needs. One thin pointer: a `Result` of a number and a `DeError` comes back
/// from a call in registers, where a fat `&str` would send it through memory, element after
/// element of a sequence.
#[derive(Debug)]
pub(crate) struct DeError(&'static &'static str);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        DeError(&"the value's Deserialize implementation failed")
    }
}

type Result<T> = std::result::Result<T, DeError>;

const END: DeError = DeError(&"unexpected end of the record");

/// How far the record's checksum may trail the cursor: bytes are hashed soon after they are
/// decoded or copied, while they are still in the processor's first-level cache, so that a hit
/// reads the record from memory once (check as you copy), not once to check it and once more to
/// decode it.
const FEED: usize = 16 * 1024;

/// A cursor over the parts of a record.
///
/// The current part's bytes are read through raw pointers into them (`pos`, `limit`, `end`,
/// `fed`), taken once when the part is fetched: a part may be an engine guard whose bytes cost
/// a lookup at every access, and a value of plain bytes or numbers is decoded a byte at a time.
/// The pointers are valid while `current` holds the part: a part's bytes are a borrowed slice or
/// are owned by a boxed value (see [`Part`]), which does not move when the part does, and which
/// nothing mutates while it is shared.
struct Reader<'p> {
    parts: &'p dyn Parts,
    count: u32,
    next: u32,
    current: Part<'p>,
    /// The cursor, in `current`.
    pos: *const u8,
    /// Where `pop` stops to look: the end of the part, or sooner where the checksum is due.
    limit: *const u8,
    /// The end of the part's bytes.
    end: *const u8,
    /// The checksum has been fed the part's bytes up to here.
    fed: *const u8,
    /// Bytes of the record after the current part (the length the parts declare, less what the
    /// parts so far held: a part holding more is a damaged record).
    after: u64,
    /// A part that could not be read.
    failure: Option<Error>,
    /// Fed every byte of the record as it is read, if the record is to be checked.
    check: Option<RecordCheck>,
}

/// No parts: the reader of a whole record has its bytes already.
struct NoParts;

static NO_PARTS: NoParts = NoParts;

impl Parts for NoParts {
    fn len(&self) -> u64 {
        0
    }
    fn count(&self) -> u32 {
        0
    }
    fn part(&self, _index: u32) -> std::result::Result<Part<'_>, Error> {
        Err(Error::corrupted("no part"))
    }
}

/// Bytes taken from the reader: borrowed from one part, or joined from several.
enum Taken<'r> {
    Within(&'r [u8]),
    Joined(Vec<u8>),
}

// The only unsafe code of the decoder: reading the current part through pointers (see `Reader`).
#[allow(unsafe_code)]
impl<'p> Reader<'p> {
    fn new(parts: &'p dyn Parts) -> Reader<'p> {
        let none: &'static [u8] = &[];
        let at = none.as_ptr();
        Reader {
            parts,
            count: parts.count(),
            next: 0,
            current: Part::from(none),
            pos: at,
            limit: at,
            end: at,
            fed: at,
            after: parts.len(),
            failure: None,
            check: None,
        }
    }

    /// A reader of the bytes of `whole`, the whole record (no parts to fetch, nothing to check).
    fn over(whole: &'p [u8]) -> Reader<'p> {
        let pos = whole.as_ptr();
        // SAFETY: one past the end of `whole`.
        let end = unsafe { pos.add(whole.len()) };
        Reader {
            parts: &NO_PARTS,
            count: 0,
            next: 0,
            current: Part::from(whole),
            pos,
            limit: end,
            end,
            fed: pos,
            after: 0,
            failure: None,
            check: None,
        }
    }

    /// Bytes of the record after the cursor.
    fn remaining(&self) -> u64 {
        self.after + self.left() as u64
    }

    /// The next `n` bytes, if they lie before `limit` (where `pop` must stop to feed the
    /// checksum or move to the next part); the cursor stays. See [`Reader::advance`].
    #[inline]
    fn ahead(&self, n: usize) -> Option<&[u8]> {
        // SAFETY: `pos <= limit <= end`, all in (or one past) the current part.
        let before_limit = unsafe { self.limit.offset_from(self.pos) as usize };
        // SAFETY: `n` bytes of the current part from the cursor.
        (before_limit >= n).then(|| unsafe { std::slice::from_raw_parts(self.pos, n) })
    }

    /// Moves the cursor over `k` bytes that [`Reader::ahead`] lent (`k` at most their count).
    #[inline]
    fn advance(&mut self, k: usize) {
        // SAFETY: `ahead` showed at least `k` bytes before `limit`.
        debug_assert!(unsafe { self.limit.offset_from(self.pos) as usize } >= k);
        self.pos = unsafe { self.pos.add(k) };
    }

    /// Bytes of the current part after the cursor.
    fn left(&self) -> usize {
        // SAFETY: `pos` and `end` point into (or one past) the same part, `pos <= end`.
        unsafe { self.end.offset_from(self.pos) as usize }
    }

    /// Whether the whole record has been read: every part, to its end.
    fn at_end(&self) -> bool {
        self.after == 0 && self.next == self.count && self.pos == self.end
    }

    /// Feeds the checksum the bytes read since it was last fed.
    fn feed(&mut self) {
        if let Some(check) = &mut self.check {
            // SAFETY: `fed <= pos`, both in the current part.
            let n = unsafe { self.pos.offset_from(self.fed) as usize };
            check.feed(unsafe { std::slice::from_raw_parts(self.fed, n) });
        }
        self.fed = self.pos;
        self.limit = if self.check.is_some() && self.left() > FEED {
            // SAFETY: within the part.
            unsafe { self.pos.add(FEED) }
        } else {
            self.end
        };
    }

    /// Makes the cursor point at an unread byte of the current part, feeding the checksum on
    /// the way.
    #[cold]
    fn fill(&mut self) -> Result<()> {
        self.feed();
        while self.pos == self.end {
            if self.next >= self.count {
                return Err(END);
            }
            match self.parts.part(self.next) {
                Ok(part) => {
                    if part.len() as u64 > self.after {
                        return Err(DeError(&"a part runs past the record's length"));
                    }
                    self.after -= part.len() as u64;
                    self.current = part;
                    let bytes: &[u8] = &self.current;
                    self.pos = bytes.as_ptr();
                    // SAFETY: one past the end of the part's bytes.
                    self.end = unsafe { self.pos.add(bytes.len()) };
                    self.fed = self.pos;
                    self.feed();
                }
                Err(e) => {
                    self.failure = Some(e);
                    return Err(DeError(&"a part could not be read"));
                }
            }
            self.next += 1;
        }
        Ok(())
    }

    #[inline]
    fn pop(&mut self) -> Result<u8> {
        if self.pos == self.limit {
            self.fill()?;
        }
        // SAFETY: `pos < limit <= end`: a byte of the current part.
        let b = unsafe { *self.pos };
        self.pos = unsafe { self.pos.add(1) };
        Ok(b)
    }

    /// The next `n` bytes. Checked against what is left before anything is allocated, so a
    /// damaged length cannot ask for more memory than the record holds.
    fn take(&mut self, n: usize) -> Result<Taken<'_>> {
        if n as u64 > self.remaining() {
            return Err(END);
        }
        if n == 0 {
            return Ok(Taken::Within(&[]));
        }
        if self.pos == self.end {
            self.fill()?;
        }
        if self.left() >= n {
            let start = self.pos;
            // SAFETY: `n` bytes of the current part from the cursor.
            self.pos = unsafe { self.pos.add(n) };
            if self.pos >= self.limit {
                self.feed();
            }
            return Ok(Taken::Within(unsafe {
                std::slice::from_raw_parts(start, n)
            }));
        }
        let mut joined = Vec::with_capacity(n);
        self.runs(n, |run| joined.extend_from_slice(run))?;
        Ok(Taken::Joined(joined))
    }

    /// Hands the next `n` bytes to `f` in runs, each within a part and fed to the checksum just
    /// after `f` read it (while it is in the cache). Checked against what is left first.
    fn runs(&mut self, mut n: usize, mut f: impl FnMut(&[u8])) -> Result<()> {
        if n as u64 > self.remaining() {
            return Err(END);
        }
        while n > 0 {
            if self.pos == self.end {
                self.fill()?;
            }
            self.feed();
            let k = n.min(self.left()).min(FEED);
            // SAFETY: `k` bytes of the current part from the cursor.
            f(unsafe { std::slice::from_raw_parts(self.pos, k) });
            self.pos = unsafe { self.pos.add(k) };
            n -= k;
        }
        self.feed();
        Ok(())
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        // SAFETY: `limit <= end`, in the current part.
        if unsafe { self.limit.offset_from(self.pos) } as usize >= N {
            let mut out = [0u8; N];
            // SAFETY: `N` bytes of the current part from the cursor.
            unsafe {
                std::ptr::copy_nonoverlapping(self.pos, out.as_mut_ptr(), N);
                self.pos = self.pos.add(N);
            }
            return Ok(out);
        }
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.pop()?;
        }
        Ok(out)
    }
}

/// Decodes what `s` reads. A `Vec` of bytes or of floats read by serde's own `Deserialize`
/// (the seed is `PhantomData<Vec<u8>>`, `PhantomData<Vec<f32>>` or `PhantomData<Vec<f64>>`,
/// whether the vector is the value or a field, element or entry of it) is copied in runs: the
/// same bytes, read as postcard lays them out (a length, then the elements), without a call per
/// element. A value read through a seed of its own (`#[serde(with = ...)]`, ...) is left to it.
#[inline]
fn seed_of<'de, S: DeserializeSeed<'de>>(de: &mut PartsDeserializer<'_>, s: S) -> Result<S::Value> {
    // Settled at compile time for nearly every seed (numbers, tuples, structs): only a seed of
    // no size (`PhantomData`) making a value the size of a `Vec` can be one of the three.
    if size_of::<S>() != 0 || size_of::<S::Value>() != size_of::<Vec<u8>>() {
        return s.deserialize(de);
    }
    let id = typeid::of::<S>();
    if id == typeid::of::<PhantomData<Vec<u8>>>() {
        let n = de.varint_usize()?;
        let bytes = match de.input.take(n)? {
            Taken::Within(b) => b.to_vec(),
            Taken::Joined(v) => v,
        };
        return Ok(same_type::<Vec<u8>, S::Value>(bytes));
    }
    if id == typeid::of::<PhantomData<Vec<f32>>>() {
        let v = de.number_run(f32::from_le_bytes)?;
        return Ok(same_type::<Vec<f32>, S::Value>(v));
    }
    if id == typeid::of::<PhantomData<Vec<f64>>>() {
        let v = de.number_run(f64::from_le_bytes)?;
        return Ok(same_type::<Vec<f64>, S::Value>(v));
    }
    s.deserialize(de)
}

/// `a` as a `B`, which is `A`: the caller compared their type ids, and `A` holds no lifetimes,
/// so the two are one type.
#[allow(unsafe_code)]
fn same_type<A, B>(a: A) -> B {
    assert!(size_of::<A>() == size_of::<B>() && typeid::of::<A>() == typeid::of::<B>());
    let a = ManuallyDrop::new(a);
    // SAFETY: `B` is `A` (checked above): this moves the value out of `a`, which is not dropped.
    unsafe { std::ptr::read((&*a as *const A).cast::<B>()) }
}

struct PartsDeserializer<'p> {
    input: Reader<'p>,
}

/// postcard's varint: 7 bits a byte, least significant first; at most as many bytes as the
/// type needs, the last holding only the bits that are left.
macro_rules! varint {
    ($name:ident, $ty:ty) => {
        #[inline]
        fn $name(&mut self) -> Result<$ty> {
            const BITS: usize = <$ty>::BITS as usize;
            const MAX_BYTES: usize = BITS.div_ceil(7);
            const LAST_MAX: u8 = (1 << (BITS % 7)) - 1;
            let mut out: $ty = 0;
            // The common case: the longest varint fits before `limit`, so its bytes are read
            // from one slice, with no test per byte of whether the part goes on.
            if let Some(ahead) = self.input.ahead(MAX_BYTES) {
                for (i, &byte) in ahead.iter().enumerate() {
                    out |= ((byte & 0x7f) as $ty) << (7 * i);
                    if byte & 0x80 == 0 {
                        if i == MAX_BYTES - 1 && byte > LAST_MAX {
                            return Err(DeError(&"bad varint"));
                        }
                        self.input.advance(i + 1);
                        return Ok(out);
                    }
                }
                return Err(DeError(&"bad varint"));
            }
            for i in 0..MAX_BYTES {
                let byte = self.input.pop()?;
                out |= ((byte & 0x7f) as $ty) << (7 * i);
                if byte & 0x80 == 0 {
                    if i == MAX_BYTES - 1 && byte > LAST_MAX {
                        return Err(DeError(&"bad varint"));
                    }
                    return Ok(out);
                }
            }
            Err(DeError(&"bad varint"))
        }
    };
}

impl PartsDeserializer<'_> {
    /// A length, then that many fixed-width little-endian numbers (`f32`, `f64`), decoded from
    /// runs of bytes; a number split between two parts is joined in `carry`. `from` is a type
    /// parameter, not a function pointer, so that it is inlined into the loop (which then copies
    /// in vector instructions) however the compiler inlines this function.
    fn number_run<const N: usize, F, From: Fn([u8; N]) -> F>(
        &mut self,
        from: From,
    ) -> Result<Vec<F>> {
        let n = self.varint_usize()?;
        let len = n.checked_mul(N).ok_or(END)?;
        if len as u64 > self.input.remaining() {
            return Err(END);
        }
        let mut out = Vec::with_capacity(n);
        let (mut carry, mut held) = ([0u8; N], 0);
        self.input.runs(len, |mut run| {
            if held > 0 {
                let k = (N - held).min(run.len());
                carry[held..held + k].copy_from_slice(&run[..k]);
                held += k;
                run = &run[k..];
                if held < N {
                    return;
                }
                out.push(from(carry));
                held = 0;
            }
            let chunks = run.chunks_exact(N);
            let rest = chunks.remainder();
            out.extend(chunks.map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                from(a)
            }));
            carry[..rest.len()].copy_from_slice(rest);
            held = rest.len();
        })?;
        Ok(out)
    }
}

impl PartsDeserializer<'_> {
    varint!(varint_u16, u16);
    varint!(varint_u32, u32);
    varint!(varint_u64, u64);
    varint!(varint_u128, u128);

    fn varint_usize(&mut self) -> Result<usize> {
        usize::try_from(self.varint_u64()?).map_err(|_| DeError(&"bad length"))
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

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, s: S) -> Result<Option<S::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed_of(&mut *self.de, s).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // As postcard: no hint larger than the bytes left (one byte per element at least), so a
        // damaged count cannot make serde reserve much.
        (self.de.input.remaining() >= self.len as u64).then_some(self.len)
    }
}

impl<'de> de::MapAccess<'de> for Counted<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, s: K) -> Result<Option<K::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed_of(&mut *self.de, s).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, s: V) -> Result<V::Value> {
        seed_of(&mut *self.de, s)
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
        Err(DeError(&"postcard is not self-describing"))
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.input.pop()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(DeError(&"bad bool")),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.input.pop()? as i8)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u16()?;
        visitor.visit_i16(zigzag_i16(v))
    }

    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u32()?;
        visitor.visit_i32(zigzag_i32(v))
    }

    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u64()?;
        visitor.visit_i64(zigzag_i64(v))
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u128()?;
        visitor.visit_i128(zigzag_i128(v))
    }

    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.input.pop()?)
    }

    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u16()?;
        visitor.visit_u16(v)
    }

    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u32()?;
        visitor.visit_u32(v)
    }

    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u64()?;
        visitor.visit_u64(v)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let v = self.varint_u128()?;
        visitor.visit_u128(v)
    }

    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bits = u32::from_le_bytes(self.input.array()?);
        visitor.visit_f32(f32::from_bits(bits))
    }

    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let bits = u64::from_le_bytes(self.input.array()?);
        visitor.visit_f64(f64::from_bits(bits))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        const BAD: DeError = DeError(&"bad char");
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
        const BAD: DeError = DeError(&"bad UTF-8");
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
            _ => Err(DeError(&"bad option")),
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

    #[inline]
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
        Err(DeError(&"postcard encodes no identifiers"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
        Err(DeError(&"postcard cannot skip a value"))
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

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, s: S) -> Result<S::Value> {
        seed_of(self, s)
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
        // Cuts of every kind of size: one byte, small, around 4 KiB and larger.
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
        // Vectors read in runs, numbers split between parts at every offset.
        let floats: Vec<f32> = (0..5_001).map(|i| i as f32 / 7.0).collect();
        let doubles: Vec<f64> = (0..3_001).map(|i| -(i as f64) / 3.0).collect();
        agree(&floats);
        agree(&doubles);
        agree(&(
            plain.clone(),
            vec![floats.clone(), vec![]],
            Some(doubles.clone()),
        ));
        agree(&BTreeMap::from([(1u8, floats), (2, Vec::new())]));
        agree(&Vec::<Vec<u8>>::from([vec![], vec![1], plain.clone()]));
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
            // Read in runs (`seed_of`): vectors of bytes and floats, alone and nested.
            check_agrees::<(Vec<f32>, Vec<u8>)>(&bytes);
            check_agrees::<Vec<Vec<f64>>>(&bytes);
            check_agrees::<Vec<f32>>(&bytes);
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
        assert_eq!(value_from_slice::<T>(bytes), theirs, "whole: {bytes:02x?}");
    }

    #[test]
    fn varints_agree_with_postcard_read_whole_or_byte_by_byte() {
        // Each varint is followed by a run of bytes long enough that, read whole, it is decoded
        // from one slice (`Reader::ahead`); cut in parts of 3, a byte at a time (`pop`).
        let mut varints: Vec<Vec<u8>> = Vec::new();
        for shift in 0..128 {
            for n in [1u128 << shift, (1u128 << shift) - 1, (1u128 << shift) + 1] {
                varints.push(postcard::to_allocvec(&n).unwrap());
            }
        }
        varints.push(postcard::to_allocvec(&u128::MAX).unwrap());
        // Too long, or a last byte holding more bits than the type has left.
        for len in 1..=20 {
            let mut v = vec![0x80u8; len];
            varints.push(v.clone());
            *v.last_mut().unwrap() = 0x02;
            varints.push(v.clone());
            *v.last_mut().unwrap() = 0x7f;
            varints.push(v);
        }
        for v in &varints {
            let mut bytes = v.clone();
            bytes.push(12);
            bytes.extend(0..12u8);
            check_agrees::<(u16, Vec<u8>)>(&bytes);
            check_agrees::<(u32, Vec<u8>)>(&bytes);
            check_agrees::<(u64, Vec<u8>)>(&bytes);
            check_agrees::<(u128, Vec<u8>)>(&bytes);
            check_agrees::<(i64, Vec<u8>)>(&bytes);
            check_agrees::<Vec<(u64, f64)>>(&bytes);
            check_agrees::<(u64,)>(v);
        }
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
