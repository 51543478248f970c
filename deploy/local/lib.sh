# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file
# Shared helpers for the no-Docker local stack (deploy/local/*.sh). Source it, don't run it.
#
# Layout (all under <repo>/.local/, which is gitignored):
#   pg/                 PostgreSQL data directory (owned by the `postgres` OS user when run as root)
#   redis/<port>/       one Redis Cluster node: redis.conf, nodes.conf
#   run/*.pid           pid files of everything up.sh started
#   log/*.log           logs: ingest, aggregator, postgres, redis-<port>
#   tools/              tools installed for the scripts (buf via npm)
#
# Environment knobs:
#   SHARDFEED_PG_PORT           PostgreSQL port (default 54329; 5432 is refused)
#   SHARDFEED_REDIS_BASE_PORT   first Redis port; the six nodes use base..base+5 (default 7000)
#   SHARDFEED_INGEST__LISTEN_ADDR, SHARDFEED_AGGREGATOR__LISTEN_ADDR
#                               the services' addresses (default 127.0.0.1:50051 and :50052)
#   CARGO_TARGET_DIR            where the release binaries are (default <repo>/target)

set -euo pipefail

SF_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SF_LOCAL="$SF_REPO/.local"
SF_PG_DIR="$SF_LOCAL/pg"
SF_REDIS_DIR="$SF_LOCAL/redis"
SF_RUN_DIR="$SF_LOCAL/run"
SF_LOG_DIR="$SF_LOCAL/log"
SF_TOOLS_DIR="$SF_LOCAL/tools"

SF_PG_PORT="${SHARDFEED_PG_PORT:-54329}"
SF_REDIS_BASE_PORT="${SHARDFEED_REDIS_BASE_PORT:-7000}"
SF_REDIS_NODES_COUNT=6
# The services' listen addresses: the design's defaults unless set in the environment.
SF_INGEST_ADDR="${SHARDFEED_INGEST__LISTEN_ADDR:-127.0.0.1:50051}"
SF_AGGREGATOR_ADDR="${SHARDFEED_AGGREGATOR__LISTEN_ADDR:-127.0.0.1:50052}"
SF_PG_URL="postgres://shardfeed@127.0.0.1:${SF_PG_PORT}/shardfeed"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  _sf_bold=$'\033[1m' _sf_red=$'\033[31m' _sf_yellow=$'\033[33m' _sf_reset=$'\033[0m'
else
  _sf_bold="" _sf_red="" _sf_yellow="" _sf_reset=""
fi

# Prints the comment block at the top of a script (its usage text).
sf_usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

log() { printf '%s==>%s %s\n' "$_sf_bold" "$_sf_reset" "$*"; }
warn() { printf '%swarning:%s %s\n' "$_sf_yellow" "$_sf_reset" "$*" >&2; }
die() {
  printf '%serror:%s %s\n' "$_sf_red" "$_sf_reset" "$*" >&2
  exit 1
}

sf_validate_ports() {
  [[ "$SF_PG_PORT" =~ ^[0-9]+$ ]] || die "SHARDFEED_PG_PORT must be a number, got '$SF_PG_PORT'"
  [[ "$SF_PG_PORT" != 5432 ]] || die "SHARDFEED_PG_PORT=5432 is refused: the local stack never takes the system PostgreSQL port"
  [[ "$SF_REDIS_BASE_PORT" =~ ^[0-9]+$ ]] || die "SHARDFEED_REDIS_BASE_PORT must be a number, got '$SF_REDIS_BASE_PORT'"
  ((SF_REDIS_BASE_PORT + SF_REDIS_NODES_COUNT - 1 + 10000 <= 65535)) ||
    die "SHARDFEED_REDIS_BASE_PORT=$SF_REDIS_BASE_PORT is too high (each node also needs its bus port, port + 10000)"
  local addr
  for addr in "$SF_INGEST_ADDR" "$SF_AGGREGATOR_ADDR"; do
    [[ "$addr" =~ ^[^:/]+:[0-9]+$ ]] || die "a listen address must look like 127.0.0.1:50051, got '$addr'"
  done
}

# The six Redis ports, one per line.
sf_redis_ports() {
  local i
  for ((i = 0; i < SF_REDIS_NODES_COUNT; i++)); do
    echo $((SF_REDIS_BASE_PORT + i))
  done
}

# Comma-separated host:port list, as SHARDFEED_REDIS__NODES wants it.
sf_redis_nodes_csv() {
  local port out=""
  for port in $(sf_redis_ports); do
    out+="${out:+,}127.0.0.1:$port"
  done
  echo "$out"
}

sf_ensure_dirs() {
  mkdir -p "$SF_LOCAL" "$SF_RUN_DIR" "$SF_LOG_DIR" "$SF_REDIS_DIR"
}

# ---------------------------------------------------------------------------------------------
# Packages

# Runs a command as root: directly when we are root, else through sudo when it is available
# without a password prompt. Returns 1 (without running anything) when neither is possible.
sf_as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

_sf_apt_updated=""
# sf_apt_install PACKAGE... — installs Debian packages, or dies naming them.
sf_apt_install() {
  local pkgs=("$@")
  command -v apt-get >/dev/null 2>&1 ||
    die "missing: ${pkgs[*]} (no apt-get here: install the package(s) '${pkgs[*]}' with your system's package manager)"
  if ! sf_as_root true 2>/dev/null; then
    die "missing: ${pkgs[*]}; install it as root: sudo apt-get install -y ${pkgs[*]}"
  fi
  log "installing ${pkgs[*]} (apt-get)"
  if [[ -z "$_sf_apt_updated" ]]; then
    sf_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
      die "apt-get update failed; install ${pkgs[*]} by hand"
    _sf_apt_updated=1
  fi
  sf_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" ||
    die "apt-get install ${pkgs[*]} failed; install it by hand"
}

# redis-server and redis-cli come from Debian's `redis-server` package (which pulls redis-tools).
sf_ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return 0
  fi
  sf_apt_install redis-server
  # The package enables a system redis on 6379; the local stack doesn't need it, but we leave
  # the system's service alone (it is not ours to stop).
  command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after installing the package redis-server"
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli still missing (Debian package redis-tools)"
}

# Sets SF_PG_BIN to a PostgreSQL server bin directory (prefers 15); returns 1 when there is none.
sf_find_postgres() {
  local dir
  SF_PG_BIN=""
  for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
      SF_PG_BIN="$dir"
      return 0
    fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    SF_PG_BIN="$(dirname "$(command -v pg_ctl)")"
    return 0
  fi
  return 1
}

# Like sf_find_postgres, installing postgresql-15 when no server binaries are there.
sf_ensure_postgres() {
  sf_find_postgres && return 0
  sf_apt_install postgresql-15
  sf_find_postgres || die "PostgreSQL server binaries still missing after installing postgresql-15"
}

# ---------------------------------------------------------------------------------------------
# Processes

# Pid recorded in a pid file, or nothing.
sf_read_pid() {
  local file="$1" pid
  [[ -f "$file" ]] || return 1
  pid="$(head -n1 "$file" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}

# sf_pid_matches PID PATTERN — the process is alive and its command line contains PATTERN
# (guards against a recycled pid belonging to someone else).
sf_pid_matches() {
  local pid="$1" pattern="$2" cmdline
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  # A zombie or exited process has an empty cmdline.
  [[ -n "$cmdline" && "$cmdline" == *"$pattern"* ]]
}

# sf_running PIDFILE PATTERN — prints the pid when the pid file names a live matching process.
sf_running() {
  local pid
  pid="$(sf_read_pid "$1")" || return 1
  sf_pid_matches "$pid" "$2" || return 1
  echo "$pid"
}

# sf_stop_pid NAME PIDFILE PATTERN [TIMEOUT_S] — SIGTERM, wait, then SIGKILL; removes the pid file.
sf_stop_pid() {
  local name="$1" file="$2" pattern="$3" timeout="${4:-15}" pid i
  if ! pid="$(sf_running "$file" "$pattern")"; then
    if [[ -f "$file" ]]; then
      log "$name: not running (stale pid file removed)"
      rm -f "$file"
    fi
    return 0
  fi
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  # A stopped (SIGSTOP) process never handles SIGTERM: wake it up.
  kill -CONT "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    sf_pid_matches "$pid" "$pattern" || break
    sleep 0.1
  done
  if sf_pid_matches "$pid" "$pattern"; then
    warn "$name: pid $pid still alive after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$file"
}

# The end of a log for an error report, without Rust backtrace frames (RUST_BACKTRACE=1 makes
# them bury the error itself).
sf_log_tail() {
  local file="$1" lines="${2:-25}"
  echo "----- last lines of $file (backtrace frames left out) -----" >&2
  grep -vE '^ +([0-9]+: |at )' "$file" 2>/dev/null | tail -n "$lines" >&2 || true
  echo "-----" >&2
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
sf_port_open() {
  local port="$1"
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# Some of our ports (54329, 50051, 50052) lie inside Linux's ephemeral port range
# (32768-60999), so a client connection of any process on the machine can take one of them as its
# source port, and its lingering TIME-WAIT then makes our bind() fail with "Address already in
# use" for up to a minute: on a machine where tests open thousands of connections this happens
# all the time. As root, take our ports out of the ephemeral range
# (net.ipv4.ip_local_reserved_ports; a runtime setting, gone at reboot; it only stops the kernel
# from handing these ports to clients, explicit binds are unaffected). Otherwise just warn.
sf_reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports lo hi current port need=() entries entry a b reserved
  [[ -r /proc/sys/net/ipv4/ip_local_port_range && -r "$f" ]] || return 0
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  current="$(tr -d ' \n' <"$f")"
  for port in "$@"; do
    ((port >= lo && port <= hi)) || continue
    reserved=0
    IFS=, read -r -a entries <<<"$current"
    for entry in "${entries[@]}"; do
      [[ -n "$entry" ]] || continue
      a="${entry%-*}" b="${entry#*-}"
      if ((port >= a && port <= b)); then reserved=1; break; fi
    done
    ((reserved)) || need+=("$port")
  done
  ((${#need[@]})) || return 0
  local list
  list="$(IFS=,; echo "${need[*]}")"
  if [[ $EUID -eq 0 ]] && echo "${current:+$current,}$list" >"$f" 2>/dev/null; then
    log "reserved ports $list from the kernel's ephemeral range (sysctl net.ipv4.ip_local_reserved_ports), so client connections cannot take them"
  else
    warn "ports $list are in the ephemeral port range ($lo-$hi): a client connection may hold one and make a bind fail; as root: sysctl -w net.ipv4.ip_local_reserved_ports=${current:+$current,}$list"
  fi
}

# True when a server could bind 127.0.0.1:PORT now. Binds with SO_REUSEADDR like PostgreSQL,
# Redis and tokio do, so a lingering TIME-WAIT of the server's own earlier connections doesn't
# count, but one left by a client connection that used PORT as its source port does (Linux
# refuses that bind). Without python3 the test is skipped (true).
sf_port_bindable() {
  command -v python3 >/dev/null 2>&1 || return 0
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
PY
}

# sf_wait_port_free NAME PORT [HINT] — fails when something listens on PORT; waits (up to 70 s,
# longer than TIME-WAIT) while the port cannot be bound for another reason, e.g. because it is
# the source port of someone's client connection.
sf_wait_port_free() {
  local name="$1" port="$2" hint="${3:-}" i
  if sf_port_open "$port"; then
    die "$name: port $port is taken by another process (not started by this stack)${hint:+; $hint}"
  fi
  for ((i = 0; i < 350; i++)); do
    sf_port_bindable "$port" && return 0
    if sf_port_open "$port"; then
      die "$name: port $port is taken by another process (not started by this stack)${hint:+; $hint}"
    fi
    if ((i == 0)); then
      log "$name: port $port cannot be bound yet (held by: $(ss -Htan "sport = :$port" 2>/dev/null | awk '{print $1}' | sort | uniq -c | xargs echo)); waiting up to 70s for it to be released"
    fi
    sleep 0.2
  done
  die "$name: port $port stayed unbindable for 70s (ss -tanp 'sport = :$port' shows who holds it)${hint:+; $hint}"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Runs a command as the OS user that owns the PostgreSQL data directory: `postgres` when we are
# root (PostgreSQL refuses to run as root), else the current user.
sf_as_pg_user() {
  if [[ $EUID -eq 0 ]]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

sf_pg_running() {
  [[ -f "$SF_PG_DIR/PG_VERSION" ]] || return 1
  sf_as_pg_user "$SF_PG_BIN/pg_ctl" status -D "$SF_PG_DIR" >/dev/null 2>&1
}

# The postmaster's pid (first line of postmaster.pid), or nothing.
sf_pg_pid() {
  sf_read_pid "$SF_PG_DIR/postmaster.pid"
}

# ---------------------------------------------------------------------------------------------
# Redis

sf_redis_cli() {
  local port="$1"
  shift
  redis-cli -h 127.0.0.1 -p "$port" "$@"
}

sf_redis_pidfile() { echo "$SF_RUN_DIR/redis-$1.pid"; }

# A field of CLUSTER INFO on one node (e.g. cluster_state), or nothing.
sf_cluster_info_field() {
  local port="$1" field="$2"
  sf_redis_cli "$port" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^${field}://p"
}

# ---------------------------------------------------------------------------------------------
# Binaries

sf_target_dir() {
  local dir="${CARGO_TARGET_DIR:-$SF_REPO/target}"
  # cargo resolves a relative CARGO_TARGET_DIR against its working directory: the repo here.
  [[ "$dir" = /* ]] || dir="$SF_REPO/$dir"
  echo "$dir"
}

sf_bin() { echo "$(sf_target_dir)/release/$1"; }

sf_cargo_locked_flag() {
  if [[ -f "$SF_REPO/Cargo.lock" ]]; then echo "--locked"; fi
}

sf_build_release() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
  local locked
  locked="$(sf_cargo_locked_flag)"
  log "building release binaries (cargo build --release${locked:+ $locked})"
  (cd "$SF_REPO" && cargo build --release ${locked:+"$locked"} \
    -p shardfeed-ingest -p shardfeed-aggregator -p shardfeed-cli) ||
    die "cargo build failed (try: deploy/local/up.sh --stores-only to start only PostgreSQL and Redis)"
  local b
  for b in shardfeed-ingest shardfeed-aggregator shardfeed; do
    [[ -x "$(sf_bin "$b")" ]] || die "build finished but $(sf_bin "$b") is missing"
  done
}

# Exports the SHARDFEED_* variables that point the services and the CLI at the local stack.
# User-set telemetry knobs are kept.
sf_export_stack_env() {
  export SHARDFEED_POSTGRES__URL="$SF_PG_URL"
  SHARDFEED_REDIS__NODES="$(sf_redis_nodes_csv)"
  export SHARDFEED_REDIS__NODES
  export SHARDFEED_INGEST__LISTEN_ADDR="$SF_INGEST_ADDR"
  export SHARDFEED_AGGREGATOR__LISTEN_ADDR="$SF_AGGREGATOR_ADDR"
  export SHARDFEED_TELEMETRY__LOG_FORMAT="${SHARDFEED_TELEMETRY__LOG_FORMAT:-plain}"
  export SHARDFEED_TELEMETRY__LOG_FILTER="${SHARDFEED_TELEMETRY__LOG_FILTER:-info}"
}

# Runs the `shardfeed` CLI with the local stack's environment.
sf_cli() {
  local cli
  cli="$(sf_bin shardfeed)"
  [[ -x "$cli" ]] || die "$cli not found: run deploy/local/up.sh (it builds the binaries) first"
  sf_export_stack_env
  "$cli" "$@"
}

# The stores must be up for the CLI to talk to them.
sf_require_stores() {
  sf_ensure_postgres
  sf_pg_running || die "the local PostgreSQL is not running: run deploy/local/up.sh first"
  local port
  port="$SF_REDIS_BASE_PORT"
  [[ "$(sf_cluster_info_field "$port" cluster_state)" == ok ]] ||
    die "the local Redis Cluster (port $port) is not up: run deploy/local/up.sh first"
}
