//! Reading the damaged file's tables through the engine: the format check, and walks that
//! survive damage (rows out of order skipped, unreadable pages jumped past, every engine call
//! contained), collecting every id, metadata row and function row that can be read.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::{MAX_SKIPS, SalvageMethod, contained};
use crate::error::{Error, OpenError, OpenErrorKind};
use crate::store::archive::identity_of;
use crate::store::chunks;
use crate::store::schema::{
    EntryMeta, FORMAT_KEY, FORMAT_VALUE, FUNCTIONS, FunctionRecord, INFO, MAX_VERSIONS,
};

/// What the damaged store's tables still say.
#[derive(Default)]
pub(super) struct Found {
    /// Every id found in a table, with its metadata row if it decodes.
    pub(super) ids: BTreeMap<[u8; 16], Option<EntryMeta>>,
    /// Function rows that decode (and, read unchecked, whose identity matches their key).
    pub(super) functions: HashMap<u64, FunctionRecord>,
    /// Every function row was read and kept.
    pub(super) all_functions: bool,
}

/// Refuses a file that says it is not a ckpt store. Read unchecked, an unreadable info table is
/// damage, not a sign of another format: the entry tables are tried anyway.
pub(super) fn check_format(
    txn: &ReadTransaction,
    damaged: &Path,
    method: SalvageMethod,
) -> Result<(), Error> {
    let not_a_store = |why: &str| {
        Error::from(OpenError::with_source(
            damaged,
            OpenErrorKind::NotAStore,
            why.to_string(),
        ))
    };
    let info = catch_unwind(AssertUnwindSafe(|| txn.open_table(INFO)));
    let format = match info {
        Ok(Ok(info)) => contained(|| info.get(FORMAT_KEY).map(|g| g.map(|g| g.value().to_vec()))),
        Ok(Err(redb::TableError::TableDoesNotExist(_))) => {
            return Err(not_a_store("a redb database without ckpt's tables"));
        }
        _ => None,
    };
    match format {
        Some(Some(f)) if f == FORMAT_VALUE => Ok(()),
        Some(_) if method == SalvageMethod::Checked => {
            Err(not_a_store("its info table does not name the ckpt format"))
        }
        _ => Ok(()),
    }
}

pub(super) type ResultsTable = ReadOnlyTable<&'static [u8; 16], &'static [u8]>;
pub(super) type EntriesTable = ReadOnlyTable<&'static [u8; 16], &'static [u8; 64]>;

/// Collects ids, metadata and function rows from every table that can be read.
pub(super) fn find(
    txn: &ReadTransaction,
    results: &Option<ResultsTable>,
    entries: &Option<EntriesTable>,
    chunks: &Option<chunks::ChunksRead>,
    checked: bool,
    budget: u64,
) -> Found {
    let mut ids: BTreeMap<[u8; 16], Option<EntryMeta>> = BTreeMap::new();
    if let Some(table) = entries {
        walk(table, budget, |id, row| {
            ids.insert(id, EntryMeta::decode(row));
        });
    }
    if let Some(table) = results {
        walk(table, budget, |id, _| {
            ids.entry(id).or_insert(None);
        });
    }
    if let Some(table) = chunks {
        walk(table, budget, |key, _| {
            ids.entry(chunks::split_key(&key).0).or_insert(None);
        });
    }
    // A metadata row on a page the walk jumped past may still be found by its id.
    if let Some(table) = entries {
        for (id, meta) in ids.iter_mut().filter(|(_, m)| m.is_none()) {
            *meta = contained(|| {
                table
                    .get(id)
                    .map(|g| g.and_then(|g| EntryMeta::decode(g.value())))
            })
            .flatten();
        }
    }

    let mut functions = HashMap::new();
    let mut all_functions = false;
    let rows = contained(|| {
        let table = txn.open_table(FUNCTIONS)?;
        let mut rows = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            rows.push((k.value(), v.value().to_vec()));
            if rows.len() as u64 > budget {
                break;
            }
        }
        Ok::<_, redb::Error>(rows)
    });
    if let Some(rows) = rows {
        all_functions = true;
        for (key, bytes) in rows {
            let row = FunctionRecord::decode(&bytes).filter(|r| {
                // Unchecked, a row whose name does not give its key may be damaged anywhere.
                checked || (identity_of(key, r).is_some() && r.versions.len() <= MAX_VERSIONS)
            });
            match row {
                Some(r) => {
                    functions.insert(key, r);
                }
                None => all_functions = false,
            }
        }
    }
    Found {
        ids,
        functions,
        all_functions,
    }
}

/// Adds `2^bits` to a big-endian key; `None` past the end of the key space.
pub(super) fn advance<const N: usize>(key: [u8; N], bits: usize) -> Option<[u8; N]> {
    let mut out = key;
    let mut i = N.checked_sub(1 + bits / 8)?;
    let mut carry = 1u16 << (bits % 8);
    loop {
        let sum = u16::from(out[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
        if carry == 0 {
            return Some(out);
        }
        i = i.checked_sub(1)?;
    }
}

/// Visits the rows of a table keyed by byte arrays, in key order, as far as they can be read:
/// rows out of order (a damaged key, or a damaged page leading the walk back) are skipped, and
/// where the engine fails or panics the walk starts again a little further on, jumping further
/// each time it fails again without progress. At most `budget` rows are read.
fn walk<const N: usize, V: redb::Value + 'static>(
    table: &ReadOnlyTable<&'static [u8; N], V>,
    budget: u64,
    mut visit: impl FnMut([u8; N], V::SelfType<'_>),
) {
    let mut from = [0u8; N];
    let mut last: Option<[u8; N]> = None;
    let mut rows = 0u64;
    let mut skips = 0;
    // The first jump: 1/2^24 of the key space, about a leaf's worth in a store of 10^6 rows.
    let small = (8 * N).saturating_sub(24);
    let mut jump = small;
    loop {
        let mut progressed = false;
        let ended = catch_unwind(AssertUnwindSafe(|| {
            let Ok(range) = table.range::<&[u8; N]>(&from..) else {
                return false;
            };
            for row in range {
                let Ok((k, v)) = row else {
                    return false;
                };
                rows += 1;
                if rows > budget {
                    return true;
                }
                let key = *k.value();
                if last.is_some_and(|l| key <= l) {
                    continue;
                }
                last = Some(key);
                progressed = true;
                visit(key, v.value());
            }
            true
        }));
        if ended.unwrap_or(false) {
            return;
        }
        skips += 1;
        if skips > MAX_SKIPS {
            return;
        }
        jump = if progressed {
            small
        } else {
            (jump + 2).min(8 * N - 1)
        };
        let base = last.map_or(from, |l| l.max(from));
        match advance(base, jump) {
            Some(next) => from = next,
            None => return,
        }
    }
}
