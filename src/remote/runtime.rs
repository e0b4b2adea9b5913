//! One small tokio runtime for every remote of the process, on a thread of its own.
//!
//! object_store is async; ckpt's API is sync. A caller's thread never enters a runtime: it
//! hands the future to this one and waits on a plain channel. So a call works from a thread
//! with no runtime, and from inside a user's tokio runtime (current-thread or multi-thread)
//! without the "cannot start a runtime from within a runtime" panic, and without deadlock: the
//! future never needs the caller's executor to make progress.

use std::future::Future;
use std::sync::{LazyLock, mpsc};
use std::time::Duration;

/// The runtime's handle, or why it could not be started (reported by every remote operation).
static RUNTIME: LazyLock<Result<tokio::runtime::Handle, String>> = LazyLock::new(start);

fn start() -> Result<tokio::runtime::Handle, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("ckpt-remote".into())
        // A current-thread runtime runs its tasks while this thread is inside `block_on`: for
        // the life of the process.
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| e.to_string())?;
    Ok(handle)
}

/// How running a future on the runtime ended, short of its own output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunError {
    /// It did not finish within the time given (it was dropped, cancelling its requests).
    TimedOut,
    /// The runtime could not be started.
    NoRuntime(String),
}

impl RunError {
    /// Why, in words that are the same for every request (the warning hook says each once).
    pub(crate) fn reason(&self) -> String {
        match self {
            RunError::TimedOut => "no answer in time".into(),
            RunError::NoRuntime(why) => format!("no i/o runtime ({why})"),
        }
    }
}

/// A request's value, or a stable reason why there is none (the request failed, or it did not
/// run in time).
pub(crate) fn reason<T>(ran: Result<object_store::Result<T>, RunError>) -> Result<T, String> {
    match ran {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(super::error::stable_reason(&e)),
        Err(e) => Err(e.reason()),
    }
}

/// Runs one request within `timeout` and waits for it (see [`reason`]).
pub(crate) fn request<T: Send + 'static>(
    timeout: Duration,
    future: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> Result<T, String> {
    reason(run(timeout, future))
}

/// Runs `future` on the internal runtime and waits for it, at most `timeout`.
pub(crate) fn run<T: Send + 'static>(
    timeout: Duration,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<T, RunError> {
    spawn(timeout, future)?.wait()
}

/// A future running on the internal runtime: its output, or its timeout, once waited for.
pub(crate) struct Running<T>(mpsc::Receiver<Result<T, tokio::time::error::Elapsed>>);

impl<T> Running<T> {
    /// Waits for the future (which has its own timeout, so this does not wait forever).
    pub(crate) fn wait(self) -> Result<T, RunError> {
        match self.0.recv() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_elapsed)) => Err(RunError::TimedOut),
            // The task was dropped without answering: the runtime is gone.
            Err(_) => Err(RunError::NoRuntime("the runtime stopped".into())),
        }
    }
}

/// Whether the internal runtime runs (it starts on first use): when it cannot, nothing
/// remote can be done, and `off_thread` refuses.
pub(crate) fn available() -> bool {
    RUNTIME.is_ok()
}

/// Runs `task`, which may block (it waits for the runtime's futures), on the runtime's
/// blocking pool; `false` if the runtime could not be started.
pub(crate) fn off_thread(task: impl FnOnce() + Send + 'static) -> bool {
    match RUNTIME.as_ref() {
        Ok(handle) => {
            drop(handle.spawn_blocking(task));
            true
        }
        Err(_) => false,
    }
}

/// Starts `future` on the internal runtime, to be waited for later (several requests in
/// flight at once: the parts of a multipart upload); it is dropped after `timeout`.
pub(crate) fn spawn<T: Send + 'static>(
    timeout: Duration,
    future: impl Future<Output = T> + Send + 'static,
) -> Result<Running<T>, RunError> {
    let handle = RUNTIME
        .as_ref()
        .map_err(|e| RunError::NoRuntime(e.clone()))?;
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let out = tokio::time::timeout(timeout, future).await;
        let _ = tx.send(out);
    });
    Ok(Running(rx))
}

/// Runs `future` on the internal runtime without waiting for it (a lease's renewals).
pub(crate) fn detach(future: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let handle = RUNTIME
        .as_ref()
        .map_err(|e| RunError::NoRuntime(e.clone()))?;
    handle.spawn(future);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_a_plain_thread_and_times_out() {
        assert_eq!(run(Duration::from_secs(5), async { 7 }), Ok(7));
        let slow = run(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        assert_eq!(slow, Err(RunError::TimedOut));
    }

    #[test]
    fn runs_from_inside_a_user_runtime() {
        let user = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = user.block_on(async { run(Duration::from_secs(5), async { 8 }) });
        assert_eq!(got, Ok(8));
    }
}
