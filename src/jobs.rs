//! Jobs: every policy is a job (`upkeep.jobs`). Who runs them (the
//! runner), the kind locks, finding a job, and the SQL functions that
//! change or run jobs. Their run log is `run_log`, what is remembered of
//! them between runs `job_state`, their locks by job `job_locks`.

use crate::errors::{bad_input, invalid};
use crate::job_state::POLICIES;
use crate::outcome::Outcome;
use crate::ownership::require_owner;
use crate::partitions::Selection;
use crate::regclass::RegClass;
use pgrx::datum::Interval;
use pgrx::prelude::*;

/// The kinds of job; each has its own lock, so a long run of one kind never
/// holds up another. A run of several kinds takes their locks in this
/// order (partitions, archive, materialized views, index health), so
/// concurrent runs never deadlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Partitions = 1,
    Archive = 2,
    Matviews = 3,
    IndexSnapshot = 4,
    Reindex = 5,
}

/// First key of pg_upkeep's advisory locks by kind ("upkp").
const LOCK_SPACE: i32 = 0x7570_6b70;
/// Who runs maintenance, which decides how it is wrapped in transactions
/// and which actions it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// An SQL call (psql, pg_cron): everything in the caller's transaction,
    /// each action in a subtransaction.
    Caller,
    /// A `pg_upkeep scheduler`: each step and each action in a transaction
    /// of its own. It takes the quick actions and hands the long ones to
    /// `pg_upkeep worker` processes.
    Scheduler,
    /// A `pg_upkeep worker` given one job: takes its long actions only, in
    /// transactions of their own, with the top-level CONCURRENTLY forms.
    Worker,
}

impl Runner {
    /// Runs `f` in a transaction: the caller's, or a new one.
    pub fn step<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            Runner::Caller => f(),
            Runner::Scheduler | Runner::Worker => {
                pgrx::bgworkers::BackgroundWorker::transaction(std::panic::AssertUnwindSafe(f))
            }
        }
    }

    /// Waits until no other run of this kind is going on, and keeps others
    /// out: until the caller's transaction ends, or until `finish`. A
    /// worker holds its job's lock instead (`try_claim_job`), so that the
    /// scheduler never waits behind a long action.
    pub fn exclude_others(self, kind: Kind) {
        let sql = match self {
            Runner::Caller => "SELECT pg_advisory_xact_lock($1, $2)",
            Runner::Scheduler => "SELECT pg_advisory_lock($1, $2)",
            Runner::Worker => return,
        };
        Spi::run_with_args(sql, &[LOCK_SPACE.into(), (kind as i32).into()])
            .unwrap_or_else(|e| error!("pg_upkeep could not take its job lock: {e}"));
    }

    /// Lets the next run of this kind in.
    pub fn finish(self, kind: Kind) {
        if self == Runner::Scheduler {
            Spi::run_with_args("SELECT pg_advisory_unlock($1, $2)", &[LOCK_SPACE.into(), (kind as i32).into()])
                .unwrap_or_else(|e| error!("pg_upkeep could not release its job lock: {e}"));
        }
    }

    /// Whether this runner takes the action itself.
    pub fn takes(self, action: &crate::actions::Action) -> bool {
        match self {
            Runner::Caller => true,
            Runner::Scheduler => !action.kind.is_long(),
            Runner::Worker => action.kind.is_long(),
        }
    }

    /// Whether this runner may use statements that need the top level.
    pub fn top_level(self) -> bool {
        self == Runner::Worker && crate::toplevel::AVAILABLE
    }

    /// Shows in pg_stat_activity.query which action a worker runs.
    pub fn announce(self, a: &crate::actions::Action) {
        if self != Runner::Caller {
            report_activity(&format!("pg_upkeep job {}: {} {}", a.job_id, a.kind, a.target));
        }
    }

    /// Whether this runner leaves a `running` row in the run log while it
    /// takes an action (see `interrupted`): its actions commit on their own.
    pub fn marks(self, dry_run: bool) -> bool {
        self != Runner::Caller && !dry_run && crate::interrupted::supported()
    }

    /// Runs the actions: in the caller's transaction, or each in its own.
    pub fn act(self, actions: Vec<crate::actions::Action>, dry_run: bool) -> Vec<Outcome> {
        match self {
            Runner::Caller => crate::executor::execute(actions, dry_run),
            Runner::Scheduler | Runner::Worker => {
                let marks = !actions.is_empty() && self.marks(dry_run);
                actions
                    .into_iter()
                    .map(|a| {
                        self.announce(&a);
                        crate::interrupted::around(marks, a, |a| {
                            if a.steps.iter().any(|s| s.top_level) {
                                return crate::executor::execute_with_top_level(a);
                            }
                            if a.steps.last().is_some_and(|s| s.batch.is_some()) {
                                return crate::executor::execute_in_batches(a);
                            }
                            let mut done = self.step(|| crate::executor::execute(vec![a], dry_run));
                            done.pop().expect("one outcome per action")
                        })
                    })
                    .collect()
            }
        }
    }
}

/// Shows in pg_stat_activity.query what a worker is doing.
fn report_activity(what: &str) {
    let text = std::ffi::CString::new(what.replace('\0', "")).unwrap_or_default();
    // SAFETY: copies the text into this backend's status entry.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr()) };
}

/// Maintenance changes tables, which a hot standby cannot: an ERROR that
/// says so (a dry run still shows what the primary would do).
pub fn refuse_on_standby(dry_run: bool) {
    // SAFETY: reads the backend's recovery state.
    if !dry_run && unsafe { pg_sys::RecoveryInProgress() } {
        bad_input(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "pg_upkeep cannot maintain tables on a hot standby",
            "Run it on the primary. On a standby the background workers wait until it is promoted.",
        );
    }
}

/// A job as its policy table has it.
pub struct Job {
    pub id: i64,
    pub kind: Kind,
    /// The table it serves (none for the index-health jobs), and its name.
    pub served: Option<pg_sys::Oid>,
    pub target: String,
}

/// The job, if it exists.
pub fn find(job_id: i64) -> Option<Job> {
    lookup("job_id = $1", job_id.into())
}

/// The job that serves a table, if any (a table has at most one: partition
/// policies need a partitioned table, archive policies a plain one).
pub fn serving(table: pg_sys::Oid) -> Option<Job> {
    lookup("served::oid = $1", table.into())
}

fn lookup(condition: &str, arg: pgrx::datum::DatumWithOid<'_>) -> Option<Job> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT job_id, kind, served::oid, coalesce(served::text, CASE kind WHEN 4 THEN 'index health snapshot' \
                        ELSE 'automatic reindex' END) FROM {POLICIES} p WHERE {condition}"
            ),
            None,
            &[arg],
        )?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok::<_, pgrx::spi::SpiError>((
                    r.get::<i64>(1)?,
                    r.get::<i32>(2)?,
                    r.get::<pg_sys::Oid>(3)?,
                    r.get::<String>(4)?,
                ))
            })
            .transpose()
    });
    match row {
        Ok(Some((Some(id), Some(kind), served, Some(target)))) => Some(Job {
            id,
            kind: match kind {
                2 => Kind::Archive,
                3 => Kind::Matviews,
                4 => Kind::IndexSnapshot,
                5 => Kind::Reindex,
                _ => Kind::Partitions,
            },
            served,
            target,
        }),
        _ => None,
    }
}

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
    let Some(job) = find(job_id) else {
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
        Kind::Partitions => crate::partitions::maintain(runner, Selection::Job(job.id), false),
        Kind::Archive => crate::archive::maintain(runner, crate::archive::facts::Scope::Job(job.id), false),
        Kind::Matviews => {
            // A worker is given the first view of a group and refreshes the
            // group's due views in order; a caller runs the one view.
            let selection = if runner == Runner::Worker {
                crate::matviews::plan::Selection::Group(job.id)
            } else {
                crate::matviews::plan::Selection::Job(job.id)
            };
            crate::matviews::maintain(runner, selection, false, false)
        }
        Kind::IndexSnapshot => crate::index_health::history::maintain(runner, true, false),
        Kind::Reindex => crate::index_health::reindex::maintain(runner, true),
    }
}

/// Runs every job that is due, kind by kind in the order of the kinds'
/// locks (see `Kind`), so that concurrent runs queue instead of deadlocking.
pub fn run_due(runner: Runner, dry_run: bool) -> Vec<Outcome> {
    let mut outcomes = crate::partitions::maintain(runner, Selection::Due, dry_run);
    outcomes.extend(crate::archive::maintain(runner, crate::archive::facts::Scope::Due, dry_run));
    outcomes.extend(crate::matviews::maintain(runner, crate::matviews::plan::Selection::Due, false, dry_run));
    outcomes.extend(crate::index_health::history::maintain(runner, false, dry_run));
    if !dry_run {
        outcomes.extend(crate::index_health::reindex::maintain(runner, false));
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
            let positive = Spi::get_one_with_args::<bool>("SELECT $1 > interval '0'", &[e.into()]).ok().flatten();
            if positive != Some(true) {
                invalid(
                    format!("every {e} for job {job_id} is not a positive interval"),
                    "Give the least time between two runs, e.g. every => '1 hour'.",
                );
            }
        }
        let table = match kind {
            Kind::Partitions => "upkeep.partition_policies",
            Kind::Archive => "upkeep.archive_policies",
            Kind::Matviews => "upkeep.matview_policies",
            Kind::IndexSnapshot => "upkeep.index_snapshot_policy",
            Kind::Reindex => "upkeep.reindex_policy",
        };
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
    crate::errors::guarded("run_job", || crate::partitions::action_rows(run(Runner::Caller, &owned_job(job_id))))
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
        crate::partitions::action_rows(run_due(Runner::Caller, dry_run))
    })
}
