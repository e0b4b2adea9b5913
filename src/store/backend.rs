//! Storage backends: where a store's bytes live when they do not live in a plain file opened by
//! path.
//!
//! ckpt's own small trait, [`Backend`], so that the storage engine's types stay out of ckpt's API.
//! It exists for fault injection and fuzzing (the `fault-injection` cargo feature exposes it,
//! hidden from the docs, with [`StoreBuilder::open_backend`] and a few ready-made backends in
//! [`crate::testing`]); a store opened by path uses the engine's own file backend, with its
//! file locks.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{Store, StoreBuilder};
use crate::error::OpenError;

/// The bytes of one store: a resizable array with positional reads and writes.
///
/// The contract is the storage engine's: `read` past the end is an error, `set_len` zero-fills
/// what it adds, and `sync_data` returns once written data is durable. A backend takes no locks:
/// the caller must not open two stores on the same bytes at once.
#[allow(clippy::len_without_is_empty)] // the storage engine's shape
pub trait Backend: fmt::Debug + Send + Sync + 'static {
    /// The current length in bytes.
    ///
    /// # Errors
    /// When the length cannot be read.
    fn len(&self) -> io::Result<u64>;

    /// Fills `out` with the bytes at `offset`.
    ///
    /// # Errors
    /// When the range is past the end, or the read fails.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;

    /// Grows (zero-filling) or shrinks the storage to `len` bytes.
    ///
    /// # Errors
    /// When the storage cannot be resized.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// When the data cannot be made durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Writes `data` at `offset`, growing the storage if needed.
    ///
    /// # Errors
    /// When the write fails.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        (**self).read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        (**self).sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write(offset, data)
    }
}

impl<B: Backend + ?Sized> Backend for Box<B> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        (**self).read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        (**self).sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write(offset, data)
    }
}

/// Adapts a [`Backend`] to the storage engine's backend trait. Locking is left unsupported: the
/// engine then runs in its exclusive-writer mode, which needs none.
#[derive(Debug)]
pub(crate) struct EngineBackend<B>(pub B);

impl<B: Backend> redb::StorageBackend for EngineBackend<B> {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
}

impl StoreBuilder {
    /// Opens a store over a custom [`Backend`] instead of a file: `make` is called for the first
    /// open and again whenever the store reopens its engine after a failure, and must return a
    /// backend over the same bytes each time. An empty backend becomes a new, empty store.
    /// `label` names the store in errors and is what [`Store::path`] returns.
    ///
    /// # Errors
    /// As [`StoreBuilder::open`].
    #[doc(hidden)]
    pub fn open_backend<B, F>(&self, label: impl AsRef<Path>, make: F) -> Result<Store, OpenError>
    where
        B: Backend,
        F: Fn() -> io::Result<B> + Send + Sync + 'static,
    {
        let label = label.as_ref().to_path_buf();
        let engine = self.engine_options();
        let opener_label = label.clone();
        let opener = super::builder::reopened_after_failure(engine, move |engine| {
            let backend = make().map_err(|e| OpenError::from_io(&opener_label, e))?;
            super::open::open_backend(&opener_label, EngineBackend(backend), engine)
        });
        self.open_with(label, opener)
    }
}

/// A backend in memory. Clones share the bytes, so a store can be reopened over them, and a test
/// can look at or damage them between opens.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    bytes: Arc<RwLock<Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A backend holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> MemoryBackend {
        MemoryBackend {
            bytes: Arc::new(RwLock::new(bytes)),
        }
    }

    /// A copy of the bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.read().clone()
    }

    /// Replaces the bytes.
    pub fn set_bytes(&self, bytes: Vec<u8>) {
        *self.bytes.write() = bytes;
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("len", &self.bytes.read().len())
            .finish()
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// Memory backends refuse to grow past this (a disk would fill up), so a hostile header claiming
/// a huge file cannot make a test or fuzz run allocate gigabytes.
const MEMORY_LIMIT: u64 = 1 << 28;

impl Backend for MemoryBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.read().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.read();
        let start = to_usize(offset)?;
        let end = start.checked_add(out.len()).ok_or_else(out_of_range)?;
        out.copy_from_slice(bytes.get(start..end).ok_or_else(out_of_range)?);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > MEMORY_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "memory backend full",
            ));
        }
        self.bytes.write().resize(to_usize(len)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = to_usize(offset)?;
        let end = start
            .checked_add(data.len())
            .filter(|&e| e as u64 <= MEMORY_LIMIT)
            .ok_or_else(|| io::Error::new(io::ErrorKind::StorageFull, "memory backend full"))?;
        let mut bytes = self.bytes.write();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }
}

/// A backend over an open file, with positional reads and writes and no locks.
#[derive(Debug, Clone)]
pub struct FileBytes {
    file: Arc<std::fs::File>,
}

impl FileBytes {
    /// A backend over `file` (opened for reading and writing).
    pub fn new(file: std::fs::File) -> FileBytes {
        FileBytes {
            file: Arc::new(file),
        }
    }

    /// Opens (creating if missing) the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FileBytes> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(FileBytes::new(file))
    }
}

#[cfg(unix)]
impl Backend for FileBytes {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&*self.file, out, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&*self.file, data, offset)
    }
}
