//! The last resort of a salvage: reading the storage engine's leaf pages straight from the file,
//! without its B-trees, for the rows the engine can no longer reach (a truncated file has
//! usually lost the pages near its end, where the trees' roots and the allocator state are
//! written last).
//!
//! A redb leaf page (redb 4.5, `tree_store/btree_base.rs`) starts with `01`, a reserved byte,
//! the number of pairs `n` (u16 LE), then the end offsets (u32 LE, from the page start) of each
//! variable-width key, then of each variable-width value, then the keys, then the values. Pages
//! start at multiples of 4 KiB. Each 4 KiB boundary of the file is read as a leaf of each of
//! ckpt's entry tables in turn, and a row is kept only if it passes its own check: a result is a
//! record with a sound checksum or a well-formed manifest, a metadata row decodes, a function
//! row's name gives its key. Nothing here trusts a row more than that: the caller copies a
//! record only if a metadata row under the same id agrees on its size (and a chunked record only
//! if its chunks pass its checksum), exactly as for rows the engine read unchecked.
//!
//! Freed pages still hold the rows they held, so the scan can find an entry removed before the
//! damage; such a record is still the value once saved under its id.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};

use super::super::chunks::Manifest;
use super::super::schema::{EntryMeta, FunctionRecord};
use crate::record;

const PAGE: usize = 4096;
/// The longest leaf the scan reads: a whole record (at most a chunk, 512 KiB by default) or a
/// chunk fills a leaf alone. Rows of longer leaves (a store made with longer chunks) are missed.
const MAX_LEAF: usize = 2 << 20;
/// The scan reads the file in steps of this many bytes.
const STEP: usize = 1 << 20;

/// Where a row's value lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub at: u64,
    pub len: u32,
}

/// The rows found, by key; several per key when old versions survive in freed pages.
#[derive(Default)]
pub(super) struct Scanned {
    pub metas: HashMap<[u8; 16], Vec<EntryMeta>>,
    /// Results rows that are sound records.
    pub records: HashMap<[u8; 16], Vec<Span>>,
    /// Results rows that are manifests of chunked records.
    pub manifests: HashMap<[u8; 16], Vec<Manifest>>,
    pub chunks: HashMap<[u8; 20], Vec<Span>>,
    pub functions: HashMap<u64, FunctionRecord>,
}

/// Reads `file` (the private copy) from its start, at least `MAX_LEAF` bytes ahead of the page
/// being read, and collects every row that passes its check.
pub(super) fn scan(
    file: &mut File,
    named: impl Fn(u64, &FunctionRecord) -> bool,
) -> io::Result<Scanned> {
    let mut out = Scanned::default();
    let mut window: Vec<u8> = Vec::new();
    // File offset of window[0].
    let mut base = 0u64;
    let mut eof = false;
    loop {
        // Keep a leaf's worth ahead of the page at window[0].
        while !eof && window.len() < STEP + MAX_LEAF {
            let start = window.len();
            window.resize(start + STEP, 0);
            let n = read_full(file, &mut window[start..])?;
            window.truncate(start + n);
            eof = n < STEP;
        }
        if window.len() < 4 {
            return Ok(out);
        }
        // Leaves start on page boundaries; look at every one in the first step.
        let step_end = if eof { window.len() } else { STEP };
        let mut at = 0;
        while at < step_end && at + 4 <= window.len() {
            if window[at] == 1 {
                leaf(&window[at..], base + at as u64, &mut out, &named);
            }
            at += PAGE;
        }
        if eof {
            return Ok(out);
        }
        window.drain(..step_end);
        base += step_end as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(w) as usize)
}

/// The (key, value) ranges of a leaf whose keys are `key_len` bytes and whose values are
/// `value_len` bytes (`None`: variable), if the page is shaped like one.
fn pairs(
    page: &[u8],
    key_len: usize,
    value_len: Option<usize>,
) -> Option<Vec<(usize, usize, usize)>> {
    let n = u16::from_le_bytes([page[2], page[3]]) as usize;
    if n == 0 || page[1] != 0 {
        return None;
    }
    let ends = if value_len.is_none() { 4 * n } else { 0 };
    let keys = 4 + ends;
    let values = keys.checked_add(key_len * n)?;
    let mut out = Vec::with_capacity(n);
    let mut start = values;
    for i in 0..n {
        let end = match value_len {
            Some(len) => start + len,
            None => u32_at(page, 4 + 4 * i)?,
        };
        if end < start || end > page.len().min(MAX_LEAF) {
            return None;
        }
        out.push((keys + key_len * i, start, end));
        start = end;
    }
    Some(out)
}

/// Reads the page at `at` as a leaf of each entry table, keeping the rows that pass.
fn leaf(page: &[u8], at: u64, out: &mut Scanned, named: &impl Fn(u64, &FunctionRecord) -> bool) {
    let span = |start: usize, end: usize| Span {
        at: at + start as u64,
        len: (end - start) as u32,
    };
    // ckpt_results: 16-byte ids, records or manifests.
    if let Some(rows) = pairs(page, 16, None) {
        for (k, s, e) in rows {
            let id: [u8; 16] = page[k..k + 16].try_into().unwrap_or_default();
            let value = &page[s..e];
            if let Some(m) = Manifest::decode(value) {
                out.manifests.entry(id).or_default().push(m);
            } else if record::parse(value).is_ok() {
                out.records.entry(id).or_default().push(span(s, e));
            }
        }
    }
    // ckpt_entries: 16-byte ids, 64-byte metadata rows.
    if let Some(rows) = pairs(page, 16, Some(64)) {
        for (k, s, _) in rows {
            let id: [u8; 16] = page[k..k + 16].try_into().unwrap_or_default();
            let row: [u8; 64] = page[s..s + 64].try_into().unwrap_or([0; 64]);
            if let Some(meta) = EntryMeta::decode(&row) {
                out.metas.entry(id).or_default().push(meta);
            }
        }
    }
    // ckpt_chunks: (id, index) keys, chunk bytes (checked with their record).
    if let Some(rows) = pairs(page, 20, None) {
        for (k, s, e) in rows {
            let key: [u8; 20] = page[k..k + 20].try_into().unwrap_or([0; 20]);
            if e > s {
                out.chunks.entry(key).or_default().push(span(s, e));
            }
        }
    }
    // ckpt_functions: u64 keys, postcard rows whose identity gives their key.
    if let Some(rows) = pairs(page, 8, None) {
        for (k, s, e) in rows {
            let key = u64::from_le_bytes(page[k..k + 8].try_into().unwrap_or_default());
            if let Some(r) = FunctionRecord::decode(&page[s..e]).filter(|r| named(key, r)) {
                out.functions.entry(key).or_insert(r);
            }
        }
    }
}
