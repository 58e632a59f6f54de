//! Partition facts: what the catalogs say about managed parents, read in a
//! fixed number of queries however many parents there are. The types, and
//! the rules a parent must meet, are `upkeep_core::partitions::facts`.

use super::retention::ArchiveMode;
use crate::access;
use crate::calendar::Span;
use crate::sql::QualifiedName;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

pub use upkeep_core::partitions::facts::{ParentFacts, Partition, Policy, PolicyProblem, Range, RawParent};

/// Everything a policy's check depends on: its settings, its parent's
/// catalog row, and the parent's partitions (which tables, and the version
/// of each one's pg_inherits row, which ATTACH, DETACH, DROP and a pending
/// DETACH CONCURRENTLY change). Read with the facts, so it never vouches
/// for anything newer than them. A partition's own catalog row (a rename)
/// is left out: nothing a check decides depends on it, and reading it cost
/// a catalog lookup per partition, most of a run with nothing due.
pub const FINGERPRINT: &str =
    "md5(concat_ws('|', p.control, p.granularity, p.premake, p.time_zone, p.retention, p.archive, \
       extract(epoch FROM p.start_at), \
       (SELECT c.xmin::text FROM pg_class c WHERE c.oid = p.parent), \
       (SELECT sum(a.xmin::text::int8) FROM pg_attribute a WHERE a.attrelid = p.parent AND a.attnum > 0), \
       (SELECT count(*) || ':' || coalesce(sum(o.xmin::text::int8), 0) FROM pg_policy o \
         WHERE o.polrelid = p.parent OR o.polrelid IN (SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = p.parent)), \
       (SELECT count(*) || ':' || coalesce(sum(i.inhrelid::int8), 0) || ':' || coalesce(sum(i.xmin::text::int8), 0) \
          FROM pg_inherits i WHERE i.inhparent = p.parent)))";

/// The policies (all, or some) and what their tables look like.
static POLICIES_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
SELECT p.job_id,
       CASE WHEN $3 THEN {FINGERPRINT} END AS fingerprint,
       p.parent::oid::int8 AS oid,
       p.parent::text AS target,
       c.oid IS NOT NULL AS exists,
       n.nspname::text AS schema,
       c.relname::text AS name,
       p.control, p.granularity, p.premake, p.time_zone,
       (extract(epoch FROM p.start_at) * 1000000)::int8 AS start_at,
       p.retention, p.archive,
       c.relkind::text AS relkind,
       pt.partstrat::text AS strategy,
       coalesce(pt.partnatts, 0)::int4 AS key_columns,
       coalesce(pt.partattrs[0] = a.attnum, false) AS keyed_on_control,
       format_type(a.atttypid, a.atttypmod) AS control_type,
       pg_get_userbyid(c.relowner)::text AS owner,
       ts.spcname::text AS tablespace,
       coalesce(c.relpersistence = 'u', false) AS unlogged,
       ARRAY(SELECT x.attname::text FROM pg_attribute x
              WHERE x.attrelid = c.oid AND x.attnum > 0 AND NOT x.attisdropped AND x.attgenerated = ''
              ORDER BY x.attnum) AS columns,
       CASE split_part(btrim(p.archive), ':', 1)
            WHEN 'schema' THEN (SELECT has_schema_privilege(c.relowner, s.oid, 'CREATE')
                                  FROM pg_namespace s WHERE s.nspname = tn.name)
            WHEN 'tablespace' THEN (SELECT t.oid = d.dattablespace OR has_tablespace_privilege(c.relowner, t.oid, 'CREATE')
                                      FROM pg_tablespace t, pg_database d
                                     WHERE t.spcname = tn.name AND d.datname = current_database())
       END AS archive_target
  FROM upkeep.partition_policies p
  CROSS JOIN LATERAL (SELECT btrim(substr(btrim(p.archive), strpos(btrim(p.archive), ':') + 1)) AS name) tn
  LEFT JOIN pg_class c ON c.oid = p.parent
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = p.control AND NOT a.attisdropped
  LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
 WHERE ($1::oid IS NULL OR p.parent::oid = $1) AND ($2::int8[] IS NULL OR p.job_id = ANY ($2))
   AND {may_manage}
 ORDER BY p.job_id"#,
        may_manage = crate::ownership::may_manage_sql("p.parent")
    )
});

/// The partitions of the given parents, with their stored bounds (read by
/// `range_of`). `$detach_pending` is pg_inherits.inhdetachpending, which
/// came with DETACH CONCURRENTLY in PostgreSQL 14.
macro_rules! partitions_sql {
    ($detach_pending:literal) => {
        concat!(
            r#"
SELECT i.inhparent::int8 AS parent,
       k.oid::int8 AS oid,
       EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conrelid = k.oid AND x.conname = 'pg_upkeep_bounds') AS ours,
       "#,
            $detach_pending,
            r#" AS detach_pending,
       kn.nspname::text AS schema,
       k.relname::text AS name,
       k.relpartbound::text AS bound
  FROM pg_inherits i
  JOIN pg_class k ON k.oid = i.inhrelid
  JOIN pg_namespace kn ON kn.oid = k.relnamespace
 WHERE i.inhparent = ANY($1)"#
        )
    };
}
#[cfg(not(feature = "pg13"))]
const PARTITIONS_SQL: &str = partitions_sql!("i.inhdetachpending");
#[cfg(feature = "pg13")]
const PARTITIONS_SQL: &str = partitions_sql!("false");

/// Microseconds from 2000-01-01, PostgreSQL's epoch for dates and times,
/// back to 1970.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A partition's range from its stored bound (`pg_class.relpartbound`, a
/// node tree), in microseconds since 1970 in the column's domain (civil
/// time for date and timestamp, UTC for timestamptz); `None` for MINVALUE,
/// MAXVALUE and the infinities. Reading the tree costs a fraction of
/// deparsing it with pg_get_expr() and parsing the text back, which took
/// most of the views' time at 24,000 partitions. Only the first column is
/// read: a managed parent has one. The tree is allocated in the current
/// memory context.
pub fn range_of(tree: &str) -> Result<Range, String> {
    let text = std::ffi::CString::new(tree).map_err(|e| e.to_string())?;
    // SAFETY: stringToNode parses the text PostgreSQL itself wrote for a
    // PartitionBoundSpec; every node is checked for its tag before it is
    // read as that node.
    unsafe {
        let spec = pg_sys::stringToNode(text.as_ptr()) as *mut pg_sys::PartitionBoundSpec;
        if spec.is_null() || (*spec).type_ != pg_sys::NodeTag::T_PartitionBoundSpec {
            return Err("a partition bound that is not a PartitionBoundSpec".into());
        }
        if (*spec).is_default {
            return Ok(Range::Default);
        }
        if (*spec).strategy as u8 != b'r' {
            return Err("a partition bound that is not a range".into());
        }
        Ok(Range::Bounded { lower: first_datum((*spec).lowerdatums)?, upper: first_datum((*spec).upperdatums)? })
    }
}

/// The first datum of a range bound, in microseconds since 1970.
///
/// # Safety
/// `datums` is a bound's list of PartitionRangeDatum nodes.
unsafe fn first_datum(datums: *mut pg_sys::List) -> Result<Option<i64>, String> {
    let list = unsafe { pgrx::PgList::<pg_sys::PartitionRangeDatum>::from_pg(datums) };
    let Some(datum) = list.get_ptr(0) else { return Err("a range bound without a value".into()) };
    let (kind, value) = unsafe { ((*datum).kind, (*datum).value as *mut pg_sys::Const) };
    if kind != pg_sys::PartitionRangeDatumKind::PARTITION_RANGE_DATUM_VALUE {
        return Ok(None);
    }
    if value.is_null() || unsafe { (*value).xpr.type_ } != pg_sys::NodeTag::T_Const {
        return Err("a range bound whose value is not a constant".into());
    }
    let (typ, datum) = unsafe { ((*value).consttype, (*value).constvalue) };
    let micros = match typ {
        pg_sys::DATEOID => match datum.value() as i32 {
            i32::MIN | i32::MAX => return Ok(None),
            days => i64::from(days) * 86_400_000_000,
        },
        pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => match datum.value() as i64 {
            i64::MIN | i64::MAX => return Ok(None),
            micros => micros,
        },
        other => return Err(format!("a range bound of type {}, not a date or time", other.to_u32())),
    };
    Ok(Some(micros + POSTGRES_EPOCH_MICROS))
}

fn spi_err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// Which policies to read.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every policy (or these jobs'), for the views: policies and
    /// partitions only, without the access rules and unfinished moves that
    /// only a plan needs.
    Report(Option<Vec<i64>>),
    /// One parent's policy, in full.
    Parent(pg_sys::Oid),
    /// These jobs' policies, in full.
    Jobs(Vec<i64>),
}

/// Reads the raw policy rows: one query whatever the number of policies.
fn read_raw(client: &SpiClient<'_>, scope: &Scope) -> Result<Vec<RawParent>, String> {
    let (parent, jobs) = match scope {
        Scope::Report(jobs) => (None, jobs.clone()),
        Scope::Parent(oid) => (Some(*oid), None),
        Scope::Jobs(ids) => (None, Some(ids.clone())),
    };
    // The views never record state, so they skip the fingerprint.
    let fingerprint = !matches!(scope, Scope::Report(_));
    let types = [param(BuiltinOid::OIDOID), param(BuiltinOid::INT8ARRAYOID), param(BuiltinOid::BOOLOID)];
    statements::select(
        client,
        POLICIES_SQL.as_str(),
        &types,
        &[parent.into(), jobs.into(), fingerprint.into()],
        |rows| read_policies(rows),
    )
}

fn read_policies(rows: SpiTupleTable<'_>) -> Result<Vec<RawParent>, String> {
    let mut out = Vec::new();
    for row in rows {
        let text = |c: &str| row.get_by_name::<String, _>(c).map_err(spi_err);
        out.push(RawParent {
            job_id: row.get_by_name::<i64, _>("job_id").map_err(spi_err)?.unwrap_or_default(),
            oid: row.get_by_name::<i64, _>("oid").map_err(spi_err)?.unwrap_or_default(),
            fingerprint: row.get_by_name::<String, _>("fingerprint").map_err(spi_err)?.unwrap_or_default(),
            target: text("target")?.unwrap_or_default(),
            exists: row.get_by_name::<bool, _>("exists").map_err(spi_err)?.unwrap_or(false),
            schema: text("schema")?.unwrap_or_default(),
            name: text("name")?.unwrap_or_default(),
            control: text("control")?.unwrap_or_default(),
            granularity: text("granularity")?.unwrap_or_default(),
            premake: row.get_by_name::<i32, _>("premake").map_err(spi_err)?.unwrap_or(0),
            time_zone: text("time_zone")?.unwrap_or_default(),
            start_at: row.get_by_name::<i64, _>("start_at").map_err(spi_err)?,
            retention: row.get_by_name::<pgrx::datum::Interval, _>("retention").map_err(spi_err)?.map(|i| Span {
                months: i.months(),
                days: i.days(),
                micros: i.micros(),
            }),
            archive: text("archive")?.unwrap_or_default(),
            relkind: text("relkind")?.unwrap_or_default(),
            distributed: false,
            strategy: text("strategy")?,
            key_columns: row.get_by_name::<i32, _>("key_columns").map_err(spi_err)?.unwrap_or(0),
            keyed_on_control: row.get_by_name::<bool, _>("keyed_on_control").map_err(spi_err)?.unwrap_or(false),
            control_type: text("control_type")?,
            owner: text("owner")?.unwrap_or_default(),
            tablespace: text("tablespace")?,
            unlogged: row.get_by_name::<bool, _>("unlogged").map_err(spi_err)?.unwrap_or(false),
            columns: row.get_by_name::<Vec<String>, _>("columns").map_err(spi_err)?.unwrap_or_default(),
            archive_target: row.get_by_name::<bool, _>("archive_target").map_err(spi_err)?,
        });
    }
    Ok(out)
}

/// Facts for the policies in `scope`: three catalog queries in all.
/// Policies whose tables no longer fit come back as problems.
pub fn load(client: &SpiClient<'_>, scope: &Scope) -> Result<(Vec<ParentFacts>, Vec<PolicyProblem>), String> {
    let mut parents = Vec::new();
    let mut problems = Vec::new();
    let mut by_oid: BTreeMap<i64, usize> = BTreeMap::new();
    let mut raws = read_raw(client, scope)?;
    let tables: Vec<pg_sys::Oid> = raws.iter().map(|r| pg_sys::Oid::from(r.oid as u32)).collect();
    let distributed = crate::citus::distributed(client, &tables)?;
    for raw in &mut raws {
        raw.distributed = distributed.contains(&(raw.oid as u32));
    }
    for raw in raws {
        let oid = raw.oid;
        match raw.validate() {
            Ok(f) => {
                by_oid.insert(oid, parents.len());
                parents.push(f);
            }
            Err(p) => problems.push(p),
        }
    }
    if parents.is_empty() {
        return Ok((parents, problems));
    }
    let oids: Vec<pg_sys::Oid> = by_oid.keys().map(|&o| pg_sys::Oid::from(o as u32)).collect();
    // Relations made for each parent, to keep in line with its rules.
    let mut kept: Vec<(usize, pg_sys::Oid, QualifiedName)> = Vec::new();
    statements::select(client, PARTITIONS_SQL, &[param(BuiltinOid::OIDARRAYOID)], &[oids.clone().into()], |rows| {
        add_partitions(rows, &by_oid, &mut parents, &mut kept)
    })?;
    if matches!(scope, Scope::Report(_)) {
        return Ok((parents, problems));
    }
    let archives: Vec<(usize, QualifiedName)> = parents
        .iter()
        .enumerate()
        .filter(|(_, f)| f.policy.archive == ArchiveMode::ArchiveTable)
        .map(|(i, f)| (i, super::retention::archive_table(f)))
        .collect();
    if !archives.is_empty() {
        let schemas: Vec<String> = archives.iter().map(|(_, q)| q.schema.clone()).collect();
        let names: Vec<String> = archives.iter().map(|(_, q)| q.name.clone()).collect();
        let types = [param(BuiltinOid::TEXTARRAYOID), param(BuiltinOid::TEXTARRAYOID)];
        statements::select(client, ARCHIVE_RELATIONS_SQL, &types, &[schemas.into(), names.into()], |rows| {
            for row in rows {
                let i = archives[row.get::<i64>(1).map_err(spi_err)?.unwrap_or_default() as usize - 1].0;
                let oid = pg_sys::Oid::from(row.get::<i64>(2).map_err(spi_err)?.unwrap_or_default() as u32);
                let name = QualifiedName::new(
                    row.get::<String>(3).map_err(spi_err)?.unwrap_or_default(),
                    row.get::<String>(4).map_err(spi_err)?.unwrap_or_default(),
                );
                kept.push((i, oid, name));
            }
            Ok(())
        })?;
    }
    // Parents in their order: `kept` numbers them by position.
    let mut tables = vec![pg_sys::Oid::INVALID; parents.len()];
    for (&oid, &i) in &by_oid {
        tables[i] = pg_sys::Oid::from(oid as u32);
    }
    for (f, (rules, drift)) in parents.iter_mut().zip(access::read_with_drift(client, &tables, kept)?) {
        f.access = rules;
        f.drift = drift;
    }
    let jobs: Vec<i64> = parents.iter().map(|f| f.policy.job_id).collect();
    for (job_id, u) in crate::unfinished::read(client, &jobs)? {
        if let Some(f) = parents.iter_mut().find(|f| f.policy.job_id == job_id) {
            f.unfinished.push(u);
        }
    }
    Ok((parents, problems))
}

/// Files each partition row under its parent's facts, in the order of
/// their ranges (a default partition first).
fn add_partitions(
    rows: SpiTupleTable<'_>,
    by_oid: &BTreeMap<i64, usize>,
    parents: &mut [ParentFacts],
    ours: &mut Vec<(usize, pg_sys::Oid, QualifiedName)>,
) -> Result<(), String> {
    // Each row's bound is parsed here and freed before the next.
    let mut scratch = pgrx::PgMemoryContexts::new("pg_upkeep partition bounds");
    // By position (PARTITIONS_SQL's columns): by name, each value cost a
    // search of the columns, a tenth of the read at 24,000 partitions.
    for row in rows {
        let parent = row.get::<i64>(1).map_err(spi_err)?.unwrap_or_default();
        let Some(&i) = by_oid.get(&parent) else { continue };
        let name = QualifiedName::new(
            row.get::<String>(5).map_err(spi_err)?.unwrap_or_default(),
            row.get::<String>(6).map_err(spi_err)?.unwrap_or_default(),
        );
        if row.get::<bool>(3).map_err(spi_err)?.unwrap_or(false) {
            let oid = row.get::<i64>(2).map_err(spi_err)?.unwrap_or_default();
            ours.push((i, pg_sys::Oid::from(oid as u32), name.clone()));
        }
        let tree = row.get::<String>(7).map_err(spi_err)?.unwrap_or_default();
        // SAFETY: nothing allocated in `scratch` outlives this row.
        let range = unsafe {
            let range = scratch.switch_to(|_| range_of(&tree));
            scratch.reset();
            range
        }
        .map_err(|e| format!("could not read the bounds of partition {name}: {e}"))?;
        let f = &mut parents[i];
        if row.get::<bool>(4).map_err(spi_err)?.unwrap_or(false) {
            f.detach_pending = Some(name.clone());
        }
        if range == Range::Default {
            f.default_partition = Some(name.clone());
        }
        f.partitions.push(Partition { name, range });
    }
    for f in parents.iter_mut() {
        f.partitions.sort_by_key(|p| match p.range {
            Range::Default => (false, None),
            Range::Bounded { lower, .. } => (true, lower),
        });
    }
    Ok(())
}

/// `<parent>_archive` tables (by schema and name) and the partitions
/// pg_upkeep moved into them, numbered by the position of their name.
/// Each partition's bounds constraint is probed by its index (LATERAL ...
/// LIMIT 1): written as EXISTS, the planner, sure from stale statistics
/// that few such constraints exist, turned it into a scan of all of them,
/// every partition ever made, on every call (a fifth of creating
/// partitions for 200 parents in one transaction, and growing with the
/// square of them). Names are looked up in the catalog cache
/// (`to_regclass`), not by a plan made on pg_class's statistics.
const ARCHIVE_RELATIONS_SQL: &str = "\
SELECT w.i, r.oid::int8, rn.nspname::text, r.relname::text \
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, n, i) \
  CROSS JOIN LATERAL (SELECT to_regclass(quote_ident(w.s) || '.' || quote_ident(w.n))::oid AS oid) a \
  CROSS JOIN LATERAL (SELECT a.oid WHERE a.oid IS NOT NULL UNION ALL \
                      SELECT i.inhrelid FROM pg_inherits i \
                       CROSS JOIN LATERAL (SELECT 1 FROM pg_constraint x \
                                            WHERE x.conrelid = i.inhrelid AND x.conname = 'pg_upkeep_bounds' LIMIT 1) b \
                       WHERE i.inhparent = a.oid) x(oid) \
  JOIN pg_class r ON r.oid = x.oid \
  JOIN pg_namespace rn ON rn.oid = r.relnamespace";

/// Which of the given names are taken in their schemas (by any relation).
pub fn taken_names(client: &SpiClient<'_>, wanted: &[QualifiedName]) -> Result<BTreeSet<QualifiedName>, String> {
    let schemas: Vec<String> = wanted.iter().map(|q| q.schema.clone()).collect();
    let names: Vec<String> = wanted.iter().map(|q| q.name.clone()).collect();
    let types = [param(BuiltinOid::TEXTARRAYOID), param(BuiltinOid::TEXTARRAYOID)];
    statements::select(client, TAKEN_SQL, &types, &[schemas.into(), names.into()], |rows| {
        rows.map(|row| {
            Ok(QualifiedName::new(
                row.get::<String>(1).map_err(spi_err)?.unwrap_or_default(),
                row.get::<String>(2).map_err(spi_err)?.unwrap_or_default(),
            ))
        })
        .collect()
    })
}

/// Names looked up in the catalog cache, as in ARCHIVE_RELATIONS_SQL.
const TAKEN_SQL: &str = "SELECT w.s, w.n FROM unnest($1::text[], $2::text[]) w(s, n) \
                          WHERE to_regclass(quote_ident(w.s) || '.' || quote_ident(w.n)) IS NOT NULL";
