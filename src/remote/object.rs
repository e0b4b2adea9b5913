//! The objects of the remote tier: where each lives, and its bytes (ARCHITECTURE.md, "The
//! remote tier", has the same table).
//!
//! An object is `{prefix}/ckpt-v1/r/{id, 32 hex digits}`, holding a header and then the exact
//! record bytes the local file holds for that id. Integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `CKRO` |
//! | 4..6 | object format version (1) |
//! | 6..8 | flags: bit 0 code hash present, bit 1 version present, bit 2 value type present |
//! | 8..12 | header length `H` (the record starts there) |
//! | 12..16 | reserved, zero |
//! | 16..32 | checkpoint id |
//! | 32..40 | function key |
//! | 40..48 | code version |
//! | 48..56 | code hash (zero when absent) |
//! | 56..64 | record length `L` |
//! | 64..72 | header checksum: xxh3-64 of bytes 0..64 and 72..H |
//! | 72..H | `lp(module)`, `lp(name)`, then `lp(version)` and `lp(value type)` if flagged; `lp` is a u32 length and UTF-8 |
//! | H..H+L | the record |

use object_store::path::Path;
use xxhash_rust::xxh3::Xxh3Default;

use crate::id::{CheckpointId, Function};

pub(crate) const MAGIC: [u8; 4] = *b"CKRO";
pub(crate) const OBJECT_VERSION: u16 = 1;
/// The folder of this layout's objects under the prefix; a new layout gets a new folder.
pub(crate) const LAYOUT: &str = "ckpt-v1";
pub(crate) const FIXED: usize = 72;
/// Bounds that a lying header cannot push past.
const MAX_HEADER: usize = 64 * 1024;
const MAX_NAME: usize = 4096;

const HAS_CODE_HASH: u16 = 1;
const HAS_VERSION: u16 = 2;
const HAS_VALUE_TYPE: u16 = 4;

/// Where the object of `id` lives.
pub(crate) fn location(prefix: &Path, id: &CheckpointId) -> Path {
    results(prefix).clone_with(&format!("{id}"))
}

trait CloneWith {
    fn clone_with(&self, part: &str) -> Path;
}

impl CloneWith for Path {
    fn clone_with(&self, part: &str) -> Path {
        self.clone().join(part)
    }
}

/// The folder of every result object.
pub(crate) fn results(prefix: &Path) -> Path {
    prefix.clone().join(LAYOUT).join("r")
}

/// What an object says about its record, checked.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHeader {
    pub function: Function,
    pub value_type: Option<String>,
    pub header_len: usize,
    pub record_len: u64,
}

/// The header of the object that holds `record_len` bytes of `function`'s result `id`.
pub(crate) fn encode_header(
    id: &CheckpointId,
    function: &Function,
    value_type: Option<&str>,
    record_len: u64,
) -> Vec<u8> {
    let mut flags = 0u16;
    let mut tail = Vec::new();
    let lp = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    lp(&mut tail, function.module());
    lp(&mut tail, function.name());
    if let Some(v) = function.version() {
        flags |= HAS_VERSION;
        lp(&mut tail, v);
    }
    if let Some(t) = value_type {
        flags |= HAS_VALUE_TYPE;
        lp(&mut tail, t);
    }
    if function.code_hash().is_some() {
        flags |= HAS_CODE_HASH;
    }
    let header_len = FIXED + tail.len();
    let mut out = Vec::with_capacity(header_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&OBJECT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(header_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&function.key().to_le_bytes());
    out.extend_from_slice(&function.code_version().to_le_bytes());
    out.extend_from_slice(&function.code_hash().unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&record_len.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&tail);
    let sum = header_sum(&out);
    out[64..72].copy_from_slice(&sum.to_le_bytes());
    out
}

fn header_sum(header: &[u8]) -> u64 {
    let mut h = Xxh3Default::new();
    h.update(&header[..64]);
    h.update(&header[FIXED..]);
    h.digest()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Why an object was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damaged {
    /// Too short for its header, or its header says less than it holds.
    Truncated,
    /// Not this layout, a header that fails its checksum or its own fields.
    Header,
    /// The record fails its own checks (checksum, version).
    Record,
    /// The object of another id or function than its name and header say.
    Mismatch,
}

/// The header length the start of an object states (at least `FIXED` bytes of it), if it is
/// one this layout allows.
pub(crate) fn header_len(start: &[u8]) -> Result<usize, Damaged> {
    let stated = start.get(8..12).ok_or(Damaged::Truncated)?;
    let len = u32_at(stated, 0) as usize;
    if start[..4] != MAGIC || !(FIXED..=MAX_HEADER).contains(&len) {
        return Err(Damaged::Header);
    }
    Ok(len)
}

/// Checks the header at the start of `object` (which may hold only the header's first bytes:
/// `Truncated` then), for the object stored under `id`.
pub(crate) fn parse_header(object: &[u8], id: &CheckpointId) -> Result<ObjectHeader, Damaged> {
    if object.len() < FIXED {
        return Err(Damaged::Truncated);
    }
    if object[..4] != MAGIC
        || object[4..6] != OBJECT_VERSION.to_le_bytes()
        || object[12..16] != [0; 4]
    {
        return Err(Damaged::Header);
    }
    let flags = u16::from_le_bytes([object[6], object[7]]);
    if flags & !(HAS_CODE_HASH | HAS_VERSION | HAS_VALUE_TYPE) != 0 {
        return Err(Damaged::Header);
    }
    let header_len = u32_at(object, 8) as usize;
    if !(FIXED..=MAX_HEADER).contains(&header_len) {
        return Err(Damaged::Header);
    }
    let Some(header) = object.get(..header_len) else {
        return Err(Damaged::Truncated);
    };
    if header_sum(header) != u64_at(header, 64) {
        return Err(Damaged::Header);
    }
    if header[16..32] != id.as_bytes()[..] {
        return Err(Damaged::Mismatch);
    }
    let mut at = FIXED;
    let mut take = || -> Result<String, Damaged> {
        let len = header
            .get(at..at + 4)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or(Damaged::Header)?;
        if len > MAX_NAME {
            return Err(Damaged::Header);
        }
        let bytes = header.get(at + 4..at + 4 + len).ok_or(Damaged::Header)?;
        at += 4 + len;
        String::from_utf8(bytes.to_vec()).map_err(|_| Damaged::Header)
    };
    let module = take()?;
    let name = take()?;
    let version = (flags & HAS_VERSION != 0).then(&mut take).transpose()?;
    let value_type = (flags & HAS_VALUE_TYPE != 0).then(&mut take).transpose()?;
    if at != header_len {
        return Err(Damaged::Header);
    }
    let mut function = Function::new(module, name);
    if flags & HAS_CODE_HASH != 0 {
        function = function.with_code_hash(u64_at(header, 48));
    } else if u64_at(header, 48) != 0 {
        return Err(Damaged::Header);
    }
    if let Some(v) = version {
        function = function.with_version(v);
    }
    // The function the header names must be the one its key and code version say: a backfill
    // attributes the entry to it.
    if function.key() != u64_at(header, 32) || function.code_version() != u64_at(header, 40) {
        return Err(Damaged::Mismatch);
    }
    Ok(ObjectHeader {
        function,
        value_type,
        header_len,
        record_len: u64_at(header, 56),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_every_damage_is_refused() {
        let id = CheckpointId::hash_bytes(b"x");
        let f = Function::new("m", "f").with_code_hash(9).with_version("2");
        let header = encode_header(&id, &f, Some("u64"), 40);
        let got = parse_header(&header, &id).unwrap();
        assert_eq!(got.function.code_version(), f.code_version());
        assert_eq!(got.value_type.as_deref(), Some("u64"));
        assert_eq!((got.header_len, got.record_len), (header.len(), 40));
        for i in 0..header.len() {
            let mut bad = header.clone();
            bad[i] ^= 0x10;
            assert!(parse_header(&bad, &id).is_err(), "byte {i}");
        }
        for cut in 0..header.len() {
            assert!(parse_header(&header[..cut], &id).is_err(), "cut {cut}");
        }
        let other = CheckpointId::hash_bytes(b"y");
        assert_eq!(
            parse_header(&header, &other).unwrap_err(),
            Damaged::Mismatch
        );
    }

    #[test]
    fn the_location_is_the_documented_one() {
        let id = CheckpointId::from_bytes([0xab; 16]);
        let at = location(&Path::from("team/x"), &id);
        assert_eq!(
            at.as_ref(),
            "team/x/ckpt-v1/r/abababababababababababababababab"
        );
    }
}
