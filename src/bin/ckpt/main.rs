//! `ckpt`: look inside a checkpoint store and keep it healthy (cargo feature `cli`).
//!
//! Layout: `main.rs` (arguments, dispatch, exit codes), `open.rs` (opening the store, finding a
//! function), `inspect.rs` (stats, ls, show), `maintain.rs` (rm, clear, evict, verify, compact),
//! `archive.rs` (export, import), `salvage.rs` (salvage), `human.rs` (sizes, durations,
//! tables), `json.rs` (the `--json` forms), `progress.rs` (the progress line), `output.rs`
//! (stdout, failures), `remote.rs` (`ckpt remote`, feature `remote`).

mod archive;
mod human;
mod inspect;
mod json;
mod maintain;
mod open;
mod output;
mod progress;
mod prometheus;
#[cfg(feature = "remote")]
mod remote;
mod salvage;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ckpt::OpenCheck;

use crate::output::{Failure, Out, one_line};

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 failure (a missing file, a file that is not a store, a store held by \
another process, an unknown id or function, a damaged or newer archive, `verify` finding \
problems it did not repair); 2 usage (a malformed argument, size, duration or id).

The store defaults to the one the library uses: $CKPT_DIR/checkpoints.redb, or \
.ckpt/checkpoints.redb under the working directory. `ckpt COMMAND --help` lists the fields of \
each command's --json output.";

/// Look inside a ckpt checkpoint store and keep it healthy.
#[derive(Parser, Debug)]
#[command(name = "ckpt", version, after_help = AFTER_HELP, after_long_help = AFTER_HELP)]
struct Cli {
    /// The store file [default: $CKPT_DIR/checkpoints.redb, or .ckpt/checkpoints.redb]
    #[arg(short, long, global = true, value_name = "PATH", display_order = 100)]
    store: Option<PathBuf>,

    /// What opening checks: `auto` opens a cleanly closed file in constant time and checks
    /// every page after a crash; `full` reads every page of the file and verifies it at every
    /// open; `trust` never checks more than the engine's crash recovery (run `ckpt verify` now
    /// and then)
    #[arg(long, global = true, value_enum, default_value_t = Check::Auto, value_name = "CHECK", display_order = 101)]
    open_check: Check,

    /// Print JSON (stable field names; see each command's --help) instead of text
    #[arg(long, global = true, display_order = 102)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Auto,
    Full,
    Trust,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Totals and per-function statistics
    ///
    /// Totals, then one row per function: entries, stored bytes, hits, misses, hit ratio,
    /// compute time saved, corrupt entries dropped, evictions by cause; and the file's size and
    /// reclaimable space.
    #[command(after_long_help = json::STATS_HELP)]
    Stats(StatsArgs),

    /// List entries with their metadata
    #[command(after_long_help = json::LS_HELP)]
    Ls(LsArgs),

    /// One entry's metadata, or (--raw) its stored value's bytes
    #[command(after_long_help = json::SHOW_HELP)]
    Show(ShowArgs),

    /// Remove entries: by id, every entry of a function, or the stale ones
    #[command(after_long_help = json::RM_HELP)]
    Rm(RmArgs),

    /// Remove every entry (statistics are kept)
    #[command(after_long_help = json::CLEAR_HELP)]
    Clear(ClearArgs),

    /// Remove entries over a size or count cap, or older than an age
    #[command(after_long_help = json::EVICT_HELP)]
    Evict(EvictArgs),

    /// Check the store; --repair fixes what it finds
    ///
    /// Checks every page of the file, then the consistency of ckpt's tables (every result with
    /// its metadata, checksums, order indexes, per-function counts).
    #[command(after_long_help = json::VERIFY_HELP)]
    Verify(VerifyArgs),

    /// Rewrite the file without its free space, and shrink it
    #[command(after_long_help = json::COMPACT_HELP)]
    Compact,

    /// Write entries to a portable archive (FILE, or - for stdout)
    #[command(after_long_help = json::EXPORT_HELP)]
    Export(ExportArgs),

    /// Read entries from an archive (FILE, or - for stdin), creating the store if missing
    #[command(after_long_help = json::IMPORT_HELP)]
    Import(ImportArgs),

    /// Copy every intact entry of a damaged store (DAMAGED) into a new one (NEW)
    ///
    /// For a store that opening refuses as corrupted, or that `verify --repair` cannot fix:
    /// every entry whose record passes its checksum is copied, with its metadata and its
    /// functions' statistics where they can be read; the report says what was lost.
    #[command(after_long_help = salvage::SALVAGE_HELP)]
    Salvage(salvage::SalvageArgs),

    /// A shared tier: list, count, expire, publish to and prefetch from a remote
    #[cfg(feature = "remote")]
    #[command(after_long_help = remote::REMOTE_HELP)]
    Remote(remote::RemoteArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Largest first
    Size,
    /// Most hits first
    Hits,
    /// Oldest first
    Age,
    /// Most recently hit (or saved) first
    LastHit,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only the entries of this function (`module::path::name`, or a unique end of it)
    #[arg(short, long, value_name = "F")]
    function: Option<String>,
    /// Order of the rows [default: by id]
    #[arg(long, value_enum, value_name = "KEY")]
    sort: Option<SortKey>,
    /// Reverse the order
    #[arg(short, long)]
    reverse: bool,
    /// Show at most N entries
    #[arg(short = 'n', long, value_name = "N")]
    limit: Option<usize>,
}

/// How `ckpt stats` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StatsFormat {
    /// Aligned tables
    #[default]
    Text,
    /// JSON, as --json
    Json,
    /// Prometheus's text exposition format (for a textfile collector or a push gateway)
    Prometheus,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = StatsFormat::Text, value_name = "FORMAT")]
    format: StatsFormat,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The entry's id: its 32 hex digits, or a unique prefix of at least 4
    #[arg(value_parser = parse_id)]
    id: IdArg,
    /// Write the stored value's bytes (postcard, without ckpt's 32-byte record header) to
    /// stdout, which must not be a terminal
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).multiple(true).args(["ids", "function", "stale"]))]
pub struct RmArgs {
    /// Ids of the entries to remove (each 32 hex digits, or a unique prefix of at least 4)
    #[arg(value_parser = parse_id, value_name = "ID", conflicts_with_all = ["function", "stale"])]
    ids: Vec<IdArg>,
    /// Every entry of this function (with --stale: only its stale ones)
    #[arg(short, long, value_name = "F")]
    function: Option<String>,
    /// The entries of code versions other than the newest recorded for their function
    #[arg(long)]
    stale: bool,
}

#[derive(Args, Debug)]
pub struct ClearArgs {
    /// Confirm: remove every entry
    #[arg(long)]
    yes: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Least recently used first
    Lru,
    /// Least frequently used first
    Lfu,
    /// Oldest first
    Fifo,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("limit").required(true).multiple(true).args(["max_bytes", "max_entries", "older_than"]))]
pub struct EvictArgs {
    /// Evict until the stored bytes are at most SIZE (512MiB, 2GB, 4096)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Evict until at most N entries remain
    #[arg(long, value_name = "N")]
    max_entries: Option<u64>,
    /// Remove entries saved longer ago than DURATION (7d, 12h, 1h30m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// Which entries go first when over a cap
    #[arg(long, value_enum, default_value_t = Policy::Lru)]
    policy: Policy,
    /// Report what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Fix what the check finds (drops damaged entries, rebuilds indexes and counts)
    #[arg(long)]
    repair: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The archive to write, or - for stdout
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Only the entries of this function
    #[arg(short, long, value_name = "F")]
    function: Option<String>,
    /// Replace FILE if it exists
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The archive to read, or - for stdin
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// An id as typed: all 32 hex digits, or the first few (at least 4), as git takes a commit's.
#[derive(Debug, Clone)]
pub struct IdArg(String);

impl std::fmt::Display for IdArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_id(text: &str) -> Result<IdArg, String> {
    let t = text.trim().to_ascii_lowercase();
    if (4..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(IdArg(t))
    } else {
        Err(format!(
            "malformed id {text:?}: an id is 32 hex digits (or a unique prefix of at least 4)"
        ))
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    human::parse_size(text)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    human::parse_duration(text)
}

/// What every command gets: the store path and the global options.
pub struct Context {
    pub path: PathBuf,
    pub check: OpenCheck,
    pub json: bool,
    pub out: Out,
}

fn run(cli: Cli) -> output::Result {
    let mut cx = Context {
        path: cli.store.unwrap_or_else(ckpt::defaults::default_store_path),
        check: match cli.open_check {
            Check::Auto => OpenCheck::Auto,
            Check::Full => OpenCheck::Full,
            Check::Trust => OpenCheck::Trust,
        },
        json: cli.json,
        out: Out::new(),
    };
    match cli.command {
        Command::Stats(args) => inspect::stats(&mut cx, args)?,
        Command::Ls(args) => inspect::ls(&mut cx, args)?,
        Command::Show(args) => inspect::show(&mut cx, args)?,
        Command::Rm(args) => maintain::rm(&mut cx, args)?,
        Command::Clear(args) => maintain::clear(&mut cx, args)?,
        Command::Evict(args) => maintain::evict(&mut cx, args)?,
        Command::Verify(args) => maintain::verify(&mut cx, args)?,
        Command::Compact => maintain::compact(&mut cx)?,
        Command::Export(args) => archive::export(&mut cx, args)?,
        Command::Import(args) => archive::import(&mut cx, args)?,
        Command::Salvage(args) => salvage::salvage(&mut cx, args)?,
        #[cfg(feature = "remote")]
        Command::Remote(args) => remote::remote(&mut cx, args)?,
    }
    cx.out.flush()
}

/// Prints a clap error: help and version as clap does (exit 0); a malformed value as one line
/// (exit 2); other usage errors with clap's usage text (exit 2).
fn clap_failure(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    let code = e.exit_code();
    match e.kind() {
        K::ValueValidation | K::InvalidValue => {
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let _ = writeln!(std::io::stderr(), "{}", one_line(first));
        }
        _ => {
            let _ = e.print();
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(output::USAGE))
}

fn main() -> ExitCode {
    // The hook prints nothing: the library contains the storage engine's panics on a damaged
    // file (and returns a typed error, which is the one line to print), so a panic is worth a
    // word only if it reaches here, uncaught. Then it is one line and exit code 1, never a
    // backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(e),
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure { code, message })) => {
            if let Some(m) = message {
                let _ = writeln!(std::io::stderr(), "error: {}", one_line(&m));
            }
            ExitCode::from(code)
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            let _ = writeln!(
                std::io::stderr(),
                "error: internal error ({}); please report it",
                one_line(&what)
            );
            ExitCode::from(output::FAILURE)
        }
    }
}
