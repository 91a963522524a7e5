#!/usr/bin/env bash
# `make bench-db`: a fresh database on the server scripts/services.sh provides, the seeded
# benchmark against it, then the database is dropped.
set -euo pipefail
db="parley_bench_$(date +%s)_$$"
base="${PARLEY_TEST_PG_URL%/*}"
psql "$PARLEY_TEST_PG_URL" -qc "CREATE DATABASE $db"
trap 'psql "$PARLEY_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
cargo run --release -q -p parley-bench --bin bench-db -- --database-url "$base/$db" "$@"
