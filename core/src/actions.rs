//! What a plan asks the executor to do. An action is plain data: the
//! statements it will run, already quoted, so a dry run can show them and
//! unit tests can read them.

use crate::sql::QualifiedName;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    CreatePartition,
    ArchivePartition,
    ArchiveRows,
    RefreshMatview,
    TrackChanges,
    UntrackChanges,
    SnapshotIndexHealth,
    Reindex,
    DropIndex,
    SyncAccess,
    /// Not an action: a policy checked and found not to fit its table.
    CheckPolicy,
}

impl ActionKind {
    /// Long actions (they may wait on application transactions, move data
    /// or recompute a view) run in `pg_upkeep worker` processes, so that the scheduler's
    /// quick ones, like creating partitions, never wait behind them.
    pub fn is_long(self) -> bool {
        matches!(
            self,
            ActionKind::ArchivePartition
                | ActionKind::ArchiveRows
                | ActionKind::RefreshMatview
                | ActionKind::Reindex
                | ActionKind::DropIndex
        )
    }
}

impl ActionKind {
    /// Whether taking it is a run of its job (recorded in
    /// `upkeep.job_state`); tracking a view's tables is set-up, not a run.
    pub fn records_run(self) -> bool {
        !matches!(self, ActionKind::TrackChanges | ActionKind::UntrackChanges)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::CreatePartition => "create_partition",
            ActionKind::ArchivePartition => "archive_partition",
            ActionKind::ArchiveRows => "archive_rows",
            ActionKind::RefreshMatview => "refresh_matview",
            ActionKind::TrackChanges => "track_changes",
            ActionKind::UntrackChanges => "untrack_changes",
            ActionKind::SnapshotIndexHealth => "snapshot_index_health",
            ActionKind::Reindex => "reindex",
            ActionKind::DropIndex => "drop_index",
            ActionKind::SyncAccess => "sync_access",
            ActionKind::CheckPolicy => "check_policy",
        })
    }
}

/// One statement of an action. When `counts` is set, the number of rows the
/// statement processed is reported in the run log under that label. A
/// `top_level` statement cannot run inside a transaction block (the
/// CONCURRENTLY forms): only a worker process runs it, between the
/// transactions of the steps before and after it. `args` are the values
/// of its parameters `$1, $2, ...`, passed as text. A `batch` statement
/// processes up to that many rows and returns one row: how many it
/// processed and where the next batch starts, which it takes as its last
/// parameter; it runs again until a batch falls short (a worker commits
/// after each batch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    pub sql: String,
    pub counts: Option<&'static str>,
    pub top_level: bool,
    pub args: Vec<String>,
    pub batch: Option<i64>,
}

impl Step {
    pub fn new(sql: String) -> Self {
        Step { sql, ..Step::default() }
    }

    pub fn counting(sql: String, label: &'static str) -> Self {
        Step { sql, counts: Some(label), ..Step::default() }
    }

    pub fn top_level(sql: String) -> Self {
        Step { sql, top_level: true, ..Step::default() }
    }

    /// A batch statement taking `args` (the last one where it starts),
    /// repeated while it processes `limit` rows.
    pub fn batches(sql: String, args: Vec<String>, label: &'static str, limit: i64) -> Self {
        Step { sql, counts: Some(label), args, batch: Some(limit), ..Step::default() }
    }

    /// The statement as a script shows it: with its parameter values.
    fn shown(&self) -> String {
        let args = self.args.iter().enumerate().map(|(i, a)| format!("${} = {a}", i + 1)).collect::<Vec<_>>();
        let repeat = self.batch.map(|n| format!("repeated while a batch moves {n} rows")).into_iter();
        let notes: Vec<String> = args.into_iter().chain(repeat).collect();
        if notes.is_empty() {
            format!("{};", self.sql)
        } else {
            format!("{}; -- {}", self.sql, notes.join(", "))
        }
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
            .chain(self.steps.iter().map(Step::shown))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
