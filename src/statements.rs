//! Statements pg_upkeep runs on every call, planned once per session: the
//! catalog reads are big joins whose planning costs more than running them.
//! PostgreSQL's plan cache re-plans them by itself when a table they read
//! changes.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static KEPT: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs a read-only statement through its session-wide plan, preparing it
/// on first use, and hands the rows to `read`.
pub fn select<'conn, R>(
    client: &SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'conn>) -> Result<R, String>,
) -> Result<R, String> {
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if !kept.contains_key(sql) {
            let statement = client.prepare(sql, types).map_err(|e| e.to_string())?.keep();
            kept.insert(sql, statement);
        }
        let table = client.select(&kept[sql], None, args).map_err(|e| e.to_string())?;
        read(table)
    })
}

/// The type of a statement parameter, by built-in type.
pub fn param(t: pg_sys::BuiltinOid) -> PgOid {
    PgOid::BuiltIn(t)
}
