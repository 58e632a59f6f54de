//! The one executor: runs planned actions under `upkeep.lock_timeout`, a
//! failing one rolled back alone (subtransactions), and records one row
//! per action in `upkeep.job_runs`. A dry run is the same path stopping
//! before it acts.

use crate::actions::{Action, ActionKind, Step};
use crate::job_locks;
use crate::job_state;
use crate::outcome::{Outcome, Status};
use crate::run_log;
use crate::settings;
use crate::unfinished;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::time::Instant;

/// Why an action failed: the SQLSTATE tells a lock timeout and a deadlock
/// from the rest.
struct Failure {
    status: Status,
    message: String,
    transient: bool,
}

impl Failure {
    fn of(message: String) -> Self {
        Failure { status: Status::Failed, message, transient: false }
    }
}

impl From<CaughtError> for Failure {
    fn from(e: CaughtError) -> Self {
        let (code, message, hint) = match &e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
                (r.sql_error_code(), r.message().to_string(), r.hint().map(str::to_string))
            }
        };
        let status =
            if code == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE { Status::LockTimeout } else { Status::Failed };
        // A worker gives way in a deadlock (its deadlock_timeout is short):
        // the other session has gone on, so trying again soon succeeds.
        let transient = code == PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED;
        let hint = hint.or_else(|| maintenance_search_path_hint(code).map(str::to_string));
        Failure { status, message: with_hint(message, hint.as_deref()), transient }
    }
}

/// Actions run with search_path = pg_catalog, pg_temp (as PostgreSQL 17 on
/// runs its maintenance commands, whoever starts them): a name a function
/// leaves unqualified is not found there.
fn maintenance_search_path_hint(code: PgSqlErrorCode) -> Option<&'static str> {
    matches!(code, PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE | PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION).then_some(
        "pg_upkeep runs actions with search_path = pg_catalog, pg_temp, as PostgreSQL 17 and later run REFRESH \
         MATERIALIZED VIEW and REINDEX: a function the view, an index expression or a trigger calls must \
         schema-qualify what it names, or have its own SET search_path.",
    )
}

/// Runs `f` on its own: an error (a PostgreSQL ERROR too) rolls back
/// only what `f` did and comes back as its message with its HINT. For
/// callers that take independent steps in one call, such as adopting
/// pg_partman's parents one by one.
pub fn isolated<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    in_subtransaction(f).map_err(|e| e.message)
}

/// Runs `f` on its own (see `isolated`); in a dry run, what it did is
/// rolled back even when it succeeds, so that a dry run meets every check
/// a real one would and changes nothing.
pub fn rehearsed(dry_run: bool, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    subtransaction(f, !dry_run).map_err(|e| e.message)
}

/// Runs `f` in an internal subtransaction, the way PL/pgSQL runs a block
/// with an EXCEPTION clause: an error rolls back only what `f` did.
fn in_subtransaction<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, Failure> {
    subtransaction(f, true)
}

/// `in_subtransaction`, keeping what `f` did when it succeeds only if
/// `keep`.
fn subtransaction<R>(f: impl FnOnce() -> Result<R, String>, keep: bool) -> Result<R, Failure> {
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
                if keep {
                    pg_sys::ReleaseCurrentSubTransaction();
                } else {
                    pg_sys::RollbackAndReleaseCurrentSubTransaction();
                }
                restore();
                Ok(r)
            }
            Err(message) => {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
                restore();
                Err(Failure::of(message))
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

/// Runs as another role for the rest of the current (sub)transaction, the
/// way PostgreSQL's own maintenance commands run as a table's owner: with
/// SECURITY_RESTRICTED_OPERATION, so code the owner controls (triggers,
/// defaults) can neither switch roles nor leave anything behind. REFRESH
/// MATERIALIZED VIEW is the exception: it restricts the view's query by
/// itself, and its CONCURRENTLY form needs a temporary table, which a
/// restricted operation may not create. An error restores the caller when
/// the subtransaction is rolled back; `Drop` restores it on success.
struct AsRole {
    saved_user: pg_sys::Oid,
    saved_context: i32,
}

impl AsRole {
    fn enter(role: &str, restricted: bool) -> Result<AsRole, String> {
        let oid = role_oid(role)?;
        // SAFETY: the backend's own user-id switch.
        unsafe {
            let mut saved_user = pg_sys::InvalidOid;
            let mut saved_context = 0;
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            let mut flags = pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
            if restricted {
                flags |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
            }
            pg_sys::SetUserIdAndSecContext(oid, saved_context | flags);
            Ok(AsRole { saved_user, saved_context })
        }
    }
}

/// The role's OID, by name.
fn role_oid(role: &str) -> Result<pg_sys::Oid, String> {
    let name = std::ffi::CString::new(role).map_err(|e| e.to_string())?;
    // SAFETY: a syscache lookup; needs a transaction, which every caller has.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    if oid == pg_sys::InvalidOid {
        return Err(format!("role \"{role}\" does not exist"));
    }
    Ok(oid)
}

impl Drop for AsRole {
    fn drop(&mut self) {
        // SAFETY: puts back exactly what `enter` found.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) };
    }
}

/// What an action's counting statements processed: (label, rows), in order.
type Counts = Vec<(&'static str, i64)>;

/// Runs one statement with its parameters: the rows it processed and, for
/// a batch statement, where the next batch starts. A batch statement runs
/// again from there until a batch falls short, unless `once`.
fn run_step(client: &mut pgrx::spi::SpiClient<'_>, step: &Step, once: bool) -> Result<(i64, Option<String>), String> {
    let mut args = step.args.clone();
    let mut total = 0;
    loop {
        let datums: Vec<pgrx::datum::DatumWithOid> = args.iter().map(|a| a.as_str().into()).collect();
        let result = client.update(step.sql.as_str(), None, &datums).map_err(|e| e.to_string())?;
        let Some(limit) = step.batch else { return Ok((result.len() as i64, None)) };
        let row = result.first();
        let n = row.get::<i64>(1).map_err(|e| e.to_string())?.unwrap_or(0);
        let from = row.get::<String>(2).map_err(|e| e.to_string())?.unwrap_or_default();
        total += n;
        if once || n < limit {
            return Ok((total, Some(from)));
        }
        if let Some(last) = args.last_mut() {
            *last = from;
        }
    }
}

/// Runs statements of one action, as the role it names; returns what they
/// counted, the rows batch statements moved and, after a batch statement,
/// where its next batch starts. A batch statement runs until a batch falls
/// short, or once when `once` (a worker, which commits between batches). A
/// long action first waits (under lock_timeout) for the job's lock, which
/// a worker process busy with the same job holds, and clears the job's
/// unfinished record of the target, which commits or rolls back with the
/// statements. Statements without parameters whose row counts nobody reads
/// go to the server as one batch, which saves a round of parsing per
/// statement. The caller provides the subtransaction.
fn run_steps(action: &Action, steps: &[Step], once: bool) -> Result<(Counts, i64, Option<String>), String> {
    if action.kind.is_long() {
        job_locks::wait_for_job(action.job_id)?;
        unfinished::forget(&action.target)?;
    }
    let _owner = AsRole::enter(&action.run_as, action.kind != ActionKind::RefreshMatview)?;
    Spi::connect_mut(|client| {
        let mut counts = Vec::new();
        let (mut moved, mut next) = (0, None);
        let mut batch = String::new();
        for step in steps {
            if step.counts.is_none() && step.args.is_empty() {
                batch.push_str(&step.sql);
                batch.push_str(";\n");
                continue;
            }
            if !batch.is_empty() {
                client.update(std::mem::take(&mut batch).as_str(), None, &[]).map_err(|e| e.to_string())?;
            }
            let (n, from) = run_step(client, step, once)?;
            if step.batch.is_some() {
                moved += n;
                next = from;
            }
            if let Some(label) = step.counts {
                counts.push((label, n));
            }
        }
        if !batch.is_empty() {
            client.update(batch.as_str(), None, &[]).map_err(|e| e.to_string())?;
        }
        Ok((counts, moved, next))
    })
}

/// Runs statements of one action in a subtransaction of its own (see
/// `run_steps`); rows moved by batch statements are added to the job's
/// total in the same transaction.
fn act(action: &Action, steps: &[Step], once: bool) -> Result<(Counts, Option<String>), Failure> {
    let (counts, moved, next) = in_subtransaction(|| run_steps(action, steps, once))?;
    if moved > 0 {
        in_subtransaction(|| job_state::add_rows_moved(action.job_id, moved))?;
    }
    Ok((counts, next))
}

/// An action's failure and the seconds it took.
type Failed = (Failure, f64);

/// Takes the actions in order in one subtransaction, as long as they all
/// succeed: what each counted and how long it took. When one fails, what
/// the others did is rolled back and done again without it (in one more
/// subtransaction), so the end state is that of one subtransaction per
/// action; the failure comes back with the index of the action that
/// failed (the number of results before it). PostgreSQL's subtransaction
/// commit walks the locks and new relations of the whole transaction, so
/// one per action made a long catch-up quadratic; a failure costs at most
/// the work before it once more.
fn act_together(actions: &[Action]) -> (Vec<(Counts, f64)>, Option<Failed>) {
    let mut done = Vec::with_capacity(actions.len());
    let mut started = Instant::now();
    let all = in_subtransaction(|| {
        for action in actions {
            started = Instant::now();
            let (counts, moved, _) = run_steps(action, &action.steps, false)?;
            if moved > 0 {
                job_state::add_rows_moved(action.job_id, moved)?;
            }
            done.push((counts, started.elapsed().as_secs_f64()));
        }
        Ok(())
    });
    let failed = all.err().map(|f| (f, started.elapsed().as_secs_f64()));
    match failed {
        None => (done, None),
        Some(failure) if done.is_empty() => (done, Some(failure)),
        Some(failure) => match act_together(&actions[..done.len()]) {
            (again, None) => (again, Some(failure)),
            // The work before failed on its own this time: that failure is
            // the one to report, and the run goes on after it.
            (again, other) => (again, other),
        },
    }
}

/// `lock_timeout` set to `upkeep.lock_timeout` for the actions (as SET
/// LOCAL would), the caller's value back afterwards.
fn lock_timeout() -> settings::Local {
    let ours = std::ffi::CString::new(format!("{}ms", settings::LOCK_TIMEOUT_MS.get())).unwrap();
    settings::Local::set(c"lock_timeout", &ours)
}

fn outcome(action: &Action, result: Result<Counts, Failure>, seconds: f64, dry_run: bool) -> Outcome {
    let rows = match &result {
        Ok(counts) if !counts.is_empty() => Some(counts.iter().map(|c| c.1).sum::<i64>()),
        _ => None,
    };
    let idle = rows == Some(0) && action.steps.iter().all(|s| s.counts.is_some());
    let transient = result.as_ref().err().is_some_and(|f| f.transient);
    let (status, counted, error) = match result {
        Ok(_) if dry_run => (Status::DryRun, String::new(), None),
        Ok(counts) => {
            (Status::Ok, counts.iter().map(|(label, n)| format!("{n} {label}")).collect::<Vec<_>>().join(", "), None)
        }
        Err(f) => (f.status, String::new(), Some(f.message)),
    };
    let detail = if counted.is_empty() { action.detail.clone() } else { format!("{}; {counted}", action.detail) };
    Outcome {
        job_id: action.job_id,
        action: action.kind,
        target: action.target.to_string(),
        status,
        detail,
        error,
        sql: action.script(),
        seconds,
        rows,
        idle,
        transient,
    }
}

/// Runs (or, with `dry_run`, only shows) the actions in order. One failing
/// action never stops the others; each real run is recorded.
pub fn execute(actions: Vec<Action>, dry_run: bool) -> Vec<Outcome> {
    if dry_run {
        return actions.iter().map(|a| outcome(a, Ok(Counts::new()), 0.0, true)).collect();
    }
    let _timeout = (!actions.is_empty()).then(lock_timeout);
    let mut outcomes = Vec::with_capacity(actions.len());
    let mut rest = &actions[..];
    while !rest.is_empty() {
        let (done, failed) = act_together(rest);
        let n = done.len();
        outcomes.extend(rest.iter().zip(done).map(|(a, (counts, seconds))| outcome(a, Ok(counts), seconds, false)));
        let Some((failure, seconds)) = failed else { break };
        outcomes.push(outcome(&rest[n], Err(failure), seconds, false));
        rest = &rest[n + 1..];
    }
    run_log::record(&outcomes);
    outcomes
}

/// Runs, in a worker process with no transaction open, an action with a
/// top-level statement: the steps before it together with a record of the
/// steps after it, if any (`upkeep.unfinished_actions`) in one transaction, then
/// the statement at top level, then the steps after it in one more
/// transaction that also clears the record. Recorded like any action.
pub fn execute_with_top_level(action: Action) -> Outcome {
    let started = Instant::now();
    let k = action.steps.iter().position(|s| s.top_level).expect("an action with a top-level step");
    let (before, rest) = (&action.steps[..k], &action.steps[k + 1..]);
    let result = BackgroundWorker::transaction(|| {
        let _timeout = lock_timeout();
        act(&action, before, false)?;
        // With nothing after it (a rebuild, a drop), there is nothing to
        // resume: the next plan sees what an interruption left.
        if !rest.is_empty() {
            let left = rest.iter().map(|s| s.sql.clone()).collect();
            in_subtransaction(|| unfinished::remember(action.job_id, &action.kind.to_string(), &action.target, left))?;
        }
        role_oid(&action.run_as).map_err(Failure::of)
    })
    .and_then(|role| crate::toplevel::run(&action.steps[k].sql, role).map_err(|e| Failure::from(*e)))
    .and_then(|_| {
        BackgroundWorker::transaction(|| {
            let _timeout = lock_timeout();
            act(&action, rest, false).map(|r| r.0)
        })
    });
    let done = outcome(&action, result, started.elapsed().as_secs_f64(), false);
    BackgroundWorker::transaction(|| run_log::record(std::slice::from_ref(&done)));
    done
}

/// Runs, in a worker process with no transaction open, an action whose
/// last step is a batch statement: the steps before it with the first
/// batch, then each further batch in a transaction of its own, until a
/// batch moves fewer rows than its limit or fails (what was committed
/// stays). Recorded like any action, with the rows of all batches.
pub fn execute_in_batches(action: Action) -> Outcome {
    let started = Instant::now();
    let last = action.steps.len() - 1;
    let limit = action.steps[last].batch.expect("an action ending in a batch statement");
    let label = action.steps[last].counts.unwrap_or_default();
    let mut steps = action.steps.clone();
    let mut total = 0;
    let result = loop {
        let batch = BackgroundWorker::transaction(|| {
            let _timeout = lock_timeout();
            act(&action, &steps, true)
        });
        match batch {
            Ok((counts, next)) => {
                let n = counts.last().map_or(0, |c| c.1);
                total += n;
                if n < limit {
                    break Ok(vec![(label, total)]);
                }
                // The next transaction: only the batch, from where this one ended.
                let mut step = action.steps[last].clone();
                if let (Some(arg), Some(next)) = (step.args.last_mut(), next) {
                    *arg = next;
                }
                steps = vec![step];
            }
            // What earlier batches moved is committed: the record says so.
            Err(mut e) if total > 0 => {
                e.message = format!("{} ({total} {label} by the batches before, committed)", e.message);
                break Err(e);
            }
            Err(e) => break Err(e),
        }
    };
    let done = outcome(&action, result, started.elapsed().as_secs_f64(), false);
    BackgroundWorker::transaction(|| run_log::record(std::slice::from_ref(&done)));
    done
}

/// An error as the run log keeps it: the message, then its HINT.
fn with_hint(message: String, hint: Option<&str>) -> String {
    match hint {
        Some(h) => format!("{message} (HINT: {h})"),
        None => message,
    }
}

/// Policies that could not be planned, as (job, action, target, message,
/// hint): reported like failed actions, and recorded unless this is a
/// dry run.
pub fn report_problems(problems: Vec<(i64, ActionKind, String, String, String)>, dry_run: bool) -> Vec<Outcome> {
    let outcomes: Vec<Outcome> = problems
        .into_iter()
        .map(|(job_id, action, target, message, hint)| {
            let error = with_hint(message, Some(&hint));
            Outcome::noted(job_id, action, target, Status::Failed, String::new(), Some(error))
        })
        .collect();
    if !dry_run {
        run_log::record(&outcomes);
    }
    outcomes
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::execute;
    use crate::actions::{Action, ActionKind, Step};
    use crate::outcome::Status;
    use crate::sql::QualifiedName;
    use crate::test_support::{count, one};
    use pgrx::prelude::*;

    fn action(name: &str, sql: &str) -> Action {
        Action {
            job_id: 1,
            kind: ActionKind::CreatePartition,
            target: QualifiedName::new("public", name),
            detail: String::new(),
            run_as: one::<String>("SELECT current_user::text"),
            steps: vec![Step::new(sql.into())],
        }
    }

    /// Actions share one subtransaction while they succeed; a failure
    /// must still leave exactly what one subtransaction per action would:
    /// every other action done, the failed one undone, in order.
    #[pg_test]
    fn a_failing_action_is_undone_alone_and_the_others_are_done() {
        let actions = vec![
            action("a0", "SELECT 1 / 0"),
            action("a1", "CREATE TABLE a1 (x int)"),
            action("a2", "CREATE TABLE a2 (x int); CREATE TABLE a1 (x int)"),
            action("a3", "CREATE TABLE a3 (x int)"),
            action("a4", "CREATE TABLE a4 (x int)"),
            action("a5", "CREATE TABLE a5 (x int); SELECT 1 / 0"),
            action("a6", "CREATE TABLE a6 (x int)"),
            action("a7", "SELECT 1 / 0"),
        ];
        let outcomes = execute(actions, false);
        let statuses: Vec<(String, Status)> = outcomes.iter().map(|o| (o.target.clone(), o.status)).collect();
        let expected = [
            ("a0", Status::Failed),
            ("a1", Status::Ok),
            ("a2", Status::Failed),
            ("a3", Status::Ok),
            ("a4", Status::Ok),
            ("a5", Status::Failed),
            ("a6", Status::Ok),
            ("a7", Status::Failed),
        ];
        let expected: Vec<(String, Status)> =
            expected.iter().map(|(t, s)| (QualifiedName::new("public", *t).to_string(), *s)).collect();
        assert_eq!(statuses, expected);
        let made = |t: &str| count(&format!("SELECT 1 FROM pg_class WHERE relname = '{t}'"));
        for (t, n) in [("a1", 1), ("a2", 0), ("a3", 1), ("a4", 1), ("a5", 0), ("a6", 1)] {
            assert_eq!(made(t), n, "{t}");
        }
        assert!(outcomes[2].error.as_deref().is_some_and(|e| e.contains("already exists")), "{:?}", outcomes[2]);
        assert!(outcomes[5].error.as_deref().is_some_and(|e| e.contains("division by zero")), "{:?}", outcomes[5]);
        // One run record per action, failures included.
        assert_eq!(count("SELECT 1 FROM upkeep.job_runs WHERE job_id = 1 AND status = 'failed'"), 4);
        assert_eq!(count("SELECT 1 FROM upkeep.job_runs WHERE job_id = 1 AND status = 'ok'"), 4);
    }
}
