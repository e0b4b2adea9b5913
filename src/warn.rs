//! Where [`OnError::Warn`](crate::OnError::Warn) sends its warnings.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::error::Error;

/// Shared, so that a warning calls the hook with no lock held: a hook may set or reset the
/// hook, and a slow one does not hold up the warnings of other threads.
type Hook = Arc<dyn Fn(&Error) + Send + Sync>;

static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Sends every [`OnError::Warn`](crate::OnError::Warn) warning of this process to `hook` instead
/// of standard error: to a logger, a metrics counter, or a test's collector.
///
/// ```
/// ckpt::set_warning_hook(|err| eprintln!("[my-app] checkpointing degraded: {err}"));
/// ```
///
/// The hook is called with no lock held, so it may set or reset the hook; a warning already
/// on its way when the hook is replaced may still reach the old one.
pub fn set_warning_hook(hook: impl Fn(&Error) + Send + Sync + 'static) {
    *HOOK.write() = Some(Arc::new(hook));
}

/// Goes back to the default: each distinct warning once, as a `tracing` event at WARN (target
/// `ckpt`) when the app has a subscriber, else printed to standard error.
pub fn reset_warning_hook() {
    *HOOK.write() = None;
}

pub(crate) fn warn(err: &Error) {
    let hook = HOOK.read().clone();
    if let Some(hook) = hook {
        hook(err);
        return;
    }
    // Like Python's default warning filter: each distinct message once, so a store that is down
    // does not print a line per call. The set is capped to stay bounded.
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let message = err.to_string();
    let mut seen = SEEN.get_or_init(Default::default).lock();
    if seen.len() < 1024 && seen.insert(message.clone()) {
        drop(seen);
        // An app with a subscriber gets the warning where its other logs go; one without sees
        // it on standard error rather than not at all.
        let subscribed =
            tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
        if subscribed {
            tracing::warn!(target: "ckpt", error = %err, kind = ?err.kind(), "checkpointing degraded: {message}");
        } else {
            eprintln!("ckpt: warning: {message}");
        }
    }
}
