//! The `upkeep.*` settings (GUCs).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// How long any maintenance statement may wait for a lock, in milliseconds.
pub static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(3_000);

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
}
