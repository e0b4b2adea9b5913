//! The [`checkpoint!`] macro, and the hidden items its expansion calls.

/// Checkpoints a function: the first call computes and stores, later identical calls (in this
/// process or any later one) return the stored result without running the body.
///
/// ```
/// ckpt::checkpoint! {
///     /// Doc comments and attributes pass through.
///     pub fn embed(text: &str, dims: usize) -> Vec<f32> {
///         text.bytes().cycle().take(dims).map(|b| b as f32 / 255.0).collect()
///     }
/// }
///
/// fn main() -> Result<(), ckpt::Error> {
/// #   let dir = std::env::temp_dir().join(format!("ckpt-doc-macro-{}", std::process::id()));
/// #   let _ = std::fs::remove_dir_all(&dir);
/// #   unsafe { std::env::set_var("CKPT_DIR", &dir) };
///     let first = embed("hello", 4); // computed, saved to .ckpt/checkpoints.redb
///     let again = embed("hello", 4); // read back
///     assert_eq!(first, again);
///     assert_eq!((embed::stats().misses, embed::stats().hits), (1, 1));
///
///     embed::rerun("hello", 4); // forced: runs and overwrites
///     let id = embed::id("hello", 4)?; // the call's CheckpointId
/// #   let _ = id; let _ = std::fs::remove_dir_all(&dir);
///     Ok(())
/// }
/// ```
///
/// # What it records
///
/// The function's identity is its module path, its name and a hash of its tokens (signature and
/// body, see [`code_hash`](crate::code_hash)): editing the body invalidates its old results,
/// while comments and formatting do not. Arguments are identified by [`AutoIdentifier`].
///
/// Beside the function, the macro defines a module of the same name with:
/// * `name::rerun(args...)`: run and overwrite (Python `checkpointing`'s `f.rerun`);
/// * `name::id(args...) -> Result<CheckpointId, Error>`: the id of a call;
/// * `name::stats() -> CallStats`: this process's counts;
/// * `name::decorator()`: the [`DecoratorCheckpoint`] behind it.
///
/// # Options
///
/// An optional attribute `#[checkpoint(...)]`, before or after the doc comments, takes, in any
/// order, comma-separated:
/// * `version = "2"`: pin the version by hand (mops' function-logic-key); bump it to invalidate;
/// * `depends = [helper, module::other]`: other `checkpoint!` functions this one calls; their
///   code versions fold into this one's, so editing a helper invalidates this function's results
///   too (no cycles: a function's code version is read when its decorator is first built);
/// * `cache = expr`: any [`Cache`](crate::Cache) (a [`Store`](crate::Store), a
///   [`MemoryCache`](crate::MemoryCache), your own) instead of the default store; evaluated once;
/// * `identifier = expr`: an [`Identifier`](crate::Identifier) instead of [`AutoIdentifier`];
///   evaluated on each call, so keep it cheap (a unit struct, a closure, a reference to a static);
/// * `key = expr`: identify the call by `expr` instead of all arguments (mops' `keyfunc` /
///   `nil_args`). The arguments are in scope *by reference*, so `key = (table, limit)` leaves a
///   `conn` argument out of the id while the body still gets it;
/// * `on_error = raise | warn | ignore` (default `warn`, see [`OnError`]). With `raise` the
///   function must return `Result<T, E>` with `E: From<ckpt::Error>` (`std::io::Error` and
///   `Box<dyn Error + Send + Sync>` qualify), and checkpoint failures come back as `Err`;
/// * `results = ok_only | all`: for a function returning `Result`, store only `Ok` values (the
///   default) or `Err` values too;
/// * `max_age = "7d"`: a stored result older than this (`ms`, `s`, `m`, `h` or `d`; checked at
///   compile time) is not returned as fresh, whatever the store's own limits (see
///   [`DecoratorCheckpoint::with_max_age`]);
/// * `refresh = wait | stale | stale(spawn)`: what a call does with an expired result (see
///   [`Refresh`]): recompute it and wait (the default), or return it at once and recompute it
///   in the background (stale while revalidate): on a thread for a `fn`, as a task given to
///   `spawn` for an `async fn` (below). With `stale` the arguments must be owned and `Send`, as
///   they move to that thread or task; `name::decorator().wait_refreshes()` (or
///   `wait_refreshes_async().await`) waits for refreshes in flight;
/// * `compress = zstd | zstd(level) | none` (feature `zstd`): store this function's results
///   compressed with zstd (level 3, or `level`) when that makes them smaller, or plain whatever
///   the store's default ([`StoreBuilder::compression`](crate::StoreBuilder::compression));
///   without the option, the store's default applies. Hits read either kind.
///
/// ```
/// ckpt::checkpoint! {
///     #[checkpoint(cache = ckpt::MemoryCache::new(), max_age = "1h", refresh = stale)]
///     fn exchange_rate(currency: String) -> f64 {
///         if currency == "EUR" { 1.08 } else { 1.0 } // stands for a call to a slow service
///     }
/// }
///
/// fn main() {
///     assert_eq!(exchange_rate("EUR".into()), 1.08);
///     // For the next hour, a hit; after it, the last rate at once while a fresh one is fetched.
///     assert_eq!(exchange_rate("EUR".into()), 1.08);
///     assert_eq!(exchange_rate::stats().hits, 1);
/// }
/// ```
///
/// A malformed age fails the build:
///
/// ```compile_fail
/// ckpt::checkpoint! {
///     #[checkpoint(max_age = "7 days")]
///     fn f() -> u32 { 1 }
/// }
/// # fn main() { f(); }
/// ```
///
/// ```
/// use ckpt::MemoryCache;
///
/// pub struct Conn; // not serializable, not part of the result
///
/// ckpt::checkpoint! {
///     #[checkpoint(cache = MemoryCache::new(), key = (table, limit), version = "2", on_error = raise)]
///     fn query(conn: &Conn, table: &str, limit: usize) -> std::io::Result<Vec<String>> {
///         let _ = conn;
///         Ok((0..limit).map(|i| format!("{table}:{i}")).collect())
///     }
/// }
///
/// fn main() -> std::io::Result<()> {
///     assert_eq!(query(&Conn, "users", 2)?, ["users:0", "users:1"]);
///     assert_eq!(query(&Conn, "users", 2)?.len(), 2);
///     assert_eq!(query::stats().hits, 1);
///     Ok(())
/// }
/// ```
///
/// # Async functions
///
/// An `async fn` takes every option; `name::rerun(..)` is `async` too.
/// Concurrent calls of one id compute once, and the others wait as tasks, holding no thread;
/// the result's durable save is awaited, not blocked on (see
/// [`DecoratorCheckpoint::call_async`]). The arguments move into the computation, as for a sync
/// function; borrowed arguments (`&str`) are fine, the returned future borrows them.
///
/// ```
/// ckpt::checkpoint! {
///     #[checkpoint(cache = ckpt::MemoryCache::new(), on_error = raise)]
///     async fn fetch_user(id: u64) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
///         Ok(format!("user {id}")) // an HTTP request, awaited, in real life
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// futures_executor::block_on(async {
///     assert_eq!(fetch_user(7).await?, "user 7"); // computed
///     assert_eq!(fetch_user(7).await?, "user 7"); // read back
///     assert_eq!(fetch_user::rerun(7).await?, "user 7"); // run again, overwritten
///     assert_eq!(fetch_user::stats().hits, 1);
///     Ok(())
/// })
/// # }
/// ```
///
/// Stale while revalidate on an `async fn` names what runs the refresh task:
/// `refresh = stale(tokio::spawn)` inside a tokio runtime (the refresh can use its timers and
/// sockets), `stale(|task| smol::spawn(task).detach())`, or `stale(ckpt::run_on_thread)` for a
/// future that needs no runtime (a thread of its own). See
/// [`DecoratorCheckpoint::call_async_or_stale`].
///
/// ```
/// use std::sync::LazyLock;
/// use std::time::{Duration, SystemTime};
/// use ckpt::store::ManualClock;
///
/// static CLOCK: LazyLock<ManualClock> = LazyLock::new(|| ManualClock::new(SystemTime::now()));
/// static STORE: LazyLock<ckpt::Store> = LazyLock::new(|| {
///     let dir = std::env::temp_dir().join(format!("ckpt-doc-macro-stale-{}", std::process::id()));
///     let _ = std::fs::remove_dir_all(&dir);
///     ckpt::Store::builder().clock(CLOCK.clone()).open(dir.join("c.redb")).unwrap()
/// });
///
/// ckpt::checkpoint! {
///     #[checkpoint(cache = STORE.clone(), max_age = "1h", refresh = stale(ckpt::run_on_thread))]
///     async fn rate(currency: String) -> f64 {
///         if currency == "EUR" { 1.08 } else { 1.0 } // an HTTP request, awaited, in real life
///     }
/// }
///
/// fn main() {
///     futures_executor::block_on(async {
///         assert_eq!(rate("EUR".into()).await, 1.08); // computed
///         CLOCK.advance(Duration::from_secs(2 * 3600));
///         assert_eq!(rate("EUR".into()).await, 1.08); // expired: served at once, refreshed meanwhile
///         rate::decorator().wait_refreshes_async().await;
///         assert_eq!(rate::stats().hits, 1);
///     });
///     # let _ = std::fs::remove_dir_all(STORE.path().parent().unwrap());
/// }
/// ```
///
/// An `async fn` with `refresh = stale` and nothing to spawn its refresh is refused at compile
/// time, and so is a spawner on a `fn`:
///
/// ```compile_fail
/// ckpt::checkpoint! {
///     #[checkpoint(max_age = "1h", refresh = stale)]
///     async fn rate(currency: String) -> f64 { 1.0 }
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// ckpt::checkpoint! {
///     #[checkpoint(max_age = "1h", refresh = stale(ckpt::run_on_thread))]
///     fn rate(currency: String) -> f64 { 1.0 }
/// }
/// # fn main() {}
/// ```
///
/// # Not supported
///
/// Generic functions, methods (`self` receivers), argument patterns other than plain
/// names (`mut x`, destructuring: bind inside the body instead), and functions defined inside
/// another function's body: invoke the macro at module level, since the generated module reaches
/// the function and its argument types through `super::`. For these, build
/// a [`DecoratorCheckpoint`] by hand and call it from your function: it takes any arguments that
/// implement `Serialize`, with any identifier and cache.
///
/// [`AutoIdentifier`]: crate::AutoIdentifier
/// [`DecoratorCheckpoint`]: crate::DecoratorCheckpoint
/// [`DecoratorCheckpoint::call_async`]: crate::DecoratorCheckpoint::call_async
/// [`DecoratorCheckpoint::call_async_or_stale`]: crate::DecoratorCheckpoint::call_async_or_stale
/// [`DecoratorCheckpoint::with_max_age`]: crate::DecoratorCheckpoint::with_max_age
/// [`OnError`]: crate::OnError
/// [`Refresh`]: crate::Refresh
#[macro_export]
macro_rules! checkpoint {
    (#[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($opt)*] [() () () () (warn) (ok_only) () () (wait) ()] $($item)* }
    };
    // Attributes (doc comments) before `#[checkpoint(...)]`: moved after it, the same tokens as
    // if written there. Taken up to eight at a time, so that a long doc comment (a line is an
    // attribute) stays far from the compiler's recursion limit.
    (@before [$($seen:tt)*] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] #[$c] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[$d:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] #[$c] #[$d] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[$d:meta] #[$e:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] #[$c] #[$d] #[$e] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[$d:meta] #[$e:meta] #[$f:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] #[$c] #[$d] #[$e] #[$f] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[$d:meta] #[$e:meta] #[$f:meta] #[$g:meta] #[checkpoint($($opt:tt)*)] $($item:tt)*) => {
        $crate::checkpoint! { #[checkpoint($($opt)*)] $($seen)* #[$a] #[$b] #[$c] #[$d] #[$e] #[$f] #[$g] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] #[$b:meta] #[$c:meta] #[$d:meta] #[$e:meta] #[$f:meta] #[$g:meta] #[$h:meta] $($item:tt)*) => {
        $crate::checkpoint! { @before [$($seen)* #[$a] #[$b] #[$c] #[$d] #[$e] #[$f] #[$g] #[$h]] $($item)* }
    };
    (@before [$($seen:tt)*] #[$a:meta] $($item:tt)*) => {
        $crate::checkpoint! { @before [$($seen)* #[$a]] $($item)* }
    };
    (@before [$($seen:tt)*] $($item:tt)*) => {
        $crate::__checkpoint_fn! { [() () () () (warn) (ok_only) () () (wait) ()] $($seen)* $($item)* }
    };
    ($($item:tt)*) => {
        $crate::checkpoint! { @before [] $($item)* }
    };
}

/// Parses `#[checkpoint(...)]` options into `[version cache identifier key on_error results
/// depends max_age refresh compress]`.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_options {
    ([] $cfg:tt $($item:tt)*) => {
        $crate::__checkpoint_fn! { $cfg $($item)* }
    };
    ([version = $v:expr $(, $($rest:tt)*)?] [$_v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [($v) $c $i $k $o $r $d $m $f $z] $($item)* }
    };
    ([cache = $c:expr $(, $($rest:tt)*)?] [$v:tt $_c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v ($c) $i $k $o $r $d $m $f $z] $($item)* }
    };
    ([identifier = $i:expr $(, $($rest:tt)*)?] [$v:tt $c:tt $_i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c ($i) $k $o $r $d $m $f $z] $($item)* }
    };
    ([key = $k:expr $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $_k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i ($k) $o $r $d $m $f $z] $($item)* }
    };
    ([on_error = raise $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $_o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k (raise) $r $d $m $f $z] $($item)* }
    };
    ([on_error = warn $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $_o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k (warn) $r $d $m $f $z] $($item)* }
    };
    ([on_error = ignore $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $_o:tt $r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k (ignore) $r $d $m $f $z] $($item)* }
    };
    ([results = ok_only $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $_r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o (ok_only) $d $m $f $z] $($item)* }
    };
    ([results = all $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $_r:tt $d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o (all) $d $m $f $z] $($item)* }
    };
    ([depends = [$($($dep:ident)::+),* $(,)?] $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $_d:tt $m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r ($($($dep)::+ ::code_version),*) $m $f $z] $($item)* }
    };
    ([max_age = $m:literal $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $_m:tt $f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d ($m) $f $z] $($item)* }
    };
    ([refresh = stale($spawn:expr) $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $_f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m (stale $spawn) $z] $($item)* }
    };
    ([refresh = stale $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $_f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m (stale) $z] $($item)* }
    };
    ([refresh = wait $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $_f:tt $z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m (wait) $z] $($item)* }
    };
    ([compress = zstd($l:expr) $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $_z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m $f (zstd $l)] $($item)* }
    };
    ([compress = zstd $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $_z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m $f (zstd 3)] $($item)* }
    };
    ([compress = none $(, $($rest:tt)*)?] [$v:tt $c:tt $i:tt $k:tt $o:tt $r:tt $d:tt $m:tt $f:tt $_z:tt] $($item:tt)*) => {
        $crate::__checkpoint_options! { [$($($rest)*)?] [$v $c $i $k $o $r $d $m $f (none)] $($item)* }
    };
    ([$($bad:tt)*] $($_:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown or malformed checkpoint option: `", ::core::stringify!($($bad)*), "`; expected \
             version = \"..\", cache = expr, identifier = expr, key = expr, \
             on_error = raise|warn|ignore, results = ok_only|all, depends = [f, module::g], \
             max_age = \"7d\", refresh = stale|stale(spawn)|wait, or compress = zstd|zstd(level)|none"
        ));
    };
}

/// Generates the function and its companion module.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_fn {
    // No return type: `()`.
    ($cfg:tt $(#[$attr:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) { $($body:tt)* }) => {
        $crate::__checkpoint_fn! { $cfg $(#[$attr])* $vis fn $name($($arg: $ty),*) -> () { $($body)* } }
    };
    ([$version:tt $cache:tt $ident:tt $key:tt $on_error:tt $results:tt $depends:tt $max_age:tt (stale $spawn:expr) $compress:tt]
     $(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        ::core::compile_error!(
            "checkpoint!: refresh = stale(spawn) is for an async fn; a fn's refresh runs on a \
             thread of its own: use refresh = stale"
        );
    };
    ([$version:tt $cache:tt $ident:tt $key:tt ($on_error:ident) ($results:ident) ($($depends:tt)*) $max_age:tt ($refresh:ident) $compress:tt]
     $(#[$attr:meta])* $vis:vis fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty { $($body:tt)* }) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            let __ckpt_mode = $crate::__private::take_mode();
            let __ckpt_decorator = $name::decorator();
            let __ckpt_id = $crate::__checkpoint_identify!(__ckpt_decorator, $ident, $key, ($($arg),*));
            $crate::__checkpoint_run!(
                ($on_error $results $refresh) __ckpt_decorator, __ckpt_id, __ckpt_mode, $ret,
                move || -> $ret { $($body)* }
            )
        }

        #[doc = ::core::concat!("Checkpoint controls of [`", ::core::stringify!($name), "`].")]
        #[allow(dead_code, unused_imports)]
        $vis mod $name {
            use super::*;

            $crate::__checkpoint_controls! {
                [$version $cache $ident $key ($on_error) ($results) ($($depends)*) $max_age ($refresh) $compress]
                $name, ::core::stringify!(($($arg: $ty),*) -> $ret { $($body)* }), ($($arg: $ty),*)
            }

            /// Runs the function whatever is stored, and overwrites the stored result.
            pub fn rerun($($arg: $ty),*) -> $ret {
                $crate::__private::rerun_next();
                super::$name($($arg),*)
            }

        }
    };
    // async fn, no return type: `()`.
    ($cfg:tt $(#[$attr:meta])* $vis:vis async fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) { $($body:tt)* }) => {
        $crate::__checkpoint_fn! { $cfg $(#[$attr])* $vis async fn $name($($arg: $ty),*) -> () { $($body)* } }
    };
    ([$version:tt $cache:tt $ident:tt $key:tt $on_error:tt $results:tt $depends:tt $max_age:tt (stale) $compress:tt]
     $(#[$attr:meta])* $vis:vis async fn $($rest:tt)*) => {
        ::core::compile_error!(
            "checkpoint!: refresh = stale on an async fn needs what runs its refresh task: \
             refresh = stale(tokio::spawn), say, or refresh = stale(ckpt::run_on_thread) for a \
             future that needs no runtime"
        );
    };
    ([$version:tt $cache:tt $ident:tt $key:tt ($on_error:ident) ($results:ident) ($($depends:tt)*) $max_age:tt $refresh:tt $compress:tt]
     $(#[$attr:meta])* $vis:vis async fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty { $($body:tt)* }) => {
        $(#[$attr])*
        $vis async fn $name($($arg: $ty),*) -> $ret {
            // Read at the first poll, where `rerun` sets it just before (see `rerun` below).
            let __ckpt_mode = $crate::__private::take_mode();
            let __ckpt_decorator = $name::decorator();
            let __ckpt_id = $crate::__checkpoint_identify!(__ckpt_decorator, $ident, $key, ($($arg),*));
            $crate::__checkpoint_run_async!(
                ($on_error $results $refresh) __ckpt_decorator, __ckpt_id, __ckpt_mode, $ret,
                move || $crate::__private::returning::<$ret, _>(async move { $($body)* })
            )
        }

        #[doc = ::core::concat!("Checkpoint controls of [`", ::core::stringify!($name), "`].")]
        #[allow(dead_code, unused_imports)]
        $vis mod $name {
            use super::*;

            $crate::__checkpoint_controls! {
                [$version $cache $ident $key ($on_error) ($results) ($($depends)*) $max_age $refresh $compress]
                $name, ::core::stringify!(async ($($arg: $ty),*) -> $ret { $($body)* }), ($($arg: $ty),*)
            }

            /// Runs the function whatever is stored, and overwrites the stored result.
            pub async fn rerun($($arg: $ty),*) -> $ret {
                // The call's first poll happens within this one, on this thread, before
                // anything else can run on it: the mode set here is the one it reads.
                $crate::__private::rerun_next();
                super::$name($($arg),*).await
            }

        }
    };
    ($cfg:tt $($item:tt)*) => {
        ::core::compile_error!(
            "checkpoint! takes one non-generic fn or async fn with plain argument names (`fn f(a: A, b: B) -> R { .. }`); \
             for methods or generics, use ckpt::DecoratorCheckpoint directly"
        );
    };
}

/// The companion module's items shared by `fn` and `async fn`: `decorator`, `code_version`,
/// `stats`, `id` (each arm adds its own `rerun`).
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_controls {
    ([$version:tt $cache:tt $ident:tt $key:tt ($on_error:ident) ($results:ident) ($($depends:tt)*) $max_age:tt $refresh:tt $compress:tt]
     $name:ident, $tokens:expr, ($($arg:ident : $ty:ty),*)) => {
        /// The decorator behind the function.
        pub fn decorator() -> &'static $crate::DecoratorCheckpoint<$crate::AutoIdentifier, $crate::__private::SharedCache> {
            static DECORATOR: ::std::sync::LazyLock<
                $crate::DecoratorCheckpoint<$crate::AutoIdentifier, $crate::__private::SharedCache>,
            > = ::std::sync::LazyLock::new(|| $crate::__checkpoint_compress!($compress, $crate::__checkpoint_refresh!($refresh, {
                $crate::__private::decorator(
                    $crate::__private::function(
                        ::core::module_path!(),
                        ::core::stringify!($name),
                        $tokens,
                        $crate::__checkpoint_option!($version, ::core::option::Option::None, |v| ::core::option::Option::Some(v)),
                        &[$($depends)*],
                    ),
                    $crate::__checkpoint_option!($cache, $crate::__private::default_cache(), $crate::__private::shared_cache),
                    $crate::__checkpoint_on_error!($on_error),
                )
                .with_max_age_option($crate::__checkpoint_max_age!($max_age))
            })));
            &DECORATOR
        }

        /// The code version of this function (see [`Function::code_version`]); what a
        /// `depends = [..]` naming it folds in.
        ///
        /// [`Function::code_version`]: $crate::Function::code_version
        pub fn code_version() -> u64 {
            decorator().function().code_version()
        }

        /// This process's call counts.
        pub fn stats() -> $crate::CallStats {
            decorator().stats()
        }

        /// The id of a call.
        ///
        /// # Errors
        /// When the arguments cannot be identified.
        pub fn id($($arg: $ty),*) -> ::core::result::Result<$crate::CheckpointId, $crate::Error> {
            $crate::__checkpoint_identify!(decorator(), $ident, $key, ($($arg),*))
        }
    };
}

/// `compress = ..`: absent (the cache's default), `none`, or zstd at a level.
#[cfg(feature = "zstd")]
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_compress {
    ((), $d:expr) => {
        $d
    };
    ((none), $d:expr) => {
        $d.with_compression($crate::Compression::None)
    };
    ((zstd $level:expr), $d:expr) => {
        $d.with_compression($crate::Compression::Zstd { level: $level })
    };
}

/// `compress = ..` without the `zstd` feature: only `none`.
#[cfg(not(feature = "zstd"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_compress {
    ((), $d:expr) => {
        $d
    };
    ((none), $d:expr) => {
        $d.with_compression($crate::Compression::None)
    };
    ((zstd $level:expr), $d:expr) => {{
        ::core::compile_error!("`compress = zstd` needs ckpt's `zstd` feature");
        $d
    }};
}

/// `$opt` is `()` (absent) or `(expr)`: expands to `$default` or `$wrap(expr)`.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_option {
    ((), $default:expr, $wrap:expr) => {
        $default
    };
    (($value:expr), $default:expr, $wrap:expr) => {
        ($wrap)($value)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_on_error {
    (raise) => {
        $crate::OnError::Raise
    };
    (warn) => {
        $crate::OnError::Warn
    };
    (ignore) => {
        $crate::OnError::Ignore
    };
}

/// The id of a call: the key (all arguments, or `key = ...` with the arguments borrowed), through
/// the decorator's identifier or `identifier = ...`.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_identify {
    ($decorator:expr, $ident:tt, (), ($($arg:ident),*)) => {
        $crate::__checkpoint_identify_key!($decorator, $ident, ($(&$arg,)*))
    };
    ($decorator:expr, $ident:tt, ($key:expr), ($($arg:ident),*)) => {{
        #[allow(unused_variables)]
        let ($($arg,)*) = ($(&$arg,)*);
        $crate::__checkpoint_identify_key!($decorator, $ident, $key)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_identify_key {
    ($decorator:expr, (), $key:expr) => {
        $decorator.identify(&$key)
    };
    ($decorator:expr, ($ident:expr), $key:expr) => {
        $crate::__private::identify_with(&$ident, $decorator.function(), &$key)
    };
}

/// Runs the call under the chosen error policy and result policy.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_run {
    ((raise ok_only wait) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_ok($d, $id, $mode, $f)
    };
    ((raise all wait) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_all($d, $id, $mode, $f)
    };
    (($tolerant:ident ok_only wait) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{RunAll as _, RunOk as _};
        $crate::__private::tolerated((&$crate::__private::Tag::<$ret>::NEW).run($d, $id, $mode, $f))
    }};
    (($tolerant:ident all wait) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::tolerated($crate::__private::run_all($d, $id, $mode, $f))
    };
    ((raise ok_only stale) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_ok_stale($d, $id, $mode, $f)
    };
    ((raise all stale) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_all_stale($d, $id, $mode, $f)
    };
    (($tolerant:ident ok_only stale) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{RunAllStale as _, RunOkStale as _};
        $crate::__private::tolerated(
            (&$crate::__private::Tag::<$ret>::NEW).run_stale($d, $id, $mode, $f),
        )
    }};
    (($tolerant:ident all stale) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::tolerated($crate::__private::run_all_stale($d, $id, $mode, $f))
    };
}

/// Runs an async call under the chosen error policy and result policy; with
/// `refresh = stale(spawn)`, serving an expired result while a task refreshes it.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_run_async {
    ((raise ok_only (wait)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_ok_async($d, $id, $mode, $f).await
    };
    ((raise all (wait)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_all_async($d, $id, $mode, $f).await
    };
    (($tolerant:ident ok_only (wait)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{KeepAll as _, KeepOk as _};
        let (__ckpt_keep, __ckpt_lift) = (&$crate::__private::Tag::<$ret>::NEW).policy();
        $crate::__private::tolerated(
            $d.execute_async($id, $mode, $f, __ckpt_keep, __ckpt_lift)
                .await,
        )
    }};
    (($tolerant:ident all (wait)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::tolerated($crate::__private::run_all_async($d, $id, $mode, $f).await)
    };
    ((raise ok_only (stale $_s:expr)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_ok_async_stale($d, $id, $mode, $f).await
    };
    ((raise all (stale $_s:expr)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::raise_all_async_stale($d, $id, $mode, $f).await
    };
    (($tolerant:ident ok_only (stale $_s:expr)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{KeepAll as _, KeepOk as _};
        let (__ckpt_keep, __ckpt_lift) = (&$crate::__private::Tag::<$ret>::NEW).policy();
        $crate::__private::tolerated(
            $d.execute_async_or_stale($id, $mode, $f, __ckpt_keep, __ckpt_lift)
                .await,
        )
    }};
    (($tolerant:ident all (stale $_s:expr)) $d:expr, $id:expr, $mode:expr, $ret:ty, $f:expr) => {
        $crate::__private::tolerated(
            $d.execute_async_or_stale($id, $mode, $f, |r| ::core::option::Option::Some(r), |v| v)
                .await,
        )
    };
}

/// `max_age = "7d"`: checked and converted at compile time.
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_max_age {
    (()) => {
        ::core::option::Option::None
    };
    (($age:literal)) => {{
        const AGE: ::core::time::Duration = match $crate::__private::parse_age($age) {
            ::core::option::Option::Some(age) => age,
            ::core::option::Option::None => ::core::panic!(
                "checkpoint option max_age: expected a number and a unit (ms, s, m, h, d), as in \"7d\" or \"90s\""
            ),
        };
        ::core::option::Option::Some(AGE)
    }};
}

/// `refresh = ..`: the decorator `$d` in that mode (and with that spawner).
#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_refresh {
    ((wait), $d:expr) => {
        $d.with_refresh($crate::Refresh::Wait)
    };
    ((stale), $d:expr) => {
        $d.with_refresh($crate::Refresh::Stale)
    };
    ((stale $spawn:expr), $d:expr) => {
        $d.with_refresh($crate::Refresh::Stale).with_spawner($spawn)
    };
}

/// Support for the expansion of [`checkpoint!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::Cell;
    use std::future::Future;
    use std::marker::PhantomData;
    use std::sync::Arc;
    use std::time::Duration;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub use crate::decorator::Mode;
    use crate::{
        AutoIdentifier, Cache, Call, CheckpointId, DecoratorCheckpoint, Error, Function,
        Identifier, OnError,
    };

    /// The cache type of every macro-generated decorator.
    pub type SharedCache = Arc<dyn Cache>;

    pub fn default_cache() -> SharedCache {
        Arc::new(crate::DefaultStore)
    }

    pub fn shared_cache<C: Cache + 'static>(cache: C) -> SharedCache {
        Arc::new(cache)
    }

    /// The function identity; `module` is the generated module's path (ending in `::name`).
    /// `depends` gives the code versions of the checkpointed functions it names (`depends =
    /// [..]`), folded into the code hash; none leaves it as it was.
    pub fn function(
        module: &'static str,
        name: &'static str,
        tokens: &'static str,
        version: Option<&'static str>,
        depends: &[fn() -> u64],
    ) -> Function {
        let suffix_len = name.len() + 2;
        let parent = if module.len() > suffix_len && module.ends_with(name) {
            &module[..module.len() - suffix_len]
        } else {
            module
        };
        let mut code_hash = crate::code_hash(tokens);
        if !depends.is_empty() {
            let versions: Vec<u64> = depends.iter().map(|v| v()).collect();
            code_hash = crate::id::fold_depends(code_hash, &versions);
        }
        let f = Function::new(parent, name).with_code_hash(code_hash);
        match version {
            Some(v) => f.with_version(v),
            None => f,
        }
    }

    pub fn decorator(
        function: Function,
        cache: SharedCache,
        on_error: OnError,
    ) -> DecoratorCheckpoint<AutoIdentifier, SharedCache> {
        DecoratorCheckpoint::new(function, AutoIdentifier, cache).with_on_error(on_error)
    }

    /// `"7d"`, `"12h"`, `"30m"`, `"90s"`, `"500ms"`: a whole number and a unit; `None` for
    /// anything else (and for zero, an age nothing is ever younger than). A `const fn`, so a
    /// malformed `max_age` fails the build.
    pub const fn parse_age(text: &str) -> Option<Duration> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut n: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            n = match n.checked_mul(10) {
                Some(n) => match n.checked_add((bytes[i] - b'0') as u64) {
                    Some(n) => n,
                    None => return None,
                },
                None => return None,
            };
            i += 1;
        }
        if i == 0 || n == 0 {
            return None;
        }
        let unit_secs = match bytes.len() - i {
            1 => match bytes[i] {
                b's' => 1,
                b'm' => 60,
                b'h' => 3600,
                b'd' => 86_400,
                _ => return None,
            },
            2 if bytes[i] == b'm' && bytes[i + 1] == b's' => return Some(Duration::from_millis(n)),
            _ => return None,
        };
        match n.checked_mul(unit_secs) {
            Some(secs) => Some(Duration::from_secs(secs)),
            None => None,
        }
    }

    pub fn identify_with<A: ?Sized, I: Identifier<A>>(
        identifier: &I,
        function: &Function,
        key: &A,
    ) -> Result<CheckpointId, Error> {
        identifier.identify(&Call::new(function, key))
    }

    thread_local!(static MODE: Cell<Mode> = const { Cell::new(Mode::Call) });

    /// The mode of the call about to start on this thread (consumed: nested calls are normal).
    pub fn take_mode() -> Mode {
        MODE.with(|m| m.replace(Mode::Call))
    }

    /// Makes the next checkpointed call on this thread a rerun.
    pub fn rerun_next() {
        MODE.with(|m| m.set(Mode::Rerun));
    }

    /// Under `Warn` and `Ignore` a decorator never returns `Err`.
    pub fn tolerated<R>(result: Result<R, Error>) -> R {
        match result {
            Ok(r) => r,
            // invariant: `fail` returns Err only under OnError::Raise, and the tolerant macro
            // paths build their decorator with Warn or Ignore.
            Err(e) => unreachable!("a tolerant checkpoint returned an error: {e}"),
        }
    }

    type Deco = DecoratorCheckpoint<AutoIdentifier, SharedCache>;

    pub fn run_all<R: Serialize + DeserializeOwned>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> R,
    ) -> Result<R, Error> {
        d.execute(id, mode, f, |r| Some(r), |v| v)
    }

    pub fn raise_ok<T: Serialize + DeserializeOwned, E: From<Error>>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        d.execute(id, mode, f, |r| r.as_ref().ok(), Ok)?
    }

    pub fn raise_all<T, E>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        Result<T, E>: Serialize + DeserializeOwned,
        E: From<Error>,
    {
        d.execute(id, mode, f, |r| Some(r), |v| v)?
    }

    pub fn run_all_stale<R: Serialize + DeserializeOwned + 'static>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Error> {
        d.execute_or_stale(id, mode, f, |r| Some(r), |v| v)
    }

    pub fn raise_ok_stale<T, E>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + 'static,
        E: From<Error> + 'static,
    {
        d.execute_or_stale(id, mode, f, |r| r.as_ref().ok(), Ok)?
    }

    pub fn raise_all_stale<T, E>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        Result<T, E>: Serialize + DeserializeOwned + 'static,
        E: From<Error>,
    {
        d.execute_or_stale(id, mode, f, |r| Some(r), |v| v)?
    }

    /// Pins an async body's output type to the function's return type, so that `?` in the
    /// body knows what to convert into.
    pub fn returning<R, F: Future<Output = R>>(body: F) -> F {
        body
    }

    pub async fn run_all_async<R, Fut>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Fut,
    ) -> Result<R, Error>
    where
        R: Serialize + DeserializeOwned,
        Fut: Future<Output = R>,
    {
        d.execute_async(id, mode, f, |r| Some(r), |v| v).await
    }

    pub async fn raise_ok_async<T, E, Fut>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>>,
    {
        d.execute_async(id, mode, f, |r| r.as_ref().ok(), Ok)
            .await?
    }

    pub async fn raise_all_async<T, E, Fut>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        Result<T, E>: Serialize + DeserializeOwned,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>>,
    {
        d.execute_async(id, mode, f, |r| Some(r), |v| v).await?
    }

    pub async fn raise_ok_async_stale<T, E, Fut>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error> + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        d.execute_async_or_stale(id, mode, f, |r| r.as_ref().ok(), Ok)
            .await?
    }

    pub async fn raise_all_async_stale<T, E, Fut>(
        d: &Deco,
        id: Result<CheckpointId, Error>,
        mode: Mode,
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> Result<T, E>
    where
        Result<T, E>: Serialize + DeserializeOwned + Send + 'static,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        d.execute_async_or_stale(id, mode, f, |r| Some(r), |v| v)
            .await?
    }

    /// What to store and how to read it back, picked at compile time as `RunOk`/`RunAll` pick
    /// (for the async expansion, which awaits the engine itself).
    pub trait KeepOk {
        type Out;
        type Value;
        #[allow(clippy::type_complexity)]
        fn policy(
            &self,
        ) -> (
            fn(&Self::Out) -> Option<&Self::Value>,
            fn(Self::Value) -> Self::Out,
        );
    }

    impl<T, E> KeepOk for Tag<Result<T, E>> {
        type Out = Result<T, E>;
        type Value = T;
        fn policy(&self) -> (fn(&Result<T, E>) -> Option<&T>, fn(T) -> Result<T, E>) {
            fn keep<T, E>(r: &Result<T, E>) -> Option<&T> {
                r.as_ref().ok()
            }
            (keep, Ok)
        }
    }

    pub trait KeepAll {
        type Out;
        type Value;
        #[allow(clippy::type_complexity)]
        fn policy(
            &self,
        ) -> (
            fn(&Self::Out) -> Option<&Self::Value>,
            fn(Self::Value) -> Self::Out,
        );
    }

    impl<R> KeepAll for &Tag<R> {
        type Out = R;
        type Value = R;
        fn policy(&self) -> (fn(&R) -> Option<&R>, fn(R) -> R) {
            fn keep<R>(r: &R) -> Option<&R> {
                Some(r)
            }
            fn lift<R>(r: R) -> R {
                r
            }
            (keep, lift)
        }
    }

    /// Picks, at compile time, how to store a result (autoref specialization): a `Result` keeps
    /// only its `Ok` value, anything else is stored whole.
    pub struct Tag<R>(PhantomData<fn() -> R>);

    impl<R> Tag<R> {
        pub const NEW: Self = Tag(PhantomData);
    }

    pub trait RunOk {
        type Out;
        fn run(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Self::Out,
        ) -> Result<Self::Out, Error>;
    }

    impl<T: Serialize + DeserializeOwned, E> RunOk for Tag<Result<T, E>> {
        type Out = Result<T, E>;
        fn run(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Result<T, E>,
        ) -> Result<Result<T, E>, Error> {
            d.execute(id, mode, f, |r| r.as_ref().ok(), Ok)
        }
    }

    pub trait RunAll {
        type Out;
        fn run(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Self::Out,
        ) -> Result<Self::Out, Error>;
    }

    impl<R: Serialize + DeserializeOwned> RunAll for &Tag<R> {
        type Out = R;
        fn run(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> R,
        ) -> Result<R, Error> {
            run_all(d, id, mode, f)
        }
    }

    /// The same choice for `refresh = stale`, whose function moves to a background thread.
    pub trait RunOkStale {
        type Out;
        fn run_stale(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Self::Out + Send + 'static,
        ) -> Result<Self::Out, Error>;
    }

    impl<T: Serialize + DeserializeOwned + 'static, E: 'static> RunOkStale for Tag<Result<T, E>> {
        type Out = Result<T, E>;
        fn run_stale(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Result<T, E> + Send + 'static,
        ) -> Result<Result<T, E>, Error> {
            d.execute_or_stale(id, mode, f, |r| r.as_ref().ok(), Ok)
        }
    }

    pub trait RunAllStale {
        type Out;
        fn run_stale(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> Self::Out + Send + 'static,
        ) -> Result<Self::Out, Error>;
    }

    impl<R: Serialize + DeserializeOwned + 'static> RunAllStale for &Tag<R> {
        type Out = R;
        fn run_stale(
            &self,
            d: &Deco,
            id: Result<CheckpointId, Error>,
            mode: Mode,
            f: impl FnOnce() -> R + Send + 'static,
        ) -> Result<R, Error> {
            run_all_stale(d, id, mode, f)
        }
    }
}
