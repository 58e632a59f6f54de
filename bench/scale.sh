#!/usr/bin/env bash
# Scale: how pg_upkeep's costs grow with the database. Two databases in one
# cluster, small and large (200 and 2,000 monthly-partitioned parents with 12
# partitions each, a primary key and one more index per parent: 2,400 and
# 24,000 partitions, about 5,000 and 50,000 indexes), and per database the
# best of ROUNDS calls, timed inside the server, of every view and report a
# dashboard or a DBA reads, and of the steady-state maintenance call (nothing
# due). Reported side by side with the ratio large/small: 10x the parents
# costing at most 10x is linear; the views' target is at most 1 s at the
# large size.
#
#   [PG_VERSION=18] bench/scale.sh [rounds]      (default 3; best of rounds reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROUNDS=${1:-3}
SMALL=${SCALE_SMALL:-200}
LARGE=${SCALE_LARGE:-2000}
DIR=$BENCH_BASE/pg_upkeep-scale
PORT=${BENCH_PORT:-5497}
OUT=$BENCH_OUT
bench_prepare
# Workers off: the timed calls must be the only work. Reading figures of
# 50,000 relations takes a lock on each in one transaction.
cluster_start "$DIR" "$PORT" "max_locks_per_transaction = 1024" "upkeep.enabled = off" \
  "shared_buffers = '512MB'"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)

month() { date -u -d "$(date -u +%Y-%m-01) $1 month" +%Y-%m-%d; }

# build N: database s_N with N parents, each registered with 12 months
# (6 back, the current one, 5 ahead), one transaction per parent.
build() {
  local n=$1 db=s_$1
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "${PSQL[@]}" -d "$db" -c "CREATE EXTENSION pg_upkeep"
  for i in $(seq 1 "$n"); do
    echo "CREATE TABLE public.t$i (id bigint NOT NULL, created date NOT NULL, payload text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created);"
    echo "CREATE INDEX ON public.t$i (payload);"
    echo "SELECT count(*) FROM upkeep.manage_partitions('public.t$i', 'created', 'month', premake => 5, start_at => '$(month -6)');"
  done >"$OUT/scale_$n.sql"
  "${PSQL[@]}" -d "$db" -f "$OUT/scale_$n.sql" >/dev/null
  "${PSQL[@]}" -d "$db" -c "VACUUM ANALYZE" -c CHECKPOINT
  local parts
  parts=$("${PSQL[@]}" -d "$db" -At -c "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'")
  [ "$parts" = $((n * 12)) ] || { echo "s_$n has $parts partitions, expected $((n * 12))"; exit 1; }
  echo "s_$n: $n parents, $parts partitions, $("${PSQL[@]}" -d "$db" -At -c "SELECT count(*) FROM pg_index") indexes"
}

CALLS=(
  "upkeep.partitions|count(*) FROM upkeep.partitions"
  "upkeep.partition_health|count(*) FROM upkeep.partition_health"
  "upkeep.index_health|count(*) FROM upkeep.index_health"
  "upkeep.matview_status|count(*) FROM upkeep.matview_status"
  "upkeep.archive_status|count(*) FROM upkeep.archive_status"
  "upkeep.jobs|count(*) FROM upkeep.jobs"
  "upkeep.metrics|count(*) FROM upkeep.metrics"
  "upkeep.prometheus()|upkeep.prometheus()"
  "upkeep.report_html()|upkeep.report_html()"
  "steady state: upkeep.run_maintenance(), nothing due|count(*) FROM upkeep.run_maintenance()"
)

build "$SMALL"
build "$LARGE"
declare -A small large
for call in "${CALLS[@]}"; do
  name=${call%%|*} expr=${call#*|}
  small[$name]=$(best_in_server "$ROUNDS" "s_$SMALL" "$expr")
  large[$name]=$(best_in_server "$ROUNDS" "s_$LARGE" "$expr")
  echo "$name: ${small[$name]} s at $SMALL parents, ${large[$name]} s at $LARGE"
done
# The steady-state calls created nothing.
n=$("${PSQL[@]}" -d "s_$LARGE" -At -c "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'")
[ "$n" = $((LARGE * 12)) ] || { echo "a steady-state run created partitions ($n)"; exit 1; }

growth=$(awk -v s="$SMALL" -v l="$LARGE" 'BEGIN {printf "%g", l / s}')
{
  echo "Run $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB,"
  echo "data on $DIR, PostgreSQL $("${PSQL[@]}" -d postgres -At -c 'SHOW server_version' | cut -d' ' -f1), pg_upkeep release build; best of $ROUNDS calls inside the server."
  echo
  echo "| call | $SMALL parents, s | $LARGE parents, s | large / small (${growth}x the parents) |"
  echo "|---|---|---|---|"
  for call in "${CALLS[@]}"; do
    name=${call%%|*}
    awk -v n="$name" -v s="${small[$name]}" -v l="${large[$name]}" \
      'BEGIN {printf "| %s | %.4f | %.4f | %.1fx |\n", n, s, l, (s > 0 ? l / s : 0)}'
  done
} | tee "$OUT/scale-pg$PG_VERSION.md"
