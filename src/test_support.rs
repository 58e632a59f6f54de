//! Helpers the in-database tests (`#[pg_test]`) share.

use pgrx::prelude::*;

/// The one value a query returns; panics when it fails or returns NULL.
pub fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql).expect("query runs").expect("not NULL")
}

/// How many rows a query returns.
pub fn count(sql: &str) -> i64 {
    one::<i64>(&format!("SELECT count(*) FROM ({sql}) q"))
}

/// Citus' catalog of distributed tables as far as pg_upkeep reads it
/// (`pg_dist_partition.logicalrelid`), with `table` in it: Citus itself
/// cannot be installed where the tests run.
pub fn citus_distributes(table: &str) {
    Spi::run(&format!(
        "SET LOCAL allow_system_table_mods = on; \
         CREATE TABLE IF NOT EXISTS pg_catalog.pg_dist_partition (logicalrelid regclass NOT NULL, partmethod \"char\"); \
         INSERT INTO pg_catalog.pg_dist_partition VALUES ('{table}', 'h'); \
         RESET allow_system_table_mods"
    ))
    .unwrap();
}
