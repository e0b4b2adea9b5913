//! ckpt makes expensive function calls cheap the second time: it identifies each call (function,
//! code version and arguments), keeps its result in one transactional [redb] file, and hands the
//! stored result back on the next identical call, across restarts.
//!
//! The core types, after the Python library `checkpointing`:
//! * [`checkpoint!`]: decorate a function and forget about it;
//! * [`DecoratorCheckpoint`]: an [`Identifier`] and a [`Cache`] bound to one function, with
//!   [`call`](DecoratorCheckpoint::call), [`rerun`](DecoratorCheckpoint::rerun) (and, for async
//!   functions on any runtime, [`call_async`](DecoratorCheckpoint::call_async) and
//!   [`rerun_async`](DecoratorCheckpoint::rerun_async)) and an [`OnError`] policy;
//! * [`Identifier`]: turns a call into a [`CheckpointId`]; [`AutoIdentifier`] (the default)
//!   hashes the function and its arguments canonically, [`KeyFn`] hashes a projection of them,
//!   [`FnNameIdentifier`] the function alone;
//! * [`Cache`]: saves and retrieves encoded results; [`Store`] keeps them in a redb file,
//!   [`MemoryCache`] in memory;
//! * [`Store::stats`]: hits, misses, saves, errors, corrupt entries, compute time saved.
//!
//! ```
//! ckpt::checkpoint! {
//!     fn slow_square(x: u64) -> u64 {
//!         std::thread::sleep(std::time::Duration::from_millis(50));
//!         x * x
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #   let dir = std::env::temp_dir().join(format!("ckpt-doc-lib-{}", std::process::id()));
//! #   let _ = std::fs::remove_dir_all(&dir);
//! #   unsafe { std::env::set_var("CKPT_DIR", &dir) };
//!     assert_eq!(slow_square(12), 144); // 50 ms, saved to .ckpt/checkpoints.redb
//!     assert_eq!(slow_square(12), 144); // microseconds, read back (in later processes too)
//!
//!     let stats = ckpt::default_store()?.stats()?;
//!     assert_eq!((stats.calls.hits, stats.calls.misses), (1, 1));
//!     assert!(stats.calls.time_saved() >= std::time::Duration::from_millis(50));
//! #   let _ = std::fs::remove_dir_all(&dir);
//!     Ok(())
//! }
//! ```
//!
//! Stored bytes are data, never code: values are postcard-encoded and checked (checksum and type
//! fingerprint) before they are decoded, so a damaged or mistyped entry is a miss to recompute,
//! never a wrong value and never a panic. `ARCHITECTURE.md` documents the file format, the id
//! scheme byte by byte, and what a crash can lose.
//!
//! [redb]: https://docs.rs/redb

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(rust_2018_idioms)]

pub mod cache;
mod decorator;
mod default_store;
mod error;
mod flight;
mod id;
pub mod identifier;
mod macros;
mod record;
mod record_view;
#[cfg(feature = "remote")]
pub mod remote;
pub mod stats;
pub mod store;
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub mod testing;
mod warn;

// What a user needs first; the rest lives in the modules named after it (`cache`, `store`,
// `identifier`, `stats`, `archive`, `defaults`).
pub use cache::{Cache, MemoryCache};
pub use decorator::{DecoratorCheckpoint, OnError, Refresh, RefreshTask, run_on_thread};
pub use default_store::{DefaultStore, default_store};
pub use error::{Error, ErrorKind, OpenError, OpenErrorKind};
pub use id::{CheckpointId, Function, code_hash};
pub use identifier::{AutoIdentifier, Call, FnNameIdentifier, Identifier, KeyFn, Unordered};
#[doc(hidden)]
pub use macros::__private;
pub use record::Compression;
pub use record_view::{Record, type_fingerprint};
#[cfg(feature = "remote")]
pub use remote::{Dedup, PublishMode, Remote, RemoteMode};
pub use stats::CallStats;
pub use store::{
    AccessMode, ConcurrencyMode, Durability, EvictionPolicy, Limits, OpenCheck, Store, StoreBuilder,
};
pub use warn::{reset_warning_hook, set_warning_hook};

/// Portable archives of a store's entries: [`Store::export`], [`Store::import`] and the
/// `ckpt export` / `ckpt import` commands. ARCHITECTURE.md gives the format byte by byte.
pub mod archive {
    pub use crate::store::archive::{
        ARCHIVE_MAGIC, ARCHIVE_VERSION, ExportReport, ImportReport, MAX_ARCHIVE_RECORD,
    };
}

/// Where the default store lives: `$CKPT_DIR/checkpoints.redb`, or `.ckpt/checkpoints.redb` under
/// the working directory (see [`default_store`](crate::default_store())).
pub mod defaults {
    pub use crate::default_store::{DEFAULT_DIR, DEFAULT_FILE, DIR_VAR, default_store_path};
}

/// The README's examples, compiled as doctests so that they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// `Result` with ckpt's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
