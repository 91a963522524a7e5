#!/usr/bin/env bash
# `make bench-recording`: a release `parley node` on embedded SQLite (recordings under its data
# dir) and the bench-recording binary (bench/src/bench_recording.rs), which measures capture
# against forwarding alone, concurrent recorded meetings, and the pipeline's speed, in one run.
# Arguments pass through: --seconds S (window, 15), --meetings N (20), --minutes M (10).
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p parley-node --bin parley
cargo build --release -q -p parley-bench --bin bench-recording
PARLEY_BIN="$PWD/target/release/parley" exec target/release/bench-recording "$@"
