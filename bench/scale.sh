#!/usr/bin/env bash
# Scale: how pg_upkeep's costs grow with the database, at two sizes side by
# side (200 and 2,000 monthly-partitioned parents with 12 partitions each,
# a primary key and one more index per parent: 2,400 and 24,000
# partitions, about 5,000 and 50,000 indexes), all in one cluster and one
# run. Per size:
#   - every view and report a dashboard or a DBA reads, best of ROUNDS
#     calls timed inside the server (target: at most 1 s at the large size,
#     growing no faster than the parents);
#   - the steady-state maintenance call (nothing due), against pg_partman
#     4.7.2's run_maintenance() on the same tables where the server has it
#     (target: per parent no dearer at the large size, and at least 50x
#     faster than pg_partman);
#   - creating 9 monthly partitions for every parent in one transaction
#     (upkeep.manage_partitions per parent) against the lock-safe statement
#     sequence it runs (CREATE TABLE ... LIKE with the bounds CHECK, then
#     ATTACH), run in a plpgsql loop, for parents with and without indexes
#     (target: at most 1.3x), and against the same loop with a BEGIN ...
#     EXCEPTION block per parent, the failure isolation pg_upkeep gives
#     (a subtransaction per call);
#   - a backend's resident memory over 1,000 steady-state calls, after
#     1,000 that fill its caches (target: no growth per call).
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
# Workers off: the timed calls must be the only work. Creating 18,000
# partitions with their indexes in one transaction holds a lock on each
# (about 90,000).
cluster_start "$DIR" "$PORT" "max_locks_per_transaction = 2048" "upkeep.enabled = off" \
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
  "upkeep.partitions|count(*), sum(size_bytes) FROM upkeep.partitions"
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

# build_partman N: database p_N with N parents made by pg_partman, 12
# months each like s_N (create_parent counts premake from the current month).
build_partman() {
  local n=$1 db=p_$1
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "${PSQL[@]}" -d "$db" -c "CREATE SCHEMA partman" -c "CREATE EXTENSION pg_partman SCHEMA partman"
  for i in $(seq 1 "$n"); do
    echo "CREATE TABLE public.t$i (id bigint NOT NULL, created date NOT NULL, payload text, PRIMARY KEY (id, created)) PARTITION BY RANGE (created);"
    echo "CREATE INDEX ON public.t$i (payload);"
    echo "SELECT partman.create_parent('public.t$i', 'created', 'native', 'monthly', p_premake => 5, p_start_partition => '$(month -6)', p_jobmon => false);"
  done >"$OUT/scale_partman_$n.sql"
  echo "UPDATE partman.part_config SET infinite_time_partitions = true;" >>"$OUT/scale_partman_$n.sql"
  "${PSQL[@]}" -d "$db" -f "$OUT/scale_partman_$n.sql" >/dev/null
  "${PSQL[@]}" -d "$db" -c "VACUUM ANALYZE" -c CHECKPOINT
}

# creation N INDEXES ROUNDS: seconds to create 9 months for N fresh parents
# in one transaction, by pg_upkeep, by the lock-safe sequence, and by the
# sequence with a subtransaction per parent (best of ROUNDS, each on fresh
# tables), as "upkeep sequence sequence_with_subtransactions".
creation() {
  local n=$1 indexes=$2 best_u=1e9 best_s=1e9 best_x=1e9
  for _ in $(seq 1 "$3"); do
    for tool in u s x; do
      "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS c_$tool" -c "CREATE DATABASE c_$tool"
      "${PSQL[@]}" -d "c_$tool" -c "CREATE EXTENSION pg_upkeep" -c "SELECT count(upkeep.pause_job(job_id)) FROM upkeep.jobs" >/dev/null
      for i in $(seq 1 "$n"); do
        echo "CREATE TABLE public.t$i (id bigint NOT NULL, created date NOT NULL, payload text) PARTITION BY RANGE (created);"
        if [ "$indexes" = yes ]; then
          echo "ALTER TABLE public.t$i ADD PRIMARY KEY (id, created); CREATE INDEX ON public.t$i (payload);"
        fi
      done | "${PSQL[@]}" -d "c_$tool" >/dev/null
      "${PSQL[@]}" -d "c_$tool" -c "VACUUM ANALYZE" -c CHECKPOINT
    done
    local u s x
    u=$("${PSQL[@]}" -d c_u -At -c "
      DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
        FOR i IN 1..$n LOOP
          PERFORM count(*) FROM upkeep.manage_partitions(format('public.t%s', i), 'created', 'month', premake => 4,
                                                         start_at => date_trunc('month', now()) - interval '4 months');
        END LOOP;
        RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0);
      END \$\$" 2>&1 | sed 's/.*NOTICE: *//')
    # sequence BEGIN END: the lock-safe statements for every parent, each
    # parent's inside BEGIN and END (a block, with an exception handler or not).
    sequence() {
      "${PSQL[@]}" -d "$1" -At -c "
        DO \$\$ DECLARE t0 timestamptz := clock_timestamp(); lo date; part text; BEGIN
          FOR i IN 1..$n LOOP
            $2
            FOR m IN -4..4 LOOP
              lo := date_trunc('month', now())::date + make_interval(months => m);
              part := format('public.%I', 't' || i || '_p' || to_char(lo, 'YYYY_MM'));
              EXECUTE format('CREATE TABLE %s (LIKE public.%I INCLUDING ALL EXCLUDING INDEXES EXCLUDING IDENTITY, '
                             'CONSTRAINT pg_upkeep_bounds CHECK (created IS NOT NULL AND created >= %L AND created < %L))',
                             part, 't' || i, lo, lo + interval '1 month');
              EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                             't' || i, part, lo, (lo + interval '1 month')::date);
            END LOOP;
            $3
          END LOOP;
          RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0);
        END \$\$" 2>&1 | sed 's/.*NOTICE: *//'
    }
    s=$(sequence c_s "BEGIN" "END;")
    x=$(sequence c_x "BEGIN" "EXCEPTION WHEN others THEN RAISE WARNING '%', SQLERRM; END;")
    for tool in u s x; do
      local made
      made=$("${PSQL[@]}" -d "c_$tool" -At -c "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relkind = 'r'")
      [ "$made" = $((n * 9)) ] || { echo "creation ($tool, $n parents): $made partitions, expected $((n * 9))"; exit 1; }
    done
    best_u=$(awk -v a="$best_u" -v b="$u" 'BEGIN {print (b < a) ? b : a}')
    best_s=$(awk -v a="$best_s" -v b="$s" 'BEGIN {print (b < a) ? b : a}')
    best_x=$(awk -v a="$best_x" -v b="$x" 'BEGIN {print (b < a) ? b : a}')
  done
  "${PSQL[@]}" -d postgres -c "DROP DATABASE c_u" -c "DROP DATABASE c_s" -c "DROP DATABASE c_x"
  echo "$best_u $best_s $best_x"
}

# rss DB CALLS: a backend's resident memory (kB) after CALLS steady-state
# maintenance calls (its catalog and plan caches filled: the first calls
# grow them by a few MB) and after CALLS more, as "before after".
rss() {
  "${PSQL[@]}" -d "$1" -At <<SQL | tr '\n' ' '
DO \$\$ BEGIN FOR i IN 1..$2 LOOP PERFORM count(*) FROM upkeep.run_maintenance(); END LOOP; END \$\$;
SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmRSS:\s+(\d+)'))[1];
DO \$\$ BEGIN FOR i IN 1..$2 LOOP PERFORM count(*) FROM upkeep.run_maintenance(); END LOOP; END \$\$;
SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmRSS:\s+(\d+)'))[1];
SQL
}

build "$SMALL"
build "$LARGE"
PARTMAN=""
if has_extension "$PG_VERSION" pg_partman; then
  build_partman "$SMALL"
  build_partman "$LARGE"
  PARTMAN=yes
fi
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
STEADY="steady state: upkeep.run_maintenance(), nothing due"
declare -A partman
if [ -n "$PARTMAN" ]; then
  for size in "$SMALL" "$LARGE"; do
    partman[$size]=$(best_in_server "$ROUNDS" "p_$size" "partman.run_maintenance(p_jobmon => false)")
    echo "pg_partman run_maintenance(): ${partman[$size]} s at $size parents"
  done
fi
declare -A created
for size in "$SMALL" "$LARGE"; do
  for indexes in no yes; do
    # One run at the large size: it takes minutes.
    rounds=$ROUNDS
    [ "$size" = "$LARGE" ] && rounds=1
    created[$size,$indexes]=$(creation "$size" "$indexes" "$rounds")
    echo "creation, $size parents, indexes $indexes: ${created[$size,$indexes]} (pg_upkeep, sequence, sequence with subtransactions; s)"
  done
done
declare -A memory
for size in "$SMALL" "$LARGE"; do
  memory[$size]=$(rss "s_$size" 1000)
  echo "memory, $size parents: ${memory[$size]} (kB after 1,000 and 2,000 calls)"
done

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
  echo
  echo "Steady state per parent, and against pg_partman 4.7.2's run_maintenance() on the same tables (best of $ROUNDS):"
  echo
  echo "| size | pg_upkeep, ms | per parent, µs | pg_partman, ms | pg_partman / pg_upkeep |"
  echo "|---|---|---|---|---|"
  for size in "$SMALL" "$LARGE"; do
    if [ "$size" = "$SMALL" ]; then u=${small[$STEADY]}; else u=${large[$STEADY]}; fi
    awk -v n="$size" -v u="$u" -v p="${partman[$size]:-}" 'BEGIN {
      printf "| %s parents | %.1f | %.1f | %s | %s |\n", n, u * 1000, u * 1e6 / n,
        (p == "" ? "-" : sprintf("%.0f", p * 1000)), (p == "" ? "-" : sprintf("%.0fx", p / u)) }'
  done
  echo
  echo "Creating 9 monthly partitions for every parent in one transaction (fresh tables each time; best of $ROUNDS at $SMALL parents, one run at $LARGE):"
  echo
  echo "| size | indexes | pg_upkeep (manage_partitions), s | lock-safe sequence, s | pg_upkeep / sequence | sequence, a subtransaction per parent, s | pg_upkeep / that |"
  echo "|---|---|---|---|---|---|---|"
  for size in "$SMALL" "$LARGE"; do
    for indexes in no yes; do
      read -r u q x <<<"${created[$size,$indexes]}"
      awk -v n="$size" -v i="$indexes" -v u="$u" -v q="$q" -v x="$x" \
        'BEGIN {printf "| %s parents | %s | %.2f | %.2f | %.2fx | %.2f | %.2fx |\n", n, (i == "yes" ? "primary key + 1" : "none"), u, q, u / q, x, u / x}'
    done
  done
  echo
  echo "A backend's resident memory over 1,000 steady-state calls, after 1,000 that fill its caches:"
  echo
  echo "| size | after 1,000 calls, kB | after 2,000 calls, kB | growth per call, bytes |"
  echo "|---|---|---|---|"
  for size in "$SMALL" "$LARGE"; do
    read -r b a <<<"${memory[$size]}"
    awk -v n="$size" -v b="$b" -v a="$a" 'BEGIN {printf "| %s parents | %d | %d | %.0f |\n", n, b, a, (a - b) * 1024 / 1000}'
  done
} | tee "$OUT/scale-pg$PG_VERSION.md"
