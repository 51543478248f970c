#!/usr/bin/env bash
# Starts the local shardfeed stack without Docker (`shardfeed dev up`): PostgreSQL, a 6-node
# Redis Cluster (3 masters + 3 replicas), migrations, shardfeed-ingest and shardfeed-aggregator.
# Installs redis-server and PostgreSQL when missing and builds the release binaries first.
# Idempotent: what already runs is left alone, so services started from older binaries keep
# running: `deploy/local/cli.sh dev restart` restarts them on the new ones. Knobs: see lib.sh.
#
# Usage: deploy/local/up.sh [--stores-only] [--no-build]
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=()
build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    *) args+=("$arg") ;;
  esac
done
sf_ensure_redis
sf_ensure_postgres
if ((build)); then sf_build_release; fi
sf_cli dev up "${args[@]}"
