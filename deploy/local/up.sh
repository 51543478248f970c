#!/usr/bin/env bash
# Starts the local shardfeed stack without Docker: PostgreSQL, a 6-node Redis Cluster
# (3 masters + 3 replicas), migrations, shardfeed-ingest and shardfeed-aggregator.
#
# Idempotent: whatever is already running (pid file + live process) is left alone.
#
# Usage: deploy/local/up.sh [--stores-only] [--no-build]
#   --stores-only   start only PostgreSQL and the Redis Cluster (no build, no migrations, no services)
#   --no-build      don't run cargo build; use the release binaries already built
#
# Env: SHARDFEED_PG_PORT (54329), SHARDFEED_REDIS_BASE_PORT (7000), CARGO_TARGET_DIR,
#      SHARDFEED_START_TIMEOUT (seconds to wait for each component, default 60).
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sf_usage "${BASH_SOURCE[0]}"; }

stores_only=0
build=1
for arg in "$@"; do
  case "$arg" in
    --stores-only) stores_only=1 ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

TIMEOUT="${SHARDFEED_START_TIMEOUT:-60}"

sf_validate_ports
sf_ensure_dirs
# shellcheck disable=SC2046
sf_reserve_ports "$SF_PG_PORT" $(sf_redis_ports) $(for p in $(sf_redis_ports); do echo $((p + 10000)); done) \
  "${SF_INGEST_ADDR##*:}" "${SF_AGGREGATOR_ADDR##*:}"

# ---------------------------------------------------------------------------------------------
# Packages and binaries

sf_ensure_redis
sf_ensure_postgres

if ((!stores_only)); then
  if ((build)); then
    sf_build_release
  else
    for b in shardfeed-ingest shardfeed-aggregator shardfeed; do
      [[ -x "$(sf_bin "$b")" ]] || die "--no-build given but $(sf_bin "$b") does not exist"
    done
  fi
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL

pg_init() {
  if [[ -f "$SF_PG_DIR/PG_VERSION" ]]; then
    return 0
  fi
  log "postgres: initdb $SF_PG_DIR (superuser shardfeed, trust auth)"
  rm -rf "$SF_PG_DIR"
  mkdir -p "$SF_PG_DIR"
  chmod 700 "$SF_PG_DIR"
  if [[ $EUID -eq 0 ]]; then
    getent passwd postgres >/dev/null || die "PostgreSQL refuses to run as root and there is no 'postgres' OS user to run it as"
    chown postgres: "$SF_PG_DIR"
    sf_as_pg_user test -w "$SF_PG_DIR" ||
      die "the postgres OS user cannot reach $SF_PG_DIR (a parent directory is not world-traversable: chmod o+x on it)"
  fi
  sf_as_pg_user "$SF_PG_BIN/initdb" -D "$SF_PG_DIR" -U shardfeed --auth=trust -E UTF8 --no-locale \
    >"$SF_LOG_DIR/initdb.log" 2>&1 || {
    tail -n 20 "$SF_LOG_DIR/initdb.log" >&2
    die "initdb failed (full output: $SF_LOG_DIR/initdb.log)"
  }
  echo "include_if_exists = 'shardfeed.conf'" | sf_as_pg_user tee -a "$SF_PG_DIR/postgresql.conf" >/dev/null
}

pg_start() {
  local pglog="$SF_LOG_DIR/postgres.log"
  if sf_pg_running; then
    log "postgres: already running (pid $(sf_pg_pid || echo '?'), port $SF_PG_PORT)"
  else
    sf_wait_port_free postgres "$SF_PG_PORT" "set SHARDFEED_PG_PORT"
    # Written at every start, so a changed SHARDFEED_PG_PORT takes effect. No Unix socket: TCP
    # on loopback only.
    sf_as_pg_user tee "$SF_PG_DIR/shardfeed.conf" >/dev/null <<EOF
# Written by deploy/local/up.sh at every start.
listen_addresses = '127.0.0.1'
port = $SF_PG_PORT
unix_socket_directories = ''
max_connections = 200
EOF
    touch "$pglog"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$pglog"; fi
    log "postgres: starting on 127.0.0.1:$SF_PG_PORT"
    sf_as_pg_user "$SF_PG_BIN/pg_ctl" start -D "$SF_PG_DIR" -l "$pglog" -w -t "$TIMEOUT" >/dev/null || {
      tail -n 30 "$pglog" >&2
      die "PostgreSQL did not start (log: $pglog)"
    }
  fi
  sf_pg_pid >"$SF_RUN_DIR/postgres.pid"

  local i
  for ((i = 0; i < TIMEOUT * 5; i++)); do
    "$SF_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$SF_PG_PORT" -U shardfeed -d postgres && break
    sleep 0.2
  done
  "$SF_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$SF_PG_PORT" -U shardfeed -d postgres ||
    die "PostgreSQL on port $SF_PG_PORT does not accept connections (log: $pglog)"

  local psql=("$SF_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SF_PG_PORT" -U shardfeed -d postgres)
  if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'shardfeed'")" != 1 ]]; then
    log "postgres: creating database shardfeed"
    "${psql[@]}" -c 'CREATE DATABASE shardfeed' >/dev/null
  fi
}

pg_init
pg_start

# ---------------------------------------------------------------------------------------------
# Redis Cluster

redis_start_node() {
  local port="$1" dir="$SF_REDIS_DIR/$1" pidfile pid
  pidfile="$(sf_redis_pidfile "$port")"
  if pid="$(sf_running "$pidfile" "redis-server 127.0.0.1:$port ")"; then
    log "redis $port: already running (pid $pid)"
    return 0
  fi
  rm -f "$pidfile"
  sf_wait_port_free "redis $port" "$port" "set SHARDFEED_REDIS_BASE_PORT"
  sf_wait_port_free "redis $port (cluster bus)" $((port + 10000)) "set SHARDFEED_REDIS_BASE_PORT"
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<EOF
# Written by deploy/local/up.sh at every start.
port $port
bind 127.0.0.1
protected-mode yes
daemonize yes
pidfile $pidfile
logfile $SF_LOG_DIR/redis-$port.log
dir $dir
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 3000
appendonly no
# A cache: no RDB snapshots either (PostgreSQL is the source of truth).
save ""
# Every shardfeed key has a TTL; under memory pressure the least recently used go first
# (docs/cache.md explains why readers tolerate a partly evicted author).
maxmemory 512mb
maxmemory-policy volatile-lru
# Masters ping replicas every second (default 10 s). Until a new cluster's first ping its
# replication offsets are 0, and nodes leave such replicas out of CLUSTER SLOTS: a service
# connecting then would send no read to a replica until its next topology refresh.
repl-ping-replica-period 1
EOF
  log "redis $port: starting"
  redis-server "$dir/redis.conf" || die "redis-server on port $port failed to start (log: $SF_LOG_DIR/redis-$port.log)"
}

redis_wait_ping() {
  local port="$1" i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    [[ "$(sf_redis_cli "$port" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.1
  done
  tail -n 20 "$SF_LOG_DIR/redis-$port.log" >&2 || true
  die "redis on port $port does not answer PING (log: $SF_LOG_DIR/redis-$port.log)"
}

# True when every node reports cluster_state:ok and knows all six nodes.
cluster_healthy() {
  local port
  for port in $(sf_redis_ports); do
    [[ "$(sf_cluster_info_field "$port" cluster_state)" == ok ]] || return 1
    [[ "$(sf_cluster_info_field "$port" cluster_known_nodes)" == "$SF_REDIS_NODES_COUNT" ]] || return 1
  done
}

# True when no node has met another node or owns a slot yet.
cluster_fresh() {
  local port
  for port in $(sf_redis_ports); do
    [[ "$(sf_cluster_info_field "$port" cluster_known_nodes)" == 1 ]] || return 1
    [[ "$(sf_cluster_info_field "$port" cluster_slots_assigned)" == 0 ]] || return 1
  done
}

cluster_ensure() {
  if cluster_healthy; then
    log "redis cluster: already formed (cluster_state:ok)"
    return 0
  fi
  if cluster_fresh; then
    local nodes=() port
    for port in $(sf_redis_ports); do nodes+=("127.0.0.1:$port"); done
    log "redis cluster: creating (3 masters, 3 replicas)"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$SF_LOG_DIR/redis-cluster-create.log" 2>&1 || {
      tail -n 30 "$SF_LOG_DIR/redis-cluster-create.log" >&2
      die "redis-cli --cluster create failed (log: $SF_LOG_DIR/redis-cluster-create.log)"
    }
  else
    # Nodes restarted with their nodes.conf: they find each other again by themselves.
    log "redis cluster: nodes already configured, waiting for them to rejoin"
  fi
  local i
  for ((i = 0; i < TIMEOUT * 5; i++)); do
    cluster_healthy && break
    sleep 0.2
  done
  if ! cluster_healthy; then
    sf_redis_cli "$SF_REDIS_BASE_PORT" cluster info >&2 || true
    die "the Redis Cluster did not reach cluster_state:ok within ${TIMEOUT}s (a half-created cluster? deploy/local/down.sh --purge, then up.sh again)"
  fi
  log "redis cluster: cluster_state:ok"
}

for port in $(sf_redis_ports); do redis_start_node "$port"; done
for port in $(sf_redis_ports); do redis_wait_ping "$port"; done
cluster_ensure

# ---------------------------------------------------------------------------------------------
# Migrations and services

# gRPC health check (grpc.health.v1.Health/Check, service "") over h2c with curl: prints
# SERVING, NOT_SERVING, ... or nothing when there is no answer.
grpc_health() {
  local addr="$1" hex
  hex="$(printf '\0\0\0\0\0' | curl -sS --max-time 2 --http2-prior-knowledge -X POST \
    -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
    "http://$addr/grpc.health.v1.Health/Check" 2>/dev/null | od -An -v -tx1 | tr -d ' \n')" || true
  case "$hex" in
    00000000020801) echo SERVING ;;
    00000000020802) echo NOT_SERVING ;;
    0000000000 | 00000000020800) echo UNKNOWN ;;
    *) echo "" ;;
  esac
}

curl_h2() { command -v curl >/dev/null 2>&1 && curl -V 2>/dev/null | grep -qw HTTP2; }

service_start() {
  local name="$1" bin="$2" addr="$3"
  local pidfile="$SF_RUN_DIR/$name.pid" logfile="$SF_LOG_DIR/$name.log" pid port
  port="${addr##*:}"
  if pid="$(sf_running "$pidfile" "$bin")"; then
    log "$name: already running (pid $pid, $addr)"
    return 0
  fi
  rm -f "$pidfile"
  sf_wait_port_free "$name" "$port" "set SHARDFEED_${name^^}__LISTEN_ADDR"
  log "$name: starting on $addr (log: $logfile)"
  printf '\n===== %s: started by deploy/local/up.sh =====\n' "$(date -Is)" >>"$logfile"
  # setsid: own session, so a Ctrl-C in the terminal that ran up.sh (or `just demo`) leaves it
  # alone. The wrapper writes its own pid, then execs the binary (so it is the service's pid).
  # shellcheck disable=SC2016  # $$ and $1 expand in the child bash
  # NO_COLOR: plain text in the log file, not terminal colour codes.
  NO_COLOR=1 setsid bash -c 'echo $$ >"$1"; shift; exec nohup "$@"' _ "$pidfile" "$(sf_bin "$bin")" \
    >>"$logfile" 2>&1 </dev/null &
}

service_wait() {
  local name="$1" bin="$2" addr="$3"
  local pidfile="$SF_RUN_DIR/$name.pid" logfile="$SF_LOG_DIR/$name.log" pid i state="" port
  port="${addr##*:}"
  for ((i = 0; i < TIMEOUT * 5; i++)); do
    pid="$(sf_read_pid "$pidfile" 2>/dev/null)" || { sleep 0.2; continue; }
    if ! sf_pid_matches "$pid" "$bin"; then
      sf_log_tail "$logfile"
      rm -f "$pidfile"
      die "$name exited during startup (log: $logfile)"
    fi
    if curl_h2; then
      state="$(grpc_health "$addr")"
      if [[ "$state" == SERVING ]]; then
        log "$name: SERVING (grpc.health.v1) on $addr"
        return 0
      fi
    elif sf_port_open "$port"; then
      log "$name: accepting connections on $addr (curl with HTTP/2 missing: health not checked)"
      return 0
    fi
    sleep 0.2
  done
  sf_log_tail "$logfile"
  die "$name did not report SERVING on $addr within ${TIMEOUT}s (last health state: ${state:-no answer}; log: $logfile)"
}

if ((!stores_only)); then
  log "migrations: shardfeed migrate"
  sf_cli migrate >>"$SF_LOG_DIR/migrate.log" 2>&1 || {
    sf_log_tail "$SF_LOG_DIR/migrate.log"
    die "shardfeed migrate failed (log: $SF_LOG_DIR/migrate.log)"
  }

  sf_export_stack_env
  # Migrations ran just above; the services need not run them again.
  export SHARDFEED_INGEST__RUN_MIGRATIONS=false
  service_start ingest shardfeed-ingest "$SF_INGEST_ADDR"
  service_start aggregator shardfeed-aggregator "$SF_AGGREGATOR_ADDR"
  service_wait ingest shardfeed-ingest "$SF_INGEST_ADDR"
  service_wait aggregator shardfeed-aggregator "$SF_AGGREGATOR_ADDR"
fi

# ---------------------------------------------------------------------------------------------
# Summary

nodes_csv="$(sf_redis_nodes_csv)"
what=""
if ((stores_only)); then what=" (stores only)"; fi
cat <<EOF

${_sf_bold}shardfeed local stack is up${what}${_sf_reset}
  postgres     $SF_PG_URL
               psql -h 127.0.0.1 -p $SF_PG_PORT -U shardfeed shardfeed
  redis        $nodes_csv
               redis-cli -c -p $SF_REDIS_BASE_PORT cluster info
EOF
if ((!stores_only)); then
  cat <<EOF
  ingest       grpc://$SF_INGEST_ADDR      (UserService, GraphService, PostService)
  aggregator   grpc://$SF_AGGREGATOR_ADDR      (FeedService, HotspotService)
               grpcurl -plaintext $SF_INGEST_ADDR list
EOF
fi
cat <<EOF
  logs         $SF_LOG_DIR/{ingest,aggregator,postgres,redis-<port>}.log   (deploy/local/logs.sh [-f] [ingest|aggregator|redis|postgres])
  pid files    $SF_RUN_DIR/
  stop         deploy/local/down.sh   (--purge also deletes the data)

To point the CLI or a service started by hand at this stack:
  export SHARDFEED_POSTGRES__URL=$SF_PG_URL
  export SHARDFEED_REDIS__NODES=$nodes_csv
  export SHARDFEED_INGEST__LISTEN_ADDR=$SF_INGEST_ADDR
  export SHARDFEED_AGGREGATOR__LISTEN_ADDR=$SF_AGGREGATOR_ADDR
EOF
