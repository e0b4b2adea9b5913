//! Large objects as streams, so that a large value never sits in memory twice: a record longer
//! than two parts ([`RemoteBuilder::part_size`](super::RemoteBuilder::part_size)) is published
//! as a multipart upload fed from the local file part by part, and an object as long is read as
//! a stream into the local file's chunks, checked as it goes.
//!
//! Only the mechanics live here (requests, buffers, checks); the tier counts and decides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use object_store::{MultipartUpload, PutPayload};
use parking_lot::{Condvar, Mutex};

use super::object::{self, Damaged, ObjectHeader};
use super::runtime::{self, Running};
use crate::error::Error;
use crate::id::CheckpointId;
use crate::record::{self, RecordCheck, RecordSink};

/// Parts of an upload sent at once: the memory a publish holds is about this many parts. Also
/// the parts in flight at once to one remote, whatever the uploads ([`PartSlots`]).
pub(crate) const IN_FLIGHT: usize = 3;

/// The parts of large uploads in flight at once to one remote, shared by its uploads (several
/// publish workers, `ckpt remote push`): each part must arrive within the timeout, which starts
/// when the part is sent, so parts share the link a few at a time, not one set per upload.
pub(crate) struct PartSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl PartSlots {
    pub(crate) fn new(slots: usize) -> Arc<PartSlots> {
        Arc::new(PartSlots {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        })
    }

    /// A slot, once one is free (a part in flight frees its slot when it ends, by itself: its
    /// upload need not wait for it).
    fn take(self: &Arc<PartSlots>) -> PartSlot {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        PartSlot(Arc::clone(self))
    }
}

/// A part's place in flight; freed when dropped.
struct PartSlot(Arc<PartSlots>);

impl Drop for PartSlot {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// Why a stream stopped short.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The object is not a sound record of its id.
    Damaged(Damaged),
    /// The remote failed or did not answer in time (its reason, the same for every object).
    Remote(String),
    /// The local side failed (the file the record goes into or comes from).
    Local(Error),
}

/// An object's pieces as they arrive.
struct Pieces {
    stream: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    /// Every piece waits at most this long.
    timeout: Duration,
}

impl Pieces {
    /// The next piece of the object; `None` at its end.
    fn next(&mut self) -> Result<Option<Bytes>, Fault> {
        let Some(mut stream) = self.stream.take() else {
            return Ok(None);
        };
        let got = runtime::run(self.timeout, async move {
            let item = stream.next().await;
            (stream, item)
        });
        match got {
            Ok((stream, Some(Ok(piece)))) => {
                self.stream = Some(stream);
                Ok(Some(piece))
            }
            Ok((_, None)) => Ok(None),
            Ok((_, Some(Err(e)))) => Err(Fault::Remote(super::error::stable_reason(&e))),
            Err(e) => Err(Fault::Remote(e.reason())),
        }
    }
}

/// An object being read, its header checked, its record not yet.
pub(crate) struct Download {
    pieces: Pieces,
    /// Record bytes received and not handed on yet.
    ahead: Bytes,
    header: ObjectHeader,
    /// The record's first bytes, its header (unchecked until the whole record is).
    head: [u8; record::HEADER_LEN],
}

impl Download {
    /// Reads the object's header from `stream`: the object stored under `id`, of `size`
    /// bytes.
    pub(crate) fn open(
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        timeout: Duration,
        id: &CheckpointId,
        size: u64,
    ) -> Result<Download, Fault> {
        let mut pieces = Pieces {
            stream: Some(stream),
            timeout,
        };
        // The object's header and the record's, gathered from the first pieces.
        let mut start = Vec::new();
        let mut need = object::FIXED + record::HEADER_LEN;
        loop {
            if start.len() >= object::FIXED {
                need = object::header_len(&start).map_err(Fault::Damaged)? + record::HEADER_LEN;
            }
            if start.len() >= need {
                break;
            }
            match pieces.next()? {
                Some(piece) => start.extend_from_slice(&piece),
                None => return Err(Fault::Damaged(Damaged::Truncated)),
            }
        }
        let header = object::parse_header(&start, id).map_err(Fault::Damaged)?;
        if header.header_len as u64 + header.record_len != size {
            return Err(Fault::Damaged(Damaged::Truncated));
        }
        let ahead = Bytes::from(start).slice(header.header_len..);
        let mut head = [0; record::HEADER_LEN];
        head.copy_from_slice(&ahead[..record::HEADER_LEN]);
        Ok(Download {
            pieces,
            ahead,
            header,
            head,
        })
    }

    pub(crate) fn header(&self) -> &ObjectHeader {
        &self.header
    }

    fn word(&self, at: usize) -> u64 {
        let mut w = [0; 8];
        w.copy_from_slice(&self.head[at..at + 8]);
        u64::from_le_bytes(w)
    }

    /// The compute time the record's header states (checked with the record).
    pub(crate) fn compute_nanos(&self) -> u64 {
        self.word(24)
    }

    /// The type fingerprint the record's header states (checked with the record).
    pub(crate) fn fingerprint(&self) -> u64 {
        self.word(16)
    }

    /// Writes the record to `out`, its first 8 bytes (the checksum) zero, as an encoder writes
    /// an unsealed record; returns the checksum once every byte was checked against it. Nothing
    /// past the stated length is accepted, and nothing short of it.
    pub(crate) fn write_unsealed(&mut self, out: &mut dyn RecordSink) -> Result<u64, Fault> {
        let len = self.header.record_len;
        let mut check = RecordCheck::new();
        let mut piece = std::mem::take(&mut self.ahead);
        loop {
            if check.len() + piece.len() as u64 > len {
                return Err(Fault::Damaged(Damaged::Truncated));
            }
            let at = check.len();
            check.feed(&piece);
            // The checksum's own bytes go out as zeros; the sink's owner seals the record.
            let sealed = 8u64.saturating_sub(at).min(piece.len() as u64) as usize;
            if sealed > 0 {
                out.write(&[0; 8][..sealed]).map_err(Fault::Local)?;
            }
            out.write(&piece[sealed..]).map_err(Fault::Local)?;
            match self.pieces.next()? {
                Some(next) => piece = next,
                None => break,
            }
        }
        if check.len() != len {
            return Err(Fault::Damaged(Damaged::Truncated));
        }
        check
            .finish()
            .map_err(|_| Fault::Damaged(Damaged::Record))?;
        Ok(self.word(0))
    }

    /// The record in one buffer, checked (for a store that cannot keep it: read-only).
    pub(crate) fn collect(&mut self) -> Result<Bytes, Fault> {
        let claim = usize::try_from(self.header.record_len).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(claim.min(64 << 20));
        let sum = self.write_unsealed(&mut out)?;
        out[..8].copy_from_slice(&sum.to_le_bytes());
        Ok(Bytes::from(out))
    }
}

/// A multipart upload fed in order: bytes are gathered into parts of `part` bytes, up to
/// `IN_FLIGHT` of which are sent at once. Its errors are the remote's, as stable reasons.
pub(crate) struct Upload {
    upload: Box<dyn MultipartUpload>,
    part: usize,
    buffer: Vec<u8>,
    running: VecDeque<Running<object_store::Result<()>>>,
    slots: Arc<PartSlots>,
    timeout: Duration,
    sent: u64,
}

impl Upload {
    pub(crate) fn new(
        upload: Box<dyn MultipartUpload>,
        part: usize,
        slots: Arc<PartSlots>,
        timeout: Duration,
    ) -> Self {
        Upload {
            upload,
            part,
            buffer: Vec::with_capacity(part),
            running: VecDeque::new(),
            slots,
            timeout,
            sent: 0,
        }
    }

    /// The next bytes of the object.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            let n = (self.part - self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buffer.len() == self.part {
                self.send()?;
            }
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), String> {
        let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.part));
        self.sent += full.len() as u64;
        // The part's timeout starts once it has a slot, when it is sent.
        let slot = self.slots.take();
        let put = self.upload.put_part(PutPayload::from(Bytes::from(full)));
        let running = runtime::spawn(self.timeout, async move {
            let sent = put.await;
            drop(slot);
            sent
        })
        .map_err(|e| e.reason())?;
        self.running.push_back(running);
        while self.running.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), String> {
        match self.running.pop_front() {
            Some(running) => runtime::reason(running.wait()),
            None => Ok(()),
        }
    }

    /// Sends what is left and completes the object; returns its length.
    pub(crate) fn complete(mut self) -> Result<u64, String> {
        let finished = (|| {
            if !self.buffer.is_empty() {
                self.send()?;
            }
            while !self.running.is_empty() {
                self.wait_oldest()?;
            }
            Ok(())
        })();
        if let Err(e) = finished {
            self.abort();
            return Err(e);
        }
        let sent = self.sent;
        let mut upload = self.upload;
        runtime::request(self.timeout, async move {
            match upload.complete().await {
                Ok(_) => Ok(sent),
                Err(e) => {
                    let _ = upload.abort().await;
                    Err(e)
                }
            }
        })
    }

    /// Gives the upload up: the parts sent are discarded (best effort).
    pub(crate) fn abort(self) {
        for running in self.running {
            let _ = running.wait();
        }
        let mut upload = self.upload;
        let _ = runtime::run(self.timeout, async move { upload.abort().await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Parts in flight now, and the most seen at once.
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
    }

    /// An upload whose every part takes 20 ms, counted by `gauge`.
    #[derive(Debug)]
    struct SlowParts(Arc<Gauge>);

    impl std::fmt::Debug for Gauge {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Gauge")
        }
    }

    type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

    impl MultipartUpload for SlowParts {
        fn put_part(&mut self, _data: PutPayload) -> object_store::UploadPart {
            let gauge = Arc::clone(&self.0);
            Box::pin(async move {
                let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                gauge.now.fetch_sub(1, Ordering::SeqCst);
                gauge.done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }

        fn complete<'a, 'b>(
            &'a mut self,
        ) -> Boxed<'b, object_store::Result<object_store::PutResult>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async {
                Ok(object_store::PutResult {
                    e_tag: None,
                    version: None,
                })
            })
        }

        fn abort<'a, 'b>(&'a mut self) -> Boxed<'b, object_store::Result<()>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn uploads_at_once_share_the_parts_in_flight_to_one_remote() {
        let gauge = Arc::new(Gauge::default());
        let slots = PartSlots::new(IN_FLIGHT);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let (gauge, slots) = (Arc::clone(&gauge), Arc::clone(&slots));
                scope.spawn(move || {
                    let parts = Box::new(SlowParts(gauge));
                    let mut upload = Upload::new(parts, 1024, slots, Duration::from_secs(10));
                    upload.write(&[7u8; 10 * 1024]).unwrap();
                    assert_eq!(upload.complete().unwrap(), 10 * 1024);
                });
            }
        });
        assert_eq!(gauge.done.load(Ordering::SeqCst), 40, "every part sent");
        let most = gauge.most.load(Ordering::SeqCst);
        assert!(most <= IN_FLIGHT, "{most} parts at once from 4 uploads");
        assert_eq!(*slots.free.lock(), IN_FLIGHT, "every slot freed");
    }
}
