#!/usr/bin/env bash
# Runs `shardfeed migrate` against the local stack's PostgreSQL (which must be up: up.sh).
# Builds the CLI first (a no-op when it is up to date).
#
# Usage: deploy/local/migrate.sh [ARGS...]   (extra arguments go to `shardfeed migrate`)
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sf_validate_ports
sf_ensure_postgres
sf_pg_running || die "the local PostgreSQL is not running: start it with deploy/local/up.sh (or up.sh --stores-only)"

locked="$(sf_cargo_locked_flag)"
(cd "$SF_REPO" && cargo build --release ${locked:+"$locked"} -p shardfeed-cli) || die "cargo build -p shardfeed-cli failed"

log "shardfeed migrate ($SF_PG_URL)"
sf_cli migrate "$@"
