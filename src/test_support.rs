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
