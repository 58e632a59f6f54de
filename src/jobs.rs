//! Jobs and their run log. Every policy is a job (`upkeep.jobs`); every
//! action the executor takes is one row in `upkeep.job_runs`.

use crate::executor::Outcome;
use pgrx::prelude::*;

/// The kinds of job; each has its own lock, so a long run of one kind never
/// holds up another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Partitions = 1,
}

/// First key of pg_upkeep's advisory locks ("upkp").
const LOCK_SPACE: i32 = 0x7570_6b70;

/// How a maintenance run is wrapped in transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// An SQL call (psql, pg_cron): everything in the caller's transaction,
    /// each action in a subtransaction.
    Caller,
    /// A background worker: each step and each action in a transaction of
    /// its own, committed as soon as it is done.
    Worker,
}

impl Runner {
    /// Runs `f` in a transaction: the caller's, or a new one.
    pub fn step<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            Runner::Caller => f(),
            Runner::Worker => pgrx::bgworkers::BackgroundWorker::transaction(std::panic::AssertUnwindSafe(f)),
        }
    }

    /// Waits until no other run of this kind is going on, and keeps others
    /// out: until the caller's transaction ends, or until `finish`.
    pub fn exclude_others(self, kind: Kind) {
        let sql = match self {
            Runner::Caller => "SELECT pg_advisory_xact_lock($1, $2)",
            Runner::Worker => "SELECT pg_advisory_lock($1, $2)",
        };
        Spi::run_with_args(sql, &[LOCK_SPACE.into(), (kind as i32).into()])
            .unwrap_or_else(|e| error!("pg_upkeep could not take its job lock: {e}"));
    }

    /// Lets the next run of this kind in.
    pub fn finish(self, kind: Kind) {
        if self == Runner::Worker {
            Spi::run_with_args("SELECT pg_advisory_unlock($1, $2)", &[LOCK_SPACE.into(), (kind as i32).into()])
                .unwrap_or_else(|e| error!("pg_upkeep could not release its job lock: {e}"));
        }
    }

    /// Runs the actions: in the caller's transaction, or each in its own.
    pub fn act(self, actions: Vec<crate::actions::Action>, dry_run: bool) -> Vec<Outcome> {
        match self {
            Runner::Caller => crate::executor::execute(actions, dry_run),
            Runner::Worker => {
                actions.into_iter().flat_map(|a| self.step(|| crate::executor::execute(vec![a], dry_run))).collect()
            }
        }
    }
}

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

/// Appends outcomes to `upkeep.job_runs`, in one statement.
pub fn record(outcomes: &[Outcome]) {
    if outcomes.is_empty() {
        return;
    }
    let col = |f: fn(&Outcome) -> String| outcomes.iter().map(f).collect::<Vec<String>>();
    Spi::run_with_args(
        RECORD_SQL,
        &[
            outcomes.iter().map(|o| o.job_id).collect::<Vec<i64>>().into(),
            col(|o| o.action.clone()).into(),
            col(|o| o.target.clone()).into(),
            outcomes.iter().map(|o| o.seconds).collect::<Vec<f64>>().into(),
            col(|o| o.status.to_string()).into(),
            col(|o| o.detail.clone()).into(),
            outcomes.iter().map(|o| o.error.clone()).collect::<Vec<Option<String>>>().into(),
            col(|o| o.sql.clone()).into(),
        ],
    )
    .expect("upkeep.job_runs accepts the run records");
}

/// Everything that is due, in the caller's transaction: what pg_cron calls.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn run_maintenance(
    dry_run: default!(bool, false),
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
    crate::partitions::action_rows(crate::partitions::maintain(Runner::Caller, None, dry_run))
}
