//! What pg_upkeep remembers of each job between runs (`upkeep.job_state`):
//! last run, failures and back-off, when it is due again, rows moved.

use crate::outcome::{Outcome, Status};
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Each kind's policy table, with the table a job serves, its schedule
/// and whether it is enabled.
pub const POLICIES: &str =
    "(SELECT job_id, parent AS served, every, 1 AS kind, enabled FROM upkeep.partition_policies \
     UNION ALL SELECT job_id, source, every, 2, enabled FROM upkeep.archive_policies \
     UNION ALL SELECT job_id, matview, every, 3, enabled FROM upkeep.matview_policies \
     UNION ALL SELECT job_id, NULL, every, 4, enabled FROM upkeep.index_snapshot_policy \
     UNION ALL SELECT job_id, NULL, every, 5, enabled FROM upkeep.reindex_policy)";

pub use upkeep_core::backoff::backoff_seconds;

/// When the next enabled job is due (ms since the Unix epoch), or `None`
/// when none ever is. A job never run, or run at any cycle, is due now; a
/// partition policy when its state says (or, never checked, now).
pub fn next_due_ms() -> Option<i64> {
    Spi::get_one::<i64>(&format!(
        "SELECT CASE WHEN min(d) IS NULL OR min(d) = 'infinity' THEN NULL \
                     WHEN min(d) = '-infinity' THEN 1 \
                     ELSE floor(extract(epoch FROM min(d)) * 1000)::int8 END \
           FROM (SELECT CASE WHEN p.kind <> 1 THEN coalesce(j.next_run, '-infinity') \
                             WHEN s.job_id IS NULL THEN '-infinity' \
                             ELSE greatest(j.next_run, s.due_at) END \
                   FROM {POLICIES} p \
                   LEFT JOIN upkeep.partition_state s ON s.job_id = p.job_id \
                   LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
                  WHERE p.enabled) due(d)"
    ))
    .unwrap_or_else(|e| error!("pg_upkeep could not read when its jobs are due: {e}"))
}

/// Adds rows an archive job moved to its total (`upkeep.job_state.rows_moved`).
pub fn add_rows_moved(job_id: i64, rows: i64) -> Result<(), String> {
    Spi::run_with_args(
        "INSERT INTO upkeep.job_state AS j (job_id, rows_moved) VALUES ($1, $2) \
         ON CONFLICT (job_id) DO UPDATE SET rows_moved = j.rows_moved + EXCLUDED.rows_moved",
        &[job_id.into(), rows.into()],
    )
    .map_err(|e| e.to_string())
}

const FAILURES_SQL: &str = "SELECT job_id, consecutive_failures FROM upkeep.job_state WHERE job_id = ANY ($1)";

/// Updates the jobs' rows, and inserts those of jobs never recorded (a
/// concurrent first run of the same job lands in ON CONFLICT). An UPDATE
/// costs about half of an INSERT ... ON CONFLICT DO UPDATE per row, whose
/// speculative insertion and row lock took a sixth of a views decision at
/// 500 views, where every view was due.
static RECORD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH r AS MATERIALIZED ( \
           SELECT r.job_id, r.status, r.error, make_interval(secs => r.secs) AS duration, r.failed, \
                  coalesce(now() + make_interval(secs => r.retry_in), now() + p.every) AS next_run, \
                  CASE WHEN r.status = 'ok' THEN now() END AS success \
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::float8[], $5::int4[], $6::int8[]) \
                  AS r(job_id, status, error, secs, failed, retry_in) \
             LEFT JOIN {POLICIES} p ON p.job_id = r.job_id), \
         updated AS ( \
           UPDATE upkeep.job_state j SET last_run = now(), last_status = r.status, last_error = r.error, \
                  last_duration = r.duration, consecutive_failures = r.failed, next_run = r.next_run, \
                  last_success = coalesce(r.success, j.last_success) \
             FROM r WHERE j.job_id = r.job_id RETURNING j.job_id) \
         INSERT INTO upkeep.job_state AS j (job_id, last_run, last_status, last_error, last_duration, consecutive_failures, next_run, last_success) \
         SELECT r.job_id, now(), r.status, r.error, r.duration, r.failed, r.next_run, r.success \
           FROM r WHERE r.job_id NOT IN (SELECT job_id FROM updated) \
         ON CONFLICT (job_id) DO UPDATE SET last_run = EXCLUDED.last_run, last_status = EXCLUDED.last_status, \
            last_error = EXCLUDED.last_error, last_duration = EXCLUDED.last_duration, \
            consecutive_failures = EXCLUDED.consecutive_failures, next_run = EXCLUDED.next_run, \
            last_success = coalesce(EXCLUDED.last_success, j.last_success)"
    )
});

/// Records how each checked job's run went: status, error, duration; resets
/// or increments its consecutive failures, and sets when it may run again
/// (its `every`, or the back-off). Jobs not checked are not written, so a
/// run with nothing due writes nothing.
pub fn record_job_runs(jobs: &[i64], outcomes: &[Outcome]) {
    if jobs.is_empty() {
        return;
    }
    let failed_jobs: Vec<i64> =
        outcomes.iter().filter(|o| !matches!(o.status, Status::Ok | Status::Skipped)).map(|o| o.job_id).collect();
    // Earlier failures count only for jobs failing again: a run where
    // nothing failed reads none.
    let failures: BTreeMap<i64, i32> =
        if failed_jobs.is_empty() { BTreeMap::new() } else { read_failures(&failed_jobs) };
    let mut status = Vec::new();
    let mut error = Vec::new();
    let mut seconds = Vec::new();
    let mut failed = Vec::new();
    let mut retry_in = Vec::new();
    let mut by_job: BTreeMap<i64, Vec<&Outcome>> = BTreeMap::new();
    for o in outcomes {
        by_job.entry(o.job_id).or_default().push(o);
    }
    for &job in jobs {
        let mine = by_job.remove(&job).unwrap_or_default();
        let worst = mine.iter().find(|o| !matches!(o.status, Status::Ok | Status::Skipped));
        let n = if worst.is_some() { failures.get(&job).copied().unwrap_or(0) + 1 } else { 0 };
        status.push(worst.map_or(Status::Ok, |o| o.status).to_string());
        error.push(worst.and_then(|o| o.error.clone()));
        seconds.push(mine.iter().map(|o| o.seconds).sum::<f64>());
        failed.push(n);
        // A deadlock it gave way in is over: the next cycle tries again.
        let transient = worst.is_some_and(|o| o.transient);
        retry_in.push((n > 0 && !transient).then(|| backoff_seconds(job, n as u32)));
    }
    let types = [
        param(BuiltinOid::INT8ARRAYOID),
        param(BuiltinOid::TEXTARRAYOID),
        param(BuiltinOid::TEXTARRAYOID),
        param(BuiltinOid::FLOAT8ARRAYOID),
        param(BuiltinOid::INT4ARRAYOID),
        param(BuiltinOid::INT8ARRAYOID),
    ];
    let args = [jobs.to_vec().into(), status.into(), error.into(), seconds.into(), failed.into(), retry_in.into()];
    Spi::connect_mut(|client| statements::update(client, RECORD_SQL.as_str(), &types, &args))
        .unwrap_or_else(|e| error!("pg_upkeep could not record job states: {e}"));
}

/// The consecutive failures recorded for the jobs.
fn read_failures(jobs: &[i64]) -> BTreeMap<i64, i32> {
    let types = [param(BuiltinOid::INT8ARRAYOID)];
    Spi::connect(|client| {
        statements::select(client, FAILURES_SQL, &types, &[jobs.to_vec().into()], |rows| {
            rows.map(|r| Ok((r.get::<i64>(1)?.unwrap_or_default(), r.get::<i32>(2)?.unwrap_or_default())))
                .collect::<Result<_, pgrx::spi::SpiError>>()
                .map_err(|e| e.to_string())
        })
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not read job states: {e}"))
}

/// Forgets a removed job's state and unfinished actions (a partition a
/// worker had detached stays where it is, as a plain table).
pub fn forget(job_id: i64) {
    Spi::run_with_args("DELETE FROM upkeep.job_state WHERE job_id = $1", &[job_id.into()])
        .unwrap_or_else(|e| error!("pg_upkeep could not forget job {job_id}: {e}"));
    crate::unfinished::forget_job(job_id);
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::next_due_ms;
    use crate::test_support::one;
    use pgrx::prelude::*;

    fn epoch_ms(sql: &str) -> i64 {
        one::<i64>(&format!("SELECT (extract(epoch FROM {sql}) * 1000)::int8"))
    }

    #[pg_test]
    fn the_next_due_job_is_the_earliest_enabled_one() {
        // A fresh install: the index snapshot job has never run.
        assert_eq!(next_due_ms(), Some(1));
        Spi::run(
            "INSERT INTO upkeep.job_state (job_id, next_run) SELECT job_id, timestamptz '2030-01-01' FROM upkeep.index_snapshot_policy",
        )
        .unwrap();
        assert_eq!(next_due_ms(), Some(epoch_ms("timestamptz '2030-01-01'")));
        // A partition policy counts from its state: never checked is now,
        // checked is when its next partition is due.
        Spi::run(
            "CREATE TABLE public.t (d date NOT NULL) PARTITION BY RANGE (d);
             INSERT INTO upkeep.partition_policies (parent, control) VALUES ('public.t', 'd');",
        )
        .unwrap();
        assert_eq!(next_due_ms(), Some(1));
        Spi::run(
            "INSERT INTO upkeep.partition_state (job_id, due_at, fingerprint, checked_at)
             SELECT job_id, timestamptz '2029-06-01', '', now() FROM upkeep.partition_policies",
        )
        .unwrap();
        assert_eq!(next_due_ms(), Some(epoch_ms("timestamptz '2029-06-01'")));
        // Nothing enabled: nothing due, ever.
        Spi::run("UPDATE upkeep.partition_policies SET enabled = false; UPDATE upkeep.index_snapshot_policy SET enabled = false")
            .unwrap();
        assert_eq!(next_due_ms(), None);
    }
}
