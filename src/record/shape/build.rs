//! The build identity that fingerprints untraceable types: a hash of the file this code runs
//! from (found through `/proc/self/maps` on Linux), or a value for this process alone.

use std::hash::Hasher as _;
use std::sync::OnceLock;

use xxhash_rust::xxh3::Xxh3;

/// The identity of the running build, for untraceable types: xxh3-64 of the file that holds
/// this code (the executable, or the shared library ckpt was linked into, found through
/// `/proc/self/maps` on Linux), read once per process. Where no such file can be read, a value
/// drawn for this process alone (its id, the time, an address), so that untraceable types are
/// then read back only by the process that saved them.
pub(crate) fn build_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        code_file()
            .and_then(|(path, inode)| hash_file(&path, inode).ok())
            .unwrap_or_else(process_nonce)
    })
}

/// The file this code was loaded from, and on Linux the inode it was mapped from (a file
/// replaced since, by a rebuild, is not the running build).
pub(super) fn code_file() -> Option<(std::path::PathBuf, Option<u64>)> {
    #[cfg(target_os = "linux")]
    {
        // The mapping that holds this very function: the executable, or a shared library
        // (a Python extension, a plugin) that ckpt and the caller's types were linked into.
        let here = build_id as fn() -> u64 as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines()
            .find_map(|line| mapped_file(line, here))
            .map(|(path, inode)| (path, Some(inode)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::env::current_exe().ok().map(|path| (path, None))
    }
}

/// The file and inode of one `/proc/self/maps` line, if the line's range holds `addr`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) fn mapped_file(line: &str, addr: usize) -> Option<(std::path::PathBuf, u64)> {
    // range, perms, offset, device, inode, then the path (padded; it may hold spaces).
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    if !(start..end).contains(&addr) {
        return None;
    }
    let inode = fields.nth(3)?.parse().ok()?;
    let path = fields.next()?.trim_start();
    path.starts_with('/').then(|| (path.into(), inode))
}

pub(super) fn hash_file(path: &std::path::Path, inode: Option<u64>) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    #[cfg(unix)]
    if let Some(inode) = inode {
        use std::os::unix::fs::MetadataExt as _;
        if file.metadata()?.ino() != inode {
            return Err(std::io::Error::other("the file was replaced"));
        }
    }
    #[cfg(not(unix))]
    let _ = inode;
    let mut hasher = twox_hash::XxHash3_64::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.write(&buf[..n]);
    }
}

fn process_nonce() -> u64 {
    let local = 0u8;
    let mut h = Xxh3::new();
    h.update(b"ckpt-process\x01");
    h.update(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&(std::ptr::addr_of!(local) as usize).to_le_bytes());
    h.digest()
}
