//! `upkeep.adopt_pg_partman()`: pg_partman's time-partitioned parents
//! become pg_upkeep policies in one reviewed call. Facts: `part_config`
//! (read by column name through `to_jsonb`, so 4.x and 5.x read alike) and
//! the catalogs; plan: `upkeep_core::partman::decide`; act: each parent
//! registered and pg_partman's maintenance of it turned off together, on
//! its own (one parent that fails leaves the others adopted).

use crate::calendar::{Bound, ColumnKind, Granularity, Span};
use crate::errors::bad_input;
use crate::partitions::facts::range_of;
use crate::partitions::PolicyArgs;
use crate::sql::{ident, QualifiedName};
use crate::statements::{self, param};
use pgrx::datum::Interval;
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::BTreeMap;
use upkeep_core::partitions::facts::Range;
use upkeep_core::partman::{decide, describe, Config, Parent, Registration, Verdict};

/// Where pg_partman is installed, its version, and whether pg_jobmon is.
const EXTENSION_SQL: &str = "\
SELECT n.nspname::text, e.extversion::text, EXISTS (SELECT 1 FROM pg_extension j WHERE j.extname = 'pg_jobmon') \
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_partman'";

/// `schema.table` as pg_partman stores it (unquoted, case as is) to the
/// relation's OID, the way pg_partman itself finds it.
pub fn relation_by_name(text: &str) -> String {
    format!(
        "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = split_part({text}, '.', 1) \
             AND c.relname = substr({text}, length(split_part({text}, '.', 1)) + 2))"
    )
}

/// Every `part_config` row with its parent's catalog facts. `{config}` is
/// pg_partman's table; $1 is the version's default of ignore_default_data.
const CONFIG_TEMPLATE: &str = "\
WITH cfg AS (SELECT to_jsonb(x) AS j FROM {config} x), \
     r AS (SELECT j, {parent} AS oid, {template} AS template FROM cfg) \
SELECT j->>'parent_table', j->>'control', coalesce(j->>'partition_type', ''), j->>'partition_interval', \
       coalesce((j->>'premake')::int4, 4), j->>'retention', j->>'retention_schema', \
       coalesce((j->>'retention_keep_table')::bool, true), coalesce((j->>'retention_keep_index')::bool, true), \
       coalesce((j->>'infinite_time_partitions')::bool, false), coalesce(j->>'automatic_maintenance', 'on'), \
       coalesce(j->>'epoch', 'none'), \
       CASE WHEN jsonb_typeof(j->'constraint_cols') = 'array' \
            THEN ARRAY(SELECT jsonb_array_elements_text(j->'constraint_cols')) ELSE '{}' END, \
       coalesce((j->>'jobmon')::bool, true), \
       CASE WHEN jsonb_typeof(j->'publications') = 'array' \
            THEN ARRAY(SELECT jsonb_array_elements_text(j->'publications')) ELSE '{}' END, \
       j->>'date_trunc_interval', coalesce((j->>'undo_in_progress')::bool, false), \
       coalesce((j->>'ignore_default_data')::bool, $1), \
       c.oid::regclass::text, coalesce(pg_has_role(current_user, c.relowner, 'USAGE'), false), \
       coalesce(pt.partstrat = 'r', false), format_type(a.atttypid, a.atttypmod), \
       coalesce(c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid \
                                             WHERE i.inhparent = c.oid AND k.relkind = 'p'), false), \
       ARRAY(SELECT CASE WHEN ti.indisunique THEN 'a unique index ' ELSE 'an index ' END \
                    || substring(pg_get_indexdef(ti.indexrelid) FROM ' USING .*') \
               FROM pg_index ti WHERE ti.indrelid = r.template \
                AND NOT EXISTS (SELECT 1 FROM pg_index pi WHERE pi.indrelid = c.oid AND pi.indisunique = ti.indisunique \
                                  AND substring(pg_get_indexdef(pi.indexrelid) FROM ' USING .*') \
                                    = substring(pg_get_indexdef(ti.indexrelid) FROM ' USING .*')) \
             UNION ALL \
             SELECT 'storage parameters ' || array_to_string(tc.reloptions, ', ') \
               FROM pg_class tc WHERE tc.oid = r.template AND tc.reloptions IS NOT NULL), \
       CASE WHEN a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype) \
                 AND coalesce(j->>'epoch', 'none') = 'none' \
            THEN (j->>'partition_interval')::interval END, \
       CASE WHEN a.atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype) \
                 AND coalesce(j->>'epoch', 'none') = 'none' \
            THEN CASE WHEN (j->>'retention')::interval > interval '0' THEN (j->>'retention')::interval END END, \
       c.oid::int8, j->>'subscription_refresh', coalesce((j->>'drop_cascade_fk')::bool, false) \
  FROM r \
  LEFT JOIN pg_class c ON c.oid = r.oid \
  LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid \
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = r.j->>'control' AND a.attnum > 0 AND NOT a.attisdropped \
 ORDER BY 1";

/// The partitions of the given parents.
const PARTITIONS_SQL: &str = "\
SELECT i.inhparent::int8, n.nspname::text, k.relname::text, k.relpartbound::text \
  FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid JOIN pg_namespace n ON n.oid = k.relnamespace \
 WHERE i.inhparent = ANY ($1)";

/// pg_upkeep's own policies on the given parents.
const EXISTING_SQL: &str = "\
SELECT p.parent::oid::int8, p.control, p.granularity, p.premake, p.retention, p.retention::text, p.archive, p.time_zone \
  FROM upkeep.partition_policies p WHERE p.parent::oid = ANY ($1)";

/// The database's TimeZone (what a new session starts with), then this
/// session's.
const ZONES_SQL: &str =
    "SELECT (SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'), current_setting('TimeZone')";

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

fn span(i: Interval) -> Span {
    Span { months: i.months(), days: i.days(), micros: i.micros() }
}

/// A configured parent: the facts, where its partitions are, and what
/// pg_partman calls it.
struct Found {
    parent: Parent,
    oid: Option<pg_sys::Oid>,
    /// (lower bound, partition), and the default partition.
    partitions: Vec<(Bound, QualifiedName)>,
    default: Option<QualifiedName>,
}

/// pg_partman in this database: its schema, its version, and whether
/// pg_jobmon is installed too; None without pg_partman.
pub fn installed(client: &SpiClient<'_>) -> Result<Option<(String, String, bool)>, String> {
    statements::select(client, EXTENSION_SQL, &[], &[], |rows| {
        if rows.is_empty() {
            return Ok(None);
        }
        let row = rows.first();
        Ok(Some((
            row.get::<String>(1).map_err(err)?.unwrap_or_default(),
            row.get::<String>(2).map_err(err)?.unwrap_or_default(),
            row.get::<bool>(3).map_err(err)?.unwrap_or(false),
        )))
    })
}

/// pg_partman's schema, and the facts of every parent it configures.
fn read(client: &SpiClient<'_>) -> Result<(String, Vec<Found>), String> {
    let Some((schema, version, jobmon_installed)) = installed(client)? else {
        bad_input(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "pg_partman is not installed in this database",
            "Run upkeep.adopt_pg_partman() in the database whose tables pg_partman manages.",
        );
    };
    let sql = CONFIG_TEMPLATE
        .replace("{config}", &format!("{}.part_config", ident(&schema)))
        .replace("{parent}", &relation_by_name("j->>'parent_table'"))
        .replace("{template}", &relation_by_name("j->>'template_table'"));
    // 5.x ignores the default partition's rows unless told otherwise.
    let ignore_default = !version.starts_with(['0', '1', '2', '3', '4']);
    let zones = statements::select(client, ZONES_SQL, &[], &[], |rows| {
        let row = rows.first();
        let mut zones: Vec<String> = Vec::new();
        for z in [row.get::<String>(1).map_err(err)?, row.get::<String>(2).map_err(err)?, Some("UTC".into())]
            .into_iter()
            .flatten()
        {
            if !zones.iter().any(|k| k.eq_ignore_ascii_case(&z)) {
                zones.push(z);
            }
        }
        Ok(zones)
    })?;
    let mut out = Vec::new();
    for row in client.select(&sql, None, &[ignore_default.into()]).map_err(err)? {
        let text = |i: usize| row.get::<String>(i).map_err(err);
        let flag = |i: usize| row.get::<bool>(i).map_err(err).map(Option::unwrap_or_default);
        let texts = |i: usize| row.get::<Vec<String>>(i).map_err(err).map(Option::unwrap_or_default);
        let config = Config {
            parent_table: text(1)?.unwrap_or_default(),
            control: text(2)?.unwrap_or_default(),
            partition_type: text(3)?.unwrap_or_default(),
            partition_interval: text(4)?.unwrap_or_default(),
            premake: row.get::<i32>(5).map_err(err)?.unwrap_or(4),
            retention: text(6)?,
            retention_schema: text(7)?,
            retention_keep_table: flag(8)?,
            retention_keep_index: flag(9)?,
            infinite_time_partitions: flag(10)?,
            automatic_maintenance: text(11)?.unwrap_or_default(),
            epoch: text(12)?.unwrap_or_default(),
            constraint_cols: texts(13)?,
            jobmon: flag(14)?,
            publications: texts(15)?,
            date_trunc_interval: text(16)?,
            undo_in_progress: flag(17)?,
            ignore_default_data: flag(18)?,
            interval: row.get::<Interval>(25).map_err(err)?.map(span),
            retention_span: row.get::<Interval>(26).map_err(err)?.map(span),
            subscription_refresh: text(28)?,
            drop_cascade_fk: flag(29)?,
        };
        let oid = row.get::<i64>(27).map_err(err)?.map(|o| pg_sys::Oid::from(o as u32));
        out.push(Found {
            parent: Parent {
                config,
                name: text(19)?,
                may_manage: flag(20)?,
                range_partitioned: flag(21)?,
                control_type: text(22)?,
                sub_partitioned: flag(23)?,
                template_extras: texts(24)?,
                jobmon_installed,
                zones: zones.clone(),
                ..Parent::default()
            },
            oid,
            partitions: Vec::new(),
            default: None,
        });
    }
    let by_oid: BTreeMap<u32, usize> =
        out.iter().enumerate().filter_map(|(i, f)| f.oid.map(|o| (o.to_u32(), i))).collect();
    let oids: Vec<pg_sys::Oid> = by_oid.keys().map(|&o| pg_sys::Oid::from(o)).collect();
    // Bounds are read for time partitions only (an id set's are numbers).
    let timed: Vec<pg_sys::Oid> = out.iter().filter(|f| time_control(&f.parent)).filter_map(|f| f.oid).collect();
    let types = [param(BuiltinOid::OIDARRAYOID)];
    statements::select(client, PARTITIONS_SQL, &types, &[timed.into()], |rows| {
        for row in rows {
            let parent = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32;
            let Some(&i) = by_oid.get(&parent) else { continue };
            let name = QualifiedName::new(
                row.get::<String>(2).map_err(err)?.unwrap_or_default(),
                row.get::<String>(3).map_err(err)?.unwrap_or_default(),
            );
            match range_of(&row.get::<String>(4).map_err(err)?.unwrap_or_default())? {
                Range::Default => out[i].default = Some(name),
                Range::Bounded { lower: Some(lower), .. } => out[i].partitions.push((lower, name)),
                Range::Bounded { lower: None, .. } => {}
            }
        }
        Ok(())
    })?;
    statements::select(client, EXISTING_SQL, &types, &[oids.into()], |rows| {
        for row in rows {
            let parent = row.get::<i64>(1).map_err(err)?.unwrap_or_default() as u32;
            let Some(&i) = by_oid.get(&parent) else { continue };
            let granularity = row.get::<String>(3).map_err(err)?.unwrap_or_default();
            out[i].parent.existing = Some(Registration {
                control: row.get::<String>(2).map_err(err)?.unwrap_or_default(),
                granularity: granularity.parse().unwrap_or(Granularity::Month),
                premake: row.get::<i32>(4).map_err(err)?.unwrap_or_default(),
                retention: row.get::<Interval>(5).map_err(err)?.map(span),
                retention_text: row.get::<String>(6).map_err(err)?,
                archive: row.get::<String>(7).map_err(err)?.unwrap_or_default(),
                time_zone: row.get::<String>(8).map_err(err)?.unwrap_or_default(),
            });
        }
        Ok(())
    })?;
    for f in &mut out {
        f.partitions.sort_by_key(|(lower, _)| std::cmp::Reverse(*lower));
        f.parent.lower_bounds = f.partitions.iter().map(|(b, _)| *b).collect();
        f.parent.has_default = f.default.is_some();
        if time_control(&f.parent) && f.parent.may_manage && !f.parent.config.infinite_time_partitions {
            f.parent.newest = newest(client, f)?;
        }
    }
    Ok((schema, out))
}

/// Partitioned by time: a date or timestamp control, not an epoch number.
fn time_control(p: &Parent) -> bool {
    p.config.epoch == "none" && p.control_type.as_deref().and_then(ColumnKind::from_sql_type).is_some()
}

/// The newest control value where pg_partman looks for it: the newest
/// partition that has rows, and the default partition's unless ignored.
fn newest(client: &SpiClient<'_>, f: &Found) -> Result<Option<Bound>, String> {
    let max_of = |table: &QualifiedName| -> Result<Option<Bound>, String> {
        let sql = format!(
            "SELECT (extract(epoch FROM max({})) * 1000000)::int8 FROM ONLY {}",
            ident(&f.parent.config.control),
            table.quoted()
        );
        client.select(&sql, None, &[]).map_err(err)?.first().get::<i64>(1).map_err(err)
    };
    let mut newest = None;
    for (_, partition) in &f.partitions {
        if let Some(b) = max_of(partition)? {
            newest = Some(b);
            break;
        }
    }
    if let (Some(default), false) = (&f.default, f.parent.config.ignore_default_data) {
        newest = newest.max(max_of(default)?);
    }
    Ok(newest)
}

/// Registers the policy and turns pg_partman's maintenance of the parent
/// off, both or neither; a dry run takes both steps and rolls them back.
fn adopt(schema: &str, f: &Found, r: &Registration, register: bool, dry_run: bool) -> Result<(), String> {
    let name = f.parent.name.clone().unwrap_or_default();
    let oid = f.oid.unwrap_or(pg_sys::InvalidOid);
    crate::executor::rehearsed(dry_run, || {
        if register {
            let granularity = r.granularity.to_string();
            let retention = r.retention.map(|s| Interval::new(s.months, s.days, s.micros)).transpose();
            let retention = retention.map_err(|e| format!("retention of {name}: {e}"))?;
            crate::partitions::register(
                oid,
                &name,
                &PolicyArgs {
                    control: Some(&r.control),
                    granularity: &granularity,
                    premake: r.premake,
                    retention,
                    archive: &r.archive,
                    time_zone: &r.time_zone,
                    start_at: None,
                },
            );
        }
        let sql =
            format!("UPDATE {}.part_config SET automatic_maintenance = 'off' WHERE parent_table = $1", ident(schema));
        Spi::connect_mut(|client| {
            client.update(&sql, None, &[f.parent.config.parent_table.as_str().into()]).map(|_| ())
        })
        .map_err(|e| format!("could not turn pg_partman's maintenance of {name} off: {e}"))
    })
}

/// One row per pg_partman parent: what pg_partman had, what pg_upkeep does
/// instead, and whether it was adopted (or, in a dry run, would be) or why
/// not. A dry run (the default) takes the same steps, so it meets the same
/// checks, and rolls them back.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn adopt_pg_partman(
    dry_run: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(parent, String),
        name!(pg_partman, String),
        name!(pg_upkeep, Option<String>),
        name!(status, String),
        name!(detail, String),
    ),
> {
    crate::errors::guarded("adopt_pg_partman", || {
        let dry_run = crate::errors::given(
            dry_run,
            "dry_run",
            "adopt_pg_partman",
            "Pass true (the default) to see what would be adopted, or false to adopt it.",
        );
        let (schema, found) =
            Spi::connect(read).unwrap_or_else(|e| error!("pg_upkeep could not read pg_partman's configuration: {e}"));
        let now = crate::partitions::now_micros();
        let rows: Vec<_> = found
            .iter()
            .map(|f| {
                let parent = f.parent.name.clone().unwrap_or_else(|| f.parent.config.parent_table.clone());
                let was = describe(&f.parent);
                let (registration, status, detail) = match decide(&f.parent, now) {
                    Verdict::Refuse { registration, reasons } => (registration, "not adopted", reasons.join("; ")),
                    Verdict::Adopt { registration, notes } => match adopt(&schema, f, &registration, true, dry_run) {
                        Ok(()) => {
                            (Some(registration), if dry_run { "would adopt" } else { "adopted" }, notes.join("; "))
                        }
                        Err(e) => (Some(registration), "not adopted", e),
                    },
                    Verdict::Already { registration, notes } => {
                        match adopt(&schema, f, &registration, false, dry_run) {
                            Ok(()) => (Some(registration), "already adopted", notes.join("; ")),
                            Err(e) => (Some(registration), "not adopted", e),
                        }
                    }
                };
                (parent.clone(), was, registration.map(|r| r.call(&parent)), status.to_string(), detail)
            })
            .collect();
        TableIterator::new(rows)
    })
}
