//! The catalog reads of row archiving: the policies, where their archives
//! may go, and what their tables look like, in three statements whatever
//! the number of policies.

use super::rows::{Column, Reference, RowFacts};
use crate::access::{self, AccessRules};
use crate::archive_target::Access;
use crate::sql::QualifiedName;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::spi::SpiClient;

/// Which row archive policies to read.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One policy, by job.
    Job(i64),
    /// Enabled policies whose schedule or back-off lets them run now.
    Due,
}

const POLICIES_TEMPLATE: &str = "\
SELECT a.job_id, a.source::oid::int8 AS oid, c.oid IS NOT NULL AS exists, \
       coalesce(n.nspname::text, '') AS schema, coalesce(c.relname::text, a.source::text) AS name, \
       coalesce(c.relkind::text, '') AS relkind, coalesce(pg_get_userbyid(c.relowner)::text, '') AS owner, \
       coalesce(c.relpersistence = 'u', false) AS unlogged, \
       a.time_column, \
       (SELECT format_type(t.atttypid, NULL) FROM pg_attribute t \
         WHERE t.attrelid = c.oid AND t.attname = a.time_column AND t.attnum > 0 AND NOT t.attisdropped) AS time_type, \
       (now() - a.older_than)::text AS cutoff, a.batch_size::int8 AS batch_size, \
       CASE WHEN a.archive_table IS NOT NULL THEN parse_ident(a.archive_table) END AS archive \
  FROM upkeep.archive_policies a \
  LEFT JOIN pg_class c ON c.oid = a.source \
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
  LEFT JOIN upkeep.job_state j ON j.job_id = a.job_id \
 WHERE CASE WHEN $1::int8 IS NOT NULL THEN a.job_id = $1 \
            ELSE a.enabled AND (j.next_run IS NULL OR j.next_run <= now()) END \
   AND {may_manage} \
 ORDER BY a.job_id";
/// Scoped to the jobs the caller may manage.
static POLICIES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    POLICIES_TEMPLATE.replace("{may_manage}", &crate::ownership::may_manage_sql("a.source"))
});

/// Columns of the named relations (schema, name), in order; none for a
/// relation that does not exist. `relkind` comes with every column row.
const COLUMNS_SQL: &str = "\
SELECT w.i, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
       a.attgenerated <> '', a.attnotnull, a.atthasdef OR a.attidentity <> '' \
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, n, i) \
  JOIN pg_namespace ns ON ns.nspname = w.s \
  JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = w.n \
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
 ORDER BY w.i, a.attnum";

/// Whether the archive's schema (named) lets the source's owner put the
/// archive there (create it, or write the one of theirs that is there),
/// and whether an existing archive table is that owner's.
/// One row per (schema, name, owner), in order. Privileges first: nothing
/// else about a target the owner may not use is read.
const ARCHIVES_SQL: &str = "\
SELECT w.i, \
       has_schema_privilege(w.o, s.oid, 'USAGE') \
         AND (has_schema_privilege(w.o, s.oid, 'CREATE') OR coalesce(pg_has_role(w.o, t.relowner, 'USAGE'), false)), \
       CASE WHEN t.oid IS NOT NULL THEN pg_has_role(w.o, t.relowner, 'USAGE') END, \
       t.oid::int8 \
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS w(s, n, o, i) \
  LEFT JOIN pg_namespace s ON s.nspname = w.s \
  LEFT JOIN pg_class t ON t.relnamespace = s.oid AND t.relname = w.n \
 ORDER BY w.i";

/// Foreign keys that point at the given tables (top-level ones: a
/// partitioned table's, not its partitions' clones), with what a delete
/// does (`confdeltype`) and their column pairs in key order.
const REFERENCES_SQL: &str = "\
SELECT f.confrelid::int8, f.conname::text, n.nspname::text, t.relname::text, \
       ARRAY(SELECT a.attname::text FROM unnest(f.conkey) WITH ORDINALITY k(num, o) \
               JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.num ORDER BY k.o), \
       ARRAY(SELECT a.attname::text FROM unnest(f.confkey) WITH ORDINALITY k(num, o) \
               JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.num ORDER BY k.o), \
       f.confdeltype::text \
  FROM pg_constraint f \
  JOIN pg_class t ON t.oid = f.conrelid \
  JOIN pg_namespace n ON n.oid = t.relnamespace \
 WHERE f.contype = 'f' AND f.confrelid = ANY ($1) AND f.conparentid = 0 \
 ORDER BY f.confrelid, f.conname";

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// The policies in scope with their tables' facts.
pub fn load(client: &SpiClient<'_>, scope: Scope) -> Result<Vec<RowFacts>, String> {
    let job = match scope {
        Scope::Job(id) => Some(id),
        Scope::Due => None,
    };
    let mut out = Vec::new();
    let mut sources = Vec::new();
    let _generic = statements::generic_plan();
    statements::select(client, POLICIES_SQL.as_str(), &[param(BuiltinOid::INT8OID)], &[job.into()], |rows| {
        for row in rows {
            sources.push(pgrx::pg_sys::Oid::from(
                row.get_by_name::<i64, _>("oid").map_err(err)?.unwrap_or_default() as u32
            ));
            let text = |c: &str| row.get_by_name::<String, _>(c).map_err(err).map(Option::unwrap_or_default);
            let archive =
                row.get_by_name::<Vec<String>, _>("archive").map_err(err)?.map(|parts| match parts.as_slice() {
                    [schema, name] => QualifiedName::new(schema.clone(), name.clone()),
                    [name] => QualifiedName::new(String::new(), name.clone()),
                    _ => QualifiedName::new(String::new(), parts.join(".")),
                });
            out.push(RowFacts {
                job_id: row.get_by_name::<i64, _>("job_id").map_err(err)?.unwrap_or_default(),
                source: QualifiedName::new(text("schema")?, text("name")?),
                exists: row.get_by_name::<bool, _>("exists").map_err(err)?.unwrap_or(false),
                relkind: text("relkind")?,
                distributed: false,
                owner: text("owner")?,
                unlogged: row.get_by_name::<bool, _>("unlogged").map_err(err)?.unwrap_or(false),
                time_column: text("time_column")?,
                time_type: row.get_by_name::<String, _>("time_type").map_err(err)?,
                cutoff: text("cutoff")?,
                batch_size: row.get_by_name::<i64, _>("batch_size").map_err(err)?.unwrap_or(1),
                archive,
                cascading_references: false,
                references: Vec::new(),
                columns: Vec::new(),
                archive_target: Access::Refused,
                archive_owned: None,
                access: AccessRules::default(),
                archive_drift: None,
                archive_relkind: None,
                archive_columns: Vec::new(),
            });
        }
        Ok(())
    })?;
    if out.is_empty() {
        return Ok(out);
    }
    let distributed = crate::citus::distributed(client, &sources)?;
    for (f, oid) in out.iter_mut().zip(&sources) {
        f.distributed = distributed.contains(&oid.to_u32());
    }
    let archives: Vec<QualifiedName> = out.iter().map(RowFacts::archive_table).collect();
    let schemas: Vec<String> = archives.iter().map(|q| q.schema.clone()).collect();
    let rels: Vec<String> = archives.iter().map(|q| q.name.clone()).collect();
    let owners: Vec<String> = out.iter().map(|f| f.owner.clone()).collect();
    let mut archive_oids = Vec::new();
    for row in client.select(ARCHIVES_SQL, None, &[schemas.into(), rels.into(), owners.into()]).map_err(err)? {
        let i = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as usize - 1;
        let f = &mut out[i];
        f.archive_target = Access::from_catalog(row.get::<bool>(2).map_err(err)?);
        f.archive_owned = row.get::<bool>(3).map_err(err)?;
        if let Some(oid) = row.get::<i64>(4).map_err(err)? {
            archive_oids.push((i, pgrx::pg_sys::Oid::from(oid as u32)));
        }
    }
    for row in client.select(REFERENCES_SQL, None, &[sources.clone().into()]).map_err(err)? {
        let source = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32;
        let from = row.get::<Vec<String>>(5).map_err(err)?.unwrap_or_default();
        let to = row.get::<Vec<String>>(6).map_err(err)?.unwrap_or_default();
        // NO ACTION and RESTRICT hold referenced rows back; CASCADE, SET
        // NULL and SET DEFAULT would change the referencing rows.
        let holds_back = matches!(row.get::<String>(7).map_err(err)?.as_deref(), Some("a" | "r"));
        let reference = Reference {
            constraint: row.get::<String>(2).map_err(err)?.unwrap_or_default(),
            table: QualifiedName::new(
                row.get::<String>(3).map_err(err)?.unwrap_or_default(),
                row.get::<String>(4).map_err(err)?.unwrap_or_default(),
            ),
            columns: from.into_iter().zip(to).collect(),
        };
        for (f, _) in out.iter_mut().zip(&sources).filter(|(_, o)| o.to_u32() == source) {
            if holds_back {
                f.references.push(reference.clone());
            } else {
                f.cascading_references = true;
            }
        }
    }
    // Each archive's rules against its source's.
    let made = archive_oids.into_iter().map(|(i, oid)| (i, oid, out[i].archive_table())).collect();
    for (f, (rules, mut drift)) in out.iter_mut().zip(access::read_with_drift(client, &sources, made)?) {
        f.access = rules;
        f.archive_drift = drift.pop();
    }
    // Each policy's source and archive, as (schema, name) pairs.
    let names: Vec<QualifiedName> = out.iter().flat_map(|f| [f.source.clone(), f.archive_table()]).collect();
    let schemas: Vec<String> = names.iter().map(|q| q.schema.clone()).collect();
    let rels: Vec<String> = names.iter().map(|q| q.name.clone()).collect();
    for row in client.select(COLUMNS_SQL, None, &[schemas.into(), rels.into()]).map_err(err)? {
        let i = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as usize - 1;
        let f = &mut out[i / 2];
        let relkind = row.get::<String>(2).map_err(err)?.unwrap_or_default();
        let Some(name) = row.get::<String>(3).map_err(err)? else { continue };
        let column = Column {
            name,
            type_name: row.get::<String>(4).map_err(err)?.unwrap_or_default(),
            generated: row.get::<bool>(5).map_err(err)?.unwrap_or(false),
            not_null: row.get::<bool>(6).map_err(err)?.unwrap_or(false),
            has_default: row.get::<bool>(7).map_err(err)?.unwrap_or(false),
        };
        if i.is_multiple_of(2) {
            f.columns.push(column);
        } else {
            f.archive_relkind = Some(relkind);
            f.archive_columns.push(column);
        }
    }
    Ok(out)
}
