//! The layers keep themselves: every `crate::…` path in the library's code names a module its
//! own module may use, as ARCHITECTURE.md ("Layers") writes down. A `use` that points up a layer
//! (the record importing the cache, the store importing the decorator) fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each may use (besides itself). Keep in step with ARCHITECTURE.md.
const RULES: &[(&str, &[&str])] = &[
    // The foundation: no other module.
    ("error", &[]),
    ("stats", &[]),
    ("warn", &["error"]),
    ("id", &["error"]),
    // Identifying a call; storing one result (encode, check, decode, lend).
    ("identifier", &["error", "id"]),
    ("record", &["error"]),
    ("record_view", &["error", "record"]),
    ("flight", &["id"]),
    // Caches, and the redb store, on top of the record; the remote tier (feature `remote`)
    // below the store, which uses it.
    ("cache", &["error", "id", "record", "stats"]),
    ("remote", &["error", "id", "record", "stats", "warn"]),
    (
        "store",
        &[
            "cache",
            "error",
            "id",
            "identifier",
            "record",
            "remote",
            "stats",
        ],
    ),
    // The decorator binds an identifier and a cache; the default store is a store.
    (
        "default_store",
        &["cache", "error", "id", "record", "stats", "store"],
    ),
    (
        "decorator",
        &[
            "cache",
            "error",
            "flight",
            "id",
            "identifier",
            "record",
            "stats",
            "store",
            "warn",
        ],
    ),
    // The macro on top.
    (
        "macros",
        &[
            "cache",
            "decorator",
            "default_store",
            "error",
            "id",
            "identifier",
            "record",
            "stats",
            "store",
            "warn",
        ],
    ),
];

/// Modules outside the layers: the crate root re-exports everything, and the hidden test hooks
/// (`testing.rs`, feature `fault-injection`) reach into every layer on purpose.
const UNLAYERED: &[&str] = &["lib", "testing"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to: `src/store/read.rs` → `store`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The crate root's re-exports: `Store` → `store`, so that `crate::Store` counts as the store.
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = lib;
    while let Some(at) = rest.find("pub use ") {
        let tail = &rest[at + "pub use ".len()..];
        let end = tail.find(';').unwrap();
        let path = &tail[..end];
        rest = &tail[end..];
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            let item = item.trim();
            if !item.is_empty() && !item.contains("::") {
                names.insert(item.to_string(), module.trim().to_string());
            }
        }
    }
    names
}

/// The modules a line of code names through `crate::`: `crate::store::x`, `crate::Store`,
/// and each name of `use crate::{a::b, c}`.
fn crate_refs(line: &str, roots: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `$crate::` in a macro is the crate root of the caller: the public API, fine.
        let before = &rest[..at];
        rest = &rest[at + "crate::".len()..];
        if before.ends_with('$') || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').collect()
        } else {
            vec![rest]
        };
        for name in names {
            let head: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if head.is_empty() {
                continue;
            }
            out.push(roots.get(&head).cloned().unwrap_or(head));
        }
    }
    out
}

#[test]
fn every_crate_path_points_down_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let rules: BTreeMap<&str, BTreeSet<&str>> = RULES
        .iter()
        .map(|(m, allowed)| (*m, allowed.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        if file.starts_with(src.join("bin")) {
            continue; // the command-line tool uses the public API (`ckpt::…`) only
        }
        let module = module_of(&src, file);
        if UNLAYERED.contains(&module.as_str()) {
            continue;
        }
        let Some(allowed) = rules.get(module.as_str()) else {
            broken.push(format!(
                "{}: module `{module}` has no rule in tests/layers.rs (and ARCHITECTURE.md)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may use anything; they sit at the end of a file or in a file of their own.
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or(&text);
        for (n, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue; // docs and comments name what they like
            }
            for target in crate_refs(line, &roots) {
                checked += 1;
                if target != module && !allowed.contains(target.as_str()) {
                    broken.push(format!(
                        "{}:{}: `{module}` uses `{target}`, which is not below it: {}",
                        file.display(),
                        n + 1,
                        trimmed
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} paths seen: the scan is broken"
    );
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

/// The rule above can fail: a record importing the cache (the cycle this crate once had) is
/// caught.
#[test]
fn an_upward_import_is_caught() {
    let roots = root_names("pub use cache::{Cache, MemoryCache};\npub use store::Store;\n");
    assert_eq!(
        crate_refs("use crate::cache::{Lent, Parts};", &roots),
        ["cache"]
    );
    assert_eq!(crate_refs("x: &crate::Store,", &roots), ["store"]);
    assert_eq!(
        crate_refs("use crate::{cache::Entry, error::Error};", &roots),
        ["cache", "error"]
    );
    assert!(crate_refs("$crate::Store::open()", &roots).is_empty());
    let record_rule = RULES.iter().find(|(m, _)| *m == "record").unwrap().1;
    assert!(!record_rule.contains(&"cache"));
}
