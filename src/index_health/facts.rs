//! The catalog reads of index health: every index of the database (outside
//! the system schemas) with its definition, size, scans and the statistics
//! its size estimate needs; every foreign key and whether an index leads
//! with its columns; how old the scan counts are. Three statements.

use super::findings::{ColumnStats, ForeignKey, IndexFacts, Judgement, KeyColumn};
use crate::sql::QualifiedName;
use pgrx::spi::SpiClient;

/// Schemas never reported: the system's and pg_upkeep's own.
const SKIPPED: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'upkeep') \
                       AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'";

/// Days the snapshots have seen the index without a scan, counted from
/// the later of the first such snapshot and the database's last statistics
/// reset (scans before a reset are unknown). Without upkeep.index_watch
/// (the SQL objects of 0.3.0, before ALTER EXTENSION UPDATE): no evidence.
const UNUSED_DAYS: &str = "(SELECT extract(epoch FROM now() - greatest(w.unused_since, \
        (SELECT d.stats_reset FROM pg_stat_database d WHERE d.datname = current_database())))::float8 / 86400 \
   FROM upkeep.index_watch w WHERE w.index_oid = ix.indexrelid AND w.unused_since IS NOT NULL)";

/// Days since the index's last scan: PostgreSQL 16 on records when it was
/// (pg_stat_all_indexes.last_idx_scan); 15 does not.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
const LAST_SCAN_DAYS: &str = "NULL::float8";
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
const LAST_SCAN_DAYS: &str = "extract(epoch FROM now() - s.last_idx_scan)::float8 / 86400";

fn indexes_sql(watched: bool) -> String {
    let unused_days = if watched { UNUSED_DAYS } else { "NULL::float8" };
    // Column statistics are joined once for all indexes (pg_stats is a view
    // whose lookups by name cannot use an index: one per column cost 40
    // times the rest of the query).
    format!(
        "\
WITH ix AS MATERIALIZED ( \
  SELECT i.*, n.nspname, t.relname AS table_name, c.relname AS index_name, c.relkind AS index_kind, c.relam, \
         c.reloptions, c.reltuples AS index_tuples, t.reltuples AS table_tuples, \
         string_to_array(i.indkey::text, ' ')::int2[] AS keys \
    FROM pg_index i \
    JOIN pg_class c ON c.oid = i.indexrelid \
    JOIN pg_class t ON t.oid = i.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
   WHERE {SKIPPED}), \
cols AS ( \
  SELECT ix.indexrelid, k, ix.nspname, \
         CASE WHEN ix.keys[k] > 0 THEN ix.table_name ELSE ix.index_name END AS rel, \
         CASE WHEN ix.keys[k] > 0 THEN ta.attname ELSE ia.attname END AS att \
    FROM ix CROSS JOIN LATERAL generate_series(1, ix.indnatts) k \
    LEFT JOIN pg_attribute ta ON ta.attrelid = ix.indrelid AND ta.attnum = ix.keys[k] \
    LEFT JOIN pg_attribute ia ON ia.attrelid = ix.indexrelid AND ia.attnum = k), \
stats AS ( \
  SELECT c.indexrelid, array_agg(s.avg_width::float8 ORDER BY c.k) AS widths, \
         array_agg(s.null_frac::float8 ORDER BY c.k) AS null_fracs, \
         (array_agg(s.n_distinct::float8 ORDER BY c.k))[1] AS first_distinct \
    FROM cols c LEFT JOIN pg_stats s ON s.schemaname = c.nspname AND s.tablename = c.rel AND s.attname = c.att \
   GROUP BY c.indexrelid) \
SELECT ix.indexrelid::oid::int8 AS oid, ix.nspname::text AS schema, ix.table_name::text AS table, \
       ix.index_name::text AS name, am.amname::text AS am, ix.index_kind = 'I' AS partitioned, \
       (SELECT h.inhparent::int8 FROM pg_inherits h WHERE h.inhrelid = ix.indexrelid) AS parent, \
       ix.indisunique AS unique, ix.indisprimary AS primary, \
       (ix.indisprimary OR ix.indisexclusion OR ix.indisreplident \
        OR ix.indexrelid IN (SELECT k.conindid FROM pg_constraint k WHERE k.contype IN ('p', 'u', 'x'))) AS needed, \
       ix.indisvalid AS valid, \
       ix.indrelid IN (SELECT p.relid FROM pg_stat_progress_create_index p) AS being_built, \
       ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnkeyatts) k) AS key_defs, \
       (string_to_array(ix.indclass::text, ' ')::int8[])[1:ix.indnkeyatts] AS opclasses, \
       (string_to_array(ix.indcollation::text, ' ')::int8[])[1:ix.indnkeyatts] AS collations, \
       (string_to_array(ix.indoption::text, ' ')::int2[])[1:ix.indnkeyatts] AS options, \
       ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(ix.indnkeyatts + 1, ix.indnatts) k) AS include, \
       pg_get_expr(ix.indpred, ix.indrelid, true) AS predicate, \
       pg_relation_size(ix.indexrelid) AS size_bytes, coalesce(s.idx_scan, 0) AS scans, \
       {unused_days} AS unused_days, {LAST_SCAN_DAYS} AS last_scan_days, \
       CASE WHEN ix.indpred IS NULL THEN ix.table_tuples ELSE ix.index_tuples END::float8 AS tuples, \
       coalesce((SELECT substr(o, 12)::float8 FROM unnest(ix.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor, \
       coalesce((SELECT substr(o, 20) NOT IN ('off', 'false') FROM unnest(ix.reloptions) o WHERE o LIKE 'deduplicate_items=%'), true) \
         AND ix.indnatts = ix.indnkeyatts \
         AND NOT EXISTS (SELECT 1 FROM unnest(string_to_array(ix.indclass::text, ' ')::oid[]) oc(opc) \
                          JOIN pg_opclass o ON o.oid = oc.opc \
                         WHERE NOT EXISTS (SELECT 1 FROM pg_amproc p WHERE p.amprocfamily = o.opcfamily AND p.amprocnum = 4)) AS dedup, \
       st.widths, st.null_fracs, \
       CASE WHEN ix.indnkeyatts = 1 AND NOT ix.indisunique AND ix.keys[1] > 0 THEN \
         CASE WHEN st.first_distinct < 0 THEN -st.first_distinct * greatest(ix.table_tuples, 0) ELSE st.first_distinct END \
       END AS distinct \
  FROM ix \
  JOIN pg_am am ON am.oid = ix.relam \
  LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = ix.indexrelid \
  LEFT JOIN stats st ON st.indexrelid = ix.indexrelid \
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

pub fn indexes(client: &SpiClient<'_>) -> Result<Vec<IndexFacts>, String> {
    let mut out = Vec::new();
    for row in client.select(&indexes_sql(watching(client)?), None, &[]).map_err(err)? {
        let text = |c: &str| row.get_by_name::<String, _>(c).map_err(err).map(Option::unwrap_or_default);
        let flag = |c: &str| row.get_by_name::<bool, _>(c).map_err(err).map(Option::unwrap_or_default);
        let ints = |c: &str| row.get_by_name::<Vec<Option<i64>>, _>(c).map_err(err).map(Option::unwrap_or_default);
        let floats = |c: &str| row.get_by_name::<Vec<Option<f64>>, _>(c).map_err(err).map(Option::unwrap_or_default);
        let defs = row.get_by_name::<Vec<Option<String>>, _>("key_defs").map_err(err)?.unwrap_or_default();
        let (opclasses, collations) = (ints("opclasses")?, ints("collations")?);
        let options = row.get_by_name::<Vec<Option<i16>>, _>("options").map_err(err)?.unwrap_or_default();
        let keys = defs
            .into_iter()
            .enumerate()
            .map(|(k, d)| KeyColumn {
                def: d.unwrap_or_default(),
                opclass: opclasses.get(k).copied().flatten().unwrap_or_default() as u32,
                collation: collations.get(k).copied().flatten().unwrap_or_default() as u32,
                option: options.get(k).copied().flatten().unwrap_or_default(),
            })
            .collect();
        let widths = floats("widths")?;
        let nulls = floats("null_fracs")?;
        let stats = widths
            .iter()
            .zip(nulls.iter())
            .map(|(w, n)| w.map(|width| ColumnStats { width, null_frac: n.unwrap_or(0.0) }))
            .collect();
        out.push(IndexFacts {
            oid: row.get_by_name::<i64, _>("oid").map_err(err)?.unwrap_or_default() as u32,
            table: QualifiedName::new(text("schema")?, text("table")?),
            name: text("name")?,
            am: text("am")?,
            partitioned: flag("partitioned")?,
            parent: row.get_by_name::<i64, _>("parent").map_err(err)?.map(|p| p as u32),
            unique: flag("unique")?,
            primary: flag("primary")?,
            needed: flag("needed")?,
            valid: flag("valid")?,
            being_built: flag("being_built")?,
            keys,
            include: row
                .get_by_name::<Vec<Option<String>>, _>("include")
                .map_err(err)?
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect(),
            predicate: row.get_by_name::<String, _>("predicate").map_err(err)?,
            size_bytes: row.get_by_name::<i64, _>("size_bytes").map_err(err)?.unwrap_or_default(),
            scans: row.get_by_name::<i64, _>("scans").map_err(err)?.unwrap_or_default(),
            unused_days: row.get_by_name::<f64, _>("unused_days").map_err(err)?,
            last_scan_days: row.get_by_name::<f64, _>("last_scan_days").map_err(err)?,
            pages: row.get_by_name::<i64, _>("size_bytes").map_err(err)?.unwrap_or_default() / 8192,
            tuples: row.get_by_name::<f64, _>("tuples").map_err(err)?.unwrap_or(-1.0),
            fillfactor: row.get_by_name::<f64, _>("fillfactor").map_err(err)?.unwrap_or(90.0),
            stats,
            distinct: row.get_by_name::<f64, _>("distinct").map_err(err)?,
            dedup: flag("dedup")?,
        });
    }
    Ok(out)
}

pub fn foreign_keys(client: &SpiClient<'_>) -> Result<Vec<ForeignKey>, String> {
    let mut out = Vec::new();
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
