//! Checkpoint ids and function identities.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::error::{Error, ErrorKind};

/// The 128-bit id of one checkpointed call.
///
/// Ids are portable: the same call gives the same id in every process, on every machine and on
/// every version of ckpt until the scheme is deliberately changed (see `ARCHITECTURE.md`). It
/// prints as 32 lowercase hex digits and parses back from them.
///
/// ```
/// let id = ckpt::CheckpointId::from_bytes([0xab; 16]);
/// let text = id.to_string();
/// assert_eq!(text, "abababababababababababababababab");
/// assert_eq!(text.parse::<ckpt::CheckpointId>()?, id);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckpointId([u8; 16]);

impl CheckpointId {
    /// The id with these bytes (as stored in the file: the hash's little-endian bytes).
    pub const fn from_bytes(bytes: [u8; 16]) -> CheckpointId {
        CheckpointId(bytes)
    }

    /// The id's 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id whose bytes are the little-endian encoding of `hash`.
    pub const fn from_u128(hash: u128) -> CheckpointId {
        CheckpointId(hash.to_le_bytes())
    }

    /// An id derived from arbitrary bytes (xxh3-128 of `data`), for custom identifiers.
    pub fn hash_bytes(data: &[u8]) -> CheckpointId {
        CheckpointId::from_u128(xxhash_rust::xxh3::xxh3_128(data))
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointId({self})")
    }
}

impl FromStr for CheckpointId {
    type Err = Error;

    fn from_str(s: &str) -> Result<CheckpointId, Error> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid checkpoint id {s:?}: expected 32 hex digits"),
            )
        };
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            out[i] = hi << 4 | lo;
        }
        Ok(CheckpointId(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The identity of a checkpointed function: module path, name, a hash of its code, and a
/// version pinned by hand.
///
/// [`checkpoint!`](crate::checkpoint) builds one for you. By hand, [`Function::new`] takes the
/// module path and name; add [`with_version`](Function::with_version) to invalidate old results
/// when the function's logic changes (mops' *function-logic-key*).
///
/// ```
/// use ckpt::Function;
/// let v1 = Function::new(module_path!(), "embed");
/// let v2 = Function::new(module_path!(), "embed").with_version("2");
/// assert_eq!(v1.key(), v2.key()); // the same function...
/// assert_ne!(v1.digest(), v2.digest()); // ...in another version, so other ids
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Function {
    module: Cow<'static, str>,
    name: Cow<'static, str>,
    code_hash: Option<u64>,
    version: Option<Cow<'static, str>>,
    key: u64,
    digest: u128,
}

// Domain tags of the function hashes; see ARCHITECTURE.md, "The id scheme".
const FN_KEY_TAG: &[u8; 8] = b"ckpt-fk\x01";
const FN_DIGEST_TAG: &[u8; 8] = b"ckpt-fd\x01";

impl Function {
    /// A function identified by its module path and name, with no code hash and no version.
    pub fn new(module: impl Into<Cow<'static, str>>, name: impl Into<Cow<'static, str>>) -> Self {
        let mut f = Function {
            module: module.into(),
            name: name.into(),
            code_hash: None,
            version: None,
            key: 0,
            digest: 0,
        };
        f.rehash();
        f
    }

    /// The same function with its code hash set (see [`code_hash`](crate::code_hash)).
    pub fn with_code_hash(mut self, code_hash: u64) -> Self {
        self.code_hash = Some(code_hash);
        self.rehash();
        self
    }

    /// The same function with a version: bump it to invalidate every stored result.
    pub fn with_version(mut self, version: impl Into<Cow<'static, str>>) -> Self {
        self.version = Some(version.into());
        self.rehash();
        self
    }

    fn rehash(&mut self) {
        let mut key = Xxh3Default::new();
        key.update(FN_KEY_TAG);
        put_str(&mut key, &self.module);
        put_str(&mut key, &self.name);
        self.key = key.digest();

        let mut digest = Xxh3Default::new();
        digest.update(FN_DIGEST_TAG);
        put_str(&mut digest, &self.module);
        put_str(&mut digest, &self.name);
        match self.code_hash {
            None => digest.update(&[0]),
            Some(h) => {
                digest.update(&[1]);
                digest.update(&h.to_le_bytes());
            }
        }
        match &self.version {
            None => digest.update(&[0]),
            Some(v) => {
                digest.update(&[1]);
                put_str(&mut digest, v);
            }
        }
        self.digest = digest.digest128();
    }

    /// The module path given at construction.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `module::name`.
    pub fn path(&self) -> String {
        if self.module.is_empty() {
            self.name.to_string()
        } else {
            format!("{}::{}", self.module, self.name)
        }
    }

    /// The hash of the function's code, if known.
    pub fn code_hash(&self) -> Option<u64> {
        self.code_hash
    }

    /// The version pinned by hand, if any.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The function's key: a 64-bit hash of module path and name, the same across code versions.
    /// Stores group entries and statistics by it.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The 128-bit digest of the whole identity (module, name, code hash, version). Every id
    /// [`AutoIdentifier`](crate::AutoIdentifier) gives starts from it; when it changes, so do the
    /// ids.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// The 64-bit code version recorded with each entry: the low half of [`digest`](Self::digest).
    /// Entries whose code version differs from the function's newest are *stale*.
    pub fn code_version(&self) -> u64 {
        self.digest as u64
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("module", &self.module)
            .field("name", &self.name)
            .field("code_hash", &self.code_hash.map(|h| format!("{h:016x}")))
            .field("version", &self.version)
            .finish()
    }
}

/// A length-prefixed string: its length as u64 little-endian, then its UTF-8 bytes.
pub(crate) fn put_str(h: &mut Xxh3Default, s: &str) {
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// The code hash of a function's source text, as [`checkpoint!`](crate::checkpoint) computes it.
///
/// The text is normalised first, so that only a change of tokens changes the hash: outside
/// string and character literals, whitespace is dropped except for a single space between two
/// word characters (letters, digits, `_`), which keeps `let x` apart from `letx`. Comments never
/// reach this function: `checkpoint!` hashes the tokens rustc hands it, and rustc has already
/// dropped them. The result is xxh3-64 of the normalised bytes.
///
/// ```
/// assert_eq!(
///     ckpt::code_hash("{ let  y = x *  2 ;\n y }"),
///     ckpt::code_hash("{let y=x*2;y}"),
/// );
/// assert_ne!(ckpt::code_hash("{ x * 2 }"), ckpt::code_hash("{ x * 3 }"));
/// assert_ne!(ckpt::code_hash(r#"{ "a b" }"#), ckpt::code_hash(r#"{ "ab" }"#));
/// ```
pub fn code_hash(source: &str) -> u64 {
    xxh3_64(normalize_code(source).as_bytes())
}

/// Domain tag of a code hash with dependencies folded in; see ARCHITECTURE.md, "The id scheme".
const DEPENDS_TAG: &[u8; 8] = b"ckpt-dp\x01";

/// A function's code hash with the code versions of the checkpointed functions it depends on
/// (`checkpoint!`'s `depends = [..]`) folded in, in the order given: editing one of them changes
/// this function's code version too. Only called with at least one dependency, so a function
/// without any keeps its plain code hash (and its ids).
pub(crate) fn fold_depends(code_hash: u64, versions: &[u64]) -> u64 {
    let mut h = Xxh3Default::new();
    h.update(DEPENDS_TAG);
    h.update(&code_hash.to_le_bytes());
    h.update(&(versions.len() as u64).to_le_bytes());
    for v in versions {
        h.update(&v.to_le_bytes());
    }
    h.digest()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

pub(crate) fn normalize_code(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let mut pending_space = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            pending_space = true;
            i += 1;
            continue;
        }
        if pending_space {
            if out.chars().next_back().is_some_and(is_word) && is_word(c) {
                out.push(' ');
            }
            pending_space = false;
        }
        let start = i;
        i = skip_literal(&chars, i);
        if i > start {
            out.extend(&chars[start..i]);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a string, raw string or character literal starts at `i`, the index just past it; else `i`.
fn skip_literal(chars: &[char], i: usize) -> usize {
    let at = |k: usize| chars.get(k).copied();
    // Byte and C string prefixes: b"..", br#".."#, c"..", cr".."; the prefix must not continue
    // an identifier (as in `ab"..."`, which is not valid Rust anyway).
    let prev_word = i > 0 && is_word(chars[i - 1]);
    let mut j = i;
    if !prev_word && matches!(at(j), Some('b' | 'c')) && matches!(at(j + 1), Some('"' | 'r' | '\''))
    {
        j += 1;
    }
    if !prev_word && at(j) == Some('r') && matches!(at(j + 1), Some('"' | '#')) {
        // Raw string: r#*" ... "#*
        let mut k = j + 1;
        let mut hashes = 0;
        while at(k) == Some('#') {
            hashes += 1;
            k += 1;
        }
        if at(k) != Some('"') {
            return i;
        }
        k += 1;
        while k < chars.len() {
            if chars[k] == '"' && (1..=hashes).all(|h| at(k + h) == Some('#')) {
                return k + 1 + hashes;
            }
            k += 1;
        }
        return chars.len();
    }
    match at(j) {
        Some('"') if j == i || !prev_word => {
            let mut k = j + 1;
            while k < chars.len() {
                match chars[k] {
                    '\\' => k += 2,
                    '"' => return k + 1,
                    _ => k += 1,
                }
            }
            chars.len()
        }
        Some('\'') => {
            // A character literal ('a', '\n', ' '), not a lifetime ('a).
            if at(j + 1) == Some('\\') {
                // Past the escaped character, which may itself be a quote: '\''.
                let mut k = j + 3;
                while k < chars.len() && chars[k] != '\'' {
                    k += 1;
                }
                (k + 1).min(chars.len())
            } else if at(j + 2) == Some('\'') {
                j + 3
            } else {
                i
            }
        }
        _ => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_whitespace_between_punctuation_only() {
        assert_eq!(normalize_code("let  x = a + b ;"), "let x=a+b;");
        assert_eq!(normalize_code("a as  u64"), "a as u64");
        assert_eq!(normalize_code("{\n    x\n}"), "{x}");
    }

    #[test]
    fn keeps_literals_verbatim() {
        assert_eq!(normalize_code(r#"f( "a  b" )"#), r#"f("a  b")"#);
        assert_eq!(normalize_code(r#"f( "a \" b" , 1)"#), r#"f("a \" b",1)"#);
        assert_eq!(normalize_code("c == ' '"), "c==' '");
        assert_eq!(normalize_code(r##"r#" x "# "##), r##"r#" x "#"##);
        assert_eq!(normalize_code(r#"b" x ""#), r#"b" x ""#);
        assert_eq!(
            normalize_code("fn f<'a>(x: &'a str)"),
            "fn f<'a>(x:&'a str)"
        );
        assert_eq!(normalize_code(r"'\n' + 1"), r"'\n'+1");
        assert_eq!(normalize_code(r"['\'',' ']"), r"['\'',' ']");
    }

    #[test]
    fn id_text_round_trip_and_errors() {
        let id = CheckpointId::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(id.to_string().parse::<CheckpointId>().unwrap(), id);
        for bad in ["", "xyz", &"g".repeat(32), &"0".repeat(31), &"0".repeat(33)] {
            let err = bad.parse::<CheckpointId>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn function_key_ignores_version_digest_does_not() {
        let a = Function::new("m", "f");
        let b = Function::new("m", "f").with_code_hash(7);
        let c = Function::new("m", "f").with_version("2");
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), c.key());
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_ne!(b.digest(), c.digest());
        // Length prefixes keep ("ab", "c") apart from ("a", "bc").
        assert_ne!(
            Function::new("ab", "c").key(),
            Function::new("a", "bc").key()
        );
    }
}
