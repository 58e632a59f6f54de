//! Locks by job: a job's long actions run in one process at a time.

use crate::errors::Found;
use pgrx::prelude::*;

/// First key of the advisory locks by job ("upkj"), held while a job's
/// long actions run.
const JOB_LOCK_SPACE: i32 = 0x7570_6b6a;

/// Waits (under lock_timeout) until no other process works on the job's
/// long actions, and keeps others out until this transaction ends.
pub fn wait_for_job(job_id: i64) -> Result<(), String> {
    Spi::run_with_args("SELECT pg_advisory_xact_lock($1, $2)", &[JOB_LOCK_SPACE.into(), (job_id as i32).into()])
        .map_err(|e| e.to_string())
}

/// Takes the job until this transaction ends, unless another process has it.
pub fn try_lock_job(job_id: i64) -> bool {
    try_job_lock("pg_try_advisory_xact_lock", job_id)
}

/// Takes the job for this worker process, unless another process has it.
pub fn try_claim_job(job_id: i64) -> bool {
    try_job_lock("pg_try_advisory_lock", job_id)
}

fn try_job_lock(function: &str, job_id: i64) -> bool {
    Spi::get_one_with_args::<bool>(
        &format!("SELECT {function}($1, $2)"),
        &[JOB_LOCK_SPACE.into(), (job_id as i32).into()],
    )
    .found()
    .unwrap_or(false)
}
