#!/usr/bin/env bash
# The whole test suite, runnable on a fresh machine: installs what the tests need (redis-server;
# PostgreSQL server binaries) and runs `cargo test --workspace`. The tests start their own
# PostgreSQL and Redis Cluster on free ports: the local stack is not used and not started.
#
# Usage: deploy/local/test.sh [CARGO TEST ARGS...]   e.g. deploy/local/test.sh -p shardfeed-server
# Env: CARGO_TARGET_DIR (default <repo>/target)
#      SFDEV_TEST_SUMMARY_FILE: when set, the one-line summary is also written there.
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
sf_ensure_redis
# Exports SFDEV_PG_BINDIR, where the testkit finds initdb and postgres.
sf_ensure_postgres
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SF_REPO/target}"

locked="$(sf_locked)"
# The whole workspace unless packages are named (cargo would let --workspace win over -p).
scope=(--workspace)
for arg in "$@"; do
  case "$arg" in
    -p | -p* | --package | --package=*) scope=() ;;
    --) break ;;
  esac
done
cmd=(cargo test "${scope[@]}" ${locked:+"$locked"} "$@")
log "redis-server: $(redis-server --version | awk '{print $3}'), postgres: $("$SFDEV_PG_BINDIR/postgres" --version)"
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
log "${cmd[*]}"

out="$(mktemp "${TMPDIR:-/tmp}/shardfeed-test.XXXXXX")"
trap 'rm -f "$out"' EXIT
start=$SECONDS
rc=0
# pipefail: the pipeline fails with cargo's status.
(cd "$SF_REPO" && "${cmd[@]}") 2>&1 | tee "$out" || rc=$?
elapsed=$((SECONDS - start))

# Add up every "test result: ok. 3 passed; 0 failed; 1 ignored; ..." line (one per test binary
# and one for the doc tests of each crate).
read -r passed failed ignored binaries < <(
  sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored;.*/\1 \2 \3/p' "$out" |
    awk '{p+=$1; f+=$2; i+=$3; n++} END {printf "%d %d %d %d\n", p, f, i, n}'
)
summary="$passed passed, $failed failed, $ignored skipped"

echo
echo "==================== test summary ===================="
echo "cargo test: exit $rc after ${elapsed}s, $binaries test binaries (incl. doc tests)"
if ((rc != 0 && failed == 0)); then
  echo "cargo test failed before or outside the tests (build error? see above)"
fi
if ((rc == 0 && passed == 0)); then
  echo "note: no test ran"
fi
echo "tests: $summary"
if [[ -n "${SFDEV_TEST_SUMMARY_FILE:-}" ]]; then
  echo "$summary" >"$SFDEV_TEST_SUMMARY_FILE"
fi
exit "$rc"
