#!/usr/bin/env bash
# Partition creation and steady-state maintenance: pg_upkeep against
# pg_partman 4.7.2 and against plain CREATE TABLE ... PARTITION OF, on 200
# identical monthly-partitioned parents, in one cluster, in one run.
# Figures are ratios against baselines measured in the same run. On a
# server without pg_partman (here: 16 and 18) the comparison is with plain
# DDL only.
#
#   [PG_VERSION=18] bench/partitions.sh [rounds]      (default 3 rounds; medians reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
ROUNDS=${1:-3}
PARENTS=200
STEADY_CALLS=7
DIR=$BENCH_BASE/pg_upkeep-bench
PORT=${BENCH_PORT:-5498}
OUT=$BENCH_OUT
bench_prepare
# Workers off: each tool must do its own work while it is being timed.
cluster_start "$DIR" "$PORT" "max_locks_per_transaction = 256" "upkeep.enabled = off"
trap 'bench_finish "$DIR"' EXIT
PSQL=(psql -X -q -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
TOOLS=(plain upkeep)
if has_extension "$PG_VERSION" pg_partman; then TOOLS+=(partman); fi
MAINTAINERS=("${TOOLS[@]:1}")

# Month starts relative to today: 4 before, the current one, 4 after = 9,
# what pg_partman's create_parent(p_premake => 4) makes.
month() { date -u -d "$(date -u +%Y-%m-01) $1 month" +%Y-%m-%d; }
START=$(month -4)

parents_sql() {
  for i in $(seq 1 $PARENTS); do
    echo "CREATE TABLE public.t$i (id bigint NOT NULL, created date NOT NULL, payload text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created);"
  done
}

# plain_ddl FIRST LAST [BEGIN]: CREATE TABLE ... PARTITION OF for months
# FIRST .. LAST (relative to this month) of every parent; with BEGIN, one
# transaction per parent.
plain_ddl() {
  for i in $(seq 1 $PARENTS); do
    if [ -n "${3:-}" ]; then echo "BEGIN;"; fi
    for m in $(seq "$1" "$2"); do
      lo=$(month "$m"); hi=$(month $((m + 1)))
      echo "CREATE TABLE public.t${i}_p${lo:0:4}_${lo:5:2} PARTITION OF public.t$i FOR VALUES FROM ('$lo') TO ('$hi');"
    done
    if [ -n "${3:-}" ]; then echo "COMMIT;"; fi
  done
}
plain_sql() { plain_ddl -4 4 BEGIN; }

upkeep_sql() {
  for i in $(seq 1 $PARENTS); do
    echo "SELECT count(*) FROM upkeep.manage_partitions('public.t$i', 'created', 'month', premake => 4, start_at => '$START');"
  done
}

partman_sql() {
  for i in $(seq 1 $PARENTS); do
    echo "SELECT partman.create_parent('public.t$i', 'created', 'native', 'monthly', p_premake => 4, p_jobmon => false);"
  done
  # As in a deployment whose tables have data: keep premaking future partitions.
  echo "UPDATE partman.part_config SET infinite_time_partitions = true;"
}

# Catch-up: parents hold 3 partitions (last month, this month, next month);
# premake is then raised so that each needs 9 more (months +2 .. +10), and
# one maintenance call creates all 1,800.
catchup_setup() {
  case $1 in
    plain) plain_ddl -1 1 ;;
    upkeep)
      for i in $(seq 1 $PARENTS); do
        echo "SELECT count(*) FROM upkeep.manage_partitions('public.t$i', 'created', 'month', premake => 1, start_at => '$(month -1)');"
      done
      echo "UPDATE upkeep.partition_policies SET premake = 10;" ;;
    partman)
      for i in $(seq 1 $PARENTS); do
        echo "SELECT partman.create_parent('public.t$i', 'created', 'native', 'monthly', p_premake => 1, p_jobmon => false);"
      done
      # pg_partman counts premake from the newest partition holding "now"
      # differently from us: premake 9 is what makes it create months +2 .. +10.
      echo "UPDATE partman.part_config SET premake = 9, infinite_time_partitions = true;" ;;
  esac
}
catchup_run() {
  case $1 in
    plain) plain_ddl 2 10 BEGIN ;;
    upkeep) echo "SELECT count(*) FROM upkeep.run_maintenance();" ;;
    partman) echo "SELECT partman.run_maintenance(p_jobmon => false);" ;;
  esac
}

parents_sql >"$OUT/parents.sql"; plain_sql >"$OUT/plain.sql"; upkeep_sql >"$OUT/upkeep.sql"; partman_sql >"$OUT/partman.sql"
for tool in "${TOOLS[@]}"; do
  catchup_setup $tool >"$OUT/${tool}_catchup_setup.sql"; catchup_run $tool >"$OUT/${tool}_catchup.sql"
done

fresh_db() {
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  "${PSQL[@]}" -d "$1" -f "$OUT/parents.sql"
  case $1 in
    ?_upkeep) "${PSQL[@]}" -d "$1" -c "CREATE EXTENSION pg_upkeep" ;;
    ?_partman) "${PSQL[@]}" -d "$1" -c "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman" ;;
  esac
  "${PSQL[@]}" -d "$1" -c "CHECKPOINT"
}

# Wall-clock seconds of one psql script.
timed() {
  local db=$1 file=$2 t0 t1
  t0=$(date +%s.%N)
  "${PSQL[@]}" -d "$db" -f "$file" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}


declare -A create
for r in $(seq 1 "$ROUNDS"); do
  for tool in "${TOOLS[@]}"; do
    fresh_db "b_$tool"
    s=$(timed "b_$tool" "$OUT/$tool.sql")
    create[$tool]+="$s "
    echo "round $r: create 1,800 partitions with $tool: ${s}s"
  done
done

# Sanity: every tool made the same partitions (pg_partman adds DEFAULT ones).
ranged() { "${PSQL[@]}" -d "$1" -At -c "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r' AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"; }
check() { for tool in "${TOOLS[@]}"; do
  n=$(ranged "b_$tool"); [ "$n" = "$1" ] || { echo "$tool has $n partitions, expected $1"; exit 1; }
done; }
check $((PARENTS * 9))

# Steady state: nothing is due; each tool checks all 200 parents.
echo "SELECT count(*) FROM upkeep.run_maintenance();" >"$OUT/upkeep_steady.sql"
echo "SELECT partman.run_maintenance(p_jobmon => false);" >"$OUT/partman_steady.sql"
declare -A steady
for tool in "${MAINTAINERS[@]}"; do
  timed "b_$tool" "$OUT/${tool}_steady.sql" >/dev/null   # warm-up
  for _ in $(seq 1 $STEADY_CALLS); do steady[$tool]+="$(timed "b_$tool" "$OUT/${tool}_steady.sql") "; done
done
# Nothing may have been created by the steady-state runs.
n=$("${PSQL[@]}" -d b_upkeep -At -c "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'")
[ "$n" = $((PARENTS * 9)) ] || { echo "steady-state upkeep run created partitions ($n)"; exit 1; }

declare -A catchup
for r in $(seq 1 "$ROUNDS"); do
  for tool in "${TOOLS[@]}"; do
    fresh_db "c_$tool" >/dev/null
    "${PSQL[@]}" -d "c_$tool" -f "$OUT/${tool}_catchup_setup.sql" >/dev/null
    "${PSQL[@]}" -d "c_$tool" -c CHECKPOINT
    s=$(timed "c_$tool" "$OUT/${tool}_catchup.sql")
    catchup[$tool]+="$s "
    echo "round $r: maintenance creates 1,800 partitions with $tool: ${s}s"
  done
done
for tool in "${TOOLS[@]}"; do
  n=$(ranged "c_$tool"); [ "$n" = $((PARENTS * 12)) ] || { echo "catch-up: $tool has $n partitions"; exit 1; }
done

# The same plain statements in the shape of one run_maintenance() call: one
# transaction, each statement isolated by a savepoint as each of our actions
# is by a subtransaction.
{ echo "BEGIN;"; grep -v '^BEGIN;$\|^COMMIT;$' "$OUT/plain_catchup.sql" | sed 's/^.*$/SAVEPOINT a; & RELEASE SAVEPOINT a;/'; echo "COMMIT;"; } >"$OUT/plain_onetx_catchup.sql"
onetx=""
for r in $(seq 1 "$ROUNDS"); do
  fresh_db c_plain >/dev/null
  "${PSQL[@]}" -d c_plain -f "$OUT/plain_catchup_setup.sql" >/dev/null
  "${PSQL[@]}" -d c_plain -c CHECKPOINT
  s=$(timed c_plain "$OUT/plain_onetx_catchup.sql")
  onetx+="$s "
  echo "round $r: plain DDL, one transaction, savepoint per statement: ${s}s"
done

# Per-call cost without psql start-up: the same calls timed inside the server.
inner_upkeep=$(best_in_server "$STEADY_CALLS" b_upkeep "count(*) FROM upkeep.run_maintenance()")
# A figure of a tool that did not run here (pg_partman) stays empty, printed "-".
inner_partman=""
partman_version=-
if [ -n "${create[partman]:-}" ]; then
  inner_partman=$(best_in_server "$STEADY_CALLS" b_partman "partman.run_maintenance(p_jobmon => false)")
  partman_version=$("${PSQL[@]}" -d b_partman -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")
fi

m() { echo "$1" | median; }
f() { if [ -z "$2" ]; then echo -; else printf "%.$1f" "$2"; fi; }
# ratio A B WORDS: "A/Bx WORDS", or "-" when either is missing
ratio() { if [ -z "$1" ] || [ -z "$2" ]; then echo -; else awk -v a="$1" -v b="$2" -v w="$3" 'BEGIN {printf "%.2fx %s", a / b, w}'; fi; }
c_plain=$(m "${create[plain]}"); c_upkeep=$(m "${create[upkeep]}"); c_partman=$(m "${create[partman]:-}")
s_upkeep=$(m "${steady[upkeep]}"); s_partman=$(m "${steady[partman]:-}")
k_onetx=$(m "$onetx"); k_plain=$(m "${catchup[plain]}"); k_upkeep=$(m "${catchup[upkeep]}"); k_partman=$(m "${catchup[partman]:-}")

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
REPORT=$OUT/partitions-pg$PG_VERSION.md
cat >"$REPORT" <<MD
Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB,
data on $DIR, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), pg_partman $partman_version, pg_upkeep release build; $ROUNDS rounds, medians.

| what | plain DDL | pg_upkeep | pg_partman | pg_upkeep vs pg_partman | pg_upkeep vs plain DDL |
|---|---|---|---|---|---|
| registration creates 1,800 partitions (200 parents x 9: create_parent / manage_partitions), s | $(f 3 "$c_plain") | $(f 3 "$c_upkeep") | $(f 3 "$c_partman") | $(ratio "$c_partman" "$c_upkeep" faster) | $(ratio "$c_upkeep" "$c_plain" "the time") |
| maintenance run creates 1,800 partitions (premake raised from 1 to 10), s | $(f 3 "$k_plain") | $(f 3 "$k_upkeep") | $(f 3 "$k_partman") | $(ratio "$k_partman" "$k_upkeep" faster) | $(ratio "$k_upkeep" "$k_plain" "the time") |
| same, against plain DDL in one transaction with a savepoint per statement (the shape of one call), s | $(f 3 "$k_onetx") | $(f 3 "$k_upkeep") | - | - | $(ratio "$k_upkeep" "$k_onetx" "the time") |
| steady state, nothing due, one run over 200 parents (psql wall), s | - | $(f 4 "$s_upkeep") | $(f 4 "$s_partman") | $(ratio "$s_partman" "$s_upkeep" faster) | - |
| steady state, same, best call timed in the server, s | - | $(f 4 "$inner_upkeep") | $(f 4 "$inner_partman") | $(ratio "$inner_partman" "$inner_upkeep" faster) | - |
MD
cat "$REPORT"
