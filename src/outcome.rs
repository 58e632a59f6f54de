//! What happened to one action: its status and the record the run log
//! keeps of it.

use crate::actions::ActionKind;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    LockTimeout,
    DryRun,
    /// Nothing to do (a view whose tables did not change): returned to the
    /// caller, not recorded, and not a failure.
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::LockTimeout => "lock_timeout",
            Status::DryRun => "dry_run",
            Status::Skipped => "skipped",
        })
    }
}

/// What happened to one action (or one policy that could not be planned).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job_id: i64,
    pub action: ActionKind,
    pub target: String,
    pub status: Status,
    pub detail: String,
    pub error: Option<String>,
    pub sql: String,
    pub seconds: f64,
    /// Rows its counting statements processed, if it has any.
    pub rows: Option<i64>,
    /// Nothing happened: it succeeded, and every statement it has counts
    /// rows and counted none (an archive run with nothing old enough).
    /// Returned to the caller, not recorded in the run log.
    pub idle: bool,
    /// It failed on a conflict that is over by the time it is reported (a
    /// deadlock it gave way in): its job is retried at the next cycle, not
    /// after a back-off.
    pub transient: bool,
}

impl Outcome {
    /// An outcome that is not an action run by the executor: a policy that
    /// could not be planned, or a view skipped.
    pub fn noted(
        job_id: i64,
        action: ActionKind,
        target: String,
        status: Status,
        detail: String,
        error: Option<String>,
    ) -> Self {
        Outcome {
            job_id,
            action,
            target,
            status,
            idle: status == Status::Skipped,
            detail,
            error,
            sql: String::new(),
            seconds: 0.0,
            rows: None,
            transient: false,
        }
    }
}

/// One row per action, as returned by `create_partitions`, `run_job` and
/// `run_maintenance` (pgrx needs the column names spelled out in each
/// signature, so this alias only serves the helper below).
pub type ActionRows =
    pgrx::iter::TableIterator<'static, (i64, String, String, String, Option<String>, Option<String>, Option<String>)>;

/// Rows for functions that return one row per action.
pub fn action_rows(outcomes: Vec<Outcome>) -> ActionRows {
    pgrx::iter::TableIterator::new(outcomes.into_iter().map(|o| {
        let opt = |s: String| if s.is_empty() { None } else { Some(s) };
        (o.job_id, o.action.to_string(), o.target, o.status.to_string(), opt(o.detail), o.error, opt(o.sql))
    }))
}
