//! The stored form of one result: a 32-byte header, then the postcard bytes of the value.
//!
//! Every [`Cache`](crate::Cache) stores these bytes unchanged, so an entry is portable: the same
//! id maps to the same bytes in the redb store, in memory, or in a remote tier. Layout (all
//! integers little-endian; ARCHITECTURE.md has the same table):
//!
//! | bytes  | field                                                          |
//! |--------|----------------------------------------------------------------|
//! | 0..8   | checksum: xxh3-64 of bytes 8..end                              |
//! | 8      | record format version (1)                                      |
//! | 9      | flags: bit 0, the payload is compressed (`compress.rs`); others 0 |
//! | 10..16 | reserved, zero                                                 |
//! | 16..24 | type fingerprint: xxh3-64 of the value type's traced shape (`shape.rs`) |
//! | 24..32 | compute time of the call that produced it, in nanoseconds      |
//! | 32..   | the value, postcard-encoded (compressed: `u64le(n)` ‖ zstd frame) |

mod compress;
mod de;
mod lend;
mod shape;

use std::hash::Hasher as _;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(all(feature = "zstd", feature = "fault-injection"))]
pub(crate) use self::compress::AS_IF_WITHOUT_ZSTD;
pub use self::compress::Compression;
use self::compress::{KNOWN_FLAGS, MAX_DECOMPRESSED};
pub(crate) use self::lend::LentBytes;
pub use self::lend::{Lent, Part, Parts};
use crate::error::{Error, ErrorKind};

pub(crate) const HEADER_LEN: usize = 32;

/// Records longer than this are encoded as a stream (into the cache's
/// [`save_large`](crate::Cache::save_large)) rather than into one buffer; the redb store keeps
/// them in chunks of at most this many bytes. 64 bytes under 512 KiB: a chunk alone in a B-tree
/// leaf (4 bytes of header, 4 of length, 20 of key) fills one 512 KiB page of the engine
/// exactly, where a whole power of two would be rounded up to the next.
pub(crate) const STREAM_ABOVE: usize = 512 * 1024 - 64;

/// The record checksum: xxh3-64 of `bytes`.
///
/// Computed with twox-hash rather than xxhash-rust (which the ids use): the digest is the same
/// (xxh3 is one algorithm; a test pins them equal), but twox-hash picks its AVX2 code at run
/// time, where xxhash-rust only uses what the build targets (SSE2 by default), and a hit
/// checksums the whole record: about twice as fast on 4 KiB and larger values.
#[inline]
fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}
pub(crate) const RECORD_VERSION: u8 = 1;

/// The type fingerprint stored with a value of type `T`: a hash of the shape its `Deserialize`
/// reads, or for a type that cannot be traced, of its name and the running build (`shape.rs`).
/// Computed once per type per process; the decorator keeps its own type's at hand.
pub(crate) fn fingerprint<T: DeserializeOwned>() -> u64 {
    shape::fingerprint::<T>()
}

/// Encodes `value` as a record, in one allocation.
#[cfg_attr(not(any(test, feature = "fault-injection")), allow(dead_code))]
pub(crate) fn encode<T: Serialize + DeserializeOwned>(
    value: &T,
    compute: Duration,
) -> Result<Vec<u8>, Error> {
    let mut out = postcard::to_extend(value, vec![0u8; HEADER_LEN]).map_err(encode_error::<T>)?;
    seal(&mut out, fingerprint::<T>(), compute);
    Ok(out)
}

/// Encodes `value` as a record of type fingerprint `fingerprint` if the record is at most `limit`
/// bytes long; `None` if longer (the encoding stops there).
pub(crate) fn encode_bounded<T: Serialize + ?Sized>(
    value: &T,
    fingerprint: u64,
    compute: Duration,
    limit: usize,
) -> Result<Option<Vec<u8>>, Error> {
    struct Bounded {
        out: Vec<u8>,
        limit: usize,
    }
    impl postcard::ser_flavors::Flavor for Bounded {
        type Output = Vec<u8>;
        fn try_push(&mut self, b: u8) -> postcard::Result<()> {
            self.try_extend(&[b])
        }
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            if self.out.len() + data.len() > self.limit {
                return Err(postcard::Error::SerializeBufferFull);
            }
            self.out.extend_from_slice(data);
            Ok(())
        }
        fn finalize(self) -> postcard::Result<Vec<u8>> {
            Ok(self.out)
        }
    }
    let flavor = Bounded {
        out: vec![0u8; HEADER_LEN],
        limit,
    };
    let mut out = match postcard::serialize_with_flavor(value, flavor) {
        Ok(out) => out,
        Err(postcard::Error::SerializeBufferFull) => return Ok(None),
        Err(e) => return Err(encode_error::<T>(e)),
    };
    seal(&mut out, fingerprint, compute);
    Ok(Some(out))
}

/// A value encoded for saving: one record, or too long for one buffer (to be streamed).
pub(crate) enum Encoded {
    Whole(Vec<u8>),
    Large,
}

/// Encodes `value` as a record of at most `limit` bytes, compressed as `compression` says
/// where that makes it shorter: a value whose plain record is longer than `limit` but whose
/// compressed one fits is compressed as it is encoded (its plain encoding never in memory),
/// up to `MAX_DECOMPRESSED` bytes of it. [`Encoded::Large`] when no record fits.
pub(crate) fn encode_for_save<T: Serialize + ?Sized>(
    value: &T,
    fingerprint: u64,
    compute: Duration,
    limit: usize,
    compression: Compression,
) -> Result<Encoded, Error> {
    let plain = encode_bounded(value, fingerprint, compute, limit)?;
    match compression {
        Compression::None => Ok(plain.map_or(Encoded::Large, Encoded::Whole)),
        #[cfg(feature = "zstd")]
        Compression::Zstd { level } => Ok(match plain {
            Some(bytes) => {
                Encoded::Whole(compress::compress_record(&bytes, level)?.unwrap_or(bytes))
            }
            None => compress::encode_compressed(value, fingerprint, compute, level, limit)?
                .map_or(Encoded::Large, Encoded::Whole),
        }),
    }
}

fn encode_error<T: ?Sized>(e: postcard::Error) -> Error {
    Error::with_source(
        ErrorKind::Encode,
        format!("cannot encode a {}", std::any::type_name::<T>()),
        e,
    )
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Fills in the header of a record whose payload follows its first `HEADER_LEN` bytes.
fn seal(out: &mut [u8], fingerprint: u64, compute: Duration) {
    out[8] = RECORD_VERSION;
    out[16..24].copy_from_slice(&fingerprint.to_le_bytes());
    out[24..32].copy_from_slice(&nanos(compute).to_le_bytes());
    let sum = checksum(&out[8..]);
    out[..8].copy_from_slice(&sum.to_le_bytes());
}

/// Where a record goes as it is encoded, piece by piece.
pub(crate) trait RecordSink {
    /// Appends `bytes` to the record.
    ///
    /// # Errors
    /// When the bytes cannot be stored; the encoding stops.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

/// A record written into one buffer.
impl RecordSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// A value ready to be encoded as a record, piece by piece.
pub(crate) trait EncodeRecord {
    /// Writes the record into `out` with its first 8 bytes (the checksum) zero; returns the
    /// checksum.
    fn write_unsealed(&self, out: &mut dyn RecordSink) -> Result<u64, Error>;

    /// The type fingerprint the record carries.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    fn fingerprint(&self) -> u64;
}

/// A value and its compute time, to be encoded as a record.
pub(crate) struct Encoder<'v, T: ?Sized> {
    pub value: &'v T,
    /// The type fingerprint of `T` (`record::fingerprint`).
    pub fingerprint: u64,
    pub compute: Duration,
}

impl<T: Serialize + ?Sized> EncodeRecord for Encoder<'_, T> {
    fn write_unsealed(&self, out: &mut dyn RecordSink) -> Result<u64, Error> {
        write_unsealed(self.value, self.fingerprint, self.compute, out)
    }

    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// Encodes `value` as a record into `out`, in pieces, with its first 8 bytes (the checksum)
/// zero; returns the checksum, for the caller to put there. One pass over the value, and no
/// buffer the size of the record.
pub(crate) fn write_unsealed<T: Serialize + ?Sized>(
    value: &T,
    fingerprint: u64,
    compute: Duration,
    out: &mut dyn RecordSink,
) -> Result<u64, Error> {
    let mut header = [0u8; HEADER_LEN];
    header[8] = RECORD_VERSION;
    header[16..24].copy_from_slice(&fingerprint.to_le_bytes());
    header[24..32].copy_from_slice(&nanos(compute).to_le_bytes());
    let mut hasher = twox_hash::XxHash3_64::new();
    hasher.write(&header[8..]);
    out.write(&header)?;
    let mut failed = None;
    let flavor = Streaming {
        out,
        hasher: &mut hasher,
        failed: &mut failed,
        buf: [0; 256],
        len: 0,
    };
    let encoded = postcard::serialize_with_flavor(value, flavor);
    if let Some(e) = failed {
        return Err(e);
    }
    encoded.map_err(encode_error::<T>)?;
    Ok(hasher.finish())
}

/// A postcard output that hashes the bytes and passes them on, gathering the small writes
/// postcard makes (a varint, a byte) into larger ones.
struct Streaming<'a> {
    out: &'a mut dyn RecordSink,
    hasher: &'a mut twox_hash::XxHash3_64,
    failed: &'a mut Option<Error>,
    buf: [u8; 256],
    len: usize,
}

impl Streaming<'_> {
    fn emit(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.hasher.write(bytes);
        self.out.write(bytes).map_err(|e| {
            *self.failed = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }

    fn drain(&mut self) -> postcard::Result<()> {
        if self.len > 0 {
            let buf = self.buf;
            let len = std::mem::take(&mut self.len);
            self.emit(&buf[..len])?;
        }
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Streaming<'_> {
    type Output = ();

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.len == self.buf.len() {
            self.drain()?;
        }
        self.buf[self.len] = b;
        self.len += 1;
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.len + data.len() <= self.buf.len() {
            self.buf[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
            return Ok(());
        }
        self.drain()?;
        self.emit(data)
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.drain()
    }
}

/// A record's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fingerprint: u64,
    pub compute_nanos: u64,
    /// The payload is compressed (flag bit 0).
    pub compressed: bool,
}

/// Why stored bytes were not handed back as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Too short, wrong checksum, unknown version, or a payload that does not decode.
    Corrupt,
    /// A sound record of another type.
    TypeMismatch,
    /// A sound record this build cannot decode: compressed, and built without the `zstd`
    /// feature. A miss that leaves the record in place (a build with the feature reads it).
    #[cfg_attr(feature = "zstd", allow(dead_code))]
    Unsupported,
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The header's fields, if its version and reserved bytes are ones this build reads (the
/// checksum is the caller's to check).
fn header_of(head: &[u8; HEADER_LEN]) -> Result<Header, Rejected> {
    if head[8] != RECORD_VERSION || head[9] & !KNOWN_FLAGS != 0 || head[10..16] != [0; 6] {
        return Err(Rejected::Corrupt);
    }
    Ok(Header {
        fingerprint: word(head, 16),
        compute_nanos: word(head, 24),
        compressed: head[9] != 0,
    })
}

/// The first `HEADER_LEN` bytes, if there are as many.
fn head(bytes: &[u8]) -> Result<&[u8; HEADER_LEN], Rejected> {
    bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Rejected::Corrupt)
}

/// Checks the header and checksum of `bytes`; on success returns the header and the payload.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), Rejected> {
    let head = head(bytes)?;
    if checksum(&bytes[8..]) != word(head, 0) {
        return Err(Rejected::Corrupt);
    }
    Ok((header_of(head)?, &bytes[HEADER_LEN..]))
}

/// Decodes a record holding a `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Header), Rejected> {
    decode_as(bytes, fingerprint::<T>())
}

/// Decodes a record holding a `T` of type fingerprint `fingerprint`.
fn decode_as<T: DeserializeOwned>(bytes: &[u8], fingerprint: u64) -> Result<(T, Header), Rejected> {
    let (header, payload) = parse(bytes)?;
    decode_payload(header, payload, fingerprint)
}

fn decode_payload<T: DeserializeOwned>(
    header: Header,
    payload: &[u8],
    fingerprint: u64,
) -> Result<(T, Header), Rejected> {
    if header.fingerprint != fingerprint {
        return Err(Rejected::TypeMismatch);
    }
    if header.compressed {
        return decode_compressed(header, payload);
    }
    match de::value_from_slice::<T>(payload) {
        Some(value) => Ok((value, header)),
        None => Err(Rejected::Corrupt),
    }
}

/// Decodes a compressed payload (out of line: a plain hit pays only the flag test).
#[inline(never)]
fn decode_compressed<T: DeserializeOwned>(
    header: Header,
    payload: &[u8],
) -> Result<(T, Header), Rejected> {
    #[cfg(all(feature = "zstd", feature = "fault-injection"))]
    if compress::AS_IF_WITHOUT_ZSTD.get() {
        return Err(Rejected::Unsupported);
    }
    #[cfg(feature = "zstd")]
    {
        let plain = compress::decompress(payload)?;
        match de::value_from_slice::<T>(&plain) {
            Some(value) => Ok((value, header)),
            None => Err(Rejected::Corrupt),
        }
    }
    #[cfg(not(feature = "zstd"))]
    {
        let _ = (header, payload);
        Err(Rejected::Unsupported)
    }
}

/// Decodes a record that the store checked before lending it (its hot tier): everything but the
/// checksum is checked again.
pub(crate) fn decode_checked<T: DeserializeOwned>(
    bytes: &[u8],
    fingerprint: u64,
) -> Result<(T, Header), Rejected> {
    let header = header_of(head(bytes)?)?;
    decode_payload(header, &bytes[HEADER_LEN..], fingerprint)
}

/// Checks a record fed to it piece by piece, in order: its checksum, its header.
pub(crate) struct RecordCheck {
    head: [u8; HEADER_LEN],
    len: u64,
    hasher: twox_hash::XxHash3_64,
}

impl RecordCheck {
    pub(crate) fn new() -> RecordCheck {
        RecordCheck {
            head: [0; HEADER_LEN],
            len: 0,
            hasher: twox_hash::XxHash3_64::new(),
        }
    }

    /// The next bytes of the record.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while self.len < HEADER_LEN as u64 && !bytes.is_empty() {
            let at = self.len as usize;
            let n = (HEADER_LEN - at).min(bytes.len());
            self.head[at..at + n].copy_from_slice(&bytes[..n]);
            // The checksum covers everything after itself.
            let hashed = 8usize.saturating_sub(at).min(n);
            self.hasher.write(&bytes[hashed..n]);
            self.len += n as u64;
            bytes = &bytes[n..];
        }
        self.hasher.write(bytes);
        self.len += bytes.len() as u64;
    }

    /// How many bytes were fed.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The header, if the record fed is sound.
    pub(crate) fn finish(&self) -> Result<Header, Rejected> {
        if self.len < HEADER_LEN as u64 || self.hasher.finish() != word(&self.head, 0) {
            return Err(Rejected::Corrupt);
        }
        header_of(&self.head)
    }
}

/// How decoding a lent record ended: a value, a rejected record, or a failed read of one of its
/// parts (an error, not a sign of damage).
pub(crate) type Decoded<T> = Result<Result<(T, Header), Rejected>, Error>;

/// Decodes a record as a cache lent it, expecting type fingerprint `fingerprint` (the caller's
/// `fingerprint::<T>()`, looked up once).
#[inline]
pub(crate) fn decode_lent<T: DeserializeOwned>(lent: &Lent<'_>, fingerprint: u64) -> Decoded<T> {
    match lent.bytes() {
        LentBytes::Whole(bytes) => Ok(decode_as(bytes, fingerprint)),
        LentBytes::Checked(bytes) => Ok(decode_checked(bytes, fingerprint)),
        LentBytes::Parts(parts) => decode_parts(parts, fingerprint),
    }
}

/// Decodes a record in parts, in one pass that reads one part at a time: the header is checked
/// before the value is decoded, the checksum before it is returned (see `de.rs`).
pub(crate) fn decode_parts<T: DeserializeOwned>(parts: &dyn Parts, fingerprint: u64) -> Decoded<T> {
    match de::record_from_parts::<T>(parts, fingerprint) {
        Ok(decoded) => Ok(Ok(decoded)),
        Err(de::PartsFailure::Corrupt) => Ok(Err(Rejected::Corrupt)),
        // Compressed records are short (one buffer when saved): joined, then decoded whole.
        Err(de::PartsFailure::Compressed) => {
            Ok(join_parts(parts)?.and_then(|bytes| decode_as(&bytes, fingerprint)))
        }
        Err(de::PartsFailure::Read(e)) => Err(e),
        // A record of another type, unless it is damaged (then it goes, as a damaged one).
        Err(de::PartsFailure::OtherType) => {
            Ok(check_parts(parts)?.and(Err(Rejected::TypeMismatch)))
        }
    }
}

/// The bytes of a record in parts, joined; at most `MAX_DECOMPRESSED` of them.
fn join_parts(parts: &dyn Parts) -> Result<Result<Vec<u8>, Rejected>, Error> {
    let Ok(len) = usize::try_from(parts.len()) else {
        return Ok(Err(Rejected::Corrupt));
    };
    if parts.len() > MAX_DECOMPRESSED {
        return Ok(Err(Rejected::Corrupt));
    }
    let mut out = Vec::with_capacity(len);
    for i in 0..parts.count() {
        match parts.part(i) {
            Ok(part) if !part.is_empty() && out.len() + part.len() <= len => {
                out.extend_from_slice(&part);
            }
            Ok(_) => return Ok(Err(Rejected::Corrupt)),
            Err(e) if e.kind() == ErrorKind::Corrupted => return Ok(Err(Rejected::Corrupt)),
            Err(e) => return Err(e),
        }
    }
    if out.len() != len {
        return Ok(Err(Rejected::Corrupt));
    }
    Ok(Ok(out))
}

/// Checks a record in parts; the parts must add up to the length they declare.
pub(crate) fn check_parts(parts: &dyn Parts) -> Result<Result<Header, Rejected>, Error> {
    let mut check = RecordCheck::new();
    for i in 0..parts.count() {
        match parts.part(i) {
            Ok(part) if !part.is_empty() => check.feed(&part),
            Ok(_) => return Ok(Err(Rejected::Corrupt)),
            Err(e) if e.kind() == ErrorKind::Corrupted => return Ok(Err(Rejected::Corrupt)),
            Err(e) => return Err(e),
        }
    }
    if check.len != parts.len() {
        return Ok(Err(Rejected::Corrupt));
    }
    Ok(check.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    #[test]
    fn checksum_is_xxh3_64() {
        let data: Vec<u8> = (0..(1u32 << 20) + 77)
            .map(|i| (i * 131 % 253) as u8)
            .collect();
        for len in [
            0,
            1,
            3,
            4,
            8,
            9,
            16,
            17,
            128,
            129,
            240,
            241,
            1000,
            1024,
            4096,
            4127,
            65_536,
            1 << 20,
            (1 << 20) + 77,
        ] {
            assert_eq!(checksum(&data[..len]), xxh3_64(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&vec![1u32, 2, 3], Duration::from_millis(5)).unwrap();
        let (v, h) = decode::<Vec<u32>>(&bytes).unwrap();
        assert_eq!(v, [1, 2, 3]);
        assert_eq!(h.compute_nanos, 5_000_000);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = encode(&("hello".to_string(), 42u64), Duration::ZERO).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode::<(String, u64)>(&b).is_err(),
                "flip of bit {i} accepted"
            );
        }
    }

    /// A record lent in parts of `size` bytes.
    struct Cut<'a>(&'a [u8], usize);

    impl Parts for Cut<'_> {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn count(&self) -> u32 {
            self.0.len().div_ceil(self.1) as u32
        }
        fn part(&self, i: u32) -> Result<Part<'_>, Error> {
            let start = i as usize * self.1;
            Ok(self.0[start..(start + self.1).min(self.0.len())].into())
        }
    }

    #[test]
    fn a_record_in_parts_decodes_and_every_bit_flip_is_rejected() {
        let value = ("hello, parts".to_string(), 42u64, vec![7u8; 40]);
        let bytes = encode(&value, Duration::from_millis(5)).unwrap();
        for size in [1, 5, 32, 33, bytes.len()] {
            let (v, h) = decode_parts::<(String, u64, Vec<u8>)>(
                &Cut(&bytes, size),
                fingerprint::<(String, u64, Vec<u8>)>(),
            )
            .unwrap()
            .unwrap();
            assert_eq!(v, value);
            assert_eq!(h.compute_nanos, 5_000_000);
            assert_eq!(
                decode_parts::<u64>(&Cut(&bytes, size), fingerprint::<u64>())
                    .unwrap()
                    .unwrap_err(),
                Rejected::TypeMismatch
            );
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                matches!(
                    decode_parts::<(String, u64, Vec<u8>)>(
                        &Cut(&b, 7),
                        fingerprint::<(String, u64, Vec<u8>)>()
                    ),
                    Ok(Err(Rejected::Corrupt))
                ),
                "flip of bit {i} not taken for damage"
            );
            // Damaged and of another type: damaged (removed), not a mismatch (kept).
            if !(16 * 8..24 * 8).contains(&i) {
                assert_eq!(
                    decode_parts::<u64>(&Cut(&b, 7), fingerprint::<u64>())
                        .unwrap()
                        .unwrap_err(),
                    Rejected::Corrupt
                );
            }
        }
        // Short or long by a byte.
        assert!(matches!(
            decode_parts::<(String, u64, Vec<u8>)>(
                &Cut(&bytes[..bytes.len() - 1], 7),
                fingerprint::<(String, u64, Vec<u8>)>()
            ),
            Ok(Err(Rejected::Corrupt))
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode_parts::<(String, u64, Vec<u8>)>(
                &Cut(&long, 7),
                fingerprint::<(String, u64, Vec<u8>)>()
            ),
            Ok(Err(Rejected::Corrupt))
        ));
    }

    /// A large record, read a byte at a time (`Vec<u8>`, numbers) and in runs (strings, byte
    /// strings) across every kind of cut, with the checksum fed in blocks as it goes: it decodes,
    /// and a flipped bit anywhere, a part longer than the record declares or a missing last
    /// byte is damage.
    #[test]
    fn a_large_record_in_parts_is_checked_as_it_is_read() {
        type Big = (
            Vec<u8>,
            Vec<f32>,
            String,
            serde_bytes::ByteBuf,
            Vec<(u64, f64)>,
        );
        let value: Big = (
            (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect(),
            (0..9_000).map(|i| i as f32 * 0.5).collect(),
            "checkpoint ".repeat(3_000),
            serde_bytes::ByteBuf::from(vec![0x5a; 70_000]),
            (0..2_000)
                .map(|i| (i * 1_000_003, i as f64 / 3.0))
                .collect(),
        );
        let bytes = encode(&value, Duration::ZERO).unwrap();
        let fp = fingerprint::<Big>();
        for size in [997, 16_384, 16_385, 40_000, 65_533, bytes.len()] {
            let (v, _) = decode_parts::<Big>(&Cut(&bytes, size), fp)
                .unwrap()
                .unwrap();
            assert_eq!(v, value, "parts of {size}");
        }
        let mut i = 64;
        while i < bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            for size in [16_385, 65_533] {
                assert!(
                    matches!(
                        decode_parts::<Big>(&Cut(&b, size), fp),
                        Ok(Err(Rejected::Corrupt))
                    ),
                    "flip of bit {i} in parts of {size} not taken for damage"
                );
            }
            i += 4_999;
        }
        /// Parts that declare one byte less than they hold.
        struct Overlong<'a>(Cut<'a>);
        impl Parts for Overlong<'_> {
            fn len(&self) -> u64 {
                self.0.len() - 1
            }
            fn count(&self) -> u32 {
                self.0.count()
            }
            fn part(&self, i: u32) -> Result<Part<'_>, Error> {
                self.0.part(i)
            }
        }
        for size in [16_384, bytes.len()] {
            assert!(matches!(
                decode_parts::<Big>(&Overlong(Cut(&bytes, size)), fp),
                Ok(Err(Rejected::Corrupt))
            ));
            assert!(matches!(
                decode_parts::<Big>(&Cut(&bytes[..bytes.len() - 1], size), fp),
                Ok(Err(Rejected::Corrupt))
            ));
        }
    }

    #[test]
    fn other_type_is_a_mismatch_not_garbage() {
        let bytes = encode(&7u64, Duration::ZERO).unwrap();
        assert_eq!(decode::<i64>(&bytes).unwrap_err(), Rejected::TypeMismatch);
        assert_eq!(decode::<u64>(&bytes[..10]).unwrap_err(), Rejected::Corrupt);
        assert_eq!(decode::<u64>(&[]).unwrap_err(), Rejected::Corrupt);
    }
}
