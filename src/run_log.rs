//! The run log: one row per action in `upkeep.job_runs`.

use crate::outcome::Outcome;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;

/// Deletes run records older than `upkeep.history_retention`.
pub fn prune_history() {
    Spi::run_with_args(
        "DELETE FROM upkeep.job_runs WHERE started_at < now() - make_interval(mins => $1)",
        &[crate::settings::HISTORY_RETENTION_MIN.get().into()],
    )
    .unwrap_or_else(|e| error!("pg_upkeep could not prune upkeep.job_runs: {e}"));
}

const RECORD_SQL: &str = "INSERT INTO upkeep.job_runs \
    (job_id, action, target, started_at, duration, status, detail, error, sql) \
    SELECT job_id, action, target, clock_timestamp() - make_interval(secs => secs), make_interval(secs => secs), \
           status, nullif(detail, ''), error, nullif(sql, '') \
      FROM unnest($1::int8[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::text[]) \
           AS o(job_id, action, target, secs, status, detail, error, sql)";

/// Appends outcomes to `upkeep.job_runs`, in one statement; idle ones
/// (nothing happened) are left out.
pub fn record(outcomes: &[Outcome]) {
    let outcomes: Vec<&Outcome> = outcomes.iter().filter(|o| !o.idle).collect();
    if outcomes.is_empty() {
        return;
    }
    let col = |f: fn(&Outcome) -> String| outcomes.iter().map(|o| f(o)).collect::<Vec<String>>();
    let text = param(BuiltinOid::TEXTARRAYOID);
    let types =
        [param(BuiltinOid::INT8ARRAYOID), text, text, param(BuiltinOid::FLOAT8ARRAYOID), text, text, text, text];
    let args = [
        outcomes.iter().map(|o| o.job_id).collect::<Vec<i64>>().into(),
        col(|o| o.action.to_string()).into(),
        col(|o| o.target.clone()).into(),
        outcomes.iter().map(|o| o.seconds).collect::<Vec<f64>>().into(),
        col(|o| o.status.to_string()).into(),
        col(|o| o.detail.clone()).into(),
        outcomes.iter().map(|o| o.error.clone()).collect::<Vec<Option<String>>>().into(),
        col(|o| o.sql.clone()).into(),
    ];
    Spi::connect_mut(|client| statements::update(client, RECORD_SQL, &types, &args))
        .expect("upkeep.job_runs accepts the run records");
}
