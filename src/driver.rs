//! The one driver: the sequence every maintenance run goes through,
//! whatever the capability and whoever runs it.
//!
//! 1. Refuse on a hot standby (a dry run may still look).
//! 2. In one transaction: take the kind's lock, read the capability's
//!    facts, plan once, split the plan into what this runner takes and
//!    what only a `pg_upkeep worker` may take, and hand those jobs to the
//!    worker pool (the scheduler only).
//! 3. Report the problems and notes, take the actions (the caller: in its
//!    transaction, a failing one rolled back alone; a scheduler or worker:
//!    each in a transaction of its own).
//! 4. Let the capability remember what the run changed, record each job's
//!    run (`upkeep.job_state`), release the kind's lock.
//!
//! A capability says what it is through `Capability` and never learns who
//! runs it; the runner (`Runner`) decides transactions and who takes what.

use crate::actions::{Action, ActionKind};
use crate::job::Kind;
use crate::outcome::{Outcome, Status};
use crate::problem::Problem;
use pgrx::prelude::*;
use std::sync::OnceLock;

/// What a capability tells the driver.
pub trait Capability {
    /// What a run reads: catalog facts, policies, the time.
    type Facts;
    /// What the plan ties to each action, given back with its outcome.
    type Tag;
    /// Its jobs' kind.
    const KIND: Kind;
    /// Whether its runs queue up behind each other (the kind's lock); the
    /// others lock each job as they act.
    const EXCLUSIVE: bool;

    /// Reads the facts, or `None` when nothing is due. `top_level` says
    /// whether the runner can run the top-level (CONCURRENTLY) statements.
    fn facts(&mut self, top_level: bool) -> Option<Self::Facts>;

    /// What to do, in order. With `top_level` the same actions in the same
    /// order, only with other statements (a plan may also act where it
    /// would otherwise have said `NeedsWorker`).
    fn plan(&self, facts: &Self::Facts, top_level: bool) -> Plan<Self::Tag>;

    /// Takes these actions in the current transaction (default: the executor).
    fn take(&self, _facts: &Self::Facts, actions: Vec<Action>, dry_run: bool) -> Vec<Outcome> {
        crate::executor::execute(actions, dry_run)
    }

    /// After a real run: what it remembers of what the actions did.
    fn remember(&self, _facts: Self::Facts, _done: Vec<(Self::Tag, &Outcome)>) {}
}

/// A plan: its items in the order a run goes through them.
pub struct Plan<T> {
    pub items: Vec<Item<T>>,
    /// Jobs whose run is recorded even with nothing to do (they were checked).
    pub checked: Vec<i64>,
}

impl<T> Default for Plan<T> {
    fn default() -> Self {
        Plan { items: Vec::new(), checked: Vec::new() }
    }
}

pub enum Item<T> {
    /// An action. A runner that does not take it (see `Runner::takes`)
    /// hands `worker` to the worker pool when it is the scheduler; `None`
    /// leaves the action for a later cycle.
    Act { action: Action, tag: T, worker: Option<i64> },
    /// A policy that cannot be acted on: a failed outcome in the run log.
    Problem { job_id: i64, action: ActionKind, target: String, problem: Problem },
    /// A decision not to act (a view that did not change), returned and
    /// recorded as the job's run.
    Note(Outcome),
    /// Work only a `pg_upkeep worker` can do: the scheduler hands the job
    /// to one; a caller is told why it was skipped.
    NeedsWorker { job_id: i64, action: ActionKind, target: String, why: String },
}

/// Who runs maintenance, which decides how it is wrapped in transactions
/// and which actions it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// An SQL call (psql, pg_cron): everything in the caller's transaction,
    /// a failing action rolled back alone (see `executor::execute`).
    Caller,
    /// A `pg_upkeep scheduler`: each step and each action in a transaction
    /// of its own. It takes the quick actions and hands the long ones to
    /// `pg_upkeep worker` processes.
    Scheduler,
    /// A `pg_upkeep worker` given one job: takes its long actions only, in
    /// transactions of their own, with the top-level CONCURRENTLY forms.
    Worker,
}

/// First key of pg_upkeep's advisory locks by kind ("upkp").
const LOCK_SPACE: i32 = 0x7570_6b70;

/// How the scheduler starts workers for jobs; set by the worker pool, so
/// that this layer does not depend on the processes above it.
static HAND_OFF: OnceLock<fn(Vec<i64>)> = OnceLock::new();

/// Says how the scheduler hands jobs to workers (once per process).
pub fn hand_off_with(start: fn(Vec<i64>)) {
    HAND_OFF.get_or_init(|| start);
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
    fn finish(self, kind: Kind) {
        if self == Runner::Scheduler {
            Spi::run_with_args("SELECT pg_advisory_unlock($1, $2)", &[LOCK_SPACE.into(), (kind as i32).into()])
                .unwrap_or_else(|e| error!("pg_upkeep could not release its job lock: {e}"));
        }
    }

    /// Whether this runner takes the action itself.
    fn takes(self, action: &Action) -> bool {
        match self {
            Runner::Caller => true,
            Runner::Scheduler => !action.kind.is_long(),
            Runner::Worker => action.kind.is_long(),
        }
    }

    /// Whether this runner may use statements that need the top level.
    fn top_level(self) -> bool {
        self == Runner::Worker && crate::toplevel::AVAILABLE
    }

    /// Starts workers for these jobs (the scheduler only).
    fn hand_off(self, jobs: Vec<i64>) {
        if self == Runner::Scheduler && !jobs.is_empty() {
            if let Some(start) = HAND_OFF.get() {
                start(jobs);
            }
        }
    }

    /// Runs the actions with `take`: in the caller's transaction, or each
    /// in its own, with a `running` row in the run log while it runs (see
    /// `interrupted`) and its name in pg_stat_activity.
    fn act(self, actions: Vec<Action>, dry_run: bool, take: impl Fn(Vec<Action>) -> Vec<Outcome>) -> Vec<Outcome> {
        if self == Runner::Caller || actions.is_empty() {
            return take(actions);
        }
        let marks = !dry_run && crate::interrupted::supported();
        actions
            .into_iter()
            .map(|a| {
                report_activity(&format!("pg_upkeep job {}: {} {}", a.job_id, a.kind, a.target));
                crate::interrupted::around(marks, a, |a| {
                    if a.steps.iter().any(|s| s.top_level) {
                        return crate::executor::execute_with_top_level(a);
                    }
                    if a.steps.last().is_some_and(|s| s.batch.is_some()) {
                        return crate::executor::execute_in_batches(a);
                    }
                    self.step(|| take(vec![a])).pop().expect("one outcome per action")
                })
            })
            .collect()
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
fn refuse_on_standby(dry_run: bool) {
    // SAFETY: reads the backend's recovery state.
    if !dry_run && unsafe { pg_sys::RecoveryInProgress() } {
        crate::errors::bad_input(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "pg_upkeep cannot maintain tables on a hot standby",
            "Run it on the primary. On a standby the background workers wait until it is promoted.",
        );
    }
}

/// One part of a plan, as this runner goes through it.
enum Part<T> {
    /// Actions it takes, in order.
    Take(Vec<(Action, T)>),
    /// Problems, notes and skips, in order.
    Report(Vec<Reported>),
}

enum Reported {
    Problem(i64, ActionKind, String, Problem),
    Note(Outcome),
    Skipped(Outcome),
}

/// Runs one capability: the whole sequence (see the module comment).
pub fn drive<C: Capability>(mut cap: C, runner: Runner, dry_run: bool) -> Vec<Outcome> {
    refuse_on_standby(dry_run);
    let top_level = runner.top_level();
    let planned = runner.step(|| {
        if C::EXCLUSIVE && !dry_run {
            runner.exclude_others(C::KIND);
        }
        let facts = cap.facts(top_level)?;
        let plan = cap.plan(&facts, top_level);
        let worker_plan = (dry_run && !top_level).then(|| cap.plan(&facts, true));
        let (parts, handed) = split(plan.items, runner, worker_plan.map(|p| p.items));
        runner.hand_off(handed);
        Some((facts, parts, plan.checked))
    });
    let Some((facts, parts, mut recorded)) = planned else {
        if C::EXCLUSIVE && !dry_run {
            runner.step(|| runner.finish(C::KIND));
        }
        return Vec::new();
    };
    let mut outcomes = Vec::new();
    let mut tags = Vec::new();
    for part in parts {
        match part {
            Part::Take(actions) => {
                let (actions, mine): (Vec<Action>, Vec<C::Tag>) = actions.into_iter().unzip();
                recorded.extend(actions.iter().filter(|a| a.kind.records_run()).map(|a| a.job_id));
                let done = runner.act(actions, dry_run, |a| cap.take(&facts, a, dry_run));
                tags.extend(mine.into_iter().zip(outcomes.len()..));
                outcomes.extend(done);
            }
            Part::Report(items) => outcomes.extend(runner.step(|| report(items, dry_run, &mut recorded))),
        }
    }
    if !dry_run {
        let done = tags.into_iter().map(|(tag, i)| (tag, &outcomes[i])).collect();
        runner.step(|| cap.remember(facts, done));
        recorded.sort_unstable();
        recorded.dedup();
        runner.step(|| {
            crate::job_state::record_job_runs(&recorded, &outcomes);
            if C::EXCLUSIVE {
                runner.finish(C::KIND);
            }
        });
    }
    outcomes
}

/// The plan as this runner goes through it, and the jobs it hands to the
/// worker pool. In a dry run of a runner without the top level,
/// `worker_plan` is the same plan for a worker: where an action differs,
/// its detail says what a worker would run instead.
fn split<T>(items: Vec<Item<T>>, runner: Runner, worker_plan: Option<Vec<Item<T>>>) -> (Vec<Part<T>>, Vec<i64>) {
    let mut worker_scripts = worker_plan.into_iter().flatten().filter_map(|i| match i {
        Item::Act { action, .. } => Some(action.script()),
        _ => None,
    });
    let mut parts: Vec<Part<T>> = Vec::new();
    let mut handed = Vec::new();
    for item in items {
        let reported = match item {
            Item::Act { mut action, tag, worker } => {
                if let Some(instead) = worker_scripts.next().filter(|s| *s != action.script()) {
                    action.detail = format!("{}; a pg_upkeep worker runs instead:\n{instead}", action.detail);
                }
                if !runner.takes(&action) {
                    handed.extend(worker);
                    continue;
                }
                match parts.last_mut() {
                    Some(Part::Take(actions)) => actions.push((action, tag)),
                    _ => parts.push(Part::Take(vec![(action, tag)])),
                }
                continue;
            }
            Item::Problem { job_id, action, target, problem } => Reported::Problem(job_id, action, target, problem),
            Item::Note(o) => Reported::Note(o),
            Item::NeedsWorker { job_id, action, target, why } => {
                if runner == Runner::Scheduler {
                    handed.push(job_id);
                    continue;
                }
                Reported::Skipped(Outcome::noted(
                    job_id,
                    action,
                    target,
                    Status::Skipped,
                    format!("skipped: {why}"),
                    None,
                ))
            }
        };
        match parts.last_mut() {
            Some(Part::Report(items)) => items.push(reported),
            _ => parts.push(Part::Report(vec![reported])),
        }
    }
    (parts, handed)
}

/// Reports problems (in the run log) and notes; adds the jobs whose run
/// they are to `recorded`.
fn report(items: Vec<Reported>, dry_run: bool, recorded: &mut Vec<i64>) -> Vec<Outcome> {
    items
        .into_iter()
        .map(|item| match item {
            Reported::Problem(job_id, action, target, p) => {
                recorded.push(job_id);
                crate::executor::report_problems(vec![(job_id, action, target, p.message, p.hint)], dry_run)
                    .pop()
                    .expect("one outcome per problem")
            }
            Reported::Note(o) => {
                recorded.push(o.job_id);
                o
            }
            Reported::Skipped(o) => o,
        })
        .collect()
}
