//! A stored record as a cache lends it for decoding: in one buffer ([`Lent::whole`]) or in
//! parts ([`Parts`]), so that a large record is decoded without being joined. Part of the record
//! layer: caches produce these, the decoder (`record::decode_lent`, `record/de.rs`) reads them.

use crate::error::Error;

/// A stored record, as a cache lends it to the decorator ([`Cache::retrieve_parts`](crate::Cache::retrieve_parts)): whole, in
/// one buffer, or in [`Parts`].
#[derive(Clone, Copy)]
pub struct Lent<'a>(LentBytes<'a>);

#[derive(Clone, Copy)]
pub(crate) enum LentBytes<'a> {
    Whole(&'a [u8]),
    /// Whole, and checked by the store that lends it (its checksum verified): ckpt's own
    /// hot tier only.
    Checked(&'a [u8]),
    Parts(&'a dyn Parts),
}

impl<'a> Lent<'a> {
    /// A record in one buffer.
    pub fn whole(bytes: &'a [u8]) -> Lent<'a> {
        Lent(LentBytes::Whole(bytes))
    }

    /// A record in parts.
    pub fn parts(parts: &'a dyn Parts) -> Lent<'a> {
        Lent(LentBytes::Parts(parts))
    }

    /// A record whose checksum the lending store verified.
    pub(crate) fn checked(bytes: &'a [u8]) -> Lent<'a> {
        Lent(LentBytes::Checked(bytes))
    }

    pub(crate) fn bytes(&self) -> LentBytes<'a> {
        self.0
    }

    /// The record's length in bytes.
    pub fn len(&self) -> u64 {
        match self.0 {
            LentBytes::Whole(b) | LentBytes::Checked(b) => b.len() as u64,
            LentBytes::Parts(p) => p.len(),
        }
    }

    /// Whether the record is empty (a sound record never is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record, if it is in one buffer.
    pub fn as_whole(&self) -> Option<&'a [u8]> {
        match self.0 {
            LentBytes::Whole(b) | LentBytes::Checked(b) => Some(b),
            LentBytes::Parts(_) => None,
        }
    }

    /// The record in one buffer, its parts joined.
    ///
    /// # Errors
    /// When a part cannot be read.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        match self.0 {
            LentBytes::Whole(b) | LentBytes::Checked(b) => Ok(b.to_vec()),
            LentBytes::Parts(p) => {
                // The length is the lender's claim (a damaged manifest could claim terabytes):
                // reserve at most 64 MiB up front, and let the parts read grow the rest.
                let claim = usize::try_from(p.len()).unwrap_or(usize::MAX);
                let mut out = Vec::with_capacity(claim.min(64 << 20));
                for i in 0..p.count() {
                    out.extend_from_slice(&p.part(i)?);
                }
                Ok(out)
            }
        }
    }
}

impl std::fmt::Debug for Lent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.0 {
            LentBytes::Whole(_) | LentBytes::Checked(_) => "whole",
            LentBytes::Parts(_) => "parts",
        };
        f.debug_struct("Lent")
            .field("len", &self.len())
            .field("as", &how)
            .finish()
    }
}

/// A record stored in parts, lent for reading (see [`Lent::parts`]): parts `0..count()`, none
/// empty, whose bytes in order are the record.
///
/// ckpt reads them in order, once: it feeds each part to the record's checksum as it decodes the
/// value from it, holding one part at a time, and drops the value unless the checksum matches.
pub trait Parts {
    /// The record's length: the sum of the parts' lengths.
    fn len(&self) -> u64;

    /// Whether the record is empty (a sound record never is).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many parts there are.
    fn count(&self) -> u32;

    /// Part `index`, in `0..count()`.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) when the part is missing or damaged (the record is then treated
    /// as damaged: a miss, and removed); any other error is a failed read, reported as such.
    fn part(&self, index: u32) -> Result<Part<'_>, Error>;
}

/// The bytes of one part of a record (see [`Parts`]), borrowed or held.
pub struct Part<'a>(PartBytes<'a>);

enum PartBytes<'a> {
    Borrowed(&'a [u8]),
    Held(Box<dyn AsRef<[u8]> + 'a>),
}

impl<'a> Part<'a> {
    /// A part whose bytes `bytes` holds (a buffer, or a guard of the storage engine).
    pub fn new(bytes: impl AsRef<[u8]> + 'a) -> Part<'a> {
        Part(PartBytes::Held(Box::new(bytes)))
    }
}

impl<'a> From<&'a [u8]> for Part<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Part(PartBytes::Borrowed(bytes))
    }
}

impl std::ops::Deref for Part<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            PartBytes::Borrowed(b) => b,
            PartBytes::Held(h) => (**h).as_ref(),
        }
    }
}

impl std::fmt::Debug for Part<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("len", &self.len()).finish()
    }
}
