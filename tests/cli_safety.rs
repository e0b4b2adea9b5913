//! The command-line tool's safety: read-only commands change no byte, a damaged store gets one
//! line, salvage fails honestly, ids by prefix, reclaimable space that holds still.

mod cli_support;
mod common;

use ckpt::Store;
use cli_support::*;
use common::TempDir;
use serde_json::Value;

#[test]
fn show_and_rm_take_a_unique_id_prefix() {
    let dir = TempDir::new("cli-prefix");
    let path = known_store(&dir);
    let all: Vec<String> = Store::open(&path)
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let target = ids_of(&path, &resize())[0].to_string();
    // The shortest prefix (of at least 4) that no other id shares.
    let unique = (4..=32)
        .map(|n| &target[..n])
        .find(|p| all.iter().filter(|id| id.starts_with(p)).count() == 1)
        .unwrap();
    let v = json(ckpt(&path, &["rm", unique, "--json"]));
    assert_eq!(v["removed"], 1);
    assert_eq!(v["ids"][0], target, "the prefix resolves to the full id");
    assert!(
        !ids_of(&path, &resize())
            .iter()
            .any(|id| id.to_string() == target)
    );
    // A prefix two ids share is refused, and nothing is removed.
    let shared = (4..32)
        .flat_map(|n| all.iter().map(move |id| &id[..n]))
        .find(|p| all.iter().filter(|id| id.starts_with(p)).count() > 1);
    if let Some(p) = shared {
        let before = Store::open(&path).unwrap().entries().unwrap().len();
        fails(ckpt(&path, &["show", p]), 1, "type more of the id");
        fails(ckpt(&path, &["rm", p]), 1, "nothing removed");
        assert_eq!(Store::open(&path).unwrap().entries().unwrap().len(), before);
    }
}

/// The commands that change nothing open the store read-only: not a byte of the file changes
/// (issue 10, item 4). Before, each rewrote 100–200 bytes of the engine's header.
#[test]
fn read_only_commands_change_no_byte_of_the_store() {
    let dir = TempDir::new("cli-ro-bytes");
    let path = known_store(&dir);
    let id = ids_of(&path, &embed("2"))[0].to_string();
    let archive = dir.join("out.ckpt");
    let before = std::fs::read(&path).unwrap();
    let commands: [&[&str]; 9] = [
        &["stats"],
        &["stats", "--json"],
        &["ls"],
        &["ls", "--function", "embed", "--sort", "hits"],
        &["show", &id],
        &["show", &id, "--raw"],
        &["export", archive.to_str().unwrap()],
        &["verify"],
        &["evict", "--max-entries", "2", "--dry-run"],
    ];
    for args in commands {
        ok(ckpt(&path, args));
        assert!(
            std::fs::read(&path).unwrap() == before,
            "`ckpt {}` changed the store's bytes",
            args.join(" ")
        );
    }
    // The dry run reports what a real eviction then removes.
    let dry = json(ckpt(
        &path,
        &["evict", "--max-entries", "2", "--dry-run", "--json"],
    ));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["evicted"], 7);
    assert!(std::fs::read(&path).unwrap() == before);
    let real = json(ckpt(&path, &["evict", "--max-entries", "2", "--json"]));
    assert_eq!(real["entries"], dry["entries"]);
}

/// `ckpt verify` without `--repair` reports a damaged store and leaves it byte for byte as it
/// was; `--repair` then fixes it.
#[test]
fn verify_without_repair_changes_no_byte_of_a_damaged_store() {
    let dir = TempDir::new("cli-ro-damaged");
    let path = known_store(&dir);
    // Damage one record (a byte of its value: its checksum no longer matches).
    let mut done = false;
    common::tamper_results(&path, |_, row| {
        if done || row.len() < 40 {
            return None;
        }
        done = true;
        let mut row = row.to_vec();
        row[36] ^= 0x55;
        Some(row)
    });
    assert!(done);
    let before = std::fs::read(&path).unwrap();
    fails(ckpt(&path, &["verify"]), 1, "run `ckpt verify --repair`");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "verify changed the damaged store"
    );
    let v: Value = serde_json::from_slice(&ckpt(&path, &["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["bad_records"], 1);
    assert!(
        std::fs::read(&path).unwrap() == before,
        "verify --json changed the damaged store"
    );
    ok(ckpt(&path, &["verify", "--repair"]));
    assert_ne!(std::fs::read(&path).unwrap(), before);
    ok(ckpt(&path, &["verify"]));
}

/// A store file this user may not write is still inspected (read-only commands), and a command
/// that writes says it cannot.
#[cfg(unix)]
#[test]
fn read_only_commands_work_on_a_file_without_write_permission() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-ro-0444");
    let path = known_store(&dir);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&path).unwrap();
    for args in [&["stats"][..], &["ls"], &["verify"]] {
        ok(ckpt(&path, args));
    }
    // As root, permission bits do not stop writes: the bytes are what must not change.
    assert!(std::fs::read(&path).unwrap() == before);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Archives hold what stores hold, and get their mode: 0600.
#[cfg(unix)]
#[test]
fn export_writes_the_archive_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-export-mode");
    let path = known_store(&dir);
    let archive = dir.join("out.ckpt");
    ok(ckpt(&path, &["export", archive.to_str().unwrap()]));
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "archive mode {mode:o}");
    let store_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, store_mode);
}

/// An entry never hit shows no last hit (its last access is its save).
#[test]
fn ls_and_show_give_no_last_hit_to_entries_never_hit() {
    let dir = TempDir::new("cli-last-hit");
    let path = known_store(&dir);
    let out = ok(ckpt(&path, &["ls", "--function", RESIZE]));
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(RESIZE)).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in rows {
        // Columns: id, function, size, hits, created, last hit, compute.
        let cols: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cols[3], "0", "{row}");
        assert_eq!(cols[5], "-", "{row}");
    }
    // One hit entry of embed v2 still shows when.
    let out = ok(ckpt(&path, &["ls", "--function", EMBED, "--sort", "hits"]));
    let first = out.lines().nth(1).unwrap();
    assert!(first.contains(" ago"), "{out}");
    let id = ids_of(&path, &resize())[0].to_string();
    let out = ok(ckpt(&path, &["show", &id]));
    let line = out.lines().find(|l| l.starts_with("last hit")).unwrap();
    assert!(line.ends_with("none"), "{out}");
}

/// What `ckpt stats` calls reclaimable stays put until something writes (it used to vanish at
/// the next open, as the inspection itself wrote), and is what `ckpt compact` then gives back,
/// give or take the engine's own few pages.
#[test]
fn stats_reports_the_space_compact_reclaims() {
    let dir = TempDir::new("cli-reclaim");
    let path = known_store(&dir);
    let v = json(ckpt(&path, &["rm", "--function", "resize", "--json"]));
    assert_eq!(v["removed"], 2);
    let reclaimable = || {
        json(ckpt(&path, &["stats", "--json"]))["reclaimable_bytes"]
            .as_u64()
            .unwrap()
    };
    let first = reclaimable();
    assert_eq!(reclaimable(), first, "a second look sees the same space");
    assert_eq!(reclaimable(), first, "and a third");
    let v = json(ckpt(&path, &["compact", "--json"]));
    let reclaimed = v["reclaimed_bytes"].as_u64().unwrap();
    assert!(reclaimed > 0, "{v}");
    assert!(
        first.abs_diff(reclaimed) <= 4 * 4096,
        "stats said {first} reclaimable, compact reclaimed {reclaimed}"
    );
}

/// A damaged file can make the storage engine panic; the library contains that and returns a
/// typed error, and the tool prints that one line: no "internal error", no panic message.
#[test]
fn a_damaged_store_gets_one_line_never_an_internal_error() {
    let dir = TempDir::new("cli-zeroed");
    let path = known_store(&dir);
    let image = std::fs::read(&path).unwrap();
    let copy = dir.join("damaged.redb");
    let mut refused = 0;
    for page in 1..(image.len() / 4096).min(24) {
        let mut bytes = image.clone();
        bytes[page * 4096..(page + 1) * 4096].fill(0);
        for command in ["stats", "ls", "verify"] {
            std::fs::write(&copy, &bytes).unwrap();
            let out = ckpt(&copy, &[command]);
            let err = stderr(&out);
            if out.status.success() {
                continue;
            }
            refused += 1;
            assert_eq!(
                err.lines().count(),
                1,
                "page {page}, {command}: one line on stderr, got: {err}"
            );
            // (The engine's own panic message may be quoted in the line: that is the cause.)
            assert!(
                err.starts_with("error: ") && !err.contains("please report it"),
                "page {page}, {command}: {err}"
            );
        }
    }
    assert!(
        refused > 0,
        "no zeroed page was noticed: the test tests nothing"
    );
}

/// A damaged file that gives nothing back is a failure (exit 1), leaves no empty store behind,
/// and a partial salvage never claims to know exactly what it lost when it cannot.
#[test]
fn salvage_of_a_file_with_nothing_left_fails_and_leaves_nothing() {
    let dir = TempDir::new("cli-salvage-nothing");
    let path = known_store(&dir);
    let image = std::fs::read(&path).unwrap();
    // Only the engine's header region: every record was past it.
    let truncated = dir.join("truncated.redb");
    std::fs::write(&truncated, &image[..4096]).unwrap();
    let new = dir.join("new.redb");
    fails(
        ckpt_in(
            None,
            &[
                "salvage",
                truncated.to_str().unwrap(),
                new.to_str().unwrap(),
            ],
        ),
        1,
        "nothing could be salvaged",
    );
    assert!(!new.exists(), "no empty store left as if it were a result");
    // Half the file: whatever is recovered, the text never says "lost 0" unless it knows.
    std::fs::write(&truncated, &image[..image.len() / 2]).unwrap();
    let out = ckpt_in(
        None,
        &[
            "salvage",
            truncated.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
    );
    let text = stdout(&out);
    if out.status.success() && !text.contains("statistics recovered") {
        assert!(!text.contains("; lost 0\n"), "{text}");
        assert!(text.contains("; lost at least "), "{text}");
    }
}

/// The same, for real: the read-only commands run as an unprivileged user (`setpriv`, when the
/// tests run as root and it is installed) on a store that user may read but not write, and
/// succeed. A writable open would fail here with "permission denied".
#[cfg(unix)]
#[test]
fn read_only_commands_work_for_a_user_who_may_not_write() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !root || !setpriv.exists() {
        eprintln!("skipped: needs root and /usr/bin/setpriv to run as another user");
        return;
    }
    let dir = TempDir::new("cli-ro-nobody");
    let path = known_store(&dir);
    // Readable and traversable by everyone, writable by nobody but root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .arg("--store")
            .arg(&path)
            .args(args)
            .env_remove("CKPT_DIR")
            .output()
            .unwrap()
    };
    for args in [&["stats"][..], &["ls"], &["verify"], &["export", "-"]] {
        let out = as_nobody(args);
        assert!(
            out.status.success(),
            "{args:?} as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A command that writes is refused with one line, not a panic.
    let out = as_nobody(&["rm", "--stale"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(std::fs::read(&path).unwrap() == before);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
}
