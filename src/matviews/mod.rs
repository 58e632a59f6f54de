//! Materialized views: refreshed on a schedule, CONCURRENTLY so readers are
//! never blocked, only when something they read changed (`changes`), in
//! dependency order. The SQL surface is here; thin callers of facts, plan
//! and the executor.

pub mod changes;
pub mod facts;
pub mod reads;

pub use upkeep_core::matviews::plan;

use crate::actions::{Action, ActionKind};
use crate::driver::{drive, Capability, Item, Plan, Runner};
use crate::errors::Found;
use crate::errors::{bad_input, invalid};
use crate::executor;
use crate::job::{self, Kind};
use crate::outcome::{Outcome, Status};
use crate::ownership::require_owner;
use crate::problem::Problem;
use crate::regclass::RegClass;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use plan::{Decision, Planned, Selection, ViewFacts};

fn load(job: Option<i64>) -> Vec<ViewFacts> {
    Spi::connect(|client| facts::load(client, job))
        .unwrap_or_else(|e| error!("pg_upkeep could not read its materialized view policies: {e}"))
}

/// View refreshes as the driver runs them: the views the selection and
/// their changes call for, in dependency order, after starting (or
/// stopping) tracking the tables they read. A caller does everything in
/// its transaction; the scheduler tracks tables, records skips, and hands
/// each group of views with refreshes to a `pg_upkeep worker`, which
/// refreshes them in order, each in a transaction of its own.
pub struct Matviews {
    pub selection: Selection,
    /// Refresh whether or not anything changed.
    pub force: bool,
}

/// The managed views and the tracking no view needs any more.
pub struct Views {
    views: Vec<ViewFacts>,
    unneeded: Vec<(crate::sql::QualifiedName, String)>,
}

impl Capability for Matviews {
    type Facts = Views;
    type Tag = ();
    const KIND: Kind = Kind::Matviews;
    const EXCLUSIVE: bool = false;

    fn facts(&mut self, _top_level: bool) -> Option<Views> {
        let (views, unneeded) = Spi::connect(facts::load_all)
            .unwrap_or_else(|e| error!("pg_upkeep could not read its materialized view policies: {e}"));
        Some(Views { views, unneeded })
    }

    fn plan(&self, f: &Views, _top_level: bool) -> Plan<()> {
        let planned = plan::plan(&f.views, self.selection, self.force);
        let groups = plan::groups(&f.views);
        let tracking = plan::tracking_actions(&f.views, &planned, &f.unneeded).into_iter().map(|action| Item::Act {
            action,
            tag: (),
            worker: None,
        });
        let views = planned.into_iter().map(|Planned { view, decision }| {
            let v = &f.views[view];
            match decision {
                Decision::Refresh { reason, populate } => Item::Act {
                    action: plan::refresh_action(v, &reason, populate),
                    tag: (),
                    worker: Some(groups[&v.job_id]),
                },
                Decision::Skip(why) => Item::Note(Outcome::noted(
                    v.job_id,
                    ActionKind::RefreshMatview,
                    v.matview.to_string(),
                    Status::Skipped,
                    why,
                    None,
                )),
                Decision::Problem(p) => Item::Problem {
                    job_id: v.job_id,
                    action: ActionKind::CheckPolicy,
                    target: v.matview.to_string(),
                    problem: problem_text(v, p),
                },
            }
        });
        Plan { items: tracking.chain(views).collect(), checked: Vec::new() }
    }

    fn take(&self, f: &Views, actions: Vec<Action>, dry_run: bool) -> Vec<Outcome> {
        actions
            .into_iter()
            .map(|a| match f.views.iter().find(|v| a.kind == ActionKind::RefreshMatview && v.job_id == a.job_id) {
                Some(v) => refresh(v, a, dry_run),
                None => executor::execute(vec![a], dry_run).pop().expect("one outcome per action"),
            })
            .collect()
    }

    fn remember(&self, _: Views, _: Vec<((), &Outcome)>) {
        changes::prune();
    }
}

/// Refreshes one view, unless another session is refreshing it; then
/// remembers what the refresh saw: the snapshot, read in the same
/// statement as the relations and their tracking (so nothing that
/// committed in between can pass for seen). The refresh itself reads a
/// later snapshot, which sees at least as much.
fn refresh(v: &ViewFacts, action: Action, dry_run: bool) -> Outcome {
    if dry_run {
        return executor::execute(vec![action], true).pop().expect("one outcome per action");
    }
    if !crate::job_locks::try_lock_job(v.job_id) {
        return Outcome::noted(
            v.job_id,
            ActionKind::RefreshMatview,
            v.matview.to_string(),
            Status::Skipped,
            "skipped: another session is refreshing it right now".into(),
            None,
        );
    }
    let seen = load(Some(v.job_id)).pop();
    let done = executor::execute(vec![action], false).pop().expect("one outcome per action");
    if let (Status::Ok, Some(seen)) = (done.status, seen) {
        remember(&seen, done.seconds);
    }
    changes::forget_noted();
    done
}

/// Records a successful refresh: when, how long, and what it saw.
fn remember(seen: &ViewFacts, seconds: f64) {
    Spi::run_with_args(
        "INSERT INTO upkeep.matview_state AS s (job_id, refreshed_at, duration, snapshot, xid, cid, bases, fingerprint) \
         VALUES ($1, now(), make_interval(secs => $2), $3::pg_snapshot, $4::xid8, $5, $6, $7) \
         ON CONFLICT (job_id) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, duration = EXCLUDED.duration, \
            snapshot = EXCLUDED.snapshot, xid = EXCLUDED.xid, cid = EXCLUDED.cid, bases = EXCLUDED.bases, \
            fingerprint = EXCLUDED.fingerprint",
        &[
            seen.job_id.into(),
            seconds.into(),
            seen.snapshot.as_str().into(),
            seen.xid.clone().into(),
            seen.cid.into(),
            seen.bases.iter().map(|b| pg_sys::Oid::from(*b)).collect::<Vec<_>>().into(),
            seen.fingerprint.as_str().into(),
        ],
    )
    .unwrap_or_else(|e| error!("pg_upkeep could not record the refresh of {}: {e}", seen.matview));
}

/// The message and HINT for a view that cannot be refreshed as its policy says.
fn problem_text(v: &ViewFacts, problem: plan::Problem) -> Problem {
    match problem {
        plan::Problem::Dropped => Problem::new(
            format!("materialized view with OID {} no longer exists", v.matview.name),
            format!("It was dropped: SELECT upkeep.unmanage_matview({}); forgets its policy.", v.matview.name),
        ),
        plan::Problem::NoUniqueKey => Problem::new(
            format!("materialized view {} cannot be refreshed concurrently: it has no usable unique index", v.matview),
            unique_index_hint(v),
        ),
    }
}

/// The CREATE UNIQUE INDEX that makes CONCURRENTLY possible, on the view's
/// GROUP BY or DISTINCT columns, or else all its columns.
fn unique_index_hint(v: &ViewFacts) -> String {
    let oid =
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[v.matview.quoted().into()]).found();
    let (key, which) = match oid.map(|o| (facts::suggested_key(o), o)) {
        Some((Some(key), _)) => (key, "its GROUP BY/DISTINCT columns"),
        Some((None, o)) => (facts::columns(o), "all its columns; fewer that identify a row are better"),
        None => (Vec::new(), "the columns that identify a row"),
    };
    format!(
        "Create a unique index on plain columns, without WHERE: {} -- {which}. Or manage it with concurrently => false.",
        plan::unique_index_sql(&v.matview, &key)
    )
}

/// Registers (or updates) the policy of a materialized view. Returns the
/// job id. Checks everything first, so bad input changes nothing; the
/// first run tracks the tables it reads and refreshes it.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn manage_matview(
    matview: Option<RegClass>,
    every: default!(Option<Interval>, "'1 hour'"),
    concurrently: default!(Option<bool>, true),
    only_when_changed: default!(Option<bool>, true),
) -> i64 {
    crate::errors::guarded("manage_matview", || register(matview, every, concurrently, only_when_changed))
}

/// Registers (or updates) the policy of a materialized view and checks it
/// the way every run will: an ERROR with a HINT when it does not fit, which
/// also undoes the registration with the caller's (sub)transaction.
/// Returns the job.
pub fn register(
    matview: Option<RegClass>,
    every: Option<Interval>,
    concurrently: Option<bool>,
    only_when_changed: Option<bool>,
) -> i64 {
    let (oid, name) = require_owner(matview, "matview");
    let relkind =
        Spi::get_one_with_args::<String>("SELECT relkind::text FROM pg_class WHERE oid = $1", &[oid.into()]).found();
    if relkind.as_deref() != Some("m") {
        bad_input(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{name} is not a materialized view"),
            "manage_matview takes a materialized view (\\dm lists them). Tables: upkeep.manage_partitions() or upkeep.manage_archive().",
        );
    }
    if !every.is_some_and(crate::errors::is_positive) {
        invalid(
            format!("every for {name} must be a positive interval"),
            "Give the least time between two refreshes, e.g. every => '1 hour'.",
        );
    }
    let (Some(concurrently), Some(only_when_changed)) = (concurrently, only_when_changed) else {
        bad_input(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("concurrently and only_when_changed for {name} must not be NULL"),
            "Pass true or false, or leave them out (both default to true).",
        );
    };
    let job_id = Spi::get_one_with_args::<i64>(
        "INSERT INTO upkeep.matview_policies (matview, every, concurrent, only_when_changed) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (matview) DO UPDATE SET every = EXCLUDED.every, concurrent = EXCLUDED.concurrent, \
            only_when_changed = EXCLUDED.only_when_changed, updated_at = now() \
         RETURNING job_id",
        &[oid.into(), every.into(), concurrently.into(), only_when_changed.into()],
    )
    .found()
    .unwrap_or_else(|| error!("could not register the policy of {name}"));
    // The rule every run applies; here it is an ERROR, which also undoes
    // the registration above.
    if let Some(v) = load(Some(job_id)).pop() {
        if v.concurrently && !v.unique_key {
            bad_input(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("materialized view {name} cannot be refreshed concurrently: it has no usable unique index"),
                unique_index_hint(&v),
            );
        }
    }
    job_id
}

/// Forgets the policy of a materialized view. Refreshes and drops nothing;
/// the next run stops tracking tables no other managed view reads. The
/// policy of a view that was dropped can be removed by its OID.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn unmanage_matview(matview: Option<RegClass>) {
    crate::errors::guarded("unmanage_matview", || {
        let Some(RegClass(oid)) = matview else {
            bad_input(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "matview must not be NULL",
                "Pass the materialized view, e.g. matview => 'public.fund_analytics_mv'.",
            );
        };
        let exists =
            Spi::get_one_with_args::<bool>("SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = $1)", &[oid.into()])
                .found()
                .unwrap_or(false);
        let name = if exists { require_owner(matview, "matview").1 } else { format!("with OID {}", oid.to_u32()) };
        if job::unregister(Kind::Matviews, oid).is_none() {
            invalid(
                format!("materialized view {name} has no policy"),
                "See SELECT matview FROM upkeep.matview_status; for the managed views.",
            );
        }
    })
}

/// Refreshes what is due (or `matview` only, now), in dependency order,
/// in the caller's transaction. One row per view: refreshed, or skipped
/// and why. `force` refreshes whether or not anything changed (with no
/// view given: every enabled one).
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn refresh_matviews(
    matview: default!(Option<RegClass>, "NULL"),
    force: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(matview, String),
        name!(status, String),
        name!(reason, Option<String>),
        name!(seconds, f64),
        name!(error, Option<String>),
        name!(sql, Option<String>),
    ),
> {
    crate::errors::guarded("refresh_matviews", || {
        let force = crate::errors::given(
            force,
            "force",
            "refresh_matviews",
            "Pass true to refresh whether or not anything changed, false (the default) to refresh only what is due.",
        );
        let selection = match matview {
            None if force => Selection::All,
            None => Selection::Due,
            Some(m) => {
                let (oid, name) = require_owner(Some(m), "matview");
                match job::serving(oid) {
                    Some(job) if job.kind == Kind::Matviews => Selection::Job(job.id),
                    _ => invalid(
                        format!("materialized view {name} has no policy"),
                        format!("Register it first: SELECT upkeep.manage_matview({});", crate::sql::literal(&name)),
                    ),
                }
            }
        };
        let outcomes = drive(Matviews { selection, force }, Runner::Caller, false);
        TableIterator::new(
            outcomes
                .into_iter()
                .filter(|o| !matches!(o.action, ActionKind::TrackChanges | ActionKind::UntrackChanges))
                .map(|o| {
                    let status = match o.status {
                        Status::Ok => "refreshed".to_string(),
                        other => other.to_string(),
                    };
                    let opt = |s: String| if s.is_empty() { None } else { Some(s) };
                    (o.job_id, o.target, status, opt(o.detail), o.seconds, o.error, opt(o.sql))
                }),
        )
    })
}

/// The rows of the view upkeep.matview_status, without run history.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn matview_report() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(populated, bool),
        name!(concurrently_possible, bool),
        name!(changed_since, Option<bool>),
        name!(changed, Vec<String>),
        name!(unsure, Vec<String>),
        name!(status, String),
        name!(hint, Option<String>),
    ),
> {
    crate::errors::guarded("matview_report", || {
        let rows: Vec<_> = load(None)
            .into_iter()
            .map(|v| {
                let (status, hint) = plan::status(&v, || unique_index_hint(&v));
                let unsure: Vec<String> = v.unsure.iter().cloned().chain(plan::not_allowed(&v)).collect();
                (
                    v.job_id,
                    v.populated,
                    v.unique_key,
                    plan::changed_since(&v),
                    v.changed.clone(),
                    unsure,
                    status.to_string(),
                    hint,
                )
            })
            .collect();
        TableIterator::new(rows)
    })
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
