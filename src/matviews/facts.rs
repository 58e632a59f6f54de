//! The catalog reads of materialized view maintenance: every policy with
//! its view, what the view reads (through plain views and partitions), how
//! those relations are tracked and whether they changed since the view's
//! last refresh. The walk of what views read is the library's own
//! (`reads`); one statement reads the policies, their state and the
//! changes, in the snapshot a refresh records. What makes a view's rows
//! change without any table changing (functions that may read other
//! tables, the clock in its definition) is listed as a reason to be
//! unsure: such a view is refreshed whenever it is due. Only a view whose
//! stored rule has a clock expression (CURRENT_DATE and the like) or calls
//! one of the clock functions is deparsed to name it: deparsing every view
//! took half of a decision at 500 views.

use super::plan::ViewFacts;
use super::reads::{ViewReads, Walk};
use crate::errors::Found;
use crate::sql::QualifiedName;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::{BTreeSet, HashMap};
use upkeep_core::matviews::changes::{Change, Refresh};
use upkeep_core::matviews::reads::{compare, summarize};

/// The policies `filter` picks, with their views, state and changes. The
/// snapshot is taken here, before the walk reads the catalogs. Every
/// policy's read has no parameter, so the plan cache plans it once a
/// session (with one, it made five custom plans first, a millisecond each
/// in every maintenance call's first five).
fn policies_sql(filter: &str) -> String {
    format!(
        "\
SELECT p.job_id, pg_current_snapshot()::text AS snapshot, pg_current_xact_id_if_assigned()::text AS xid, \
       upkeep.command_id() AS cid, coalesce(pg_has_role(c.relowner, 'USAGE'), {may_manage_database}) AS mine, \
       p.matview::oid AS relid, c.relowner AS owner_id, \
       c.oid IS NOT NULL AND c.relkind = 'm' AS exists, \
       coalesce(n.nspname::text, '') AS schema, coalesce(c.relname::text, p.matview::oid::text) AS name, \
       coalesce(pg_get_userbyid(c.relowner)::text, '') AS owner, coalesce(c.relispopulated, false) AS populated, \
       p.concurrent AS concurrently, p.only_when_changed, p.enabled, \
       (j.next_run IS NULL OR j.next_run <= now()) AS scheduled, \
       EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
                WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid \
                  AND am.amname = 'btree' AND i.indpred IS NULL AND NOT (0 = ANY (i.indkey::int2[]))) AS unique_key, \
       s.job_id IS NOT NULL AS refreshed, s.bases AS refreshed_bases, s.fingerprint AS refreshed_fingerprint, \
       s.snapshot::text AS refreshed_snapshot, s.xid::text AS refreshed_xid, s.cid AS refreshed_cid, \
       (SELECT coalesce((SELECT e.xmin::text || e.evtenabled::text FROM pg_event_trigger e \
                          WHERE e.evtname = 'upkeep_track_refreshes'), '-')) AS refresh_tracking \
  FROM upkeep.matview_policies p \
  LEFT JOIN pg_class c ON c.oid = p.matview \
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
  LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
  LEFT JOIN upkeep.matview_state s ON s.job_id = p.job_id \
 WHERE {filter} \
 ORDER BY p.job_id",
        may_manage_database = crate::ownership::MAY_MANAGE_DATABASE_SQL
    )
}
static EVERY_POLICY_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| policies_sql("true"));
static JOB_POLICY_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| policies_sql("p.job_id = $1"));

/// The change records, read once for all views.
const CHANGES_SQL: &str = "SELECT relid, xid::text, cid FROM upkeep.changes";

/// The clock functions, whose calls in a view's query make its rows
/// change without any table changing.
const CLOCK_FUNCTIONS_SQL: &str = "SELECT coalesce(array_agg(f.oid::int8), '{}') FROM pg_proc f \
                                    WHERE f.pronamespace = 'pg_catalog'::regnamespace \
                                      AND f.proname IN ('now', 'clock_timestamp', 'statement_timestamp', \
                                                        'transaction_timestamp', 'timeofday', 'random', 'nextval')";

/// The clock a view's definition names, as it names it.
const CLOCK_WORDS_SQL: &str = "\
SELECT coalesce(array_agg(DISTINCT lower(m[1])), '{}') \
  FROM regexp_matches(pg_get_viewdef($1), \
       '\\m(now|current_date|current_timestamp|current_time|localtimestamp|localtime|clock_timestamp|statement_timestamp|transaction_timestamp|timeofday|random|nextval)\\M', 'gi') m";

/// The tables pg_upkeep tracks: (OID, schema, name, owner).
const TRACKED_SQL: &str = "\
SELECT tg.tgrelid, n.nspname::text, c.relname::text, pg_get_userbyid(c.relowner)::text \
  FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE tg.tgname = 'upkeep_track_changes' AND tg.tgfoid = 'upkeep.track_changes'::regproc \
 ORDER BY 2, 3";

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// Tracked tables no view needs: (table, owner).
type Unneeded = Vec<(QualifiedName, String)>;

/// Every policy (or one) the caller may manage, with its view's facts,
/// read in one snapshot, which they carry.
pub fn load(client: &SpiClient<'_>, job: Option<i64>) -> Result<Vec<ViewFacts>, String> {
    let policies = policies(client, job)?;
    let mut reading = Reading::new(client, &policies)?;
    policies.into_iter().filter(|p| p.mine).map(|p| reading.view_facts(p)).collect()
}

/// Every policy the caller may manage with its view's facts, and the
/// tables pg_upkeep tracks that no view refreshed only when changed reads
/// any more (all policies count, not only the caller's).
pub fn load_all(client: &SpiClient<'_>) -> Result<(Vec<ViewFacts>, Unneeded), String> {
    let policies = policies(client, None)?;
    let mut reading = Reading::new(client, &policies)?;
    let tracked = tracked(client)?;
    let mut needed = BTreeSet::new();
    let mut views = Vec::new();
    for p in policies {
        let counts = p.row.only_when_changed && p.row.enabled;
        if p.mine {
            let v = reading.view_facts(p)?;
            if counts {
                needed.extend(v.bases.iter().copied());
            }
            views.push(v);
        } else if counts && !tracked.is_empty() {
            needed.extend(reading.walk.view(p.relid).relations);
        }
    }
    let unneeded = tracked.into_iter().filter(|(relid, ..)| !needed.contains(relid)).map(|(_, t, o)| (t, o)).collect();
    Ok((views, unneeded))
}

/// One policy as the statement reads it: its view's facts but for what
/// the view reads.
struct Policy {
    row: ViewFacts,
    mine: bool,
    relid: u32,
    owner: pg_sys::Oid,
    refreshed: Option<Refreshed>,
    refresh_tracking: String,
}

/// What the view's last refresh by pg_upkeep recorded.
struct Refreshed {
    /// None for a snapshot that does not parse (every change counts).
    seen: Option<Refresh>,
    bases: Vec<u32>,
    fingerprint: String,
}

/// The policies (all, or one job's), read first: their snapshot is the
/// one a refresh records, and the walk reads the catalogs after it.
fn policies(client: &SpiClient<'_>, job: Option<i64>) -> Result<Vec<Policy>, String> {
    let mut out = Vec::new();
    let read = |rows: pgrx::spi::SpiTupleTable<'_>| {
        // Columns by position: looking each up by name, 20 columns of 500
        // rows, was a tenth of a decision.
        let mut at = HashMap::new();
        for c in 1..=rows.columns().map_err(err)? {
            at.insert(rows.column_name(c).map_err(err)?, c);
        }
        let at = |c: &str| at.get(c).copied().ok_or_else(|| format!("no column {c}"));
        for row in rows {
            let text = |c: &str| row.get::<String>(at(c)?).map_err(err).map(Option::unwrap_or_default);
            let flag = |c: &str| row.get::<bool>(at(c)?).map_err(err).map(Option::unwrap_or_default);
            let oid = |c: &str| row.get::<pg_sys::Oid>(at(c)?).map_err(err);
            let refreshed = match row.get::<String>(at("refreshed_snapshot")?).map_err(err)? {
                Some(snapshot) => {
                    let xid = row.get::<String>(at("refreshed_xid")?).map_err(err)?;
                    let cid = row.get::<i64>(at("refreshed_cid")?).map_err(err)?.unwrap_or_default();
                    let bases = row.get::<Vec<pg_sys::Oid>>(at("refreshed_bases")?).map_err(err)?.unwrap_or_default();
                    Some(Refreshed {
                        seen: Refresh::parse(&snapshot, xid.as_deref(), cid),
                        bases: bases.into_iter().map(pg_sys::Oid::to_u32).collect(),
                        fingerprint: text("refreshed_fingerprint")?,
                    })
                }
                None => None,
            };
            // The same moment on every row.
            let (snapshot, xid, cid) = match out.first() {
                Some(Policy { row: first, .. }) => (first.snapshot.clone(), first.xid.clone(), first.cid),
                None => (
                    text("snapshot")?,
                    row.get::<String>(at("xid")?).map_err(err)?,
                    row.get::<i64>(at("cid")?).map_err(err)?.unwrap_or_default(),
                ),
            };
            out.push(Policy {
                row: ViewFacts {
                    job_id: row.get::<i64>(at("job_id")?).map_err(err)?.unwrap_or_default(),
                    snapshot,
                    xid,
                    cid,
                    matview: QualifiedName::new(text("schema")?, text("name")?),
                    exists: flag("exists")?,
                    owner: text("owner")?,
                    populated: flag("populated")?,
                    concurrently: flag("concurrently")?,
                    only_when_changed: flag("only_when_changed")?,
                    enabled: flag("enabled")?,
                    scheduled: flag("scheduled")?,
                    unique_key: flag("unique_key")?,
                    refreshed: refreshed.is_some(),
                    ..ViewFacts::default()
                },
                mine: flag("mine")?,
                relid: oid("relid")?.map_or(0, pg_sys::Oid::to_u32),
                owner: oid("owner_id")?.unwrap_or(pg_sys::InvalidOid),
                refreshed,
                refresh_tracking: text("refresh_tracking")?,
            });
        }
        Ok(())
    };
    match job {
        None => statements::select(client, EVERY_POLICY_SQL.as_str(), &[], &[], read)?,
        Some(job) => {
            statements::select(client, JOB_POLICY_SQL.as_str(), &[param(BuiltinOid::INT8OID)], &[job.into()], read)?
        }
    }
    Ok(out)
}

/// The change records by relation.
fn changes(client: &SpiClient<'_>) -> Result<HashMap<u32, Vec<Change>>, String> {
    statements::select(client, CHANGES_SQL, &[], &[], |rows| {
        let mut by_relation: HashMap<u32, Vec<Change>> = HashMap::new();
        for r in rows {
            let relid = r.get::<pg_sys::Oid>(1).map_err(err)?.map_or(0, pg_sys::Oid::to_u32);
            let xid = r.get::<String>(2).map_err(err)?.and_then(|x| x.parse().ok());
            let (Some(xid), Some(cid)) = (xid, r.get::<i64>(3).map_err(err)?) else { continue };
            by_relation.entry(relid).or_default().push(Change { xid, cid });
        }
        Ok(by_relation)
    })
}

/// What the facts of each policy's view are read from: a walk of the
/// catalogs after the policies' statement, each managed view's job, and
/// the change records.
struct Reading<'a, 'conn> {
    client: &'a SpiClient<'conn>,
    walk: Walk,
    jobs: HashMap<u32, i64>,
    changes: HashMap<u32, Vec<Change>>,
    /// Read when a view's rules must be searched for the clock.
    clock_functions: Option<Vec<u32>>,
}

impl<'a, 'conn> Reading<'a, 'conn> {
    fn new(client: &'a SpiClient<'conn>, policies: &[Policy]) -> Result<Self, String> {
        let jobs = policies.iter().map(|p| (p.relid, p.row.job_id)).collect();
        let changes = if policies.is_empty() { HashMap::new() } else { changes(client)? };
        Ok(Reading { client, walk: Walk::in_current_snapshot(), jobs, changes, clock_functions: None })
    }

    /// The view and plain views it reads whose queries use the clock.
    fn clock(&mut self, reads: &ViewReads) -> Result<Vec<u32>, String> {
        if self.clock_functions.is_none() {
            let oids = statements::select(self.client, CLOCK_FUNCTIONS_SQL, &[], &[], |rows| {
                Ok(rows.first().get::<Vec<i64>>(1).map_err(err)?.unwrap_or_default())
            })?;
            self.clock_functions = Some(oids.into_iter().map(|o| o as u32).collect());
        }
        Ok(self.walk.clock(reads, self.clock_functions.as_deref().unwrap_or_default()))
    }

    /// A policy's facts with what its view reads.
    fn view_facts(&mut self, p: Policy) -> Result<ViewFacts, String> {
        let mut v = p.row;
        if let Some(r) = &p.refreshed {
            v.changed = self.changed_since(r);
        }
        if !v.exists {
            return Ok(v);
        }
        let reads = self.walk.view(p.relid);
        let summary = summarize(&self.walk.facts(&reads, p.owner), p.refresh_tracking.ends_with(['O', 'A']));
        let mut clock = Vec::new();
        let recorded = p.refreshed.as_ref().map(|r| r.fingerprint.as_str());
        let now = compare(recorded, &summary.seen, &p.refresh_tracking, &reads.rules, || {
            clock = self.clock(&reads)?;
            Ok::<_, String>(!clock.is_empty())
        })?;
        v.moved = !now.same || p.refreshed.as_ref().is_none_or(|r| r.bases != summary.bases);
        let mut upstream: Vec<i64> =
            reads.relations.iter().filter_map(|r| self.jobs.get(r)).copied().filter(|&j| j != v.job_id).collect();
        upstream.sort_unstable();
        v.upstream = upstream;
        v.unsure = summary.unsure;
        v.unsure.extend(
            reads.calls.iter().map(|f| format!("calls {f}, which may read tables whose changes cannot be seen")),
        );
        v.unsure.extend(self.clock_reasons(&clock)?);
        v.untracked = summary.untracked;
        v.bases = summary.bases;
        v.fingerprint = now.fingerprint;
        Ok(v)
    }

    /// The relations the refresh read that changed in transactions it did
    /// not see, by name (by OID when dropped since).
    fn changed_since(&mut self, r: &Refreshed) -> Vec<String> {
        let unseen = |cs: &Vec<Change>| cs.iter().any(|c| r.seen.as_ref().is_none_or(|s| !s.saw(c)));
        let changed: Vec<u32> = r.bases.iter().copied().filter(|b| self.changes.get(b).is_some_and(unseen)).collect();
        let names: BTreeSet<String> =
            changed.into_iter().map(|b| self.walk.name(b).map_or_else(|| b.to_string(), |n| n.to_string())).collect();
        names.into_iter().collect()
    }

    /// "v uses now(), ..." for each view or plain view a view reads whose
    /// query uses the clock, as its definition names it.
    fn clock_reasons(&mut self, clock: &[u32]) -> Result<BTreeSet<String>, String> {
        let mut reasons = BTreeSet::new();
        for &relid in clock {
            let Some(view) = self.walk.name(relid) else { continue };
            let oid = pg_sys::Oid::from(relid);
            let words = statements::select(
                self.client,
                CLOCK_WORDS_SQL,
                &[param(BuiltinOid::OIDOID)],
                &[oid.into()],
                |rows| Ok(rows.first().get::<Vec<String>>(1).map_err(err)?.unwrap_or_default()),
            )?;
            reasons.extend(
                words.into_iter().map(|w| format!("{view} uses {w}, whose result changes without any table changing")),
            );
        }
        Ok(reasons)
    }
}

/// The tracked tables: (OID, table, owner).
fn tracked(client: &SpiClient<'_>) -> Result<Vec<(u32, QualifiedName, String)>, String> {
    statements::select(client, TRACKED_SQL, &[], &[], |rows| {
        rows.map(|r| {
            let t = |i| r.get::<String>(i).map_err(err).map(Option::unwrap_or_default);
            let relid = r.get::<pg_sys::Oid>(1).map_err(err)?.map_or(0, pg_sys::Oid::to_u32);
            Ok((relid, QualifiedName::new(t(2)?, t(3)?), t(4)?))
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
