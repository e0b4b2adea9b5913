//! What a command hands back: its output on stdout, or a [`Failure`] with an exit code and one
//! line for stderr.

use std::io::{self, Write};

/// Exit code: the command failed (a missing or unreadable store, an unknown id, a bad archive).
pub const FAILURE: u8 = 1;
/// Exit code: the command line was wrong (clap's own errors exit with 2 too).
pub const USAGE: u8 = 2;

/// Why a command stopped: the exit code, and the one-line message for stderr (none for a closed
/// stdout, which ends the command quietly, as `ckpt ls | head` expects).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: Option<String>,
}

pub type Result<T = ()> = std::result::Result<T, Failure>;

impl Failure {
    pub fn fail(message: impl Into<String>) -> Failure {
        Failure {
            code: FAILURE,
            message: Some(message.into()),
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            message: Some(message.into()),
        }
    }

    /// The same failure, its message ending with `suffix`.
    pub fn with_suffix(mut self, suffix: &str) -> Failure {
        if let Some(m) = &mut self.message {
            m.push_str(suffix);
        }
        self
    }
}

/// The library's messages name its API where they say what to do; a user of the tool is told
/// the command instead.
pub fn for_the_tool(message: &str) -> String {
    message
        .replace("Store::salvage", "`ckpt salvage`")
        .replace("run Store::repair", "run `ckpt verify --repair`")
        .replace("Store::repair", "`ckpt verify --repair`")
        .replace("run Store::verify", "run `ckpt verify`")
        .replace("Store::verify", "`ckpt verify`")
        .replace(
            "open it once without read_only (Store::open) to recover it",
            "run `ckpt verify --repair` to recover it",
        )
}

impl From<ckpt::Error> for Failure {
    fn from(e: ckpt::Error) -> Failure {
        Failure::fail(for_the_tool(&e.to_string()))
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure {
                code: 0,
                message: None,
            }
        } else {
            Failure::fail(format!("cannot write the output: {e}"))
        }
    }
}

/// Flattens a message to one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Standard output, buffered; errors (a closed pipe) become [`Failure`]s.
pub struct Out {
    inner: io::BufWriter<io::StdoutLock<'static>>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            inner: io::BufWriter::new(io::stdout().lock()),
        }
    }

    pub fn text(&mut self, text: &str) -> Result {
        self.inner.write_all(text.as_bytes())?;
        Ok(())
    }

    pub fn line(&mut self, line: &str) -> Result {
        self.inner.write_all(line.as_bytes())?;
        self.inner.write_all(b"\n")?;
        Ok(())
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> Result {
        self.inner.write_all(bytes)?;
        Ok(())
    }

    /// Pretty-printed JSON and a newline.
    pub fn json(&mut self, value: &serde_json::Value) -> Result {
        serde_json::to_writer_pretty(&mut self.inner, value)
            .map_err(|e| Failure::from(io::Error::from(e)))?;
        self.inner.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result {
        self.inner.flush()?;
        Ok(())
    }
}
