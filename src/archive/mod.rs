//! Archive moves: old data leaves the live tables. For partitioned tables,
//! partitions wholly older than the policy's retention go where its archive
//! mode says (`partitions.rs`); plain tables move their old rows into an
//! archive table in batches (`rows.rs`, `facts.rs`). The SQL surface of
//! row archiving is here; thin callers of facts, plan and the executor.

pub mod facts;
pub mod partitions;
pub mod rows;
pub mod target;

use crate::errors::{bad_input, invalid};
use crate::executor;
use crate::jobs::{Kind, Runner};
use crate::outcome::Outcome;
use crate::ownership::require_owner;
use crate::regclass::RegClass;
use crate::sql::{shortened_name, QualifiedName};
use facts::Scope;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use std::str::FromStr;

fn load(scope: Scope) -> Vec<rows::RowFacts> {
    Spi::connect(|client| facts::load(client, scope))
        .unwrap_or_else(|e| error!("pg_upkeep could not read its archive policies: {e}"))
}

/// Moves old rows for the row archive policies in scope: each due policy
/// is one action (its batches), run by the caller, or handed by the
/// scheduler to a `pg_upkeep worker`, which commits after each batch. A
/// policy that no longer fits its tables is recorded as failed, with the
/// hint, and backs off like any failing job.
pub fn maintain(runner: Runner, scope: Scope, dry_run: bool) -> Vec<Outcome> {
    crate::jobs::refuse_on_standby(dry_run);
    let (mut outcomes, actions) = runner.step(|| {
        if !dry_run {
            runner.exclude_others(Kind::Archive);
        }
        let mut fit = Vec::new();
        let mut problems = Vec::new();
        for f in load(scope) {
            match f.validate() {
                Ok(()) => fit.push(f),
                Err(p) => problems.push((f.job_id, "check_policy", f.source.to_string(), p.message, p.hint)),
            }
        }
        let reported = executor::report_problems(problems, dry_run);
        let fit = rows::in_reference_order(fit);
        let (mine, others): (Vec<_>, Vec<_>) = fit.iter().map(rows::plan).partition(|a| runner.takes(a));
        if runner == Runner::Scheduler {
            // Each worker runs one job, side by side: a table whose rows are
            // referenced by another due table waits until that one's run
            // has ended (it stays due), so the rows it frees move then.
            let ready = others
                .iter()
                .map(|a| a.job_id)
                .filter(|job| fit.iter().find(|f| f.job_id == *job).is_none_or(|f| !rows::waits_for(f, fit.iter())));
            crate::workers::pool::hand_off(ready.collect());
        }
        if !dry_run {
            runner.finish(Kind::Archive);
        }
        (reported, mine)
    });
    let acted: Vec<i64> = actions.iter().map(|a| a.job_id).chain(outcomes.iter().map(|o| o.job_id)).collect();
    outcomes.extend(runner.act(actions, dry_run));
    if !dry_run {
        runner.step(|| crate::job_state::record_job_runs(&acted, &outcomes));
    }
    outcomes
}

/// `"schema"."name"` of the archive table: the name as a DBA writes it
/// (quoted where needed; unqualified means the source's schema), or
/// `<source>_archive` beside the source.
fn archive_name(name: Option<&str>, source: pg_sys::Oid) -> String {
    let (schema, table) = Spi::get_two_with_args::<String, String>(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.oid = $1",
        &[source.into()],
    )
    .map(|(s, t)| (s.unwrap_or_default(), t.unwrap_or_default()))
    .unwrap_or_default();
    let Some(name) = name else {
        return QualifiedName::new(schema, shortened_name(&table, "archive")).quoted();
    };
    let hint = "Give a table name, optionally with its schema: 'archive.events' or '\"Cold\".\"Events\"'.";
    if name.trim().is_empty() {
        invalid(format!("archive_table {} is not a table name", crate::sql::literal(name)), hint);
    }
    let parts = Spi::get_one_with_args::<Vec<String>>("SELECT parse_ident($1)", &[name.into()]).ok().flatten();
    // Whether the schema may hold it is checked with the other rules.
    match parts.as_deref() {
        Some([t]) => QualifiedName::new(schema, t.clone()).quoted(),
        Some([s, t]) => QualifiedName::new(s.clone(), t.clone()).quoted(),
        _ => invalid(format!("archive_table {name} is not a table name"), hint),
    }
}

/// Registers (or updates) the row archive policy of a plain table: rows
/// whose `time_column` is older than `older_than` move into the archive
/// table in batches. Returns the job id. Checks everything first, so that
/// bad input changes nothing; moves nothing by itself.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn manage_archive(
    source: Option<RegClass>,
    time_column: Option<&str>,
    older_than: Option<Interval>,
    archive_table: default!(Option<&str>, "NULL"),
    batch_size: default!(Option<i32>, 10000),
) -> i64 {
    crate::errors::guarded("manage_archive", || {
        let (oid, target) = require_owner(source, "source");
        let Some(time_column) = time_column.filter(|c| !c.is_empty()) else {
            bad_input(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("time_column for {target} must be given"),
                "Name the date, timestamp or timestamptz column whose age decides what is archived.",
            );
        };
        let positive = older_than
            .and_then(|i| Spi::get_one_with_args::<bool>("SELECT $1 > interval '0'", &[i.into()]).ok().flatten());
        if positive != Some(true) {
            invalid(
                format!("older_than for {target} must be a positive interval"),
                "Say how old a row must be to leave, e.g. older_than => '90 days'.",
            );
        }
        let batch_size = batch_size.unwrap_or(10_000);
        if batch_size < 1 {
            invalid(
                format!("batch_size {batch_size} for {target} is not a positive number"),
                "Rows per batch (one statement, one transaction for a worker): 1000 to 50000 suits most tables.",
            );
        }
        let archive = archive_name(archive_table, oid);
        let job_id = Spi::get_one_with_args::<i64>(
            "INSERT INTO upkeep.archive_policies (source, time_column, older_than, archive_table, batch_size) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (source) DO UPDATE SET time_column = EXCLUDED.time_column, older_than = EXCLUDED.older_than, \
                archive_table = EXCLUDED.archive_table, batch_size = EXCLUDED.batch_size, updated_at = now() \
             RETURNING job_id",
            &[oid.into(), time_column.into(), older_than.into(), archive.into(), batch_size.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("could not register the archive policy of {target}"));
        // The rules every run applies; here a failure is an ERROR, which also
        // undoes the registration above.
        let Some(f) = load(Scope::Job(job_id)).into_iter().next() else {
            error!("the archive policy of {target} vanished while it was registered");
        };
        if let Err(p) = f.validate() {
            invalid(p.message, p.hint);
        }
        let missing: Vec<String> =
            f.missing_in_archive().iter().map(|c| format!("{} {}", c.name, c.type_name)).collect();
        if !missing.is_empty() {
            invalid(
                format!("archive {} does not have the shape of {target}: it lacks {}", f.archive_table(), missing.join(", ")),
                "Add the columns to the archive table (ALTER TABLE ... ADD COLUMN), or name another archive_table (a new name is created LIKE the source).",
            );
        }
        job_id
    })
}

/// Forgets the row archive policy of `source`. Moves and drops nothing.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn unmanage_archive(source: Option<RegClass>) {
    crate::errors::guarded("unmanage_archive", || {
        let (oid, target) = require_owner(source, "source");
        let removed = Spi::get_one_with_args::<i64>(
            "DELETE FROM upkeep.archive_policies WHERE source::oid = $1 RETURNING job_id",
            &[oid.into()],
        )
        .ok()
        .flatten();
        match removed {
            Some(job) => crate::job_state::forget(job),
            None => invalid(
                format!("table {target} has no archive policy"),
                "See SELECT * FROM upkeep.archive_status; for the archived tables.",
            ),
        }
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
        use crate::partitions::Selection;
        let dry_run = crate::errors::given(dry_run, "dry_run", "archive", crate::errors::DRY_RUN_HINT);
        let outcomes = match source {
            None => crate::jobs::run_due(Runner::Caller, dry_run),
            Some(s) => {
                let (oid, target) = require_owner(Some(s), "source");
                match crate::jobs::serving(oid) {
                    Some(job) if job.kind == Kind::Archive => maintain(Runner::Caller, Scope::Job(job.id), dry_run),
                    Some(_) => crate::partitions::maintain(Runner::Caller, Selection::Parent(oid), dry_run),
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
            (o.job_id, o.action, o.target, o.status.to_string(), o.rows, opt(o.detail), o.error, opt(o.sql))
        }))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Detach, then attach to `<parent>_archive` (same shape), still queryable.
    ArchiveTable,
    /// Detach and move to another schema.
    Schema(String),
    /// Detach and move to a cold tablespace.
    Tablespace(String),
    /// Detach only.
    Detach,
    /// Drop the partition.
    Drop,
}

impl FromStr for ArchiveMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let named = |rest: &str| {
            let rest = rest.trim();
            if rest.is_empty() {
                Err(())
            } else {
                Ok(rest.to_string())
            }
        };
        match s.trim() {
            "archive_table" => Ok(ArchiveMode::ArchiveTable),
            "detach" => Ok(ArchiveMode::Detach),
            "drop" => Ok(ArchiveMode::Drop),
            other => match other.split_once(':') {
                Some(("schema", name)) => named(name).map(ArchiveMode::Schema),
                Some(("tablespace", name)) => named(name).map(ArchiveMode::Tablespace),
                _ => Err(()),
            },
        }
    }
}

impl std::fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveMode::ArchiveTable => f.write_str("archive_table"),
            ArchiveMode::Schema(s) => write!(f, "schema:{s}"),
            ArchiveMode::Tablespace(t) => write!(f, "tablespace:{t}"),
            ArchiveMode::Detach => f.write_str("detach"),
            ArchiveMode::Drop => f.write_str("drop"),
        }
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("archive_table".parse(), Ok(ArchiveMode::ArchiveTable));
        assert_eq!("schema:cold".parse(), Ok(ArchiveMode::Schema("cold".into())));
        assert_eq!("tablespace: slow disk".parse(), Ok(ArchiveMode::Tablespace("slow disk".into())));
        assert_eq!("drop".parse(), Ok(ArchiveMode::Drop));
        assert!("schema:".parse::<ArchiveMode>().is_err());
        assert!("shred".parse::<ArchiveMode>().is_err());
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
