#!/usr/bin/env bash
# Formats the whole workspace (cargo fmt --all). Extra arguments go to cargo fmt.
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$SF_REPO"
cargo fmt --all "$@"
