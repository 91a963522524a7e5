#!/usr/bin/env bash
# `make bench-cluster`: three release `parley node` processes on the PostgreSQL/Redis that
# scripts/services.sh provides, driven over WebSockets by the bench-cluster binary.
set -euo pipefail
cargo build --release -q -p parley-node --bin parley
cargo build --release -q -p parley-bench --bin bench-cluster
PARLEY_BIN="$PWD/target/release/parley" exec target/release/bench-cluster "$@"
