//! Error types: [`Error`] for every operation, [`OpenError`] for opening a store.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of every ckpt operation except opening a store (see [`OpenError`]).
///
/// It is one pointer wide, so `Result<T, Error>` stays small on the hit path. Match on
/// [`Error::kind`] to tell the failures apart; [`std::error::Error::source`] gives the underlying
/// cause (an I/O error, a serialization error, the storage engine's error) where there is one.
pub struct Error(Box<ErrorInner>);

struct ErrorInner {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Building a checkpoint id failed: an argument's `Serialize` implementation returned an
    /// error, or a custom [`Identifier`](crate::Identifier) did.
    Identify,
    /// Encoding a result for storage failed (its `Serialize` implementation returned an error).
    Encode,
    /// The store could not be opened; the source is the [`OpenError`].
    Open,
    /// The storage engine or the file system failed while reading or writing.
    Storage,
    /// The store's structure is damaged: a table or a record that ckpt wrote no longer parses.
    /// Stored *values* that fail their checksum are not errors; they are misses to recompute.
    Corrupted,
    /// The store was closed, or a background write failed and the store refuses further writes.
    Closed,
    /// An argument to a ckpt call was invalid (for example a malformed checkpoint id).
    InvalidInput,
    /// A [`Cache`](crate::Cache) implementation outside this crate failed.
    Cache,
    /// A value is larger than the store's byte cap, so storing it would break the cap.
    TooLarge,
    /// The operation is not available in the store's mode, or in this build (a compressed
    /// record without the `zstd` feature).
    Unsupported,
    /// The operation would write to a store opened read-only
    /// ([`StoreBuilder::read_only`](crate::StoreBuilder::read_only)).
    ReadOnly,
    /// A file the operation creates exists already (for example the target of
    /// [`Store::salvage`](crate::Store::salvage)).
    AlreadyExists,
    /// A background refresh of an expired entry failed (the function panicked, or returned a
    /// result that is not stored); the expired value stays and the next call refreshes again
    /// (see [`Refresh::Stale`](crate::Refresh::Stale)).
    Refresh,
    /// The remote tier (feature `remote`) failed or did not answer in time; the call was served
    /// locally or computed.
    Remote,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            message: message.into(),
            source: None,
        }))
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Error {
        Error(Box::new(ErrorInner {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }))
    }

    /// An error for a custom [`Cache`](crate::Cache) to return, wrapping its own cause.
    ///
    /// ```
    /// let io = std::io::Error::other("bucket unreachable");
    /// let err = ckpt::Error::cache("remote tier failed", io);
    /// assert_eq!(err.kind(), ckpt::ErrorKind::Cache);
    /// assert_eq!(err.to_string(), "remote tier failed: bucket unreachable");
    /// ```
    pub fn cache(message: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::with_source(ErrorKind::Cache, message, source)
    }

    /// An error for a custom [`Identifier`](crate::Identifier) to return.
    pub fn identify(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Identify, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub(crate) fn storage(message: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::with_source(ErrorKind::Storage, message, source)
    }

    /// A write refused by a read-only store.
    pub(crate) fn read_only(what: &str) -> Error {
        Error::new(
            ErrorKind::ReadOnly,
            format!(
                "{what}: the store is open read-only; open it without StoreBuilder::read_only \
                 to change it"
            ),
        )
    }

    /// A damaged store; the message gets the advice of what to do unless it has its own.
    pub(crate) fn corrupted(message: impl Into<String>) -> Error {
        let mut message = message.into();
        if !message.contains("Store::") {
            message.push_str(
                "; run Store::repair to drop what is damaged; if it cannot, copy what is intact \
                 into a new store with Store::salvage, or delete the store file (checkpoints are \
                 recomputable)",
            );
        }
        Error::new(ErrorKind::Corrupted, message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("source", &self.0.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        if let Some(source) = &self.0.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

impl From<OpenError> for Error {
    fn from(err: OpenError) -> Error {
        let message = format!("cannot open checkpoint store {}", err.path.display());
        Error::with_source(ErrorKind::Open, message, err)
    }
}

/// Lets a decorated function returning `std::io::Result` receive checkpoint errors
/// (see [`OnError::Raise`](crate::OnError::Raise)).
impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        std::io::Error::other(err)
    }
}

/// Why a store could not be opened. Every variant says what to do about it.
pub struct OpenError {
    path: PathBuf,
    kind: OpenErrorKind,
    source: Option<BoxError>,
}

/// The reason in an [`OpenError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// Another process holds the file (for writing, or in a mode that excludes this open).
    AlreadyOpen,
    /// This process already has the store open: share that [`Store`](crate::Store) (clone the
    /// handle) instead of opening the file again.
    OpenInThisProcess,
    /// A read-only open found a store that was not closed cleanly: its recovery writes to the
    /// file, so it needs one writable open first.
    NeedsRecovery,
    /// The file exists but is not a ckpt store: not a redb file at all, or a redb database that
    /// ckpt did not create.
    NotAStore,
    /// The store was written by a newer version of ckpt, with a schema this version cannot read.
    NewerSchema {
        /// The schema version recorded in the file.
        found: u32,
        /// The newest schema version this build reads.
        supported: u32,
    },
    /// The file is a ckpt store but its structure is damaged.
    Corrupted,
    /// The operating system refused access to the file or its folder.
    PermissionDenied,
    /// The path names a directory, not a file.
    IsADirectory,
    /// The options cannot work together (the message says which).
    Unsupported,
    /// Any other I/O failure.
    Io,
}

impl OpenError {
    pub(crate) fn new(path: &Path, kind: OpenErrorKind) -> OpenError {
        OpenError {
            path: path.to_path_buf(),
            kind,
            source: None,
        }
    }

    pub(crate) fn with_source(
        path: &Path,
        kind: OpenErrorKind,
        source: impl Into<BoxError>,
    ) -> OpenError {
        OpenError {
            path: path.to_path_buf(),
            kind,
            source: Some(source.into()),
        }
    }

    pub(crate) fn from_io(path: &Path, err: std::io::Error) -> OpenError {
        let kind = match err.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                OpenErrorKind::PermissionDenied
            }
            std::io::ErrorKind::IsADirectory => OpenErrorKind::IsADirectory,
            _ => OpenErrorKind::Io,
        };
        OpenError::with_source(path, kind, err)
    }

    /// The store file this error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the open failed.
    pub fn kind(&self) -> &OpenErrorKind {
        &self.kind
    }
}

/// With the message (and its advice) first: what `main` prints when it returns the error.
impl fmt::Debug for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenError")
            .field("message", &self.to_string())
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            OpenErrorKind::AlreadyOpen => write!(
                f,
                "checkpoint store {path} is held by another process; stop that process, or open \
                 the store in every process with ConcurrencyMode::MultiProcess"
            ),
            OpenErrorKind::OpenInThisProcess => write!(
                f,
                "checkpoint store {path} is already open in this process: clone the Store handle \
                 (it is cheap and shared between threads) instead of opening the file again"
            ),
            OpenErrorKind::NeedsRecovery => write!(
                f,
                "checkpoint store {path} was not closed cleanly and needs recovery, which writes \
                 to the file, so a read-only open cannot do it; open it once without read_only \
                 (Store::open) to recover it"
            ),
            OpenErrorKind::NotAStore => write!(
                f,
                "{path} is not a ckpt checkpoint store; point ckpt at another file, or move this \
                 one away"
            ),
            OpenErrorKind::NewerSchema { found, supported } => write!(
                f,
                "checkpoint store {path} has schema version {found}, newer than the {supported} \
                 this ckpt reads; upgrade ckpt, or use another store file"
            ),
            OpenErrorKind::Corrupted => write!(
                f,
                "checkpoint store {path} is corrupted; copy what is intact into a new store with \
                 Store::salvage and use that one, or delete it (checkpoints are recomputable), or \
                 restore it from a backup"
            ),
            OpenErrorKind::PermissionDenied => write!(
                f,
                "permission denied for checkpoint store {path}; check the owner and mode of the \
                 file and its folder"
            ),
            OpenErrorKind::IsADirectory => write!(
                f,
                "{path} is a directory, not a checkpoint store file; give the path of a file in it"
            ),
            OpenErrorKind::Unsupported => {
                write!(f, "cannot open checkpoint store {path} with these options")
            }
            OpenErrorKind::Io => write!(f, "i/o error opening checkpoint store {path}"),
        }?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl StdError for OpenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}
