#!/usr/bin/env bash
# Index health: the bloat estimate against pgstattuple's pgstatindex(), and
# the time of the whole report against pgstatindex() over every index.
#
# A generated corpus: one table per key type and damage level, each with a
# btree index built after the load; then a share of the rows (0 to 80%) is
# deleted, or updated so that the index gets new entries, and the table is
# vacuumed and analyzed. Key types: int4, int8, uuid, short text, long
# text, timestamptz, a two-column key, and a low-cardinality int4 (whose
# duplicates btree stores once). Per index:
#   truth     = 100 * (1 - (leaf_pages * avg_leaf_density / fillfactor) / pages)   (pgstatindex)
#   estimate  = 100 * (1 - 1 / bloat_ratio), at least 0 (as the report counts bloat) (upkeep.index_health_figures())
# Targets: mean absolute error at most 10 points on indexes of at least 1 MB;
# the whole report at least 100x faster than pgstatindex() over every index
# of the corpus (about 1 GB of indexes). Timed twice: warm (shared_buffers
# at PostgreSQL's default 128MB, the kernel caching every file: the
# indexes are read from memory) and cold (after a restart, with the
# kernel's cache of the data files dropped with posix_fadvise: read from
# disk, as on a server whose indexes are not all in memory).
#
#   bench/index_health.sh [rows per table] [rounds]     (default 500000, 5; medians)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROWS=${1:-500000}
ROUNDS=${2:-5}
# On disk, not tmpfs: the cold runs must read from storage.
DIR=${INDEX_BENCH_DIR:-/var/tmp/pg_upkeep-bench-index-health}
PORT=${BENCH_PORT:-5495}
OUT=$BENCH_OUT
bench_prepare
cluster_start "$DIR" "$PORT" "upkeep.enabled = off" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min" "maintenance_work_mem = 512MB" "synchronous_commit = off" "jit = off"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -At -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.4f", b - a}'; }

q "CREATE EXTENSION pg_upkeep" >/dev/null
q "CREATE EXTENSION pgstattuple" >/dev/null
# name; column definitions; key of row @; index columns
TYPES="int4;k int4;@;k
int8;k int8;@::int8 * 7919;k
uuid;k uuid;md5(@::text)::uuid;k
text_short;k text;'k' || @;k
text_long;k text;'customer-reference-' || lpad(@::text, 20, '0');k
timestamptz;k timestamptz;timestamptz '2020-01-01' + @ * interval '1 minute';k
two_columns;a int4, b int8;@ % 1000, @::int8;a, b
low_cardinality;k int4;@ % 50;k"
LEVELS="0 20 40 60 80"
echo "building the corpus: 8 key types x 5 damage levels x 2 kinds, $ROWS rows each ..."
t0=$(now)
while IFS=';' read -r name cols expr idx; do
  for level in $LEVELS; do
    for kind in delete update; do
      [ "$level" = 0 ] && [ "$kind" = update ] && continue
      t="${name}_${kind}_${level}"
      "${PSQL[@]}" -c "CREATE TABLE $t ($cols, id int4 NOT NULL, pad text)" \
        -c "INSERT INTO $t SELECT ${expr//@/g}, g, 'p' FROM generate_series(1, $ROWS) g" \
        -c "CREATE INDEX ${t}_idx ON $t ($idx)"
      if [ "$level" != 0 ]; then
        # The same share of rows throughout the key range (hashed, not a range).
        pick="(hashint4(id) & 1023) < $((1024 * level / 100))"
        if [ "$kind" = delete ]; then
          "${PSQL[@]}" -c "DELETE FROM $t WHERE $pick"
        else
          # A new key for the picked rows: new index entries, the old ones dead.
          "${PSQL[@]}" -c "UPDATE $t SET ($idx) = ROW(${expr//@/(id + $ROWS)}) WHERE $pick"
        fi
      fi
      "${PSQL[@]}" -c "VACUUM ANALYZE $t"
    done
  done
done <<<"$TYPES"
echo "  built in $(since "$t0") s: $(q "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname ~ '_(delete|update)_'") indexes, \
$(q "SELECT pg_size_pretty(sum(pg_relation_size(indexrelid))) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname ~ '_(delete|update)_'") of indexes"

# --- accuracy ---------------------------------------------------------------
"${PSQL[@]}" -c "CREATE TABLE accuracy AS
  SELECT f.index, f.size_bytes,
         (100 * (1 - (s.leaf_pages * s.avg_leaf_density / 90.0) / (s.index_size / 8192.0)))::numeric AS truth,
         greatest(0, 100 * (1 - 1 / f.bloat_ratio))::numeric AS estimate
    FROM upkeep.index_health_figures() f
    JOIN LATERAL pgstatindex(format('%I.%I', f.schema, f.index)) s ON true
   WHERE f.index ~ '_(delete|update)_'"
"${PSQL[@]}" -P pager=off -c "SELECT index, pg_size_pretty(size_bytes) AS size, round(truth) AS truth, round(estimate) AS estimate,
                                     round(estimate - truth) AS error FROM accuracy ORDER BY index" >"$OUT/index_health_accuracy.txt"
MAE=$(q "SELECT round(avg(abs(estimate - truth)), 1) FROM accuracy WHERE size_bytes >= 1048576")
N=$(q "SELECT count(*) FROM accuracy WHERE size_bytes >= 1048576")
WORST=$(q "SELECT index || ' ' || round(estimate - truth) FROM accuracy WHERE size_bytes >= 1048576 ORDER BY abs(estimate - truth) DESC LIMIT 1")
BY_KIND=$(q "SELECT string_agg(k || ' ' || e, ', ' ORDER BY k) FROM (SELECT substring(index from '_(delete|update)_') AS k,
                    round(avg(abs(estimate - truth)), 1) AS e FROM accuracy WHERE size_bytes >= 1048576 GROUP BY 1) x")

# --- speed: the whole report against pgstatindex() over every index --------
# Timed in one session by psql (server work, not connection start-up); the
# first of ROUNDS + 1 runs warms the caches and is left out.
timed() { # timed SQL: median of the warm runs, in seconds
  { echo '\timing on'; for r in $(seq 0 "$ROUNDS"); do echo "$1;"; done; } | "${PSQL[@]}" -At |
    awk '/^Time:/ {print $2 / 1000}' | tail -n +2 | tr '\n' ' ' | median
}
REPORT=$(timed "SELECT count(*) FROM upkeep.index_health_report()")
EXACT=$(timed "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
      JOIN pg_namespace n ON n.oid = c.relnamespace, pgstatindex(i.indexrelid::regclass) s
     WHERE am.amname = 'btree' AND n.nspname = 'public'")
# cold: each run after a restart with the data files' pages dropped from the kernel's cache
cold_run() { # cold_run SQL: seconds of one run on cold caches
  q "CHECKPOINT" >/dev/null; sync
  as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -w -m fast restart >/dev/null
  find "$DIR/data/base" -type f -exec dd if={} iflag=nocache count=0 status=none \;
  { echo '\timing on'; echo "$1;"; } | "${PSQL[@]}" -At | awk '/^Time:/ {print $2 / 1000}'
}
report_cold=""; exact_cold=""
for r in $(seq 1 3); do
  report_cold+="$(cold_run "SELECT count(*) FROM upkeep.index_health_report()") "
  exact_cold+="$(cold_run "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
      JOIN pg_namespace n ON n.oid = c.relnamespace, pgstatindex(i.indexrelid::regclass) s
     WHERE am.amname = 'btree' AND n.nspname = 'public'") "
done
REPORT_COLD=$(echo "$report_cold" | median); EXACT_COLD=$(echo "$exact_cold" | median)

TOTAL=$(q "SELECT pg_size_pretty(sum(pg_relation_size(i.indexrelid))) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")

cat <<EOF

Index health ($ROUNDS rounds, medians; PostgreSQL $(q "SHOW server_version"), $(nproc) cores)
  corpus: $N indexes of at least 1 MB, $TOTAL of indexes in all ($ROWS rows per table)
  bloat estimate against pgstatindex, mean absolute error: $MAE points   (target <= 10)
    by damage: $BY_KIND; worst: $WORST
    (per index: $OUT/index_health_accuracy.txt)
  warm (every file in memory):
    whole report (upkeep.index_health_report()):  $REPORT s
    pgstatindex() over every index:                $EXACT s
    ratio:                                         $(awk -v a="$EXACT" -v b="$REPORT" 'BEGIN {printf "%.0fx faster", a / b}')   (target >= 100x)
  cold (after a restart, data files dropped from the kernel's cache; runs: report $report_cold/ pgstatindex $exact_cold):
    whole report:                                  $REPORT_COLD s
    pgstatindex() over every index:                $EXACT_COLD s
    ratio:                                         $(awk -v a="$EXACT_COLD" -v b="$REPORT_COLD" 'BEGIN {printf "%.0fx faster", a / b}')   (target >= 100x)
EOF
