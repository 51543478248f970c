#!/usr/bin/env bash
# Runs the release `shardfeed` CLI with the local stack's SHARDFEED_* settings, e.g.
#   deploy/local/cli.sh migrate
#   deploy/local/cli.sh dev status | dev logs -f ingest | dev chaos pause --seconds 8
# Builds the CLI if it is missing; starts nothing (see up.sh).
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sf_stack_env
sf_cli "$@"
