#!/usr/bin/env bash
# Runs every test: the core crate's (plain Rust), then on every PostgreSQL
# version pg_upkeep is tested on (15, 16 and 18; PG_VERSION="18" or "15 18"
# picks some): the unit tests and
# the #[pg_test]s (cargo pgrx test), the cluster tests in pgrx-tests/
# against a real server with pg_upkeep preloaded, the release package
# installed and used (scripts/test_package.sh); in the round of 18, the
# pg_upgrade test from 16; the dump test restores a dump made by 15.
# Fails when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/versions.sh
VERSIONS=${PG_VERSION:-$TESTED_VERSIONS}
for v in $VERSIONS; do pg_config_of "$v" >/dev/null; done
bash scripts/setup.sh

# Outside the work tree: the postgres user may not be able to enter a clone.
TEST_DATA=/tmp/pg_upkeep-pgrx-test-data
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
SKIPPED=()
INSTALLED=()
UPGRADE_FROM=16
UPGRADE_TO=18
DUMP_FROM=15
# installed VERSION: pg_upkeep of this build is installed for that server
installed() {
  if [[ " ${INSTALLED[*]} " != *" $1 "* ]]; then
    cargo pgrx install --pg-config "$(pg_config_of "$1")" >/dev/null
    INSTALLED+=("$1")
  fi
}

echo "== the core crate (plain Rust: no PostgreSQL involved)"
cargo test -p upkeep-core 2>&1 | tee -a "$LOG"

for v in $VERSIONS; do
  echo "== PostgreSQL $v: unit tests and #[pg_test]s"
  # The test cluster runs as postgres (initdb refuses root).
  rm -rf "$TEST_DATA"
  install -d -o postgres -g postgres "$TEST_DATA"
  cargo pgrx test "pg$v" --runas postgres --pgdata "$TEST_DATA" 2>&1 | tee -a "$LOG"

  echo "== PostgreSQL $v: cluster tests (pgrx-tests/)"
  installed "$v"
  skip=()
  for ext in pg_cron pg_partman pgstattuple; do
    if ! has_extension "$v" "$ext"; then
      skip+=(--skip "$ext")
      SKIPPED+=("PostgreSQL $v: the cluster tests named after $ext (this server has no $ext)")
    fi
  done
  # pg_upgrade runs from 16 to 18 (pgrx-tests/tests/pg_upgrade.rs says why
  # not from Debian's 15), in the round of 18; the dump test restores a dump
  # of 15 in the later rounds. The older server needs pg_upkeep too.
  if [ "$v" = "$UPGRADE_TO" ]; then
    installed "$UPGRADE_FROM"
    export UPKEEP_PG_UPGRADE_FROM=$(pg_bin_of "$UPGRADE_FROM")
  else
    skip+=(--skip pg_upgrade_)
  fi
  installed "$DUMP_FROM"
  export UPKEEP_PG_DUMP_FROM=$(pg_bin_of "$DUMP_FROM")
  UPKEEP_PG_BIN=$(pg_bin_of "$v") cargo test -p upkeep-cluster-tests -- --test-threads=2 "${skip[@]}" 2>&1 | tee -a "$LOG"

  echo "== PostgreSQL $v: the package (cargo pgrx package, installed on a server without pg_upkeep)"
  PG_VERSION=$v bash scripts/test_package.sh 2>&1 | tee -a "$LOG"
done

# One closing line for the whole run (any failure has exited above).
for s in "${SKIPPED[@]}"; do echo "skipped: $s"; done
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$LOG"
