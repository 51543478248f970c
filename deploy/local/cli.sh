#!/usr/bin/env bash
# Runs the `shardfeed` CLI (release build) with the local stack's SHARDFEED_* environment.
# Nothing is started or built: see up.sh for that.
#
# Usage: deploy/local/cli.sh SUBCOMMAND [ARGS...]     e.g. deploy/local/cli.sh token --user 1
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sf_validate_ports
sf_cli "$@"
