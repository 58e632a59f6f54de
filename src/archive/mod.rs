//! Archive moves: old data leaves the live tables. For partitioned tables,
//! partitions wholly older than the policy's retention go where its archive
//! mode says (`partitions.rs`); plain tables move their old rows into an
//! archive table in batches (`rows.rs`, `facts.rs`). The SQL surface of
//! row archiving is here; thin callers of facts, plan and the executor.

pub mod facts;

pub use upkeep_core::archive::rows;

use crate::actions::ActionKind;
use crate::driver::{Capability, Item, Plan};
use crate::errors::Found;
use crate::errors::{bad_input, invalid};
use crate::job::Kind;
use crate::ownership::require_owner;
use crate::problem::Problem;
use crate::regclass::RegClass;
use crate::sql::{shortened_name, QualifiedName};
use facts::Scope;
use pgrx::datum::Interval;
use pgrx::prelude::*;

fn load(scope: Scope) -> Vec<rows::RowFacts> {
    Spi::connect(|client| facts::load(client, scope))
        .unwrap_or_else(|e| error!("pg_upkeep could not read its archive policies: {e}"))
}

/// Row archiving as the driver runs it: each due policy is one action
/// (its batches), taken by the caller, or handed by the scheduler to a
/// `pg_upkeep worker`, which commits after each batch. A policy that no
/// longer fits its tables is recorded as failed, with the hint, and backs
/// off like any failing job.
pub struct RowArchive(pub Scope);

impl Capability for RowArchive {
    /// The policies in scope: fit ones in reference order, and refused ones.
    type Facts = (Vec<rows::RowFacts>, Vec<(rows::RowFacts, Problem)>);
    type Tag = ();
    const KIND: Kind = Kind::Archive;
    const EXCLUSIVE: bool = true;

    fn facts(&mut self, _top_level: bool) -> Option<Self::Facts> {
        let mut fit = Vec::new();
        let mut refused = Vec::new();
        for f in load(self.0) {
            match f.validate() {
                Ok(()) => fit.push(f),
                Err(p) => refused.push((f, p)),
            }
        }
        Some((rows::in_reference_order(fit), refused))
    }

    fn plan(&self, (fit, refused): &Self::Facts, _top_level: bool) -> Plan<()> {
        let problems = refused.iter().map(|(f, p)| Item::Problem {
            job_id: f.job_id,
            action: ActionKind::CheckPolicy,
            target: f.source.to_string(),
            problem: p.clone(),
        });
        // Each worker runs one job, side by side: a table whose rows are
        // referenced by another due table waits until that one's run has
        // ended (it stays due), so the rows it frees move then.
        let moves = fit.iter().map(|f| Item::Act {
            action: rows::plan(f),
            tag: (),
            worker: (!rows::waits_for(f, fit.iter())).then_some(f.job_id),
        });
        Plan { items: problems.chain(moves).collect(), checked: Vec::new() }
    }
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
    let parts = Spi::get_one_with_args::<Vec<String>>("SELECT parse_ident($1)", &[name.into()]).found();
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
        if !older_than.is_some_and(crate::errors::is_positive) {
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
        .found()
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
        if crate::job::unregister(Kind::Archive, oid).is_none() {
            invalid(
                format!("table {target} has no archive policy"),
                "See SELECT * FROM upkeep.archive_status; for the archived tables.",
            );
        }
    })
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
