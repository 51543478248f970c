#!/usr/bin/env bash
# The main demo: brings the local stack up (up.sh) and runs the hot-partition simulation
# `shardfeed sim` against it. It prints a side-by-side table (mitigations off | on), writes a
# report (markdown + SVG chart) and the sim's one-line JSON summary, and ends with one sentence
# saying where the report and its chart are and what they show.
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
out="$(mktemp "${TMPDIR:-/tmp}/shardfeed-demo.XXXXXX")"
trap 'rm -f "$out"' EXIT
# pipefail: the pipeline fails with the sim's status.
sf_cli sim --ingest "http://$SHARDFEED_INGEST__LISTEN_ADDR" --report-dir "$SF_REPO/.local/sim" "$@" |
  tee "$out"
# The sim's closing sentence, again as the demo's last line (the JSON summary came after it).
closing="$(grep '^report: ' "$out" | tail -n 1)" || closing="report: $SF_REPO/.local/sim/"
echo
log "$closing"
