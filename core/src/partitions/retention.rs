//! Which partitions leave a partitioned table, and how. Pure Rust.
//!
//! A partition is archived when its whole range lies before the retention
//! cut-off. One that straddles the cut-off stays, the DEFAULT partition is
//! never archived, and neither is the newest partition. Each move is one
//! action, one transaction: at every moment the partition is in exactly
//! one place.

use crate::actions::{Action, ActionKind, Step};
use crate::partitions::facts::{ParentFacts, Partition, Range};
use crate::sql::{create_table, ident, shortened_name, QualifiedName};
use std::collections::BTreeSet;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Detach, then attach to `<parent>_archive` (same shape), still queryable.
    ArchiveTable,
    /// Detach and move to another schema.
    Schema(String),
    /// Detach and move to a cold tablespace.
    Tablespace(String),
    /// Detach only.
    Detach,
    /// Drop the partition.
    Drop,
}

impl FromStr for ArchiveMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let named = |rest: &str| {
            let rest = rest.trim();
            if rest.is_empty() {
                Err(())
            } else {
                Ok(rest.to_string())
            }
        };
        match s.trim() {
            "archive_table" => Ok(ArchiveMode::ArchiveTable),
            "detach" => Ok(ArchiveMode::Detach),
            "drop" => Ok(ArchiveMode::Drop),
            other => match other.split_once(':') {
                Some(("schema", name)) => named(name).map(ArchiveMode::Schema),
                Some(("tablespace", name)) => named(name).map(ArchiveMode::Tablespace),
                _ => Err(()),
            },
        }
    }
}

impl std::fmt::Display for ArchiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveMode::ArchiveTable => f.write_str("archive_table"),
            ArchiveMode::Schema(s) => write!(f, "schema:{s}"),
            ArchiveMode::Tablespace(t) => write!(f, "tablespace:{t}"),
            ArchiveMode::Detach => f.write_str("detach"),
            ArchiveMode::Drop => f.write_str("drop"),
        }
    }
}

/// Whether the server allows an UNLOGGED partitioned table (18 refuses
/// one; a parent that pg_upgrade brought over stays unlogged, and its
/// partitions can be, but not a new `<parent>_archive`).
const UNLOGGED_PARTITIONED_TABLES: bool = !cfg!(feature = "pg18");

/// The partitioned table that collects archived partitions in
/// `archive_table` mode: `<parent>_archive`, beside the parent.
pub fn archive_table(facts: &ParentFacts) -> QualifiedName {
    let parent = &facts.policy.parent;
    QualifiedName::new(parent.schema.clone(), shortened_name(&parent.name, "archive"))
}

/// Bounded partitions other than the newest, oldest first.
fn candidates(facts: &ParentFacts) -> Vec<(&Partition, Option<i64>, i64)> {
    let mut bounded: Vec<(&Partition, Option<i64>, Option<i64>)> = facts
        .partitions
        .iter()
        .filter_map(|p| match p.range {
            Range::Bounded { lower, upper } => Some((p, lower, upper)),
            Range::Default => None,
        })
        .collect();
    bounded.sort_by_key(|&(_, lower, _)| lower.unwrap_or(i64::MIN));
    bounded.pop(); // the newest stays, whatever its age
    bounded.into_iter().filter_map(|(p, lower, upper)| upper.map(|u| (p, lower, u))).collect()
}

/// The moves due at `now` that cannot go where the policy says (the
/// target refused: see `target.rs`), as (job, partition, message, hint):
/// failed moves.
pub fn refused(facts: &ParentFacts, now_utc: i64) -> Vec<(i64, String, String, String)> {
    let Some(p) = &facts.archive_refused else { return Vec::new() };
    due(facts, now_utc)
        .into_iter()
        .map(|part| (facts.policy.job_id, part.name.to_string(), p.message.clone(), p.hint.clone()))
        .collect()
}

/// Partitions whose whole range is older than the cut-off at `now`.
pub fn due(facts: &ParentFacts, now_utc: i64) -> Vec<&Partition> {
    let Some(cutoff) = facts.policy.cutoff(now_utc) else { return Vec::new() };
    candidates(facts).into_iter().filter(|&(_, _, upper)| upper <= cutoff).map(|(p, _, _)| p).collect()
}

/// When the next partition becomes due (None: never, no retention).
pub fn next_due(facts: &ParentFacts, now_utc: i64) -> Option<i64> {
    let span = facts.policy.retention?;
    let cal = &facts.policy.calendar;
    let cutoff = facts.policy.cutoff(now_utc)?;
    candidates(facts)
        .into_iter()
        .map(|(_, _, upper)| if upper <= cutoff { now_utc } else { cal.shift(cal.instant_at(upper), span, false) })
        .min()
}

/// How a partition leaves its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// Plain DETACH: ACCESS EXCLUSIVE on the parent for a moment, under
    /// `upkeep.lock_timeout`; runs anywhere.
    Plain,
    /// DETACH CONCURRENTLY: only SHARE UPDATE EXCLUSIVE, so readers and
    /// writers carry on; cannot run in a transaction block, so only a
    /// worker process runs it.
    Concurrently,
    /// Finishes a DETACH CONCURRENTLY that was interrupted.
    Finalize,
}

/// The statements that move one partition out, by the policy's mode. The
/// partition's pg_upkeep_bounds CHECK lets the ATTACH to the archive table
/// skip its scan.
pub fn archive_steps(facts: &ParentFacts, part: &Partition, archive_exists: bool, how: Detach) -> Vec<Step> {
    let parent = facts.policy.parent.quoted();
    let name = part.name.quoted();
    let mut steps = Vec::new();
    if facts.policy.archive == ArchiveMode::ArchiveTable && !archive_exists {
        let archive = archive_table(facts);
        steps.push(Step::new(format!(
            "{} {} (LIKE {parent} INCLUDING ALL EXCLUDING IDENTITY) PARTITION BY RANGE ({})",
            create_table(facts.unlogged && UNLOGGED_PARTITIONED_TABLES),
            archive.quoted(),
            ident(&facts.policy.control)
        )));
        steps.extend(facts.access.apply_steps(&archive));
    }
    match (&facts.policy.archive, how) {
        // A partition can be dropped straight away, in one statement.
        (ArchiveMode::Drop, Detach::Plain) => {}
        (_, Detach::Plain) => steps.push(Step::new(format!("ALTER TABLE {parent} DETACH PARTITION {name}"))),
        (_, Detach::Concurrently) => {
            steps.push(Step::top_level(format!("ALTER TABLE {parent} DETACH PARTITION {name} CONCURRENTLY")))
        }
        (_, Detach::Finalize) => {
            steps.push(Step::new(format!("ALTER TABLE {parent} DETACH PARTITION {name} FINALIZE")))
        }
    }
    steps.extend(after_detach(facts, part));
    steps
}

/// Where the detached partition goes, by mode.
fn after_detach(facts: &ParentFacts, part: &Partition) -> Vec<Step> {
    let name = part.name.quoted();
    match &facts.policy.archive {
        ArchiveMode::Detach => vec![],
        ArchiveMode::Drop => vec![Step::new(format!("DROP TABLE {name}"))],
        ArchiveMode::Schema(schema) => vec![Step::new(format!("ALTER TABLE {name} SET SCHEMA {}", ident(schema)))],
        ArchiveMode::Tablespace(ts) => vec![Step::new(format!("ALTER TABLE {name} SET TABLESPACE {}", ident(ts)))],
        ArchiveMode::ArchiveTable => {
            let cal = &facts.policy.calendar;
            let bound = |b: Option<i64>, open: &str| b.map_or(open.to_string(), |b| cal.literal(b));
            let (lo, hi) = match part.range {
                Range::Bounded { lower, upper } => (bound(lower, "MINVALUE"), bound(upper, "MAXVALUE")),
                Range::Default => unreachable!("the DEFAULT partition is never archived"),
            };
            vec![Step::new(format!(
                "ALTER TABLE {} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})",
                archive_table(facts).quoted()
            ))]
        }
    }
}

fn move_action(facts: &ParentFacts, target: &QualifiedName, detail: String, steps: Vec<Step>) -> Action {
    Action {
        job_id: facts.policy.job_id,
        kind: ActionKind::ArchivePartition,
        target: target.clone(),
        detail,
        run_as: facts.owner.clone(),
        steps,
    }
}

/// The archive moves due at `now`. `existing` lists the archive tables that
/// exist already (only the first move into a new one creates it). With
/// `concurrently` (a worker process) partitions leave by DETACH
/// CONCURRENTLY, unless the parent has a DEFAULT partition, which
/// PostgreSQL does not allow it for.
///
/// Moves that were interrupted come first: a detach left pending (only
/// one can be, per parent, and it blocks other concurrent detaches) is
/// finalized, and a partition already detached by an unfinished move is
/// taken where the move was going.
pub fn plan(
    facts: &ParentFacts,
    now_utc: i64,
    existing: &BTreeSet<QualifiedName>,
    concurrently: bool,
) -> Vec<(Action, QualifiedName)> {
    if facts.archive_refused.is_some() {
        return Vec::new();
    }
    let mut archive_exists = existing.contains(&archive_table(facts));
    let unfinished = |name: &QualifiedName| facts.unfinished.iter().find(|u| &u.target == name);
    let due = due(facts, now_utc);
    let mut moves = Vec::new();
    if let Some(pending) = facts.partitions.iter().find(|p| Some(&p.name) == facts.detach_pending.as_ref()) {
        let mut steps = vec![Step::new(format!(
            "ALTER TABLE {} DETACH PARTITION {} FINALIZE",
            facts.policy.parent.quoted(),
            pending.name.quoted()
        ))];
        let detail = match unfinished(&pending.name) {
            Some(u) => {
                steps.extend(u.steps.iter().cloned().map(Step::new));
                format!("{} (finishing an interrupted move)", facts.policy.archive)
            }
            None if due.iter().any(|p| p.name == pending.name) => {
                steps = archive_steps(facts, pending, archive_exists, Detach::Finalize);
                archive_exists = true;
                format!("{} (retention; finishing a pending detach)", facts.policy.archive)
            }
            None => "finishing a pending detach".to_string(),
        };
        moves.push((move_action(facts, &pending.name, detail, steps), pending.name.clone()));
    }
    for u in facts.unfinished.iter().filter(|u| facts.partitions.iter().all(|p| p.name != u.target)) {
        let steps = u.steps.iter().cloned().map(Step::new).collect();
        let detail = format!("{} (finishing an interrupted move)", facts.policy.archive);
        moves.push((move_action(facts, &u.target, detail, steps), u.target.clone()));
    }
    // A worker finishes a pending detach alone: PostgreSQL refuses any other
    // detach of the parent until it is finalized, so moves planned behind a
    // finalize that fails (a deadlock, a lock timeout) would all fail too,
    // and leave records of moves that never began. The others are due again
    // at the next cycle. (From SQL they follow in order, in the same call.)
    if concurrently && facts.detach_pending.is_some() {
        return moves;
    }
    let how = match (concurrently, &facts.default_partition) {
        (true, None) => Detach::Concurrently,
        _ => Detach::Plain,
    };
    let why = match (concurrently, how) {
        (true, Detach::Plain) => "; plain DETACH: PostgreSQL refuses CONCURRENTLY beside a DEFAULT partition",
        _ => "",
    };
    for part in due.into_iter().filter(|p| Some(&p.name) != facts.detach_pending.as_ref()) {
        let steps = archive_steps(facts, part, archive_exists, how);
        archive_exists = true;
        let detail = format!("{} (retention{why})", facts.policy.archive);
        moves.push((move_action(facts, &part.name, detail, steps), part.name.clone()));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{parse_time_zone, Calendar, ColumnKind, Granularity, Span};
    use crate::partitions::facts::sample;
    use crate::unfinished::Unfinished;
    use chrono::NaiveDate;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn facts(mode: ArchiveMode, months_kept: Option<i32>, parts: &[(i32, u32)]) -> ParentFacts {
        let cal = Calendar::new(Granularity::Month, ColumnKind::Date, parse_time_zone("UTC").unwrap());
        let starts: Vec<NaiveDate> = parts.iter().map(|&(y, m)| ymd(y, m, 1)).collect();
        let mut f = sample::with_periods(sample::parent(cal, 1), &starts);
        f.partitions
            .push(Partition { name: QualifiedName::new("public", "nav_history_default"), range: Range::Default });
        f.default_partition = Some(QualifiedName::new("public", "nav_history_default"));
        f.policy.retention = months_kept.map(|m| Span { months: m, days: 0, micros: 0 });
        f.policy.archive = mode;
        f
    }

    fn now() -> i64 {
        Calendar::new(Granularity::Day, ColumnKind::Timestamptz, parse_time_zone("UTC").unwrap())
            .bound_of(ymd(2026, 11, 23))
    }

    fn names(p: &[&Partition]) -> Vec<String> {
        p.iter().map(|p| p.name.name.clone()).collect()
    }

    #[test]
    fn only_wholly_older_partitions_go_never_the_default_or_the_newest() {
        // Keep 3 months at 2026-11-23: cut-off 2026-08-23. July ends before
        // it; August straddles it and stays.
        let f =
            facts(ArchiveMode::Detach, Some(3), &[(2026, 6), (2026, 7), (2026, 8), (2026, 9), (2026, 11), (2026, 12)]);
        assert_eq!(names(&due(&f, now())), ["nav_history_p2026_06", "nav_history_p2026_07"]);
        // Even when everything is old, the newest partition stays.
        let old = facts(ArchiveMode::Drop, Some(1), &[(2020, 1), (2020, 2)]);
        assert_eq!(names(&due(&old, now())), ["nav_history_p2020_01"]);
        // No retention, nothing goes.
        assert!(due(&facts(ArchiveMode::Drop, None, &[(2020, 1), (2020, 2)]), now()).is_empty());
    }

    #[test]
    fn next_due_is_when_the_oldest_keeper_passes_the_cutoff() {
        let f = facts(ArchiveMode::Detach, Some(3), &[(2026, 8), (2026, 9), (2026, 11)]);
        // August ends 2026-09-01; three months later it is wholly too old.
        let expected = Calendar::new(Granularity::Day, ColumnKind::Timestamptz, parse_time_zone("UTC").unwrap())
            .bound_of(ymd(2026, 12, 1));
        assert_eq!(next_due(&f, now()), Some(expected));
        assert!(due(&f, expected - 1).is_empty());
        assert_eq!(names(&due(&f, expected)), ["nav_history_p2026_08"]);
    }

    #[test]
    fn each_mode_moves_the_partition_in_one_action() {
        let parts = [(2020, 1), (2020, 2)];
        let script = |mode: ArchiveMode, exists: bool| {
            let f = facts(mode, Some(1), &parts);
            let existing = if exists { [archive_table(&f)].into() } else { BTreeSet::new() };
            let p = plan(&f, now(), &existing, false);
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].0.kind, ActionKind::ArchivePartition);
            p[0].0.script()
        };
        let as_owner = r#"-- as role "app" (the table's owner)"#;
        assert_eq!(
            script(ArchiveMode::Detach, false),
            format!(
                "{as_owner}\n{}",
                r#"ALTER TABLE "public"."nav_history" DETACH PARTITION "public"."nav_history_p2020_01";"#
            )
        );
        assert_eq!(
            script(ArchiveMode::Drop, false),
            format!("{as_owner}\n{}", r#"DROP TABLE "public"."nav_history_p2020_01";"#)
        );
        assert!(script(ArchiveMode::Schema("Cold Storage".into()), false).ends_with(r#"SET SCHEMA "Cold Storage";"#));
        assert!(script(ArchiveMode::Tablespace("slow".into()), false).ends_with(r#"SET TABLESPACE "slow";"#));
        let first = script(ArchiveMode::ArchiveTable, false);
        assert!(
            first.contains(r#"CREATE TABLE "public"."nav_history_archive" (LIKE "public"."nav_history" INCLUDING ALL"#)
        );
        assert!(first.contains(r#"PARTITION BY RANGE ("nav_date")"#));
        assert!(first.ends_with(
            r#"ATTACH PARTITION "public"."nav_history_p2020_01" FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');"#
        ));
        let later = script(ArchiveMode::ArchiveTable, true);
        assert!(!later.contains("CREATE TABLE"));
        assert!(later.find("DETACH").unwrap() < later.find("ATTACH PARTITION").unwrap());
    }

    #[test]
    fn the_archive_table_is_created_once_per_plan() {
        let f = facts(ArchiveMode::ArchiveTable, Some(1), &[(2020, 1), (2020, 2), (2020, 3)]);
        let p = plan(&f, now(), &BTreeSet::new(), false);
        assert_eq!(p.len(), 2);
        assert!(p[0].0.script().contains("CREATE TABLE"));
        assert!(!p[1].0.script().contains("CREATE TABLE"));
    }

    #[test]
    fn workers_detach_concurrently_unless_there_is_a_default_partition() {
        let mut f = facts(ArchiveMode::ArchiveTable, Some(1), &[(2020, 1), (2020, 2)]);
        // With a DEFAULT partition PostgreSQL refuses CONCURRENTLY: plain, and said so.
        let p = plan(&f, now(), &BTreeSet::new(), true);
        assert!(p[0].0.steps.iter().all(|s| !s.top_level), "{:?}", p[0].0.steps);
        assert!(p[0].0.detail.contains("DEFAULT partition"), "{}", p[0].0.detail);
        f.partitions.retain(|p| p.range != Range::Default);
        f.default_partition = None;
        let p = plan(&f, now(), &BTreeSet::new(), true);
        let steps = &p[0].0.steps;
        let top: Vec<&Step> = steps.iter().filter(|s| s.top_level).collect();
        assert_eq!(top.len(), 1);
        assert!(top[0].sql.ends_with(r#"DETACH PARTITION "public"."nav_history_p2020_01" CONCURRENTLY"#));
        // Archive table created before, partition attached after the detach.
        assert!(steps[0].sql.starts_with("CREATE TABLE") && steps[1].top_level);
        assert!(steps[2].sql.contains("ATTACH PARTITION"));
        // A caller (in a transaction) never gets a top-level step.
        assert!(plan(&f, now(), &BTreeSet::new(), false)[0].0.steps.iter().all(|s| !s.top_level));
        // Drop mode: a worker detaches concurrently first, a caller just drops.
        f.policy.archive = ArchiveMode::Drop;
        let worker = plan(&f, now(), &BTreeSet::new(), true)[0].0.script();
        assert!(worker.contains("CONCURRENTLY;") && worker.ends_with(r#"DROP TABLE "public"."nav_history_p2020_01";"#));
    }

    #[test]
    fn interrupted_moves_are_finished_first() {
        let mut f = facts(ArchiveMode::ArchiveTable, Some(1), &[(2020, 1), (2020, 2), (2020, 3)]);
        let jan = QualifiedName::new("public", "nav_history_p2020_01");
        // January left detach-pending by a worker whose remaining step is known.
        f.detach_pending = Some(jan.clone());
        f.unfinished.push(Unfinished { target: jan.clone(), steps: vec!["SELECT 'rest of the move'".into()] });
        // A partition a worker detached and then died: no longer a partition.
        let gone = QualifiedName::new("public", "nav_history_p2019_12");
        f.unfinished.push(Unfinished { target: gone.clone(), steps: vec!["SELECT 'attach it'".into()] });
        // A worker finishes them alone: no other detach is allowed while one
        // is pending, so February waits for the next cycle.
        let p = plan(&f, now(), &[archive_table(&f)].into(), true);
        let targets: Vec<&QualifiedName> = p.iter().map(|(a, _)| &a.target).collect();
        assert_eq!(targets, [&jan, &gone]);
        // From SQL, February follows in the same call, after them.
        let sql = plan(&f, now(), &[archive_table(&f)].into(), false);
        let targets: Vec<&QualifiedName> = sql.iter().map(|(a, _)| &a.target).collect();
        assert_eq!(targets, [&jan, &gone, &QualifiedName::new("public", "nav_history_p2020_02")]);
        assert_eq!(
            p[0].0.steps.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
            [
                r#"ALTER TABLE "public"."nav_history" DETACH PARTITION "public"."nav_history_p2020_01" FINALIZE"#,
                "SELECT 'rest of the move'"
            ]
        );
        assert_eq!(p[1].0.script().lines().last(), Some("SELECT 'attach it';"));
        // A pending detach nobody recorded: finalized, then moved if due.
        f.unfinished.clear();
        let p = plan(&f, now(), &[archive_table(&f)].into(), false);
        assert!(p[0].0.steps[0].sql.ends_with("FINALIZE") && p[0].0.steps[1].sql.contains("ATTACH PARTITION"));
        // ... or only finalized when it is not due.
        let mut young = facts(ArchiveMode::ArchiveTable, Some(1), &[(2026, 10), (2026, 11)]);
        young.detach_pending = Some(QualifiedName::new("public", "nav_history_p2026_10"));
        let p = plan(&young, now(), &BTreeSet::new(), false);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.steps.len(), 1);
        assert!(p[0].0.steps[0].sql.ends_with("FINALIZE"));
    }
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("archive_table".parse(), Ok(ArchiveMode::ArchiveTable));
        assert_eq!("schema:cold".parse(), Ok(ArchiveMode::Schema("cold".into())));
        assert_eq!("tablespace: slow disk".parse(), Ok(ArchiveMode::Tablespace("slow disk".into())));
        assert_eq!("drop".parse(), Ok(ArchiveMode::Drop));
        assert!("schema:".parse::<ArchiveMode>().is_err());
        assert!("shred".parse::<ArchiveMode>().is_err());
    }
}
