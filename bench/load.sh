#!/usr/bin/env bash
# The application's view of maintenance. A steady pgbench workload (fixed
# rate) inserts into and reads from a partitioned table, a plain table with
# old rows and a materialized view over the partitioned table; its TPS and
# p99 latency are measured over a window in which a full maintenance cycle
# runs (12 partitions due, 1 million rows due for the archive, the view due
# for a refresh), against the same window with no maintenance, in the same
# run. Two databases with the same data:
#  - pg_upkeep: the cycle is done by its workers (naptime 1 s), as deployed;
#  - baseline: pg_partman's run_maintenance() for the partitions, plus the
#    plain SQL a DBA would schedule: REFRESH MATERIALIZED VIEW CONCURRENTLY
#    and one INSERT ... SELECT / DELETE statement for the archive.
# pg_upkeep's policies are registered once, before every window, as in a
# deployment: the view's (refreshed when changed, at most hourly) is
# refreshed once at the start, which puts the change tracking trigger on
# its tables for good; the archive job stays paused outside the cycle.
# The cycle: premake raised, the archive job resumed, the view made due
# (resume_job clears its next run).
# pg_upkeep is measured twice per round: with the default two workers (the
# archive and the refresh side by side) and with upkeep.max_workers = 1.
# A control, in the same rounds: one backend keeping one core busy with a
# read-only query (no writes, no locks, no WAL) for as long as pg_upkeep's
# cycle took. It shows what any work of that length does to the workload
# on this machine, whoever does it.
# Targets (pg_upkeep): TPS at least 95% of the no-maintenance window, p99
# at most 1.2x. Also measured: what the change tracking trigger a managed
# view puts on its base table costs writers (unthrottled inserts, with and
# without the trigger).
#
#   bench/load.sh [rounds]      (default 3; medians of the ratios reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROUNDS=${1:-3}
OLD_ROWS=${LOAD_OLD_ROWS:-1000000}
WINDOW=${LOAD_WINDOW:-40}  # seconds of workload per measurement
RATE=${LOAD_RATE:-200}     # transactions per second (each 5 statements)
DIR=$BENCH_BASE/pg_upkeep-bench-load
PORT=${BENCH_PORT:-5498}
OUT=$BENCH_OUT/load
bench_prepare
mkdir -p "$OUT"
cluster_start "$DIR" "$PORT" "upkeep.naptime = 1" "shared_buffers = 1GB" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min" "jit = off" "synchronous_commit = on"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -d "$1" -At -c "$2"; }
now() { date +%s.%N; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

# The same schema and data in both databases.
schema_sql() {
  cat <<'EOF'
CREATE TABLE nav_history (fund_id int NOT NULL, nav_date date NOT NULL, nav numeric(12, 4) NOT NULL)
  PARTITION BY RANGE (nav_date);
CREATE INDEX ON nav_history (fund_id, nav_date);
CREATE TABLE trades (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, fund_id int NOT NULL,
                     at timestamptz NOT NULL, amount numeric(14, 2) NOT NULL);
CREATE INDEX ON trades (fund_id, at);
CREATE TABLE trades_archive (LIKE trades INCLUDING ALL EXCLUDING IDENTITY);
EOF
  echo "INSERT INTO trades (fund_id, at, amount) SELECT g % 500 + 1, now() - interval '400 days' + (g % 300000) * interval '1 minute', 1 FROM generate_series(1, $OLD_ROWS) g;"
}
# After the partitions exist: this month's and last month's NAVs, the view.
data_sql() {
  cat <<'EOF'
INSERT INTO nav_history SELECT g % 500 + 1, date_trunc('month', now())::date + (g % 20), 100 FROM generate_series(1, 200000) g;
CREATE MATERIALIZED VIEW fund_totals AS
  SELECT fund_id, count(*) AS navs, avg(nav) AS avg_nav FROM nav_history GROUP BY fund_id;
CREATE UNIQUE INDEX ON fund_totals (fund_id);
VACUUM ANALYZE;
EOF
}

echo "loading two databases ($OLD_ROWS old trades each) ..."
for db in upkeep base; do "${PSQL[@]}" -c "CREATE DATABASE $db" >/dev/null; done
q upkeep "CREATE EXTENSION pg_upkeep" >/dev/null
q base "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman" >/dev/null
schema_sql | "${PSQL[@]}" -d upkeep >/dev/null
schema_sql | "${PSQL[@]}" -d base >/dev/null
q upkeep "SELECT count(*) FROM upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 2)" >/dev/null
q base "SELECT partman.create_parent('public.nav_history', 'nav_date', 'native', 'monthly', p_premake => 2, p_jobmon => false);
        UPDATE partman.part_config SET infinite_time_partitions = true" >/dev/null
data_sql | "${PSQL[@]}" -d upkeep >/dev/null
data_sql | "${PSQL[@]}" -d base >/dev/null
# (one transaction: the archive job is paused before any worker sees it)
q upkeep "SELECT upkeep.manage_archive('public.trades', 'at', '30 days');
          SELECT upkeep.pause_job(job_id) FROM upkeep.jobs WHERE kind = 'archive';
          SELECT upkeep.manage_matview('public.fund_totals', every => '1 hour')" >/dev/null
until [ "$(q upkeep "SELECT last_status FROM upkeep.jobs WHERE kind = 'matview'")" = ok ]; do sleep 0.2; done

# The workload: per transaction a write and a read of each kind.
cat >"$OUT/workload.sql" <<'EOF'
\set fund random(1, 500)
INSERT INTO nav_history VALUES (:fund, current_date, 100 + random());
INSERT INTO trades (fund_id, at, amount) VALUES (:fund, now(), 1);
SELECT sum(nav) FROM nav_history WHERE fund_id = :fund AND nav_date >= current_date - 7;
SELECT count(*) FROM trades WHERE fund_id = :fund AND at > now() - interval '1 hour';
SELECT navs, avg_nav FROM fund_totals WHERE fund_id = :fund;
EOF
cat >"$OUT/writes.sql" <<'EOF'
\set fund random(1, 500)
INSERT INTO nav_history VALUES (:fund, current_date, 100 + random());
EOF
chmod -R a+rwX "$OUT"

# measure DB LABEL [MAINTENANCE-FUNCTION]: the workload for WINDOW seconds;
# the maintenance starts 3 s in. Prints "tps p99_ms maintenance_s".
measure() {
  local db=$1 label=$2 work=${3:-}
  rm -f "$OUT/${label}_log".*
  q "$db" "CHECKPOINT" >/dev/null  # no checkpoint of earlier work inside the window
  (cd "$OUT" && exec pgbench -n -h "$DIR" -p "$PORT" -U postgres -c 4 -j 2 -R "$RATE" -T "$WINDOW" -l \
    --log-prefix="${label}_log" -f workload.sql "$db" >"$label.out" 2>&1) &
  local bench=$! took=0
  if [ -n "$work" ]; then
    sleep 3
    local a; a=$(now)
    "$work"
    took=$(awk -v a="$a" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
  fi
  wait "$bench"
  local tps p99
  tps=$(awk '/^tps = / {print $3; exit}' "$OUT/$label.out")
  # latencies (us) of every transaction, skipped ones excluded
  p99=$(cat "$OUT/${label}_log".* | awk '$3 != "skipped" {print $3}' | sort -n |
    awk '{v[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", v[i] / 1000}')
  echo "$tps $p99 $took"
}

# Makes every kind of work due, then waits for the workers to finish it.
upkeep_cycle() {
  local start
  start=$(q upkeep "UPDATE upkeep.partition_policies SET premake = 14;
                    SELECT upkeep.resume_job(job_id) FROM upkeep.jobs WHERE kind IN ('archive', 'matview');
                    SELECT now()")
  until [ "$(q upkeep "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass) >= 15
                          AND NOT EXISTS (SELECT 1 FROM trades WHERE at < now() - interval '30 days')
                          AND (SELECT last_run >= '$start' FROM upkeep.jobs WHERE kind = 'matview')")" = t ]; do sleep 0.2; done
  # when each kind of action ran, from the start of the cycle (to the log)
  q upkeep "SELECT string_agg(format('%s x%s %s-%s s', action, n, a, b), ', ' ORDER BY a) FROM (
              SELECT action, count(*) AS n, round(extract(epoch FROM min(started_at) - '$start')::numeric, 1) AS a,
                     round(extract(epoch FROM max(started_at + duration) - '$start')::numeric, 1) AS b
                FROM upkeep.job_runs WHERE started_at >= '$start' AND status <> 'running' GROUP BY action) t" |
    sed 's/^/    actions: /' >&2
}
# The control: one core busy for as long as pg_upkeep's cycle took in this
# round ($BUSY seconds), with a query that only computes.
BUSY=0
busy_core() {
  q upkeep "SET statement_timeout = '${BUSY}s'; SELECT count(*) FROM (SELECT generate_series(1, 1e12::int8)) g" >/dev/null 2>&1 || true
}
# The same work by pg_partman and plain SQL, one after the other, as a
# pg_cron schedule would run them.
base_cycle() {
  q base "UPDATE partman.part_config SET premake = 14" >/dev/null
  q base "SELECT partman.run_maintenance('public.nav_history', p_jobmon => false)" >/dev/null
  q base "WITH moved AS (DELETE FROM trades WHERE at < now() - interval '30 days' RETURNING *)
          INSERT INTO trades_archive OVERRIDING SYSTEM VALUE SELECT * FROM moved" >/dev/null
  q base "REFRESH MATERIALIZED VIEW CONCURRENTLY fund_totals" >/dev/null
}
# Puts both databases back: old rows back in place, partitions beyond
# premake 2 gone, pg_upkeep's archive job paused again.
reset() {
  q upkeep "SELECT upkeep.pause_job(job_id) FROM upkeep.jobs WHERE kind = 'archive';
            UPDATE upkeep.partition_policies SET premake = 2" >/dev/null
  for db in upkeep base; do
    q "$db" "INSERT INTO trades OVERRIDING SYSTEM VALUE SELECT * FROM trades_archive; TRUNCATE trades_archive" >/dev/null
    q "$db" "SELECT string_agg(format('DROP TABLE %s', c.oid::regclass), '; ')
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'public.nav_history'::regclass
                AND pg_get_expr(c.relpartbound, c.oid) LIKE 'FOR VALUES FROM%'
                AND substring(pg_get_expr(c.relpartbound, c.oid) FROM '''(.*?)''')::date
                    > date_trunc('month', now()) + interval '2 months'" |
      { read -r drops; [ -z "$drops" ] || q "$db" "$drops" >/dev/null; }
    q "$db" "VACUUM ANALYZE" >/dev/null
  done
  q base "UPDATE partman.part_config SET premake = 2" >/dev/null
}
check_cycle() { # both cycles did the same work
  for db in upkeep base; do
    echo "$db: $(q "$db" "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass) || ' partitions, '
                           || (SELECT count(*) FROM trades_archive) || ' rows archived, '
                           || (SELECT count(*) FROM trades WHERE at < now() - interval '30 days') || ' old rows left'")"
  done
}

# upkeep.max_workers = N. With 1 the archive and the refresh run one after
# the other, as the baseline runs them, instead of side by side.
max_workers() {
  q upkeep "ALTER SYSTEM SET upkeep.max_workers = $1" >/dev/null
  q upkeep "SELECT pg_reload_conf()" >/dev/null
}

declare -A R
# row KEY ROUND IDLE_TPS IDLE_P99 LABEL [WORK]: measures LABEL's window
# against the idle window given, and keeps the ratios; TOOK is how long
# WORK took.
row() {
  local key=$1 r=$2 tps0=$3 p990=$4 label=$5 work=${6:-} tps p99 took
  read -r tps p99 took < <(measure "${label%%_*}" "${label}_$r" "$work")
  TOOK=$took
  R[$key.tps]+="$(ratio "$tps" "$tps0") "
  R[$key.p99]+="$(ratio "$p99" "$p990") "
  R[$key.took]+="${took} "
  R[$key.raw]+="[$tps0 tps, p99 $p990 ms -> $tps tps, p99 $p99 ms, ${took} s] "
  echo "  round $r $key: $tps0 tps, p99 $p990 ms without maintenance -> $tps tps, p99 $p99 ms, ${took} s"
}
for r in $(seq 1 "$ROUNDS"); do
  read -r tps0 p990 _ < <(measure upkeep "upkeep_idle_$r")
  row upkeep "$r" "$tps0" "$p990" upkeep_maint upkeep_cycle
  BUSY=$TOOK
  row busy "$r" "$tps0" "$p990" upkeep_busy busy_core
  reset
  max_workers 1
  row upkeep1 "$r" "$tps0" "$p990" upkeep_one upkeep_cycle
  max_workers 2
  read -r tps0 p990 _ < <(measure base "base_idle_$r")
  row base "$r" "$tps0" "$p990" base_maint base_cycle
  [ "$r" = 1 ] && check_cycle
  reset
done

# The tracking trigger: unthrottled single-row inserts into nav_history.
writes() { (cd "$OUT" && pgbench -n -h "$DIR" -p "$PORT" -U postgres -c 2 -j 2 -T 15 -f writes.sql upkeep 2>&1) |
  awk '/^tps = / {print $3; exit}'; }
# (on the partitioned table and on each partition: rows may be written to either)
TRACKED=$(q upkeep "SELECT count(*) FROM pg_trigger WHERE tgname = 'upkeep_track_changes'")
[ "$TRACKED" -ge 1 ] || { echo "no tracking trigger"; exit 1; }
tracking() { # DISABLE | ENABLE ALWAYS
  q upkeep "DO \$\$ DECLARE t regclass; BEGIN
              FOR t IN SELECT tgrelid::regclass FROM pg_trigger WHERE tgname = 'upkeep_track_changes' LOOP
                EXECUTE format('ALTER TABLE %s $1 TRIGGER upkeep_track_changes', t);
              END LOOP; END \$\$" >/dev/null
}
with=(); without=()
for r in $(seq 1 "$ROUNDS"); do
  with+=("$(writes)")
  tracking DISABLE
  without+=("$(writes)")
  tracking "ENABLE ALWAYS"
done
W=$(echo "${with[*]}" | median); WO=$(echo "${without[*]}" | median)

{
  cat <<EOF
Load during maintenance ($ROUNDS rounds, medians of per-round ratios; PostgreSQL $(q upkeep "SHOW server_version"), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'))
  workload: pgbench, 4 clients, $RATE tx/s, each: insert into a partitioned table, insert into a plain table,
            read each of them and a materialized view; windows of $WINDOW s, the cycle starts 3 s in
  cycle: 12 monthly partitions due, $OLD_ROWS rows due for the archive, the view due for a refresh

| during the cycle, against no maintenance | TPS ratio | p99 ratio | cycle, s |
|---|---|---|---|
$(for k in upkeep upkeep1 base busy; do
  case $k in
    upkeep) l="pg_upkeep workers (upkeep.max_workers = 2, the default)" ;;
    upkeep1) l="pg_upkeep workers, upkeep.max_workers = 1" ;;
    base) l="pg_partman run_maintenance() + plain REFRESH CONCURRENTLY + one-statement archive" ;;
    busy) l="control: one core busy with a read-only query as long as pg_upkeep's cycle" ;;
  esac
  echo "| $l | $(echo "${R[$k.tps]}" | median) | $(echo "${R[$k.p99]}" | median) | $(echo "${R[$k.took]}" | median) |"
done)

targets for pg_upkeep: TPS ratio >= 0.95, p99 ratio <= 1.2
raw, pg_upkeep:           ${R[upkeep.raw]}
raw, pg_upkeep 1 worker:  ${R[upkeep1.raw]}
raw, baseline:            ${R[base.raw]}
raw, control:             ${R[busy.raw]}

change tracking trigger on $TRACKED tables, nav_history and its partitions (unthrottled inserts of one row per transaction, 2 clients, 15 s, medians):
  with the trigger $W tps, without $WO tps: $(ratio "$W" "$WO") of the throughput
EOF
} | tee "$OUT/../load.md"
