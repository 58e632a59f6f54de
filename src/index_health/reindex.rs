//! Automatic reindex, off unless `upkeep.manage_reindex()` turned it on.
//! Only the workers do it, with REINDEX INDEX CONCURRENTLY at top level
//! (it cannot run in a transaction block), one index per run, inside the
//! maintenance window when there is one; first they drop what interrupted
//! concurrent rebuilds left behind (invalid `_ccnew`/`_ccold` indexes).

use super::findings::Finding;
use crate::actions::ActionKind;
use crate::driver::{Capability, Item, Plan};
use crate::errors::invalid;
use crate::errors::Found;
use crate::job::Kind;
use crate::outcome::{Outcome, Status};
use crate::sql::QualifiedName;
use pgrx::prelude::*;

pub use upkeep_core::index_health::reindex::{plan, Window};

struct Policy {
    job_id: i64,
    min_ratio: f64,
    min_size: i64,
    window: Option<String>,
    due: bool,
    now_minute: u32,
}

fn policy() -> Option<Policy> {
    Spi::connect(|client| {
        let rows = client.select(
            &format!(
                "SELECT p.job_id, p.min_bloat_ratio, p.min_size_bytes, p.maintenance_window, \
                    p.enabled AND (j.next_run IS NULL OR j.next_run <= now()), \
                    (extract(hour FROM localtime) * 60 + extract(minute FROM localtime))::int4 \
               FROM upkeep.reindex_policy p LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
              WHERE {}",
                crate::ownership::MAY_MANAGE_DATABASE_SQL
            ),
            None,
            &[],
        )?;
        rows.into_iter()
            .next()
            .map(|r| {
                Ok(Policy {
                    job_id: r.get::<i64>(1)?.unwrap_or_default(),
                    min_ratio: r.get::<f64>(2)?.unwrap_or(2.0),
                    min_size: r.get::<i64>(3)?.unwrap_or_default(),
                    window: r.get::<String>(4)?,
                    due: r.get::<bool>(5)?.unwrap_or(false),
                    now_minute: r.get::<i32>(6)?.unwrap_or_default() as u32,
                })
            })
            .transpose()
    })
    .unwrap_or_else(|e: pgrx::spi::SpiError| error!("pg_upkeep could not read its reindex policy: {e}"))
}

/// Automatic reindex as the driver runs it, when due (or `explicit`ly):
/// outside the window it only moves the job's next check; inside, only a
/// worker acts (the scheduler hands the job to one; an SQL caller is told
/// so): it drops leftovers and rebuilds one index, recording each action
/// with the sizes before and after.
pub struct Reindex {
    pub explicit: bool,
}

/// The policy, whether it is inside its window, and what index health
/// finds (read only by a runner that can rebuild).
pub struct Due {
    policy: Policy,
    in_window: bool,
    findings: Option<Vec<Finding>>,
}

impl Capability for Reindex {
    type Facts = Due;
    type Tag = ActionKind;
    const KIND: Kind = Kind::Reindex;
    const EXCLUSIVE: bool = false;

    fn facts(&mut self, top_level: bool) -> Option<Due> {
        let p = policy()?;
        if !(p.due || self.explicit) {
            return None;
        }
        let in_window =
            p.window.as_deref().and_then(|w| w.parse::<Window>().ok()).is_none_or(|w| w.contains(p.now_minute));
        let findings = (top_level && in_window).then(|| super::report(0));
        Some(Due { policy: p, in_window, findings })
    }

    fn plan(&self, due: &Due, _top_level: bool) -> Plan<ActionKind> {
        let p = &due.policy;
        let note = |why: &str| {
            let o = Outcome::noted(
                p.job_id,
                ActionKind::Reindex,
                "automatic reindex".into(),
                Status::Skipped,
                why.into(),
                None,
            );
            Plan { items: vec![Item::Note(o)], checked: Vec::new() }
        };
        if !due.in_window {
            return note("skipped: outside the maintenance window");
        }
        let Some(findings) = &due.findings else {
            return Plan {
                items: vec![Item::NeedsWorker {
                    job_id: p.job_id,
                    action: ActionKind::Reindex,
                    target: "automatic reindex".into(),
                    why:
                        "automatic reindex runs in the pg_upkeep workers only (REINDEX CONCURRENTLY cannot run inside \
                          a transaction); the fix_sql of upkeep.index_health does it by hand"
                            .into(),
                }],
                checked: Vec::new(),
            };
        };
        let owners = |t: &QualifiedName| {
            Spi::get_one_with_args::<String>(
                "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = to_regclass($1)",
                &[t.quoted().into()],
            )
            .unwrap_or_else(|e| error!("pg_upkeep could not read the owner of {t}: {e}"))
            .unwrap_or_default()
        };
        let actions = plan(p.job_id, findings, &owners, p.min_ratio, p.min_size);
        if actions.is_empty() {
            return note("nothing to rebuild");
        }
        let items = actions.into_iter().map(|action| Item::Act { tag: action.kind, action, worker: None }).collect();
        Plan { items, checked: Vec::new() }
    }

    /// The size after a rebuild, in the action's record.
    fn remember(&self, due: Due, done: Vec<(ActionKind, &Outcome)>) {
        for (_, o) in done.into_iter().filter(|(kind, o)| *kind == ActionKind::Reindex && o.status == Status::Ok) {
            Spi::run_with_args(
                "UPDATE upkeep.job_runs SET detail = detail || format(', %s bytes after', \
                        pg_relation_size(to_regclass($2))) \
                  WHERE run_id = (SELECT max(run_id) FROM upkeep.job_runs WHERE job_id = $1 AND action = 'reindex')",
                &[due.policy.job_id.into(), o.target.as_str().into()],
            )
            .unwrap_or_else(|e| error!("pg_upkeep could not record the size after a reindex: {e}"));
        }
    }
}

/// Turns automatic reindex on (or changes it): the workers rebuild, one
/// at a time and CONCURRENTLY, btree indexes at least `min_size_bytes` big
/// whose estimated size is at least `min_bloat_ratio` times a fresh build's,
/// inside `maintenance_window` ('HH:MM-HH:MM', server time) when given.
/// Returns the job id.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn manage_reindex(
    min_bloat_ratio: default!(Option<f64>, 2.0),
    min_size_bytes: default!(Option<i64>, 10485760),
    maintenance_window: default!(Option<&str>, "NULL"),
) -> i64 {
    crate::errors::guarded("manage_reindex", || {
        crate::ownership::require_database_owner("automatic reindex");
        let ratio = min_bloat_ratio.filter(|r| *r > 1.0).unwrap_or_else(|| {
            invalid(
                format!("min_bloat_ratio {} must be above 1", min_bloat_ratio.map_or("NULL".into(), |r| r.to_string())),
                "It is the size against a fresh build's: 2.0 rebuilds indexes twice as big as they need to be.",
            )
        });
        let size = min_size_bytes.filter(|s| *s >= 0).unwrap_or_else(|| {
            invalid(
                "min_size_bytes must be 0 or more",
                "Give the smallest index worth rebuilding in bytes, e.g. 10485760 (10 MB).",
            )
        });
        if let Some(w) = maintenance_window {
            if w.parse::<Window>().is_err() {
                invalid(
                    format!("maintenance_window '{w}' is not a window"),
                    "Write it as HH:MM-HH:MM in the server's time zone, e.g. '01:00-05:00' or '22:00-02:00'; NULL: any time.",
                );
            }
        }
        Spi::get_one_with_args::<i64>(
            "INSERT INTO upkeep.reindex_policy (min_bloat_ratio, min_size_bytes, maintenance_window) VALUES ($1, $2, $3) \
             ON CONFLICT (single) DO UPDATE SET min_bloat_ratio = EXCLUDED.min_bloat_ratio, \
                min_size_bytes = EXCLUDED.min_size_bytes, maintenance_window = EXCLUDED.maintenance_window, updated_at = now() \
             RETURNING job_id",
            &[ratio.into(), size.into(), maintenance_window.into()],
        )
        .found()
        .unwrap_or_else(|| error!("could not register automatic reindex"))
    })
}

/// Turns automatic reindex off.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn unmanage_reindex() {
    crate::errors::guarded("unmanage_reindex", || {
        crate::ownership::require_database_owner("automatic reindex");
        match Spi::get_one::<i64>("DELETE FROM upkeep.reindex_policy RETURNING job_id") {
            Ok(Some(job)) => crate::job_state::forget(job),
            _ => crate::errors::invalid(
                "automatic reindex is not set up in this database",
                "Nothing to remove: upkeep.manage_reindex() sets it up; upkeep.jobs lists the jobs there are.",
            ),
        }
    })
}
