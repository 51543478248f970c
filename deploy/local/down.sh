#!/usr/bin/env bash
# Stops exactly what up.sh started (`shardfeed dev down`); --purge also deletes the data.
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

sf_cli dev down "$@"
