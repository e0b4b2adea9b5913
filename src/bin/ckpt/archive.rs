//! `export`, `import`: moving entries between stores and machines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::human;
use crate::maintain::plural;
use ckpt::AccessMode;

use crate::open::{self, Missing};
use crate::output::{Failure, Result};
use crate::progress::{CountingReader, CountingWriter, Progress};
use crate::{Context, ExportArgs, ImportArgs};

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Where an export goes before it is complete: beside the target, renamed over it at the end,
/// so that a failed export never leaves a partial archive under the name.
fn temporary(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    target.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Archives hold what stores hold, so they get the same mode: readable by the owner only.
#[cfg(unix)]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600)
}

#[cfg(not(unix))]
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    options
}

pub fn export(cx: &mut Context, args: ExportArgs) -> Result {
    let to_stdout = is_stdio(&args.file);
    if !to_stdout && !args.force && args.file.exists() {
        return Err(Failure::fail(format!(
            "{} exists; give --force to replace it",
            args.file.display()
        )));
    }
    let store = open::open(&cx.path, cx.check, Missing::Fail, AccessMode::ReadOnly)?;
    let function = match &args.function {
        Some(f) => Some(open::function(&store, f)?),
        None => None,
    };
    let estimate = match &function {
        Some(f) => f.stored_bytes,
        None => store.stats()?.stored_bytes,
    };
    let run = |out: &mut dyn Write| {
        let progress = Progress::start("exporting", Some(estimate));
        let counting = CountingWriter {
            inner: out,
            counter: progress.counter(),
        };
        match &function {
            Some(f) => store.export_of(&open::identity(f), counting),
            None => store.export(counting),
        }
    };
    let report = if to_stdout {
        let stdout = io::stdout();
        let mut lock = stdout.lock();
        let report = run(&mut lock)?;
        lock.flush()?;
        report
    } else {
        let tmp = temporary(&args.file);
        let written = (|| -> Result<_> {
            let file = private(OpenOptions::new().write(true).create_new(true))
                .open(&tmp)
                .map_err(|e| Failure::fail(format!("cannot create {}: {e}", tmp.display())))?;
            let mut w = BufWriter::new(file);
            let report = run(&mut w)?;
            let file = w.into_inner().map_err(|e| {
                Failure::fail(format!("cannot write {}: {}", tmp.display(), e.error()))
            })?;
            file.sync_all()
                .map_err(|e| Failure::fail(format!("cannot write {}: {e}", tmp.display())))?;
            fs::rename(&tmp, &args.file).map_err(|e| {
                Failure::fail(format!("cannot create {}: {e}", args.file.display()))
            })?;
            Ok(report)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?
    };
    let file = args.file.display().to_string();
    if cx.json {
        let v = json!({
            "file": file,
            "functions": report.functions,
            "entries": report.entries,
            "record_bytes": report.record_bytes,
            "archive_bytes": report.archive_bytes,
            "skipped_unnamed": report.skipped_unnamed,
            "skipped_damaged": report.skipped_damaged,
        });
        if to_stdout {
            // stdout holds the archive: the summary goes to stderr.
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            let _ = writeln!(io::stderr(), "{text}");
            return Ok(());
        }
        return cx.out.json(&v);
    }
    let mut line = format!(
        "exported {} of {} ({} of records) to {}",
        plural(report.entries, "entry", "entries"),
        plural(report.functions, "function", "functions"),
        human::size(report.record_bytes),
        if to_stdout { "stdout" } else { &file }
    );
    let skipped = report.skipped_unnamed + report.skipped_damaged;
    if skipped > 0 {
        line.push_str(&format!(
            "; left out {} damaged and {} whose function is unnamed",
            report.skipped_damaged, report.skipped_unnamed
        ));
    }
    if to_stdout {
        // stdout holds the archive: the summary goes to stderr.
        let _ = writeln!(io::stderr(), "{line}");
        return Ok(());
    }
    cx.out.line(&line)
}

pub fn import(cx: &mut Context, args: ImportArgs) -> Result {
    let from_stdin = is_stdio(&args.file);
    let (reader, total): (Box<dyn io::Read>, Option<u64>) = if from_stdin {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(&args.file).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Failure::fail(format!(
                    "no archive at {}: the file does not exist",
                    args.file.display()
                ))
            } else {
                Failure::fail(format!("cannot read {}: {e}", args.file.display()))
            }
        })?;
        let len = file.metadata().ok().map(|m| m.len());
        (Box::new(file), len)
    };
    // A failed import into a store it created leaves nothing behind: not the file, nor the
    // folder it made for it.
    let created = !cx.path.exists();
    let folder = cx.path.parent().filter(|d| !d.as_os_str().is_empty());
    let folder_created = folder.is_some_and(|d| !d.exists());
    let store = open::open(&cx.path, cx.check, Missing::Create, AccessMode::ReadWrite)?;
    let imported = {
        let progress = Progress::start("importing", total);
        store
            .import(CountingReader {
                inner: reader,
                counter: progress.counter(),
            })
            .map_err(|e| {
                let m = e.to_string();
                Failure::fail(format!(
                    "{}: {m}; nothing was imported",
                    if from_stdin {
                        "stdin".to_string()
                    } else {
                        args.file.display().to_string()
                    }
                ))
            })
    };
    let report = match imported {
        Ok(report) => report,
        Err(failure) => {
            if created {
                drop(store);
                let _ = fs::remove_file(&cx.path);
                if let (Some(dir), true) = (folder, folder_created) {
                    // Only if empty: another file may have appeared there meanwhile.
                    let _ = fs::remove_dir(dir);
                }
            }
            return Err(failure);
        }
    };
    if cx.json {
        return cx.out.json(&json!({
            "file": args.file.display().to_string(),
            "archive_version": report.archive_version,
            "exported_at_ms": human::ms(report.exported_at),
            "exported_at": human::rfc3339(report.exported_at),
            "functions": report.functions,
            "entries": report.entries,
            "record_bytes": report.record_bytes,
            "replaced": report.replaced,
            "archive_bytes": report.archive_bytes,
        }));
    }
    cx.out.line(&format!(
        "imported {} of {} ({} of records; {} replaced) from an archive written {}",
        plural(report.entries, "entry", "entries"),
        plural(report.functions, "function", "functions"),
        human::size(report.record_bytes),
        report.replaced,
        human::timestamp(report.exported_at)
    ))
}
