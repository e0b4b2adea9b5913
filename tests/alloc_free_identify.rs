//! Heap allocations on the hot paths, counted by a global allocator: identifying a call of
//! `(u64, 32-byte String)` allocates nothing, and a hit on the redb store allocates only the
//! decoded value.
//!
//! Counts are per thread, so tests running in parallel do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ckpt::{AutoIdentifier, Call, DecoratorCheckpoint, Function, Identifier, OnError, Store};
use serde::{Deserialize, Serialize};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (alloc, alloc_zeroed, realloc) made by `f` on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.with(Cell::get);
    let out = f();
    let after = ALLOCS.with(Cell::get);
    (out, after - before)
}

const ARG: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn identify_u64_and_string_allocates_nothing() {
    assert_eq!(ARG.len(), 32);
    let f = Function::new("tests::alloc", "work");
    let s = ARG.to_string();
    // The first call may initialise lazily built state; measure the ones after it.
    let first = AutoIdentifier.id_of(&f, &(7u64, &s)).unwrap();
    for n in 0..100u64 {
        let (id, count) = allocations(|| AutoIdentifier.id_of(&f, &(n, &s)).unwrap());
        assert_eq!(count, 0, "id_of((u64, String)) allocated {count} times");
        if n == 7 {
            assert_eq!(id, first);
        }
        let args = (n, s.clone());
        let (_, count) = allocations(|| AutoIdentifier.identify(&Call::new(&f, &args)).unwrap());
        assert_eq!(count, 0, "identify(&(u64, String)) allocated {count} times");
        let (_, count) = allocations(|| AutoIdentifier.id_of(&f, &(n, s.as_str())).unwrap());
        assert_eq!(count, 0, "id_of((u64, &str)) allocated {count} times");
    }
}

#[test]
fn decorator_identify_allocates_nothing() {
    let d = DecoratorCheckpoint::new(
        Function::new("tests::alloc", "work"),
        AutoIdentifier,
        ckpt::MemoryCache::new(),
    );
    let s = ARG.to_string();
    let _ = d.identify(&(0u64, s.as_str())).unwrap();
    for n in 0..100u64 {
        let (_, count) = allocations(|| d.identify(&(n, s.as_str())).unwrap());
        assert_eq!(
            count, 0,
            "DecoratorCheckpoint::identify allocated {count} times"
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// The most heap allocations one hit on the redb store may make: 1 for the decoded value (a
/// 256-byte `Vec`), none for the lookup. (Before hits reused a snapshot of the results table,
/// opening a read transaction and the table made 9 more.)
const MAX_HIT_ALLOCATIONS: u64 = 1;

#[test]
fn a_hit_allocates_only_the_decoded_value() {
    let dir = std::env::temp_dir().join(format!("ckpt-alloc-hit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(dir.join("checkpoints.redb")).unwrap();
    let d = DecoratorCheckpoint::new(Function::new("tests::alloc", "blob"), AutoIdentifier, store)
        .with_on_error(OnError::Raise);
    let work = |(n, s): (u64, &str)| Blob(vec![n as u8 ^ s.len() as u8; 256]);
    for n in 0..64u64 {
        d.call((n, ARG), work).unwrap();
    }
    // Warm: the first hit of a thread may set up thread-local state.
    d.call((0, ARG), work).unwrap();
    let mut counts = Vec::new();
    for n in 0..64u64 {
        let (v, count) = allocations(|| {
            d.call((n, ARG), |_| -> Blob { unreachable!("a hit") })
                .unwrap()
        });
        assert_eq!(v, work((n, ARG)));
        counts.push(count);
    }
    let max = *counts.iter().max().unwrap();
    eprintln!("heap allocations per hit (256-byte value): {counts:?}");
    assert!(
        max <= MAX_HIT_ALLOCATIONS,
        "a hit allocated {max} times (at most {MAX_HIT_ALLOCATIONS} expected): {counts:?}"
    );
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}
