//! Two builds of one program (tests/fixtures/shape_fixture), sharing one store: the second
//! swaps two `u32` fields of the result type, so the first build's bytes are valid bytes of the
//! second's layout, with the values swapped. The second build must recompute, not read them.
//! Its untraceable result type (fingerprinted with the build) is recomputed by the second build
//! and read back by the same build.
//!
//! The fixture is built with its own target folder under this test's (`CARGO_TARGET_TMPDIR`),
//! so it does not wait on the cargo running the tests; the first build compiles ckpt and its
//! dependencies once (debug), later ones only the fixture.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/shape_fixture");

/// Builds the fixture (`layout_b` or not) and copies its binary to a file of its own.
fn build(layout_b: bool) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shape_fixture");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--manifest-path"])
        .arg(Path::new(FIXTURE).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    if layout_b {
        cmd.args(["--features", "layout_b"]);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = target
        .join("debug")
        .join(format!("shape_fixture{}", std::env::consts::EXE_SUFFIX));
    let copy = target.join(format!(
        "shape_fixture_{}{}",
        if layout_b { "b" } else { "a" },
        std::env::consts::EXE_SUFFIX
    ));
    std::fs::copy(&built, &copy).expect("copy the fixture binary");
    copy
}

/// Runs a build of the fixture on the store in `dir`; returns its two lines.
fn run(exe: &Path, dir: &Path) -> (String, String) {
    let out = Command::new(exe)
        .env("CKPT_DIR", dir)
        .output()
        .expect("the fixture runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the fixture failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines().map(str::to_owned);
    (lines.next().unwrap(), lines.next().unwrap())
}

#[test]
fn a_rebuilt_program_with_another_layout_recomputes() {
    let dir = TempDir::new("shape-builds");
    let store = dir.path().join("ckpt");
    let a = build(false);
    let b = build(true);

    let label = "label computed user7@example.org";
    let label_hit = "label cached user7@example.org";
    // Layout A saves, then reads back.
    let computed = "measure computed low=7 high=70 type_mismatches=0";
    assert_eq!(run(&a, &store), (computed.into(), label.into()));
    let hit = "measure cached low=7 high=70 type_mismatches=0";
    assert_eq!(run(&a, &store), (hit.into(), label_hit.into()));

    // Layout B finds A's record (same function, same code, same id) and must not decode it:
    // read as B, its bytes would give low=70 high=7.
    let recomputed = "measure computed low=7 high=70 type_mismatches=1";
    assert_eq!(run(&b, &store), (recomputed.into(), label.into()));
    assert_eq!(run(&b, &store), (hit.into(), label_hit.into()));

    // And back: A does not read B's record either.
    assert_eq!(run(&a, &store), (recomputed.into(), label.into()));
}
