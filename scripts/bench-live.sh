#!/usr/bin/env bash
# `make bench-live`: a release node on the PostgreSQL/Redis scripts/services.sh provides, driven
# over WebSockets by the bench-live binary. 10,000 sockets on each side need a high file limit.
set -euo pipefail
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p parley-node --bin parley
cargo build --release -q -p parley-bench --bin bench-live
command -v redis-benchmark >/dev/null || { echo "redis-benchmark missing: apt-get install redis-tools" >&2; exit 1; }
PARLEY_BIN="$PWD/target/release/parley" exec target/release/bench-live "$@"
