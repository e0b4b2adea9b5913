//! ckpt's benchmarks live in the `[[bench]]` targets of this crate (see `Cargo.toml` and
//! `report.sh`); this library is empty.
