#!/usr/bin/env bash
# Brings the local stack up (up.sh: builds, starts what is not running) and runs the scripted
# tour `shardfeed demo` against it. Extra arguments go to `shardfeed demo`.
#
# Usage: deploy/local/tour.sh [ARGS...]
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SF_REPO/deploy/local/up.sh"
echo
log "shardfeed demo --ingest http://$SF_INGEST_ADDR --aggregator http://$SF_AGGREGATOR_ADDR $*"
sf_cli demo --ingest "http://$SF_INGEST_ADDR" --aggregator "http://$SF_AGGREGATOR_ADDR" "$@"
