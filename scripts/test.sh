#!/usr/bin/env bash
# Runs every test: the pure unit tests and the #[pg_test]s (cargo pgrx test),
# then the cluster tests in pgrx-tests/ against a real PostgreSQL 15 with
# pg_upkeep preloaded, then the release package installed and used
# (scripts/test_package.sh). Fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# Outside the work tree: the postgres user may not be able to enter a clone.
TEST_DATA=/tmp/pg_upkeep-pgrx-test-data
# The test cluster runs as postgres (initdb refuses root).
rm -rf "$TEST_DATA"
install -d -o postgres -g postgres "$TEST_DATA"

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

echo "== unit tests and #[pg_test]s"
cargo pgrx test pg15 --runas postgres --pgdata "$TEST_DATA" 2>&1 | tee -a "$LOG"

echo "== cluster tests (pgrx-tests/)"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
cargo test -p upkeep-cluster-tests -- --test-threads=2 2>&1 | tee -a "$LOG"

echo "== the package (cargo pgrx package, installed on a PostgreSQL without pg_upkeep)"
bash scripts/test_package.sh 2>&1 | tee -a "$LOG"

# One closing line for the whole run (any failure has exited above).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$LOG"
