#!/usr/bin/env bash
# Lints: cargo fmt --check, cargo clippy (-D warnings), buf lint (STANDARD, buf.yaml) on proto/,
# and the deployment files (deploy/local/lint-deploy.sh: the Kubernetes manifests, compose.yml,
# the Dockerfile, the Prometheus rules and the Grafana dashboard).
# Every check runs; the script fails when any of them failed.
#
# buf comes from npm (@bufbuild/buf), installed once under .local/tools.
# Env: SFDEV_BUF_VERSION (default 1.75.0), CARGO_TARGET_DIR.
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUF_VERSION="${SFDEV_BUF_VERSION:-1.75.0}"
SF_TOOLS_DIR="$SF_REPO/.local/tools"
cd "$SF_REPO"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup)"
locked="$(sf_locked)"

# Prints the path of a working buf, installing @bufbuild/buf into .local/tools when needed.
ensure_buf() {
  local buf="$SF_TOOLS_DIR/node_modules/.bin/buf" have
  if [[ -x "$buf" ]] && have="$("$buf" --version 2>/dev/null)" && [[ "$have" == "$BUF_VERSION" ]]; then
    echo "$buf"
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    sf_apt_install nodejs npm >&2
  fi
  log "installing buf $BUF_VERSION (npm install --prefix .local/tools @bufbuild/buf@$BUF_VERSION)" >&2
  mkdir -p "$SF_TOOLS_DIR"
  npm install --prefix "$SF_TOOLS_DIR" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2 ||
    die "npm install @bufbuild/buf@$BUF_VERSION failed"
  "$buf" --version >/dev/null 2>&1 || die "buf installed but $buf does not run"
  echo "$buf"
}

sf_run_check rustfmt cargo fmt --all -- --check
sf_run_check clippy cargo clippy --workspace --all-targets ${locked:+"$locked"} -- -D warnings
if buf="$(ensure_buf)"; then
  sf_run_check buf "$buf" lint
else
  sf_failed+=("buf (not installed)")
fi
sf_run_check deploy bash deploy/local/lint-deploy.sh

echo
if ((${#sf_failed[@]})); then
  echo "lint: FAILED: ${sf_failed[*]}"
  exit 1
fi
echo "lint: all checks passed (rustfmt, clippy, buf lint, deploy)"
