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

fn indexes_sql() -> String {
    format!(
        "\
SELECT i.indexrelid::oid::int8 AS oid, n.nspname::text AS schema, t.relname::text AS table, c.relname::text AS name, \
       am.amname::text AS am, c.relkind = 'I' AS partitioned, \
       (SELECT h.inhparent::int8 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) AS parent, \
       i.indisunique AS unique, i.indisprimary AS primary, \
       (i.indisprimary OR i.indisexclusion OR i.indisreplident \
        OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)) AS needed, \
       i.indisvalid AS valid, \
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid) AS being_built, \
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS key_defs, \
       (string_to_array(i.indclass::text, ' ')::int8[])[1:i.indnkeyatts] AS opclasses, \
       (string_to_array(i.indcollation::text, ' ')::int8[])[1:i.indnkeyatts] AS collations, \
       (string_to_array(i.indoption::text, ' ')::int2[])[1:i.indnkeyatts] AS options, \
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(i.indnkeyatts + 1, i.indnatts) k) AS include, \
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate, \
       pg_relation_size(i.indexrelid) AS size_bytes, coalesce(s.idx_scan, 0) AS scans, \
       CASE WHEN i.indpred IS NULL THEN t.reltuples ELSE c.reltuples END::float8 AS tuples, \
       coalesce((SELECT substr(o, 12)::float8 FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor, \
       coalesce((SELECT substr(o, 20) NOT IN ('off', 'false') FROM unnest(c.reloptions) o WHERE o LIKE 'deduplicate_items=%'), true) \
         AND i.indnatts = i.indnkeyatts \
         AND NOT EXISTS (SELECT 1 FROM unnest(string_to_array(i.indclass::text, ' ')::oid[]) oc(opc) \
                          JOIN pg_opclass o ON o.oid = oc.opc \
                         WHERE NOT EXISTS (SELECT 1 FROM pg_amproc p WHERE p.amprocfamily = o.opcfamily AND p.amprocnum = 4)) AS dedup, \
       w.widths, w.null_fracs, \
       CASE WHEN i.indnkeyatts = 1 AND NOT i.indisunique AND (string_to_array(i.indkey::text, ' ')::int2[])[1] > 0 THEN \
         (SELECT CASE WHEN s2.n_distinct < 0 THEN -s2.n_distinct * greatest(t.reltuples, 0) ELSE s2.n_distinct END::float8 \
            FROM pg_stats s2 JOIN pg_attribute a ON a.attrelid = i.indrelid \
                 AND a.attnum = (string_to_array(i.indkey::text, ' ')::int2[])[1] \
           WHERE s2.schemaname = n.nspname AND s2.tablename = t.relname AND s2.attname = a.attname LIMIT 1) END AS distinct \
  FROM pg_index i \
  JOIN pg_class c ON c.oid = i.indexrelid \
  JOIN pg_class t ON t.oid = i.indrelid \
  JOIN pg_namespace n ON n.oid = t.relnamespace \
  JOIN pg_am am ON am.oid = c.relam \
  LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid \
  LEFT JOIN LATERAL ( \
    SELECT array_agg(st.avg_width::float8 ORDER BY k) AS widths, array_agg(st.null_frac::float8 ORDER BY k) AS null_fracs \
      FROM generate_series(1, i.indnatts) k \
      LEFT JOIN LATERAL ( \
        SELECT s2.avg_width, s2.null_frac FROM pg_stats s2 \
         WHERE s2.schemaname = n.nspname \
           AND CASE WHEN (string_to_array(i.indkey::text, ' ')::int2[])[k] > 0 \
                    THEN s2.tablename = t.relname AND s2.attname = (SELECT a.attname FROM pg_attribute a \
                           WHERE a.attrelid = i.indrelid AND a.attnum = (string_to_array(i.indkey::text, ' ')::int2[])[k]) \
                    ELSE s2.tablename = c.relname AND s2.attname = (SELECT a.attname FROM pg_attribute a \
                           WHERE a.attrelid = i.indexrelid AND a.attnum = k) END \
         LIMIT 1) st ON true \
  ) w ON true \
 WHERE {SKIPPED} \
 ORDER BY i.indexrelid"
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

/// Days covered by the scan counts: since this database's statistics were
/// last reset; None when they never were.
const STATS_DAYS_SQL: &str = "SELECT extract(epoch FROM now() - stats_reset)::float8 / 86400 \
                                FROM pg_stat_database WHERE datname = current_database()";

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

pub fn indexes(client: &SpiClient<'_>) -> Result<Vec<IndexFacts>, String> {
    let mut out = Vec::new();
    for row in client.select(&indexes_sql(), None, &[]).map_err(err)? {
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

pub fn judgement(client: &SpiClient<'_>) -> Result<Judgement, String> {
    let stats_days = client.select(STATS_DAYS_SQL, None, &[]).map_err(err)?.first().get::<f64>(1).map_err(err)?;
    Ok(Judgement { stats_days, unused_after_days: crate::settings::UNUSED_INDEX_DAYS.get() as f64 })
}
