#!/usr/bin/env bash
# Materialized view refreshes, measured against a baseline in the same run:
#
# Twenty managed views over four shared fact tables (five views each, all
# also joining a shared dimension table); between two runs one fact table
# changes, so five views have changed bases. Compared:
#  - baseline: what a pg_cron schedule does, REFRESH MATERIALIZED VIEW
#    CONCURRENTLY of all twenty, each statement on its own;
#  - pg_upkeep: SELECT * FROM upkeep.refresh_matviews() with all twenty due
#    (target: at most 35% of the baseline's time).
# Readers (pgbench, 2 clients, 500 queries/s, each a SELECT from one view)
# run through both and through an idle phase of the same length: their
# worst and p99 latency during each refresh against the idle phase.
#
# Then deciding at scale (database views_N): 50 and 500 small managed views
# over 20 tables, the views of one table (5%) with a changed base: the time
# refresh_matviews() takes to decide with nothing changed, against
# refreshing the changed views alone (REFRESH ... CONCURRENTLY each, the
# same statements pg_upkeep runs); target: deciding at most 10% of that.
#
#   bench/matviews.sh [rounds]      (default 3; medians reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROUNDS=${1:-3}
ROWS=${MATVIEW_ROWS:-400000}
DIR=$BENCH_BASE/pg_upkeep-bench-matviews
PORT=${BENCH_PORT:-5496}
OUT=$BENCH_OUT
bench_prepare
cluster_start "$DIR" "$PORT" "upkeep.enabled = off" "shared_buffers = 1GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min" "jit = off"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -At -c "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "loading 4 x $ROWS rows, 20 views ..."
{
  echo "CREATE EXTENSION pg_upkeep;"
  echo "CREATE TABLE funds (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);"
  echo "INSERT INTO funds SELECT g, 'fund ' || g, (ARRAY['EU', 'US', 'APAC'])[g % 3 + 1] FROM generate_series(1, 500) g;"
  for t in 1 2 3 4; do
    echo "CREATE TABLE flows_$t (fund_id int NOT NULL, day date NOT NULL, amount numeric(14, 2) NOT NULL);"
    echo "INSERT INTO flows_$t SELECT g % 500 + 1, date '2020-01-01' + g % 2000, (g % 100000) / 100.0 FROM generate_series(1, $ROWS) g;"
    # Five views per table: by fund, by day, by month, by region and month, by fund and year.
    echo "CREATE MATERIALIZED VIEW mv_${t}_1 AS SELECT f.id, f.name, sum(x.amount) AS total, count(*) AS n FROM flows_$t x JOIN funds f ON f.id = x.fund_id GROUP BY f.id, f.name;"
    echo "CREATE UNIQUE INDEX ON mv_${t}_1 (id);"
    echo "CREATE MATERIALIZED VIEW mv_${t}_2 AS SELECT x.day, sum(x.amount) AS total, count(DISTINCT x.fund_id) AS funds FROM flows_$t x JOIN funds f ON f.id = x.fund_id GROUP BY x.day;"
    echo "CREATE UNIQUE INDEX ON mv_${t}_2 (day);"
    echo "CREATE MATERIALIZED VIEW mv_${t}_3 AS SELECT date_trunc('month', x.day)::date AS month, sum(x.amount) AS total FROM flows_$t x JOIN funds f ON f.id = x.fund_id GROUP BY 1;"
    echo "CREATE UNIQUE INDEX ON mv_${t}_3 (month);"
    echo "CREATE MATERIALIZED VIEW mv_${t}_4 AS SELECT f.region, date_trunc('month', x.day)::date AS month, sum(x.amount) AS total FROM flows_$t x JOIN funds f ON f.id = x.fund_id GROUP BY 1, 2;"
    echo "CREATE UNIQUE INDEX ON mv_${t}_4 (region, month);"
    echo "CREATE MATERIALIZED VIEW mv_${t}_5 AS SELECT x.fund_id, extract(year FROM x.day)::int AS year, sum(x.amount) AS total FROM flows_$t x JOIN funds f ON f.id = x.fund_id GROUP BY 1, 2;"
    echo "CREATE UNIQUE INDEX ON mv_${t}_5 (fund_id, year);"
  done
  echo "VACUUM ANALYZE;"
  for t in 1 2 3 4; do for v in 1 2 3 4 5; do echo "SELECT upkeep.manage_matview('mv_${t}_$v');"; done; done
} | "${PSQL[@]}" >/dev/null
# First refresh by pg_upkeep: tracks the tables, remembers what each view saw.
[ "$(q "SELECT count(*) FROM upkeep.refresh_matviews() WHERE status = 'refreshed'")" = 20 ] || { echo "first refresh failed"; exit 1; }

# The baseline: what a pg_cron job per view would run.
for t in 1 2 3 4; do for v in 1 2 3 4 5; do echo "REFRESH MATERIALIZED VIEW CONCURRENTLY mv_${t}_$v;"; done; done >"$OUT/plain_refresh.sql"
# The readers: one script per view, equally weighted.
READERS=()
for t in 1 2 3 4; do for v in 1 2 3 4 5; do
  echo "SELECT count(*), sum(total) FROM mv_${t}_$v;" >"$OUT/read_${t}_$v.sql"
  READERS+=(-f "read_${t}_$v.sql@1")
done; done
chmod -R a+rwX "$OUT"
# readers_start LABEL: pgbench readers in the background, logging every query
readers_start() {
  rm -f "$OUT"/reader_"$1"_log.*
  (cd "$OUT" && exec pgbench -n -h "$DIR" -p "$PORT" -U postgres -c 2 -j 2 -R 500 -T 600 -l --log-prefix="reader_$1_log" \
    "${READERS[@]}" postgres >"reader_$1.out" 2>&1) &
  READER_PID=$!
  sleep 1
}
# TERM, not INT: a background job of a script without job control ignores INT.
readers_stop() { kill -TERM "$READER_PID" 2>/dev/null || true; wait "$READER_PID" 2>/dev/null || true; }
# keep LABEL FROM TO: the readers' latencies (us) between two epoch times
keep() { cat "$OUT"/reader_"$1"_log.* | awk -v a="$2" -v b="$3" '{t = $5 + $6 / 1e6; if (t >= a && t <= b) print $3}' >>"$OUT/$1.lat"; }
worst() { sort -n "$OUT/$1.lat" | tail -1 | awk '{printf "%.2f", $1 / 1000}'; }
p99() { sort -n "$OUT/$1.lat" | awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000}'; }
rm -f "$OUT"/{idle,plain,upkeep}.lat

change() { # five views' bases change: new rows in flows_1, committed
  q "INSERT INTO flows_1 SELECT g % 500 + 1, date '2025-06-01' + g % 30, 1 FROM generate_series(1, 1000) g" >/dev/null
}
plain_s=""; upkeep_s=""; refreshed=""
for r in $(seq 1 "$ROUNDS"); do
  # idle readers, as long as a baseline refresh
  readers_start idle; a=$(now); sleep 5; keep idle "$a" "$(now)"; readers_stop

  change
  readers_start plain; a=$(now)
  "${PSQL[@]}" -f "$OUT/plain_refresh.sql"
  plain_s+="$(since "$a") "; keep plain "$a" "$(now)"; readers_stop

  # Refreshed by the baseline: the tracking still says flows_1 changed
  # since pg_upkeep's last refresh, so the same five views are due.
  q "UPDATE upkeep.job_state SET next_run = NULL" >/dev/null
  readers_start upkeep; a=$(now)
  n=$(q "SELECT count(*) FILTER (WHERE status = 'refreshed') || '/' || count(*) FROM upkeep.refresh_matviews()")
  upkeep_s+="$(since "$a") "; keep upkeep "$a" "$(now)"; readers_stop
  refreshed+="$n "
  echo "  round $r: plain $(echo $plain_s | awk '{print $NF}') s, upkeep $(echo $upkeep_s | awk '{print $NF}') s ($n refreshed)"
done
PLAIN=$(echo "$plain_s" | median); UPKEEP=$(echo "$upkeep_s" | median)

cat <<EOF

Materialized views ($ROUNDS rounds, medians; PostgreSQL $(q "SHOW server_version"), $(nproc) cores)
  20 views over 4 tables of $ROWS rows, 5 with a changed base table
  plain SQL, REFRESH ... CONCURRENTLY x 20:   ${PLAIN} s
  upkeep.refresh_matviews():                  ${UPKEEP} s   (refreshed/checked: $refreshed)
  ratio upkeep / plain:                       $(ratio "$UPKEEP" "$PLAIN")   (target <= 0.35)
  readers (pgbench, 2 clients, 500 queries/s, each a SELECT from one of the views):
    idle:              worst $(worst idle) ms, p99 $(p99 idle) ms
    during plain SQL:  worst $(worst plain) ms, p99 $(p99 plain) ms   ($(ratio "$(worst plain)" "$(worst idle)")x, $(ratio "$(p99 plain)" "$(p99 idle)")x idle)
    during pg_upkeep:  worst $(worst upkeep) ms, p99 $(p99 upkeep) ms   ($(ratio "$(worst upkeep)" "$(worst idle)")x, $(ratio "$(p99 upkeep)" "$(p99 idle)")x idle)
EOF

# decide N: database views_N with N views over 20 tables of 20,000 rows,
# view i over table i % 20 + 1; prints "views changed decide_s refresh_s
# upkeep_s" (best of ROUNDS each): deciding with nothing changed,
# refreshing the changed views by hand, and pg_upkeep deciding and
# refreshing them.
decide() {
  local n=$1 db=views_$1
  q "DROP DATABASE IF EXISTS $db" >/dev/null; q "CREATE DATABASE $db" >/dev/null
  {
    echo "CREATE EXTENSION pg_upkeep;"
    for t in $(seq 1 20); do
      echo "CREATE TABLE t_$t (fund_id int NOT NULL, amount numeric(14, 2) NOT NULL);"
      echo "INSERT INTO t_$t SELECT g % 200 + 1, g % 1000 FROM generate_series(1, 20000) g;"
    done
    for i in $(seq 1 "$n"); do
      echo "CREATE MATERIALIZED VIEW v_$i AS SELECT fund_id, sum(amount) + $i AS total, count(*) AS n FROM t_$((i % 20 + 1)) GROUP BY fund_id;"
      echo "CREATE UNIQUE INDEX ON v_$i (fund_id);"
    done
    echo "VACUUM ANALYZE;"
    for i in $(seq 1 "$n"); do echo "SELECT upkeep.manage_matview('v_$i');"; done
  } | "${PSQL[@]}" -d "$db" >/dev/null
  "${PSQL[@]}" -d "$db" -At -c "SELECT count(*) FROM upkeep.refresh_matviews() WHERE status = 'refreshed'" >/dev/null
  local changed
  changed=$((n / 20))
  # timed SETUP STATEMENT: seconds STATEMENT takes inside the server after
  # SETUP is committed and every view made due, best of ROUNDS
  timed() {
    local best=1e9 t
    for _ in $(seq 1 "$ROUNDS"); do
      [ -n "$1" ] && "${PSQL[@]}" -d "$db" -At -c "$1" >/dev/null
      "${PSQL[@]}" -d "$db" -At -c "UPDATE upkeep.job_state SET next_run = NULL" >/dev/null
      t=$("${PSQL[@]}" -d "$db" -At -c "
        DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
          $2
          RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0);
        END \$\$" 2>&1 | sed 's/.*NOTICE: *//')
      best=$(awk -v a="$best" -v b="$t" 'BEGIN {print (b < a) ? b : a}')
    done
    echo "$best"
  }
  local change="INSERT INTO t_1 SELECT 1, 1 FROM generate_series(1, 100)"
  local by_hand=""
  for i in $(seq 1 "$n"); do
    if [ $((i % 20 + 1)) = 1 ]; then by_hand+="REFRESH MATERIALIZED VIEW CONCURRENTLY v_$i; "; fi
  done
  local d h u
  d=$(timed "" "PERFORM count(*) FROM upkeep.refresh_matviews();")
  h=$(timed "$change" "$by_hand")
  u=$(timed "$change" "PERFORM count(*) FROM upkeep.refresh_matviews();")
  local refreshed
  "${PSQL[@]}" -d "$db" -At -c "$change" >/dev/null
  "${PSQL[@]}" -d "$db" -At -c "UPDATE upkeep.job_state SET next_run = NULL" >/dev/null
  refreshed=$("${PSQL[@]}" -d "$db" -At -c "SELECT count(*) FROM upkeep.refresh_matviews() WHERE status = 'refreshed'")
  [ "$refreshed" = "$changed" ] || { echo "views_$n: pg_upkeep refreshed $refreshed views, $changed changed"; exit 1; }
  q "DROP DATABASE $db" >/dev/null
  echo "$n $changed $d $h $u"
}

echo
echo "Deciding what to refresh (best of $ROUNDS, inside the server):"
echo
echo "| views | changed | deciding, nothing changed, s | refreshing the changed by hand, s | deciding / refreshing | pg_upkeep, deciding and refreshing, s |"
echo "|---|---|---|---|---|---|"
for n in 50 500; do
  read -r views changed d h u <<<"$(decide "$n")"
  awk -v v="$views" -v c="$changed" -v d="$d" -v h="$h" -v u="$u" \
    'BEGIN {printf "| %d | %d | %.4f | %.4f | %.0f%% | %.4f |\n", v, c, d, h, 100 * d / h, u}'
done
