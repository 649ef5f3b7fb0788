//! Every integration test, one module per suite, built as one test binary: each suite built on
//! its own instantiated burn's generics again, so fourteen binaries took about three times the
//! compile of one (BENCHMARKS.md 2026-12-08). Run one suite by its module path:
//! `cargo test --release --test integration parity::`.

mod common;

mod architecture;
mod bad_inputs;
mod batch;
mod cli;
mod convert;
mod cutout;
mod cutout_network;
mod device;
mod fuzz_corpus;
mod kernels;
mod parity;
mod pfv_cases;
mod pipeline;
mod schedulers;
