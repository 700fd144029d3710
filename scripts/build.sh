#!/usr/bin/env bash
# Builds the worker into build/ with worker-build, without any download: every helper binary
# comes from what scripts/setup.sh installed. KNOCK_PREBUILT=1 makes this a no-op.
set -euo pipefail
[ "${KNOCK_PREBUILT:-}" = 1 ] && exit 0
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN=wasm-bindgen
export ESBUILD_BIN="$PWD/node_modules/@esbuild/linux-x64/bin/esbuild"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
exec worker-build --release
