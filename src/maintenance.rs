//! Running maintenance: one job, or everything due, through the driver;
//! and the SQL functions that run jobs (`run_job`, `run_maintenance`,
//! `archive`) or change them (`alter_job`, `pause_job`, `resume_job`).
//! The scheduler and the workers call `run_due` and `run`.

use crate::archive::facts::Scope;
use crate::archive::RowArchive;
use crate::driver::{drive, Runner};
use crate::errors::{bad_input, invalid};
use crate::index_health::{history::Snapshot, reindex::Reindex};
use crate::job::{self, Job, Kind};
use crate::job_state::POLICIES;
use crate::matviews::{plan::Selection as Views, Matviews};
use crate::outcome::{action_rows, Outcome};
use crate::ownership::require_owner;
use crate::partitions::{Partitions, Selection};
use crate::regclass::RegClass;
use pgrx::datum::Interval;
use pgrx::prelude::*;

/// The job, after checking that it exists and that the caller owns the
/// table it serves.
fn owned_job(job_id: Option<i64>) -> Job {
    let Some(job_id) = job_id else {
        bad_input(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "job_id must not be NULL",
            "Pass a job_id from SELECT job_id, kind, target FROM upkeep.jobs;",
        );
    };
    let Some(job) = job::find(job_id) else {
        invalid(
            format!("job {job_id} does not exist"),
            "See SELECT job_id, kind, target FROM upkeep.jobs; for the jobs.",
        );
    };
    match job.served {
        Some(table) => {
            require_owner(Some(RegClass(table)), "the job's table");
        }
        None => crate::ownership::require_database_owner(&job.target),
    }
    job
}

/// Runs one job, whatever its schedule or back-off.
pub fn run(runner: Runner, job: &Job) -> Vec<Outcome> {
    match job.kind {
        Kind::Partitions => drive(Partitions::new(Selection::Job(job.id)), runner, false),
        Kind::Archive => drive(RowArchive(Scope::Job(job.id)), runner, false),
        Kind::Matviews => {
            // A worker is given the first view of a group and refreshes the
            // group's due views in order; a caller runs the one view.
            let selection = if runner == Runner::Worker { Views::Group(job.id) } else { Views::Job(job.id) };
            drive(Matviews { selection, force: false }, runner, false)
        }
        Kind::IndexSnapshot => drive(Snapshot { explicit: true }, runner, false),
        Kind::Reindex => drive(Reindex { explicit: true }, runner, false),
    }
}

/// Runs every job that is due, kind by kind in the order of the kinds'
/// locks (see `Kind`), so that concurrent runs queue instead of
/// deadlocking. Automatic reindex only in the background: an SQL caller
/// could not run it anyway (see `Reindex`).
pub fn run_due(runner: Runner, dry_run: bool) -> Vec<Outcome> {
    let mut outcomes = drive(Partitions::new(Selection::Due), runner, dry_run);
    outcomes.extend(drive(RowArchive(Scope::Due), runner, dry_run));
    outcomes.extend(drive(Matviews { selection: Views::Due, force: false }, runner, dry_run));
    outcomes.extend(drive(Snapshot { explicit: false }, runner, dry_run));
    if runner != Runner::Caller {
        outcomes.extend(drive(Reindex { explicit: false }, runner, dry_run));
    }
    outcomes
}

/// Changes a job's schedule or enables/disables it; NULL keeps a setting.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn alter_job(job_id: Option<i64>, every: default!(Option<Interval>, "NULL"), enabled: default!(Option<bool>, "NULL")) {
    crate::errors::guarded("alter_job", || {
        let Job { id: job_id, kind, .. } = owned_job(job_id);
        if let Some(e) = every {
            if !crate::errors::is_positive(e) {
                invalid(
                    format!("every {e} for job {job_id} is not a positive interval"),
                    "Give the least time between two runs, e.g. every => '1 hour'.",
                );
            }
        }
        let (table, _) = kind.policies();
        Spi::run_with_args(
            &format!(
                "UPDATE {table} SET every = coalesce($2, every), enabled = coalesce($3, enabled), \
                        updated_at = now() WHERE job_id = $1"
            ),
            &[job_id.into(), every.into(), enabled.into()],
        )
        .unwrap_or_else(|e| error!("could not alter job {job_id}: {e}"));
        // A new schedule counts from the last run; a back-off stays as it is.
        // A run writing the job's first state right now is waited for (the
        // insert conflicts with its row), so the new schedule also applies to
        // what that run wrote.
        Spi::run_with_args(
            "INSERT INTO upkeep.job_state (job_id) VALUES ($1) ON CONFLICT (job_id) DO NOTHING",
            &[job_id.into()],
        )
        .unwrap_or_else(|e| error!("could not reschedule job {job_id}: {e}"));
        Spi::run_with_args(
            &format!(
                "UPDATE upkeep.job_state j SET next_run = j.last_run + p.every \
                   FROM {POLICIES} p WHERE p.job_id = j.job_id AND j.job_id = $1 AND j.consecutive_failures = 0"
            ),
            &[job_id.into()],
        )
        .unwrap_or_else(|e| error!("could not reschedule job {job_id}: {e}"));
    })
}

/// Stops a job from running by itself.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn pause_job(job_id: Option<i64>) {
    crate::errors::guarded("pause_job", || {
        alter_job(job_id, None, Some(false));
    })
}

/// Lets a paused job run again at the next cycle, clearing any back-off.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn resume_job(job_id: Option<i64>) {
    crate::errors::guarded("resume_job", || {
        alter_job(job_id, None, Some(true));
        Spi::run_with_args("UPDATE upkeep.job_state SET next_run = NULL WHERE job_id = $1", &[job_id.into()])
            .unwrap_or_else(|e| error!("could not resume job: {e}"));
    })
}

/// Runs one job now, whatever its schedule or back-off.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn run_job(
    job_id: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(action, String),
        name!(target, String),
        name!(status, String),
        name!(detail, Option<String>),
        name!(error, Option<String>),
        name!(sql, Option<String>),
    ),
> {
    crate::errors::guarded("run_job", || action_rows(run(Runner::Caller, &owned_job(job_id))))
}

/// Everything that is due, in the caller's transaction: what pg_cron calls.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn run_maintenance(
    dry_run: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(action, String),
        name!(target, String),
        name!(status, String),
        name!(detail, Option<String>),
        name!(error, Option<String>),
        name!(sql, Option<String>),
    ),
> {
    crate::errors::guarded("run_maintenance", || {
        let dry_run = crate::errors::given(dry_run, "dry_run", "run_maintenance", crate::errors::DRY_RUN_HINT);
        action_rows(run_due(Runner::Caller, dry_run))
    })
}

/// Runs the archive moves that are due (of `source` only, now, when given),
/// in the caller's transaction. One row per action. For a partitioned
/// table this is its partition maintenance, which includes the moves.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn archive(
    source: default!(Option<RegClass>, "NULL"),
    dry_run: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(action, String),
        name!(target, String),
        name!(status, String),
        name!(rows_moved, Option<i64>),
        name!(detail, Option<String>),
        name!(error, Option<String>),
        name!(sql, Option<String>),
    ),
> {
    crate::errors::guarded("archive", || {
        let dry_run = crate::errors::given(dry_run, "dry_run", "archive", crate::errors::DRY_RUN_HINT);
        let outcomes = match source {
            None => run_due(Runner::Caller, dry_run),
            Some(s) => {
                let (oid, target) = require_owner(Some(s), "source");
                match job::serving(oid) {
                    Some(job) if job.kind == Kind::Archive => {
                        drive(RowArchive(Scope::Job(job.id)), Runner::Caller, dry_run)
                    }
                    Some(_) => drive(Partitions::new(Selection::Parent(oid)), Runner::Caller, dry_run),
                    None => invalid(
                        format!("table {target} has no archive policy"),
                        format!(
                            "Register it first: SELECT upkeep.manage_archive('{target}', '<time column>', '90 days'); \
                             (partitioned tables: upkeep.manage_partitions(..., retention => ...))."
                        ),
                    ),
                }
            }
        };
        TableIterator::new(outcomes.into_iter().map(|o| {
            let opt = |s: String| if s.is_empty() { None } else { Some(s) };
            (o.job_id, o.action.to_string(), o.target, o.status.to_string(), o.rows, opt(o.detail), o.error, opt(o.sql))
        }))
    })
}
