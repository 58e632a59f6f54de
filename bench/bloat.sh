#!/usr/bin/env bash
# The btree bloat estimate against the statistics query DBAs run today, on
# a corpus shaped like real databases, both measured against pgstatindex().
#
#   bench/bloat.sh [rows per table]      (default 300000; ~10 minutes)
#
# The anchor is the estimate PgHero shows (the ioguix/jberkus btree query
# most monitoring tools carry): expected pages = 1 + ceil(reltuples * (4 +
# aligned tuple width) / (8192 - 24)), the tuple width from pg_stats'
# avg_width and null_frac; bloat = (relpages - expected) / relpages, read
# from pg_class. It counts the fill factor's free space as bloat, so it is
# measured against what it estimates: the share of the index that is not
# entries (pgstatindex: 1 - leaf_pages * avg_leaf_density / 100 / pages).
# pg_upkeep estimates what a rebuild would give back (bloat_ratio from
# upkeep.index_health_figures(), 1 - 1 / ratio), measured against that:
# 1 - (leaf_pages * avg_leaf_density / fillfactor + internal_pages + 1) /
# pages (a rebuild writes the entries at the fill factor, the upper levels
# and the metapage). Both estimates say 0 rather than less, and so do the
# truths: an index a rebuild would make larger (deduplicated leaves packed
# fuller than the fill factor) has no bloat.
#
# The corpus: variable-width text keys; indexes created before the load and
# grown by inserts (leaf splits), in key order and at random; time-series
# with the oldest half deleted; a multi-column key whose first column has
# few values; a low-cardinality key (deduplicated); keys updated after the
# build; statistics made stale by loading three quarters of the rows after
# the last ANALYZE (autovacuum off throughout).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROWS=${1:-300000}
DIR=$BENCH_BASE/pg_upkeep-bench-bloat
PORT=${BENCH_PORT:-5497}
OUT=$BENCH_OUT
bench_prepare
cluster_start "$DIR" "$PORT" "upkeep.enabled = off" "autovacuum = off" "max_wal_size = 8GB" \
  "maintenance_work_mem = 512MB" "synchronous_commit = off" "jit = off"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -At -c "$1"; }
q "CREATE EXTENSION pg_upkeep; CREATE EXTENSION pgstattuple" >/dev/null

# Rows @ = 1..n: a random-length text key (6 to 60 characters), and others.
word="left(md5(@::text) || md5((@ * 7)::text), 6 + abs(hashint8(@::int8)) % 55)"
# table; columns; values of row @; index columns; how it is loaded:
#   grown  = index first, rows inserted in the order given by 'order'
#   built  = rows first, then CREATE INDEX
#   stale  = index first, ANALYZE after a quarter of the rows
CORPUS="email_grown;k text;'user.' || $word || '@example.com';k;grown;random()
email_built_updated;k text;'user.' || $word || '@example.com';k;built;
name_stale;k text;$word;k;stale;random()
uuid_grown;k uuid;md5(@::text)::uuid;k;grown;random()
uuid_stale;k uuid;md5(@::text)::uuid;k;stale;random()
id_grown_deleted;k int8;@;k;grown;@
events_retention;at timestamptz;timestamptz '2024-01-01' + @ * interval '10 seconds';at;grown;@
tenant_name;tenant int4, name text;hashint8(@::int8) & 31, $word;tenant, name;grown;random()
status_grown;status int4;hashint8(@::int8) & 7;status;grown;random()
status_stale;status int4;hashint8(@::int8) & 7;status;stale;random()
sku_stale_two;region int2, sku text;(hashint8(@::int8) & 3)::int2, 'SKU-' || $word;region, sku;stale;random()"

echo "building the corpus: $(echo "$CORPUS" | wc -l) tables of $ROWS rows ..."
while IFS=';' read -r t cols expr idx how order; do
  vals=${expr//@/g}
  "${PSQL[@]}" -c "CREATE TABLE $t ($cols, id int8 NOT NULL) WITH (autovacuum_enabled = off)"
  case $how in
    built)
      "${PSQL[@]}" -c "INSERT INTO $t SELECT $vals, g FROM generate_series(1, $ROWS) g" \
        -c "CREATE INDEX ${t}_idx ON $t ($idx)" \
        -c "UPDATE $t SET ($idx) = ROW(${expr//@/(id + $ROWS)}) WHERE hashint4(id::int4) & 3 = 0" \
        -c "VACUUM ANALYZE $t" ;;
    grown)
      "${PSQL[@]}" -c "CREATE INDEX ${t}_idx ON $t ($idx)" \
        -c "INSERT INTO $t SELECT $vals, g FROM generate_series(1, $ROWS) g ORDER BY ${order//@/g}"
      case $t in
        id_grown_deleted) "${PSQL[@]}" -c "DELETE FROM $t WHERE hashint4(id::int4) & 3 <> 0" ;;
        events_retention) "${PSQL[@]}" -c "DELETE FROM $t WHERE id <= $ROWS / 2" ;;
      esac
      "${PSQL[@]}" -c "VACUUM ANALYZE $t" ;;
    stale)
      quarter=$((ROWS / 4))
      "${PSQL[@]}" -c "CREATE INDEX ${t}_idx ON $t ($idx)" \
        -c "INSERT INTO $t SELECT $vals, g FROM generate_series(1, $quarter) g ORDER BY ${order//@/g}" \
        -c "ANALYZE $t" \
        -c "INSERT INTO $t SELECT $vals, g FROM generate_series($quarter + 1, $ROWS) g ORDER BY ${order//@/g}" ;;
  esac
done <<<"$CORPUS"

# PgHero's estimate, per index of the corpus (the same arithmetic as its query).
"${PSQL[@]}" -c "CREATE TABLE pghero AS
  WITH cols AS (
    SELECT i.indexrelid, c.relpages, c.reltuples,
           max(coalesce(s.null_frac, 0)) AS max_null,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 2048)) AS width
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
      JOIN pg_class t ON t.oid = i.indrelid
      JOIN pg_namespace n ON n.oid = t.relnamespace
      JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
     WHERE n.nspname = 'public' AND c.relam = 403
     GROUP BY 1, 2, 3),
  w AS (
    SELECT indexrelid, relpages, reltuples,
           2 + (8 - (CASE WHEN max_null = 0 THEN 2 ELSE 6 END) % 8) % 8 + width + (8 - width::int % 8) % 8 AS tuple
      FROM cols),
  o AS (SELECT indexrelid, relpages, ceil(reltuples * (4 + tuple) / (8192 - 24)) + 1 AS otta FROM w)
  SELECT indexrelid::regclass::text AS index,
         CASE WHEN relpages <= otta THEN 0 ELSE (relpages - otta) * 100 / relpages END::numeric AS estimate
    FROM o"
"${PSQL[@]}" -c "CREATE TABLE accuracy AS
  SELECT f.index, f.size_bytes,
         greatest(0, 100 * (1 - s.leaf_pages * s.avg_leaf_density / 100.0 / (s.index_size / 8192.0)))::numeric AS truth_packed,
         greatest(0, 100 * (1 - (s.leaf_pages * s.avg_leaf_density / 90.0 + s.internal_pages + 1) / (s.index_size / 8192.0)))::numeric AS truth_rebuild,
         p.estimate AS pghero,
         greatest(0, 100 * (1 - 1 / f.bloat_ratio))::numeric AS upkeep
    FROM upkeep.index_health_figures() f
    JOIN LATERAL pgstatindex(format('%I.%I', f.schema, f.index)) s ON true
    JOIN pghero p ON p.index = f.index
   WHERE f.schema = 'public'"
"${PSQL[@]}" -P pager=off -c "SELECT index, pg_size_pretty(size_bytes) AS size,
    round(truth_packed) AS \"not entries\", round(pghero) AS pghero, round(pghero - truth_packed) AS \"pghero error\",
    round(truth_rebuild) AS \"a rebuild gives back\", round(upkeep) AS pg_upkeep, round(upkeep - truth_rebuild) AS \"pg_upkeep error\"
  FROM accuracy ORDER BY index" | tee "$OUT/bloat_accuracy.txt"
PG=$(q "SELECT round(avg(abs(pghero - truth_packed)), 1) FROM accuracy")
UP=$(q "SELECT round(avg(abs(upkeep - truth_rebuild)), 1) FROM accuracy")
PG_REBUILD=$(q "SELECT round(avg(abs(pghero - truth_rebuild)), 1) FROM accuracy")
N=$(q "SELECT count(*) FROM accuracy")
cat >"$OUT/bloat.md" <<MD
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, PostgreSQL $PG_VERSION, $ROWS rows per table, $N indexes.

| estimate | mean absolute error, points | against |
|---|---|---|
| PgHero's statistics query | $PG | its own measure: the share of the index that is not entries |
| PgHero's statistics query | $PG_REBUILD | what a rebuild gives back |
| pg_upkeep (upkeep.index_health_figures) | **$UP** | what a rebuild gives back |
| ratio pg_upkeep / PgHero (own measures) | **$(awk -v u="$UP" -v p="$PG" 'BEGIN {printf "%.2f", u / p}')** | target at most 0.5 |
MD
cat "$OUT/bloat.md"
