#![no_main]
//! See `ckpt_fuzz::decode`.

libfuzzer_sys::fuzz_target!(init: ckpt_fuzz::allow_contained_panics(), |data: &[u8]| {
    ckpt_fuzz::decode(data);
});
