#!/usr/bin/env bash
# Shows the local stack's logs (.local/log/).
#
# Usage: deploy/local/logs.sh [-f] [-n LINES] [ingest|aggregator|redis|postgres|all]...
#   -f         follow (tail -F)
#   -n LINES   lines to show per file (default 50)
#   no component: all of them
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sf_usage "${BASH_SOURCE[0]}"; }

follow=0
lines=50
components=()
while (($#)); do
  case "$1" in
    -f | --follow) follow=1 ;;
    -n | --lines)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "-n needs a number of lines"
      lines="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    ingest | aggregator | redis | postgres | all) components+=("$1") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
((${#components[@]})) || components=(all)

files=()
shopt -s nullglob
for c in "${components[@]}"; do
  case "$c" in
    ingest | aggregator | postgres) files+=("$SF_LOG_DIR/$c.log") ;;
    redis) files+=("$SF_LOG_DIR"/redis-[0-9]*.log) ;;
    all) files+=("$SF_LOG_DIR/postgres.log" "$SF_LOG_DIR"/redis-[0-9]*.log "$SF_LOG_DIR/ingest.log" "$SF_LOG_DIR/aggregator.log") ;;
  esac
done
shopt -u nullglob

existing=()
for f in "${files[@]}"; do
  if [[ -f "$f" ]]; then existing+=("$f"); fi
done
((${#existing[@]})) || die "no logs yet for: ${components[*]} (in $SF_LOG_DIR; start the stack with deploy/local/up.sh)"

if ((follow)); then
  exec tail -n "$lines" -F "${existing[@]}"
else
  exec tail -n "$lines" "${existing[@]}"
fi
