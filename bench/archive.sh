#!/usr/bin/env bash
# Archive moves, measured against baselines in the same run:
#
# 1. Partition archive: moving an old partition of 1 thousand rows and one
#    of 10 million rows into <parent>_archive (target: within 2x of each
#    other: the move is metadata, not data).
# 2. Row archive: 1 million old rows of a plain table moved by
#    upkeep.archive() (one caller transaction) and by a pg_upkeep worker
#    (a transaction per batch), against the floor of one
#    `INSERT INTO archive SELECT ...; DELETE ...` transaction on the same
#    data (target: at least 50% of its throughput).
# 3. An application writer (pgbench, fixed rate) inserting into that table:
#    its p99 latency while the worker archives, against the same writer
#    with no archiving (target: at most 1.5x); with the default batch of
#    10,000 rows and with batches of 2,000; and, for comparison, while the
#    floor's one transaction moves the same rows. 3 million rows, so that
#    every archive lasts long enough for thousands of writes; latencies of
#    all rounds are pooled.
#
#   bench/archive.sh [rounds]      (default 3; medians reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROUNDS=${1:-3}
BIG=10000000
ROWS=1000000
DIR=$BENCH_BASE/pg_upkeep-bench-archive
PORT=${BENCH_PORT:-5497}
OUT=$BENCH_OUT
bench_prepare
cluster_start "$DIR" "$PORT" "upkeep.enabled = off" "upkeep.naptime = 1" "shared_buffers = 1GB" \
  "max_wal_size = 8GB" "checkpoint_timeout = 30min" "synchronous_commit = on"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -At -c "$1"; }
now() { date +%s.%N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# --- 1. partition archive: 1k rows against 10M rows -----------------------
echo "partition archive: loading $BIG rows ..."
"${PSQL[@]}" <<SQL
CREATE EXTENSION pg_upkeep;
CREATE TABLE small (id bigint NOT NULL, at date NOT NULL, payload text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE big (LIKE small INCLUDING ALL) PARTITION BY RANGE (at);
SELECT count(*) FROM upkeep.manage_partitions('small', 'at', premake => 1, start_at => date_trunc('month', now()) - interval '24 months');
SELECT count(*) FROM upkeep.manage_partitions('big', 'at', premake => 1, start_at => date_trunc('month', now()) - interval '24 months');
INSERT INTO small SELECT g, (date_trunc('month', now()) - interval '20 months')::date + g % 28, 'payload ' || g FROM generate_series(1, 1000) g;
INSERT INTO big SELECT g, (date_trunc('month', now()) - interval '20 months')::date + g % 28, 'payload ' || g FROM generate_series(1, $BIG) g;
VACUUM ANALYZE small, big;
-- Everything older than 18 months leaves.
UPDATE upkeep.partition_policies SET retention = '18 months';
SELECT count(*) FROM upkeep.archive();
SQL
part() { q "SELECT '$1_p' || to_char(date_trunc('month', now()) - interval '20 months', 'YYYY_MM')"; }
SMALL_PART=$(part small); BIG_PART=$(part big)
echo "  the loaded partitions: $SMALL_PART ($(q "SELECT count(*) FROM $SMALL_PART") rows), $BIG_PART ($(q "SELECT count(*) FROM $BIG_PART") rows)"
# bring_back TABLE PARTITION: undo the move (not timed)
bring_back() {
  local bounds
  bounds=$(q "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = '$2'::regclass")
  "${PSQL[@]}" -c "ALTER TABLE $1_archive DETACH PARTITION $2" -c "ALTER TABLE $1 ATTACH PARTITION $2 $bounds"
}
# move TABLE PARTITION: archive() moves it; the action's own duration, in ms
move() {
  q "SELECT count(*) FROM upkeep.archive('$1')" >/dev/null
  q "SELECT round(extract(epoch FROM duration)::numeric * 1000, 2) FROM upkeep.job_runs WHERE target = 'public.$2' AND action = 'archive_partition' AND status = 'ok' ORDER BY run_id DESC LIMIT 1"
}
small_ms=""; big_ms=""
for r in $(seq 1 "$ROUNDS"); do
  bring_back small "$SMALL_PART"; bring_back big "$BIG_PART"
  small_ms+="$(move small "$SMALL_PART") "
  big_ms+="$(move big "$BIG_PART") "
done
SMALL_MED=$(echo "$small_ms" | median); BIG_MED=$(echo "$big_ms" | median)
"${PSQL[@]}" -c "DROP TABLE small, small_archive, big, big_archive" -c "TRUNCATE upkeep.job_runs"

# --- 2. row archive throughput against the floor ---------------------------
echo "row archive: $ROWS old rows ..."
"${PSQL[@]}" <<SQL
CREATE TABLE template (id bigint NOT NULL, at timestamptz NOT NULL, account int, amount numeric(12, 2), note text);
INSERT INTO template SELECT g, now() - interval '400 days' + g * interval '30 seconds', g % 1000, g % 10000 / 100.0, 'note ' || g
  FROM generate_series(1, $ROWS) g;
-- and 100k recent rows that stay
INSERT INTO template SELECT g, now() - (g - $ROWS) * interval '1 second', g % 1000, 1, 'recent' FROM generate_series($ROWS + 1, $ROWS + 100000) g;
SQL
fresh() { # fresh TABLE: a copy of the template with its indexes (not timed)
  "${PSQL[@]}" -c "DROP TABLE IF EXISTS $1, $1_archive" -c "DROP SEQUENCE IF EXISTS writes" \
    -c "CREATE SEQUENCE writes START 2000000000" \
    -c "CREATE TABLE $1 (LIKE template INCLUDING ALL, PRIMARY KEY (id))" \
    -c "CREATE INDEX ON $1 (at)" -c "INSERT INTO $1 SELECT * FROM template" -c "VACUUM ANALYZE $1" -c "CHECKPOINT"
}
CUTOFF="now() - interval '30 days'"
floor_s=""; caller_s=""; worker_s=""
for r in $(seq 1 "$ROUNDS"); do
  fresh flr
  "${PSQL[@]}" -c "CREATE TABLE flr_archive (LIKE flr INCLUDING ALL)"
  t0=$(now)
  "${PSQL[@]}" -c "BEGIN; INSERT INTO flr_archive SELECT * FROM flr WHERE at < $CUTOFF; DELETE FROM flr WHERE at < $CUTOFF; COMMIT;"
  floor_s+="$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}') "
  moved_floor=$(q "SELECT count(*) FROM flr_archive")

  fresh src
  q "SELECT upkeep.manage_archive('src', 'at', '30 days')" >/dev/null
  t0=$(now)
  moved=$(q "SELECT sum(rows_moved) FROM upkeep.archive('src')")
  caller_s+="$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}') "
  [ "$moved" = "$moved_floor" ] || { echo "moved $moved rows, the floor $moved_floor"; exit 1; }
  "${PSQL[@]}" -c "SELECT upkeep.unmanage_archive('src')" >/dev/null
done

# The worker: the same move, a transaction per batch; its action's duration.
worker_run() { # worker_run BATCH: turns the workers on, waits for the move, returns seconds
  fresh src
  q "SELECT upkeep.manage_archive('src', 'at', '30 days', batch_size => $1)" >/dev/null
  "${PSQL[@]}" -c "TRUNCATE upkeep.job_runs"
  "${PSQL[@]}" -c "ALTER SYSTEM SET upkeep.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
  until [ "$(q "SELECT count(*) FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'ok'")" -gt 0 ]; do sleep 0.2; done
  "${PSQL[@]}" -c "ALTER SYSTEM SET upkeep.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
  q "SELECT round(extract(epoch FROM duration)::numeric, 3) FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'ok'"
  "${PSQL[@]}" -c "SELECT upkeep.unmanage_archive('src')" -c "TRUNCATE upkeep.job_runs" >/dev/null
}
worker_small_s=""
for r in $(seq 1 "$ROUNDS"); do worker_s+="$(worker_run 10000) "; worker_small_s+="$(worker_run 2000) "; done
FLOOR=$(echo "$floor_s" | median); CALLER=$(echo "$caller_s" | median)
WORKER=$(echo "$worker_s" | median); WORKER_SMALL=$(echo "$worker_small_s" | median)

# --- 3. the writer's p99 while a worker archives -------------------------
# A bigger table, so that each archive lasts long enough for thousands of
# writes; latencies of all rounds are pooled before the p99 is taken.
BIGROWS=$((3 * ROWS))
"${PSQL[@]}" -c "CREATE TABLE template3 (LIKE template)" \
  -c "INSERT INTO template3 SELECT g, now() - interval '400 days' + g * interval '10 seconds', g % 1000, g % 10000 / 100.0, 'note ' || g
        FROM generate_series(1, $BIGROWS) g" \
  -c "INSERT INTO template3 SELECT id + 100000000, at, account, amount, note FROM template WHERE note = 'recent'"
fresh3() { "${PSQL[@]}" -c "DROP TABLE IF EXISTS src, src_archive" -c "DROP SEQUENCE IF EXISTS writes" \
  -c "CREATE SEQUENCE writes START 2000000000" -c "CREATE TABLE src (LIKE template INCLUDING ALL, PRIMARY KEY (id))" \
  -c "CREATE INDEX ON src (at)" -c "INSERT INTO src SELECT * FROM template3" -c "VACUUM ANALYZE src" -c "CHECKPOINT"; }
cat >"$OUT/writer.sql" <<'SQL'
\set n random(1, 1000000000)
INSERT INTO src (id, at, account, amount, note) VALUES (nextval('writes'), now(), :n % 1000, 1, 'app');
SQL
RATE=400
chmod 777 "$OUT"
rm -f "$OUT"/*.lat
# keep LABEL [FROM TO]: appends the writer's latencies (us) between two epoch times
keep() {
  cat "$OUT"/writer_log.* | awk -v a="${2:-0}" -v b="${3:-9e18}" '{t = $5 + $6 / 1e6; if (t >= a && t <= b) print $3}' >>"$OUT/$1.lat"
}
p99() { sort -n "$OUT/$1.lat" | awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000}'; }
writes() { wc -l <"$OUT/$1.lat"; }
writer() { # writer SECONDS: pgbench at a fixed rate into src
  rm -f "$OUT"/writer_log.*
  (cd "$OUT" && as_postgres "$PGBIN/pgbench" -n -h "$DIR" -p "$PORT" -U postgres -f writer.sql -R "$RATE" -T "$1" -c 4 -j 2 -l --log-prefix=writer_log postgres >/dev/null 2>&1)
}
# with_worker BATCH: the writer runs while a worker archives in batches of BATCH
with_worker() {
  fresh3 >/dev/null
  q "SELECT upkeep.manage_archive('src', 'at', '30 days', batch_size => $1)" >/dev/null
  "${PSQL[@]}" -c "TRUNCATE upkeep.job_runs" >/dev/null
  writer 25 &
  sleep 2
  "${PSQL[@]}" -c "ALTER SYSTEM SET upkeep.enabled = on" -c "SELECT pg_reload_conf()" >/dev/null
  wait
  "${PSQL[@]}" -c "ALTER SYSTEM SET upkeep.enabled = off" -c "SELECT pg_reload_conf()" >/dev/null
  window=$(q "SELECT extract(epoch FROM started_at) || ' ' || extract(epoch FROM started_at + duration) FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'ok'")
  [ -n "$window" ] || { echo "the worker did not finish within the writer's run" >&2; exit 1; }
  # shellcheck disable=SC2086
  keep "ours$1" $window
  "${PSQL[@]}" -c "SELECT upkeep.unmanage_archive('src')" >/dev/null
}
# with_floor: the writer runs while one INSERT ... SELECT; DELETE transaction moves the rows
with_floor() {
  fresh3 >/dev/null
  "${PSQL[@]}" -c "CREATE TABLE src_archive (LIKE src INCLUDING ALL)" >/dev/null
  writer 25 &
  sleep 2
  t0=$(now)
  "${PSQL[@]}" -c "BEGIN; INSERT INTO src_archive SELECT * FROM src WHERE at < $CUTOFF; DELETE FROM src WHERE at < $CUTOFF; COMMIT;"
  t1=$(now)
  wait
  keep floor "$t0" "$t1"
}
for r in $(seq 1 "$ROUNDS"); do
  fresh3 >/dev/null
  writer 10; keep base
  with_worker 10000
  with_worker 2000
  with_floor
done
BASE_P99=$(p99 base); ARCH_P99=$(p99 ours10000); ARCH_SMALL_P99=$(p99 ours2000); FLOOR_P99=$(p99 floor)

cat >"$OUT/archive.md" <<MD
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, data on $(dirname "$DIR"), release build, PostgreSQL $(q "SHOW server_version"); medians of $ROUNDS.

| what | figure | baseline | ratio | target |
|---|---|---|---|---|
| archive a partition of $BIG rows, ms (runs: $big_ms) | $BIG_MED | 1,000-row partition: $SMALL_MED ms (runs: $small_ms) | $(ratio "$BIG_MED" "$SMALL_MED")x | within 2x |
| move $moved old rows, upkeep.archive() in one transaction, s (runs: $caller_s) | $CALLER | INSERT ... SELECT; DELETE in one transaction: $FLOOR s (runs: $floor_s) | $(ratio "$FLOOR" "$CALLER") of the floor's throughput | at least 0.5 |
| the same by a pg_upkeep worker, a transaction per batch of 10,000 (the default), s (runs: $worker_s) | $WORKER | the floor: $FLOOR s | $(ratio "$FLOOR" "$WORKER") of the floor's throughput | at least 0.5 |
| the same, batches of 2,000, s (runs: $worker_small_s) | $WORKER_SMALL | the floor: $FLOOR s | $(ratio "$FLOOR" "$WORKER_SMALL") of the floor's throughput | at least 0.5 |
| writer p99 while a worker archives $BIGROWS rows, batches of 10,000, ms ($(writes ours10000) writes) | $ARCH_P99 | no archiving: $BASE_P99 ms ($(writes base) writes) | $(ratio "$ARCH_P99" "$BASE_P99")x | at most 1.5x |
| the same, batches of 2,000, ms ($(writes ours2000) writes) | $ARCH_SMALL_P99 | no archiving: $BASE_P99 ms | $(ratio "$ARCH_SMALL_P99" "$BASE_P99")x | at most 1.5x |
| for comparison: writer p99 while the floor's one transaction moves the same rows, ms ($(writes floor) writes) | $FLOOR_P99 | no archiving: $BASE_P99 ms | $(ratio "$FLOOR_P99" "$BASE_P99")x | |
MD
cat "$OUT/archive.md"
