//! Materialized views: refresh or skip and why, dependency order, groups,
//! and the statements that track the tables they read.

pub mod plan;
pub mod tracking;
