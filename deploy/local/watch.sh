#!/usr/bin/env bash
# Rebuilds the services and the CLI whenever their code changes and restarts both services on
# the local stack (`shardfeed dev restart`: the stores keep running, or are started if they are
# not; new migrations are applied). Runs until Ctrl-C; the services last started keep running
# (deploy/local/down.sh stops them). Uses cargo-watch, installed with
# `cargo install --locked cargo-watch` when missing.
#
# Usage: deploy/local/watch.sh [dev|release]
#   dev (default)  the dev profile: quick to rebuild, full debug info; binaries in <target>/debug
#   release        the demo's profile (line tables only); binaries in <target>/release
# Knobs: those of lib.sh (the stack's ports and addresses, CARGO_TARGET_DIR).
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# One round, run by cargo-watch: build, then restart the services from what was built. A build
# that fails leaves the running services as they are.
rebuild() {
  local profile="$1" out_dir=debug locked
  local flags=()
  if [[ "$profile" == release ]]; then out_dir=release flags=(--release); fi
  locked="$(sf_locked)"
  log "cargo build${flags[*]:+ ${flags[*]}}${locked:+ $locked}"
  if ! (cd "$SF_REPO" && cargo build "${flags[@]}" ${locked:+"$locked"} \
    -p shardfeed-ingest -p shardfeed-aggregator -p shardfeed-cli); then
    printf 'watch: the build failed; the running services are left as they were\n' >&2
    return 1
  fi
  (cd "$SF_REPO" && "$(sf_target_dir)/$out_dir/shardfeed" dev restart)
  log "watching for changes (Ctrl-C stops watching; the services keep running)"
}

profile="${1:-dev}"
if [[ "$profile" == --rebuild ]]; then
  rebuild "${2:-dev}"
  exit
fi
[[ "$profile" == dev || "$profile" == release ]] || die "usage: deploy/local/watch.sh [dev|release]"

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
sf_ensure_redis
sf_ensure_postgres
if ! cargo watch --version >/dev/null 2>&1; then
  log "installing cargo-watch (cargo install --locked cargo-watch)"
  cargo install --locked cargo-watch || die "cargo install --locked cargo-watch failed"
fi

cd "$SF_REPO"
# What the three binaries are built from; tests and docs do not change them. The first round
# runs at once.
exec cargo watch --why \
  -w src -w build.rs -w proto -w crates -w migrations -w vendor -w Cargo.toml -w Cargo.lock \
  -i '**/tests/**' -i '**/*.md' \
  -s "deploy/local/watch.sh --rebuild $profile"
