//! Identifiers: how a call becomes a [`CheckpointId`].

pub(crate) mod canonical;

use canonical::Sink;

use serde::{Serialize, Serializer};
use xxhash_rust::xxh3::Xxh3Default;

use crate::error::{Error, ErrorKind};
use crate::id::{CheckpointId, Function, put_str};

/// The version of the id scheme, the first thing every [`AutoIdentifier`] id hashes. Bumping it
/// changes every id; ARCHITECTURE.md describes each version byte by byte.
pub const ID_SCHEME: u8 = 1;

const AUTO_TAG: [u8; 8] = *b"ckpt-id\x01";
const NAME_TAG: [u8; 8] = *b"ckpt-fn\x01";

/// One call to identify: the function and its arguments (or the projection of them that a
/// [`KeyFn`] or a macro `key = ...` chose).
#[derive(Debug)]
pub struct Call<'a, A: ?Sized> {
    function: &'a Function,
    args: &'a A,
}

impl<'a, A: ?Sized> Call<'a, A> {
    /// A call of `function` with `args`.
    pub fn new(function: &'a Function, args: &'a A) -> Self {
        Call { function, args }
    }

    /// The function being called.
    pub fn function(&self) -> &'a Function {
        self.function
    }

    /// The arguments.
    pub fn args(&self) -> &'a A {
        self.args
    }
}

/// Turns a call into a [`CheckpointId`]: Python `checkpointing`'s `FuncCallIdentifierBase.identify`.
///
/// The contract every identifier must keep (ckpt's property tests check it for the built-ins):
/// * **deterministic**: the same function and equal arguments give the same id, in every process
///   and on every machine, so ids must not depend on addresses, `HashMap` iteration order, the
///   time, or anything else outside the call;
/// * **discriminating**: calls whose results may differ must get different ids, or one call's
///   result is handed back for the other.
///
/// Built-ins: [`AutoIdentifier`] (the default), [`FnNameIdentifier`] and [`KeyFn`]. Any closure
/// `Fn(&Call<A>) -> Result<CheckpointId, Error>` is an identifier too:
///
/// ```
/// use ckpt::{Call, CheckpointId, Function, Identifier};
/// // Identify by the first argument only, case-insensitively.
/// let by_word = |call: &Call<'_, (String, u32)>| -> Result<CheckpointId, ckpt::Error> {
///     Ok(CheckpointId::hash_bytes(call.args().0.to_lowercase().as_bytes()))
/// };
/// let f = Function::new(module_path!(), "count");
/// let a = by_word.identify(&Call::new(&f, &("Rust".to_string(), 1)))?;
/// let b = by_word.identify(&Call::new(&f, &("rust".to_string(), 2)))?;
/// assert_eq!(a, b);
/// # Ok::<(), ckpt::Error>(())
/// ```
pub trait Identifier<A: ?Sized>: Send + Sync {
    /// The id of `call`.
    ///
    /// # Errors
    /// When the arguments cannot be identified, for example when their `Serialize`
    /// implementation fails. The decorator's [`OnError`](crate::OnError) policy decides what
    /// happens then.
    fn identify(&self, call: &Call<'_, A>) -> Result<CheckpointId, Error>;
}

impl<A: ?Sized, F> Identifier<A> for F
where
    F: Fn(&Call<'_, A>) -> Result<CheckpointId, Error> + Send + Sync,
{
    fn identify(&self, call: &Call<'_, A>) -> Result<CheckpointId, Error> {
        self(call)
    }
}

/// The default identifier: xxh3-128 over the function's identity and its arguments, streamed
/// through serde straight into the hasher.
///
/// Canonical: equal arguments give equal ids whatever their in-memory layout; a `HashMap` or
/// `HashSet` gives the same id whatever its iteration order; `&str` and `String`, `&T` and `T`,
/// `Box<T>` and `T` are the same argument. Floats are identified by their bits (so `0.0` and
/// `-0.0` differ), except that every NaN is one argument. The byte-exact scheme is in
/// ARCHITECTURE.md.
///
/// ```
/// use ckpt::{AutoIdentifier, Call, Function, Identifier};
/// use std::collections::HashMap;
/// let f = Function::new("app", "score");
/// let a: HashMap<&str, u32> = [("x", 1), ("y", 2)].into();
/// let b: HashMap<&str, u32> = [("y", 2), ("x", 1)].into();
/// assert_eq!(
///     AutoIdentifier.identify(&Call::new(&f, &a))?,
///     AutoIdentifier.identify(&Call::new(&f, &b))?,
/// );
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AutoIdentifier;

impl AutoIdentifier {
    /// The id of `function` called with `args`; the same as [`Identifier::identify`].
    ///
    /// # Errors
    /// With [`ErrorKind::Identify`] when an argument's `Serialize` implementation fails.
    #[inline]
    pub fn id_of<A: Serialize + ?Sized>(
        &self,
        function: &Function,
        args: &A,
    ) -> Result<CheckpointId, Error> {
        let mut h = canonical::Hasher128::new();
        h.put(&AUTO_TAG);
        h.put(&function.digest().to_le_bytes());
        canonical::encode(&mut h, args).map_err(|e| {
            Error::with_source(
                ErrorKind::Identify,
                format!("cannot identify a call of {}", function.path()),
                e,
            )
        })?;
        Ok(CheckpointId::from_u128(h.digest128()))
    }
}

impl<A: Serialize + ?Sized> Identifier<A> for AutoIdentifier {
    #[inline]
    fn identify(&self, call: &Call<'_, A>) -> Result<CheckpointId, Error> {
        self.id_of(call.function, call.args)
    }
}

/// Identifies a call by its function alone: module path and name, ignoring arguments, code and
/// version. The function reruns only when it is renamed or moved (Python `checkpointing`'s
/// `FuncNameIdentifier`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FnNameIdentifier;

impl<A: ?Sized> Identifier<A> for FnNameIdentifier {
    fn identify(&self, call: &Call<'_, A>) -> Result<CheckpointId, Error> {
        let mut h = Xxh3Default::new();
        h.update(&NAME_TAG);
        put_str(&mut h, call.function.module());
        put_str(&mut h, call.function.name());
        Ok(CheckpointId::from_u128(h.digest128()))
    }
}

/// Identifies a call by a projection of its arguments (mops' `keyfunc` / `nil_args`): the id is
/// [`AutoIdentifier`]'s id of whatever the key function returns, so an argument such as a
/// database connection stays out of the id while the function still receives it.
///
/// ```
/// use ckpt::{AutoIdentifier, Call, Function, Identifier, KeyFn};
/// struct Conn; // not Serialize, not part of the result
/// let key = KeyFn::new(|args: &(Conn, String, u32)| (args.1.clone(), args.2));
/// let f = Function::new("app", "query");
/// let a = key.identify(&Call::new(&f, &(Conn, "users".to_string(), 3)))?;
/// let b = AutoIdentifier.id_of(&f, &("users", 3u32))?;
/// assert_eq!(a, b);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeyFn<F>(F);

impl<F> KeyFn<F> {
    /// An identifier that hashes `key(args)` instead of the arguments.
    pub fn new(key: F) -> Self {
        KeyFn(key)
    }
}

impl<A: ?Sized, K: Serialize, F> Identifier<A> for KeyFn<F>
where
    F: Fn(&A) -> K + Send + Sync,
{
    fn identify(&self, call: &Call<'_, A>) -> Result<CheckpointId, Error> {
        AutoIdentifier.id_of(call.function, &(self.0)(call.args))
    }
}

/// Marks a collection as a set for [`AutoIdentifier`]: its id ignores the order of elements.
///
/// Only std's and hashbrown's sets and maps (`HashSet`, `BTreeSet`, `HashMap`, `BTreeMap`) are
/// unordered without being asked: any other collection, whatever its name (`IndexSet`, a
/// user's `ChangeSet`), keeps its order, so that two orders that may give two results never
/// share an id. Wrap a collection whose order truly does not matter in `Unordered` to say so.
/// For every other serializer it is transparent.
///
/// ```
/// use ckpt::{AutoIdentifier, Function, Unordered};
/// let f = Function::new("app", "f");
/// let a = AutoIdentifier.id_of(&f, &Unordered(vec![1, 2, 3]))?;
/// let b = AutoIdentifier.id_of(&f, &Unordered(vec![3, 1, 2]))?;
/// assert_eq!(a, b);
/// # Ok::<(), ckpt::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Unordered<T>(pub T);

impl<T: Serialize> Serialize for Unordered<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(canonical::UNORDERED_MARKER, &self.0)
    }
}

/// The canonical bytes [`AutoIdentifier`] hashes for `value` (after the tag and function
/// digest). For inspecting the scheme and for tests; ids never need it.
///
/// # Errors
/// When `value`'s `Serialize` implementation fails.
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    canonical::encode(&mut out, value)
        .map_err(|e| Error::with_source(ErrorKind::Identify, "cannot encode value", e))?;
    Ok(out)
}
