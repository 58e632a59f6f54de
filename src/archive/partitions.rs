//! Which partitions leave a partitioned table, and how. Pure Rust.
//!
//! A partition is archived when its whole range lies before the retention
//! cut-off. One that straddles the cut-off stays, the DEFAULT partition is
//! never archived, and neither is the newest partition. Each move is one
//! action, one transaction: at every moment the partition is in exactly
//! one place.

use super::ArchiveMode;
use crate::actions::{Action, ActionKind, Step};
use crate::partitions::facts::{ParentFacts, Partition, Range};
use crate::partitions::plan::shortened_name;
use crate::sql::{ident, QualifiedName};
use std::collections::BTreeSet;

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

/// The statements that move one partition out, by the policy's mode.
/// Plain DETACH takes ACCESS EXCLUSIVE on the parent for a moment, under
/// `upkeep.lock_timeout`; the partition's pg_upkeep_bounds CHECK lets the
/// ATTACH to the archive table skip its scan.
pub fn archive_steps(facts: &ParentFacts, part: &Partition, archive_exists: bool) -> Vec<Step> {
    let parent = facts.policy.parent.quoted();
    let name = part.name.quoted();
    let detach = Step::new(format!("ALTER TABLE {parent} DETACH PARTITION {name}"));
    match &facts.policy.archive {
        ArchiveMode::Detach => vec![detach],
        ArchiveMode::Drop => vec![Step::new(format!("DROP TABLE {name}"))],
        ArchiveMode::Schema(schema) => {
            vec![detach, Step::new(format!("ALTER TABLE {name} SET SCHEMA {}", ident(schema)))]
        }
        ArchiveMode::Tablespace(ts) => {
            vec![detach, Step::new(format!("ALTER TABLE {name} SET TABLESPACE {}", ident(ts)))]
        }
        ArchiveMode::ArchiveTable => {
            let archive = archive_table(facts).quoted();
            let cal = &facts.policy.calendar;
            let bound = |b: Option<i64>, open: &str| b.map_or(open.to_string(), |b| cal.literal(b));
            let (lo, hi) = match part.range {
                Range::Bounded { lower, upper } => (bound(lower, "MINVALUE"), bound(upper, "MAXVALUE")),
                Range::Default => unreachable!("the DEFAULT partition is never archived"),
            };
            let mut steps = Vec::new();
            if !archive_exists {
                steps.push(Step::new(format!(
                    "CREATE TABLE {archive} (LIKE {parent} INCLUDING ALL EXCLUDING IDENTITY) PARTITION BY RANGE ({})",
                    ident(&facts.policy.control)
                )));
            }
            steps.push(detach);
            steps.push(Step::new(format!(
                "ALTER TABLE {archive} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            )));
            steps
        }
    }
}

/// The archive moves due at `now`. `existing` lists the archive tables that
/// exist already (only the first move into a new one creates it).
pub fn plan(facts: &ParentFacts, now_utc: i64, existing: &BTreeSet<QualifiedName>) -> Vec<(Action, QualifiedName)> {
    let mut archive_exists = existing.contains(&archive_table(facts));
    due(facts, now_utc)
        .into_iter()
        .map(|part| {
            let steps = archive_steps(facts, part, archive_exists);
            archive_exists = true;
            let action = Action {
                job_id: facts.policy.job_id,
                kind: ActionKind::ArchivePartition,
                target: part.name.clone(),
                detail: format!("{} (retention)", facts.policy.archive),
                run_as: facts.owner.clone(),
                steps,
            };
            (action, part.name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{parse_time_zone, Calendar, ColumnKind, Granularity, Span};
    use crate::partitions::facts::sample;
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
            let p = plan(&f, now(), &existing);
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
        let p = plan(&f, now(), &BTreeSet::new());
        assert_eq!(p.len(), 2);
        assert!(p[0].0.script().contains("CREATE TABLE"));
        assert!(!p[1].0.script().contains("CREATE TABLE"));
    }
}
