//! Index health: what is wrong with each index and the fix, the size
//! estimate, and what automatic reindex rebuilds.

pub mod findings;
pub mod reindex;
