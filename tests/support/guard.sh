#!/usr/bin/env bash
# Usage: guard.sh SIGNAL COMMAND [ARGS...]
# Runs COMMAND in a session (and process group) of its own, and stops that whole group with
# SIGNAL as soon as this script's standard input closes: when the test process that holds the
# other end exits or drops it, for whatever reason. After 10 s, SIGKILL. No process outlives it.
set -u
sig=$1; shift
setsid "$@" </dev/null &
pid=$!
stop() {
  kill -s "$sig" -- "-$pid" 2>/dev/null || exit 0
  for _ in $(seq 100); do
    kill -0 -- "-$pid" 2>/dev/null || exit 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null
}
trap stop EXIT
trap 'exit 0' INT TERM HUP
while read -r _; do :; done
