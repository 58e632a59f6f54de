#!/usr/bin/env bash
# Runs every test: the pure unit tests and the #[pg_test]s (cargo pgrx test),
# then the cluster tests in pgrx-tests/ against a real PostgreSQL 15 with
# pg_upkeep preloaded. Fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# Outside the work tree: the postgres user may not be able to enter a clone.
TEST_DATA=/tmp/pg_upkeep-pgrx-test-data
# The test cluster runs as postgres (initdb refuses root).
rm -rf "$TEST_DATA"
install -d -o postgres -g postgres "$TEST_DATA"

echo "== unit tests and #[pg_test]s"
cargo pgrx test pg15 --runas postgres --pgdata "$TEST_DATA"

echo "== cluster tests (pgrx-tests/)"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
cargo test -p upkeep-cluster-tests -- --test-threads=2
