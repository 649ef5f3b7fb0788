#![no_main]
//! `scripts/fuzz.sh mask_layout_pfv SECONDS`: see `fuzz/targets.rs`.
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::mask_layout_pfv(data));
