//! Behaviours of the Python `checkpointing` library (the seed) that ckpt matches: invalidation by
//! code edits and versions, `rerun`, custom caches, what is stored, and the identifiers that leave
//! arguments out. The `on_error` policies are in `seed_on_error.rs`.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{LazyLock, Mutex};

use ckpt::cache::Entry;
use ckpt::{
    AutoIdentifier, Cache, CheckpointId, DecoratorCheckpoint, FnNameIdentifier, Function, KeyFn,
    MemoryCache, OnError, code_hash,
};
use common::Runs;

fn raising<C: Cache>(f: Function, cache: C) -> DecoratorCheckpoint<AutoIdentifier, C> {
    DecoratorCheckpoint::new(f, AutoIdentifier, cache).with_on_error(OnError::Raise)
}

// ---------------------------------------------------------------------------------------------
// Editing the body invalidates; reformatting does not.

#[test]
fn a_different_code_hash_is_a_miss() {
    let cache = MemoryCache::new();
    let at = |src: &str| Function::new("seed", "double").with_code_hash(code_hash(src));
    let v1 = at("(x: u64) -> u64 { x * 2 }");
    let v1_reformatted = at("(x: u64)\n    -> u64\n{\n    x  *  2\n}");
    let v2 = at("(x: u64) -> u64 { x * 2 + 1 }");
    let runs = Runs::default();
    let body = |x: u64| {
        runs.bump();
        x * 2
    };

    let d1 = raising(v1, cache.clone());
    assert_eq!(d1.call(21u64, body).unwrap(), 42);
    assert_eq!(d1.call(21u64, body).unwrap(), 42);
    assert_eq!(runs.get(), 1);
    let same = raising(v1_reformatted, cache.clone());
    assert_eq!(same.call(21u64, body).unwrap(), 42);
    assert_eq!(runs.get(), 1, "reformatting keeps the stored results");
    let edited = raising(v2, cache.clone());
    assert_eq!(edited.call(21u64, |x| x * 2 + 1).unwrap(), 43);
    assert_eq!(edited.stats().misses, 1, "an edited body misses");
    assert_eq!(cache.len(), 2);
}

#[test]
fn code_hash_sees_tokens_not_layout() {
    assert_eq!(
        code_hash("fn f(x: u64) -> u64 { let y = x; y }"),
        code_hash("fn f(x:u64)->u64{\n\tlet y=x;\n\ty\n}")
    );
    assert_ne!(code_hash("{ let y = x; y }"), code_hash("{ lety = x; y }"));
    assert_ne!(code_hash(r#"{ "a b" }"#), code_hash(r#"{ "ab" }"#));
    assert_ne!(code_hash("{ c == ' ' }"), code_hash("{ c == '\t' }"));
    // After an escaped quote, the next literal is still a literal (a space and a tab differ).
    assert_ne!(code_hash(r"['\'',' ']"), code_hash("['\\'','\t']"));
}

mod plain {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn double(x: u64) -> u64 { x * 2 }
    }
}

mod commented {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn double(
            x: u64, // the input
        ) -> u64 {
            /* twice
               the input */
            x
                *   2 // done
        }
    }
}

mod edited {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn double(x: u64) -> u64 { x * 3 }
    }
}

#[test]
fn the_macro_hashes_the_code_of_the_function() {
    let p = plain::double::decorator().function();
    let c = commented::double::decorator().function();
    let e = edited::double::decorator().function();
    assert_eq!((p.module(), p.name()), ("seed_behaviours::plain", "double"));
    assert!(p.code_hash().is_some());
    assert_eq!(
        p.code_hash(),
        c.code_hash(),
        "comments and layout do not count"
    );
    assert_ne!(p.code_hash(), e.code_hash(), "an edited body does");
    assert_eq!(
        (plain::double(4), commented::double(4), edited::double(4)),
        (8, 8, 12)
    );

    // Had `plain::double` been edited in place, its ids would all have changed.
    let moved = p.clone().with_code_hash(e.code_hash().unwrap());
    let id = plain::double::id(4).unwrap();
    assert_eq!(id, AutoIdentifier.id_of(p, &(4u64,)).unwrap());
    assert_ne!(id, AutoIdentifier.id_of(&moved, &(4u64,)).unwrap());
}

mod documented_after {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), version = "2")]
        /// Twice the input.
        #[inline]
        pub fn double(x: u64) -> u64 { x * 2 }
    }
}

mod documented_before {
    ckpt::checkpoint! {
        /// Twice the input.
        #[inline]
        #[checkpoint(cache = ckpt::MemoryCache::new(), version = "2")]
        pub fn double(x: u64) -> u64 { x * 2 }
    }
}

mod documented_at_length {
    ckpt::checkpoint! {
        /// Line 0 of a long doc comment.
        /// Line 1 of a long doc comment.
        /// Line 2 of a long doc comment.
        /// Line 3 of a long doc comment.
        /// Line 4 of a long doc comment.
        /// Line 5 of a long doc comment.
        /// Line 6 of a long doc comment.
        /// Line 7 of a long doc comment.
        /// Line 8 of a long doc comment.
        /// Line 9 of a long doc comment.
        /// Line 10 of a long doc comment.
        /// Line 11 of a long doc comment.
        /// Line 12 of a long doc comment.
        /// Line 13 of a long doc comment.
        /// Line 14 of a long doc comment.
        /// Line 15 of a long doc comment.
        /// Line 16 of a long doc comment.
        /// Line 17 of a long doc comment.
        /// Line 18 of a long doc comment.
        /// Line 19 of a long doc comment.
        /// Line 20 of a long doc comment.
        /// Line 21 of a long doc comment.
        /// Line 22 of a long doc comment.
        /// Line 23 of a long doc comment.
        /// Line 24 of a long doc comment.
        /// Line 25 of a long doc comment.
        /// Line 26 of a long doc comment.
        /// Line 27 of a long doc comment.
        /// Line 28 of a long doc comment.
        /// Line 29 of a long doc comment.
        /// Line 30 of a long doc comment.
        /// Line 31 of a long doc comment.
        /// Line 32 of a long doc comment.
        /// Line 33 of a long doc comment.
        /// Line 34 of a long doc comment.
        /// Line 35 of a long doc comment.
        /// Line 36 of a long doc comment.
        /// Line 37 of a long doc comment.
        /// Line 38 of a long doc comment.
        /// Line 39 of a long doc comment.
        /// Line 40 of a long doc comment.
        /// Line 41 of a long doc comment.
        /// Line 42 of a long doc comment.
        /// Line 43 of a long doc comment.
        /// Line 44 of a long doc comment.
        /// Line 45 of a long doc comment.
        /// Line 46 of a long doc comment.
        /// Line 47 of a long doc comment.
        /// Line 48 of a long doc comment.
        /// Line 49 of a long doc comment.
        /// Line 50 of a long doc comment.
        /// Line 51 of a long doc comment.
        /// Line 52 of a long doc comment.
        /// Line 53 of a long doc comment.
        /// Line 54 of a long doc comment.
        /// Line 55 of a long doc comment.
        /// Line 56 of a long doc comment.
        /// Line 57 of a long doc comment.
        /// Line 58 of a long doc comment.
        /// Line 59 of a long doc comment.
        /// Line 60 of a long doc comment.
        /// Line 61 of a long doc comment.
        /// Line 62 of a long doc comment.
        /// Line 63 of a long doc comment.
        /// Line 64 of a long doc comment.
        /// Line 65 of a long doc comment.
        /// Line 66 of a long doc comment.
        /// Line 67 of a long doc comment.
        /// Line 68 of a long doc comment.
        /// Line 69 of a long doc comment.
        /// Line 70 of a long doc comment.
        /// Line 71 of a long doc comment.
        /// Line 72 of a long doc comment.
        /// Line 73 of a long doc comment.
        /// Line 74 of a long doc comment.
        /// Line 75 of a long doc comment.
        /// Line 76 of a long doc comment.
        /// Line 77 of a long doc comment.
        /// Line 78 of a long doc comment.
        /// Line 79 of a long doc comment.
        /// Line 80 of a long doc comment.
        /// Line 81 of a long doc comment.
        /// Line 82 of a long doc comment.
        /// Line 83 of a long doc comment.
        /// Line 84 of a long doc comment.
        /// Line 85 of a long doc comment.
        /// Line 86 of a long doc comment.
        /// Line 87 of a long doc comment.
        /// Line 88 of a long doc comment.
        /// Line 89 of a long doc comment.
        /// Line 90 of a long doc comment.
        /// Line 91 of a long doc comment.
        /// Line 92 of a long doc comment.
        /// Line 93 of a long doc comment.
        /// Line 94 of a long doc comment.
        /// Line 95 of a long doc comment.
        /// Line 96 of a long doc comment.
        /// Line 97 of a long doc comment.
        /// Line 98 of a long doc comment.
        /// Line 99 of a long doc comment.
        /// Line 100 of a long doc comment.
        /// Line 101 of a long doc comment.
        /// Line 102 of a long doc comment.
        /// Line 103 of a long doc comment.
        /// Line 104 of a long doc comment.
        /// Line 105 of a long doc comment.
        /// Line 106 of a long doc comment.
        /// Line 107 of a long doc comment.
        /// Line 108 of a long doc comment.
        /// Line 109 of a long doc comment.
        /// Line 110 of a long doc comment.
        /// Line 111 of a long doc comment.
        /// Line 112 of a long doc comment.
        /// Line 113 of a long doc comment.
        /// Line 114 of a long doc comment.
        /// Line 115 of a long doc comment.
        /// Line 116 of a long doc comment.
        /// Line 117 of a long doc comment.
        /// Line 118 of a long doc comment.
        /// Line 119 of a long doc comment.
        /// Line 120 of a long doc comment.
        /// Line 121 of a long doc comment.
        /// Line 122 of a long doc comment.
        /// Line 123 of a long doc comment.
        /// Line 124 of a long doc comment.
        /// Line 125 of a long doc comment.
        /// Line 126 of a long doc comment.
        /// Line 127 of a long doc comment.
        /// Line 128 of a long doc comment.
        /// Line 129 of a long doc comment.
        /// Line 130 of a long doc comment.
        /// Line 131 of a long doc comment.
        /// Line 132 of a long doc comment.
        /// Line 133 of a long doc comment.
        /// Line 134 of a long doc comment.
        /// Line 135 of a long doc comment.
        /// Line 136 of a long doc comment.
        /// Line 137 of a long doc comment.
        /// Line 138 of a long doc comment.
        /// Line 139 of a long doc comment.
        /// Line 140 of a long doc comment.
        /// Line 141 of a long doc comment.
        /// Line 142 of a long doc comment.
        /// Line 143 of a long doc comment.
        /// Line 144 of a long doc comment.
        /// Line 145 of a long doc comment.
        /// Line 146 of a long doc comment.
        /// Line 147 of a long doc comment.
        /// Line 148 of a long doc comment.
        /// Line 149 of a long doc comment.
        /// Line 150 of a long doc comment.
        /// Line 151 of a long doc comment.
        /// Line 152 of a long doc comment.
        /// Line 153 of a long doc comment.
        /// Line 154 of a long doc comment.
        /// Line 155 of a long doc comment.
        /// Line 156 of a long doc comment.
        /// Line 157 of a long doc comment.
        /// Line 158 of a long doc comment.
        /// Line 159 of a long doc comment.
        #[checkpoint(cache = ckpt::MemoryCache::new(), version = "2")]
        pub fn double(x: u64) -> u64 { x * 2 }
    }
}

// Without options (the default store), only compiled: 160 attribute lines stay within the
// compiler's recursion limit.
#[allow(dead_code)]
mod documented_at_length_without_options {
    ckpt::checkpoint! {
        /// Line 0 of a long doc comment.
        /// Line 1 of a long doc comment.
        /// Line 2 of a long doc comment.
        /// Line 3 of a long doc comment.
        /// Line 4 of a long doc comment.
        /// Line 5 of a long doc comment.
        /// Line 6 of a long doc comment.
        /// Line 7 of a long doc comment.
        /// Line 8 of a long doc comment.
        /// Line 9 of a long doc comment.
        /// Line 10 of a long doc comment.
        /// Line 11 of a long doc comment.
        /// Line 12 of a long doc comment.
        /// Line 13 of a long doc comment.
        /// Line 14 of a long doc comment.
        /// Line 15 of a long doc comment.
        /// Line 16 of a long doc comment.
        /// Line 17 of a long doc comment.
        /// Line 18 of a long doc comment.
        /// Line 19 of a long doc comment.
        /// Line 20 of a long doc comment.
        /// Line 21 of a long doc comment.
        /// Line 22 of a long doc comment.
        /// Line 23 of a long doc comment.
        /// Line 24 of a long doc comment.
        /// Line 25 of a long doc comment.
        /// Line 26 of a long doc comment.
        /// Line 27 of a long doc comment.
        /// Line 28 of a long doc comment.
        /// Line 29 of a long doc comment.
        /// Line 30 of a long doc comment.
        /// Line 31 of a long doc comment.
        /// Line 32 of a long doc comment.
        /// Line 33 of a long doc comment.
        /// Line 34 of a long doc comment.
        /// Line 35 of a long doc comment.
        /// Line 36 of a long doc comment.
        /// Line 37 of a long doc comment.
        /// Line 38 of a long doc comment.
        /// Line 39 of a long doc comment.
        /// Line 40 of a long doc comment.
        /// Line 41 of a long doc comment.
        /// Line 42 of a long doc comment.
        /// Line 43 of a long doc comment.
        /// Line 44 of a long doc comment.
        /// Line 45 of a long doc comment.
        /// Line 46 of a long doc comment.
        /// Line 47 of a long doc comment.
        /// Line 48 of a long doc comment.
        /// Line 49 of a long doc comment.
        /// Line 50 of a long doc comment.
        /// Line 51 of a long doc comment.
        /// Line 52 of a long doc comment.
        /// Line 53 of a long doc comment.
        /// Line 54 of a long doc comment.
        /// Line 55 of a long doc comment.
        /// Line 56 of a long doc comment.
        /// Line 57 of a long doc comment.
        /// Line 58 of a long doc comment.
        /// Line 59 of a long doc comment.
        /// Line 60 of a long doc comment.
        /// Line 61 of a long doc comment.
        /// Line 62 of a long doc comment.
        /// Line 63 of a long doc comment.
        /// Line 64 of a long doc comment.
        /// Line 65 of a long doc comment.
        /// Line 66 of a long doc comment.
        /// Line 67 of a long doc comment.
        /// Line 68 of a long doc comment.
        /// Line 69 of a long doc comment.
        /// Line 70 of a long doc comment.
        /// Line 71 of a long doc comment.
        /// Line 72 of a long doc comment.
        /// Line 73 of a long doc comment.
        /// Line 74 of a long doc comment.
        /// Line 75 of a long doc comment.
        /// Line 76 of a long doc comment.
        /// Line 77 of a long doc comment.
        /// Line 78 of a long doc comment.
        /// Line 79 of a long doc comment.
        /// Line 80 of a long doc comment.
        /// Line 81 of a long doc comment.
        /// Line 82 of a long doc comment.
        /// Line 83 of a long doc comment.
        /// Line 84 of a long doc comment.
        /// Line 85 of a long doc comment.
        /// Line 86 of a long doc comment.
        /// Line 87 of a long doc comment.
        /// Line 88 of a long doc comment.
        /// Line 89 of a long doc comment.
        /// Line 90 of a long doc comment.
        /// Line 91 of a long doc comment.
        /// Line 92 of a long doc comment.
        /// Line 93 of a long doc comment.
        /// Line 94 of a long doc comment.
        /// Line 95 of a long doc comment.
        /// Line 96 of a long doc comment.
        /// Line 97 of a long doc comment.
        /// Line 98 of a long doc comment.
        /// Line 99 of a long doc comment.
        /// Line 100 of a long doc comment.
        /// Line 101 of a long doc comment.
        /// Line 102 of a long doc comment.
        /// Line 103 of a long doc comment.
        /// Line 104 of a long doc comment.
        /// Line 105 of a long doc comment.
        /// Line 106 of a long doc comment.
        /// Line 107 of a long doc comment.
        /// Line 108 of a long doc comment.
        /// Line 109 of a long doc comment.
        /// Line 110 of a long doc comment.
        /// Line 111 of a long doc comment.
        /// Line 112 of a long doc comment.
        /// Line 113 of a long doc comment.
        /// Line 114 of a long doc comment.
        /// Line 115 of a long doc comment.
        /// Line 116 of a long doc comment.
        /// Line 117 of a long doc comment.
        /// Line 118 of a long doc comment.
        /// Line 119 of a long doc comment.
        /// Line 120 of a long doc comment.
        /// Line 121 of a long doc comment.
        /// Line 122 of a long doc comment.
        /// Line 123 of a long doc comment.
        /// Line 124 of a long doc comment.
        /// Line 125 of a long doc comment.
        /// Line 126 of a long doc comment.
        /// Line 127 of a long doc comment.
        /// Line 128 of a long doc comment.
        /// Line 129 of a long doc comment.
        /// Line 130 of a long doc comment.
        /// Line 131 of a long doc comment.
        /// Line 132 of a long doc comment.
        /// Line 133 of a long doc comment.
        /// Line 134 of a long doc comment.
        /// Line 135 of a long doc comment.
        /// Line 136 of a long doc comment.
        /// Line 137 of a long doc comment.
        /// Line 138 of a long doc comment.
        /// Line 139 of a long doc comment.
        /// Line 140 of a long doc comment.
        /// Line 141 of a long doc comment.
        /// Line 142 of a long doc comment.
        /// Line 143 of a long doc comment.
        /// Line 144 of a long doc comment.
        /// Line 145 of a long doc comment.
        /// Line 146 of a long doc comment.
        /// Line 147 of a long doc comment.
        /// Line 148 of a long doc comment.
        /// Line 149 of a long doc comment.
        /// Line 150 of a long doc comment.
        /// Line 151 of a long doc comment.
        /// Line 152 of a long doc comment.
        /// Line 153 of a long doc comment.
        /// Line 154 of a long doc comment.
        /// Line 155 of a long doc comment.
        /// Line 156 of a long doc comment.
        /// Line 157 of a long doc comment.
        /// Line 158 of a long doc comment.
        /// Line 159 of a long doc comment.
        pub fn double(x: u64) -> u64 { x * 2 }
    }
}

#[test]
fn doc_comments_and_attributes_may_come_before_the_options() {
    let after = documented_after::double::decorator().function();
    let before = documented_before::double::decorator().function();
    assert_eq!(
        (documented_before::double(4), documented_after::double(4)),
        (8, 8)
    );
    assert_eq!(documented_at_length::double(4), 8);
    assert_eq!(
        documented_at_length::double::decorator()
            .function()
            .version(),
        Some("2")
    );
    // The options were read (the version), and the code is hashed the same either way.
    assert_eq!(before.version(), Some("2"));
    assert!(before.code_hash().is_some());
    assert_eq!(
        (before.version(), before.code_hash()),
        (after.version(), after.code_hash())
    );
}

// ---------------------------------------------------------------------------------------------
// `version = ".."`.

mod versioned {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static RUNS: AtomicUsize = AtomicUsize::new(0);
    pub static CACHE: LazyLock<ckpt::MemoryCache> = LazyLock::new(ckpt::MemoryCache::new);

    ckpt::checkpoint! {
        #[checkpoint(cache = CACHE.clone(), version = "2")]
        pub fn triple(x: u64) -> u64 {
            RUNS.fetch_add(1, Ordering::SeqCst);
            x * 3
        }
    }
}

#[test]
fn a_version_bump_invalidates() {
    let v1 = Function::new("seed", "embed").with_version("1");
    let v2 = Function::new("seed", "embed").with_version("2");
    let cache = MemoryCache::new();
    let old = raising(v1, cache.clone());
    let new = raising(v2, cache.clone());
    assert_eq!(old.call(5u32, |x| x + 1).unwrap(), 6);
    assert_eq!(new.call(5u32, |x| x + 2).unwrap(), 7, "version 2 misses");
    assert_eq!(old.call(5u32, |_| -> u32 { unreachable!() }).unwrap(), 6);
    assert_eq!(new.call(5u32, |_| -> u32 { unreachable!() }).unwrap(), 7);

    // Through the macro: what version 1 of `triple` stored is not version 2's.
    let f = versioned::triple::decorator().function();
    assert_eq!(f.version(), Some("2"));
    let was = raising(f.clone().with_version("1"), versioned::CACHE.clone());
    assert_eq!(was.call((5u64,), |_| 999u64).unwrap(), 999);
    assert_ne!(
        was.identify(&(5u64,)).unwrap(),
        versioned::triple::id(5).unwrap()
    );
    assert_eq!(versioned::triple(5), 15);
    assert_eq!(versioned::triple(5), 15);
    assert_eq!(versioned::RUNS.load(Ordering::SeqCst), 1);
    // The old version's entry is still there (`Store::remove_stale` is what drops it).
    assert_eq!(
        was.call((5u64,), |_| -> u64 { unreachable!() }).unwrap(),
        999
    );
}

// ---------------------------------------------------------------------------------------------
// `rerun`.

mod counter {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static NEXT: AtomicU64 = AtomicU64::new(0);

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn stamp(x: u64) -> u64 {
            x + NEXT.fetch_add(1, Ordering::SeqCst)
        }
    }
}

#[test]
fn macro_rerun_runs_and_overwrites() {
    assert_eq!(counter::stamp(10), 10);
    assert_eq!(counter::stamp(10), 10, "a hit");
    assert_eq!(counter::stamp::rerun(10), 11, "runs although stored");
    assert_eq!(
        counter::stamp(10),
        11,
        "the rerun overwrote the stored result"
    );
    assert_eq!(
        counter::NEXT.load(Ordering::SeqCst),
        2,
        "only the rerun ran"
    );
    let s = counter::stamp::stats();
    assert_eq!((s.hits, s.misses, s.reruns, s.saves), (2, 1, 1, 2));
}

#[test]
fn decorator_rerun_runs_and_overwrites() {
    let cache = MemoryCache::new();
    let d = raising(Function::new("seed", "rerun"), cache.clone());
    assert_eq!(d.call("k", |_| 1u32).unwrap(), 1);
    assert_eq!(d.call("k", |_| 2u32).unwrap(), 1);
    assert_eq!(d.rerun("k", |_| 3u32).unwrap(), 3);
    assert_eq!(d.call("k", |_| 4u32).unwrap(), 3);
    // rerun_ok keeps the stored value when the rerun fails.
    let e = raising(Function::new("seed", "rerun_ok"), cache.clone());
    assert_eq!(e.call_ok("k", |_| Ok::<u32, String>(1)).unwrap(), Ok(1));
    assert_eq!(
        e.rerun_ok("k", |_| Err::<u32, String>("down".into()))
            .unwrap(),
        Err("down".into())
    );
    assert_eq!(e.call_ok("k", |_| Ok::<u32, String>(2)).unwrap(), Ok(1));
    assert_eq!(e.rerun_ok("k", |_| Ok::<u32, String>(5)).unwrap(), Ok(5));
    assert_eq!(e.call_ok("k", |_| Ok::<u32, String>(6)).unwrap(), Ok(5));
    assert_eq!((d.stats().reruns, e.stats().reruns), (1, 2));
}

// ---------------------------------------------------------------------------------------------
// A cache of your own: the `HashMap` cache of the `Cache` docs.

#[derive(Default)]
struct DictCache(Mutex<std::collections::HashMap<CheckpointId, Vec<u8>>>);

impl Cache for DictCache {
    fn save(&self, id: &CheckpointId, entry: &Entry<'_>) -> Result<(), ckpt::Error> {
        self.0.lock().unwrap().insert(*id, entry.bytes().to_vec());
        Ok(())
    }
    fn retrieve(&self, id: &CheckpointId) -> Result<Option<Vec<u8>>, ckpt::Error> {
        Ok(self.0.lock().unwrap().get(id).cloned())
    }
}

#[test]
fn a_hashmap_cache_works_with_the_decorator() {
    let square = raising(Function::new("seed", "square"), DictCache::default());
    let runs = Runs::default();
    let body = |x: u64| {
        runs.bump();
        x * x
    };
    assert_eq!(square.call(12u64, body).unwrap(), 144);
    assert_eq!(square.call(12u64, body).unwrap(), 144);
    assert_eq!(square.call(13u64, body).unwrap(), 169);
    assert_eq!(runs.get(), 2);
    let map = square.cache().0.lock().unwrap();
    assert_eq!(map.len(), 2);
    assert!(map.contains_key(&square.identify(&12u64).unwrap()));
}

// ---------------------------------------------------------------------------------------------
// What is stored: `call` stores whatever is returned, `call_ok` and the macro's default only Ok.

#[test]
fn call_ok_stores_only_ok_and_call_stores_err_too() {
    let cache = MemoryCache::new();
    let runs = Runs::default();
    let ok_only = raising(Function::new("seed", "ok_only"), &cache);
    for _ in 0..2 {
        let r = ok_only.call_ok(1u32, |_| {
            runs.bump();
            Err::<u32, String>("flaky".into())
        });
        assert_eq!(r.unwrap(), Err("flaky".to_string()));
    }
    assert_eq!(runs.get(), 2, "an Err is not stored: the call runs again");
    assert!(cache.is_empty());
    assert_eq!(
        ok_only.call_ok(1u32, |x| Ok::<u32, String>(x + 1)).unwrap(),
        Ok(2)
    );
    assert_eq!(
        ok_only
            .call_ok(1u32, |_| -> Result<u32, String> { unreachable!() })
            .unwrap(),
        Ok(2)
    );
    assert_eq!(cache.len(), 1);

    let all = raising(Function::new("seed", "all"), &cache);
    let r = all.call(1u32, |_| {
        runs.bump();
        Err::<u32, String>("permanent".into())
    });
    assert_eq!(r.unwrap(), Err("permanent".to_string()));
    let again = all.call(1u32, |_| -> Result<u32, String> { unreachable!("stored") });
    assert_eq!(again.unwrap(), Err("permanent".to_string()));
    assert_eq!(runs.get(), 3);
    assert_eq!(all.stats().hits, 1);
}

mod results {
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static RUNS_DEFAULT: AtomicUsize = AtomicUsize::new(0);
    pub static RUNS_ALL: AtomicUsize = AtomicUsize::new(0);

    fn check(x: u32) -> Result<u32, String> {
        if x == 0 {
            Err("zero".into())
        } else {
            Ok(x * 10)
        }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new())]
        pub fn ok_only(x: u32) -> Result<u32, String> {
            RUNS_DEFAULT.fetch_add(1, Ordering::SeqCst);
            check(x)
        }
    }

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), results = all)]
        pub fn keep_all(x: u32) -> Result<u32, String> {
            RUNS_ALL.fetch_add(1, Ordering::SeqCst);
            check(x)
        }
    }
}

#[test]
fn macro_results_all_versus_default() {
    use results::*;
    for _ in 0..2 {
        assert_eq!(ok_only(0), Err("zero".into()));
        assert_eq!(keep_all(0), Err("zero".into()));
    }
    assert_eq!(
        RUNS_DEFAULT.load(Ordering::SeqCst),
        2,
        "default: an Err runs again"
    );
    assert_eq!(
        RUNS_ALL.load(Ordering::SeqCst),
        1,
        "results = all: the Err is stored"
    );
    for _ in 0..2 {
        assert_eq!(ok_only(4), Ok(40));
        assert_eq!(keep_all(4), Ok(40));
    }
    assert_eq!(RUNS_DEFAULT.load(Ordering::SeqCst), 3);
    assert_eq!(RUNS_ALL.load(Ordering::SeqCst), 2);
    assert_eq!((ok_only::stats().saves, keep_all::stats().saves), (1, 2));
}

// ---------------------------------------------------------------------------------------------
// Leaving arguments out of the id: `key = (..)`, `FnNameIdentifier`, `KeyFn`.

mod keyed {
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static RUNS: AtomicUsize = AtomicUsize::new(0);

    /// Not serializable, and not part of the result.
    pub struct Conn(pub u32);

    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), key = (table, limit))]
        pub fn query(conn: &Conn, table: &str, limit: usize, verbose: bool) -> Vec<String> {
            RUNS.fetch_add(1, Ordering::SeqCst);
            let _ = (conn.0, verbose);
            (0..limit).map(|i| format!("{table}:{i}")).collect()
        }
    }
}

#[test]
fn macro_key_leaves_the_other_arguments_out() {
    use keyed::*;
    let a = query(&Conn(1), "users", 2, true);
    let b = query(&Conn(2), "users", 2, false);
    assert_eq!(a, ["users:0", "users:1"]);
    assert_eq!(a, b);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        1,
        "conn and verbose are not in the id"
    );
    assert_eq!(query(&Conn(1), "users", 3, true).len(), 3);
    assert_eq!(query(&Conn(1), "groups", 2, true), ["groups:0", "groups:1"]);
    assert_eq!(RUNS.load(Ordering::SeqCst), 3, "table and limit are");

    let id = query::id(&Conn(1), "users", 2, true).unwrap();
    assert_eq!(id, query::id(&Conn(7), "users", 2, false).unwrap());
    let f = query::decorator().function();
    assert_eq!(id, AutoIdentifier.id_of(f, &("users", 2usize)).unwrap());
}

mod named {
    ckpt::checkpoint! {
        #[checkpoint(cache = ckpt::MemoryCache::new(), identifier = ckpt::FnNameIdentifier)]
        pub fn once(x: u32) -> u32 { x * 100 }
    }
}

#[test]
fn fn_name_identifier_ignores_the_arguments() {
    let d = DecoratorCheckpoint::new(
        Function::new("seed", "setup"),
        FnNameIdentifier,
        MemoryCache::new(),
    )
    .with_on_error(OnError::Raise);
    assert_eq!(d.call(1u32, |x| x * 10).unwrap(), 10);
    assert_eq!(
        d.call(2u32, |x| x * 10).unwrap(),
        10,
        "any arguments: a hit"
    );
    assert_eq!(d.identify(&1u32).unwrap(), d.identify(&"anything").unwrap());
    // Not even the code version counts; the name does.
    let call = |f: &Function| {
        use ckpt::{Call, Identifier};
        Identifier::<u8>::identify(&FnNameIdentifier, &Call::new(f, &0u8)).unwrap()
    };
    let f = Function::new("seed", "setup");
    assert_eq!(
        call(&f),
        call(&f.clone().with_version("9").with_code_hash(1))
    );
    assert_ne!(call(&f), call(&Function::new("seed", "teardown")));

    assert_eq!(named::once(1), 100);
    assert_eq!(named::once(2), 100);
    assert_eq!(named::once::id(1).unwrap(), named::once::id(2).unwrap());
}

#[test]
fn key_fn_identifies_by_a_projection() {
    static CACHE: LazyLock<MemoryCache> = LazyLock::new(MemoryCache::new);
    let f = Function::new("seed", "keyfn");
    let d = DecoratorCheckpoint::new(
        f.clone(),
        KeyFn::new(|args: &(u64, String)| args.0),
        &*CACHE,
    )
    .with_on_error(OnError::Raise);
    let body = |(x, s): (u64, String)| format!("{x}{s}");
    assert_eq!(d.call((1, "a".to_string()), body).unwrap(), "1a");
    assert_eq!(
        d.call((1, "b".to_string()), body).unwrap(),
        "1a",
        "the String is left out"
    );
    assert_eq!(d.call((2, "b".to_string()), body).unwrap(), "2b");
    assert_eq!(
        d.identify(&(1, "zzz".to_string())).unwrap(),
        AutoIdentifier.id_of(&f, &1u64).unwrap()
    );
    assert_eq!(CACHE.len(), 2);
}
