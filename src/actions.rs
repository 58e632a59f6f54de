//! What a plan asks the executor to do. An action is plain data: the
//! statements it will run, already quoted, so a dry run can show them and
//! unit tests can read them.

use crate::sql::QualifiedName;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    CreatePartition,
    ArchivePartition,
}

impl ActionKind {
    /// Long actions (they may wait on application transactions or move
    /// data) run in `pg_upkeep worker` processes, so that the scheduler's
    /// quick ones, like creating partitions, never wait behind them.
    pub fn is_long(self) -> bool {
        matches!(self, ActionKind::ArchivePartition)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::CreatePartition => "create_partition",
            ActionKind::ArchivePartition => "archive_partition",
        })
    }
}

/// One statement of an action. When `counts` is set, the number of rows the
/// statement processed is reported in the run log under that label. A
/// `top_level` statement cannot run inside a transaction block (the
/// CONCURRENTLY forms): only a worker process runs it, between the
/// transactions of the steps before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sql: String,
    pub counts: Option<&'static str>,
    pub top_level: bool,
}

impl Step {
    pub fn new(sql: String) -> Self {
        Step { sql, counts: None, top_level: false }
    }

    pub fn counting(sql: String, label: &'static str) -> Self {
        Step { sql, counts: Some(label), top_level: false }
    }

    pub fn top_level(sql: String) -> Self {
        Step { sql, counts: None, top_level: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub job_id: i64,
    pub kind: ActionKind,
    /// The object acted on.
    pub target: QualifiedName,
    /// What the action is about, e.g. the partition's range.
    pub detail: String,
    /// The role the statements run as: the owner of the table served.
    pub run_as: String,
    pub steps: Vec<Step>,
}

impl Action {
    /// The whole action as one SQL script (what a dry run shows).
    pub fn script(&self) -> String {
        std::iter::once(format!("-- as role {} (the table's owner)", crate::sql::ident(&self.run_as)))
            .chain(self.steps.iter().map(|s| format!("{};", s.sql)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
