#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every parser that reads outside data.
#
#   scripts/fuzz.sh TARGET SECONDS [RUNS]  one target for SECONDS, or until RUNS executions
#                                        (prints executions and the result)
#   scripts/fuzz.sh all SECONDS         every target, one after another
#   scripts/fuzz.sh list                the targets (fuzz/targets.rs says what each one reads)
#
# Seeds are tests/fuzz/TARGET/ (committed); the corpus the fuzzer grows goes to
# ~/.cache/adcanvas-fuzz/TARGET (not committed). A crash, hang (-timeout, 10 s) or out-of-memory
# (-rss_limit_mb, 2048) is written into tests/fuzz/TARGET/ itself, where tests/fuzz_corpus.rs
# replays it in every `cargo test`: a finding is a failing regression test until it is fixed.
#
# Needs a nightly toolchain (AddressSanitizer) and cargo-fuzz; both are installed here when
# missing (rustup, crates.io; the first build of a target takes ~15 min on 2 cores).
# ADCANVAS_FUZZ_SANITIZER=none builds without AddressSanitizer (coverage only, its own build folder):
# about three times the executions a second on the safe-Rust targets, whose memory errors the
# compiler already rules out; panics, hangs and out-of-memory are found the same.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ADCANVAS_ROOT"

TARGETS=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^adcanvas-fuzz$')
case "${1:-}" in
  list) echo "$TARGETS"; exit 0 ;;
  "") echo "usage: scripts/fuzz.sh TARGET|all SECONDS | list" >&2; exit 2 ;;
esac
TARGET="$1"
SECONDS_EACH="${2:?usage: scripts/fuzz.sh TARGET|all SECONDS [RUNS]}"
RUNS="${3:--1}"
SANITIZER="${ADCANVAS_FUZZ_SANITIZER:-address}"
BUILD_DIR="$CARGO_TARGET_DIR/fuzz"
[[ $SANITIZER == address ]] || BUILD_DIR+="-$SANITIZER"
if [[ $TARGET == all ]]; then
  for t in $TARGETS; do "$0" "$t" "$SECONDS_EACH" "$RUNS"; done
  exit 0
fi
grep -qx "$TARGET" <<<"$TARGETS" || { echo "fuzz: no target '$TARGET' (one of: $(echo $TARGETS))" >&2; exit 2; }

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2 --root "$ADCANVAS_TOOLS"

WORK="${ADCANVAS_FUZZ_WORK:-$HOME/.cache/adcanvas-fuzz}/$TARGET"
mkdir -p "$WORK"
LOG="$WORK/last-run.log"
# Inputs as long as the thing they stand for needs: a weight file as large as the tiny pack's
# UNet; a prompt, tokenizer or manifest of a few pages (longer ones only repeat what these cover,
# at a tenth of the speed).
case "$TARGET" in
  weights) MAX_LEN=262144 ;;
  photo | photo_with_mask) MAX_LEN=65536 ;;
  *) MAX_LEN=16384 ;;
esac
# libFuzzer's own options: a hang is an input that takes 10 s; memory past 2 GiB (a browser tab's
# share) is an out-of-memory finding.
set +e
cargo +nightly fuzz run -s "$SANITIZER" --fuzz-dir fuzz --target-dir "$BUILD_DIR" "$TARGET" "$WORK" "tests/fuzz/$TARGET" -- \
  -max_total_time="$SECONDS_EACH" -runs="$RUNS" -timeout=10 -rss_limit_mb=2048 -max_len="$MAX_LEN" \
  -artifact_prefix="tests/fuzz/$TARGET/" -print_final_stats=1 2>&1 | tee "$LOG" | grep -E '^#[0-9]+ *(pulse|DONE)|==ERROR|panicked|SUMMARY|^stat::' 
rc=${PIPESTATUS[0]}
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG" | tail -1)
secs=$(( ${execs:-0} / (${rate:-1} > 0 ? ${rate:-1} : 1) ))
if [[ $rc != 0 ]] && grep -q 'libFuzzer: run interrupted' "$LOG"; then
  echo "fuzz $TARGET: stopped by hand after ${execs:-?} executions (${rate:-?}/s), no crash, hang or out-of-memory until then"
elif [[ $rc == 0 ]]; then
  echo "fuzz $TARGET: ${execs:-?} executions in about ${secs} s (${rate:-?}/s), no crash, hang or out-of-memory"
else
  echo "fuzz $TARGET: FOUND A FAILURE after ${execs:-?} executions (exit $rc); the input is in tests/fuzz/$TARGET/ (log: $LOG)" >&2
  exit 1
fi
