//! Index health over time: `upkeep.snapshot_index_health()` appends each
//! index's size, scans and estimated bloat to `upkeep.index_health_history`
//! (kept 13 months); a job runs it, daily by default.

use super::findings::{expected_pages, PAGE};
use crate::actions::{Action, ActionKind, Step};
use crate::driver::{Capability, Item, Plan};
use crate::job::Kind;
use crate::sql::QualifiedName;
use pgrx::prelude::*;

/// The figures of every index as rows of the history, for the current
/// time: (schema, table, index, size, scans, bloat bytes, bloat ratio).
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn index_health_figures() -> TableIterator<
    'static,
    (
        name!(schema, String),
        name!(table, String),
        name!(index, String),
        name!(size_bytes, i64),
        name!(scans, i64),
        name!(bloat_bytes, Option<i64>),
        name!(bloat_ratio, Option<f64>),
    ),
> {
    crate::errors::guarded("index_health_figures", || {
        let indexes =
            Spi::connect(super::facts::indexes).unwrap_or_else(|e| error!("pg_upkeep could not read the indexes: {e}"));
        TableIterator::new(
            figures(indexes)
                .map(|f| (f.table.schema, f.table.name, f.index, f.size_bytes, f.scans, f.bloat_bytes, f.bloat_ratio)),
        )
    })
}

/// One index's figures: what a snapshot records.
pub struct Figures {
    pub table: QualifiedName,
    pub index: String,
    pub size_bytes: i64,
    pub scans: i64,
    pub bloat_bytes: Option<i64>,
    pub bloat_ratio: Option<f64>,
}

/// The figures of every index that has storage (not partitioned ones).
pub fn figures(indexes: Vec<super::findings::IndexFacts>) -> impl Iterator<Item = Figures> {
    indexes.into_iter().filter(|i| !i.partitioned).map(|i| {
        let expected = expected_pages(&i);
        Figures {
            bloat_bytes: expected.map(|e| (((i.pages as f64 - e) * PAGE) as i64).max(0)),
            bloat_ratio: expected.map(|e| ((i.pages as f64 / e) * 100.0).round() / 100.0),
            table: i.table,
            index: i.name,
            size_bytes: i.size_bytes,
            scans: i.scans,
        }
    })
}

const APPEND_SQL: &str = "INSERT INTO upkeep.index_health_history \
    (schema, \"table\", index, size_bytes, scans, bloat_bytes, bloat_ratio) \
    SELECT * FROM upkeep.index_health_figures()";
const PRUNE_SQL: &str = "DELETE FROM upkeep.index_health_history WHERE captured_at < now() - interval '13 months'";

/// What this snapshot saw of each index, for the evidence behind
/// "unused": a scan ends an index's watch without scans, the first
/// snapshot without one starts it; dropped indexes are forgotten.
const WATCH_SQL: &str = "\
WITH seen AS (INSERT INTO upkeep.index_watch AS w (index_oid, unused_since) \
              SELECT s.indexrelid, CASE WHEN coalesce(s.idx_scan, 0) = 0 THEN now() END FROM pg_stat_user_indexes s \
              ON CONFLICT (index_oid) DO UPDATE \
                 SET unused_since = CASE WHEN EXCLUDED.unused_since IS NOT NULL THEN coalesce(w.unused_since, EXCLUDED.unused_since) END) \
DELETE FROM upkeep.index_watch w WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = w.index_oid)";

/// Appends the current figures of every index to the history; returns how
/// many indexes it recorded.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn snapshot_index_health() -> i64 {
    crate::errors::guarded("snapshot_index_health", || {
        crate::ownership::require_database_owner("index health snapshot");
        Spi::connect_mut(|client| {
            let n = client.update(APPEND_SQL, None, &[]).map_err(|e| e.to_string())?.len() as i64;
            for sql in after_append(client)? {
                client.update(sql, None, &[]).map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(n)
        })
        .unwrap_or_else(|e| error!("pg_upkeep could not record index health: {e}"))
    })
}

/// What a snapshot runs after appending the figures: the pruning, and the
/// watch when the installed SQL has it (0.4.0 on).
fn after_append(client: &pgrx::spi::SpiClient<'_>) -> Result<Vec<&'static str>, String> {
    let watch = super::facts::watching(client)?.then_some(WATCH_SQL);
    Ok(std::iter::once(PRUNE_SQL).chain(watch).collect())
}

/// The snapshot job, when it is due (or `$1`, explicit) and the caller may
/// manage it.
static DUE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT p.job_id, current_user::text FROM upkeep.index_snapshot_policy p \
           LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
          WHERE ($1 OR (p.enabled AND (j.next_run IS NULL OR j.next_run <= now()))) AND {}",
        crate::ownership::MAY_MANAGE_DATABASE_SQL
    )
});

/// The snapshot job as the driver runs it, when it is due (or
/// `explicit`ly): one action through the executor, so it is recorded like
/// any other.
pub struct Snapshot {
    pub explicit: bool,
}

/// The due job, the role it runs as, and what follows the append.
pub struct Due {
    job_id: i64,
    role: String,
    after: Vec<&'static str>,
}

impl Capability for Snapshot {
    type Facts = Due;
    type Tag = ();
    const KIND: Kind = Kind::IndexSnapshot;
    const EXCLUSIVE: bool = false;

    fn facts(&mut self, _top_level: bool) -> Option<Due> {
        let after = Spi::connect(after_append).unwrap_or_else(|e| error!("pg_upkeep could not read its tables: {e}"));
        let due = Spi::connect(|client| {
            let types = [crate::statements::param(pgrx::pg_sys::BuiltinOid::BOOLOID)];
            let _generic = crate::statements::generic_plan();
            crate::statements::select(client, DUE_SQL.as_str(), &types, &[self.explicit.into()], |rows| {
                rows.into_iter()
                    .next()
                    .map(|r| Ok((r.get::<i64>(1)?, r.get::<String>(2)?)))
                    .transpose()
                    .map_err(|e: pgrx::spi::SpiError| e.to_string())
            })
        })
        .unwrap_or_else(|e| error!("pg_upkeep could not read its index snapshot policy: {e}"));
        let (Some(job_id), Some(role)) = due? else { return None };
        Some(Due { job_id, role, after })
    }

    fn plan(&self, due: &Due, _top_level: bool) -> Plan<()> {
        let action = Action {
            job_id: due.job_id,
            kind: ActionKind::SnapshotIndexHealth,
            target: QualifiedName::new("upkeep", "index_health_history"),
            detail: "figures of every index".into(),
            run_as: due.role.clone(),
            steps: std::iter::once(Step::counting(APPEND_SQL.into(), "indexes recorded"))
                .chain(due.after.iter().map(|sql| Step::new(sql.to_string())))
                .collect(),
        };
        Plan { items: vec![Item::Act { action, tag: (), worker: None }], checked: Vec::new() }
    }
}
