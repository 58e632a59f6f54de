//! Partition facts: what the catalogs say about managed parents, read in a
//! fixed number of queries however many parents there are. The types, and
//! the rules a parent must meet, are `upkeep_core::partitions::facts`.

use super::retention::ArchiveMode;
use crate::access;
use crate::calendar::Span;
use crate::catalog;
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

/// The policies `filter` picks (by $2) and what their tables look like;
/// $1: whether to compute their fingerprints. One statement per filter, so
/// that a lookup's plan probes the index its key has; unordered, as an
/// ORDER BY made that plan walk the primary key instead (sorted in Rust).
fn policies_sql(filter: &str) -> String {
    format!(
        r#"
SELECT p.job_id,
       CASE WHEN $1 THEN {FINGERPRINT} END AS fingerprint,
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
 WHERE {filter} AND {may_manage}"#,
        may_manage = crate::ownership::may_manage_sql("p.parent")
    )
}
static EVERY_POLICY_SQL: LazyLock<String> = LazyLock::new(|| policies_sql("true"));
static JOB_POLICIES_SQL: LazyLock<String> = LazyLock::new(|| policies_sql("p.job_id = ANY ($2)"));
static PARENT_POLICY_SQL: LazyLock<String> = LazyLock::new(|| policies_sql("p.parent::oid = $2"));

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
    // The views never record state, so they skip the fingerprint.
    let fingerprint = !matches!(scope, Scope::Report(_));
    let bool = param(BuiltinOid::BOOLOID);
    let read = |rows| {
        read_policies(rows).map(|mut raws| {
            raws.sort_unstable_by_key(|r| r.job_id);
            raws
        })
    };
    // Reads by key are lookups (`statements::lookup`): one plan a session.
    match scope {
        Scope::Report(None) => {
            statements::select(client, EVERY_POLICY_SQL.as_str(), &[bool], &[fingerprint.into()], read)
        }
        Scope::Report(Some(jobs)) | Scope::Jobs(jobs) => {
            let types = [bool, param(BuiltinOid::INT8ARRAYOID)];
            statements::lookup(
                client,
                JOB_POLICIES_SQL.as_str(),
                &types,
                &[fingerprint.into(), jobs.clone().into()],
                read,
            )
        }
        Scope::Parent(oid) => {
            let types = [bool, param(BuiltinOid::OIDOID)];
            statements::lookup(client, PARENT_POLICY_SQL.as_str(), &types, &[fingerprint.into(), (*oid).into()], read)
        }
    }
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
    if let Scope::Report(_) = scope {
        // Every parent at once: one statement's joins beat probes.
        statements::select(client, PARTITIONS_SQL, &[param(BuiltinOid::OIDARRAYOID)], &[oids.into()], |rows| {
            add_partitions(members(rows), &by_oid, &mut parents, &mut kept)
        })?;
        return Ok((parents, problems));
    }
    let snapshot = catalog::Snapshot::current();
    add_partitions(partitions_of(&snapshot, &oids).into_iter().map(Ok), &by_oid, &mut parents, &mut kept)?;
    // `<parent>_archive` tables and the partitions pg_upkeep moved into them.
    for (i, f) in parents.iter().enumerate() {
        if f.policy.archive != ArchiveMode::ArchiveTable {
            continue;
        }
        let archive = super::retention::archive_table(f);
        let Some(oid) = relation_named(&archive) else { continue };
        kept.push((i, oid, archive));
        kept.extend(partitions_of(&snapshot, &[oid]).into_iter().filter(|m| m.ours).map(|m| (i, m.oid, m.name)));
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

/// A partition, as PARTITIONS_SQL or `partitions_of` read it.
struct Member {
    parent: i64,
    oid: pg_sys::Oid,
    /// Whether it has pg_upkeep's bounds constraint: made by pg_upkeep.
    ours: bool,
    detach_pending: bool,
    name: QualifiedName,
    /// `pg_class.relpartbound`, a node tree's text.
    bound: String,
}

/// The partitions of the parents, from PARTITIONS_SQL's rows.
fn members(rows: SpiTupleTable<'_>) -> impl Iterator<Item = Result<Member, String>> + '_ {
    // By position (PARTITIONS_SQL's columns): by name, each value cost a
    // search of the columns, a tenth of the read at 24,000 partitions.
    rows.map(|row| {
        Ok(Member {
            parent: row.get::<i64>(1).map_err(spi_err)?.unwrap_or_default(),
            oid: pg_sys::Oid::from(row.get::<i64>(2).map_err(spi_err)?.unwrap_or_default() as u32),
            ours: row.get::<bool>(3).map_err(spi_err)?.unwrap_or(false),
            detach_pending: row.get::<bool>(4).map_err(spi_err)?.unwrap_or(false),
            name: QualifiedName::new(
                row.get::<String>(5).map_err(spi_err)?.unwrap_or_default(),
                row.get::<String>(6).map_err(spi_err)?.unwrap_or_default(),
            ),
            bound: row.get::<String>(7).map_err(spi_err)?.unwrap_or_default(),
        })
    })
}

/// The partitions of the parents, read by index probes and the catalog
/// cache: what PARTITIONS_SQL reads, without planning it on every call (a
/// plan made once goes wrong in a new database, where pg_inherits is empty
/// when it is made and grows with every partition the transaction makes).
fn partitions_of(snapshot: &catalog::Snapshot, parents: &[pg_sys::Oid]) -> Vec<Member> {
    let mut out = Vec::new();
    for &parent in parents {
        let mut children = Vec::new();
        snapshot.rows(
            catalog::INHERITS,
            Some(catalog::INHERITS_BY_PARENT),
            &[(catalog::INHERITS_INHPARENT, parent)],
            |row| {
                children.extend(row.oid(catalog::INHERITS_INHRELID).map(|oid| (oid, detach_pending(row))));
                true
            },
        );
        for (oid, detach_pending) in children {
            // A partition dropped since the scan (no lock is held on it) is
            // left out, as a later statement would not see it either.
            let Some((name, bound)) = partition_row(oid) else { continue };
            let ours = snapshot.has_constraint(oid, c"pg_upkeep_bounds");
            out.push(Member { parent: i64::from(parent.to_u32()), oid, ours, detach_pending, name, bound });
        }
    }
    out
}

/// Whether the pg_inherits row is of a partition being detached
/// concurrently (a step that came with PostgreSQL 14).
#[cfg(not(feature = "pg13"))]
fn detach_pending(row: &catalog::Row) -> bool {
    row.bool(catalog::INHERITS_DETACH_PENDING).unwrap_or(false)
}
#[cfg(feature = "pg13")]
fn detach_pending(_: &catalog::Row) -> bool {
    false
}

/// A partition's name and stored bound, from the catalog cache.
fn partition_row(oid: pg_sys::Oid) -> Option<(QualifiedName, String)> {
    // SAFETY: a catalog cache lookup; the name and the bound's text are
    // copied out before the row is released.
    let (name, schema, bound) = unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, oid.into());
        if tuple.is_null() {
            return None;
        }
        let c = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let name = std::ffi::CStr::from_ptr(c.relname.data.as_ptr()).to_string_lossy().into_owned();
        let mut null = false;
        let datum = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            tuple,
            pg_sys::Anum_pg_class_relpartbound as pg_sys::AttrNumber,
            &mut null,
        );
        let bound = if null {
            String::new()
        } else {
            let text = pg_sys::text_to_cstring(datum.cast_mut_ptr());
            let out = std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned();
            pg_sys::pfree(text.cast());
            out
        };
        let row = (name, c.relnamespace, bound);
        pg_sys::ReleaseSysCache(tuple);
        row
    };
    Some((QualifiedName::new(catalog::namespace_name(schema)?, name), bound))
}

/// Files each partition under its parent's facts, in the order of their
/// ranges (a default partition first).
fn add_partitions(
    members: impl IntoIterator<Item = Result<Member, String>>,
    by_oid: &BTreeMap<i64, usize>,
    parents: &mut [ParentFacts],
    ours: &mut Vec<(usize, pg_sys::Oid, QualifiedName)>,
) -> Result<(), String> {
    // Each bound is parsed here and freed before the next.
    let mut scratch = pgrx::PgMemoryContexts::new("pg_upkeep partition bounds");
    for member in members {
        let Member { parent, oid, ours: made, detach_pending, name, bound } = member?;
        let Some(&i) = by_oid.get(&parent) else { continue };
        if made {
            ours.push((i, oid, name.clone()));
        }
        // SAFETY: nothing allocated in `scratch` outlives this row.
        let range = unsafe {
            let range = scratch.switch_to(|_| range_of(&bound));
            scratch.reset();
            range
        }
        .map_err(|e| format!("could not read the bounds of partition {name}: {e}"))?;
        let f = &mut parents[i];
        if detach_pending {
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

/// The relation of that name, from the catalog cache.
fn relation_named(name: &QualifiedName) -> Option<pg_sys::Oid> {
    let schema = std::ffi::CString::new(name.schema.as_str()).ok()?;
    let relation = std::ffi::CString::new(name.name.as_str()).ok()?;
    // SAFETY: catalog cache lookups by name that report a missing one as
    // InvalidOid.
    let oid = unsafe {
        let namespace = pg_sys::get_namespace_oid(schema.as_ptr(), true);
        if namespace == pg_sys::Oid::INVALID {
            return None;
        }
        pg_sys::get_relname_relid(relation.as_ptr(), namespace)
    };
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}

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

/// Names looked up in the catalog cache (`to_regclass`), not by a plan made
/// on pg_class's statistics.
const TAKEN_SQL: &str = "SELECT w.s, w.n FROM unnest($1::text[], $2::text[]) w(s, n) \
                          WHERE to_regclass(quote_ident(w.s) || '.' || quote_ident(w.n)) IS NOT NULL";
