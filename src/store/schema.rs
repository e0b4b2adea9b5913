//! The store's tables and the encoding of their rows. ARCHITECTURE.md, "The file", documents the
//! same layout; a change here is a schema change (bump `SCHEMA_VERSION` and migrate).

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::stats::{CallStats, EvictionStats, RemoteStats};

/// The schema this build writes and reads. 1: the first; 2: function rows may end with the
/// value type's name (`FunctionRecord::value_type`); version-1 files are migrated on a writable
/// open (`migrate.rs`), and read as they are by a read-only one.
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// The file's identity: `format` = `b"ckpt"`, `schema` = the schema version (u32 LE).
pub(crate) const INFO: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("ckpt_info");
/// id -> record bytes (see `record.rs`): one lookup per hit.
pub(crate) const RESULTS: TableDefinition<'static, &[u8; 16], &[u8]> =
    TableDefinition::new("ckpt_results");
/// id -> entry metadata (`EntryMeta`, 64 bytes).
pub(crate) const ENTRIES: TableDefinition<'static, &[u8; 16], &[u8; 64]> =
    TableDefinition::new("ckpt_entries");
/// (id, chunk index, big-endian) -> the chunk: the pieces of a record longer than the store's
/// chunk length, whose results row is then a manifest (see `chunks.rs`).
pub(crate) const CHUNKS: TableDefinition<'static, &[u8; 20], &[u8]> =
    TableDefinition::new("ckpt_chunks");
/// function key -> function record (postcard `FunctionRecord`).
pub(crate) const FUNCTIONS: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("ckpt_functions");

/// Order indexes, kept only while some limit needs them (see `indexes`). Keys are big-endian so
/// that byte order is numeric order; the id breaks ties.
/// (created ms, id): first in, first out; expiry by age.
pub(crate) const ORDER_CREATED: TableDefinition<'static, &[u8; 24], ()> =
    TableDefinition::new("ckpt_order_created");
/// (last access ms, id): least recently used; expiry by idleness.
pub(crate) const ORDER_ACCESS: TableDefinition<'static, &[u8; 24], ()> =
    TableDefinition::new("ckpt_order_access");
/// (hits, last access ms, id): least frequently used.
pub(crate) const ORDER_HITS: TableDefinition<'static, &[u8; 32], ()> =
    TableDefinition::new("ckpt_order_hits");

/// Which order indexes the file maintains: a bit set stored in `INFO` under `INDEXES_KEY`.
/// Every writer keeps every index the file lists up to date; a writer whose limits need one more
/// builds it (one scan) and adds it to the set.
pub(crate) mod indexes {
    pub(crate) const CREATED: u8 = 1;
    pub(crate) const ACCESS: u8 = 2;
    pub(crate) const HITS: u8 = 4;
    pub(crate) const ALL: u8 = CREATED | ACCESS | HITS;
}

pub(crate) const INDEXES_KEY: &str = "indexes";

pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const FORMAT_VALUE: &[u8] = b"ckpt";
pub(crate) const SCHEMA_KEY: &str = "schema";

/// The remote tier's counts over the file's life (feature `remote`), added to by each write
/// with what the tier counted since the last: a version byte (1), then each count of
/// `RemoteStats::counts`, u64 LE, in that order. A reader takes the counts it knows (a newer
/// version's extra counts are ignored, an older one's missing counts are zero).
pub(crate) const REMOTE_KEY: &str = "remote";
const REMOTE_COUNTS_VERSION: u8 = 1;

pub(crate) fn encode_remote(stats: &RemoteStats) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 * RemoteStats::COUNTS);
    out.push(REMOTE_COUNTS_VERSION);
    for count in stats.counts() {
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

/// `None` for a value this version cannot read (another version byte, a partial count).
pub(crate) fn decode_remote(bytes: &[u8]) -> Option<RemoteStats> {
    let (&version, counts) = bytes.split_first()?;
    if version != REMOTE_COUNTS_VERSION || counts.len() % 8 != 0 {
        return None;
    }
    let counts: Vec<u64> = counts
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Some(RemoteStats::from_counts(&counts))
}

/// Per-entry metadata, a fixed 64-byte little-endian row:
///
/// | bytes  | field                                         |
/// |--------|-----------------------------------------------|
/// | 0      | row version (1)                               |
/// | 1..8   | reserved, zero                                |
/// | 8..16  | function key                                  |
/// | 16..24 | code version (low 64 bits of the function digest) |
/// | 24..32 | created, ms since the Unix epoch              |
/// | 32..40 | last access (save or hit), ms since the epoch |
/// | 40..48 | hits                                          |
/// | 48..56 | value size: the record's length in bytes      |
/// | 56..64 | compute time, ns                              |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub fn_key: u64,
    pub code_version: u64,
    pub created_ms: u64,
    pub last_access_ms: u64,
    pub hits: u64,
    pub size: u64,
    pub compute_nanos: u64,
}

const META_VERSION: u8 = 1;

impl EntryMeta {
    pub(crate) fn encode(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0] = META_VERSION;
        let words = [
            self.fn_key,
            self.code_version,
            self.created_ms,
            self.last_access_ms,
            self.hits,
            self.size,
            self.compute_nanos,
        ];
        for (i, w) in words.iter().enumerate() {
            out[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// `None` when the row is not one this schema wrote.
    pub(crate) fn created_key(&self, id: &[u8; 16]) -> [u8; 24] {
        order_key(self.created_ms, id)
    }

    pub(crate) fn access_key(&self, id: &[u8; 16]) -> [u8; 24] {
        order_key(self.last_access_ms, id)
    }

    pub(crate) fn hits_key(&self, id: &[u8; 16]) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&self.hits.to_be_bytes());
        k[8..16].copy_from_slice(&self.last_access_ms.to_be_bytes());
        k[16..].copy_from_slice(id);
        k
    }

    pub(crate) fn decode(row: &[u8; 64]) -> Option<EntryMeta> {
        if row[0] != META_VERSION || row[1..8] != [0; 7] {
            return None;
        }
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&row[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(b)
        };
        Some(EntryMeta {
            fn_key: w(0),
            code_version: w(1),
            created_ms: w(2),
            last_access_ms: w(3),
            hits: w(4),
            size: w(5),
            compute_nanos: w(6),
        })
    }
}

fn order_key(ms: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

/// The id at the end of an order-index key.
pub(crate) fn id_of_key(key: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[key.len() - 16..]);
    id
}

/// A function's row: identity of its newest code version, its lifetime call counts, and the
/// size of what it has stored (kept exact by every write transaction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FunctionRecord {
    pub module: String,
    pub name: String,
    /// The code version of the newest registration; entries of other versions are stale.
    pub code_version: u64,
    pub code_hash: Option<u64>,
    pub version: Option<String>,
    pub calls: CallStats,
    pub evictions: EvictionStats,
    pub entries: u64,
    pub bytes: u64,
    /// Code versions seen, with when each was first seen (ms), oldest first; at most
    /// `MAX_VERSIONS`. The newest is the one first seen last, so a process still running old
    /// code does not make the new version's entries stale by saving after it.
    pub versions: Vec<(u64, u64)>,
    /// The Rust type name of the values the newest code version returns, as the saving
    /// process spelled it (display only). Rows written before it existed end without it: see
    /// [`FunctionRecord::decode`].
    pub value_type: Option<String>,
}

/// How many code versions a function row remembers.
pub(crate) const MAX_VERSIONS: usize = 32;

impl FunctionRecord {
    /// Records that `function` registered or saved at `now_ms`; makes it the newest version if
    /// it was never seen before.
    pub(crate) fn saw(&mut self, function: &crate::id::Function, now_ms: u64) {
        let known = self
            .versions
            .iter()
            .any(|(v, _)| *v == function.code_version());
        if known && !self.name.is_empty() {
            return;
        }
        if !known {
            if self.versions.len() >= MAX_VERSIONS {
                self.versions.remove(0);
            }
            self.versions.push((function.code_version(), now_ms));
        }
        self.module = function.module().to_string();
        self.name = function.name().to_string();
        self.code_version = function.code_version();
        self.code_hash = function.code_hash();
        self.version = function.version().map(str::to_string);
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing plain integers, strings and options into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a row, of either layout. postcard has no optional trailing fields, but a row
    /// written before `value_type` existed is the new layout without its last byte (`None` is
    /// one zero byte): read it with that byte put back. Both must consume the row exactly.
    pub(crate) fn decode(bytes: &[u8]) -> Option<FunctionRecord> {
        if let Ok((record, [])) = postcard::take_from_bytes::<FunctionRecord>(bytes) {
            return Some(record);
        }
        let mut schema_1 = Vec::with_capacity(bytes.len() + 1);
        schema_1.extend_from_slice(bytes);
        schema_1.push(0);
        match postcard::take_from_bytes::<FunctionRecord>(&schema_1) {
            Ok((record, [])) => Some(record),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn remote_counts_round_trip_and_read_across_versions() {
        let mut stats = RemoteStats::from_counts(&[7, 3, 2]);
        stats.lease_served = u64::MAX;
        let bytes = encode_remote(&stats);
        assert_eq!(bytes.len(), 1 + 8 * RemoteStats::COUNTS);
        assert_eq!(decode_remote(&bytes), Some(stats));
        // An older version recorded fewer counts: the rest are zero.
        let older = &bytes[..1 + 8 * 3];
        assert_eq!(
            decode_remote(older),
            Some(RemoteStats::from_counts(&[7, 3, 2]))
        );
        // A newer one recorded more: the known ones are read.
        let mut newer = bytes.clone();
        newer.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(decode_remote(&newer), Some(stats));
        // Anything else is not read.
        assert_eq!(decode_remote(&bytes[..10]), None);
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(decode_remote(&other), None);
        assert_eq!(decode_remote(&[]), None);
    }

    use super::*;

    #[test]
    fn meta_round_trip_and_rejects_other_versions() {
        let m = EntryMeta {
            fn_key: 1,
            code_version: 2,
            created_ms: 3,
            last_access_ms: 4,
            hits: 5,
            size: 6,
            compute_nanos: 7,
        };
        let row = m.encode();
        assert_eq!(EntryMeta::decode(&row), Some(m));
        let mut bad = row;
        bad[0] = 9;
        assert_eq!(EntryMeta::decode(&bad), None);
    }

    #[test]
    fn function_record_round_trip() {
        let r = FunctionRecord {
            module: "m".into(),
            name: "f".into(),
            code_hash: Some(9),
            entries: 3,
            ..Default::default()
        };
        assert_eq!(FunctionRecord::decode(&r.encode()), Some(r.clone()));
        assert_eq!(FunctionRecord::decode(&[0xff; 3]), None);
        let typed = FunctionRecord {
            value_type: Some("alloc::vec::Vec<f32>".into()),
            ..r.clone()
        };
        assert_eq!(FunctionRecord::decode(&typed.encode()), Some(typed));
        // A row written before `value_type` existed: the same bytes without its last field.
        let mut old = r.encode();
        assert_eq!(old.pop(), Some(0), "None is one zero byte at the end");
        assert_eq!(FunctionRecord::decode(&old), Some(r));
    }
}
