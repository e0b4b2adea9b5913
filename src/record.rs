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
//! | 9      | flags (0; reserved)                                            |
//! | 10..16 | reserved, zero                                                 |
//! | 16..24 | type fingerprint: xxh3-64 of `std::any::type_name` of the value |
//! | 24..32 | compute time of the call that produced it, in nanoseconds      |
//! | 32..   | the value, postcard-encoded                                    |

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, ErrorKind};

pub(crate) const HEADER_LEN: usize = 32;

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

/// The type fingerprint stored with a value of type `T`.
///
/// Derived from the type's name, which rustc does not promise to keep across compiler versions:
/// if a new compiler spells a name differently, old entries of that type become misses (never
/// wrong values).
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    xxh3_64(std::any::type_name::<T>().as_bytes())
}

/// Encodes `value` as a record, in one allocation.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    compute: Duration,
) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut out = postcard::to_extend(value, std::mem::take(&mut out)).map_err(|e| {
        Error::with_source(
            ErrorKind::Encode,
            format!("cannot encode a {}", std::any::type_name::<T>()),
            e,
        )
    })?;
    out[8] = RECORD_VERSION;
    out[16..24].copy_from_slice(&fingerprint::<T>().to_le_bytes());
    let nanos = u64::try_from(compute.as_nanos()).unwrap_or(u64::MAX);
    out[24..32].copy_from_slice(&nanos.to_le_bytes());
    let sum = checksum(&out[8..]);
    out[..8].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// A record's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub fingerprint: u64,
    pub compute_nanos: u64,
}

/// Why stored bytes were not handed back as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Too short, wrong checksum, unknown version, or a payload that does not decode.
    Corrupt,
    /// A sound record of another type.
    TypeMismatch,
}

/// Checks the header and checksum of `bytes`; on success returns the header and the payload.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), Rejected> {
    if bytes.len() < HEADER_LEN {
        return Err(Rejected::Corrupt);
    }
    let sum = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| Rejected::Corrupt)?);
    if checksum(&bytes[8..]) != sum || bytes[8] != RECORD_VERSION || bytes[9..16] != [0; 7] {
        return Err(Rejected::Corrupt);
    }
    let word = |at: usize| {
        bytes[at..at + 8]
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| Rejected::Corrupt)
    };
    let header = Header {
        fingerprint: word(16)?,
        compute_nanos: word(24)?,
    };
    Ok((header, &bytes[HEADER_LEN..]))
}

/// Decodes a record holding a `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, Header), Rejected> {
    let (header, payload) = parse(bytes)?;
    if header.fingerprint != fingerprint::<T>() {
        return Err(Rejected::TypeMismatch);
    }
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok((value, header)),
        _ => Err(Rejected::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn other_type_is_a_mismatch_not_garbage() {
        let bytes = encode(&7u64, Duration::ZERO).unwrap();
        assert_eq!(decode::<i64>(&bytes).unwrap_err(), Rejected::TypeMismatch);
        assert_eq!(decode::<u64>(&bytes[..10]).unwrap_err(), Rejected::Corrupt);
        assert_eq!(decode::<u64>(&[]).unwrap_err(), Rejected::Corrupt);
    }
}
