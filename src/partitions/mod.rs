//! Partition management: the SQL surface. Thin callers of facts, plan and
//! the executor.

pub mod facts;
pub mod state;

pub use upkeep_core::partitions::{health, plan, retention};

use crate::actions::ActionKind;
use crate::driver::{drive, Capability, Item, Plan, Runner};
use crate::errors::Found;
use crate::errors::{bad_input, invalid};
use crate::job::Kind;
use crate::outcome::{action_rows, Outcome, Status};
use crate::ownership::require_owner;
use crate::problem::Problem;
use crate::regclass::RegClass;
use crate::sql::QualifiedName;
use crate::statements::param;
use facts::{ParentFacts, PolicyProblem, Scope};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use retention::{self as archive_plan, ArchiveMode};
use std::collections::{BTreeMap, BTreeSet};

/// The transaction's `now()` as UTC microseconds since 1970.
pub fn now_micros() -> i64 {
    /// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
    const PG_EPOCH_OFFSET: i64 = 946_684_800_000_000;
    // SAFETY: reads the start time of the current transaction.
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() + PG_EPOCH_OFFSET }
}

fn load(scope: &Scope) -> (Vec<ParentFacts>, Vec<PolicyProblem>) {
    Spi::connect(|client| facts::load(client, scope))
        .unwrap_or_else(|e| error!("pg_upkeep could not read the partition catalogs: {e}"))
}

/// Plans every parent: partitions to create, each with a name no relation
/// in its schema has, then archive moves. Names are checked only when
/// something is due, so a run with nothing to do costs no query here.
fn plan_all(parents: &[ParentFacts], now: i64, top_level: bool) -> Vec<(crate::actions::Action, plan::Effect)> {
    let mut taken: BTreeSet<QualifiedName> = BTreeSet::new();
    let created = loop {
        let planned: Vec<_> = parents
            .iter()
            .flat_map(|f| {
                let in_schema =
                    taken.iter().filter(|q| q.schema == f.policy.parent.schema).map(|q| q.name.clone()).collect();
                plan::plan(f, now, &in_schema)
            })
            .collect();
        let wanted: Vec<QualifiedName> = planned.iter().map(|p| p.action.target.clone()).collect();
        if wanted.is_empty() {
            break planned;
        }
        let found = existing(&wanted);
        if found.is_subset(&taken) {
            break planned;
        }
        taken.extend(found);
    };
    // Archive tables that exist already are not created again.
    let archives: Vec<QualifiedName> = parents
        .iter()
        .filter(|f| f.policy.archive == ArchiveMode::ArchiveTable && !archive_plan::due(f, now).is_empty())
        .map(archive_plan::archive_table)
        .collect();
    let existing_archives = if archives.is_empty() { BTreeSet::new() } else { existing(&archives) };
    created
        .into_iter()
        .map(|p| (p.action, plan::Effect::Adds(p.partition)))
        .chain(parents.iter().filter_map(plan::sync_access).map(|a| (a, plan::Effect::Keeps)))
        .chain(
            parents
                .iter()
                .flat_map(|f| archive_plan::plan(f, now, &existing_archives, top_level))
                .map(|(action, name)| (action, plan::Effect::Removes(name))),
        )
        .collect()
}

/// Which of these relations exist.
fn existing(names: &[QualifiedName]) -> BTreeSet<QualifiedName> {
    Spi::connect(|client| facts::taken_names(client, names))
        .unwrap_or_else(|e| error!("pg_upkeep could not check relation names: {e}"))
}

/// Which policies a run looks at.
#[derive(Debug, Clone, Copy)]
pub enum Selection {
    /// Everything due whose schedule and back-off allow a run now.
    Due,
    /// What is due on one table, now (an explicit call).
    Parent(pg_sys::Oid),
    /// One job, checked in full now (run_job).
    Job(i64),
}

/// Partition maintenance as the driver runs it: creates what is due and
/// moves out what is past its retention. Concurrent runs (psql, pg_cron,
/// workers) queue up behind one another (`EXCLUSIVE`), so the second sees
/// the partitions the first made instead of racing it to create them. Only
/// policies that are due or have changed since their last check are read
/// in full.
pub struct Partitions {
    selection: Selection,
    /// Facts read already (a registration checks them first).
    read: Option<Checked>,
}

impl Partitions {
    pub fn new(selection: Selection) -> Self {
        Partitions { selection, read: None }
    }
}

/// The parents a run checks, the policies that no longer fit, and the time.
pub struct Checked {
    parents: Vec<ParentFacts>,
    problems: Vec<PolicyProblem>,
    now: i64,
}

impl Capability for Partitions {
    type Facts = Checked;
    type Tag = plan::Effect;
    const KIND: Kind = Kind::Partitions;
    const EXCLUSIVE: bool = true;

    fn facts(&mut self, _top_level: bool) -> Option<Checked> {
        if let Some(read) = self.read.take() {
            return Some(read);
        }
        let jobs = match self.selection {
            Selection::Due => state::stale_jobs(None, false),
            Selection::Parent(oid) => state::stale_jobs(Some(oid), true),
            Selection::Job(id) => vec![id],
        };
        if jobs.is_empty() {
            return None;
        }
        let (parents, problems) = load(&Scope::Jobs(jobs));
        Some(Checked { parents, problems, now: now_micros() })
    }

    fn plan(&self, c: &Checked, top_level: bool) -> Plan<plan::Effect> {
        let now = c.now;
        let problems = c.problems.iter().map(|p| Item::Problem {
            job_id: p.job_id,
            action: ActionKind::CheckPolicy,
            target: p.target.clone(),
            problem: Problem::new(p.message.clone(), p.hint.clone()),
        });
        let refused =
            c.parents.iter().flat_map(|f| archive_plan::refused(f, now)).map(|(job_id, target, message, hint)| {
                Item::Problem {
                    job_id,
                    action: ActionKind::ArchivePartition,
                    target,
                    problem: Problem::new(message, hint),
                }
            });
        let actions = plan_all(&c.parents, now, top_level).into_iter().map(|(action, tag)| Item::Act {
            worker: Some(action.job_id),
            action,
            tag,
        });
        Plan {
            items: problems.chain(refused).chain(actions).collect(),
            checked: c.parents.iter().map(|f| f.policy.job_id).chain(c.problems.iter().map(|p| p.job_id)).collect(),
        }
    }

    /// What this run did, applied to what it read: the catalog as it now
    /// is, and when each parent is next due.
    fn remember(&self, c: Checked, done: Vec<(plan::Effect, &Outcome)>) {
        let mut changed: BTreeMap<i64, Vec<plan::Effect>> = BTreeMap::new();
        for (e, o) in done.into_iter().filter(|(_, o)| o.status == Status::Ok) {
            changed.entry(o.job_id).or_default().push(e);
        }
        let checked: Vec<ParentFacts> = c
            .parents
            .into_iter()
            .map(|f| {
                let mine = changed.remove(&f.policy.job_id).unwrap_or_default();
                plan::apply(f, mine)
            })
            .collect();
        state::remember(&checked, c.now);
    }
}

pub fn managed_job(oid: pg_sys::Oid) -> Option<i64> {
    Spi::get_one_with_args::<i64>("SELECT job_id FROM upkeep.partition_policies WHERE parent::oid = $1", &[oid.into()])
        .found()
}

/// Checks, before anything is written, the arguments the policy table would
/// otherwise refuse with a bare constraint error. Everything else about the
/// policy is checked by the rules maintenance applies too
/// (`facts::RawParent::validate`), right after the registration.
fn check_policy_arguments(target: &str, control: Option<&str>, premake: i32, retention: Option<&Interval>) {
    if control.is_none_or(|c| c.is_empty()) {
        bad_input(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("control column for table {target} must be given"),
            "Name the date, timestamp or timestamptz column the table is partitioned by.",
        );
    }
    if premake < 0 || premake > plan::MAX_PERIODS as i32 {
        invalid(
            format!("premake {premake} for table {target} is out of range"),
            format!("premake counts future partitions to keep ready: 0 to {}.", plan::MAX_PERIODS),
        );
    }
    if let Some(r) = retention {
        if !crate::errors::is_positive(*r) {
            invalid(
                format!("retention {r} for table {target} is not a positive interval"),
                "Give how long partitions stay live, e.g. retention => '24 months', or NULL to keep them forever.",
            );
        }
    }
}

const UPSERT_SQL: &str = "INSERT INTO upkeep.partition_policies AS p \
       (parent, control, granularity, premake, retention, archive, time_zone, start_at) \
     VALUES ($1::oid::regclass, $2, lower($3), $4, $5, $6, $7, $8) \
     ON CONFLICT (parent) DO UPDATE SET control = EXCLUDED.control, granularity = EXCLUDED.granularity, \
       premake = EXCLUDED.premake, retention = EXCLUDED.retention, archive = EXCLUDED.archive, \
       time_zone = EXCLUDED.time_zone, start_at = EXCLUDED.start_at, updated_at = now()";

/// A partition policy as `manage_partitions` takes it.
pub struct PolicyArgs<'a> {
    pub control: Option<&'a str>,
    pub granularity: &'a str,
    pub premake: i32,
    pub retention: Option<Interval>,
    pub archive: &'a str,
    pub time_zone: &'a str,
    pub start_at: Option<TimestampWithTimeZone>,
}

/// Registers (or updates) the policy on `oid` and checks the table the way
/// maintenance will: an ERROR with a HINT when it does not fit, which also
/// undoes the registration with the caller's (sub)transaction.
pub fn register(oid: pg_sys::Oid, target: &str, policy: &PolicyArgs) {
    register_checked(oid, target, policy);
}

fn register_checked(oid: pg_sys::Oid, target: &str, policy: &PolicyArgs) -> Checked {
    check_policy_arguments(target, policy.control, policy.premake, policy.retention.as_ref());
    let types = [
        param(BuiltinOid::OIDOID),
        param(BuiltinOid::TEXTOID),
        param(BuiltinOid::TEXTOID),
        param(BuiltinOid::INT4OID),
        param(BuiltinOid::INTERVALOID),
        param(BuiltinOid::TEXTOID),
        param(BuiltinOid::TEXTOID),
        param(BuiltinOid::TIMESTAMPTZOID),
    ];
    let args = [
        oid.into(),
        policy.control.into(),
        policy.granularity.into(),
        policy.premake.into(),
        policy.retention.into(),
        policy.archive.into(),
        policy.time_zone.into(),
        policy.start_at.into(),
    ];
    Spi::connect_mut(|client| crate::statements::update(client, UPSERT_SQL, &types, &args))
        .unwrap_or_else(|e| error!("could not register the partition policy of {target}: {e}"));

    // The catalog checks are the ones maintenance applies later; here a
    // failure is an ERROR, which also undoes the registration above.
    Runner::Caller.exclude_others(Kind::Partitions);
    let (parents, problems) = load(&Scope::Parent(oid));
    if let Some(p) = problems.into_iter().next() {
        bad_input(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, p.message, p.hint);
    }
    if let Some(p) = parents.iter().find_map(|f| f.archive_refused.as_ref()) {
        invalid(p.message.clone(), p.hint.clone());
    }
    Checked { parents, problems: Vec::new(), now: now_micros() }
}

/// Registers (or updates) the partition policy of `parent` and creates what
/// is due at once. Returns the partitions it created.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::too_many_arguments)]
fn manage_partitions(
    parent: Option<RegClass>,
    control: Option<&str>,
    granularity: default!(Option<&str>, "'month'"),
    premake: default!(Option<i32>, 3),
    retention: default!(Option<Interval>, "NULL"),
    archive: default!(Option<&str>, "'archive_table'"),
    time_zone: default!(Option<&str>, "'UTC'"),
    start_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> SetOfIterator<'static, String> {
    crate::errors::guarded("manage_partitions", || {
        let (oid, target) = require_owner(parent, "parent");
        let granularity = granularity.unwrap_or("month");
        let premake = premake.unwrap_or(3);
        let archive = archive.unwrap_or("archive_table");
        let time_zone = time_zone.unwrap_or("UTC");
        if start_at.is_some_and(|s| s.is_infinity() || s.is_neg_infinity()) {
            invalid(
                format!("start_at {} for table {target} is not a point in time", start_at.unwrap()),
                "Give when the first partition starts, e.g. start_at => '2024-01-01', or leave it NULL to start at the current period.",
            );
        }

        let policy = PolicyArgs { control, granularity, premake, retention, archive, time_zone, start_at };
        let read = register_checked(oid, &target, &policy);
        let created = drive(Partitions { selection: Selection::Parent(oid), read: Some(read) }, Runner::Caller, false)
            .into_iter()
            .filter_map(|o| match o.status {
                Status::Ok => Some(o.target),
                _ => {
                    warning!(
                        "pg_upkeep: {} of {} failed: {} (recorded in upkeep.job_runs; retried on the next run)",
                        o.action,
                        o.target,
                        o.error.unwrap_or_default()
                    );
                    None
                }
            })
            .collect::<Vec<_>>();
        SetOfIterator::new(created)
    })
}

/// Forgets the partition policy of `parent`. Touches no table.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn unmanage_partitions(parent: Option<RegClass>) {
    crate::errors::guarded("unmanage_partitions", || {
        let (oid, target) = require_owner(parent, "parent");
        if crate::job::unregister(Kind::Partitions, oid).is_none() {
            invalid(
                format!("table {target} has no partition policy"),
                "See SELECT * FROM upkeep.jobs WHERE kind = 'partitions'; for the managed tables.",
            );
        }
    })
}

/// Creates the partitions that are due (all policies when `parent` is NULL).
/// One row per action; with `dry_run` the rows show what would be done.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn create_partitions(
    parent: default!(Option<RegClass>, "NULL"),
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
    crate::errors::guarded("create_partitions", || {
        let dry_run = crate::errors::given(dry_run, "dry_run", "create_partitions", crate::errors::DRY_RUN_HINT);
        let oid = parent.map(|p| {
            let (oid, target) = require_owner(Some(p), "parent");
            if managed_job(oid).is_none() {
                invalid(
                    format!("table {target} has no partition policy"),
                    format!(
                        "Register it first: SELECT upkeep.manage_partitions({}, '<column>');",
                        crate::sql::literal(&target)
                    ),
                );
            }
            oid
        });
        let selection = oid.map_or(Selection::Due, Selection::Parent);
        action_rows(drive(Partitions::new(selection), Runner::Caller, dry_run))
    })
}

/// Every partition of every managed parent (the rows of `upkeep.partitions`).
/// No SET clause: PostgreSQL would apply it again for every row returned
/// (40% of the time at 24,000 partitions); the catalog reads pin the
/// search path themselves.
#[pg_extern(stable)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn partition_report() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(parent, String),
        name!(partition, String),
        name!(lower_bound, Option<String>),
        name!(upper_bound, Option<String>),
        name!(state, String),
    ),
> {
    crate::errors::guarded("partition_report", || {
        let rows = {
            let _path = crate::settings::Local::set(c"search_path", c"pg_catalog, pg_temp");
            calendar(None)
        };
        TableIterator::new(
            rows.into_iter().map(|r| (r.job_id, r.parent, r.partition, r.lower_bound, r.upper_bound, r.state)),
        )
    })
}

/// One partition as the views show it: bounds in the policy's time zone,
/// state past, current, future or default.
pub struct PartitionRow {
    pub job_id: i64,
    pub parent: String,
    pub partition: String,
    pub lower_bound: Option<String>,
    pub upper_bound: Option<String>,
    pub state: String,
}

/// The partitions of every managed parent, or of these jobs' parents.
pub fn calendar(jobs: Option<Vec<i64>>) -> Vec<PartitionRow> {
    let now = now_micros();
    let (parents, _) = load(&Scope::Report(jobs));
    parents
        .iter()
        .flat_map(|f| {
            let cal = f.policy.calendar;
            let current = cal.bound_of(cal.period_start(cal.civil_date_of_instant(now)));
            let next = cal.bound_of(cal.next_start(cal.period_start(cal.civil_date_of_instant(now))));
            f.partitions.iter().map(move |p| {
                let (lower_bound, upper_bound, state) = match p.range {
                    facts::Range::Default => (None, None, "default"),
                    facts::Range::Bounded { lower, upper } => {
                        let state = match (lower, upper) {
                            (_, Some(u)) if u <= current => "past",
                            (Some(l), _) if l >= next => "future",
                            _ => "current",
                        };
                        (
                            Some(lower.map_or("MINVALUE".to_string(), |b| cal.display(b))),
                            Some(upper.map_or("MAXVALUE".to_string(), |b| cal.display(b))),
                            state,
                        )
                    }
                };
                PartitionRow {
                    job_id: f.policy.job_id,
                    parent: f.policy.parent.quoted(),
                    partition: p.name.quoted(),
                    lower_bound,
                    upper_bound,
                    state: state.to_string(),
                }
            })
        })
        .collect()
}

/// Per managed parent: coverage, holes, rows in DEFAULT, status and a hint
/// (the rows of `upkeep.partition_health`).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn partition_health_report() -> TableIterator<
    'static,
    (
        name!(job_id, i64),
        name!(parent, String),
        name!(granularity, String),
        name!(premake, i32),
        name!(partitions, i32),
        name!(covered_until, Option<String>),
        name!(future_partitions, i32),
        name!(gaps, i32),
        name!(due, i32),
        name!(archive_due, i32),
        name!(default_partition, Option<String>),
        name!(rows_in_default, Option<i64>),
        name!(status, String),
        name!(hint, Option<String>),
    ),
> {
    crate::errors::guarded("partition_health_report", || {
        let now = now_micros();
        let (parents, problems) = load(&Scope::Report(None));
        let mut rows: Vec<_> = parents
            .iter()
            .map(|f| {
                let rows_in_default = f.default_partition.as_ref().map(|d| {
                    Spi::get_one::<i64>(&format!("SELECT count(*) FROM ONLY {}", d.quoted())).found().unwrap_or(0)
                });
                let h = health::assess(f, now, rows_in_default.unwrap_or(0));
                let cal = f.policy.calendar;
                (
                    f.policy.job_id,
                    f.policy.parent.quoted(),
                    cal.granularity.to_string(),
                    f.policy.premake as i32,
                    f.partitions.iter().filter(|p| p.range != facts::Range::Default).count() as i32,
                    h.covered_until.map(|b| cal.display(b)),
                    h.future_partitions as i32,
                    h.gaps as i32,
                    h.due as i32,
                    h.archive_due as i32,
                    f.default_partition.as_ref().map(QualifiedName::quoted),
                    rows_in_default,
                    h.status.to_string(),
                    h.hint,
                )
            })
            .collect();
        rows.extend(problems.into_iter().map(|p| {
            (
                p.job_id,
                p.target,
                String::new(),
                0,
                0,
                None,
                0,
                0,
                0,
                0,
                None,
                None,
                "error".to_string(),
                Some(format!("{} {}", p.message, p.hint)),
            )
        }));
        TableIterator::new(rows)
    })
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
