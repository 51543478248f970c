#!/usr/bin/env bash
# The main demo: brings the local stack up (up.sh) and runs the hot-partition simulation
# `shardfeed sim` against it. It prints a side-by-side table (mitigations off | on), writes a
# report (markdown + SVG chart) whose path it prints, and ends with a one-line JSON summary.
# Extra arguments go to `shardfeed sim` (`deploy/local/cli.sh sim --help` lists them).
#
# Usage: deploy/local/demo.sh [SIM ARGS...]
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SF_REPO/deploy/local/up.sh"
sf_stack_env
echo
log "shardfeed sim --ingest http://$SHARDFEED_INGEST__LISTEN_ADDR --report-dir .local/sim $*"
sf_cli sim --ingest "http://$SHARDFEED_INGEST__LISTEN_ADDR" --report-dir "$SF_REPO/.local/sim" "$@"
