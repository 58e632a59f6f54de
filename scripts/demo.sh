#!/usr/bin/env bash
# The demo: builds and installs pg_upkeep, starts a throwaway cluster with the
# library preloaded, loads sample tables modelled on a mutual-fund platform
# and a risk-assessment service, puts them under management and shows what
# pg_upkeep did. `scripts/demo.sh stop` stops the cluster. PG_VERSION picks
# the server (15, 16 or 18; default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
# Outside the work tree: the postgres user may not be able to enter a clone.
DIR=${DEMO_DIR:-/tmp/pg_upkeep-demo}
PORT=${DEMO_PORT:-5499}
source scripts/lib/cluster.sh

if [ "${1:-}" = stop ]; then
  cluster_stop "$DIR" && echo "demo cluster stopped"
  exit 0
fi

bash scripts/setup.sh
echo "== building and installing pg_upkeep"
mkdir -p target
cargo pgrx install --pg-config "$PG_CONFIG" >target/pgrx-install.log 2>&1 \
  || { cat target/pgrx-install.log; exit 1; }

echo "== starting a throwaway PostgreSQL $PG_VERSION cluster in $DIR (port $PORT)"
cluster_start "$DIR" "$PORT" "upkeep.lock_timeout = '2s'" "upkeep.naptime = 2"
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE upkeep_demo"
PSQL+=(-d upkeep_demo)

"${PSQL[@]}" -c "CREATE EXTENSION pg_upkeep"
echo "== loading sample data (demo/sample.sql)"
"${PSQL[@]}" -f demo/sample.sql

echo "== putting the tables under management"
"${PSQL[@]}" -P pager=off <<'SQL'
\echo nav_history: monthly on a date column, from the oldest data on
SELECT count(*) AS partitions_created
  FROM upkeep.manage_partitions('public.nav_history', 'nav_date', 'month', premake => 3, start_at => '2024-01-01');
\echo risk_assessments: monthly on a timestamp column
SELECT count(*) AS partitions_created
  FROM upkeep.manage_partitions('public.risk_assessments', 'created_at', 'month', premake => 3, start_at => '2025-06-01');
\echo audit_log: yearly on a timestamptz column, years starting at midnight in New York
SELECT count(*) AS partitions_created
  FROM upkeep.manage_partitions('public.audit_log', 'logged_at', 'year', premake => 1,
                                time_zone => 'America/New_York', start_at => '2023-01-01 00:00 America/New_York');
SQL

echo "== the background workers at work"
"${PSQL[@]}" -P pager=off <<'SQL'
\echo fund_flows: registered with a plain INSERT (as pg_restore would), quarterly since 2024;
\echo nobody calls anything
CREATE TABLE fund_flows (fund_id int NOT NULL, flow_date date NOT NULL, amount numeric(14, 2))
  PARTITION BY RANGE (flow_date);
INSERT INTO upkeep.partition_policies (parent, control, granularity, premake, start_at)
VALUES ('public.fund_flows', 'flow_date', 'quarter', 4, '2024-01-01');
SQL
wait_for() { # <sql returning t when done>
  for _ in $(seq 1 30); do
    [ "$("${PSQL[@]}" -At -c "$1")" = t ] && return 0
    sleep 1
  done
}
# The scheduler creates the quarters, 2024 Q1 to four quarters ahead.
wait_for "SELECT count(*) >= 16 FROM pg_inherits WHERE inhparent = 'public.fund_flows'::regclass"
"${PSQL[@]}" -P pager=off -c "INSERT INTO fund_flows SELECT f, d, 1000 + f FROM generate_series(1, 50) f,
                                generate_series(date '2024-01-01', current_date, interval '1 week') d" \
  -c "\echo fund_flows: now keep one year live (a plain UPDATE again)" \
  -c "UPDATE upkeep.partition_policies SET retention = '1 year' WHERE parent = 'public.fund_flows'::regclass"
# A pg_upkeep worker moves the quarters older than a year into
# fund_flows_archive with DETACH CONCURRENTLY (fund_flows has no DEFAULT partition).
wait_for "SELECT count(*) >= 7 FROM pg_inherits WHERE inhparent = to_regclass('public.fund_flows_archive')"
"${PSQL[@]}" -P pager=off -c "SELECT backend_type, count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_upkeep%' GROUP BY 1" \
  -c "SELECT action, target, status, detail, CASE WHEN sql LIKE '%CONCURRENTLY%' THEN 'DETACH ... CONCURRENTLY' END AS how
        FROM upkeep.job_runs WHERE target LIKE 'public.fund_flows%' ORDER BY run_id" \
  -c "SELECT 'fund_flows' AS \"table\", count(*) AS rows FROM fund_flows
      UNION ALL SELECT 'fund_flows_archive', count(*) FROM fund_flows_archive"

echo "== row archiving of a plain table, by a worker"
"${PSQL[@]}" -P pager=off <<'SQL'
\echo trade_events: a plain table with a year of events; rows older than 90 days go to trade_events_archive
CREATE TABLE trade_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, fund_id int NOT NULL,
                           happened_at timestamptz, kind text NOT NULL);
CREATE INDEX ON trade_events (happened_at);
INSERT INTO trade_events (fund_id, happened_at, kind)
SELECT g % 200, now() - g * interval '5 minutes', (ARRAY['buy', 'sell', 'fee'])[1 + g % 3]
  FROM generate_series(1, 105000) g;
INSERT INTO trade_events (fund_id, happened_at, kind) VALUES (1, NULL, 'undated');
SELECT upkeep.manage_archive('public.trade_events', 'happened_at', '90 days', batch_size => 5000) AS job_id;
SQL
wait_for "SELECT rows_archived > 0 AND status = 'ok' FROM upkeep.archive_status WHERE source = 'trade_events'"
"${PSQL[@]}" -P pager=off -c "SELECT job_id, source, mode, archive, cutoff::timestamptz(0), rows_archived, partitions_archived, oldest_live::timestamptz(0), status FROM upkeep.archive_status" \
  -c "SELECT action, target, status, detail FROM upkeep.job_runs WHERE action = 'archive_rows'" \
  -c "SELECT 'trade_events' AS \"table\", count(*) AS rows, count(*) FILTER (WHERE happened_at IS NULL) AS undated FROM trade_events
      UNION ALL SELECT 'trade_events_archive', count(*), 0 FROM trade_events_archive"

echo "== materialized views, refreshed by a worker only when what they read changed"
"${PSQL[@]}" -P pager=off <<'SQL'
\echo fund_analytics_mv: monthly figures per fund, refreshed concurrently every hour as in the seed guide;
\echo category_leaders reads it, so it is refreshed right after it
CREATE MATERIALIZED VIEW fund_analytics_mv AS
  SELECT n.fund_id, f.category, date_trunc('month', n.nav_date)::date AS month,
         round(avg(n.nav), 4) AS avg_nav, round(max(n.nav) / min(n.nav) - 1, 4) AS range_return
    FROM nav_history n JOIN funds f USING (fund_id)
   GROUP BY 1, 2, 3
  WITH NO DATA;
CREATE UNIQUE INDEX ON fund_analytics_mv (fund_id, month);
CREATE MATERIALIZED VIEW category_leaders AS
  SELECT category, month, max(range_return) AS best_range_return FROM fund_analytics_mv GROUP BY 1, 2 WITH NO DATA;
CREATE UNIQUE INDEX ON category_leaders (category, month);
-- Checked every 2 seconds for the demo; hourly is the default.
SELECT upkeep.manage_matview('category_leaders', every => '2 seconds') AS job_id,
       upkeep.manage_matview('fund_analytics_mv', every => '2 seconds') AS job_id;
SQL
wait_for "SELECT count(*) = 2 FROM upkeep.matview_status WHERE status = 'ok'"
sleep 5   # a few cycles with no change: nothing is refreshed
"${PSQL[@]}" -P pager=off -c "\echo a new day of NAVs arrives" \
  -c "INSERT INTO nav_history SELECT fund_id, current_date + 1, 11, NULL FROM funds"
wait_for "SELECT count(*) >= 4 FROM upkeep.job_runs WHERE action = 'refresh_matview'"
"${PSQL[@]}" -P pager=off -c "SELECT run_id, target, status, detail, duration FROM upkeep.job_runs WHERE action = 'refresh_matview' ORDER BY run_id" \
  -c "SELECT matview, last_refresh::timestamptz(0), last_duration, changed_since, next_due::timestamptz(0), concurrently_possible, status FROM upkeep.matview_status"

echo "== index health"
"${PSQL[@]}" -P pager=off <<'SQL'
\echo two indexes an application added over the years on trade_events, and a foreign key without one
CREATE INDEX trade_events_fund ON trade_events (fund_id);
CREATE INDEX trade_events_fund_kind ON trade_events (fund_id, kind);
CREATE TABLE fund_documents (fund_id int NOT NULL REFERENCES funds, title text NOT NULL);
ANALYZE;
SELECT problem, severity, "table", index, recommendation, fix_sql FROM upkeep.index_health;
SQL

echo "== the HTML report"
"${PSQL[@]}" -At -c "SELECT upkeep.report_html()" >"$DIR/report.html"
echo "upkeep.report_html() written to $DIR/report.html ($(wc -c <"$DIR/report.html") bytes): open it in a browser"

echo "== upkeep.partitions (newest four per table)"
"${PSQL[@]}" -P pager=off -c "
SELECT parent, partition, lower_bound, upper_bound, state, size, estimated_rows
  FROM (SELECT *, row_number() OVER (PARTITION BY parent ORDER BY lower_bound DESC NULLS LAST) AS n
          FROM upkeep.partitions) p
 WHERE n <= 4 ORDER BY parent::text, lower_bound NULLS FIRST"
echo "== upkeep.partition_health"
"${PSQL[@]}" -P pager=off -c "SELECT parent, granularity, partitions, covered_until, future_partitions, gaps, rows_in_default, status, hint FROM upkeep.partition_health"
echo "== a second run has nothing to do (a view that is due but unchanged is skipped)"
"${PSQL[@]}" -P pager=off -c "SELECT count(*) FILTER (WHERE status <> 'skipped') AS actions,
                                     count(*) FILTER (WHERE status = 'skipped') AS views_skipped FROM upkeep.run_maintenance()"
echo "== upkeep.jobs"
"${PSQL[@]}" -P pager=off -c "SELECT job_id, kind, target, last_run, last_status, consecutive_failures FROM upkeep.jobs"

cat <<EOF2

The demo cluster keeps running. Connect with:
    psql -h $DIR -p $PORT -U postgres upkeep_demo
and try:  SELECT * FROM upkeep.partition_health;
          SELECT * FROM upkeep.matview_status;
          SELECT * FROM upkeep.index_health;
          SELECT * FROM upkeep.run_maintenance(dry_run => true);
Stop it with:
    scripts/demo.sh stop
EOF2
