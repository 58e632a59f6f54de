//! The statements that start and stop tracking a table's changes (the
//! extension's `matviews::changes` is the trigger and what it records).

use crate::sql::{ident, QualifiedName};

/// The trigger pg_upkeep puts on the tables it tracks.
pub const TRIGGER: &str = "upkeep_track_changes";

/// Statements that start tracking a table: the trigger, enabled ALWAYS so
/// that it also fires for logical replication and session_replication_role
/// = replica.
pub fn track_sql(table: &QualifiedName) -> Vec<String> {
    let t = ident(TRIGGER);
    vec![
        format!(
            "CREATE TRIGGER {t} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} \
             FOR EACH STATEMENT EXECUTE FUNCTION upkeep.track_changes()",
            table.quoted()
        ),
        format!("ALTER TABLE {} ENABLE ALWAYS TRIGGER {t}", table.quoted()),
    ]
}

/// The statement that stops tracking a table no managed view reads.
pub fn untrack_sql(table: &QualifiedName) -> String {
    format!("DROP TRIGGER IF EXISTS {} ON {}", ident(TRIGGER), table.quoted())
}
