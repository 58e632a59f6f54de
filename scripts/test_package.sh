#!/usr/bin/env bash
# The package a DBA installs: `cargo pgrx package` output for the server
# PG_VERSION names (default 15), copied onto that server after its pg_upkeep
# files were removed, then a fresh cluster with the library preloaded
# creates the extension and uses it. Fails (exit 1) when any step does.
# Leaves the packaged build installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
echo "== cargo pgrx package (PostgreSQL $PG_VERSION)"
mkdir -p target
cargo pgrx package --pg-config "$PG_CONFIG" >target/pgrx-package.log 2>&1 || { tail -20 target/pgrx-package.log; exit 1; }
PACKAGE=${CARGO_TARGET_DIR:-target}/release/pg_upkeep-pg$PG_VERSION
LIBDIR=$("$PG_CONFIG" --pkglibdir)
EXTDIR=$("$PG_CONFIG" --sharedir)/extension
ls "$PACKAGE$LIBDIR/pg_upkeep.so" "$PACKAGE$EXTDIR/pg_upkeep.control" >/dev/null
# A PostgreSQL without pg_upkeep, then the package's files, as a DBA copies them.
rm -f "$LIBDIR/pg_upkeep.so" "$EXTDIR"/pg_upkeep.control "$EXTDIR"/pg_upkeep--*.sql
cp -r "$PACKAGE/." /
DIR=/tmp/pg_upkeep-package-check
PORT=5488
cluster_start "$DIR" "$PORT" "upkeep.naptime = 1"
trap 'cluster_stop "$DIR"; rm -rf "$DIR"' EXIT
PSQL=(psql -X -q -At -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "CREATE EXTENSION pg_upkeep"
[ "$("${PSQL[@]}" -c "SELECT up_to_date FROM upkeep.version()")" = t ] || { echo "package: version mismatch"; exit 1; }
"${PSQL[@]}" -c "CREATE TABLE readings (at date NOT NULL) PARTITION BY RANGE (at)" \
  -c "INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('readings', 'at', 2)"
# The workers of the packaged library make the partitions.
for _ in $(seq 1 30); do
  n=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass")
  [ "$n" = 3 ] && break
  sleep 1
done
[ "$n" = 3 ] || { echo "package: the workers made $n partitions, not 3"; tail -20 "$DIR/server.log"; exit 1; }
echo "package: $(ls "$PACKAGE$EXTDIR" | tr '\n' ' ')installed on PostgreSQL $("${PSQL[@]}" -c 'SHOW server_version'); CREATE EXTENSION, version up to date, workers made 3 partitions: ok"
