#!/usr/bin/env bash
# The workers' cost when nothing is due, and their reaction time.
#
#   bench/workers.sh [idle seconds] [naptime seconds]    (defaults: 600, 60)
#
# Idle: two identical clusters side by side for the same period, 10 databases
# each with the extension and a policy that is not due; workers on in one,
# off in the other. CPU is read from /proc: every live server process plus
# the postmaster's reaped children (the short-lived schedulers). pg_upkeep's
# cost is the difference.
# Reaction: a policy inserted at a random moment; time until its first
# partition exists, against the naptime. Then retention added to a policy
# at a random moment; time until a pg_upkeep worker has archived what is due.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
IDLE=${1:-600}
NAP=${2:-60}
DBS=10
OUT=$BENCH_OUT
BASE=$BENCH_BASE
ON=$BASE/pg_upkeep-bench-on; OFF=$BASE/pg_upkeep-bench-off

bench_prepare
cluster_start "$ON" 5491 "upkeep.naptime = $NAP" "max_worker_processes = 24"
cluster_start "$OFF" 5492 "upkeep.enabled = off" "max_worker_processes = 24"
trap 'bench_finish "$ON"; bench_finish "$OFF"' EXIT

setup_dbs() {
  local dir=$1 port=$2
  for i in $(seq 1 $DBS); do
    psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE DATABASE db$i"
    psql -X -q -h "$dir" -p "$port" -U postgres -d "db$i" -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION pg_upkeep;
CREATE TABLE nav_history (fund_id int NOT NULL, nav_date date NOT NULL) PARTITION BY RANGE (nav_date);
SELECT count(*) FROM upkeep.manage_partitions('nav_history', 'nav_date');
SQL
  done >/dev/null
}
setup_dbs "$ON" 5491; setup_dbs "$OFF" 5492

# Clock ticks used by a cluster so far: live processes + reaped children.
ticks() {
  local pm
  pm=$(head -1 "$1/data/postmaster.pid")
  local total
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm"); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
# Let start-up settle: the first worker cycle checks every policy once.
sleep $((NAP + 5))
runs() { psql -X -At -h "$ON" -p 5491 -U postgres -d postgres -c "SELECT 1" >/dev/null;
  for i in $(seq 1 $DBS); do psql -X -At -h "$ON" -p 5491 -U postgres -d "db$i" -c "SELECT count(*) FROM upkeep.job_runs"; done | awk '{s += $1} END {print s}'; }
runs0=$(runs)
on0=$(ticks "$ON"); off0=$(ticks "$OFF")
echo "idle for ${IDLE}s with $DBS databases, naptime ${NAP}s ..."
sleep "$IDLE"
on1=$(ticks "$ON"); off1=$(ticks "$OFF")
cpu_on=$(awk -v a="$on0" -v b="$on1" -v hz="$HZ" 'BEGIN {print (b - a) / hz}')
cpu_off=$(awk -v a="$off0" -v b="$off1" -v hz="$HZ" 'BEGIN {print (b - a) / hz}')
per_db_hour=$(awk -v on="$cpu_on" -v off="$cpu_off" -v t="$IDLE" -v n="$DBS" 'BEGIN {d = on - off; if (d < 0) d = 0; printf "%.3f", d / n * 3600 / t}')
runs=$(( $(runs) - runs0 ))

# Reaction time: insert a due policy at a random moment of the cycle.
psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "CREATE TABLE t_react (d date NOT NULL) PARTITION BY RANGE (d)"
reaction=""
for k in 1 2 3; do
  sleep "$(awk -v n="$NAP" -v s="$RANDOM" 'BEGIN {srand(s); printf "%.2f", rand() * n}')"
  psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "DELETE FROM upkeep.partition_policies WHERE parent = 't_react'::regclass" \
       -c "DO \$\$ DECLARE r record; BEGIN FOR r IN SELECT inhrelid::regclass t FROM pg_inherits WHERE inhparent = 't_react'::regclass LOOP EXECUTE 'DROP TABLE ' || r.t; END LOOP; END \$\$"
  t0=$(date +%s.%N)
  psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('t_react', 'd', 0)"
  until [ "$(psql -X -At -h "$ON" -p 5491 -U postgres -d db1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 't_react'::regclass")" -gt 0 ]; do
    sleep 0.2
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$NAP" 'BEGIN {exit !((b - a) > 3 * n)}' && { echo "no reaction within 3 naptimes"; exit 1; }
  done
  t1=$(date +%s.%N)
  reaction+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') "
done
worst=$(echo "$reaction" | tr ' ' '\n' | grep . | sort -g | tail -1)

# Archive reaction: partitions a year back exist; at a random moment of the
# cycle the policy gains retention; time until every due partition is in
# the archive (scheduler -> pg_upkeep worker -> DETACH CONCURRENTLY).
archive_reaction=""
for k in 1 2 3; do
  psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "DROP TABLE IF EXISTS t_arch, t_arch_archive" \
       -c "CREATE TABLE t_arch (d date NOT NULL) PARTITION BY RANGE (d)" \
       -c "INSERT INTO upkeep.partition_policies (parent, control, premake, start_at) VALUES ('t_arch', 'd', 0, date_trunc('month', now()) - interval '12 months')"
  until [ "$(psql -X -At -h "$ON" -p 5491 -U postgres -d db1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 't_arch'::regclass")" -ge 13 ]; do sleep 0.2; done
  sleep "$(awk -v n="$NAP" -v s="$RANDOM" 'BEGIN {srand(s); printf "%.2f", rand() * n}')"
  t0=$(date +%s.%N)
  psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "UPDATE upkeep.partition_policies SET retention = '3 months' WHERE parent = 't_arch'::regclass"
  until [ "$(psql -X -At -h "$ON" -p 5491 -U postgres -d db1 -c "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass('t_arch_archive')")" -ge 9 ]; do
    sleep 0.2
    awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$NAP" 'BEGIN {exit !((b - a) > 3 * n)}' && { echo "no archive within 3 naptimes"; exit 1; }
  done
  t1=$(date +%s.%N)
  archive_reaction+="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') "
  psql -X -q -h "$ON" -p 5491 -U postgres -d db1 -c "DELETE FROM upkeep.partition_policies WHERE parent = 't_arch'::regclass"
done
archive_worst=$(echo "$archive_reaction" | tr ' ' '\n' | grep . | sort -g | tail -1)

cat >"$OUT/workers.md" <<MD
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, data on $BASE, release build; $DBS databases, naptime ${NAP}s, ${IDLE}s idle.

| what | figure | target |
|---|---|---|
| CPU of all server processes, workers on, s | $cpu_on | |
| CPU of all server processes, workers off (baseline), s | $cpu_off | |
| pg_upkeep idle cost, CPU s per database per hour | $per_db_hour | under 1 |
| run records written while idle (all databases) | $runs | nothing due: 0 |
| scheduler cycles while idle (estimated: databases x idle / naptime) | $((DBS * IDLE / NAP)) | |
| due -> done, three tries, s | $reaction| |
| worst due -> done, in naptimes | $(awk -v w="$worst" -v n="$NAP" 'BEGIN {printf "%.2f", w / n}') | at most 1 |
| archive due -> 9 partitions archived by a pg_upkeep worker, three tries, s | $archive_reaction| |
| worst archive due -> done, in naptimes | $(awk -v w="$archive_worst" -v n="$NAP" 'BEGIN {printf "%.2f", w / n}') | at most 1 |
MD
cat "$OUT/workers.md"
