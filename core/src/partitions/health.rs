//! Partition health: how far ahead a parent is covered, holes, rows stuck in
//! the DEFAULT partition, and one status with a hint. Pure Rust.

use super::facts::ParentFacts;
use super::plan::{existing_ranges, missing_ranges};
use crate::calendar::Bound;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Upper bound of the unbroken run of partitions that covers now.
    pub covered_until: Option<Bound>,
    /// Partitions that start at or after the next period.
    pub future_partitions: usize,
    /// Holes between existing partitions.
    pub gaps: usize,
    /// Ranges a maintenance run would create right now.
    pub due: usize,
    /// Partitions a maintenance run would archive right now.
    pub archive_due: usize,
    pub status: &'static str,
    pub hint: Option<String>,
}

pub fn assess(facts: &ParentFacts, now_utc: i64, rows_in_default: i64) -> Health {
    let p = &facts.policy;
    let cal = &p.calendar;
    let ranges = existing_ranges(facts);
    let current = cal.period_start(cal.civil_date_of_instant(now_utc));
    let now_bound = cal.bound_of(current);
    let next_bound = cal.bound_of(cal.next_start(current));

    let covered_until = ranges
        .iter()
        .find(|(l, u)| *l <= now_bound && now_bound < *u)
        .map(|&(_, first_upper)| ranges.iter().fold(first_upper, |until, &(l, u)| if l == until { u } else { until }));
    let future_partitions = ranges.iter().filter(|(l, _)| *l >= next_bound).count();
    let gaps = ranges.windows(2).filter(|w| w[1].0 > w[0].1).count();
    let due = missing_ranges(facts, now_utc).len();
    let archive_due = super::retention::due(facts, now_utc).len();
    let parent = p.parent.to_string();

    let (status, hint) = if gaps > 0 {
        (
            "gap",
            Some(format!(
                "{gaps} hole(s) between partitions: SELECT * FROM upkeep.create_partitions('{parent}'); fills them."
            )),
        )
    } else if (future_partitions as u32) < p.premake || covered_until.is_none() {
        (
            "due",
            Some(format!(
                "Fewer future partitions than premake ({}): SELECT * FROM upkeep.create_partitions('{parent}');",
                p.premake
            )),
        )
    } else if archive_due > 0 {
        (
            "archive_due",
            Some(format!(
                "{archive_due} partition(s) older than the retention are still live: SELECT * FROM upkeep.run_maintenance(); moves them ({}).",
                p.archive
            )),
        )
    } else if rows_in_default > 0 {
        (
            "rows_in_default",
            Some(format!(
                "{rows_in_default} row(s) sit in the DEFAULT partition: register with start_at covering them (upkeep.manage_partitions(..., start_at => ...)) so they move into their own partitions."
            )),
        )
    } else {
        ("ok", None)
    };
    Health { covered_until, future_partitions, gaps, due, archive_due, status, hint }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{parse_time_zone, Calendar, ColumnKind, Granularity};
    use crate::partitions::facts::sample;
    use chrono::NaiveDate;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn facts(months: &[(i32, u32)]) -> ParentFacts {
        let cal = Calendar::new(Granularity::Month, ColumnKind::Date, parse_time_zone("UTC").unwrap());
        let starts: Vec<NaiveDate> = months.iter().map(|&(y, m)| ymd(y, m, 1)).collect();
        let mut f = sample::with_periods(sample::parent(cal, 2), &starts);
        f.policy.job_id = 1;
        f
    }

    fn now() -> i64 {
        Calendar::new(Granularity::Day, ColumnKind::Timestamptz, parse_time_zone("UTC").unwrap())
            .bound_of(ymd(2026, 11, 23))
    }

    #[test]
    fn healthy_parent() {
        let f = facts(&[(2026, 10), (2026, 11), (2026, 12), (2027, 1)]);
        let h = assess(&f, now(), 0);
        assert_eq!(h.status, "ok");
        assert_eq!(h.future_partitions, 2);
        assert_eq!(h.gaps, 0);
        assert_eq!(h.due, 0);
        assert_eq!(h.covered_until, Some(f.policy.calendar.bound_of(ymd(2027, 2, 1))));
    }

    #[test]
    fn reports_due_gap_and_default_rows() {
        let h = assess(&facts(&[(2026, 11), (2026, 12)]), now(), 0);
        assert_eq!((h.status, h.due, h.future_partitions), ("due", 1, 1));
        let h = assess(&facts(&[(2026, 9), (2026, 11), (2026, 12), (2027, 1)]), now(), 0);
        assert_eq!((h.status, h.gaps, h.due), ("gap", 1, 1));
        assert!(h.hint.unwrap().contains("create_partitions('public.nav_history')"));
        let h = assess(&facts(&[(2026, 11), (2026, 12), (2027, 1)]), now(), 5);
        assert_eq!(h.status, "rows_in_default");
        // Cut-off 2026-05-23: April (ending 1 May) is wholly older.
        let months: Vec<(i32, u32)> = (4..=12).map(|m| (2026, m)).chain([(2027, 1)]).collect();
        let mut old = facts(&months);
        old.policy.retention = Some(crate::calendar::Span { months: 6, days: 0, micros: 0 });
        let h = assess(&old, now(), 0);
        assert_eq!((h.status, h.archive_due), ("archive_due", 1));
        let h = assess(&facts(&[]), now(), 0);
        assert_eq!((h.status, h.covered_until, h.due), ("due", None, 3));
    }
}
