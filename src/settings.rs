//! The `upkeep.*` settings (GUCs). All can be changed with a reload
//! (SIGHUP); `upkeep.lock_timeout` also per session.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{CStr, CString};

/// How long any maintenance statement may wait for a lock, in milliseconds.
pub static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(3_000);
/// Whether the background workers run maintenance.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Seconds between two maintenance cycles of the workers.
pub static NAPTIME_S: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Comma-separated databases the workers serve; empty means every database.
pub static DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The role the workers connect as; empty means the bootstrap superuser.
pub static ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// How many `pg_upkeep worker` processes may run at once, server-wide.
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Worker slots in shared memory: the most `upkeep.max_workers` may be.
pub const WORKER_SLOTS: i32 = 32;
/// How many `pg_upkeep scheduler` processes may run at once.
pub static MAX_SCHEDULERS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// How long `upkeep.job_runs` keeps its rows, in minutes.
pub static HISTORY_RETENTION_MIN: GucSetting<i32> = GucSetting::<i32>::new(30 * 24 * 60);
/// Days of index scan statistics before a never-scanned index counts as unused.
pub static UNUSED_INDEX_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);

pub fn register() {
    GucRegistry::define_int_guc(
        c"upkeep.lock_timeout",
        c"Longest time a pg_upkeep action waits for a table lock.",
        c"An action that cannot get its lock in time gives up, is recorded in upkeep.job_runs with status lock_timeout, and is retried on a later run; the application's queries are never held up longer than this. 0 means wait forever (not recommended).",
        &LOCK_TIMEOUT_MS,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"upkeep.enabled",
        c"Whether pg_upkeep's background workers run maintenance.",
        c"Needs pg_upkeep in shared_preload_libraries. Off stops new cycles; the SQL functions work either way.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"upkeep.naptime",
        c"Least time between two maintenance cycles of pg_upkeep's workers in a database.",
        c"A database gets a short-lived scheduler when a job there is due, when a policy was registered or changed (within one naptime), and at least hourly; never more often than every naptime.",
        &NAPTIME_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"upkeep.databases",
        c"Databases pg_upkeep's workers serve (comma-separated); empty: every database with the extension.",
        c"Databases not listed are left alone by the workers; their SQL functions still work.",
        &DATABASES,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"upkeep.role",
        c"Role pg_upkeep's workers connect as; empty: the bootstrap superuser.",
        c"The role needs to own, or be a member of the owners of, the managed tables.",
        &ROLE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"upkeep.max_workers",
        c"Most pg_upkeep worker processes running at once in the server.",
        c"Long actions (archive moves) run in worker processes, one per job, so that partition creation never waits behind them; jobs beyond this limit wait for a later cycle. Each worker takes one of max_worker_processes.",
        &MAX_WORKERS,
        1,
        WORKER_SLOTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"upkeep.max_schedulers",
        c"Most pg_upkeep scheduler processes running at once in the server.",
        c"The launcher starts a scheduler for a database when something there is due, at most this many at a time, the database that has waited longest first, so that it never takes every background worker slot and no database is passed over. A database waiting for its turn shows in the metric upkeep_scheduler_wait_seconds. Each scheduler takes one of max_worker_processes while it runs.",
        &MAX_SCHEDULERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"upkeep.history_retention",
        c"How long upkeep.job_runs keeps its rows.",
        c"The workers delete older run records once per cycle.",
        &HISTORY_RETENTION_MIN,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MIN,
    );
    GucRegistry::define_int_guc(
        c"upkeep.unused_index_days",
        c"Days pg_upkeep's index-health snapshots must have seen an index without a scan before it is reported as unused.",
        c"PostgreSQL keeps no creation time and scan counts never reset are of unknown age, so the evidence is pg_upkeep's own: counted from the first daily snapshot (upkeep.snapshot_index_health) that saw no scan since the last one that did, or from the last statistics reset if later (upkeep.index_watch). On PostgreSQL 16 and later an index last scanned that many days ago or more (last_idx_scan) is unused too. 0 reports any index whose scan count is 0. Scans on replicas are not counted.",
        &UNUSED_INDEX_DAYS,
        0,
        36_500,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// The databases listed in `upkeep.databases`, or None for all.
pub fn databases() -> Option<Vec<String>> {
    let list = DATABASES.get()?;
    let names: Vec<String> =
        list.to_string_lossy().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    (!names.is_empty()).then_some(names)
}

/// The role in `upkeep.role`, if set.
pub fn role() -> Option<String> {
    ROLE.get().map(|r| r.to_string_lossy().trim().to_string()).filter(|r| !r.is_empty())
}

/// A PostgreSQL setting changed for as long as this value lives (as SET
/// LOCAL would), then put back to what it was.
pub struct Local {
    name: &'static CStr,
    previous: CString,
}

impl Local {
    pub fn set(name: &'static CStr, value: &CStr) -> Self {
        // SAFETY: GetConfigOption returns a pointer to the setting's current
        // text, which we copy before changing it.
        let previous = unsafe { CStr::from_ptr(pg_sys::GetConfigOption(name.as_ptr(), false, false)).to_owned() };
        Self::apply(name, value);
        Local { name, previous }
    }

    fn apply(name: &CStr, value: &CStr) {
        // SAFETY: a user-settable GUC, set transaction-locally like SET LOCAL.
        unsafe {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                pg_sys::PGERROR as i32,
                false,
            );
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            Self::apply(self.name, &self.previous);
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn every_setting_shows_with_a_description_and_its_default() {
        let rows: Vec<(String, String, String)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT name, setting, short_desc FROM pg_settings WHERE name LIKE 'upkeep.%' ORDER BY name",
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| (r.get(1).unwrap().unwrap(), r.get(2).unwrap().unwrap(), r.get(3).unwrap().unwrap()))
                .collect()
        });
        let names: Vec<&str> = rows.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "upkeep.databases",
                "upkeep.enabled",
                "upkeep.history_retention",
                "upkeep.lock_timeout",
                "upkeep.max_schedulers",
                "upkeep.max_workers",
                "upkeep.naptime",
                "upkeep.role",
                "upkeep.unused_index_days"
            ]
        );
        assert!(rows.iter().all(|(_, _, desc)| desc.len() > 20), "{rows:?}");
        let show = |name: &str| Spi::get_one::<String>(&format!("SHOW {name}")).unwrap().unwrap();
        assert_eq!(show("upkeep.max_workers"), "2");
        assert_eq!(show("upkeep.max_schedulers"), "2");
        assert_eq!(show("upkeep.naptime"), "1min");
        assert_eq!(show("upkeep.lock_timeout"), "3s");
        assert_eq!(show("upkeep.history_retention"), "30d");
        assert_eq!(show("upkeep.unused_index_days"), "7");
    }
}
