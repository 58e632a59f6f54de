//! Partition management: the facts a plan needs, what to create, what
//! leaves by retention, and the health of each parent.

pub mod facts;
pub mod health;
pub mod plan;
#[cfg(test)]
mod properties;
pub mod retention;
