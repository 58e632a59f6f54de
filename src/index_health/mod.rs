//! Index health: unused, duplicate, redundant, invalid and bloated
//! indexes, and foreign keys without an index, each with a recommendation
//! in plain words and the statement that fixes it. The SQL surface; thin
//! callers of facts and findings.

pub mod facts;
pub use upkeep_core::index_health::findings;
pub mod history;
pub mod reindex;

use crate::errors::bad_input;
use crate::errors::Found;
use crate::regclass::RegClass;
use findings::Finding;
use pgrx::prelude::*;

/// What index health reads, as the caller: every index, every foreign
/// key, and how much evidence "unused" needs. One read serves the findings
/// and the figures (at 50,000 indexes it is the costliest read there is).
pub struct Facts {
    pub indexes: Vec<findings::IndexFacts>,
    pub foreign_keys: Vec<findings::ForeignKey>,
    pub judgement: findings::Judgement,
}

pub fn read() -> Facts {
    Spi::connect(|client| {
        Ok::<_, String>(Facts {
            indexes: facts::indexes(client)?,
            foreign_keys: facts::foreign_keys(client)?,
            judgement: facts::judgement(),
        })
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not read the index catalogs: {e}"))
}

impl Facts {
    /// Every finding about indexes of at least `min_size_bytes`.
    pub fn findings(&self, min_size_bytes: i64) -> Vec<Finding> {
        findings::findings(&self.indexes, &self.foreign_keys, self.judgement, min_size_bytes)
    }
}

/// Every finding, read as the caller.
pub fn report(min_size_bytes: i64) -> Vec<Finding> {
    read().findings(min_size_bytes)
}

/// One row per index problem found; the view upkeep.index_health is this
/// with min_size_bytes 0.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn index_health_report(
    min_size_bytes: default!(Option<i64>, 0),
) -> TableIterator<
    'static,
    (
        name!(schema, String),
        name!(table, String),
        name!(index, Option<String>),
        name!(problem, String),
        name!(severity, String),
        name!(size_bytes, Option<i64>),
        name!(scans, Option<i64>),
        name!(bloat_bytes, Option<i64>),
        name!(bloat_ratio, Option<f64>),
        name!(recommendation, String),
        name!(fix_sql, String),
    ),
> {
    crate::errors::guarded("index_health_report", || {
        let min_size_bytes = crate::errors::given(
            min_size_bytes,
            "min_size_bytes",
            "index_health_report",
            "Pass a size in bytes (0, the default, for every index).",
        );
        if min_size_bytes < 0 {
            crate::errors::invalid(
                format!("min_size_bytes {min_size_bytes} must be 0 or more"),
                "Give the smallest index size worth reporting in bytes, e.g. 10485760 for 10 MB, or 0 for all.",
            );
        }
        TableIterator::new(report(min_size_bytes).into_iter().map(|f| {
            (
                f.table.schema,
                f.table.name,
                f.index,
                f.problem.to_string(),
                f.severity.to_string(),
                f.size_bytes,
                f.scans,
                f.bloat_bytes,
                f.bloat_ratio,
                f.recommendation,
                f.fix_sql,
            )
        }))
    })
}

/// The exact figures of one btree index from pgstattuple's pgstatindex()
/// (reads the whole index): its size, how full its leaf pages are, and the
/// bloat that implies against a fresh build at its fill factor.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)] // pgrx reads the column names from the signature
fn index_bloat_exact(
    index: Option<RegClass>,
) -> TableIterator<
    'static,
    (name!(size_bytes, i64), name!(avg_leaf_density, f64), name!(bloat_bytes, i64), name!(bloat_ratio, f64)),
> {
    crate::errors::guarded("index_bloat_exact", || {
        let Some(RegClass(oid)) = index else {
            bad_input(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "index must not be NULL",
                "Pass a btree index, e.g. index => 'public.orders_pkey'.",
            );
        };
        let schema = Spi::get_one::<String>(
            "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'",
        )
        .found()
        .unwrap_or_else(|| {
            bad_input(
                PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
                "exact index bloat needs the pgstattuple extension",
                "CREATE EXTENSION pgstattuple; (in postgresql-contrib). upkeep.index_health estimates bloat without it.",
            )
        });
        let is_btree = Spi::get_one_with_args::<bool>(
            "SELECT am.amname = 'btree' AND c.relkind = 'i' FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.oid = $1",
            &[oid.into()],
        )
        .found();
        if is_btree != Some(true) {
            bad_input(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("relation with OID {} is not a btree index", oid.to_u32()),
                "Pass a btree index (\\di lists them); partitioned indexes: pass one partition's index.",
            );
        }
        let row = Spi::connect(|client| {
            let sql = format!(
                "SELECT s.index_size, s.avg_leaf_density, s.leaf_pages, \
                        coalesce((SELECT substr(o, 12)::float8 FROM pg_class c, unnest(c.reloptions) o \
                                   WHERE c.oid = $1 AND o LIKE 'fillfactor=%'), 90) \
                   FROM {}.pgstatindex($1::regclass) s",
                crate::sql::ident(&schema)
            );
            let t = client.select(&sql, None, &[oid.into()])?.first();
            Ok::<_, pgrx::spi::SpiError>((t.get::<i64>(1)?, t.get::<f64>(2)?, t.get::<i64>(3)?, t.get::<f64>(4)?))
        })
        .unwrap_or_else(|e| error!("pgstatindex failed: {e}"));
        let (size, density, leaves, fillfactor) =
            (row.0.unwrap_or(0), row.1.unwrap_or(0.0), row.2.unwrap_or(0), row.3.unwrap_or(90.0));
        // A fresh build fills its leaves to the fill factor; everything else is bloat.
        let needed = ((leaves as f64 * density / fillfactor).ceil() * findings::PAGE).max(findings::PAGE);
        let bloat = (size as f64 - needed).max(0.0) as i64;
        TableIterator::once((size, density, bloat, ((size as f64 / needed) * 100.0).round() / 100.0))
    })
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
