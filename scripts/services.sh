#!/usr/bin/env bash
# Makes sure the services Parley's tests and benchmarks need are installed and running, then
# runs the given command with their URLs in the environment:
#
#   scripts/services.sh <command> [args…]
#
# PostgreSQL: a server already answering on 127.0.0.1:5432 as user `postgres` (trust auth) is
# used as it is. Otherwise the server packages are installed with apt-get if absent, and a
# throwaway server is initialised in a temporary directory on a free port, stopped and deleted
# when the command ends. Tests create (and drop) one database per test on it.
#
# Redis: one answering on 127.0.0.1:6379 is used as it is; otherwise redis-server is installed
# if absent and a throwaway instance (no persistence) runs on a free port until the command ends.
#
# Chromium (the browser client's test): Debian's `chromium` is installed if absent.
#
# Set PARLEY_THROWAWAY_PG=1 / PARLEY_THROWAWAY_REDIS=1 to always use throwaway servers.
# Exports: PARLEY_TEST_PG_URL (admin URL, database `postgres`), PARLEY_PG_BIN (server binaries),
# PARLEY_TEST_REDIS_URL, PARLEY_CHROMIUM (the browser binary; an existing value is kept).
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; exit 1; fi
}

apt_install() {
  log "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq "$@" >/dev/null
}

pg_bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $(( 20000 + RANDOM % 20000 ))
}

ensure_postgres() {
  # PARLEY_THROWAWAY_PG=1 skips an existing server (to exercise the fresh-machine path).
  if [ "${PARLEY_THROWAWAY_PG:-0}" != 1 ] && command -v psql >/dev/null && psql "postgres://postgres@127.0.0.1:5432/postgres" -qtAc 'select 1' >/dev/null 2>&1; then
    export PARLEY_TEST_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"
    log "using the PostgreSQL server on 127.0.0.1:5432"
  else
    if [ -z "$(pg_bin_dir)" ] || ! command -v psql >/dev/null; then
      apt_install postgresql postgresql-client
    fi
    local bin dir port
    bin="$(pg_bin_dir)"
    dir="$(mktemp -d /tmp/parley-pg.XXXXXX)"
    port="$(free_port)"
    PG_THROWAWAY_DIR="$dir"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || as_root useradd --system --home "$dir" postgres
      chown -R postgres: "$dir"
      run_pg() { runuser -u postgres -- "$@"; }
    else
      run_pg() { "$@"; }
    fi
    log "starting a throwaway PostgreSQL ($bin) on 127.0.0.1:$port in $dir"
    run_pg "$bin/initdb" -A trust -U postgres --no-sync -D "$dir/data" >/dev/null
    run_pg "$bin/pg_ctl" -w -D "$dir/data" -l "$dir/pg.log" \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
    export PARLEY_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  fi
  export PARLEY_PG_BIN="$(pg_bin_dir)"
  # Tests stop and restart private servers of their own; they need the server binaries.
  if [ -z "$PARLEY_PG_BIN" ]; then apt_install postgresql; export PARLEY_PG_BIN="$(pg_bin_dir)"; fi
}

ensure_redis() {
  if [ "${PARLEY_THROWAWAY_REDIS:-0}" != 1 ] && command -v redis-cli >/dev/null \
     && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; then
    export PARLEY_TEST_REDIS_URL="redis://127.0.0.1:6379"
    log "using the Redis server on 127.0.0.1:6379"
    return
  fi
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  local port
  port="$(free_port)"
  REDIS_THROWAWAY_PORT="$port"
  log "starting a throwaway Redis on 127.0.0.1:$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --logfile "/tmp/parley-redis-$port.log" >/dev/null
  for _ in $(seq 1 50); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  export PARLEY_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

ensure_chromium() {
  if [ -n "${PARLEY_CHROMIUM:-}" ]; then log "using Chromium at $PARLEY_CHROMIUM"; return; fi
  command -v chromium >/dev/null || apt_install chromium
  export PARLEY_CHROMIUM="$(command -v chromium)"
}

cleanup() {
  if [ -n "${REDIS_THROWAWAY_PORT:-}" ]; then
    log "stopping the throwaway Redis"
    redis-cli -p "$REDIS_THROWAWAY_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  if [ -n "${PG_THROWAWAY_DIR:-}" ]; then
    log "stopping the throwaway PostgreSQL"
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$(pg_bin_dir)/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    else
      "$(pg_bin_dir)/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_THROWAWAY_DIR"
  fi
}
trap cleanup EXIT

command -v python3 >/dev/null || apt_install python3
ensure_postgres
ensure_redis
ensure_chromium
"$@"
