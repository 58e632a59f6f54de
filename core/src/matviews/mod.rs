//! Materialized views: refresh or skip and why, dependency order, groups,
//! and the statements that track the tables they read.

pub mod changes;
pub mod plan;
pub mod reads;
pub mod tracking;
