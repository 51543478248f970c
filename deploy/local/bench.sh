#!/usr/bin/env bash
# Brings the local stack up (up.sh) and runs `shardfeed bench ARGS...` against it, e.g.
#   deploy/local/bench.sh ingest
#   deploy/local/bench.sh feed
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$SF_REPO/deploy/local/up.sh"
sf_stack_env
echo
log "shardfeed bench $*"
sf_cli bench "$@"
