# shellcheck shell=bash
# The bootstrap a fresh machine needs before the Rust tooling can run: redis-server and the
# PostgreSQL server binaries (installed with apt-get when missing), and the release build of the
# `shardfeed` CLI and both services. Everything else (starting, checking, pausing and stopping
# the stack) is `shardfeed dev`. Source this file, don't run it.
#
# Environment knobs (not SHARDFEED_*: every such variable is a setting of the services'
# configuration, which refuses unknown ones):
#   SFDEV_PG_PORT            PostgreSQL port (default 54329; 5432 is refused)
#   SFDEV_REDIS_BASE_PORT    first Redis port; the six nodes use base..base+5 (default 7000)
#   SFDEV_INGEST_ADDR        ingest's address (default 127.0.0.1:50051)
#   SFDEV_AGGREGATOR_ADDR    the aggregator's address (default 127.0.0.1:50052)
#   SFDEV_START_TIMEOUT      seconds each service may take to report SERVING (default 60)
#   SFDEV_PG_BINDIR          PostgreSQL's bin dir (default: found under /usr/lib/postgresql);
#                            one without initdb and postgres is an error, not skipped
#   CARGO_TARGET_DIR         where the release binaries are (default <repo>/target)

set -euo pipefail

SF_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  _sf_bold=$'\033[1m' _sf_red=$'\033[31m' _sf_reset=$'\033[0m'
else
  _sf_bold="" _sf_red="" _sf_reset=""
fi

log() { printf '%s==>%s %s\n' "$_sf_bold" "$_sf_reset" "$*"; }
die() {
  printf '%serror:%s %s\n' "$_sf_red" "$_sf_reset" "$*" >&2
  exit 1
}

# sf_run_check NAME COMMAND... — runs one check of a lint script, saying what it runs and how it
# ended; a failure is added to the array sf_failed and does not stop the script.
sf_failed=()
sf_run_check() {
  local name="$1"
  shift
  log "$name: $*"
  if "$@"; then
    log "$name: ok"
  else
    printf '%serror:%s %s failed\n' "$_sf_red" "$_sf_reset" "$name" >&2
    sf_failed+=("$name")
  fi
}

# Runs a command as root: directly, or through sudo when it needs no password; else returns 1.
sf_as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}

# sf_apt_install PACKAGE... — installs Debian packages, or dies naming them.
sf_apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "missing: $* (no apt-get here: install it with your system's package manager)"
  sf_as_root true 2>/dev/null || die "missing: $*; install it as root: sudo apt-get install -y $*"
  log "installing $* (apt-get)"
  sf_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
  sf_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" ||
    die "apt-get install $* failed; install it by hand"
}

# redis-server and redis-cli (Debian's redis-server package pulls redis-tools). The package
# also enables a system redis on 6379: not ours to stop, and the stack does not use it.
sf_ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  sf_apt_install redis-server
  command -v redis-cli >/dev/null 2>&1 || die "redis-server/redis-cli still missing after apt-get"
}

# Exports SFDEV_PG_BINDIR (PostgreSQL's server binaries, 15 preferred; installed if missing)
# and puts it first on PATH.
sf_ensure_postgres() {
  local dir
  if [[ -n "${SFDEV_PG_BINDIR:-}" ]]; then
    # Named by hand: used as it is, never silently replaced by another one.
    [[ -x "$SFDEV_PG_BINDIR/initdb" && -x "$SFDEV_PG_BINDIR/postgres" ]] ||
      die "SFDEV_PG_BINDIR=$SFDEV_PG_BINDIR has no initdb and postgres (unset it to use /usr/lib/postgresql/*/bin)"
    export PATH="$SFDEV_PG_BINDIR:$PATH"
    return 0
  fi
  for dir in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
      export SFDEV_PG_BINDIR="$dir" PATH="$dir:$PATH"
      return 0
    fi
  done
  [[ -z "${_sf_pg_installed:-}" ]] || die "PostgreSQL server binaries still missing after apt-get"
  sf_apt_install postgresql-15
  _sf_pg_installed=1 sf_ensure_postgres
}

sf_target_dir() {
  local dir="${CARGO_TARGET_DIR:-$SF_REPO/target}"
  # cargo resolves a relative CARGO_TARGET_DIR against its working directory: the repo here.
  [[ "$dir" = /* ]] || dir="$SF_REPO/$dir"
  echo "$dir"
}

# --locked when the repo has a lock file.
sf_locked() {
  if [[ -f "$SF_REPO/Cargo.lock" ]]; then echo --locked; fi
}

sf_build_release() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
  local locked
  locked="$(sf_locked)"
  local target start=$SECONDS
  target="$(sf_target_dir)"
  if [[ -x "$target/release/shardfeed" ]]; then
    log "building release binaries (cargo build --release${locked:+ $locked}): only what changed"
  else
    log "building release binaries (cargo build --release${locked:+ $locked}) into $target/release:" \
      "the first build takes about 10 minutes on 2 cores"
  fi
  # cargo's own progress (a bar on a terminal, a line per crate otherwise) goes to stderr as is.
  (cd "$SF_REPO" && cargo build --release ${locked:+"$locked"} \
    -p shardfeed-ingest -p shardfeed-aggregator -p shardfeed-cli) || die "cargo build failed"
  log "release binaries ready after $((SECONDS - start)) s"
}

# Runs the release `shardfeed` CLI from the repo (where `shardfeed dev` finds .local/), building
# it first when it is missing.
sf_cli() {
  local cli
  cli="$(sf_target_dir)/release/shardfeed"
  [[ -x "$cli" ]] || sf_build_release
  (cd "$SF_REPO" && "$cli" "$@")
}

# Exports the SHARDFEED_* settings that point the CLI at the local stack.
sf_stack_env() {
  local env
  env="$(sf_cli dev env)" || die "shardfeed dev env failed"
  eval "$env"
}
