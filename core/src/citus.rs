//! Citus' distributed and reference tables. pg_upkeep's steps (a table made
//! LIKE the parent and attached, rows moved out of DEFAULT, DETACH
//! CONCURRENTLY, moves into another schema, row archives) assume a local
//! table: what they would do to a distributed table's shards is not
//! something pg_upkeep can check, so it refuses one and says what Citus
//! offers instead.

use crate::problem::Problem;

/// The refusal for `table`, which Citus distributes or replicates.
pub fn refusal(table: &str) -> Problem {
    Problem::new(
        format!("table {table} is a Citus distributed or reference table, which pg_upkeep does not manage"),
        "pg_upkeep manages local tables. Citus makes the partitions of a distributed table through the \
         coordinator: schedule its create_time_partitions() and drop_old_time_partitions() with pg_cron there. \
         A policy registered before Citus took the table over goes with upkeep.unmanage_partitions() or \
         upkeep.unmanage_archive().",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_names_the_table_and_what_citus_offers() {
        let p = super::refusal("public.events");
        assert!(p.message.contains("public.events"));
        assert!(p.hint.contains("create_time_partitions()") && p.hint.contains("unmanage_partitions()"));
    }
}
