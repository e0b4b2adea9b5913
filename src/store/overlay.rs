//! A storage backend that reads a file and keeps every write in memory: the file never changes.
//!
//! Opening decides whether a file is a ckpt store before it writes to it (see `open.rs`). The
//! engine's read-only open decides it for a file closed cleanly; a file that needs recovery (an
//! unclean shutdown) or repair it refuses, and recovery writes. Over this backend the engine
//! recovers or repairs such a file in memory, so its tables can be read and the file refused
//! untouched if it is somebody else's. The engine writes little there (headers and allocator
//! state; a repair's rewrites of damaged pages), and the overlay holds only what it writes.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use parking_lot::Mutex;

/// Bytes are kept in blocks of this size: a write loads the blocks it touches from the file.
const BLOCK: u64 = 4096;

#[derive(Debug)]
pub(crate) struct Overlay {
    file: File,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The length the engine sees.
    len: u64,
    /// The bytes of the file still visible: a shrink hides the rest for good.
    file_len: u64,
    /// Blocks written, by index.
    blocks: HashMap<u64, Box<[u8]>>,
}

impl Overlay {
    pub(crate) fn new(file: File) -> io::Result<Overlay> {
        let len = file.metadata()?.len();
        Ok(Overlay {
            file,
            state: Mutex::new(State {
                len,
                file_len: len,
                blocks: HashMap::new(),
            }),
        })
    }
}

/// Reads `out.len()` bytes at `offset` of `file`, zeros past `file_len`.
fn read_file(file: &File, file_len: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
    let from_file = file_len.saturating_sub(offset).min(out.len() as u64) as usize;
    let (head, tail) = out.split_at_mut(from_file);
    if !head.is_empty() {
        read_at(file, offset, head)?;
    }
    tail.fill(0);
    Ok(())
}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, out: &mut [u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(out, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut offset: u64, mut out: &mut [u8]) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !out.is_empty() {
        match file.seek_read(out, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                out = &mut out[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl State {
    /// Runs `f` on each block that `offset..offset + len` touches: the block's index, the range
    /// inside the block, and the position in the caller's buffer.
    fn each_block(offset: u64, len: usize, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let index = at / BLOCK;
            let start = (at % BLOCK) as usize;
            let n = (BLOCK as usize - start).min(len - done);
            f(index, start, n, done);
            done += n;
        }
    }
}

impl redb::StorageBackend for Overlay {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.state.lock();
        if offset.saturating_add(out.len() as u64) > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        let mut result = Ok(());
        State::each_block(offset, out.len(), |index, start, n, pos| {
            let dest = &mut out[pos..pos + n];
            match state.blocks.get(&index) {
                Some(block) => dest.copy_from_slice(&block[start..start + n]),
                None => {
                    if result.is_ok() {
                        result = read_file(&self.file, state.file_len, offset + pos as u64, dest);
                    }
                }
            }
        });
        result
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        if len < state.len {
            state.file_len = state.file_len.min(len);
            state.blocks.retain(|index, _| index * BLOCK < len);
            // The rest of a cut block reads as zeros if the storage grows again.
            let cut = (len % BLOCK) as usize;
            if let Some(block) = state.blocks.get_mut(&(len / BLOCK)) {
                block[cut..].fill(0);
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut result = Ok(());
        State::each_block(offset, data.len(), |index, start, n, pos| {
            if result.is_err() {
                return;
            }
            let block = match state.blocks.entry(index) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut fresh = vec![0u8; BLOCK as usize].into_boxed_slice();
                    if let Err(err) =
                        read_file(&self.file, state.file_len, index * BLOCK, &mut fresh)
                    {
                        result = Err(err);
                        return;
                    }
                    e.insert(fresh)
                }
            };
            block[start..start + n].copy_from_slice(&data[pos..pos + n]);
        });
        result?;
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    #[test]
    fn writes_stay_in_memory_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ckpt-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let o = Overlay::new(File::open(&path).unwrap()).unwrap();
        o.write(4090, &[7; 20]).unwrap();
        o.write(9_990, &[9; 30]).unwrap();
        assert_eq!(o.len().unwrap(), 10_020);
        let mut all = vec![0; 10_020];
        o.read(0, &mut all).unwrap();
        let mut want = original.clone();
        want[4090..4110].fill(7);
        want.resize(10_020, 0);
        want[9_990..].fill(9);
        assert_eq!(all, want);
        o.set_len(5_000).unwrap();
        o.set_len(6_000).unwrap();
        let mut tail = vec![1; 1_000];
        o.read(5_000, &mut tail).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
        assert!(o.read(5_999, &mut [0; 2]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), original);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
