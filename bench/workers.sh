#!/usr/bin/env bash
# The workers' cost when nothing is due, and their reaction time, at two
# sizes: 10 and 100 databases.
#
#   bench/workers.sh [idle seconds] [naptime seconds]    (defaults: 600, 10; idle under 3000)
#
# Idle: for each size, two identical clusters side by side for the same
# period, each database with the extension and a policy that is not due;
# workers on in one, off in the other. CPU is read from /proc: every live
# server process plus the postmaster's reaped children (the short-lived
# schedulers). pg_upkeep's cost is the difference. With nothing due the
# launcher still visits each database once an hour (DDL by others tells it
# nothing), which an idle period under an hour would miss: so one such
# visit is measured apart (every database's policy is touched, and a
# touched policy starts a scheduler that does exactly that visit's work)
# and counted once per hour.
# Memory: the launcher's resident size at the start and the end of the idle
# period, and the largest resident size of a scheduler during the visits.
# Reaction (100 databases): a policy inserted at a random moment, time
# until its first partition exists; retention added at a random moment,
# time until a pg_upkeep worker has archived what is due; a view refreshed
# every 30 s, how late each refresh starts after its due time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
IDLE=${1:-600}
NAP=${2:-10}
[ "$IDLE" -lt 3000 ] || { echo "idle must stay under 3000 s (the hourly visit is measured apart)"; exit 1; }
OUT=$BENCH_OUT
BASE=$BENCH_BASE
ON=$BASE/pg_upkeep-bench-on; OFF=$BASE/pg_upkeep-bench-off
HZ=$(getconf CLK_TCK)

bench_prepare
trap 'bench_finish "$ON"; bench_finish "$OFF"' EXIT

q() { psql -X -q -At -h "$1" -p "$2" -U postgres -d "$3" -v ON_ERROR_STOP=1 "${@:4}"; }

setup_dbs() {
  local dir=$1 port=$2 n=$3
  for i in $(seq 1 "$n"); do
    q "$dir" "$port" postgres -c "CREATE DATABASE db$i"
    q "$dir" "$port" "db$i" <<'SQL'
CREATE EXTENSION pg_upkeep;
CREATE TABLE nav_history (fund_id int NOT NULL, nav_date date NOT NULL) PARTITION BY RANGE (nav_date);
SELECT count(*) FROM upkeep.manage_partitions('nav_history', 'nav_date');
SQL
  done >/dev/null
}

# Clock ticks used by a cluster so far: live processes + reaped children.
ticks() {
  local pm total
  pm=$(head -1 "$1/data/postmaster.pid")
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
seconds() { awk -v a="$1" -v b="$2" -v hz="$HZ" 'BEGIN {print (b - a) / hz}'; }
# Resident kB of the children of a cluster's postmaster whose title starts with $2.
rss_of() {
  local pm
  pm=$(head -1 "$1/data/postmaster.pid")
  for p in $(pgrep -P "$pm"); do
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q "^postgres: $2"; then
      awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null
    fi
  done | sort -n | tail -1
}
runs() {
  for i in $(seq 1 "$2"); do q "$ON" 5491 "db$i" -c "SELECT count(*) FROM upkeep.job_runs"; done | awk '{s += $1} END {print s}'
}

ROWS=""
for DBS in 10 100; do
  cluster_start "$ON" 5491 "upkeep.naptime = $NAP" "max_worker_processes = 24"
  cluster_start "$OFF" 5492 "upkeep.enabled = off" "max_worker_processes = 24"
  echo "setting up $DBS databases twice ..."
  setup_dbs "$ON" 5491 "$DBS"; setup_dbs "$OFF" 5492 "$DBS"
  # Let start-up settle: every database is visited once and its policy checked.
  sleep $((2 * NAP + 10))
  runs0=$(runs "$ON" "$DBS")
  launcher0=$(rss_of "$ON" "pg_upkeep launcher")
  on0=$(ticks "$ON"); off0=$(ticks "$OFF")
  echo "idle for ${IDLE}s with $DBS databases, naptime ${NAP}s ..."
  sleep "$IDLE"
  on1=$(ticks "$ON"); off1=$(ticks "$OFF")
  launcher1=$(rss_of "$ON" "pg_upkeep launcher")
  idle_runs=$(( $(runs "$ON" "$DBS") - runs0 ))
  # One visit of every database, on both clusters alike.
  b_on0=$(ticks "$ON"); b_off0=$(ticks "$OFF")
  # The schedulers' resident size, sampled while they run.
  rm -f "$BASE/peak"
  (peak=0; until [ -f "$BASE/peak.stop" ]; do
     r=$(rss_of "$ON" "pg_upkeep scheduler"); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r
     sleep 0.01
   done; echo "$peak" >"$BASE/peak"; rm -f "$BASE/peak.stop") &
  for i in $(seq 1 "$DBS"); do
    for c in "$ON 5491" "$OFF 5492"; do
      # shellcheck disable=SC2086
      q $c "db$i" -c "UPDATE upkeep.partition_policies SET premake = premake"
    done
  done
  sleep $((3 * NAP + 30))
  touch "$BASE/peak.stop"; wait
  peak=$(cat "$BASE/peak")
  b_on1=$(ticks "$ON"); b_off1=$(ticks "$OFF")
  idle_on=$(seconds "$on0" "$on1"); idle_off=$(seconds "$off0" "$off1")
  visit_on=$(seconds "$b_on0" "$b_on1"); visit_off=$(seconds "$b_off0" "$b_off1")
  per_db_hour=$(awk -v on="$idle_on" -v off="$idle_off" -v von="$visit_on" -v voff="$visit_off" -v t="$IDLE" -v n="$DBS" \
    'BEGIN {d = (on - off) * 3600 / t; v = von - voff; if (d < 0) d = 0; if (v < 0) v = 0; printf "%.4f", (d + v) / n}')
  ROWS+="| $DBS | $idle_on / $idle_off | $visit_on / $visit_off | $idle_runs | ${launcher0} -> ${launcher1} | $peak | **$per_db_hour** |
"
  [ "$DBS" = 100 ] || { bench_finish "$ON"; bench_finish "$OFF"; }
done
bench_finish "$OFF"

# Reaction times, 100 databases, on the cluster with the workers on.
c1() { q "$ON" 5491 db1 "$@"; }
c1 -c "CREATE TABLE t_react (d date NOT NULL) PARTITION BY RANGE (d)"
reaction=""
for k in 1 2 3; do
  sleep "$(awk -v n="$NAP" -v s="$RANDOM" 'BEGIN {srand(s); printf "%.2f", rand() * n}')"
  c1 -c "DELETE FROM upkeep.partition_policies WHERE parent = 't_react'::regclass" \
     -c "DO \$\$ DECLARE r record; BEGIN FOR r IN SELECT inhrelid::regclass t FROM pg_inherits WHERE inhparent = 't_react'::regclass LOOP EXECUTE 'DROP TABLE ' || r.t; END LOOP; END \$\$"
  t0=$(date +%s.%N)
  c1 -c "INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('t_react', 'd', 0)"
  until [ "$(c1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 't_react'::regclass")" -gt 0 ]; do
    sleep 0.2
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$NAP" 'BEGIN {exit !((b - a) > 3 * n + 30)}' && { echo "no reaction"; exit 1; }
  done
  reaction+="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') "
done
worst=$(echo "$reaction" | tr ' ' '\n' | grep . | sort -g | tail -1)

# Archive reaction: partitions a year back exist; at a random moment the
# policy gains retention; time until every due partition is in the archive
# (scheduler -> pg_upkeep worker -> DETACH CONCURRENTLY).
archive_reaction=""
for k in 1 2 3; do
  c1 -c "DROP TABLE IF EXISTS t_arch, t_arch_archive" \
     -c "CREATE TABLE t_arch (d date NOT NULL) PARTITION BY RANGE (d)" \
     -c "INSERT INTO upkeep.partition_policies (parent, control, premake, start_at) VALUES ('t_arch', 'd', 0, date_trunc('month', now()) - interval '12 months')"
  until [ "$(c1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 't_arch'::regclass")" -ge 13 ]; do sleep 0.2; done
  sleep "$(awk -v n="$NAP" -v s="$RANDOM" 'BEGIN {srand(s); printf "%.2f", rand() * n}')"
  t0=$(date +%s.%N)
  c1 -c "UPDATE upkeep.partition_policies SET retention = '3 months' WHERE parent = 't_arch'::regclass"
  until [ "$(c1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass('t_arch_archive')")" -ge 9 ]; do
    sleep 0.2
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$NAP" 'BEGIN {exit !((b - a) > 3 * n + 60)}' && { echo "no archive"; exit 1; }
  done
  archive_reaction+="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') "
  c1 -c "DELETE FROM upkeep.partition_policies WHERE parent = 't_arch'::regclass"
done
archive_worst=$(echo "$archive_reaction" | tr ' ' '\n' | grep . | sort -g | tail -1)

# A job that becomes due by time alone: a view refreshed every 30 s. Each
# refresh's start, against the previous one's start plus 30 s.
c1 -c "CREATE TABLE t_mv_src (x int); CREATE MATERIALIZED VIEW t_mv AS SELECT count(*) AS n FROM t_mv_src" >/dev/null
MV=$(c1 -c "SELECT upkeep.manage_matview('t_mv', '30 seconds', concurrently => false, only_when_changed => false)")
until [ "$(c1 -c "SELECT count(*) FROM upkeep.job_runs WHERE job_id = $MV AND status = 'ok'")" -ge 5 ]; do
  sleep 1
done
late=$(c1 -c "SELECT string_agg(round(extract(epoch FROM late)::numeric, 1)::text, ' ' ORDER BY started_at)
                FROM (SELECT started_at, started_at - lag(started_at) OVER (ORDER BY started_at) - interval '30 seconds' AS late
                        FROM upkeep.job_runs WHERE job_id = $MV AND status = 'ok') s WHERE late IS NOT NULL")
late_worst=$(echo "$late" | tr ' ' '\n' | sort -g | tail -1)
in_naps() { awk -v w="$1" -v n="$NAP" 'BEGIN {printf "%.2f", w / n}'; }

cat >"$OUT/workers.md" <<MD
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, data on $BASE, release build; naptime ${NAP}s, ${IDLE}s idle per size.

| databases | idle CPU s, on / off | one visit of every database, CPU s, on / off | run records written while idle | launcher resident kB, start -> end | largest scheduler resident kB | pg_upkeep idle cost, CPU s per database per hour (target <= 0.05) |
|---|---|---|---|---|---|---|
$ROWS
With 100 databases:

| reaction | three tries, s | worst, in naptimes (target <= 1) |
|---|---|---|
| policy inserted -> first partition | $reaction| $(in_naps "$worst") |
| retention added -> 9 partitions archived by a pg_upkeep worker | $archive_reaction| $(in_naps "$archive_worst") |
| view due every 30 s -> refresh started, s late | $late | $(in_naps "$late_worst") |
MD
cat "$OUT/workers.md"
