#!/usr/bin/env bash
# `make bench-sfu`: a release `parley node` on embedded SQLite (media needs no database server)
# and the bench-sfu binary, which runs the WebRTC load tester against it and a raw UDP
# forwarder baseline in the same run.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p parley-node --bin parley
cargo build --release -q -p parley-bench --bin bench-sfu
PARLEY_BIN="$PWD/target/release/parley" exec target/release/bench-sfu "$@"
