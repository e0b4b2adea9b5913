//! Large records in chunks.
//!
//! The engine gives a value larger than a page a run of pages rounded up to a power of two, so
//! a 256 MiB record stored whole would take 512 MiB of file. A record longer than the store's
//! chunk length (`record::STREAM_ABOVE` by default: 64 bytes under 512 KiB, so that a chunk
//! alone in its leaf fills a 512 KiB page exactly) is stored instead as consecutive chunks in
//! `ckpt_chunks`, keyed by (id, index), and its results row holds a 32-byte manifest. The
//! record's bytes are the same as in every other cache: the chunks, joined, are the record.
//!
//! Manifest (little-endian), told from a record by byte 8, which a record uses for its version
//! (1) and a manifest sets to `MANIFEST_MARK`:
//!
//! | bytes  | field                                                  |
//! |--------|--------------------------------------------------------|
//! | 0..8   | the record's checksum (its own first 8 bytes)          |
//! | 8      | `0xc1`                                                 |
//! | 9..16  | reserved, zero                                         |
//! | 16..24 | the record's length                                    |
//! | 24..28 | the number of chunks                                   |
//! | 28..32 | the chunk length: every chunk but the last is this long |
//!
//! Chunks are written in the same write transaction as the manifest, the metadata row and the
//! function row, so a crash keeps all of a record or none of it. A record encoded as it is
//! written (`LargeEntry`) goes straight into chunks: its first chunk waits in memory until the
//! checksum, computed on the way, is known.

use redb::{AccessGuard, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableError};

use super::engine_error::engine_error;
use crate::error::Error;
use crate::record::RecordSink;
use crate::record::{Part, Parts};

pub(crate) const MANIFEST_LEN: usize = 32;
pub(crate) const MANIFEST_MARK: u8 = 0xc1;
/// The chunk lengths a manifest may declare.
pub(crate) const MIN_CHUNK: u32 = 64;
pub(crate) const MAX_CHUNK: u32 = 64 << 20;

pub(crate) type ChunkTable<'t> = Table<'t, &'static [u8; 20], &'static [u8]>;

/// `ckpt_chunks` as a read transaction opens it.
pub(crate) type ChunksRead = ReadOnlyTable<&'static [u8; 20], &'static [u8]>;

/// `ckpt_chunks` in a read transaction, if the file has it (a file written before any large
/// record was saved may not).
pub(crate) fn open_read(txn: &ReadTransaction) -> Result<Option<ChunksRead>, TableError> {
    match txn.open_table(super::schema::CHUNKS) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The key of chunk `index` of the record under `id`: chunks of one record are adjacent, in
/// order.
pub(crate) fn chunk_key(id: &[u8; 16], index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(id);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The id and index of a chunk key.
pub(crate) fn split_key(key: &[u8; 20]) -> ([u8; 16], u32) {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    let mut index = [0u8; 4];
    index.copy_from_slice(&key[16..]);
    (id, u32::from_be_bytes(index))
}

/// Whether a results row claims to be a manifest (well-formed or not): its record's chunks, if
/// any, must go with it.
#[inline]
pub(crate) fn claims_chunks(row: &[u8]) -> bool {
    row.len() == MANIFEST_LEN && row[8] == MANIFEST_MARK
}

/// What a results row holds for a chunked record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub checksum: [u8; 8],
    pub len: u64,
    pub count: u32,
    pub chunk_len: u32,
}

impl Manifest {
    fn new(checksum: [u8; 8], len: u64, chunk_len: u32) -> Manifest {
        Manifest {
            checksum,
            len,
            count: u32::try_from(len.div_ceil(u64::from(chunk_len))).unwrap_or(u32::MAX),
            chunk_len,
        }
    }

    pub(crate) fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut row = [0u8; MANIFEST_LEN];
        row[..8].copy_from_slice(&self.checksum);
        row[8] = MANIFEST_MARK;
        row[16..24].copy_from_slice(&self.len.to_le_bytes());
        row[24..28].copy_from_slice(&self.count.to_le_bytes());
        row[28..32].copy_from_slice(&self.chunk_len.to_le_bytes());
        row
    }

    /// The manifest in `row`, if it is a well-formed one.
    pub(crate) fn decode(row: &[u8]) -> Option<Manifest> {
        if !claims_chunks(row) || row[9..16] != [0; 7] {
            return None;
        }
        let u32_at = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&row[at..at + 4]);
            u32::from_le_bytes(w)
        };
        let mut len = [0u8; 8];
        len.copy_from_slice(&row[16..24]);
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&row[..8]);
        let m = Manifest {
            checksum,
            len: u64::from_le_bytes(len),
            count: u32_at(24),
            chunk_len: u32_at(28),
        };
        let sound = (MIN_CHUNK..=MAX_CHUNK).contains(&m.chunk_len)
            && m.count >= 2
            && m.len.div_ceil(u64::from(m.chunk_len)) == u64::from(m.count);
        sound.then_some(m)
    }

    /// The length chunk `index` must have.
    pub(crate) fn chunk_len_of(&self, index: u32) -> u64 {
        let start = u64::from(index) * u64::from(self.chunk_len);
        self.len
            .saturating_sub(start)
            .min(u64::from(self.chunk_len))
    }
}

/// Removes the chunks of `id` from index `from` on.
pub(crate) fn remove_chunks(
    table: &mut ChunkTable<'_>,
    id: &[u8; 16],
    from: u32,
) -> Result<(), Error> {
    let (start, end) = (chunk_key(id, from), chunk_key(id, u32::MAX));
    table
        .retain_in::<&[u8; 20], _>(&start..=&end, |_, _| false)
        .map_err(|e| engine_error("cannot remove a large record's chunks", e))
}

/// Stores `record` (longer than `chunk_len`) in chunks; returns its manifest.
pub(crate) fn write_chunks(
    table: &mut ChunkTable<'_>,
    id: &[u8; 16],
    record: &[u8],
    chunk_len: u32,
) -> Result<Manifest, Error> {
    let e = |e| engine_error("cannot save a large record", e);
    for (index, chunk) in record.chunks(chunk_len as usize).enumerate() {
        let index = u32::try_from(index).map_err(|_| too_many_chunks())?;
        table.insert(&chunk_key(id, index), chunk).map_err(e)?;
    }
    let mut checksum = [0u8; 8];
    checksum.copy_from_slice(&record[..8]);
    Ok(Manifest::new(checksum, record.len() as u64, chunk_len))
}

fn too_many_chunks() -> Error {
    Error::new(
        crate::ErrorKind::TooLarge,
        "a record too large for the store (more than 2^32 chunks)",
    )
}

/// What a streamed record became: short enough to be stored whole, or chunks.
pub(crate) enum Written {
    Whole(Vec<u8>),
    Chunks(Manifest),
}

/// Stores a record as it is encoded: full chunks are written as they fill (straight from the
/// encoder's pieces when they are long enough), the first one once the checksum is known.
pub(crate) struct ChunkWriter<'a, 't> {
    table: &'a mut ChunkTable<'t>,
    id: [u8; 16],
    chunk_len: usize,
    /// The first chunk, held until the checksum can be put in it.
    first: Vec<u8>,
    /// The chunk being filled (after the first).
    buf: Vec<u8>,
    /// Chunks written so far, the first counted.
    chunks: u32,
    len: u64,
    /// Set while the engine writes a chunk: a panic that unwinds from there is the engine's,
    /// any other out of the encoder is the value's `Serialize` (see `Tx::put_large`).
    in_engine: bool,
}

impl<'a, 't> ChunkWriter<'a, 't> {
    pub(crate) fn new(table: &'a mut ChunkTable<'t>, id: [u8; 16], chunk_len: u32) -> Self {
        ChunkWriter {
            table,
            id,
            chunk_len: chunk_len as usize,
            first: Vec::new(),
            buf: Vec::new(),
            chunks: 0,
            len: 0,
            in_engine: false,
        }
    }

    fn put(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.in_engine = true;
        let inserted = self.table.insert(&chunk_key(&self.id, self.chunks), chunk);
        self.in_engine = false;
        inserted.map_err(|e| engine_error("cannot save a large record", e))?;
        self.chunks = self.chunks.checked_add(1).ok_or_else(too_many_chunks)?;
        Ok(())
    }

    /// Whether a panic out of the encoder came from the engine writing a chunk.
    pub(crate) fn in_engine(&self) -> bool {
        self.in_engine
    }

    /// Ends the record: `checksum` goes into its first 8 bytes.
    pub(crate) fn finish(mut self, checksum: u64) -> Result<Written, Error> {
        let checksum = checksum.to_le_bytes();
        if self.first.len() < 8 {
            return Err(Error::new(
                crate::ErrorKind::Encode,
                "an encoded record is shorter than its header",
            ));
        }
        self.first[..8].copy_from_slice(&checksum);
        if self.len <= self.chunk_len as u64 {
            // Everything fits the first chunk: not a chunked record after all.
            return Ok(Written::Whole(std::mem::take(&mut self.first)));
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.put(&last)?;
        }
        self.table
            .insert(&chunk_key(&self.id, 0), self.first.as_slice())
            .map_err(|e| engine_error("cannot save a large record", e))?;
        Ok(Written::Chunks(Manifest::new(
            checksum,
            self.len,
            self.chunk_len as u32,
        )))
    }
}

impl RecordSink for ChunkWriter<'_, '_> {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.len += bytes.len() as u64;
        // The first chunk stays in memory.
        if self.chunks == 0 && self.first.len() < self.chunk_len {
            let n = (self.chunk_len - self.first.len()).min(bytes.len());
            if self.first.capacity() == 0 {
                self.first.reserve_exact(self.chunk_len);
            }
            self.first.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.first.len() == self.chunk_len {
                // Counted now; written by `finish`.
                self.chunks = 1;
            }
        }
        while !bytes.is_empty() {
            if self.buf.is_empty() && bytes.len() >= self.chunk_len {
                // A whole chunk in the encoder's piece: written from there, not copied.
                let (chunk, rest) = bytes.split_at(self.chunk_len);
                self.put(chunk)?;
                bytes = rest;
                continue;
            }
            let n = (self.chunk_len - self.buf.len()).min(bytes.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.chunk_len);
            }
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == self.chunk_len {
                let chunk = std::mem::take(&mut self.buf);
                self.put(&chunk)?;
                self.buf = chunk;
                self.buf.clear();
            }
        }
        Ok(())
    }
}

/// A chunked record in a table, lent as [`Parts`].
pub(crate) struct TableParts<'a, T> {
    pub table: &'a T,
    pub id: [u8; 16],
    pub manifest: Manifest,
    /// Set when reading a part met an error that breaks the engine's handle (an I/O failure
    /// it latched). Parts are read by the caller, outside the store's guard, which would mark
    /// the handle broken: `lend` reports it to the guard after the caller is done.
    pub broke_handle: std::cell::Cell<bool>,
}

impl<'a, T> TableParts<'a, T> {
    pub(crate) fn new(table: &'a T, id: [u8; 16], manifest: Manifest) -> Self {
        TableParts {
            table,
            id,
            manifest,
            broke_handle: std::cell::Cell::new(false),
        }
    }
}

/// A chunk's bytes, as the engine lends them.
struct Chunk<'a>(AccessGuard<'a, &'static [u8]>);

impl AsRef<[u8]> for Chunk<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

impl<T: ReadableTable<&'static [u8; 20], &'static [u8]>> Parts for TableParts<'_, T> {
    fn len(&self) -> u64 {
        self.manifest.len
    }

    fn count(&self) -> u32 {
        self.manifest.count
    }

    fn part(&self, index: u32) -> Result<Part<'_>, Error> {
        // Parts are read while the caller decodes, outside the store's guard (a panic there is
        // the caller's and is resumed), so a damaged page that makes the engine panic must be
        // contained here: a corrupt record, never a panic of the call.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_part(index)))
            .unwrap_or_else(|payload| {
                Err(Error::corrupted(format!(
                    "the storage engine panicked reading a chunk of a large record ({})",
                    super::engine::panic_message(&*payload)
                )))
            })
    }
}

impl<T: ReadableTable<&'static [u8; 20], &'static [u8]>> TableParts<'_, T> {
    fn read_part(&self, index: u32) -> Result<Part<'_>, Error> {
        let chunk = self
            .table
            .get(&chunk_key(&self.id, index))
            .map_err(|e| {
                let e = engine_error("cannot read a large record", e);
                if super::engine::breaks_handle(&e) {
                    self.broke_handle.set(true);
                }
                e
            })?
            .ok_or_else(|| Error::corrupted("a chunk of a large record is missing"))?;
        let bytes = chunk.value();
        if bytes.len() as u64 != self.manifest.chunk_len_of(index)
            || (index == 0 && bytes.get(..8) != Some(&self.manifest.checksum[..]))
        {
            return Err(Error::corrupted(
                "a chunk of a large record does not match its manifest",
            ));
        }
        Ok(Part::new(Chunk(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_only_sound_ones_decode() {
        let m = Manifest::new([1, 2, 3, 4, 5, 6, 7, 8], 1_000_000, 4096);
        assert_eq!(m.count, 245);
        assert_eq!(Manifest::decode(&m.encode()), Some(m));
        assert_eq!(m.chunk_len_of(0), 4096);
        assert_eq!(m.chunk_len_of(244), 1_000_000 - 244 * 4096);
        let mut bad = m.encode();
        bad[24] ^= 1; // a count that does not match the length
        assert_eq!(Manifest::decode(&bad), None);
        assert!(claims_chunks(&bad));
        let mut small = Manifest::new([0; 8], 1000, 16).encode();
        assert_eq!(Manifest::decode(&small), None, "chunks too short");
        small[8] = 1;
        assert!(!claims_chunks(&small), "a record's version byte");
        assert_eq!(split_key(&chunk_key(&[9; 16], 70_000)), ([9; 16], 70_000));
    }
}
