//! Property tests of the pure planning code (partitions and their archive
//! moves): random policies, random existing partitions (aligned or not,
//! MINVALUE/MAXVALUE, DEFAULT, misnamed), random names and random times.
//! What must hold for every input:
//! - the plan covers one continuous range: the wanted window, from the
//!   retention cut-off (or the first wanted period) to the end of premake,
//!   stated in `window` independently of the planner, has no gap once the
//!   plan is applied, and nothing is planned outside it;
//! - no planned partition overlaps an existing one or another planned one;
//! - names are unique in the schema, at most 63 bytes;
//! - a second plan at the same moment plans nothing;
//! - the archive never takes the newest or the DEFAULT partition, nor one
//!   reaching past the cut-off, and what it took is not planned again.

use super::facts::{sample, ParentFacts, Partition, Range};
use super::plan::{self, Effect};
use super::retention as archive_plan;
use crate::calendar::{parse_time_zone, Bound, Calendar, ColumnKind, Granularity, Span};
use crate::sql::QualifiedName;
use crate::sql::{shortened_name, MAX_NAME_BYTES};
use proptest::prelude::*;
use std::collections::BTreeSet;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo", // DST gaps at midnight in some years
    "Asia/Kolkata",
    "Australia/Lord_Howe", // 30-minute DST
    "Pacific/Chatham",
    "Pacific/Apia", // skipped a whole day in 2011
];

const PARENTS: &[&str] = &[
    "nav_history",
    "a\"; DROP TABLE b; --",
    "Événements Überweisungen Größenordnung",
    // 63 bytes: every partition name must be shortened.
    "t23456789_123456789_123456789_123456789_123456789_123456789_123",
    // 61 bytes of two-byte characters: shortened on a character boundary.
    "ééééééééééééééééééééééééééééééx",
];

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// One generated case: a parent, its partitions, decoy names, and "now".
#[derive(Debug, Clone)]
struct Case {
    facts: ParentFacts,
    taken: BTreeSet<String>,
    now: i64,
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::Day),
        Just(Granularity::Week),
        Just(Granularity::Month),
        Just(Granularity::Quarter),
        Just(Granularity::Year),
    ]
}

fn kind() -> impl Strategy<Value = ColumnKind> {
    prop_oneof![Just(ColumnKind::Date), Just(ColumnKind::Timestamp), Just(ColumnKind::Timestamptz)]
}

fn retention() -> impl Strategy<Value = Option<Span>> {
    prop::option::of((0i32..30, 0i32..100, 0i64..48).prop_filter_map("a positive span", |(months, days, hours)| {
        (months + days > 0 || hours > 0).then_some(Span { months, days, micros: hours * HOUR })
    }))
}

/// A cut point for existing partitions, relative to the current period:
/// a period boundary `k` periods away, or any instant (day precision for
/// date columns) up to three years either side.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Period(i32),
    Offset(i64),
}

fn cut() -> impl Strategy<Value = Cut> {
    prop_oneof![
        3 => (-40i32..40).prop_map(Cut::Period),
        1 => (-3 * 366 * DAY..3 * 366 * DAY).prop_map(Cut::Offset),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (granularity(), kind(), 0..ZONES.len(), 0..PARENTS.len(), 0u32..14),
        // now: 1990 .. 2100
        631_152_000i64 * 1_000_000..4_102_444_800i64 * 1_000_000,
        (prop::option::of(-60i32..6), retention()),
        (prop::collection::vec(cut(), 0..14), prop::collection::vec(any::<u8>(), 14)),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop::collection::vec(-45i32..20, 0..6),
    )
        .prop_map(|((g, k, zone, parent, premake), now, (start, retention), (cuts, coins), ends, decoys)| {
            let cal = Calendar::new(g, k, parse_time_zone(ZONES[zone]).unwrap());
            let mut facts = sample::parent(cal, premake);
            facts.policy.parent = QualifiedName::new("public", PARENTS[parent]);
            facts.policy.retention = retention;
            let current = cal.period_start(cal.civil_date_of_instant(now));
            let period = |k: i32| {
                let mut d = current;
                for _ in 0..k.unsigned_abs() {
                    d = if k > 0 { cal.next_start(d) } else { cal.period_start(d.pred_opt().unwrap()) };
                }
                d
            };
            facts.policy.start_at = start.map(|k| cal.instant_of(period(k)));

            // Existing partitions: consecutive pieces between sorted cut
            // points, each kept or left as a gap by a coin, so they never
            // overlap (PostgreSQL guarantees that much).
            let base = cal.bound_of(current);
            let day_precision = |b: Bound| if k == ColumnKind::Date { b - b.rem_euclid(DAY) } else { b };
            let mut points: Vec<Bound> = cuts
                .iter()
                .map(|c| match *c {
                    Cut::Period(k) => cal.bound_of(period(k)),
                    Cut::Offset(o) => day_precision(base + o),
                })
                .collect();
            points.sort();
            points.dedup();
            let (min_value, max_value, default) = ends;
            let mut ranges: Vec<(Option<Bound>, Option<Bound>)> = points
                .windows(2)
                .zip(&coins)
                .filter(|(_, &coin)| coin % 3 != 0)
                .map(|(w, _)| (Some(w[0]), Some(w[1])))
                .collect();
            if min_value {
                if let Some(first) = ranges.first_mut() {
                    first.0 = None;
                }
            }
            if max_value {
                if let Some(last) = ranges.last_mut() {
                    last.1 = None;
                }
            }
            let mut taken = BTreeSet::new();
            for (i, (lower, upper)) in ranges.into_iter().enumerate() {
                // Some carry the name a plan would give another period.
                let name = match lower {
                    Some(l) if coins[i] % 2 == 0 => {
                        let label = cal.label(cal.next_start(cal.period_of(l)));
                        shortened_name(&facts.policy.parent.name, &format!("p{label}"))
                    }
                    _ => format!("legacy_{i}"),
                };
                if taken.insert(name.clone()) {
                    facts.partitions.push(Partition {
                        name: QualifiedName::new("public", name),
                        range: Range::Bounded { lower, upper },
                    });
                }
            }
            if default {
                facts.default_partition = Some(QualifiedName::new("public", "the_default"));
                facts
                    .partitions
                    .push(Partition { name: QualifiedName::new("public", "the_default"), range: Range::Default });
                taken.insert("the_default".to_string());
            }
            // Other relations in the schema holding names the plan wants.
            for k in decoys {
                taken.insert(shortened_name(&facts.policy.parent.name, &format!("p{}", cal.label(period(k)))));
            }
            Case { facts, taken, now }
        })
}

fn bounded(p: &Partition) -> Option<(Bound, Bound)> {
    match p.range {
        Range::Bounded { lower, upper } => Some((lower.unwrap_or(Bound::MIN), upper.unwrap_or(Bound::MAX))),
        Range::Default => None,
    }
}

/// The rule the plan must meet, stated here without the planner's code
/// (periods are numbered by plain arithmetic on civil dates, time zones
/// converted by chrono-tz directly): the periods from `start_at`'s (else
/// the oldest existing partition's, else the current one), never later
/// than the current period nor earlier than the retention cut-off's,
/// through the current period plus `premake` more, at most 5,000. Returns
/// the start of the first period, the start of what must be covered (the
/// cut-off when it falls inside the first period), and the end.
fn window(facts: &ParentFacts, now: i64) -> (Bound, Bound, Bound) {
    use chrono::{Datelike, NaiveDate, TimeZone};
    let cal = &facts.policy.calendar;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let naive = |b: Bound| epoch + chrono::Duration::microseconds(b);
    // The civil date of an instant in the policy's zone, and of a bound.
    let date_of_instant = |t: i64| cal.tz.from_utc_datetime(&naive(t)).date_naive();
    let date_of_bound = |b: Bound| match cal.kind {
        ColumnKind::Timestamptz => date_of_instant(b),
        ColumnKind::Date | ColumnKind::Timestamp => naive(b).date(),
    };
    let index = |d: NaiveDate| -> i64 {
        let (y, m0) = (d.year() as i64, d.month0() as i64);
        match cal.granularity {
            Granularity::Day => d.num_days_from_ce() as i64,
            // 0001-01-01 was a Monday: weeks run Monday to Monday.
            Granularity::Week => (d.num_days_from_ce() as i64 - 1).div_euclid(7),
            Granularity::Month => y * 12 + m0,
            Granularity::Quarter => y * 4 + m0 / 3,
            Granularity::Year => y,
        }
    };
    let start = |i: i64| -> NaiveDate {
        let ymd = |y: i64, m: i64| NaiveDate::from_ymd_opt(y as i32, m as u32, 1).unwrap();
        match cal.granularity {
            Granularity::Day => NaiveDate::from_num_days_from_ce_opt(i as i32).unwrap(),
            Granularity::Week => NaiveDate::from_num_days_from_ce_opt((i * 7 + 1) as i32).unwrap(),
            Granularity::Month => ymd(i.div_euclid(12), i.rem_euclid(12) + 1),
            Granularity::Quarter => ymd(i.div_euclid(4), i.rem_euclid(4) * 3 + 1),
            Granularity::Year => ymd(i, 1),
        }
    };
    let current = index(date_of_instant(now));
    let oldest = facts
        .partitions
        .iter()
        .filter_map(|p| match p.range {
            Range::Bounded { lower: Some(l), .. } => Some(index(date_of_bound(l))),
            _ => None,
        })
        .min();
    let mut first = match facts.policy.start_at {
        Some(s) => index(date_of_instant(s)),
        None => oldest.unwrap_or(current),
    }
    .min(current);
    // The cut-off itself is the calendar's interval arithmetic, tested there.
    let cutoff = facts.policy.cutoff(now);
    if let Some(c) = cutoff {
        first = first.max(index(date_of_bound(c)));
    }
    let last = (current + facts.policy.premake as i64).min(first + plan::MAX_PERIODS as i64 - 1);
    let first_start = cal.bound_of(start(first));
    let hi = cal.bound_of(start(last + 1));
    (first_start, cutoff.map_or(first_start, |c| first_start.max(c)), hi)
}

/// The first point of `[lo, hi)` that no range covers, if any.
fn first_gap(lo: Bound, hi: Bound, mut ranges: Vec<(Bound, Bound)>) -> Option<Bound> {
    ranges.sort();
    let mut at = lo;
    for (l, u) in ranges {
        if at >= hi {
            break;
        }
        if l > at {
            return Some(at);
        }
        at = at.max(u);
    }
    (at < hi).then_some(at)
}

fn planned(case: &Case, facts: &ParentFacts) -> Vec<plan::Planned> {
    plan::plan(facts, case.now, &case.taken)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_plan_fills_the_window_without_overlap_and_with_unique_names(case in case()) {
        let facts = &case.facts;
        let plan = planned(&case, facts);
        let existing: Vec<(Bound, Bound)> = facts.partitions.iter().filter_map(bounded).collect();
        let new: Vec<(Bound, Bound)> = plan.iter().map(|p| bounded(&p.partition).unwrap()).collect();
        let (first, lo, hi) = window(facts, case.now);

        for &(l, u) in &new {
            prop_assert!(l < u, "empty range {l}..{u}");
            prop_assert!(l >= first && u <= hi, "{l}..{u} outside the wanted window {first}..{hi}");
            if let Some(cutoff) = facts.policy.cutoff(case.now) {
                prop_assert!(u > cutoff, "{l}..{u} would be archived at once (cut-off {cutoff})");
            }
        }
        let mut all: Vec<(Bound, Bound)> = existing.iter().chain(&new).copied().collect();
        all.sort();
        for pair in all.windows(2) {
            prop_assert!(pair[0].1 <= pair[1].0, "overlap: {:?} and {:?}", pair[0], pair[1]);
        }
        prop_assert_eq!(first_gap(lo, hi, all), None, "gap in the window {}..{}", lo, hi);

        let mut names = case.taken.clone();
        for p in &plan {
            let name = &p.partition.name.name;
            prop_assert!(name.len() <= MAX_NAME_BYTES, "{name} is {} bytes", name.len());
            prop_assert!(names.insert(name.clone()), "{name} is taken");
            prop_assert_eq!(&p.action.target, &p.partition.name);
        }

        let after = plan::apply(facts.clone(), plan.iter().map(|p| Effect::Adds(p.partition.clone())));
        let again = plan::plan(&after, case.now, &names);
        prop_assert!(again.is_empty(), "a second plan at the same moment: {:?}",
            again.iter().map(|p| p.action.detail.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn the_archive_keeps_the_newest_and_the_default_and_is_not_undone(case in case()) {
        let plan = planned(&case, &case.facts);
        // As a run does: partitions first, then the archive on the result.
        let facts = plan::apply(case.facts.clone(), plan.iter().map(|p| Effect::Adds(p.partition.clone())));
        let due = archive_plan::due(&facts, case.now);
        let newest = facts.partitions.iter().filter_map(|p| bounded(p).map(|r| (r.0, &p.name))).max();
        for part in &due {
            prop_assert!(part.range != Range::Default, "the DEFAULT partition is due");
            prop_assert!(Some(&part.name) != newest.map(|n| n.1), "the newest partition {} is due", part.name);
            let cutoff = facts.policy.cutoff(case.now).expect("nothing is due without retention");
            prop_assert!(bounded(part).unwrap().1 <= cutoff, "{} reaches past the cut-off", part.name);
        }
        let names: BTreeSet<_> = due.iter().map(|p| &p.name).collect();
        prop_assert_eq!(names.len(), due.len(), "a partition is due twice");

        let moves = archive_plan::plan(&facts, case.now, &BTreeSet::new(), true);
        prop_assert_eq!(moves.len(), due.len());
        let gone: Vec<QualifiedName> = due.iter().map(|p| p.name.clone()).collect();
        let archived: Vec<(Bound, Bound)> = due.iter().filter_map(|p| bounded(p)).collect();
        let after = plan::apply(facts.clone(), gone.into_iter().map(Effect::Removes));
        let mut taken = case.taken.clone();
        taken.extend(plan.iter().map(|p| p.partition.name.name.clone()));
        for p in plan::plan(&after, case.now, &taken) {
            let (l, u) = bounded(&p.partition).unwrap();
            prop_assert!(archived.iter().all(|&(al, au)| u <= al || l >= au),
                "{} re-creates an archived range", p.partition.name);
        }
        prop_assert!(archive_plan::due(&after, case.now).is_empty(), "archiving is not finished in one run");
    }
}
