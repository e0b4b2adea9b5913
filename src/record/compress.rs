//! Compressed records: the payload of a record whose flags byte has [`FLAG_ZSTD`] set is
//! `u64le(n) ‖ zstd frame`, where `n` is the length of the postcard bytes the frame holds. The
//! header and its checksum are a plain record's: the checksum covers the bytes as stored
//! (compressed), so a damaged record is rejected before anything is decompressed.
//!
//! Decompression is bounded: `n` above [`MAX_DECOMPRESSED`] is refused before any allocation,
//! the output buffer is `n` bytes and a frame that would write more, or fewer, is damage. Built
//! without the `zstd` feature, ckpt still knows the flag (so `verify`, archives and salvage keep
//! such records), but a decorator meets one as `Rejected::Unsupported`: a miss that leaves the
//! record in place.

/// How a decorator stores its results: plain (the default) or compressed.
///
/// Set it per function ([`DecoratorCheckpoint::with_compression`](crate::DecoratorCheckpoint::with_compression),
/// `#[checkpoint(compress = zstd)]`) or as a store's default for every decorator on it
/// ([`StoreBuilder::compression`](crate::StoreBuilder::compression)). Reading never depends on
/// it: a record says in its header whether it is compressed, so a store may hold both kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Records are stored as encoded.
    #[default]
    None,
    /// The value's bytes are compressed with zstd at `level` (1..=22; 3 is zstd's default,
    /// [`Compression::zstd`]), and stored compressed when that makes them smaller. Feature
    /// `zstd`.
    #[cfg(feature = "zstd")]
    Zstd {
        /// The zstd level: higher is smaller and slower to save; reading costs about the same.
        level: i32,
    },
}

impl Compression {
    /// zstd at its default level, 3.
    #[cfg(feature = "zstd")]
    pub const fn zstd() -> Compression {
        Compression::Zstd { level: 3 }
    }
}

#[cfg(all(feature = "zstd", feature = "fault-injection"))]
thread_local! {
    /// Tests only (`testing::as_if_without_zstd`): this thread decodes compressed records as a
    /// build without the `zstd` feature does, so that one test binary can play both builds.
    pub(crate) static AS_IF_WITHOUT_ZSTD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Flags byte (header byte 9): the payload is compressed with zstd.
pub(crate) const FLAG_ZSTD: u8 = 0x01;

/// Every flag this build can meet in a sound record (whether or not it can decode it).
pub(crate) const KNOWN_FLAGS: u8 = FLAG_ZSTD;

/// The most bytes a compressed record may decompress to (64 MiB): what a lying frame can make
/// a hit allocate at most. Values whose encoding is longer are stored plain.
pub(crate) const MAX_DECOMPRESSED: u64 = 64 << 20;

/// The length prefix of a compressed payload.
#[cfg(feature = "zstd")]
const PREFIX: usize = 8;

/// Payloads shorter than this are stored plain: a zstd frame alone costs about a dozen bytes,
/// and the length prefix eight more.
#[cfg(feature = "zstd")]
const MIN_PAYLOAD: usize = 64;

#[cfg(feature = "zstd")]
pub(crate) use self::zstd_impl::*;

#[cfg(feature = "zstd")]
mod zstd_impl {
    use std::cell::RefCell;
    use std::io::{self, Write as _};

    use serde::Serialize;

    use super::{FLAG_ZSTD, MAX_DECOMPRESSED, MIN_PAYLOAD, PREFIX};
    use crate::error::{Error, ErrorKind};
    use crate::record::{HEADER_LEN, RECORD_VERSION, Rejected, checksum, nanos};

    thread_local! {
        // zstd contexts are costly to create (hundreds of KiB of tables at level 3): one per
        // thread, reused. Taken out while in use, so a nested call (none runs user code while
        // it holds one) would simply create its own.
        static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { RefCell::new(None) };
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }

    fn zstd_error(e: io::Error) -> Error {
        Error::with_source(ErrorKind::Encode, "cannot compress a record", e)
    }

    /// The compressed form of the sealed plain record `record`, if it is shorter.
    pub(crate) fn compress_record(record: &[u8], level: i32) -> Result<Option<Vec<u8>>, Error> {
        let payload = &record[HEADER_LEN..];
        if payload.len() < MIN_PAYLOAD {
            return Ok(None);
        }
        // Only worth storing if the frame and its prefix are shorter than the payload: the
        // frame is written into a buffer of that size, and one that does not fit is not kept.
        let budget = payload.len() - PREFIX - 1;
        let mut frame = Vec::with_capacity(budget);
        let taken = COMPRESSOR.with(|c| c.borrow_mut().take());
        let mut compressor = match taken {
            Some((l, c)) if l == level => c,
            Some((_, mut c)) => {
                c.set_compression_level(level).map_err(zstd_error)?;
                c
            }
            None => zstd::bulk::Compressor::new(level).map_err(zstd_error)?,
        };
        let written = compressor.compress_to_buffer(payload, &mut frame);
        COMPRESSOR.with(|c| *c.borrow_mut() = Some((level, compressor)));
        if written.is_err() {
            // The destination was too small: compressing does not pay.
            return Ok(None);
        }
        let mut out = Vec::with_capacity(HEADER_LEN + PREFIX + frame.len());
        out.extend_from_slice(&record[..HEADER_LEN]);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&frame);
        out[9] |= FLAG_ZSTD;
        let sum = checksum(&out[8..]);
        out[..8].copy_from_slice(&sum.to_le_bytes());
        Ok(Some(out))
    }

    /// Encodes `value` straight into a compressed record, without its plain encoding in
    /// memory, if the record is at most `limit` bytes and the value's encoding at most
    /// `MAX_DECOMPRESSED`; `None` otherwise (stored plain then).
    pub(crate) fn encode_compressed<T: Serialize + ?Sized>(
        value: &T,
        fingerprint: u64,
        compute: std::time::Duration,
        level: i32,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, Error> {
        /// The frame's bytes, refused past `limit`.
        struct Bounded {
            out: Vec<u8>,
            limit: usize,
        }
        impl io::Write for Bounded {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.out.len() + buf.len() > self.limit {
                    return Err(io::Error::other("over the limit"));
                }
                self.out.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        /// postcard's output, fed to the compressor and counted.
        struct Feed<'a> {
            encoder: zstd::stream::write::Encoder<'a, Bounded>,
            fed: u64,
        }
        impl<'a> postcard::ser_flavors::Flavor for Feed<'a> {
            type Output = (u64, zstd::stream::write::Encoder<'a, Bounded>);
            fn try_push(&mut self, b: u8) -> postcard::Result<()> {
                self.try_extend(&[b])
            }
            fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
                self.fed += data.len() as u64;
                if self.fed > MAX_DECOMPRESSED {
                    return Err(postcard::Error::SerializeBufferFull);
                }
                self.encoder
                    .write_all(data)
                    .map_err(|_| postcard::Error::SerializeBufferFull)
            }
            fn finalize(self) -> postcard::Result<Self::Output> {
                Ok((self.fed, self.encoder))
            }
        }
        let sink = Bounded {
            out: vec![0u8; HEADER_LEN + PREFIX],
            limit,
        };
        let mut encoder = zstd::stream::write::Encoder::new(sink, level).map_err(zstd_error)?;
        // The length is written in the prefix; the frame need not repeat it.
        encoder.include_contentsize(false).map_err(zstd_error)?;
        let (fed, encoder) = match postcard::serialize_with_flavor(value, Feed { encoder, fed: 0 })
        {
            Ok(done) => done,
            Err(postcard::Error::SerializeBufferFull) => return Ok(None),
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Encode,
                    format!("cannot encode a {}", std::any::type_name::<T>()),
                    e,
                ));
            }
        };
        let Ok(sink) = encoder.finish() else {
            return Ok(None);
        };
        let mut out = sink.out;
        out[8] = RECORD_VERSION;
        out[9] = FLAG_ZSTD;
        out[16..24].copy_from_slice(&fingerprint.to_le_bytes());
        out[24..32].copy_from_slice(&nanos(compute).to_le_bytes());
        out[HEADER_LEN..HEADER_LEN + PREFIX].copy_from_slice(&fed.to_le_bytes());
        let sum = checksum(&out[8..]);
        out[..8].copy_from_slice(&sum.to_le_bytes());
        Ok(Some(out))
    }

    /// The postcard bytes a compressed payload holds; any inconsistency is damage.
    pub(crate) fn decompress(payload: &[u8]) -> Result<Vec<u8>, Rejected> {
        let (prefix, frame) = payload
            .split_first_chunk::<PREFIX>()
            .ok_or(Rejected::Corrupt)?;
        let declared = u64::from_le_bytes(*prefix);
        if declared > MAX_DECOMPRESSED {
            return Err(Rejected::Corrupt);
        }
        // invariant: declared ≤ 64 MiB, which fits a usize on every target ckpt builds for.
        let declared = declared as usize;
        let mut out = Vec::with_capacity(declared);
        let taken = DECOMPRESSOR.with(|d| d.borrow_mut().take());
        let mut decompressor = match taken {
            Some(d) => d,
            None => zstd::bulk::Decompressor::new().map_err(|_| Rejected::Corrupt)?,
        };
        // A frame that would write past `declared` bytes fails here ("destination too small");
        // the buffer is never grown.
        let written = decompressor.decompress_to_buffer(frame, &mut out);
        DECOMPRESSOR.with(|d| *d.borrow_mut() = Some(decompressor));
        match written {
            Ok(n) if n == declared && out.len() == declared => Ok(out),
            _ => Err(Rejected::Corrupt),
        }
    }
}
