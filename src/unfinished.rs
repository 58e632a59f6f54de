//! Unfinished actions: what a worker must still do after a statement that
//! commits by itself (DETACH PARTITION CONCURRENTLY). Before such a
//! statement the worker stores the action's remaining statements in
//! `upkeep.unfinished_actions`, in the same transaction as the steps before
//! it; the transaction that runs the remaining statements deletes the row.
//! If the worker dies in between, the next run finds the row and finishes
//! the action, so an object is never left half-way (a partition detached
//! but not yet in its archive).

use crate::sql::QualifiedName;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

pub use upkeep_core::unfinished::Unfinished;

const READ_SQL: &str = "SELECT u.job_id, n.nspname::text, c.relname::text, u.steps \
     FROM upkeep.unfinished_actions u \
     JOIN pg_class c ON c.oid = u.target \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE u.job_id = ANY ($1) \
    ORDER BY u.started_at";

/// The unfinished actions of these jobs whose targets still exist.
pub fn read(client: &SpiClient<'_>, jobs: &[i64]) -> Result<Vec<(i64, Unfinished)>, String> {
    let types = [param(BuiltinOid::INT8ARRAYOID)];
    statements::select(client, READ_SQL, &types, &[jobs.to_vec().into()], |rows| {
        let mut out = Vec::new();
        for row in rows {
            let text = |i: usize| row.get::<String>(i).map_err(|e| e.to_string()).map(Option::unwrap_or_default);
            out.push((
                row.get::<i64>(1).map_err(|e| e.to_string())?.unwrap_or_default(),
                Unfinished {
                    target: QualifiedName::new(text(2)?, text(3)?),
                    steps: row.get::<Vec<String>>(4).map_err(|e| e.to_string())?.unwrap_or_default(),
                },
            ));
        }
        Ok(out)
    })
}

/// Stores what is left of an action on `target` (in the caller's transaction).
pub fn remember(job_id: i64, action: &str, target: &QualifiedName, steps: Vec<String>) -> Result<(), String> {
    Spi::run_with_args(
        "INSERT INTO upkeep.unfinished_actions (target, job_id, action, steps) \
         VALUES ($1::text::regclass, $2, $3, $4) \
         ON CONFLICT (target) DO UPDATE SET job_id = EXCLUDED.job_id, action = EXCLUDED.action, \
                steps = EXCLUDED.steps, started_at = now()",
        &[target.quoted().into(), job_id.into(), action.into(), steps.into()],
    )
    .map_err(|e| e.to_string())
}

/// Forgets the unfinished action on `target`, if any: called in the
/// transaction that does (the rest of) an action, so both commit together.
pub fn forget(target: &QualifiedName) -> Result<(), String> {
    Spi::run_with_args(
        "DELETE FROM upkeep.unfinished_actions WHERE target = to_regclass($1)",
        &[target.quoted().into()],
    )
    .map_err(|e| e.to_string())
}

/// Forgets a removed job's unfinished actions.
pub fn forget_job(job_id: i64) {
    Spi::run_with_args("DELETE FROM upkeep.unfinished_actions WHERE job_id = $1", &[job_id.into()])
        .unwrap_or_else(|e| error!("pg_upkeep could not forget job {job_id}'s unfinished actions: {e}"));
}
