//! The engine's errors, turned into ckpt's: every store file that talks to redb converts its
//! errors here, keeping redb's error as the source (redb's types never reach the public API).

use crate::error::{Error, ErrorKind};

/// Converts an engine error into ours, keeping the engine's error as the source.
pub(crate) fn engine_error(context: &str, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Corrupted(msg) => {
            Error::corrupted(format!("{context}: store corrupted: {msg}"))
        }
        redb::Error::DatabaseClosed => {
            Error::new(ErrorKind::Closed, format!("{context}: store closed"))
        }
        other => Error::storage(context.to_string(), other),
    }
}

/// [`engine_error`] with a fixed context, for `map_err`.
pub(crate) fn storage(context: &'static str) -> impl Fn(redb::StorageError) -> Error {
    move |e| engine_error(context, e)
}
