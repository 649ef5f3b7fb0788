# Shared settings for adcanvas's scripts (sourced, not run).
# Tools and build outputs live outside the clone so repeated runs on one machine are
# incremental; a fresh machine still gets everything from the package registries.
ADCANVAS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ADCANVAS_ROOT
export ADCANVAS_TOOLS="${ADCANVAS_TOOLS:-$HOME/.cache/adcanvas-tools}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/adcanvas-target}"
export PATH="$ADCANVAS_TOOLS/bin:$HOME/.cargo/bin:$PATH"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# Must equal the wasm-bindgen version pinned in Cargo.toml.
export WASM_BINDGEN_VERSION=0.2.130
