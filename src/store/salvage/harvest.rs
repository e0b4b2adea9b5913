//! Writing the new store: every record that passes its own checks (all its chunks, for a large
//! one), found through the engine's tables or by the scan, with a metadata row that agrees with
//! it (or one rebuilt, where the id is sure without it), and the function rows that can be read.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::attempts::Source;
use super::tables::{Found, check_format, find};
use super::{SOURCE_CACHE, SalvageMethod, SalvageReport, contained, scan};
use crate::error::Error;
use crate::id::Function;
use crate::record::{self, RecordCheck};
use crate::store::archive::identity_of;
use crate::store::chunks::{self, Manifest};
use crate::store::schema::{ENTRIES, EntryMeta, FunctionRecord, MAX_VERSIONS, RESULTS};
use crate::store::write::Tx;
use crate::store::{Commit, Store};

/// The damaged file as one attempt reads it.
pub(super) struct Reading<'a> {
    pub(super) damaged: &'a Path,
    /// The private copy the engine (or the scan) reads.
    pub(super) copy: &'a Path,
    pub(super) method: SalvageMethod,
    pub(super) file_bytes: u64,
}

fn read_span(file: &mut File, span: scan::Span) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(span.at))?;
    let mut out = vec![0u8; span.len as usize];
    file.read_exact(&mut out)?;
    Ok(out)
}

/// Reads the damaged store (through the engine's handle `db`, then, unless the engine checked
/// the file, by scanning its pages) and writes what passes into a new store at `building`.
/// `Ok(None)` when there is nothing to read: the engine cannot begin a read, or (without it)
/// the scan finds no entry and no function.
pub(super) fn harvest(
    db: Option<&Source>,
    source: &Reading<'_>,
    building: &Path,
) -> Result<Option<SalvageReport>, Error> {
    let txn = match db {
        Some(db) => match contained(|| db.begin_read()) {
            Some(txn) => Some(txn),
            None => return Ok(None),
        },
        None => None,
    };
    if let Some(txn) = &txn {
        check_format(txn, source.damaged, source.method)?;
    }
    let checked = source.method == SalvageMethod::Checked;
    let file_bytes = source.file_bytes;
    // No table holds more rows than the file has bytes for; a walk stops there (a damaged
    // file could otherwise lead it around in circles).
    let budget = file_bytes / 16 + 1024;
    let (results, entries, chunks) = match &txn {
        Some(txn) => (
            contained(|| txn.open_table(RESULTS)),
            contained(|| txn.open_table(ENTRIES)),
            contained(|| chunks::open_read(txn)).flatten(),
        ),
        None => (None, None, None),
    };
    let found = match &txn {
        Some(txn) => find(txn, &results, &entries, &chunks, checked, budget),
        None => Found::default(),
    };
    let storage = |e| Error::storage(format!("cannot read {}", source.copy.display()), e);
    let mut file = File::open(source.copy).map_err(storage)?;
    // Unchecked, the engine's trees may no longer reach every page that holds rows.
    let scanned = if checked {
        scan::Scanned::default()
    } else {
        scan::scan(&mut file, |key, r| {
            identity_of(key, r).is_some() && r.versions.len() <= MAX_VERSIONS
        })
        .map_err(storage)?
    };
    if txn.is_none()
        && scanned.records.is_empty()
        && scanned.manifests.is_empty()
        && scanned.functions.is_empty()
    {
        return Ok(None);
    }

    let target = Store::builder()
        .cache_size(SOURCE_CACHE)
        .open(building)
        .map_err(Error::from)?;
    let now = target.shared().now_ms();
    let mut report = SalvageReport {
        method: source.method,
        truncated: false,
        entries_recovered: 0,
        entries_scanned: 0,
        record_bytes: 0,
        entries_lost: 0,
        metadata_rebuilt: 0,
        functions_recovered: 0,
        functions_rebuilt: 0,
        stats_recovered: found.all_functions,
        file_bytes,
    };
    let unknown = Function::new("ckpt::salvage", "unknown");
    let rebuilt = |size: u64, compute_nanos: u64| EntryMeta {
        fn_key: unknown.key(),
        code_version: unknown.code_version(),
        created_ms: now,
        last_access_ms: now,
        hits: 0,
        size,
        compute_nanos,
    };
    let mut functions = found.functions.clone();
    for (key, row) in &scanned.functions {
        functions.entry(*key).or_insert_with(|| row.clone());
    }
    report.functions_recovered = functions.len() as u64;
    let used = target.shared().write(Commit::Durably, |tx| {
        for (key, row) in &functions {
            tx.put_salvaged_function(*key, row)?;
        }
        let mut used = HashSet::new();
        let mut recovered = HashSet::new();
        for (id, meta) in &found.ids {
            let Some(row) = contained(|| {
                let table = results.as_ref().ok_or(())?;
                let got = table.get(id).map_err(|_| ())?;
                Ok::<_, ()>(got.map(|g| g.value().to_vec()))
            })
            .flatten() else {
                continue;
            };
            let manifest = Manifest::decode(&row);
            let sound = match manifest {
                Some(m) if m.len <= file_bytes => {
                    copy_chunks(tx, chunks.as_ref(), id, &m)?.map(|compute| (m.len, compute))
                }
                Some(_) => None,
                None => record::parse(&row)
                    .ok()
                    .map(|(h, _)| (row.len() as u64, h.compute_nanos)),
            };
            let Some((size, compute_nanos)) = sound else {
                continue;
            };
            let meta = match meta {
                // Unchecked, the row's key may be damaged: its metadata row, a separate row
                // under the same id, must agree on the record's size.
                Some(m) if m.size == size || checked => EntryMeta { size, ..*m },
                // A chunked record's id is sure without it: every chunk's key repeats it, and
                // the record's checksum runs across them.
                _ if checked || manifest.is_some() => {
                    report.metadata_rebuilt += 1;
                    rebuilt(size, compute_nanos)
                }
                _ => {
                    if manifest.is_some() {
                        tx.drop_salvaged_chunks(id)?;
                    }
                    continue;
                }
            };
            tx.put_salvaged(id, &row, &meta)?;
            used.insert(meta.fn_key);
            recovered.insert(*id);
            report.entries_recovered += 1;
            report.record_bytes += size;
        }
        // What only the scan found, under the same rule: a sound record (or chunks), and a
        // metadata row of the same id that agrees on its size.
        let mut scanned_ids: Vec<[u8; 16]> = scanned
            .records
            .keys()
            .chain(scanned.manifests.keys())
            .filter(|id| !recovered.contains(*id))
            .copied()
            .collect();
        scanned_ids.sort_unstable();
        scanned_ids.dedup();
        for id in scanned_ids {
            let metas: Vec<EntryMeta> = scanned
                .metas
                .get(&id)
                .into_iter()
                .flatten()
                .copied()
                .chain(found.ids.get(&id).copied().flatten())
                .collect();
            let agreeing = |size: u64| metas.iter().find(|m| m.size == size).copied();
            let mut saved = None;
            for span in scanned.records.get(&id).into_iter().flatten() {
                let bytes = read_span(&mut file, *span).map_err(storage)?;
                if record::parse(&bytes).is_ok()
                    && let Some(meta) = agreeing(bytes.len() as u64)
                {
                    tx.put_salvaged(&id, &bytes, &meta)?;
                    saved = Some(meta);
                    break;
                }
            }
            if saved.is_none() {
                for m in scanned.manifests.get(&id).into_iter().flatten() {
                    if m.len > file_bytes {
                        continue;
                    }
                    if let Some(compute) =
                        copy_scanned_chunks(tx, &mut file, &scanned, &id, m).map_err(storage)??
                    {
                        let meta = agreeing(m.len).unwrap_or_else(|| {
                            report.metadata_rebuilt += 1;
                            rebuilt(m.len, compute)
                        });
                        tx.put_salvaged(&id, &m.encode(), &meta)?;
                        saved = Some(meta);
                        break;
                    }
                }
            }
            if let Some(meta) = saved {
                used.insert(meta.fn_key);
                recovered.insert(id);
                report.entries_recovered += 1;
                report.entries_scanned += 1;
                report.record_bytes += meta.size;
            }
        }
        // Chunks whose manifest was lost: the record is their run from chunk 0, as long as it
        // passes its checksum.
        let mut orphans: Vec<[u8; 16]> = scanned
            .chunks
            .keys()
            .filter(|k| k[16..] == [0; 4])
            .map(|k| chunks::split_key(k).0)
            .filter(|id| !recovered.contains(id))
            .collect();
        orphans.sort_unstable();
        for id in orphans {
            let Some(m) = rejoin(&mut file, &scanned, &id, file_bytes).map_err(storage)? else {
                continue;
            };
            if let Some(compute) =
                copy_scanned_chunks(tx, &mut file, &scanned, &id, &m).map_err(storage)??
            {
                let meta = scanned
                    .metas
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .chain(found.ids.get(&id).into_iter().flatten())
                    .find(|meta| meta.size == m.len)
                    .copied()
                    .unwrap_or_else(|| {
                        report.metadata_rebuilt += 1;
                        rebuilt(m.len, compute)
                    });
                tx.put_salvaged(&id, &m.encode(), &meta)?;
                used.insert(meta.fn_key);
                report.entries_recovered += 1;
                report.entries_scanned += 1;
                report.record_bytes += meta.size;
            }
        }
        if report.metadata_rebuilt > 0 && !functions.contains_key(&unknown.key()) {
            let mut row = FunctionRecord::default();
            row.saw(&unknown, now);
            tx.put_salvaged_function(unknown.key(), &row)?;
        }
        Ok(used)
    })?;
    target.close()?;
    report.functions_rebuilt = used
        .iter()
        .filter(|k| !functions.contains_key(k) && **k != unknown.key())
        .count() as u64;
    // Freed pages hold old rows too, so the scan's ids only count when the function rows,
    // which the engine read, cannot.
    let expected = if found.all_functions {
        found.functions.values().map(|r| r.entries).sum::<u64>()
    } else {
        let mut seen: HashSet<[u8; 16]> = found.ids.keys().copied().collect();
        seen.extend(scanned.records.keys().chain(scanned.manifests.keys()));
        seen.extend(
            scanned
                .chunks
                .keys()
                .filter(|k| k[16..] == [0; 4])
                .map(|k| chunks::split_key(k).0),
        );
        seen.len() as u64
    };
    report.entries_lost = expected.saturating_sub(report.entries_recovered);
    Ok(Some(report))
}

/// Copies the chunks of a large record into the new store as it checks them, one at a time;
/// returns the record's compute time if it is sound (its chunks are then written), else removes
/// what it wrote.
fn copy_chunks(
    tx: &mut Tx<'_>,
    table: Option<&chunks::ChunksRead>,
    id: &[u8; 16],
    manifest: &Manifest,
) -> Result<Option<u64>, Error> {
    let Some(table) = table else {
        return Ok(None);
    };
    let mut check = RecordCheck::new();
    let mut sound = true;
    for index in 0..manifest.count {
        let chunk = contained(|| {
            table
                .get(&chunks::chunk_key(id, index))
                .map(|g| g.map(|g| g.value().to_vec()))
        })
        .flatten();
        let Some(chunk) = chunk.filter(|c| {
            c.len() as u64 == manifest.chunk_len_of(index)
                && (index > 0 || c.get(..8) == Some(&manifest.checksum[..]))
        }) else {
            sound = false;
            break;
        };
        check.feed(&chunk);
        tx.put_salvaged_chunk(id, index, &chunk)?;
    }
    let header = if sound && check.len() == manifest.len {
        check.finish().ok()
    } else {
        None
    };
    match header {
        Some(h) => Ok(Some(h.compute_nanos)),
        None => {
            tx.drop_salvaged_chunks(id)?;
            Ok(None)
        }
    }
}

/// Copies the chunks of a large record that the scan found into the new store, checking them
/// as it goes: the record's compute time if it is sound (its chunks are then written), else
/// `None`, having removed what it wrote.
fn copy_scanned_chunks(
    tx: &mut Tx<'_>,
    file: &mut File,
    scanned: &scan::Scanned,
    id: &[u8; 16],
    manifest: &Manifest,
) -> io::Result<Result<Option<u64>, Error>> {
    let mut check = RecordCheck::new();
    let mut sound = true;
    for index in 0..manifest.count {
        let want = manifest.chunk_len_of(index);
        let mut chunk = None;
        for span in scanned
            .chunks
            .get(&chunks::chunk_key(id, index))
            .into_iter()
            .flatten()
            .filter(|s| u64::from(s.len) == want)
        {
            let bytes = read_span(file, *span)?;
            if index > 0 || bytes.get(..8) == Some(&manifest.checksum[..]) {
                chunk = Some(bytes);
                break;
            }
        }
        let Some(chunk) = chunk else {
            sound = false;
            break;
        };
        check.feed(&chunk);
        if let Err(e) = tx.put_salvaged_chunk(id, index, &chunk) {
            return Ok(Err(e));
        }
    }
    if sound
        && check.len() == manifest.len
        && let Ok(header) = check.finish()
    {
        return Ok(Ok(Some(header.compute_nanos)));
    }
    Ok(tx.drop_salvaged_chunks(id).map(|()| None))
}

/// The manifest of the longest run of scanned chunks of `id`, from chunk 0, that passes the
/// record's checksum (the first chunk's length is the chunk length; only the last may be
/// shorter).
fn rejoin(
    file: &mut File,
    scanned: &scan::Scanned,
    id: &[u8; 16],
    file_bytes: u64,
) -> io::Result<Option<Manifest>> {
    let candidate = |index: u32, len: Option<u64>| {
        scanned
            .chunks
            .get(&chunks::chunk_key(id, index))
            .into_iter()
            .flatten()
            .find(|s| len.is_none_or(|l| u64::from(s.len) == l))
            .copied()
    };
    let Some(first) = candidate(0, None) else {
        return Ok(None);
    };
    let chunk_len = first.len;
    if !(chunks::MIN_CHUNK..=chunks::MAX_CHUNK).contains(&chunk_len) {
        return Ok(None);
    }
    let head = read_span(file, first)?;
    let mut check = RecordCheck::new();
    check.feed(&head);
    let mut best = None;
    let mut index = 1u32;
    let mut total = u64::from(chunk_len);
    while total < file_bytes {
        // The next chunk: full, or a shorter last one.
        let next = candidate(index, Some(u64::from(chunk_len))).or_else(|| {
            scanned
                .chunks
                .get(&chunks::chunk_key(id, index))
                .into_iter()
                .flatten()
                .find(|s| s.len < chunk_len)
                .copied()
        });
        let Some(span) = next else { break };
        check.feed(&read_span(file, span)?);
        total += u64::from(span.len);
        index += 1;
        if check.finish().is_ok() {
            let mut checksum = [0u8; 8];
            checksum.copy_from_slice(&head[..8]);
            best = Some(Manifest {
                checksum,
                len: total,
                count: index,
                chunk_len,
            });
        }
        if span.len < chunk_len {
            break;
        }
    }
    // Well-formed, as any manifest the store reads.
    Ok(best.filter(|m| Manifest::decode(&m.encode()) == Some(*m)))
}
