//! The pool of `pg_upkeep worker` processes. Long actions (archive moves;
//! they may wait on application transactions or move data) run there, one
//! process per job and at most `upkeep.max_workers` in the whole server,
//! so that the scheduler's quick actions, like creating partitions, never
//! wait behind them. A worker runs its job's long actions with the
//! top-level CONCURRENTLY forms (see `toplevel`) and exits.
//!
//! Who is working on what lives in shared memory: one slot per running
//! worker, taken when it starts and given back when it exits (normally,
//! on ERROR or FATAL, or by SIGTERM). A worker killed with SIGKILL makes
//! the postmaster reinitialise shared memory, which empties the slots.

use crate::driver::Runner;
use crate::settings;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

pub const WORKER: &str = "pg_upkeep worker";

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    pid: i32,
    database: u32,
    job: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Slots {
    slots: [Slot; settings::WORKER_SLOTS as usize],
}

// SAFETY: plain integers, no pointers.
unsafe impl PGRXSharedMemory for Slots {}

static SLOTS: PgLwLock<Slots> = unsafe { PgLwLock::new(c"pg_upkeep worker slots") };

/// Reserves the slot table; called from `_PG_init` during preload only.
pub fn init_shared_memory() {
    pg_shmem_init!(SLOTS);
}

fn this_database() -> u32 {
    // SAFETY: set once the process is connected to its database.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Starts a worker for each of these jobs of this database that has none
/// yet, as far as `upkeep.max_workers` allows. Jobs left out stay due and
/// are handed off again on a later cycle. Runs in the scheduler.
pub fn hand_off(mut jobs: Vec<i64>) {
    jobs.sort_unstable();
    jobs.dedup();
    if jobs.is_empty() {
        return;
    }
    let db = this_database();
    let (busy, mut free) = {
        let slots = SLOTS.share();
        let used: Vec<&Slot> = slots.slots.iter().filter(|s| s.pid != 0).collect();
        let busy: Vec<i64> = used.iter().filter(|s| s.database == db).map(|s| s.job).collect();
        (busy, (settings::MAX_WORKERS.get() as usize).saturating_sub(used.len()))
    };
    // SAFETY: a syscache lookup; the scheduler is in a transaction.
    let name = unsafe { std::ffi::CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId)) };
    let name = name.to_string_lossy();
    for job in jobs.into_iter().filter(|j| !busy.contains(j)) {
        if free == 0 {
            debug1!(
                "pg_upkeep: all {} worker(s) busy; job {job} waits for the next cycle",
                settings::MAX_WORKERS.get()
            );
            break;
        }
        let started = BackgroundWorkerBuilder::new(&format!("{WORKER} for job {job} in {name}"))
            .set_type(WORKER)
            .set_library("pg_upkeep")
            .set_function("pg_upkeep_worker_main")
            .enable_spi_access()
            .set_argument(job.into_datum())
            .set_extra(&name)
            .set_restart_time(None)
            .load_dynamic();
        match started {
            Ok(_) => free -= 1,
            Err(_) => {
                log!("pg_upkeep: no background worker slot for a worker of job {job}; raise max_worker_processes");
                break;
            }
        }
    }
}

/// Takes a slot for this process and `job`, unless the pool is full or
/// another worker has the job; the slot is given back when the process exits.
fn take_slot(job: i64) -> bool {
    let db = this_database();
    // SAFETY: this process's pid, set at start.
    let pid = unsafe { pg_sys::MyProcPid };
    {
        let mut table = SLOTS.exclusive();
        let used = table.slots.iter().filter(|s| s.pid != 0).count();
        let taken = table.slots.iter().any(|s| s.pid != 0 && s.database == db && s.job == job);
        if taken || used >= settings::MAX_WORKERS.get() as usize {
            return false;
        }
        let Some(slot) = table.slots.iter_mut().find(|s| s.pid == 0) else { return false };
        *slot = Slot { pid, database: db, job };
    }
    // SAFETY: registers a callback that runs once when the process exits.
    unsafe { pg_sys::before_shmem_exit(Some(give_back_slot), pg_sys::Datum::from(0)) };
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn give_back_slot(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // SAFETY: this process's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    for slot in SLOTS.exclusive().slots.iter_mut().filter(|s| s.pid == pid) {
        *slot = Slot::default();
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_upkeep_worker_main(arg: pg_sys::Datum) {
    super::terminate_like_a_backend();
    // SAFETY: workers start with signals blocked; this is the standard call.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    // SAFETY: the scheduler passed the job id as an int8 datum.
    let Some(job) = (unsafe { i64::from_datum(arg, false) }) else { return };
    if !super::connect_to_served_database(WORKER) || !take_slot(job) {
        return;
    }
    let claimed = BackgroundWorker::transaction(|| {
        let found = crate::job::find(job)?;
        // Shows in pg_stat_activity which job this process does; the
        // top-level statements run outside any transaction, so the
        // lock_timeout for them is set for the session.
        Spi::run_with_args(
            "SELECT set_config('application_name', $1, false), set_config('lock_timeout', $2, false)",
            &[
                format!("{WORKER}: job {job} ({})", found.target).into(),
                format!("{}ms", settings::LOCK_TIMEOUT_MS.get()).into(),
            ],
        )
        .unwrap_or_else(|e| error!("pg_upkeep worker could not set its lock_timeout: {e}"));
        crate::job_locks::try_claim_job(job).then_some(found)
    });
    if let Some(found) = claimed {
        crate::maintenance::run(Runner::Worker, &found);
    }
}
