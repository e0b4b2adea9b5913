//! Opening the store a command works on, and finding the function a `--function` names.

use std::io;
use std::path::Path;

use ckpt::store::FunctionStats;
use ckpt::{AccessMode, CheckpointId, ConcurrencyMode, Function, OpenCheck, OpenErrorKind, Store};

use crate::IdArg;
use crate::output::{Failure, Result, for_the_tool};

/// Whether a command may create the store when the file is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Inspection and maintenance: a missing file is an error (no empty store is created).
    Fail,
    /// `import`: a new store is created.
    Create,
}

/// Opens the store at `path`: read-only for the commands that change nothing (so that they
/// change no byte of the file, and work on a file this user may not write). A store held by
/// another process is opened again in multi-process mode, which works when that process uses it
/// too (live inspection).
pub fn open(path: &Path, check: OpenCheck, missing: Missing, access: AccessMode) -> Result<Store> {
    if missing == Missing::Fail {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::fail(format!(
                    "no checkpoint store at {}: the file does not exist (give another with \
                     --store PATH, or set CKPT_DIR to the store's folder)",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(Failure::fail(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    }
    let builder = Store::builder().open_check(check).access(access);
    match builder.open(path) {
        Ok(store) => Ok(store),
        Err(e) if *e.kind() == OpenErrorKind::AlreadyOpen => {
            match builder
                .concurrency(ConcurrencyMode::MultiProcess)
                .open(path)
            {
                Ok(store) => Ok(store),
                Err(e) if *e.kind() == OpenErrorKind::AlreadyOpen => Err(Failure::fail(format!(
                    "checkpoint store {} is held by another process in single-process mode; \
                         to inspect it while that process runs, have it open the store with \
                         ConcurrencyMode::MultiProcess (StoreBuilder::concurrency), or stop it",
                    path.display()
                ))),
                Err(e) => Err(Failure::fail(for_the_tool(&e.to_string()))),
            }
        }
        Err(e) => Err(Failure::fail(for_the_tool(&e.to_string()))),
    }
}

/// The function a `--function` argument names, among the store's function rows: its full path
/// (`module::path::name`), or a unique suffix of it that starts at a `::` boundary (`embed`,
/// `text::embed`).
pub fn function(store: &Store, wanted: &str) -> Result<FunctionStats> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Err(Failure::usage(
            "--function needs a function path, like app::embed",
        ));
    }
    let rows: Vec<FunctionStats> = store
        .stats()?
        .functions
        .into_iter()
        .filter(|f| !f.name.is_empty())
        .collect();
    if let Some(f) = rows.iter().find(|f| f.path() == wanted) {
        return Ok(f.clone());
    }
    let suffix = format!("::{wanted}");
    let matches: Vec<&FunctionStats> = rows
        .iter()
        .filter(|f| f.path().ends_with(&suffix))
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Failure::fail(format!(
            "no function {wanted} in {}; `ckpt stats` lists its functions",
            store.path().display()
        ))),
        many => Err(Failure::fail(format!(
            "function {wanted} is ambiguous: it matches {}; give the full path",
            many.iter().map(|f| f.path()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The identity of a function row's newest code version.
pub fn identity(row: &FunctionStats) -> Function {
    let mut f = Function::new(row.module.clone(), row.name.clone());
    if let Some(h) = row.code_hash {
        f = f.with_code_hash(h);
    }
    if let Some(v) = &row.version {
        f = f.with_version(v.clone());
    }
    f
}

/// The entry `arg` names: its full id, or the one entry whose id starts with the prefix typed.
pub fn resolve_id(store: &Store, path: &Path, arg: &IdArg) -> Result<CheckpointId> {
    if let Ok(id) = arg.to_string().parse::<CheckpointId>() {
        return Ok(id);
    }
    let prefix = arg.to_string();
    let mut found = store
        .entries()?
        .into_iter()
        .map(|e| e.id)
        .filter(|id| id.to_string().starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => Err(Failure::fail(format!(
            "no entry with an id starting {prefix} in {}",
            path.display()
        ))),
        (Some(_), Some(_)) => Err(Failure::fail(format!(
            "{} entries have ids starting {prefix}: type more of the id",
            2 + found.count()
        ))),
    }
}
