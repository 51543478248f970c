# shardfeed developer recipes. Each calls `shardfeed dev` (through deploy/local/cli.sh, which
# runs the release CLI with the stack's settings) or one of the short bootstrap scripts under
# deploy/local/ (they work without `just`: `deploy/local/up.sh`, ...).
# Install just with `cargo install just --locked` if you want these shortcuts.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

# List the recipes
default:
    @just --list --unsorted

# Start the local stack: PostgreSQL, 6-node Redis Cluster, migrations, both services [--stores-only] [--no-build]
up *ARGS:
    @deploy/local/up.sh "$@"

# Rebuild and restart both services whenever their code changes (cargo-watch, installed if missing) [dev|release]
watch *ARGS:
    @deploy/local/watch.sh "$@"

# Restart both services from the release binaries, e.g. after `just up` rebuilt them (the stores keep running)
restart:
    @deploy/local/cli.sh dev restart

# Stop what `up` started [--purge: also delete the data]
down *ARGS:
    @deploy/local/cli.sh dev down "$@"

# What runs, on which port, and whether it is healthy
status:
    @deploy/local/cli.sh dev status

# Bring the stack up and run the hot-partition simulation (`shardfeed sim`): table, report, JSON
demo *ARGS:
    @deploy/local/demo.sh "$@"

# Bring the stack up and run the scripted API tour (`shardfeed demo`)
tour *ARGS:
    @deploy/local/tour.sh "$@"

# Run the whole test suite (the tests start their own PostgreSQL and Redis Cluster)
test *ARGS:
    @deploy/local/test.sh "$@"

# Bring the stack up and run `shardfeed bench ARGS` against it (e.g. `just bench feed`)
bench *ARGS:
    @deploy/local/bench.sh "$@"

# cargo fmt --check, cargo clippy -D warnings, buf lint, the deployment files (lint-deploy.sh)
lint:
    @deploy/local/lint.sh

# Format the workspace (cargo fmt --all)
fmt *ARGS:
    @cargo fmt --all "$@"

# Run the migrations against the local stack
migrate:
    @deploy/local/cli.sh migrate

# Show logs: [-f] [-n LINES] [ingest|aggregator|redis|postgres]
logs *ARGS:
    @deploy/local/cli.sh dev logs "$@"

# Pause one Redis master for 5 s (SIGSTOP/SIGCONT) and watch the failover [--port P] [--seconds N]
chaos *ARGS:
    @deploy/local/cli.sh dev chaos pause "$@"
