#![no_main]
//! See `ckpt_fuzz::open`.

libfuzzer_sys::fuzz_target!(init: ckpt_fuzz::allow_contained_panics(), |data: &[u8]| {
    ckpt_fuzz::open(data);
});
