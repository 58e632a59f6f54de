//! pg_upkeep: partitions, archives, materialized views and index health,
//! maintained from inside PostgreSQL. The README and docs/ describe the
//! SQL surface.
//!
//! Each capability is facts (catalog reads), plan (pure Rust) and act (the
//! one executor); the SQL functions are thin callers.

use pgrx::prelude::*;

pub mod access;
// The pure foundations live in the core crate, under the same names.
pub use upkeep_core::{actions, archive_target, calendar, problem, sql};
pub mod archive;
pub mod catalog;
pub mod citus;
pub mod cron;
pub mod disk;
pub mod driver;
pub mod errors;
pub mod executor;
pub mod index_health;
pub mod interrupted;
pub mod job;
pub mod job_locks;
pub mod job_state;
pub mod layers;
pub mod maintenance;
pub mod matviews;
pub mod metrics;
pub mod outcome;
pub mod ownership;
pub mod partitions;
pub mod partman;
pub mod regclass;
pub mod report;
pub mod run_log;
pub mod settings;
pub mod statements;
#[cfg(any(test, feature = "pg_test"))]
pub mod test_support;
pub mod toplevel;
pub mod unfinished;
pub mod version;
pub mod workers;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // No Rust backtrace in any ERROR, DETAIL or log line, whatever
    // RUST_BACKTRACE the server was started with: pgrx captures one per
    // panic when the environment asks, and reports it to the client.
    // RUST_LIB_BACKTRACE overrides RUST_BACKTRACE for captured backtraces.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    settings::register();
    // SAFETY: reads flags the postmaster sets before it loads libraries.
    let (preloading, binary_upgrade) =
        unsafe { (pg_sys::process_shared_preload_libraries_in_progress, pg_sys::IsBinaryUpgrade) };
    if preloading && binary_upgrade {
        // pg_upgrade starts both servers in this mode to dump and restore
        // the schema: nothing may create or move partitions meanwhile.
        pgrx::log!("binary upgrade mode: pg_upkeep's background workers are not started");
    } else if preloading {
        workers::preload();
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Workers off: #[pg_test]s drive maintenance themselves.
        vec!["shared_preload_libraries = 'pg_upkeep'", "upkeep.enabled = off"]
    }
}
