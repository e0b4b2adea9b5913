//! A progress line on stderr while a long command runs, drawn only when stderr is a terminal
//! (never when piped or redirected), and erased when the command ends.
//!
//! With a known total it is a bar (`[#######-------]  45%  12.3 MiB / 27.0 MiB  3.2 s`); for a
//! single engine call that reports nothing while it works (verify, compact), a spinner with the
//! time so far.

use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::human;

struct State {
    label: String,
    total: Option<u64>,
    done: AtomicU64,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

/// A running progress line; dropping it erases the line.
pub struct Progress {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts a progress line (a bar if `total` bytes are known), or nothing if stderr is not a
    /// terminal.
    pub fn start(label: &str, total: Option<u64>) -> Progress {
        let state = Arc::new(State {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        });
        let thread = io::stderr().is_terminal().then(|| {
            let state = Arc::clone(&state);
            std::thread::spawn(move || draw_until_stopped(&state))
        });
        Progress { state, thread }
    }

    /// A handle for readers and writers to report through.
    pub fn counter(&self) -> Counter {
        Counter(Arc::clone(&self.state))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.state.wake.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw_until_stopped(state: &State) {
    let started = Instant::now();
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut err = io::stderr();
    loop {
        let elapsed = human::duration(Duration::from_millis(
            started.elapsed().as_millis() as u64 / 100 * 100,
        ));
        let line = match state.total {
            Some(total) => {
                let done = state.done.load(Ordering::Relaxed).min(total);
                let fraction = if total == 0 {
                    1.0
                } else {
                    done as f64 / total as f64
                };
                let filled = (fraction * 30.0).round() as usize;
                format!(
                    "{} [{}{}] {:>3.0}%  {} / {}  {}",
                    state.label,
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    fraction * 100.0,
                    human::size(done),
                    human::size(total),
                    elapsed
                )
            }
            None => format!("{} {}  {}", state.label, spinner[tick % 4], elapsed),
        };
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        tick += 1;
        let guard = state.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = state
            .wake
            .1
            .wait_timeout(guard, Duration::from_millis(100))
            .map(|_| ());
        if state.stop.load(Ordering::Acquire) {
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            return;
        }
    }
}

/// Counts bytes for a [`Progress`].
#[derive(Clone)]
pub struct Counter(Arc<State>);

/// A reader that reports what it reads.
pub struct CountingReader<R> {
    pub inner: R,
    pub counter: Counter,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.0.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A writer that reports what it writes.
pub struct CountingWriter<W> {
    pub inner: W,
    pub counter: Counter,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counter.0.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
