//! What partition maintenance remembers between runs, so that a run with
//! nothing due costs one indexed query instead of reading every bound:
//! per policy, when it next becomes due and a fingerprint of everything its
//! last check depended on.

use super::facts::{ParentFacts, FINGERPRINT};
use super::plan;
use crate::statements::{self, param};
use pgrx::pg_sys::BuiltinOid;
use pgrx::prelude::*;
use std::sync::LazyLock;

/// Enabled policies (all, or the one on a parent) that need a full check:
/// never checked, due, or changed since their last check; and, unless the
/// run is explicit ($2), whose schedule or back-off lets them run now.
static STALE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT p.job_id FROM upkeep.partition_policies p \
           LEFT JOIN upkeep.partition_state s ON s.job_id = p.job_id \
           LEFT JOIN upkeep.job_state j ON j.job_id = p.job_id \
          WHERE p.enabled AND ($1::oid IS NULL OR p.parent::oid = $1) AND {may_manage} \
            AND ($2 OR j.next_run IS NULL OR j.next_run <= now()) \
            AND (s.job_id IS NULL OR s.due_at <= now() OR s.fingerprint IS DISTINCT FROM {FINGERPRINT}) \
          ORDER BY p.job_id",
        may_manage = crate::ownership::may_manage_sql("p.parent")
    )
});

/// The stale policies; `explicit` runs ignore schedules and back-off.
pub fn stale_jobs(parent: Option<pg_sys::Oid>, explicit: bool) -> Vec<i64> {
    Spi::connect(|client| {
        let types = [param(BuiltinOid::OIDOID), param(BuiltinOid::BOOLOID)];
        let _generic = statements::generic_plan();
        statements::select(client, STALE_SQL.as_str(), &types, &[parent.into(), explicit.into()], |rows| {
            rows.map(|row| row.get::<i64>(1).map(Option::unwrap_or_default).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        })
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not read its partition state: {e}"))
}

/// Records, for each checked parent, when it is next due (computed from
/// `facts`, which must include what this run created) and the fingerprint
/// read together with those facts. A change committed after the facts were
/// read therefore never passes for checked: it makes the next run look
/// again (as does what this run created itself, which costs one more check).
pub fn remember(parents: &[ParentFacts], now_utc: i64) {
    if parents.is_empty() {
        return;
    }
    let jobs: Vec<i64> = parents.iter().map(|f| f.policy.job_id).collect();
    // Due when a partition must be made or one must be archived.
    let due: Vec<Option<i64>> = parents
        .iter()
        .map(|f| {
            let create = plan::next_due(f, now_utc);
            let archive = super::retention::next_due(f, now_utc);
            create.into_iter().chain(archive).min()
        })
        .collect();
    let fingerprints: Vec<String> = parents.iter().map(|f| f.fingerprint.clone()).collect();
    let types = [param(BuiltinOid::INT8ARRAYOID), param(BuiltinOid::INT8ARRAYOID), param(BuiltinOid::TEXTARRAYOID)];
    Spi::connect_mut(|client| {
        statements::update(client, REMEMBER_SQL, &types, &[jobs.into(), due.into(), fingerprints.into()])
    })
    .unwrap_or_else(|e| error!("pg_upkeep could not record its partition state: {e}"));
}

const REMEMBER_SQL: &str = "\
INSERT INTO upkeep.partition_state AS s (job_id, due_at, fingerprint, checked_at) \
SELECT d.job_id, 'epoch'::timestamptz + make_interval(secs => d.due / 1e6), d.fingerprint, now() \
  FROM unnest($1::int8[], $2::int8[], $3::text[]) AS d(job_id, due, fingerprint) \
  JOIN upkeep.partition_policies p ON p.job_id = d.job_id \
ON CONFLICT (job_id) DO UPDATE \
   SET due_at = EXCLUDED.due_at, fingerprint = EXCLUDED.fingerprint, checked_at = EXCLUDED.checked_at";
