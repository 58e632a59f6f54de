# Throwaway PostgreSQL clusters for the demo, the package test and the
# benchmarks, of the version PG_VERSION names (default 15). Source this file;
# every cluster runs as postgres (initdb refuses root), listens on its own
# unix socket directory and on 127.0.0.1 only.

source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"
PG_VERSION=${PG_VERSION:-15}
PG_CONFIG=$(pg_config_of "$PG_VERSION")
PGBIN=$(dirname "$PG_CONFIG")
# psql and pgbench of the same version
export PATH="$PGBIN:$PATH"

as_postgres() {
  if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi
}

# cluster_start DIR PORT [postgresql.conf lines...]
cluster_start() {
  local dir=$1 port=$2; shift 2
  cluster_stop "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  chmod 755 "$dir"
  as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
  {
    echo "shared_preload_libraries = 'pg_upkeep'"
    echo "port = $port"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$dir'"
    for line in "$@"; do echo "$line"; done
  } | as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null
  as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
  local dir=$1
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# For the benchmarks. Their data goes on tmpfs when there is one: the
# figures should measure the tools' work, not this VM's disk, whose latency
# swings by 2x from minute to minute.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then BENCH_BASE=/dev/shm; else BENCH_BASE=/tmp; fi
BENCH_OUT=bench/out

# median: of the numbers on stdin (separated by spaces or newlines), the
# middle one, or the mean of the two middle ones when their count is even;
# nothing when there are none. The one median of every benchmark.
median() {
  tr ' ' '\n' | awk 'NF' | sort -g |
    awk '{a[NR] = $1} END {if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# best_in_server CALLS DB EXPR: the best of CALLS evaluations of EXPR in
# database DB, in seconds, timed inside the server (no connection start-up);
# connects with the caller's PSQL array. The one in-server timer of the benches.
best_in_server() {
  "${PSQL[@]}" -d "$2" -At -c "
    DO \$\$ DECLARE t0 timestamptz; best float8 := 1e9; BEGIN
      FOR i IN 1..$1 LOOP
        t0 := clock_timestamp(); PERFORM $3;
        best := least(best, extract(epoch FROM clock_timestamp() - t0));
      END LOOP;
      RAISE NOTICE '%', best;
    END \$\$" 2>&1 | sed 's/.*NOTICE: *//'
}

# bench_finish DIR: stops a benchmark's cluster and frees its data (on
# tmpfs it takes memory until removed)
bench_finish() {
  cluster_stop "$1"
  rm -rf "$1"
}

# bench_prepare: dependencies, and pg_upkeep built and installed in release mode
bench_prepare() {
  mkdir -p "$BENCH_OUT"
  bash scripts/setup.sh >/dev/null
  echo "building pg_upkeep (release) ..."
  cargo pgrx install --release --pg-config "$PG_CONFIG" >"$BENCH_OUT/install.log" 2>&1 ||
    { cat "$BENCH_OUT/install.log"; exit 1; }
}
