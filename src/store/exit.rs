//! Closing every store still open when the process exits.
//!
//! A store kept in a static (the default store, a `checkpoint!` option's `cache = …`) is never
//! dropped: without this, its buffered bookkeeping would be lost and its file left as after a
//! crash, which the next open must recover (a full check of the file, and a read-only open, such
//! as `ckpt stats`, refuses it with `NeedsRecovery`). An `atexit` handler flushes each writable
//! store this process opened and closes its database cleanly. Later calls on such a store (a
//! thread still running while the process exits) fail with `ErrorKind::Closed`, which the
//! decorators' policy turns into an uncached call.

use std::sync::Weak;

use parking_lot::Mutex;

use super::Shared;

/// Writable stores opened by this process (dead entries are pruned as new ones come).
static OPEN: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Closes `shared` when the process exits, if it is still open then.
pub(crate) fn close_at_exit(shared: Weak<Shared>) {
    let mut open = OPEN.lock();
    open.retain(|w| w.strong_count() > 0);
    open.push(shared);
    drop(open);
    at_exit::register();
}

/// The `atexit` handler: flush and close every store still open.
fn close_all() {
    // Taken out of the list, so that a store is closed once however often this runs.
    let open = std::mem::take(&mut *OPEN.lock());
    for shared in open.iter().filter_map(Weak::upgrade) {
        // Nothing can be reported at exit; a panic must not cross the C boundary.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.close_now()));
    }
}

#[allow(unsafe_code)]
mod at_exit {
    use std::sync::Once;

    #[cfg(any(unix, windows))]
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
    }

    extern "C" fn close_all() {
        super::close_all();
    }

    pub(super) fn register() {
        static REGISTERED: Once = Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: `atexit` takes a plain function pointer, called once at exit on the
            // exiting thread; the handler catches every panic.
            #[cfg(any(unix, windows))]
            unsafe {
                atexit(close_all);
            }
        });
    }
}
