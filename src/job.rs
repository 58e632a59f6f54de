//! A job: one policy, of one kind, as `upkeep.jobs` lists it. Finding a
//! job by its id or by the table it serves.

use crate::job_state::POLICIES;
use pgrx::prelude::*;

/// The kinds of job; each has its own lock, so a long run of one kind never
/// holds up another. A run of several kinds takes their locks in this
/// order (partitions, archive, materialized views, index health), so
/// concurrent runs never deadlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Partitions = 1,
    Archive = 2,
    Matviews = 3,
    IndexSnapshot = 4,
    Reindex = 5,
}

impl Kind {
    /// The table that holds this kind's policies, and the column naming
    /// the table a policy serves (none: one policy per database).
    pub fn policies(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::Partitions => ("upkeep.partition_policies", Some("parent")),
            Kind::Archive => ("upkeep.archive_policies", Some("source")),
            Kind::Matviews => ("upkeep.matview_policies", Some("matview")),
            Kind::IndexSnapshot => ("upkeep.index_snapshot_policy", None),
            Kind::Reindex => ("upkeep.reindex_policy", None),
        }
    }
}

/// Removes the policy of this kind that serves `table`, and what pg_upkeep
/// remembered of its job; the job's id, or `None` when there was none.
pub fn unregister(kind: Kind, table: pg_sys::Oid) -> Option<i64> {
    let (policies, Some(served)) = kind.policies() else { return None };
    let removed = Spi::connect_mut(|client| {
        let rows = client.update(
            &format!("DELETE FROM {policies} WHERE {served}::oid = $1 RETURNING job_id"),
            None,
            &[table.into()],
        )?;
        rows.into_iter().next().map(|r| r.get::<i64>(1)).transpose().map(Option::flatten)
    })
    .unwrap_or_else(|e: pgrx::spi::SpiError| error!("pg_upkeep could not remove the policy: {e}"));
    removed.inspect(|job| crate::job_state::forget(*job))
}

/// A job as its policy table has it.
pub struct Job {
    pub id: i64,
    pub kind: Kind,
    /// The table it serves (none for the index-health jobs), and its name.
    pub served: Option<pg_sys::Oid>,
    pub target: String,
}

/// The job, if it exists.
pub fn find(job_id: i64) -> Option<Job> {
    lookup("job_id = $1", job_id.into())
}

/// The job that serves a table, if any (a table has at most one: partition
/// policies need a partitioned table, archive policies a plain one).
pub fn serving(table: pg_sys::Oid) -> Option<Job> {
    lookup("served::oid = $1", table.into())
}

fn lookup(condition: &str, arg: pgrx::datum::DatumWithOid<'_>) -> Option<Job> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT job_id, kind, served::oid, coalesce(served::text, CASE kind WHEN 4 THEN 'index health snapshot' \
                        ELSE 'automatic reindex' END) FROM {POLICIES} p WHERE {condition}"
            ),
            None,
            &[arg],
        )?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok::<_, pgrx::spi::SpiError>((
                    r.get::<i64>(1)?,
                    r.get::<i32>(2)?,
                    r.get::<pg_sys::Oid>(3)?,
                    r.get::<String>(4)?,
                ))
            })
            .transpose()
    });
    match row {
        Ok(Some((Some(id), Some(kind), served, Some(target)))) => Some(Job {
            id,
            kind: match kind {
                2 => Kind::Archive,
                3 => Kind::Matviews,
                4 => Kind::IndexSnapshot,
                5 => Kind::Reindex,
                _ => Kind::Partitions,
            },
            served,
            target,
        }),
        Ok(_) => None,
        Err(e) => error!("pg_upkeep could not read its jobs: {e}"),
    }
}
