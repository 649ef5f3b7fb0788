#![no_main]
//! `scripts/fuzz.sh manifest SECONDS`: see `fuzz/targets.rs`.
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::manifest(data));
