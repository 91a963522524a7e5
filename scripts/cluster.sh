#!/usr/bin/env bash
# Starts (or stops) the nodes listed in ./cluster.toml as background processes:
#
#   scripts/cluster.sh start     # PID files data/<node>.pid, logs data/<node>.log
#   scripts/cluster.sh stop
#
# A cluster shares PostgreSQL and Redis. PARLEY_DATABASE_URL / PARLEY_REDIS_URL choose them;
# the defaults are the local servers (postgres://postgres@127.0.0.1:5432/parley, created when
# missing, and redis://127.0.0.1:6379). `make run` needs neither; a cluster does.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${PARLEY_BIN:-target/release/parley}
DATA=${PARLEY_DATA_DIR:-data}
nodes=$(python3 -c 'import tomllib;print(" ".join(n["name"] for n in tomllib.load(open("cluster.toml","rb"))["nodes"]))')
log() { printf '[cluster] %s\n' "$*" >&2; }

stop() {
  for n in $nodes; do
    pidfile="$DATA/$n.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "stopped $n (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

start() {
  export PARLEY_DATABASE_URL=${PARLEY_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/parley}
  export PARLEY_REDIS_URL=${PARLEY_REDIS_URL:-redis://127.0.0.1:6379}
  if ! redis-cli -u "$PARLEY_REDIS_URL" ping >/dev/null 2>&1; then
    log "no Redis at $PARLEY_REDIS_URL: start one (apt-get install redis-server) or set PARLEY_REDIS_URL"; exit 1
  fi
  admin_url="${PARLEY_DATABASE_URL%/*}/postgres"
  db="${PARLEY_DATABASE_URL##*/}"
  if ! psql "$admin_url" -tAc 'SELECT 1' >/dev/null 2>&1; then
    log "no PostgreSQL at $admin_url: start one (apt-get install postgresql) or set PARLEY_DATABASE_URL"; exit 1
  fi
  if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    psql "$admin_url" -qc "CREATE DATABASE $db" && log "created database $db"
  fi
  mkdir -p "$DATA"
  # Migrate once, then start every node.
  "$BIN" migrate >/dev/null
  for n in $nodes; do
    if [ -f "$DATA/$n.pid" ] && kill -0 "$(cat "$DATA/$n.pid")" 2>/dev/null; then
      log "$n already running (pid $(cat "$DATA/$n.pid"))"; continue
    fi
    nohup "$BIN" node --name "$n" >"$DATA/$n.log" 2>&1 </dev/null &
    echo $! >"$DATA/$n.pid"
  done
  for n in $nodes; do
    for _ in $(seq 100); do grep -q "ready: http" "$DATA/$n.log" 2>/dev/null && break; sleep 0.1; done
    if grep -q "ready: http" "$DATA/$n.log"; then log "$(grep 'ready: http' "$DATA/$n.log") (pid $(cat "$DATA/$n.pid"))"
    else log "$n did not start; see $DATA/$n.log"; tail -n 5 "$DATA/$n.log" >&2; exit 1; fi
  done
  log "cluster view: curl -s localhost:8081/api/admin/cluster -H \"Authorization: Bearer \$($BIN token --user ops --admin)\""
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
