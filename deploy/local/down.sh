#!/usr/bin/env bash
# Stops exactly what deploy/local/up.sh started, found through its pid files: both services,
# the six Redis nodes and PostgreSQL (pg_ctl stop -m fast). Nothing else is touched.
#
# Usage: deploy/local/down.sh [--purge]
#   --purge   also delete the data: .local/pg and .local/redis (logs are kept)
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h | --help) sf_usage "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $arg (usage: down.sh [--purge])" ;;
  esac
done

sf_validate_ports

# Services first (they hold connections to the stores).
sf_stop_pid aggregator "$SF_RUN_DIR/aggregator.pid" shardfeed-aggregator
sf_stop_pid ingest "$SF_RUN_DIR/ingest.pid" shardfeed-ingest

# Redis nodes: every pid file up.sh's nodes wrote, whatever the current base port is.
shopt -s nullglob
for pidfile in "$SF_RUN_DIR"/redis-*.pid; do
  port="${pidfile##*/redis-}"
  port="${port%.pid}"
  sf_stop_pid "redis $port" "$pidfile" "redis-server 127.0.0.1:$port "
done
shopt -u nullglob

# PostgreSQL.
if [[ -f "$SF_PG_DIR/PG_VERSION" ]]; then
  if sf_find_postgres; then
    if sf_pg_running; then
      log "postgres: stopping (pg_ctl stop -m fast)"
      sf_as_pg_user "$SF_PG_BIN/pg_ctl" stop -D "$SF_PG_DIR" -m fast -w -t 60 >/dev/null
    fi
  elif pid="$(sf_running "$SF_PG_DIR/postmaster.pid" postgres)"; then
    # No pg_ctl around: SIGINT is PostgreSQL's fast shutdown.
    log "postgres: stopping pid $pid (SIGINT, fast shutdown)"
    kill -INT "$pid"
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
fi
rm -f "$SF_RUN_DIR/postgres.pid"

if ((purge)); then
  log "purging data: $SF_PG_DIR $SF_REDIS_DIR"
  rm -rf "$SF_PG_DIR" "$SF_REDIS_DIR"
fi
log "local stack is down"
