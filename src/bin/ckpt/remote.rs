//! `ckpt remote --remote URL ls | stats | gc | push | pull` (feature `remote`): housekeeping of
//! a shared tier. Object stores keep no access time: gc goes by an object's age and by stale
//! code version among the remote's own objects (`ckpt::remote::Expiry`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use ckpt::remote::{Expiry, RemoteObject, expired};
use ckpt::{AccessMode, PublishMode, Remote, RemoteMode, Store};

use crate::human::{self, Table};
use crate::maintain::plural;
use crate::open::{self, Missing};
use crate::output::{Failure, Result};
use crate::progress::Progress;
use crate::{Context, json as j, parse_duration};

pub const REMOTE_HELP: &str = "\
The remote is s3://bucket/prefix (configured by the AWS_* environment: AWS_ACCESS_KEY_ID, \
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP=true for a plain-http \
server), file:///shared/folder, or memory:// (useless here: it lives in one process). Object \
stores record no access time: gc removes by an object's age (its last write) and by stale code \
version, judged among the remote's own objects (a function's newest code version is the one of \
its most recently written object). The live per-tier counters (hits, backfills, publishes, ...) \
are in memory: Store::stats().remote in the process that uses the remote.";

pub const LS_HELP: &str = "\
JSON (--json): {remote, total, objects: [OBJECT]}; total counts the objects before --function
  OBJECT: {location, id, function, function_key, code_version, code_hash, version, value_type, \
stale, size_bytes, last_modified_ms, last_modified}; id, function and the fields after it are \
null for an object whose header is unreadable (damaged or foreign)";

pub const STATS_HELP: &str = "\
JSON (--json): {remote, objects, bytes, unreadable, stale_objects, stale_bytes, functions: \
[{function, key, objects, bytes, code_versions, stale_objects, stale_bytes, oldest_ms, \
newest_ms}]}; unreadable counts objects whose header fails its checks";

pub const GC_HELP: &str = "\
Removes exactly the objects it lists (--dry-run: lists them, removes nothing). Durations: ms, s, \
m, h, d, w, combinable (1h30m).
JSON (--json): {dry_run, removed, bytes, by_cause: {age, stale}, objects: [{location, id, \
function, size_bytes, last_modified_ms, cause}]}; removed counts the objects removed (in a dry \
run, the ones that would be)";

pub const PUSH_HELP: &str = "\
Publishes every entry of the local store (--store) that the remote lacks, create-if-absent: \
an object already there is left as it is. Entries of a code version older than their \
function's newest in the store are skipped (the store keeps no identity for them). Exits 1 if \
a publish failed.
JSON (--json): {published, already_present, skipped, failed, bytes}";

pub const PULL_HELP: &str = "\
Fetches the remote's objects of function F of its newest code version in the remote (see gc \
--stale: older code versions are not pulled, so that the local store's newest code version \
stays the remote's), checks them and writes them into the local store (--store, created if \
missing), as a local miss would.
JSON (--json): {function, objects, pulled, already_local, not_pulled, bytes}";

#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// The remote: s3://bucket/prefix, file:///folder
    #[arg(long, value_name = "URL")]
    remote: String,
    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Subcommand, Debug)]
enum RemoteCommand {
    /// List the remote's objects
    #[command(after_long_help = LS_HELP)]
    Ls(LsArgs),
    /// Objects and bytes in the remote, per function
    #[command(after_long_help = STATS_HELP)]
    Stats,
    /// Remove old objects, or those of stale code versions
    #[command(after_long_help = GC_HELP)]
    Gc(GcArgs),
    /// Publish every entry of the local store to the remote
    #[command(after_long_help = PUSH_HELP)]
    Push,
    /// Prefetch a function's objects into the local store
    #[command(after_long_help = PULL_HELP)]
    Pull(PullArgs),
}

#[derive(Args, Debug)]
struct LsArgs {
    /// Only the objects of this function (`module::path::name`, or a unique end of it)
    #[arg(short, long, value_name = "F")]
    function: Option<String>,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("rule").required(true).multiple(true).args(["older_than", "stale"]))]
struct GcArgs {
    /// Objects written longer ago than DURATION (30d, 12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// Objects of a code version other than their function's newest in the remote
    #[arg(long)]
    stale: bool,
    /// Report what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
struct PullArgs {
    /// The function (`module::path::name`, or a unique end of it)
    #[arg(short, long, value_name = "F")]
    function: String,
}

pub fn remote(cx: &mut Context, args: RemoteArgs) -> Result {
    let remote = Remote::open(&args.remote).map_err(|e| Failure::fail(e.to_string()))?;
    match args.command {
        RemoteCommand::Ls(a) => ls(cx, &remote, a),
        RemoteCommand::Stats => stats(cx, &remote),
        RemoteCommand::Gc(a) => gc(cx, &remote, a),
        RemoteCommand::Push => push(cx, &remote),
        RemoteCommand::Pull(a) => pull(cx, &remote, a),
    }
}

/// Every object, with a spinner on a terminal while the headers are read.
fn list(remote: &Remote) -> Result<Vec<RemoteObject>> {
    let progress = Progress::start("listing", None);
    let objects = remote.objects().map_err(|e| Failure::fail(e.to_string()))?;
    drop(progress);
    Ok(objects)
}

fn path_of(o: &RemoteObject) -> Option<String> {
    o.function.as_ref().map(|f| f.path())
}

/// The function path `wanted` names among the objects' functions: the full path, or a unique
/// end of it at a `::`.
fn resolve(objects: &[RemoteObject], wanted: &str, url: &str) -> Result<String> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Err(Failure::usage(
            "--function needs a function path, like app::embed",
        ));
    }
    let mut paths: Vec<String> = objects.iter().filter_map(path_of).collect();
    paths.sort();
    paths.dedup();
    if paths.iter().any(|p| p == wanted) {
        return Ok(wanted.to_string());
    }
    let suffix = format!("::{wanted}");
    let matches: Vec<&String> = paths.iter().filter(|p| p.ends_with(&suffix)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Failure::fail(format!(
            "no objects of function {wanted} in remote {url}; `ckpt remote --remote {url} stats` \
             lists its functions"
        ))),
        many => Err(Failure::fail(format!(
            "function {wanted} is ambiguous: it matches {}; give the full path",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The locations of the objects of stale code versions (a set: listings run to many thousands).
fn stale_locations(objects: &[RemoteObject]) -> HashSet<String> {
    expired(objects, &[Expiry::StaleCode], SystemTime::now())
        .into_iter()
        .map(|e| e.object.location)
        .collect()
}

fn object_json(o: &RemoteObject, stale: bool) -> Value {
    let f = o.function.as_ref();
    json!({
        "location": o.location,
        "id": o.id.map(|id| id.to_string()),
        "function": f.map(|f| f.path()),
        "function_key": f.map(|f| j::hex64(f.key())),
        "code_version": f.map(|f| j::hex64(f.code_version())),
        "code_hash": f.and_then(|f| f.code_hash()).map(j::hex64),
        "version": f.and_then(|f| f.version()),
        "value_type": o.value_type,
        "stale": stale,
        "size_bytes": o.size,
        "last_modified_ms": human::ms(o.last_modified),
        "last_modified": human::rfc3339(o.last_modified),
    })
}

fn ls(cx: &mut Context, remote: &Remote, args: LsArgs) -> Result {
    let objects = list(remote)?;
    let total = objects.len();
    let stale = stale_locations(&objects);
    let shown: Vec<&RemoteObject> = match &args.function {
        Some(f) => {
            let path = resolve(&objects, f, remote.url())?;
            objects
                .iter()
                .filter(|o| path_of(o).as_deref() == Some(path.as_str()))
                .collect()
        }
        None => objects.iter().collect(),
    };
    let is_stale = |o: &RemoteObject| stale.contains(&o.location);
    if cx.json {
        let list: Vec<Value> = shown.iter().map(|o| object_json(o, is_stale(o))).collect();
        return cx.out.json(&json!({
            "remote": remote.url(),
            "total": total,
            "objects": list,
        }));
    }
    let now = SystemTime::now();
    let mut t = Table::new(&[
        ("ID", false),
        ("FUNCTION", false),
        ("VERSION", false),
        ("SIZE", true),
        ("WRITTEN", false),
    ]);
    for o in &shown {
        let (id, function, version) = match (&o.id, &o.function) {
            (Some(id), Some(f)) => {
                let mut v = j::hex64(f.code_version());
                if is_stale(o) {
                    v.push_str(" (stale)");
                }
                (id.to_string(), f.path(), v)
            }
            _ => (o.location.clone(), "(unreadable)".into(), String::new()),
        };
        t.row(vec![
            id,
            function,
            version,
            human::size(o.size),
            human::ago(o.last_modified, now),
        ]);
    }
    cx.out.text(&t.render())?;
    cx.out.line(&format!(
        "{} of {} in {}",
        plural(shown.len() as u64, "object", "objects"),
        total,
        remote.url()
    ))
}

#[derive(Default)]
struct Per {
    key: u64,
    objects: u64,
    bytes: u64,
    versions: Vec<u64>,
    stale_objects: u64,
    stale_bytes: u64,
    oldest: Option<SystemTime>,
    newest: Option<SystemTime>,
}

fn stats(cx: &mut Context, remote: &Remote) -> Result {
    let objects = list(remote)?;
    let stale = stale_locations(&objects);
    let mut per: BTreeMap<String, Per> = BTreeMap::new();
    let (mut bytes, mut unreadable, mut stale_objects, mut stale_bytes) = (0, 0, 0, 0);
    for o in &objects {
        bytes += o.size;
        let Some(f) = &o.function else {
            unreadable += 1;
            continue;
        };
        let p = per.entry(f.path()).or_default();
        p.key = f.key();
        p.objects += 1;
        p.bytes += o.size;
        if !p.versions.contains(&f.code_version()) {
            p.versions.push(f.code_version());
        }
        if stale.contains(&o.location) {
            p.stale_objects += 1;
            p.stale_bytes += o.size;
            stale_objects += 1;
            stale_bytes += o.size;
        }
        p.oldest = Some(p.oldest.map_or(o.last_modified, |t| t.min(o.last_modified)));
        p.newest = Some(p.newest.map_or(o.last_modified, |t| t.max(o.last_modified)));
    }
    if cx.json {
        let functions: Vec<Value> = per
            .iter()
            .map(|(path, p)| {
                json!({
                    "function": path,
                    "key": j::hex64(p.key),
                    "objects": p.objects,
                    "bytes": p.bytes,
                    "code_versions": p.versions.len(),
                    "stale_objects": p.stale_objects,
                    "stale_bytes": p.stale_bytes,
                    "oldest_ms": p.oldest.map(human::ms),
                    "newest_ms": p.newest.map(human::ms),
                })
            })
            .collect();
        return cx.out.json(&json!({
            "remote": remote.url(),
            "objects": objects.len(),
            "bytes": bytes,
            "unreadable": unreadable,
            "stale_objects": stale_objects,
            "stale_bytes": stale_bytes,
            "functions": functions,
        }));
    }
    let now = SystemTime::now();
    cx.out.line(&format!("remote     {}", remote.url()))?;
    cx.out.line(&format!(
        "objects    {} ({}), {} stale ({}), {} unreadable",
        objects.len(),
        human::size(bytes),
        stale_objects,
        human::size(stale_bytes),
        unreadable
    ))?;
    cx.out.line(
        "live counters (hits, backfills, publishes) are kept in memory: Store::stats().remote \
         in the process using the remote",
    )?;
    if per.is_empty() {
        return Ok(());
    }
    cx.out.line("")?;
    let mut t = Table::new(&[
        ("FUNCTION", false),
        ("OBJECTS", true),
        ("BYTES", true),
        ("VERSIONS", true),
        ("STALE", true),
        ("NEWEST", false),
    ]);
    for (path, p) in &per {
        t.row(vec![
            path.clone(),
            p.objects.to_string(),
            human::size(p.bytes),
            p.versions.len().to_string(),
            p.stale_objects.to_string(),
            p.newest.map_or(String::new(), |n| human::ago(n, now)),
        ]);
    }
    cx.out.text(&t.render())
}

fn cause_name(c: Expiry) -> &'static str {
    match c {
        Expiry::OlderThan(_) => "age",
        Expiry::StaleCode => "stale",
        _ => "other",
    }
}

fn gc(cx: &mut Context, remote: &Remote, args: GcArgs) -> Result {
    let objects = list(remote)?;
    let mut rules = Vec::new();
    if let Some(age) = args.older_than {
        rules.push(Expiry::OlderThan(age));
    }
    if args.stale {
        rules.push(Expiry::StaleCode);
    }
    let chosen = expired(&objects, &rules, SystemTime::now());
    let gone: Vec<RemoteObject> = chosen.iter().map(|e| e.object.clone()).collect();
    let removed = if args.dry_run {
        gone.len() as u64
    } else {
        let progress = Progress::start("removing", None);
        let removed = remote
            .remove(&gone)
            .map_err(|e| Failure::fail(e.to_string()))?;
        drop(progress);
        removed
    };
    let bytes: u64 = gone.iter().map(|o| o.size).sum();
    let mut by_cause: HashMap<&str, u64> = HashMap::new();
    for e in &chosen {
        *by_cause.entry(cause_name(e.cause)).or_default() += 1;
    }
    let count = |c: &str| by_cause.get(c).copied().unwrap_or(0);
    if cx.json {
        let list: Vec<Value> = chosen
            .iter()
            .map(|e| {
                json!({
                    "location": e.object.location,
                    "id": e.object.id.map(|id| id.to_string()),
                    "function": path_of(&e.object),
                    "size_bytes": e.object.size,
                    "last_modified_ms": human::ms(e.object.last_modified),
                    "cause": cause_name(e.cause),
                })
            })
            .collect();
        return cx.out.json(&json!({
            "dry_run": args.dry_run,
            "removed": removed,
            "bytes": bytes,
            "by_cause": {"age": count("age"), "stale": count("stale")},
            "objects": list,
        }));
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut line = format!(
        "{verb} {} ({}) of {} in {}",
        plural(removed, "object", "objects"),
        human::size(bytes),
        objects.len(),
        remote.url()
    );
    let causes: Vec<String> = ["age", "stale"]
        .iter()
        .filter(|c| count(c) > 0)
        .map(|c| format!("{} by {c}", count(c)))
        .collect();
    if !causes.is_empty() {
        line.push_str(&format!(": {}", causes.join(", ")));
    }
    cx.out.line(&line)?;
    for e in &chosen {
        cx.out.line(&format!(
            "  {}  {}  {}  {}",
            e.object
                .id
                .map_or_else(|| e.object.location.clone(), |id| id.to_string()),
            path_of(&e.object).unwrap_or_else(|| "(unreadable)".into()),
            human::size(e.object.size),
            cause_name(e.cause)
        ))?;
    }
    Ok(())
}

/// The local store, with `remote` behind it.
fn open_store(cx: &Context, remote: &Remote, mode: RemoteMode, missing: Missing) -> Result<Store> {
    if missing == Missing::Fail {
        // The same checks and messages as every command (a missing file, another process).
        drop(open::open(
            &cx.path,
            cx.check,
            missing,
            AccessMode::ReadOnly,
        )?);
    }
    if let Some(dir) = cx.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::fail(format!("cannot create the folder {}: {e}", dir.display()))
        })?;
    }
    Store::builder()
        .open_check(cx.check)
        .remote(remote.clone(), mode)
        .publish(PublishMode::Sync)
        .open(&cx.path)
        .map_err(|e| Failure::fail(crate::output::for_the_tool(&e.to_string())))
}

fn push(cx: &mut Context, remote: &Remote) -> Result {
    let store = open_store(cx, remote, RemoteMode::ReadWrite, Missing::Fail)?;
    let progress = Progress::start("pushing", None);
    let report = store.push(&mut |_, _| {})?;
    drop(progress);
    if cx.json {
        cx.out.json(&json!({
            "published": report.published,
            "already_present": report.already_present,
            "skipped": report.skipped,
            "failed": report.failed,
            "bytes": report.bytes,
        }))?;
    } else {
        cx.out.line(&format!(
            "published {} ({}) to {}; {} there already, {} skipped (stale code versions), {} \
             failed",
            plural(report.published, "entry", "entries"),
            human::size(report.bytes),
            remote.url(),
            report.already_present,
            report.skipped,
            report.failed
        ))?;
    }
    if report.failed > 0 {
        cx.out.flush()?;
        return Err(Failure::fail(format!(
            "{} of the publishes failed; run push again",
            report.failed
        )));
    }
    Ok(())
}

fn pull(cx: &mut Context, remote: &Remote, args: PullArgs) -> Result {
    let objects = list(remote)?;
    let path = resolve(&objects, &args.function, remote.url())?;
    let stale = stale_locations(&objects);
    let wanted: Vec<RemoteObject> = objects
        .into_iter()
        .filter(|o| path_of(o).as_deref() == Some(path.as_str()) && !stale.contains(&o.location))
        .collect();
    let store = open_store(cx, remote, RemoteMode::ReadOnly, Missing::Create)?;
    let progress = Progress::start("pulling", None);
    let report = store.pull(&wanted, &mut |_, _| {})?;
    drop(progress);
    store.close()?;
    if cx.json {
        return cx.out.json(&json!({
            "function": path,
            "objects": wanted.len(),
            "pulled": report.pulled,
            "already_local": report.already_local,
            "not_pulled": report.not_pulled,
            "bytes": report.bytes,
        }));
    }
    cx.out.line(&format!(
        "pulled {} of {path} ({}) into {}; {} there already, {} not pulled",
        plural(report.pulled, "object", "objects"),
        human::size(report.bytes),
        cx.path.display(),
        report.already_local,
        report.not_pulled
    ))
}
