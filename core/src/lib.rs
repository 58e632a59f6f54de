//! pg_upkeep's core: what can be decided without a database. Periods and
//! bounds, names and quoting, actions, the plans of every capability, the
//! index findings and size estimate, the maintenance window, the back-off.
//! Plain Rust and plain types: `cargo test -p upkeep-core` needs no
//! PostgreSQL. The extension (crate `pg_upkeep`) reads the facts from the
//! catalogs, runs the plans, and re-exports these modules under the same
//! names.

pub mod access;
pub mod actions;
pub mod archive;
pub mod archive_target;
pub mod backoff;
pub mod calendar;
pub mod citus;
pub mod cron;
pub mod index_health;
pub mod matviews;
pub mod partitions;
pub mod partman;
pub mod problem;
pub mod sql;
pub mod unfinished;
