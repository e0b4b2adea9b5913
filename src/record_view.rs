//! [`Record`]: a checked, read-only view of a stored record, for tools that move or inspect
//! records without knowing the type inside (the `ckpt` command-line tool, a remote tier).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};
use crate::record::{self, Header, Rejected};

/// A stored record, checked: the bytes every [`Cache`](crate::Cache) keeps for a result (see
/// [`Cache::retrieve`](crate::Cache::retrieve) and [`Store::read_record`](crate::Store::read_record)).
///
/// A record is a 32-byte header (checksum, format version, type fingerprint, compute time) and
/// the value's postcard bytes, the [payload](Record::payload); `ARCHITECTURE.md` has the layout
/// byte by byte. [`Record::parse`] accepts only bytes whose checksum matches and whose header is
/// of a version this ckpt reads, so every accessor reads sound data.
///
/// ```
/// use ckpt::{AutoIdentifier, Cache, DecoratorCheckpoint, Function, MemoryCache, Record};
/// let cache = MemoryCache::new();
/// let square = DecoratorCheckpoint::new(Function::new("doc", "square"), AutoIdentifier, cache.clone());
/// square.call(9u64, |x| x * x)?;
///
/// let id = square.identify(&9u64)?;
/// let bytes = cache.retrieve(&id)?.expect("saved");
/// let record = Record::parse(&bytes)?;
/// assert!(record.is_of::<u64>());
/// assert_eq!(record.decode::<u64>()?, 81);
/// assert_eq!(record.payload(), &[81]); // postcard: a u64 below 128 is one byte
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    bytes: &'a [u8],
    header: Header,
}

impl<'a> Record<'a> {
    /// The length of a record's header: the payload starts at this offset.
    pub const HEADER_LEN: usize = record::HEADER_LEN;

    /// Checks `bytes` as a record: long enough for the header, checksum matching, a format
    /// version this ckpt reads, reserved bytes zero. The payload is not decoded (its type is
    /// not known here).
    ///
    /// # Errors
    /// [`ErrorKind::Corrupted`] when any check fails.
    pub fn parse(bytes: &'a [u8]) -> Result<Record<'a>, Error> {
        match record::parse(bytes) {
            Ok((header, _)) => Ok(Record { bytes, header }),
            Err(_) => Err(Error::new(
                ErrorKind::Corrupted,
                format!(
                    "{} bytes are not a sound ckpt record (too short, checksum mismatch, or a \
                     record format this ckpt does not read)",
                    bytes.len()
                ),
            )),
        }
    }

    /// The whole record, header included: what a cache stores.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The value's postcard bytes (everything after the header); for a
    /// [compressed](Self::is_compressed) record, `u64le(n)` and a zstd frame of those `n` bytes.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[Self::HEADER_LEN..]
    }

    /// The record's checksum: xxh3-64 of every byte after the checksum field.
    pub fn checksum(&self) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.bytes[..8]);
        u64::from_le_bytes(word)
    }

    /// The record format version (1).
    pub fn version(&self) -> u8 {
        self.bytes[8]
    }

    /// Whether the payload is compressed (see [`Compression`](crate::Compression)): header flag
    /// bit 0. Such a record decodes only in a build with the `zstd` feature.
    pub fn is_compressed(&self) -> bool {
        self.header.compressed
    }

    /// The fingerprint of the value's type (see [`type_fingerprint`]).
    pub fn type_fingerprint(&self) -> u64 {
        self.header.fingerprint
    }

    /// How long the call that produced the value took.
    pub fn compute_time(&self) -> Duration {
        Duration::from_nanos(self.header.compute_nanos)
    }

    /// Whether the record holds a value of type `T` (by [type fingerprint](type_fingerprint)).
    pub fn is_of<T: DeserializeOwned>(&self) -> bool {
        self.header.fingerprint == record::fingerprint::<T>()
    }

    /// Decodes the value, as a hit does.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the record holds another type;
    /// [`ErrorKind::Corrupted`] when the payload does not decode as a `T` in full;
    /// [`ErrorKind::Unsupported`] when it is compressed and this build lacks the `zstd` feature.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match record::decode::<T>(self.bytes) {
            Ok((value, _)) => Ok(value),
            Err(Rejected::TypeMismatch) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the record holds another type than {}",
                    std::any::type_name::<T>()
                ),
            )),
            Err(Rejected::Corrupt) => Err(Error::new(
                ErrorKind::Corrupted,
                format!(
                    "the record's payload does not decode as a {}",
                    std::any::type_name::<T>()
                ),
            )),
            Err(Rejected::Unsupported) => Err(Error::new(
                ErrorKind::Unsupported,
                "the record is compressed with zstd: decode it with ckpt built with the `zstd` \
                 feature",
            )),
        }
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.bytes.len())
            .field("version", &self.version())
            .field(
                "type_fingerprint",
                &format_args!("{:016x}", self.type_fingerprint()),
            )
            .field("compute_time", &self.compute_time())
            .field("compressed", &self.is_compressed())
            .finish()
    }
}

/// The type fingerprint that records of values of type `T` carry: a hash of `T`'s *shape*, as
/// its `Deserialize` reads it from postcard.
///
/// postcard is not self-describing, so bytes saved for one layout would decode silently into
/// another (two `u32` fields swapped, a `u32` field that became an `i32`). The fingerprint makes
/// such a record a miss instead: it covers what decides how stored bytes are read — primitive
/// types, struct and variant names, field names and their order, variant indices, tuple lengths,
/// options, sequences, maps, and every named type nested inside (recursive types included). It
/// is traced from `T`'s `Deserialize` the first time it is needed in a process (for the
/// decorator: its first call) and kept for the process; a hit compares two words. It does not
/// depend on module paths, the compiler, or the build: the same shape in two programs has the
/// same fingerprint, and two types of one name but different shapes have different ones.
///
/// A type whose `Deserialize` cannot be traced — it asks for `deserialize_any` (untagged,
/// internally tagged or flattened types, which postcard cannot read anyway), calls
/// `deserialize_identifier` or `deserialize_ignored_any`, rejects placeholder values (zero and
/// empty, then one and `"a"`: a URL parsed from a string, a number checked against a range),
/// panics, or nests deeper than 48 levels — falls back to a fingerprint of its type name *and
/// the running build* (a hash of the executable, or of the shared library ckpt is linked into,
/// read once per process). Its records are then read back only by the build that saved them: a
/// rebuilt program recomputes them. A value's own custom `Deserialize` that reads different
/// layouts depending on values it has read is traced along the path the placeholder values take.
///
/// Records saved by ckpt before shapes were traced carry a fingerprint of the type's name alone;
/// the two hash different inputs (a shape's encoding starts with `ckpt-shape\x01`), so such a
/// record is a type mismatch, a counted miss, and is overwritten by the recomputed value.
///
/// ```
/// mod a {
///     #[derive(serde::Deserialize)]
///     pub struct Point { pub x: u32, pub y: u32 }
/// }
/// mod b {
///     #[derive(serde::Deserialize)]
///     pub struct Point { pub y: u32, pub x: u32 } // the fields swapped: another layout
/// }
/// mod c {
///     #[derive(serde::Deserialize)]
///     pub struct Point { pub x: u32, pub y: u32 } // another module, the same layout
/// }
/// use ckpt::type_fingerprint;
/// assert_ne!(type_fingerprint::<a::Point>(), type_fingerprint::<b::Point>());
/// assert_eq!(type_fingerprint::<a::Point>(), type_fingerprint::<c::Point>());
/// assert_ne!(type_fingerprint::<u64>(), type_fingerprint::<i64>());
/// ```
pub fn type_fingerprint<T: DeserializeOwned>() -> u64 {
    record::fingerprint::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_and_exposes_the_parts() {
        let bytes = record::encode(&("ab".to_string(), 7u32), Duration::from_millis(3)).unwrap();
        let r = Record::parse(&bytes).unwrap();
        assert_eq!(r.as_bytes(), &bytes[..]);
        assert_eq!(r.payload(), &bytes[32..]);
        assert_eq!(r.version(), 1);
        assert_eq!(r.compute_time(), Duration::from_millis(3));
        assert!(r.is_of::<(String, u32)>());
        assert!(!r.is_of::<(String, u64)>());
        assert_eq!(r.type_fingerprint(), type_fingerprint::<(String, u32)>());
        assert_eq!(r.decode::<(String, u32)>().unwrap(), ("ab".to_string(), 7));
        assert_eq!(
            r.decode::<(String, u64)>().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            r.checksum(),
            u64::from_le_bytes(bytes[..8].try_into().unwrap())
        );

        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            Record::parse(&bad).unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        assert!(Record::parse(&bytes[..31]).is_err());
        assert!(Record::parse(&[]).is_err());
    }
}
