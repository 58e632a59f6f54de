//! The one executor: runs planned actions, each in its own subtransaction
//! under `upkeep.lock_timeout`, and records one row per action in
//! `upkeep.job_runs`. A dry run is the same path stopping before it acts.

use crate::actions::Action;
use crate::jobs;
use crate::settings;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::fmt;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    LockTimeout,
    DryRun,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::LockTimeout => "lock_timeout",
            Status::DryRun => "dry_run",
        })
    }
}

/// What happened to one action (or one policy that could not be planned).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job_id: i64,
    pub action: String,
    pub target: String,
    pub status: Status,
    pub detail: String,
    pub error: Option<String>,
    pub sql: String,
    pub seconds: f64,
}

/// Why an action failed: the SQLSTATE tells a lock timeout from the rest.
struct Failure {
    status: Status,
    message: String,
}

impl From<CaughtError> for Failure {
    fn from(e: CaughtError) -> Self {
        let (code, message, hint) = match &e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
                (r.sql_error_code(), r.message().to_string(), r.hint().map(str::to_string))
            }
        };
        let status = if code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE { Status::LockTimeout } else { Status::Failed };
        let message = match hint {
            Some(h) => format!("{message} (HINT: {h})"),
            None => message,
        };
        Failure { status, message }
    }
}

/// Runs `f` in an internal subtransaction, the way PL/pgSQL runs a block
/// with an EXCEPTION clause: an error rolls back only what `f` did.
fn in_subtransaction<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, Failure> {
    // SAFETY: the standard Begin/Release/RollbackAndRelease sequence,
    // restoring the caller's memory context and resource owner either way.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let restore = move || {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        // AssertUnwindSafe: on unwind the subtransaction is rolled back, so
        // nothing `f` touched is observed half-done.
        let run = std::panic::AssertUnwindSafe(f);
        PgTryBuilder::new(move || match run() {
            Ok(r) => {
                pg_sys::ReleaseCurrentSubTransaction();
                restore();
                Ok(r)
            }
            Err(message) => {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                restore();
                Err(Failure { status: Status::Failed, message })
            }
        })
        .catch_others(move |e| {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            restore();
            Err(Failure::from(e))
        })
        .execute()
    }
}

/// Runs the statements of one action; returns what it counted.
fn act(action: &Action) -> Result<String, Failure> {
    in_subtransaction(|| {
        Spi::connect_mut(|client| {
            let mut counted = Vec::new();
            for step in &action.steps {
                let result = client.update(step.sql.as_str(), None, &[]).map_err(|e| e.to_string())?;
                if let Some(label) = step.counts {
                    counted.push(format!("{} {label}", result.len()));
                }
            }
            Ok(counted.join(", "))
        })
    })
}

/// Sets `lock_timeout` to `upkeep.lock_timeout` for the actions and puts the
/// caller's value back afterwards.
struct LockTimeout {
    previous: String,
}

impl LockTimeout {
    fn set() -> Self {
        let previous = Spi::get_one::<String>("SELECT current_setting('lock_timeout')")
            .ok()
            .flatten()
            .unwrap_or_else(|| "0".into());
        Self::apply(&format!("{}ms", settings::LOCK_TIMEOUT_MS.get()));
        LockTimeout { previous }
    }

    fn apply(value: &str) {
        Spi::run_with_args("SELECT set_config('lock_timeout', $1, true)", &[value.into()])
            .expect("lock_timeout can be set");
    }
}

impl Drop for LockTimeout {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            Self::apply(&self.previous);
        }
    }
}

/// Runs (or, with `dry_run`, only shows) the actions in order. One failing
/// action never stops the others; each real run is recorded.
pub fn execute(actions: Vec<Action>, dry_run: bool) -> Vec<Outcome> {
    let _timeout = (!dry_run && !actions.is_empty()).then(LockTimeout::set);
    actions
        .into_iter()
        .map(|action| {
            let started = Instant::now();
            let result = if dry_run { Ok(String::new()) } else { act(&action) };
            let (status, counted, error) = match result {
                Ok(_) if dry_run => (Status::DryRun, String::new(), None),
                Ok(counted) => (Status::Ok, counted, None),
                Err(f) => (f.status, String::new(), Some(f.message)),
            };
            let detail = if counted.is_empty() { action.detail.clone() } else { format!("{}; {counted}", action.detail) };
            let outcome = Outcome {
                job_id: action.job_id,
                action: action.kind.to_string(),
                target: action.target.to_string(),
                status,
                detail,
                error,
                sql: action.script(),
                seconds: started.elapsed().as_secs_f64(),
            };
            if !dry_run {
                jobs::record(&outcome);
            }
            outcome
        })
        .collect()
}

/// A policy that could not be planned: reported like a failed action, and
/// recorded unless this is a dry run.
pub fn report_problem(job_id: i64, action: &str, target: &str, message: String, dry_run: bool) -> Outcome {
    let outcome = Outcome {
        job_id,
        action: action.to_string(),
        target: target.to_string(),
        status: Status::Failed,
        detail: String::new(),
        error: Some(message),
        sql: String::new(),
        seconds: 0.0,
    };
    if !dry_run {
        jobs::record(&outcome);
    }
    outcome
}
