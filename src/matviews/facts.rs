//! The catalog reads of materialized view maintenance: every policy with
//! its view, what the view reads (through plain views and partitions), how
//! those relations are tracked and whether they changed since the view's
//! last refresh, in one statement whatever the number of views (what each
//! view reads is grouped by view once and joined, not scanned per view).
//! What makes a view's rows change without any table changing (functions
//! that may read other tables, the clock in its definition) is listed as a
//! reason to be unsure: such a view is refreshed whenever it is due. Only
//! a view whose stored rule has a clock expression (CURRENT_DATE and the
//! like) or calls one of the clock functions is deparsed to name it:
//! deparsing every view took half of a decision at 500 views. (Calls of
//! built-in functions leave no trace in pg_depend, so the rule's stored
//! node tree is searched for them (`tree_mentions`: a regular expression
//! took a fifth of a decision at 500 views); only the view's own rule,
//! read by its index: a plan that searched every rule in the database per
//! view took 18 ms a view.)

use super::plan::{Untracked, ViewFacts};
use crate::errors::Found;
use crate::sql::QualifiedName;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

const VIEWS_TEMPLATE: &str = "\
WITH reads AS MATERIALIZED ({reads}), \
reads_by_job AS (SELECT job_id, array_agg(relid) AS relids FROM reads GROUP BY job_id), \
upstream AS (SELECT rb.job_id, array_agg(u.job_id ORDER BY u.job_id) AS jobs \
               FROM reads_by_job rb CROSS JOIN LATERAL unnest(rb.relids) AS r(relid) \
               JOIN upkeep.matview_policies u ON u.matview::oid = r.relid \
              WHERE u.job_id <> rb.job_id GROUP BY rb.job_id), \
refresh_tracking AS (SELECT coalesce((SELECT e.xmin::text || e.evtenabled::text FROM pg_event_trigger e \
                                       WHERE e.evtname = 'upkeep_track_refreshes'), '-') AS seen), \
unneeded AS (SELECT array_agg(x.schema ORDER BY x.schema, x.name) AS schemas, \
                    array_agg(x.name ORDER BY x.schema, x.name) AS names, \
                    array_agg(x.owner ORDER BY x.schema, x.name) AS owners \
               FROM ({unneeded}) x WHERE $1::int8 IS NULL) \
SELECT p.job_id, pg_current_snapshot()::text AS snapshot, pg_current_xact_id_if_assigned()::text AS xid, \
       upkeep.command_id() AS cid, c.oid IS NOT NULL AND c.relkind = 'm' AS exists, \
       coalesce(n.nspname::text, '') AS schema, coalesce(c.relname::text, p.matview::oid::text) AS name, \
       coalesce(pg_get_userbyid(c.relowner)::text, '') AS owner, coalesce(c.relispopulated, false) AS populated, \
       p.concurrent AS concurrently, p.only_when_changed, p.enabled, \
       (j.next_run IS NULL OR j.next_run <= now()) AS scheduled, \
       EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid \
                  AND am.amname = 'btree' AND i.indpred IS NULL AND NOT (0 = ANY (i.indkey::int2[]))) AS unique_key, \
       coalesce(up.jobs, '{}') AS upstream, \
       coalesce(b.bases, '{}') AS bases, \
       md5(coalesce(b.seen, '') || (SELECT seen FROM refresh_tracking)) AS fingerprint, \
       coalesce(b.unsure, '{}') || coalesce(f.unsure, '{}') || coalesce(t.unsure, '{}') AS unsure, \
       coalesce(b.untracked_schema, '{}') AS untracked_schema, coalesce(b.untracked_name, '{}') AS untracked_name, \
       coalesce(b.untracked_allowed, '{}') AS untracked_allowed, \
       s.job_id IS NOT NULL AS refreshed, \
       coalesce((SELECT array_agg(DISTINCT ch.relid::regclass::text) FROM upkeep.changes ch \
                  WHERE ch.relid = ANY (s.bases) AND NOT upkeep.seen(ch, s)), '{}') AS changed, \
       s.fingerprint IS DISTINCT FROM md5(coalesce(b.seen, '') || (SELECT seen FROM refresh_tracking)) \
         OR s.bases IS DISTINCT FROM coalesce(b.bases, '{}') AS moved, \
       un.schemas AS unneeded_schema, un.names AS unneeded_name, un.owners AS unneeded_owner \
  FROM upkeep.matview_policies p \
  CROSS JOIN unneeded un \
  LEFT JOIN pg_class c ON c.oid = p.matview \
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
  LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
  LEFT JOIN upkeep.matview_state s ON s.job_id = p.job_id \
  LEFT JOIN reads_by_job rb ON rb.job_id = p.job_id \
  LEFT JOIN upstream up ON up.job_id = p.job_id \
  LEFT JOIN LATERAL ( \
    SELECT array_agg(r.relid ORDER BY r.relid) FILTER (WHERE rc.relkind IN ('r', 'p', 'm')) AS bases, \
           string_agg(r.relid::text || rc.relkind::text || coalesce(tg.xmin::text || tg.tgenabled::text, '-'), ',' \
                      ORDER BY r.relid) AS seen, \
           array_agg(CASE \
             WHEN rc.relkind = 'f' THEN format('reads foreign table %s, whose changes cannot be seen', r.relid::regclass) \
             WHEN rc.relkind NOT IN ('r', 'p', 'm', 'v') THEN format('reads %s, which is not a table', r.relid::regclass) \
             WHEN rc.relkind IN ('r', 'p') AND tg.oid IS NULL THEN format('changes to %s are not tracked yet', r.relid::regclass) \
             WHEN tg.tgenabled = 'D' THEN format('the trigger tracking changes to %s is disabled', r.relid::regclass) \
             WHEN rc.relkind = 'm' AND (SELECT seen FROM refresh_tracking) NOT LIKE '%O' AND (SELECT seen FROM refresh_tracking) NOT LIKE '%A' \
               THEN format('refreshes of %s cannot be seen: event trigger upkeep_track_refreshes is missing or disabled', r.relid::regclass) \
             WHEN EXISTS (SELECT 1 FROM pg_subscription_rel sr WHERE sr.srrelid = r.relid) \
               THEN format('%s is written by logical replication, whose changes are not all seen', r.relid::regclass) \
           END ORDER BY r.relid) FILTER (WHERE rc.relkind <> 'v') AS unsure, \
           array_agg(rn.nspname::text ORDER BY r.relid) FILTER (WHERE rc.relkind IN ('r', 'p') AND tg.oid IS NULL) AS untracked_schema, \
           array_agg(rc.relname::text ORDER BY r.relid) FILTER (WHERE rc.relkind IN ('r', 'p') AND tg.oid IS NULL) AS untracked_name, \
           array_agg(has_table_privilege(c.relowner, r.relid, 'TRIGGER') ORDER BY r.relid) \
             FILTER (WHERE rc.relkind IN ('r', 'p') AND tg.oid IS NULL) AS untracked_allowed \
      FROM unnest(rb.relids) AS r(relid) \
      JOIN pg_class rc ON rc.oid = r.relid \
      JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
      LEFT JOIN pg_trigger tg ON tg.tgrelid = r.relid AND tg.tgname = 'upkeep_track_changes' \
     WHERE r.relid <> p.matview::oid \
  ) b ON true \
  LEFT JOIN LATERAL ( \
    SELECT array_agg(DISTINCT format('calls %s, which may read tables whose changes cannot be seen', d.refobjid::regprocedure)) AS unsure \
      FROM unnest(rb.relids) AS r(relid) \
      JOIN pg_class v ON v.oid = r.relid AND (v.relkind = 'v' OR v.oid = p.matview::oid) \
      JOIN pg_rewrite w ON w.ev_class = v.oid \
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid AND d.refclassid = 'pg_proc'::regclass \
      JOIN pg_proc fn ON fn.oid = d.refobjid \
     WHERE fn.provolatile <> 'i' \
  ) f ON true \
  LEFT JOIN LATERAL ( \
    SELECT array_agg(DISTINCT format('%s uses %s, whose result changes without any table changing', \
                                     v.oid::regclass, lower(m[1]))) AS unsure \
      FROM unnest(rb.relids) AS r(relid) \
      JOIN pg_class v ON v.oid = r.relid AND (v.relkind = 'v' OR v.oid = p.matview::oid) \
     CROSS JOIN LATERAL (SELECT w.ev_action FROM pg_rewrite w WHERE w.ev_class = v.oid OFFSET 0) w \
     CROSS JOIN LATERAL regexp_matches(pg_get_viewdef(v.oid), \
       '\\m(now|current_date|current_timestamp|current_time|localtimestamp|localtime|clock_timestamp|statement_timestamp|transaction_timestamp|timeofday|random|nextval)\\M', 'gi') m \
     WHERE {mentions_clock} \
  ) t ON true \
 WHERE ($1::int8 IS NULL OR p.job_id = $1) AND {may_manage} \
 ORDER BY p.job_id";
/// Scoped to the jobs the caller may manage.
/// Tracking no view needs any more comes with every row when all jobs are
/// read (the walk of what the views read is the costliest part of both).
fn views_sql(reads: &str, mentions_clock: &str) -> String {
    VIEWS_TEMPLATE
        .replace("{reads}", reads)
        .replace("{mentions_clock}", mentions_clock)
        .replace("{may_manage}", &crate::ownership::may_manage_sql("p.matview"))
        .replace("{unneeded}", &unneeded_sql("reads"))
}

/// The clock functions' calls as a rule's node tree writes them.
const CLOCK_CALLS: &str = "SELECT ':funcid ' || f.oid || ' ' FROM pg_proc f \
                            WHERE f.pronamespace = 'pg_catalog'::regnamespace \
                              AND f.proname IN ('now', 'clock_timestamp', 'statement_timestamp', \
                                                'transaction_timestamp', 'timeofday', 'random', 'nextval')";

static VIEWS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    views_sql(
        "SELECT job_id, relid FROM upkeep.matview_reads($1)",
        &format!("upkeep.tree_mentions(w.ev_action::text, ARRAY['{{SQLVALUEFUNCTION '] || ARRAY({CLOCK_CALLS}))"),
    )
});

/// The same read with the SQL objects of 0.3.0 (after a package upgrade,
/// before ALTER EXTENSION UPDATE): every view's reads walked, and the
/// rules searched by a regular expression.
static VIEWS_SQL_BEFORE_UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    views_sql(
        "SELECT job_id, relid FROM upkeep.matview_reads() WHERE $1::int8 IS NULL OR job_id = $1",
        &format!(
            "w.ev_action::text ~ ('\\{{SQLVALUEFUNCTION |(' \
                                  || (SELECT string_agg(rtrim(c), '|') FROM ({CLOCK_CALLS}) x(c)) || ') ')"
        ),
    )
});

/// Whether a stored node tree (a rule's `ev_action`) holds any of the
/// strings: the clock expressions and calls of clock functions a view's
/// facts look for, by a fast substring search per string.
#[pg_extern(immutable, strict, parallel_safe)]
fn tree_mentions(tree: &str, needles: Vec<Option<String>>) -> bool {
    needles.iter().flatten().any(|n| tree.contains(n.as_str()))
}

/// Whether there is any policy, and the SQL objects are this version's.
const ANY_POLICY_SQL: &str = "SELECT to_regprocedure('upkeep.tree_mentions(text, text[])') IS NOT NULL \
                                FROM upkeep.matview_policies LIMIT 1";

/// Tables pg_upkeep tracks that no view refreshed only when changed reads
/// any more, (schema, name, owner), given what every view reads
/// (`matview_reads()` or its rows): all policies count, not only those the
/// caller may manage.
fn unneeded_sql(reads: &str) -> String {
    format!(
        "\
SELECT n.nspname::text AS schema, c.relname::text AS name, pg_get_userbyid(c.relowner)::text AS owner \
  FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE tg.tgname = 'upkeep_track_changes' AND tg.tgfoid = 'upkeep.track_changes'::regproc \
   AND NOT EXISTS (SELECT 1 FROM {reads} r JOIN upkeep.matview_policies p ON p.job_id = r.job_id \
                    WHERE r.relid = tg.tgrelid AND p.only_when_changed AND p.enabled)"
    )
}

static UNNEEDED_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} ORDER BY 1, 2", unneeded_sql("upkeep.matview_reads()")));

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// Tracked tables no view needs: (table, owner).
type Unneeded = Vec<(QualifiedName, String)>;

/// Every policy (or one) with its view's facts, read in one snapshot,
/// which they carry.
pub fn load(client: &SpiClient<'_>, job: Option<i64>) -> Result<Vec<ViewFacts>, String> {
    Ok(read(client, job)?.0)
}

/// Every policy with its view's facts, and the tracking no view needs any
/// more (read with them when there are policies the caller may manage).
pub fn load_all(client: &SpiClient<'_>) -> Result<(Vec<ViewFacts>, Unneeded), String> {
    match read(client, None)? {
        (views, Some(unneeded)) => Ok((views, unneeded)),
        (views, None) => Ok((views, unneeded_tracking(client)?)),
    }
}

/// The facts of every policy (or one), with the unneeded tracking when
/// all were read and there was at least one row.
fn read(client: &SpiClient<'_>, job: Option<i64>) -> Result<(Vec<ViewFacts>, Option<Unneeded>), String> {
    let mut out = Vec::new();
    let mut unneeded = None;
    // Planning the read takes a few milliseconds, most of a maintenance
    // call in a database without view policies. (Its generic plan, which
    // would be planned once, misjudges how many policies there are.)
    let current = statements::select(client, ANY_POLICY_SQL, &[], &[], |rows| {
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get::<bool>(1).map_err(err)
    })?;
    let sql = match current {
        None => return Ok((out, unneeded)),
        Some(true) => VIEWS_SQL.as_str(),
        Some(false) => VIEWS_SQL_BEFORE_UPDATE.as_str(),
    };
    statements::select(client, sql, &[param(BuiltinOid::INT8OID)], &[job.into()], |rows| {
        for row in rows {
            let text = |c: &str| row.get_by_name::<String, _>(c).map_err(err).map(Option::unwrap_or_default);
            let flag = |c: &str| row.get_by_name::<bool, _>(c).map_err(err).map(Option::unwrap_or_default);
            let texts =
                |c: &str| row.get_by_name::<Vec<Option<String>>, _>(c).map_err(err).map(Option::unwrap_or_default);
            let schemas = texts("untracked_schema")?;
            let names = texts("untracked_name")?;
            let allowed =
                row.get_by_name::<Vec<Option<bool>>, _>("untracked_allowed").map_err(err)?.unwrap_or_default();
            let untracked = schemas
                .into_iter()
                .zip(names)
                .zip(allowed)
                .map(|((s, n), a)| Untracked {
                    table: QualifiedName::new(s.unwrap_or_default(), n.unwrap_or_default()),
                    allowed: a.unwrap_or(false),
                })
                .collect();
            if job.is_none() && unneeded.is_none() {
                let owners = texts("unneeded_owner")?;
                let tables = texts("unneeded_schema")?.into_iter().zip(texts("unneeded_name")?);
                unneeded = Some(
                    tables
                        .zip(owners)
                        .map(|((s, n), o)| {
                            (QualifiedName::new(s.unwrap_or_default(), n.unwrap_or_default()), o.unwrap_or_default())
                        })
                        .collect(),
                );
            }
            out.push(ViewFacts {
                job_id: row.get_by_name::<i64, _>("job_id").map_err(err)?.unwrap_or_default(),
                snapshot: text("snapshot")?,
                xid: row.get_by_name::<String, _>("xid").map_err(err)?,
                cid: row.get_by_name::<i64, _>("cid").map_err(err)?.unwrap_or_default(),
                matview: QualifiedName::new(text("schema")?, text("name")?),
                exists: flag("exists")?,
                owner: text("owner")?,
                populated: flag("populated")?,
                concurrently: flag("concurrently")?,
                only_when_changed: flag("only_when_changed")?,
                enabled: flag("enabled")?,
                scheduled: flag("scheduled")?,
                unique_key: flag("unique_key")?,
                upstream: row.get_by_name::<Vec<i64>, _>("upstream").map_err(err)?.unwrap_or_default(),
                bases: row
                    .get_by_name::<Vec<pg_sys::Oid>, _>("bases")
                    .map_err(err)?
                    .unwrap_or_default()
                    .into_iter()
                    .map(pg_sys::Oid::to_u32)
                    .collect(),
                fingerprint: text("fingerprint")?,
                unsure: texts("unsure")?.into_iter().flatten().collect(),
                untracked,
                refreshed: flag("refreshed")?,
                changed: texts("changed")?.into_iter().flatten().collect(),
                moved: flag("moved")?,
            });
        }
        Ok(())
    })?;
    Ok((out, unneeded))
}

/// Tables tracked for nobody: (table, owner).
fn unneeded_tracking(client: &SpiClient<'_>) -> Result<Unneeded, String> {
    statements::select(client, UNNEEDED_SQL.as_str(), &[], &[], |rows| {
        rows.map(|r| {
            let t = |i| r.get::<String>(i).map_err(err).map(Option::unwrap_or_default);
            Ok((QualifiedName::new(t(1)?, t(2)?), t(3)?))
        })
        .collect()
    })
}

/// Columns that identify a row of the view, for the unique index
/// REFRESH ... CONCURRENTLY needs: its GROUP BY or DISTINCT columns when
/// they are all in its output, else None.
pub fn suggested_key(matview: pg_sys::Oid) -> Option<Vec<String>> {
    // SAFETY: opens the view under AccessShareLock and reads its _RETURN
    // rule's query tree, which lives in the relcache entry while it is open.
    unsafe {
        let rel = pg_sys::try_relation_open(matview, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        if rel.is_null() {
            return None;
        }
        let key = rule_query(rel).and_then(|q| grouping_columns(&*q));
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        key
    }
}

/// The SELECT rule's query of a view or materialized view.
unsafe fn rule_query(rel: pg_sys::Relation) -> Option<*mut pg_sys::Query> {
    unsafe {
        let rules = (*rel).rd_rules;
        if rules.is_null() {
            return None;
        }
        (0..(*rules).numLocks as usize).find_map(|i| {
            let rule = *(*rules).rules.add(i);
            if (*rule).event != pg_sys::CmdType::CMD_SELECT {
                return None;
            }
            let actions = pgrx::PgList::<pg_sys::Query>::from_pg((*rule).actions);
            actions.get_ptr(0)
        })
    }
}

unsafe fn grouping_columns(q: &pg_sys::Query) -> Option<Vec<String>> {
    unsafe {
        if !q.groupingSets.is_null() || !q.setOperations.is_null() {
            return None;
        }
        let clauses = if !q.groupClause.is_null() { q.groupClause } else { q.distinctClause };
        if clauses.is_null() || q.hasDistinctOn {
            return None;
        }
        let targets = pgrx::PgList::<pg_sys::TargetEntry>::from_pg(q.targetList);
        pgrx::PgList::<pg_sys::SortGroupClause>::from_pg(clauses)
            .iter_ptr()
            .map(|c| {
                let t = targets.iter_ptr().find(|t| (**t).ressortgroupref == (*c).tleSortGroupRef)?;
                if (*t).resjunk || (*t).resname.is_null() {
                    return None;
                }
                Some(std::ffi::CStr::from_ptr((*t).resname).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// All columns of the view, in order (the fallback unique key).
pub fn columns(matview: pg_sys::Oid) -> Vec<String> {
    Spi::get_one_with_args::<Vec<String>>(
        "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute \
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
        &[matview.into()],
    )
    .found()
    .unwrap_or_default()
}
