//! The catalog reads of index health: every index of the database (outside
//! the system schemas) with its definition, size, scans and the statistics
//! its size estimate needs; every foreign key and whether an index leads
//! with its columns; how old the scan counts are. One statement per
//! catalog, each read once: nothing is looked up per index.

use super::findings::{self, Column, ColumnStats, ForeignKey, IndexFacts, Judgement, KeyColumn};
use crate::sql::QualifiedName;
use pgrx::spi::SpiClient;
use std::collections::HashMap;

/// Schemas never reported: the system's and pg_upkeep's own.
const SKIPPED: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'upkeep') \
                       AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

/// Days the snapshots have seen each index without a scan, counted from
/// the later of the first such snapshot and the database's last statistics
/// reset (scans before a reset are unknown), by index. Read apart, as the
/// parents of partitions' indexes are: joined to every index, the planner
/// hashed the 50,000 wide rows instead (a fifth of the read, spilled).
const UNUSED_DAYS_SQL: &str = "\
SELECT w.index_oid::int8, \
       extract(epoch FROM now() - greatest(w.unused_since, \
         (SELECT d.stats_reset FROM pg_stat_database d WHERE d.datname = current_database())))::float8 / 86400 \
  FROM upkeep.index_watch w WHERE w.unused_since IS NOT NULL";

/// The partitioned index each partition's index is attached to (with
/// the tables' parents, never looked up: telling them apart costs a scan
/// of pg_class).
const PARENTS_SQL: &str = "SELECT h.inhrelid::int8, h.inhparent::int8 FROM pg_inherits h";

/// Operator classes that do not promise equal images (no btree support
/// function 4): an index using one cannot deduplicate.
const UNEQUAL_IMAGES_SQL: &str = "\
SELECT o.oid::int8, true FROM pg_opclass o \
 WHERE NOT EXISTS (SELECT 1 FROM pg_amproc p WHERE p.amprocfamily = o.opcfamily AND p.amprocnum = 4)";

/// Days since the index's last scan: PostgreSQL 16 on records when it was
/// (pg_stat_all_indexes.last_idx_scan); 15 does not.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
const LAST_SCAN_DAYS: &str = "NULL::float8";
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
const LAST_SCAN_DAYS: &str = "extract(epoch FROM now() - pg_stat_get_lastscan(ix.indexrelid))::float8 / 86400";

/// The columns of `indexes_sql`, by position. Fixed-width columns that are
/// never NULL come first: a row's column is then found at a known offset,
/// where one after a NULL or a variable-length value is found by walking
/// the row from its start (a quarter of the read at 50,000 indexes).
mod col {
    pub const OID: usize = 1;
    pub const TABLE_OID: usize = 2;
    pub const FILE: usize = 3;
    pub const SPACE: usize = 4;
    pub const SCANS: usize = 5;
    pub const KEY_COLUMNS: usize = 6;
    pub const KIND: usize = 7;
    pub const PERSISTENCE: usize = 8;
    pub const TUPLES: usize = 9;
    pub const TABLE_TUPLES: usize = 10;
    pub const TABLE_PAGES: usize = 11;
    pub const UNIQUE: usize = 12;
    pub const PRIMARY: usize = 13;
    pub const NEEDED: usize = 14;
    pub const VALID: usize = 15;
    pub const BEING_BUILT: usize = 16;
    pub const SCHEMA: usize = 17;
    pub const TABLE: usize = 18;
    pub const NAME: usize = 19;
    pub const AM: usize = 20;
    pub const COLUMNS: usize = 21;
    pub const OPCLASSES: usize = 22;
    pub const COLLATIONS: usize = 23;
    pub const OPTIONS: usize = 24;
    pub const EXPRESSIONS: usize = 25;
    pub const PREDICATE: usize = 26;
    pub const LAST_SCAN_DAYS: usize = 27;
    pub const RELOPTIONS: usize = 28;
}

/// Every index, one row each, read by position (`col`) in `indexes`. Per index
/// the query does as little as it can: at 50,000 indexes each correlated
/// subquery or text conversion costs a tenth of a second. Plain key
/// columns are known by number (their names would cost a catalog lookup
/// each), sizes come from the files (`disk`), reloptions are parsed in
/// Rust, and the rows are put in order there (sorting 50,000 wide rows
/// spills to disk); only expression columns need the deparser, which opens
/// and locks the table.
fn indexes_sql() -> String {
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
SELECT ix.indexrelid::int8, ix.indrelid::int8, ix.index_file::int8, ix.index_space::int8, \
       pg_stat_get_numscans(ix.indexrelid), ix.indnkeyatts::int4, \
       ix.index_kind::int4, ix.index_persistence::int4, \
       CASE WHEN ix.indpred IS NULL THEN ix.table_tuples ELSE ix.index_tuples END::float8, \
       ix.table_tuples::float8, ix.table_pages::float8, \
       ix.indisunique, ix.indisprimary, \
       ix.indisprimary OR ix.indisexclusion OR ix.indisreplident \
         OR ix.indexrelid IN (SELECT k.conindid FROM pg_constraint k WHERE k.contype IN ('p', 'u', 'x')), \
       ix.indisvalid, \
       ix.indrelid IN (SELECT p.relid FROM pg_stat_progress_create_index p), \
       ix.nspname::text, ix.table_name::text, ix.index_name::text, am.amname::text, \
       ix.indkey::int2[], ix.indclass::oid[], ix.indcollation::oid[], ix.indoption::int2[], \
       CASE WHEN 0 = ANY (ix.indkey::int2[]) \
            THEN ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnatts) k) END, \
       pg_get_expr(ix.indpred, ix.indrelid, true), \
       {LAST_SCAN_DAYS}, \
       ix.reloptions::text[] \
  FROM ix \
  JOIN pg_am am ON am.oid = ix.relam"
    )
}

fn foreign_keys_sql() -> String {
    format!(
        "\
SELECT n.nspname::text AS schema, t.relname::text AS table, t.relkind = 'p' AS partitioned, k.conname::text AS constraint, \
       k.confrelid::regclass::text AS references, \
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(attnum, o) \
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.o) AS columns, \
       k.conkey AS attnums, \
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

/// Rows of (oid, value), by oid.
fn by_oid<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    client: &SpiClient<'_>,
    sql: &str,
) -> Result<HashMap<u32, T>, String> {
    let mut out = HashMap::new();
    for row in client.select(sql, None, &[]).map_err(err)? {
        if let (Some(oid), Some(value)) = (row.get::<i64>(1).map_err(err)?, row.get::<T>(2).map_err(err)?) {
            out.insert(oid as u32, value);
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
    let unequal_images = by_oid::<bool>(client, UNEQUAL_IMAGES_SQL)?;
    let parents = by_oid::<i64>(client, PARENTS_SQL)?;
    // Without upkeep.index_watch (the SQL objects of 0.3.0, before ALTER
    // EXTENSION UPDATE): no evidence.
    let unused_days = if watching(client)? { by_oid::<f64>(client, UNUSED_DAYS_SQL)? } else { HashMap::new() };
    for row in client.select(&indexes_sql(), None, &[]).map_err(err)? {
        let text = |i: usize| row.get::<String>(i).map_err(err).map(Option::unwrap_or_default);
        let flag = |i: usize| row.get::<bool>(i).map_err(err).map(Option::unwrap_or_default);
        let oids = |i: usize| {
            row.get::<Vec<Option<pgrx::pg_sys::Oid>>>(i)
                .map_err(err)
                .map(|v| v.unwrap_or_default().into_iter().map(|o| o.map_or(0, |o| o.to_u32())).collect::<Vec<u32>>())
        };
        let shorts = |i: usize| row.get::<Vec<Option<i16>>>(i).map_err(err).map(Option::unwrap_or_default);
        let oid = row.get::<i64>(col::OID).map_err(err)?.unwrap_or_default() as u32;
        let table_oid = row.get::<i64>(col::TABLE_OID).map_err(err)?.unwrap_or_default() as u32;
        let key_columns = row.get::<i32>(col::KEY_COLUMNS).map_err(err)?.unwrap_or_default() as usize;
        let columns: Vec<i16> = shorts(col::COLUMNS)?.into_iter().map(Option::unwrap_or_default).collect();
        let (opclasses, collations, options) = (oids(col::OPCLASSES)?, oids(col::COLLATIONS)?, shorts(col::OPTIONS)?);
        let expressions = row.get::<Vec<Option<String>>>(col::EXPRESSIONS).map_err(err)?.unwrap_or_default();
        // Each column: the table's column by number, or the expression as
        // pg_get_indexdef(index, k, true) prints it.
        let held: Vec<Column> = columns
            .iter()
            .enumerate()
            .map(|(k, &attnum)| match attnum {
                0 => Column::Expression(expressions.get(k).cloned().flatten().unwrap_or_default()),
                _ => Column::Table(attnum),
            })
            .collect();
        let keys: Vec<KeyColumn> = held
            .iter()
            .take(key_columns)
            .enumerate()
            .map(|(k, column)| KeyColumn {
                column: column.clone(),
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
        let unique = flag(col::UNIQUE)?;
        let counted_pages = row.get::<f64>(col::TABLE_PAGES).map_err(err)?.unwrap_or(0.0);
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
        let table_tuples = findings::tuples_now(
            row.get::<f64>(col::TABLE_TUPLES).map_err(err)?.unwrap_or(0.0),
            counted_pages,
            pages_now,
        );
        // Distinct keys of a single plain key column, for deduplication.
        let distinct = match (key_columns, columns.first(), stats.first()) {
            (1, Some(&c), Some(Some(st))) if c > 0 && !unique => {
                Some(if st.n_distinct < 0.0 { -st.n_distinct * table_tuples.max(0.0) } else { st.n_distinct })
            }
            _ => None,
        };
        let reloptions: Vec<String> = row
            .get::<Vec<Option<String>>>(col::RELOPTIONS)
            .map_err(err)?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        // From the files: pg_relation_size() locks the index, and waits
        // behind DDL on it.
        let char_of = |i: usize| row.get::<i32>(i).map_err(err).map(|c| c.unwrap_or_default() as u8);
        let kind = char_of(col::KIND)?;
        let file = row.get::<i64>(col::FILE).map_err(err)?.unwrap_or_default() as u32;
        let space = row.get::<i64>(col::SPACE).map_err(err)?.unwrap_or_default() as u32;
        let size_bytes = crate::disk::main_fork_bytes_of(oid.into(), kind, char_of(col::PERSISTENCE)?, file, space)
            .map_err(|p| format!("{} {}", p.message, p.hint))?;
        let tuples =
            findings::tuples_now(row.get::<f64>(col::TUPLES).map_err(err)?.unwrap_or(-1.0), counted_pages, pages_now);
        out.push(IndexFacts {
            oid,
            table: QualifiedName::new(text(col::SCHEMA)?, text(col::TABLE)?),
            name: text(col::NAME)?,
            am: text(col::AM)?,
            partitioned: kind == b'I',
            parent: parents.get(&oid).map(|p| *p as u32),
            unique,
            primary: flag(col::PRIMARY)?,
            needed: flag(col::NEEDED)?,
            valid: flag(col::VALID)?,
            being_built: flag(col::BEING_BUILT)?,
            keys,
            include: held[key_columns.min(held.len())..].to_vec(),
            predicate: row.get::<String>(col::PREDICATE).map_err(err)?,
            size_bytes,
            scans: row.get::<i64>(col::SCANS).map_err(err)?.unwrap_or_default(),
            unused_days: unused_days.get(&oid).copied(),
            last_scan_days: row.get::<f64>(col::LAST_SCAN_DAYS).map_err(err)?,
            pages: size_bytes / i64::from(pgrx::pg_sys::BLCKSZ),
            tuples,
            fillfactor: findings::fillfactor(&reloptions),
            stats: stats.iter().map(|st| st.map(|st| st.column)).collect(),
            distinct,
            // Deduplication needs every opclass to promise equal images
            // (btree support function 4), and no INCLUDE columns.
            dedup: findings::deduplicates(&reloptions)
                && columns.len() == key_columns
                && !opclasses.iter().any(|o| unequal_images.contains_key(o)),
        });
    }
    out.sort_unstable_by_key(|i| i.oid);
    Ok(out)
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
            attnums: row
                .get_by_name::<Vec<Option<i16>>, _>("attnums")
                .map_err(err)?
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect(),
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
