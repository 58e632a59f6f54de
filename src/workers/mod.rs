//! The background workers. With pg_upkeep in `shared_preload_libraries`, a
//! static `pg_upkeep launcher` starts a short-lived `pg_upkeep scheduler`
//! for a database when something there is due, or a policy changed (see
//! `due`), never more often than every `upkeep.naptime`, at most
//! `upkeep.max_schedulers` at once, longest-waiting first (see `queue`).
//! A scheduler checks that its database has the extension, runs one
//! maintenance cycle (each action in its own transaction), prunes the run
//! history, tells when its database is next due, and exits. Long actions
//! it hands to `pg_upkeep worker` processes (see `pool`).
//!
//! Why short-lived schedulers: PostgreSQL will not drop a database while a
//! worker is connected to it, so a scheduler that stayed connected would
//! make `DROP DATABASE` fail. Why the launcher starts only once recovery is
//! finished: on a hot standby nothing can be maintained, so no worker runs
//! there at all; after promotion the postmaster starts the launcher.

pub mod due;
pub mod pool;
pub mod queue;

use crate::driver::Runner;
use crate::settings;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const LAUNCHER: &str = "pg_upkeep launcher";
pub const SCHEDULER: &str = "pg_upkeep scheduler";

/// Set in the postmaster when the library is preloaded (inherited by every
/// process it forks): only then do the workers and their shared memory exist.
static PRELOADED: AtomicBool = AtomicBool::new(false);

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Reserves the workers' shared memory and registers the launcher; called
/// from `_PG_init` during preload only.
pub fn preload() {
    pool::init_shared_memory();
    queue::init_shared_memory();
    due::init_shared_memory();
    PRELOADED.store(true, Ordering::Relaxed);
    register_launcher();
}

fn register_launcher() {
    BackgroundWorkerBuilder::new(LAUNCHER)
        .set_type(LAUNCHER)
        .set_library("pg_upkeep")
        .set_function("pg_upkeep_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn reload_config_if_asked() {
    if BackgroundWorker::sighup_received() {
        // SAFETY: the standard way for a backend to apply a reload.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

fn naptime() -> Duration {
    Duration::from_secs(settings::NAPTIME_S.get().max(1) as u64)
}

/// Databases the workers should serve: all that accept connections and are
/// not templates, narrowed by `upkeep.databases`. The launcher is connected
/// to no database, so it scans the shared catalog pg_database directly
/// (SQL would need a database's pg_class to resolve names).
fn wanted_databases() -> Vec<(pg_sys::Oid, String)> {
    let mut all = Vec::new();
    // SAFETY: a plain catalog heap scan inside a transaction, as the
    // autovacuum launcher does; tuples are read before the scan ends.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let db = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if db.datallowconn && !db.datistemplate {
                let name = std::ffi::CStr::from_ptr(db.datname.data.as_ptr()).to_string_lossy().into_owned();
                all.push((db.oid, name));
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, lock);
    }
    match settings::databases() {
        Some(names) => all.into_iter().filter(|(_, name)| names.contains(name)).collect(),
        None => all,
    }
}

fn start_scheduler(db: pg_sys::Oid, name: &str) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("{SCHEDULER} for {name}"))
        .set_type(SCHEDULER)
        .set_library("pg_upkeep")
        .set_function("pg_upkeep_scheduler_main")
        .enable_spi_access()
        .set_argument(db.into_datum())
        .set_extra(name)
        .set_restart_time(None)
        // SAFETY: the launcher's own pid: the postmaster tells it when the
        // scheduler exits, so the next database in the queue starts at once.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_upkeep_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // Shared catalogs only: pg_database is all the launcher reads.
    BackgroundWorker::connect_worker_to_spi(None, None);
    due::launcher_started();
    let mut running: HashMap<pg_sys::Oid, DynamicBackgroundWorker> = HashMap::new();
    // Worker handles are palloc'd: they live here, and the context is reset
    // whenever no scheduler is running (the usual state between cycles), so
    // the launcher does not grow over months.
    let mut handles = PgMemoryContexts::new("pg_upkeep launcher handles");
    // When each database's last scheduler started, and the nudges counted
    // then: `due` says from these when it is due again (the naptime as it
    // is now: a reload that shortens it takes effect at once); one never
    // started is due since the launcher began. The latch is also set by
    // signals that have nothing to do with us (a catch-up request when many
    // catalog changes fill the shared invalidation queue, as CREATE
    // EXTENSION does): a scheduler starts only when its database is due,
    // whatever woke us. A scheduler that exits wakes us too (it was started
    // with our pid to notify), so the next database in the queue takes its
    // slot at once.
    let origin = Instant::now();
    let mut started_at: HashMap<pg_sys::Oid, (Instant, u64)> = HashMap::new();
    let mut databases: Vec<(pg_sys::Oid, String)> = Vec::new();
    let mut listed: Option<Instant> = None;
    let mut warned: Option<Instant> = None;
    let mut was_enabled = settings::ENABLED.get();
    loop {
        reload_config_if_asked();
        running.retain(|_, worker| {
            !matches!(worker.pid(), Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied))
        });
        if running.is_empty() {
            // SAFETY: no handle allocated in this context is referenced any more.
            unsafe { handles.reset() };
        }
        let enabled = settings::ENABLED.get();
        if enabled && !was_enabled {
            // Nothing was done while off, and anything may have changed.
            started_at.clear();
        }
        was_enabled = enabled;
        let mut waiting: Vec<(u32, Duration)> = Vec::new();
        let mut next: Option<Instant> = None;
        if enabled {
            if listed.is_none_or(|t| t.elapsed() >= naptime()) {
                databases = BackgroundWorker::transaction(wanted_databases);
                started_at.retain(|db, _| databases.iter().any(|(d, _)| d == db));
                due::keep_only(&databases.iter().map(|(d, _)| d.to_u32()).collect::<Vec<_>>());
                listed = Some(Instant::now());
            }
            let now = Instant::now();
            let now_ms = queue::now_ms();
            let due_at = |db: &pg_sys::Oid| {
                let last = started_at.get(db);
                let known = due::known(db.to_u32());
                let nudged = last.is_some_and(|&(_, nudges)| nudges != known.nudges);
                due::due_at(last.map(|&(t, _)| t), naptime(), known.next, nudged, now, now_ms).unwrap_or(origin)
            };
            let idle: Vec<(u32, Instant)> = databases
                .iter()
                .filter(|(db, _)| !running.contains_key(db))
                .map(|(db, _)| (db.to_u32(), due_at(db)))
                .collect();
            next = idle.iter().map(|&(_, at)| at).filter(|&at| at > now).min();
            let ready: Vec<(u32, Instant)> = idle.into_iter().filter(|&(_, at)| at <= now).collect();
            let free = (settings::MAX_SCHEDULERS.get().max(1) as usize).saturating_sub(running.len());
            let mut started = Vec::new();
            for db in queue::next_to_start(ready.clone(), free) {
                let oid = pg_sys::Oid::from(db);
                let name = databases.iter().find(|(d, _)| *d == oid).map(|(_, n)| n.clone()).unwrap_or_default();
                // Counted before the scheduler starts: a nudge from here on
                // may come after it read the policies, so it counts.
                let nudges = due::starting(db);
                // SAFETY: only the handle is allocated while switched.
                match unsafe { handles.switch_to(|_| start_scheduler(oid, &name)) } {
                    Some(worker) => {
                        running.insert(oid, worker);
                        started_at.insert(oid, (now, nudges));
                        started.push(db);
                    }
                    None => {
                        if warned.is_none_or(|t| t.elapsed() >= naptime()) {
                            log!(
                                "pg_upkeep: no background worker slot for the scheduler of database \"{name}\"; \
                                 it waits its turn (see the metric upkeep_scheduler_wait_seconds); raise max_worker_processes"
                            );
                            warned = Some(Instant::now());
                        }
                        break;
                    }
                }
            }
            waiting =
                ready.into_iter().filter(|(db, _)| !started.contains(db)).map(|(db, at)| (db, now - at)).collect();
        }
        queue::publish(&waiting);
        // Until the next database is due, and at least every naptime to see
        // new databases; while some wait for a slot, look again within a
        // second (a slot other processes free wakes no one). A policy
        // change or an exiting scheduler sets the latch.
        let longest = if waiting.is_empty() { naptime() } else { Duration::from_secs(1) };
        let left = next.map_or(longest, |at| at.saturating_duration_since(Instant::now()).min(longest));
        if !BackgroundWorker::wait_latch(Some(left.max(Duration::from_millis(10)))) {
            break;
        }
    }
}

/// Connects a scheduler or worker to the database it was started for (as
/// `upkeep.role`), names itself in pg_stat_activity, pins a safe
/// search_path (the workers call only qualified objects), and says whether
/// that database has the extension.
fn connect_to_served_database(application_name: &str) -> bool {
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), settings::role().as_deref());
    BackgroundWorker::transaction(|| {
        // When a DBA's DDL (DROP EXTENSION, ALTER TABLE) and a worker wait
        // for each other, the worker's deadlock check runs first and the
        // worker gives way; the DBA's statement goes through.
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false), \
                    pg_catalog.set_config('deadlock_timeout', '100ms', false), \
                    pg_catalog.set_config('application_name', $1, false)",
            &[application_name.into()],
        )
        .unwrap_or_else(|e| error!("{application_name} could not set up its session: {e}"));
        Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_upkeep')")
            .unwrap_or_else(|e| error!("{application_name} could not read pg_extension: {e}"))
            .unwrap_or(false)
    })
}

/// SIGTERM (pg_terminate_backend, a fast shutdown) as a backend takes it:
/// PostgreSQL's `die` notes the request, and the process ends at its next
/// interrupt check, which a long statement reaches often, rolling back its
/// open transaction. The handler PostgreSQL gives workers by default ends
/// the process from inside the signal handler, and a signal that lands in
/// a critical section (a WAL record being written) becomes a PANIC, which
/// restarts the whole server: seen when a scheduler creating partitions
/// was terminated.
pub(crate) fn terminate_like_a_backend() {
    unsafe extern "C-unwind" {
        /// PostgreSQL's SIGTERM handler for backends (postgres.c), as a
        /// plain C function: pgrx's binding wraps it in Rust.
        #[link_name = "die"]
        fn backend_die(signal: std::ffi::c_int);
    }
    // SAFETY: installs PostgreSQL's own handler, before signals are unblocked.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(backend_die));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(backend_die));
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_upkeep_scheduler_main(_arg: pg_sys::Datum) {
    terminate_like_a_backend();
    // SAFETY: workers start with signals blocked; this is the standard call.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    if !connect_to_served_database(SCHEDULER) {
        due::publish(None);
        return;
    }
    if crate::interrupted::supported() {
        BackgroundWorker::transaction(crate::interrupted::sweep);
    }
    crate::driver::hand_off_with(pool::hand_off);
    crate::maintenance::run_due(Runner::Scheduler, false);
    BackgroundWorker::transaction(crate::run_log::prune_history);
    due::publish(BackgroundWorker::transaction(crate::job_state::next_due_ms));
}
