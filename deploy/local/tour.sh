#!/usr/bin/env bash
# Brings the local stack up (up.sh) and runs the scripted API tour `shardfeed demo` against it.
# Extra arguments go to `shardfeed demo`.
#
# Usage: deploy/local/tour.sh [ARGS...]
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SF_REPO/deploy/local/up.sh"
sf_stack_env
echo
sf_cli demo --ingest "http://$SHARDFEED_INGEST__LISTEN_ADDR" \
  --aggregator "http://$SHARDFEED_AGGREGATOR__LISTEN_ADDR" "$@"
