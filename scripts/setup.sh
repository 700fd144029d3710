#!/usr/bin/env bash
# Installs everything Knock needs to build, run and test, reusing what is already present at the
# right version. Safe to run repeatedly; every step is skipped when already satisfied.
# Sources: crates.io, the npm registry, PyPI and Debian's packages only (see README "How the setup works").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=0.2.130
SYNAPSE_VENV="${KNOCK_SYNAPSE_VENV:-$ROOT/target/synapse-venv}"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

want="${1:-all}"   # all | build | synapse | browser

export PATH="$HOME/.cargo/bin:$PATH"

if [ "$want" = all ] || [ "$want" = build ]; then
  if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
    step "adding the wasm32-unknown-unknown Rust target"
    rustup target add wasm32-unknown-unknown
  fi

  if [ "$(worker-build --version 2>/dev/null | awk '{print $NF}')" != "$WORKER_BUILD_VERSION" ]; then
    step "installing worker-build $WORKER_BUILD_VERSION (one-time, a few minutes)"
    cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
  fi

  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    step "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (one-time, a few minutes)"
    # Not --locked: its lockfile names a crate version the registry no longer has.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
  fi

  if [ ! -x node_modules/.bin/wrangler ] || ! cmp -s package.json node_modules/.knock-package.json; then
    step "installing npm packages (wrangler, workerd, node 22)"
    # `npm install` against the committed lock, leaving it untouched. (`npm ci` would be the
    # usual choice, but npm 11 refuses this lock over other platforms' optional workerd builds.)
    npm install --no-save --no-audit --no-fund --loglevel=error
    cp package.json node_modules/.knock-package.json
  fi
fi

if [ "$want" = all ] || [ "$want" = synapse ]; then
  if [ ! -x "$SYNAPSE_VENV/bin/python" ] || ! "$SYNAPSE_VENV/bin/python" -c 'import synapse, authlib' 2>/dev/null; then
    step "installing Synapse from PyPI into target/synapse-venv (one-time, ~30 s)"
    python3 -m venv "$SYNAPSE_VENV"
    "$SYNAPSE_VENV/bin/pip" install --quiet --disable-pip-version-check 'matrix-synapse[jwt]'
  fi
fi

if [ "$want" = all ] || [ "$want" = browser ]; then
  # The moderator page's end-to-end test drives a headless Chromium over WebDriver. Debian's own
  # packages: nothing is downloaded from a browser vendor.
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    step "installing Chromium and chromedriver from Debian's packages (one-time)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
  fi
fi
