//! The catalog reads of index health: every index of the database (outside
//! the system schemas) with its definition, size, scans and the statistics
//! its size estimate needs; every foreign key and whether an index leads
//! with its columns; how old the scan counts are. Three statements.

use super::findings::{self, ColumnStats, ForeignKey, IndexFacts, Judgement, KeyColumn};
use crate::sql::QualifiedName;
use pgrx::spi::SpiClient;
use std::collections::HashMap;

/// Schemas never reported: the system's and pg_upkeep's own.
const SKIPPED: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'upkeep') \
                       AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

/// Days the snapshots have seen the index without a scan, counted from
/// the later of the first such snapshot and the database's last statistics
/// reset (scans before a reset are unknown). Without upkeep.index_watch
/// (the SQL objects of 0.3.0, before ALTER EXTENSION UPDATE): no evidence.
/// A join, not a lookup per index: at 50,000 indexes the lookups cost a
/// tenth of a second.
const UNUSED_DAYS: &str = "extract(epoch FROM now() - greatest(w.unused_since, \
        (SELECT d.stats_reset FROM pg_stat_database d WHERE d.datname = current_database())))::float8 / 86400";
const WATCH_JOIN: &str = "LEFT JOIN upkeep.index_watch w ON w.index_oid = ix.indexrelid AND w.unused_since IS NOT NULL";

/// Days since the index's last scan: PostgreSQL 16 on records when it was
/// (pg_stat_all_indexes.last_idx_scan); 15 does not.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
const LAST_SCAN_DAYS: &str = "NULL::float8";
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
const LAST_SCAN_DAYS: &str = "extract(epoch FROM now() - pg_stat_get_lastscan(ix.indexrelid))::float8 / 86400";

/// Every index, one row each, read by position in `indexes`. Per index
/// the query does as little as it can: at 50,000 indexes each correlated
/// subquery or text conversion costs a tenth of a second. Names of plain
/// key columns come from the catalog cache (`column_name`), sizes from the
/// files (`disk`), reloptions are parsed in Rust; only expression columns
/// need the deparser, which opens and locks the table.
fn indexes_sql(watched: bool) -> String {
    let (unused_days, watch_join) = if watched { (UNUSED_DAYS, WATCH_JOIN) } else { ("NULL::float8", "") };
    format!(
        "\
WITH ix AS ( \
  SELECT i.*, n.nspname, t.relname AS table_name, c.relname AS index_name, c.relkind AS index_kind, c.relam, \
         c.reloptions, c.reltuples AS index_tuples, t.reltuples AS table_tuples, t.relpages AS table_pages, \
         c.relpersistence AS index_persistence, c.relfilenode AS index_file, c.reltablespace AS index_space \
    FROM pg_index i \
    JOIN pg_class c ON c.oid = i.indexrelid \
    JOIN pg_class t ON t.oid = i.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
   WHERE {SKIPPED}) \
SELECT ix.indexrelid::int8, ix.nspname::text, ix.table_name::text, ix.index_name::text, am.amname::text, \
       ix.index_kind = 'I', h.inhparent::int8, ix.indisunique, ix.indisprimary, \
       ix.indisprimary OR ix.indisexclusion OR ix.indisreplident \
         OR ix.indexrelid IN (SELECT k.conindid FROM pg_constraint k WHERE k.contype IN ('p', 'u', 'x')), \
       ix.indisvalid, \
       ix.indrelid IN (SELECT p.relid FROM pg_stat_progress_create_index p), \
       ix.indnkeyatts::int4, ix.indkey::int2[], ix.indclass::oid[], ix.indcollation::oid[], ix.indoption::int2[], \
       CASE WHEN 0 = ANY (ix.indkey::int2[]) \
            THEN ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnatts) k) END, \
       pg_get_expr(ix.indpred, ix.indrelid, true), \
       pg_stat_get_numscans(ix.indexrelid), {unused_days}, {LAST_SCAN_DAYS}, \
       CASE WHEN ix.indpred IS NULL THEN ix.table_tuples ELSE ix.index_tuples END::float8, \
       ix.reloptions::text[], \
       ix.indclass::oid[] && (SELECT coalesce(array_agg(o.oid), '{{}}') FROM pg_opclass o \
                               WHERE NOT EXISTS (SELECT 1 FROM pg_amproc p \
                                                  WHERE p.amprocfamily = o.opcfamily AND p.amprocnum = 4)), \
       ix.indrelid::int8, ix.table_tuples::float8, ix.table_pages::float8, \
       ix.index_kind::text, ix.index_persistence::text, ix.index_file::int8, ix.index_space::int8 \
  FROM ix \
  JOIN pg_am am ON am.oid = ix.relam \
  LEFT JOIN pg_inherits h ON h.inhrelid = ix.indexrelid \
  {watch_join} \
 ORDER BY ix.indexrelid"
    )
}

fn foreign_keys_sql() -> String {
    format!(
        "\
SELECT n.nspname::text AS schema, t.relname::text AS table, t.relkind = 'p' AS partitioned, k.conname::text AS constraint, \
       k.confrelid::regclass::text AS references, \
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(attnum, o) \
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.o) AS columns, \
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = k.conrelid AND i.indisvalid AND i.indpred IS NULL \
                  AND i.indnkeyatts >= cardinality(k.conkey) \
                  AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] @> k.conkey \
                  AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(k.conkey)] <@ k.conkey) AS indexed, \
       ARRAY(SELECT pn.nspname::text FROM pg_partition_tree(t.oid) p JOIN pg_class pc ON pc.oid = p.relid \
               JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE p.isleaf AND t.relkind = 'p' ORDER BY p.relid) AS part_schemas, \
       ARRAY(SELECT pc.relname::text FROM pg_partition_tree(t.oid) p JOIN pg_class pc ON pc.oid = p.relid \
              WHERE p.isleaf AND t.relkind = 'p' ORDER BY p.relid) AS part_names \
  FROM pg_constraint k \
  JOIN pg_class t ON t.oid = k.conrelid \
  JOIN pg_namespace n ON n.oid = t.relnamespace \
 WHERE k.contype = 'f' AND k.conparentid = 0 AND {SKIPPED} \
 ORDER BY 1, 2, 4"
    )
}

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// Column statistics (`pg_stats`, so only of tables the caller may read),
/// by relation and column number. Read once and looked up here: joining
/// pg_stats by name to every index column cost more than all the rest.
const COLUMN_STATS_SQL: &str = "\
SELECT c.oid::int8, a.attnum::int4, s.avg_width::float8, s.null_frac::float8, s.n_distinct::float8, s.inherited, \
       a.attlen < 0 \
  FROM pg_stats s \
  JOIN pg_namespace n ON n.nspname = s.schemaname \
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename \
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname";

#[derive(Debug, Clone, Copy)]
struct Stat {
    column: ColumnStats,
    n_distinct: f64,
}

fn column_stats(client: &SpiClient<'_>) -> Result<HashMap<(u32, i32), Stat>, String> {
    let mut out = HashMap::new();
    for row in client.select(COLUMN_STATS_SQL, None, &[]).map_err(err)? {
        let key = (
            row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32,
            row.get::<i32>(2).map_err(err)?.unwrap_or_default(),
        );
        let stat = Stat {
            column: ColumnStats {
                width: row.get::<f64>(3).map_err(err)?.unwrap_or_default(),
                null_frac: row.get::<f64>(4).map_err(err)?.unwrap_or_default(),
                varlena: row.get::<bool>(7).map_err(err)?.unwrap_or_default(),
            },
            n_distinct: row.get::<f64>(5).map_err(err)?.unwrap_or_default(),
        };
        // A table with inheritance children has both; an index holds the
        // table's own rows only.
        let inherited = row.get::<bool>(6).map_err(err)?.unwrap_or_default();
        if !inherited || !out.contains_key(&key) {
            out.insert(key, stat);
        }
    }
    Ok(out)
}

pub fn indexes(client: &SpiClient<'_>) -> Result<Vec<IndexFacts>, String> {
    let mut out = Vec::new();
    // The table's size now, once per table: rows counted at the last
    // ANALYZE or VACUUM are scaled to it, as the planner does.
    let mut table_pages_now: HashMap<u32, f64> = HashMap::new();
    let _no_jit = crate::statements::no_jit();
    let column_stats = column_stats(client)?;
    for row in client.select(&indexes_sql(watching(client)?), None, &[]).map_err(err)? {
        let text = |i: usize| row.get::<String>(i).map_err(err).map(Option::unwrap_or_default);
        let flag = |i: usize| row.get::<bool>(i).map_err(err).map(Option::unwrap_or_default);
        let oids = |i: usize| {
            row.get::<Vec<Option<pgrx::pg_sys::Oid>>>(i)
                .map_err(err)
                .map(|v| v.unwrap_or_default().into_iter().map(|o| o.map_or(0, |o| o.to_u32())).collect::<Vec<u32>>())
        };
        let shorts = |i: usize| row.get::<Vec<Option<i16>>>(i).map_err(err).map(Option::unwrap_or_default);
        let oid = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32;
        let table_oid = row.get::<i64>(26).map_err(err)?.unwrap_or_default() as u32;
        let key_columns = row.get::<i32>(13).map_err(err)?.unwrap_or_default() as usize;
        let columns: Vec<i16> = shorts(14)?.into_iter().map(Option::unwrap_or_default).collect();
        let (opclasses, collations, options) = (oids(15)?, oids(16)?, shorts(17)?);
        let expressions = row.get::<Vec<Option<String>>>(18).map_err(err)?.unwrap_or_default();
        // Each column as pg_get_indexdef(index, k, true) prints it.
        let defs: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(k, &attnum)| match attnum {
                0 => expressions.get(k).cloned().flatten().unwrap_or_default(),
                _ => column_name(table_oid, attnum),
            })
            .collect();
        let keys: Vec<KeyColumn> = defs
            .iter()
            .take(key_columns)
            .enumerate()
            .map(|(k, def)| KeyColumn {
                def: def.clone(),
                opclass: opclasses.get(k).copied().unwrap_or_default(),
                collation: collations.get(k).copied().unwrap_or_default(),
                option: options.get(k).copied().flatten().unwrap_or_default(),
            })
            .collect();
        // Each index column's statistics: a table column's, or for an
        // expression the index's own (ANALYZE keeps them under the index).
        let stats: Vec<Option<Stat>> = (1..)
            .zip(&columns)
            .map(|(k, &attnum)| match attnum {
                0 => column_stats.get(&(oid, k)).copied(),
                _ => column_stats.get(&(table_oid, i32::from(attnum))).copied(),
            })
            .collect();
        let unique = flag(8)?;
        let counted_pages = row.get::<f64>(28).map_err(err)?.unwrap_or(0.0);
        // Only an index with statistics for every column gets a size
        // estimate (not TOAST indexes, half of all at scale): only then
        // is the table's size read.
        let estimated = stats.iter().all(Option::is_some) && counted_pages >= 1.0;
        let pages_now = match table_pages_now.get(&table_oid) {
            Some(&pages) => pages,
            None if estimated => {
                let bytes =
                    crate::disk::main_fork_bytes(table_oid.into()).map_err(|p| format!("{} {}", p.message, p.hint))?;
                let pages = bytes as f64 / f64::from(pgrx::pg_sys::BLCKSZ);
                table_pages_now.insert(table_oid, pages);
                pages
            }
            None => counted_pages,
        };
        let table_tuples =
            findings::tuples_now(row.get::<f64>(27).map_err(err)?.unwrap_or(0.0), counted_pages, pages_now);
        // Distinct keys of a single plain key column, for deduplication.
        let distinct = match (key_columns, columns.first(), stats.first()) {
            (1, Some(&c), Some(Some(st))) if c > 0 && !unique => {
                Some(if st.n_distinct < 0.0 { -st.n_distinct * table_tuples.max(0.0) } else { st.n_distinct })
            }
            _ => None,
        };
        let reloptions: Vec<String> =
            row.get::<Vec<Option<String>>>(24).map_err(err)?.unwrap_or_default().into_iter().flatten().collect();
        // From the files: pg_relation_size() locks the index, and waits
        // behind DDL on it.
        let char_of = |i: usize| text(i).map(|t| t.bytes().next().unwrap_or_default());
        let file = row.get::<i64>(31).map_err(err)?.unwrap_or_default() as u32;
        let space = row.get::<i64>(32).map_err(err)?.unwrap_or_default() as u32;
        let size_bytes = crate::disk::main_fork_bytes_of(oid.into(), char_of(29)?, char_of(30)?, file, space)
            .map_err(|p| format!("{} {}", p.message, p.hint))?;
        let tuples = findings::tuples_now(row.get::<f64>(23).map_err(err)?.unwrap_or(-1.0), counted_pages, pages_now);
        out.push(IndexFacts {
            oid,
            table: QualifiedName::new(text(2)?, text(3)?),
            name: text(4)?,
            am: text(5)?,
            partitioned: flag(6)?,
            parent: row.get::<i64>(7).map_err(err)?.map(|p| p as u32),
            unique,
            primary: flag(9)?,
            needed: flag(10)?,
            valid: flag(11)?,
            being_built: flag(12)?,
            keys,
            include: defs[key_columns.min(defs.len())..].to_vec(),
            predicate: row.get::<String>(19).map_err(err)?,
            size_bytes,
            scans: row.get::<i64>(20).map_err(err)?.unwrap_or_default(),
            unused_days: row.get::<f64>(21).map_err(err)?,
            last_scan_days: row.get::<f64>(22).map_err(err)?,
            pages: size_bytes / i64::from(pgrx::pg_sys::BLCKSZ),
            tuples,
            fillfactor: findings::fillfactor(&reloptions),
            stats: stats.iter().map(|st| st.map(|st| st.column)).collect(),
            distinct,
            // Deduplication needs every opclass to promise equal images
            // (btree support function 4), and no INCLUDE columns.
            dedup: findings::deduplicates(&reloptions) && columns.len() == key_columns && !flag(25)?,
        });
    }
    Ok(out)
}

/// A table column's name, quoted as an identifier, from the catalog cache.
fn column_name(table: u32, attnum: i16) -> String {
    // SAFETY: a catalog cache lookup; missing_ok gives NULL for a column
    // dropped meanwhile, and the name is copied before anything else runs.
    unsafe {
        let name = pgrx::pg_sys::get_attname(table.into(), attnum, true);
        if name.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(pgrx::pg_sys::quote_identifier(name)).to_string_lossy().into_owned()
    }
}

pub fn foreign_keys(client: &SpiClient<'_>) -> Result<Vec<ForeignKey>, String> {
    let mut out = Vec::new();
    let _no_jit = crate::statements::no_jit();
    for row in client.select(&foreign_keys_sql(), None, &[]).map_err(err)? {
        let text = |c: &str| row.get_by_name::<String, _>(c).map_err(err).map(Option::unwrap_or_default);
        let texts = |c: &str| {
            row.get_by_name::<Vec<Option<String>>, _>(c)
                .map_err(err)
                .map(|v| v.unwrap_or_default().into_iter().flatten().collect::<Vec<String>>())
        };
        let partitions = texts("part_schemas")?
            .into_iter()
            .zip(texts("part_names")?)
            .map(|(s, n)| QualifiedName::new(s, n))
            .collect();
        out.push(ForeignKey {
            table: QualifiedName::new(text("schema")?, text("table")?),
            partitioned: row.get_by_name::<bool, _>("partitioned").map_err(err)?.unwrap_or(false),
            partitions,
            constraint: text("constraint")?,
            references: text("references")?,
            columns: texts("columns")?,
            indexed: row.get_by_name::<bool, _>("indexed").map_err(err)?.unwrap_or(false),
        });
    }
    Ok(out)
}

pub fn judgement() -> Judgement {
    Judgement { unused_after_days: crate::settings::UNUSED_INDEX_DAYS.get() as f64 }
}

/// Whether the installed SQL has upkeep.index_watch (0.4.0 on).
pub fn watching(client: &SpiClient<'_>) -> Result<bool, String> {
    let found = client.select("SELECT to_regclass('upkeep.index_watch') IS NOT NULL", None, &[]).map_err(err)?;
    Ok(found.first().get::<bool>(1).map_err(err)?.unwrap_or(false))
}
