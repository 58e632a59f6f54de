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
    let _no_jit = no_jit();
    keep(client, sql, types, false)?;
    let table = KEPT.with(|kept| client.select(&kept.borrow()[sql], None, args)).map_err(|e| e.to_string())?;
    read(table)
}

/// Runs a read of rows found by key (one parent's policy, given relations'
/// grants) through one generic plan for the session, made with sequential
/// scans off. Left to choose, the plan cache made a custom plan on every
/// call, as one for an array of one element looks cheaper than the
/// generic plan: an eighth of creating partitions for 200 parents in one
/// transaction went to planning. A generic plan is made once, from the
/// catalogs' sizes of that moment: with sequential scans off it probes
/// the key's index of catalogs that are never tiny (pg_class,
/// pg_attribute). A catalog empty in a new database and growing with the
/// transaction (pg_inherits) is no place for one: any plan scans all of an
/// empty table as cheaply, so `catalog` reads it without SQL. A statement
/// is run either always through here or never: its plan is kept for the
/// session.
pub fn lookup<'conn, R>(
    client: &SpiClient<'conn>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'conn>) -> Result<R, String>,
) -> Result<R, String> {
    let _generic = generic_plan();
    let _no_seqscan = crate::settings::Local::set(c"enable_seqscan", c"off");
    select(client, sql, types, args, read)
}

/// The statement's generic plan while it lives, for the reads of what is
/// due: their parameter is NULL on most calls (every policy), and left to
/// choose, the plan cache found a plan for that value cheaper than the
/// generic one and so planned again on every call: at 200 parents, most of
/// a maintenance call with nothing due.
pub fn generic_plan() -> crate::settings::Local {
    crate::settings::Local::set(c"plan_cache_mode", c"force_generic_plan")
}

/// JIT off while it lives, for catalog reads. Their row estimates are
/// rough (a function scan counts as 1,000 rows), so at 50,000 indexes the
/// planner expects millions and compiles hundreds of expressions for a
/// statement that runs in a fraction of the compile time. A plan made with
/// JIT off never compiles, so the kept plans are made under it too.
pub fn no_jit() -> crate::settings::Local {
    crate::settings::Local::set(c"jit", c"off")
}

/// Runs a writing statement through its session-wide plan.
pub fn update(
    client: &mut SpiClient<'_>,
    sql: &'static str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Result<(), String> {
    keep(client, sql, types, true)?;
    KEPT.with(|kept| client.update(&kept.borrow()[sql], None, args)).map(|_| ()).map_err(|e| e.to_string())
}

/// Prepares the statement for the session, unless it is already.
fn keep(client: &SpiClient<'_>, sql: &'static str, types: &[PgOid], mutating: bool) -> Result<(), String> {
    KEPT.with(|kept| {
        if kept.borrow().contains_key(sql) {
            return Ok(());
        }
        let prepared = if mutating { client.prepare_mut(sql, types) } else { client.prepare(sql, types) };
        kept.borrow_mut().insert(sql, prepared.map_err(|e| e.to_string())?.keep());
        Ok(())
    })
}

/// The type of a statement parameter, by built-in type.
pub fn param(t: pg_sys::BuiltinOid) -> PgOid {
    PgOid::BuiltIn(t)
}
