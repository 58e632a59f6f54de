//! Partition planning: policies plus facts plus "now" in, actions out.
//! Pure Rust: no SPI here, so every rule is unit-tested without a database.

use super::facts::{ParentFacts, Partition, Range};
use crate::actions::{Action, ActionKind, Step};
use crate::calendar::{Bound, Calendar};
use crate::sql::{create_table, ident, shortened_name, QualifiedName};
use chrono::NaiveDate;
use std::collections::BTreeSet;

/// Upper limit of periods one policy may span, so that a typo such as a
/// daily policy starting in year 1 cannot plan a million tables.
pub const MAX_PERIODS: usize = 5_000;

/// Name of the CHECK constraint that proves a partition's bounds. It lets
/// ATTACH skip its validation scan, now and whenever the partition is
/// attached elsewhere later (an archive table), so it stays.
pub const BOUNDS_CHECK: &str = "pg_upkeep_bounds";

/// The periods a policy wants covered at `now`: from `start_at` (or the
/// oldest existing partition, or the current period) through the current
/// period plus `premake` more. Returns period starts, oldest first.
pub fn wanted_periods(facts: &ParentFacts, now_utc: i64) -> Vec<NaiveDate> {
    let p = &facts.policy;
    let cal = &p.calendar;
    let current = cal.period_start(cal.civil_date_of_instant(now_utc));
    let oldest_existing = facts
        .partitions
        .iter()
        .filter_map(|part| match part.range {
            Range::Bounded { lower: Some(l), .. } => Some(cal.period_of(l)),
            _ => None,
        })
        .min();
    let mut first = match p.start_at {
        Some(s) => cal.period_start(cal.civil_date_of_instant(s)),
        None => oldest_existing.unwrap_or(current),
    }
    .min(current);
    // Never re-create what retention archives: start at the period that
    // holds the cut-off.
    if let Some(cutoff) = p.cutoff(now_utc) {
        first = first.max(cal.period_of(cutoff));
    }

    let mut periods = Vec::new();
    let mut d = first;
    let mut future = 0;
    while periods.len() < MAX_PERIODS {
        periods.push(d);
        if d >= current {
            if future == p.premake {
                break;
            }
            future += 1;
        }
        d = cal.next_start(d);
    }
    periods
}

/// Parts of `[lo, hi)` that no existing partition covers, in order.
pub fn free_pieces(lo: Bound, hi: Bound, ranges: &[(Bound, Bound)]) -> Vec<(Bound, Bound)> {
    let mut pieces = Vec::new();
    let mut at = lo;
    for &(l, u) in ranges {
        if u <= at || l >= hi {
            continue;
        }
        if l > at {
            pieces.push((at, l.min(hi)));
        }
        at = at.max(u);
        if at >= hi {
            break;
        }
    }
    if at < hi {
        pieces.push((at, hi));
    }
    pieces
}

/// Existing bounded ranges, sorted, with MINVALUE/MAXVALUE as the extremes.
pub fn existing_ranges(facts: &ParentFacts) -> Vec<(Bound, Bound)> {
    let mut r: Vec<(Bound, Bound)> = facts
        .partitions
        .iter()
        .filter_map(|p| match p.range {
            Range::Bounded { lower, upper } => Some((lower.unwrap_or(Bound::MIN), upper.unwrap_or(Bound::MAX))),
            Range::Default => None,
        })
        .collect();
    r.sort();
    r
}

/// The missing ranges a policy should create at `now`: each with the period
/// it belongs to. Existing partitions are recognised by bounds, never names.
/// A piece wholly before the retention cut-off is not missing: retention
/// would archive it at once, and the next run would make it again.
pub fn missing_ranges(facts: &ParentFacts, now_utc: i64) -> Vec<(NaiveDate, Bound, Bound)> {
    let cal = &facts.policy.calendar;
    let existing = existing_ranges(facts);
    let cutoff = facts.policy.cutoff(now_utc).unwrap_or(Bound::MIN);
    wanted_periods(facts, now_utc)
        .into_iter()
        .flat_map(|d| {
            let (lo, hi) = (cal.bound_of(d), cal.bound_of(cal.next_start(d)));
            free_pieces(lo, hi, &existing).into_iter().map(move |(l, u)| (d, l, u))
        })
        .filter(|&(_, _, upper)| upper > cutoff)
        .collect()
}

/// The UTC instant at which the policy will next need a partition it does
/// not have, given the partitions it has now: `now` if something is due
/// already, `None` if it never will be (a MAXVALUE partition covers the
/// future). Lets a run with nothing due skip reading partition bounds.
pub fn next_due(facts: &ParentFacts, now_utc: i64) -> Option<i64> {
    if !missing_ranges(facts, now_utc).is_empty() {
        return Some(now_utc);
    }
    let p = &facts.policy;
    let cal = &p.calendar;
    let current = cal.period_start(cal.civil_date_of_instant(now_utc));
    // Upper end of the unbroken coverage that starts at the current period.
    let mut covered = cal.bound_of(current);
    for (l, u) in existing_ranges(facts) {
        if l <= covered && u > covered {
            covered = u;
        }
    }
    if covered == Bound::MAX {
        return None;
    }
    // Walk period d and the last period it needs (d + premake) together:
    // due when the period after that last one starts beyond the coverage.
    let mut d = current;
    let mut last = (0..p.premake).fold(current, |e, _| cal.next_start(e));
    for _ in 0..MAX_PERIODS {
        if cal.bound_of(cal.next_start(last)) > covered {
            return Some(cal.instant_of(d));
        }
        d = cal.next_start(d);
        last = cal.next_start(last);
    }
    None
}

/// The name for a new partition: `<parent>_p<label>`, or with `_2`, `_3`, ...
/// when that name is taken in the schema (by any relation, or by an earlier
/// partition of the same plan).
pub fn partition_name(parent: &str, label: &str, taken: &BTreeSet<String>) -> String {
    (1..)
        .map(|n| match n {
            1 => shortened_name(parent, &format!("p{label}")),
            n => shortened_name(parent, &format!("p{label}_{n}")),
        })
        .find(|name| !taken.contains(name))
        .expect("an unused name exists")
}

/// The statements that create one partition without blocking readers and
/// writers of the parent: build a stand-alone table shaped like the parent,
/// prove its bounds with a CHECK constraint, move any matching rows out of
/// the DEFAULT partition, attach (SHARE UPDATE EXCLUSIVE on the parent,
/// not ACCESS EXCLUSIVE), then give it the parent's privileges. The action
/// runs as the parent's owner, who therefore owns what it creates.
pub fn create_partition_steps(facts: &ParentFacts, partition: &QualifiedName, lower: Bound, upper: Bound) -> Vec<Step> {
    let p = &facts.policy;
    let cal: &Calendar = &p.calendar;
    let parent = p.parent.quoted();
    let part = partition.quoted();
    let col = ident(&p.control);
    let (lo, hi) = (cal.literal(lower), cal.literal(upper));
    let in_range = format!("{col} >= {lo} AND {col} < {hi}");

    // ATTACH locks the parent (SHARE UPDATE EXCLUSIVE) and then the DEFAULT
    // partition (ACCESS EXCLUSIVE). With a DEFAULT we move rows out of it
    // first, so take both locks up front, in ATTACH's order, instead of
    // upgrading a lock halfway through.
    let mut steps = Vec::new();
    if let Some(def) = &facts.default_partition {
        steps.push(Step::new(format!("LOCK TABLE ONLY {parent} IN SHARE UPDATE EXCLUSIVE MODE")));
        steps.push(Step::new(format!("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE", def.quoted())));
    }
    let tablespace = match &facts.tablespace {
        Some(ts) => format!(" TABLESPACE {}", ident(ts)),
        None => String::new(),
    };
    steps.push(Step::new(format!(
        "{} {part} (LIKE {parent} INCLUDING ALL EXCLUDING INDEXES EXCLUDING IDENTITY, \
         CONSTRAINT {} CHECK ({col} IS NOT NULL AND {in_range})){tablespace}",
        create_table(facts.unlogged),
        ident(BOUNDS_CHECK)
    )));
    if let Some(def) = &facts.default_partition {
        let cols = facts.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        steps.push(Step::counting(
            format!(
                "WITH moved AS (DELETE FROM ONLY {} WHERE {in_range} RETURNING {cols}) \
                 INSERT INTO {part} ({cols}) SELECT {cols} FROM moved",
                def.quoted()
            ),
            "rows moved from the default partition",
        ));
    }
    steps.push(Step::new(format!("ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ({lo}) TO ({hi})")));
    steps.extend(facts.access.apply_steps(partition));
    steps
}

/// Brings the relations made for a parent whose rules drifted from the
/// parent's (a GRANT, REVOKE or policy changed on either) back in line, in
/// one action: one transaction, so no moment shows more than either set
/// of rules allows. CREATE/DROP POLICY and row security changes take
/// ACCESS EXCLUSIVE on the relation for a moment, under lock_timeout.
pub fn sync_access(facts: &ParentFacts) -> Option<Action> {
    if facts.drift.is_empty() {
        return None;
    }
    let names: Vec<String> = facts.drift.iter().map(|d| d.relation.to_string()).collect();
    Some(Action {
        job_id: facts.policy.job_id,
        kind: ActionKind::SyncAccess,
        target: facts.policy.parent.clone(),
        detail: format!("privileges and row security of {} set to the parent's", names.join(", ")),
        run_as: facts.owner.clone(),
        steps: facts.drift.iter().flat_map(|d| d.current.replace_steps(&facts.access, &d.relation)).collect(),
    })
}

/// A partition the plan creates, with the action that creates it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub action: Action,
    pub partition: Partition,
}

/// Everything due for one managed parent at `now`, given the relation names
/// already taken in its schema.
pub fn plan(facts: &ParentFacts, now_utc: i64, taken: &BTreeSet<String>) -> Vec<Planned> {
    let p = &facts.policy;
    let cal = &p.calendar;
    let mut used = taken.clone();
    missing_ranges(facts, now_utc)
        .into_iter()
        .map(|(period, lower, upper)| {
            let name = partition_name(&p.parent.name, &cal.label(period), &used);
            used.insert(name.clone());
            let partition = QualifiedName::new(p.parent.schema.clone(), name);
            Planned {
                action: Action {
                    job_id: p.job_id,
                    kind: ActionKind::CreatePartition,
                    detail: format!("FOR VALUES FROM ({}) TO ({})", cal.display(lower), cal.display(upper)),
                    run_as: facts.owner.clone(),
                    steps: create_partition_steps(facts, &partition, lower, upper),
                    target: partition.clone(),
                },
                partition: Partition {
                    name: partition,
                    range: Range::Bounded { lower: Some(lower), upper: Some(upper) },
                },
            }
        })
        .collect()
}

/// What a successful action changed in a parent's partitions.
#[derive(Debug, Clone)]
pub enum Effect {
    Adds(Partition),
    Removes(QualifiedName),
    /// The same partitions (their privileges changed).
    Keeps,
}

/// The facts as they are after the given effects, so that what a run did
/// need not be read back from the catalog.
pub fn apply(mut facts: ParentFacts, effects: impl IntoIterator<Item = Effect>) -> ParentFacts {
    for effect in effects {
        match effect {
            Effect::Adds(p) => facts.partitions.push(p),
            Effect::Removes(name) => facts.partitions.retain(|p| p.name != name),
            Effect::Keeps => {}
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access;
    use crate::calendar::{parse_time_zone, ColumnKind, Granularity};
    use crate::partitions::facts::sample;
    use crate::sql::MAX_NAME_BYTES;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn cal(g: Granularity, k: ColumnKind) -> Calendar {
        Calendar::new(g, k, parse_time_zone("UTC").unwrap())
    }

    fn facts(c: Calendar, premake: u32) -> ParentFacts {
        sample::parent(c, premake)
    }

    fn with_part(f: ParentFacts, name: &str, lo: NaiveDate, hi: NaiveDate) -> ParentFacts {
        sample::with_partition(f, name, lo, hi)
    }

    fn now(d: NaiveDate) -> i64 {
        cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(d) + 3_600_000_000 * 12
    }

    fn targets(planned: &[Planned]) -> Vec<String> {
        planned.iter().map(|p| p.action.target.to_string()).collect()
    }

    #[test]
    fn fresh_parent_gets_current_plus_premake() {
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 3);
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(
            targets(&a),
            [
                "public.nav_history_p2026_11",
                "public.nav_history_p2026_12",
                "public.nav_history_p2027_01",
                "public.nav_history_p2027_02"
            ]
        );
        assert_eq!(a[1].action.detail, "FOR VALUES FROM (2026-12-01) TO (2027-01-01)");
        assert!(a.iter().all(|x| x.action.job_id == 7 && x.action.kind == ActionKind::CreatePartition));
    }

    #[test]
    fn yearly_names_and_premake_zero() {
        let f = facts(cal(Granularity::Year, ColumnKind::Timestamptz), 0);
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(targets(&a), ["public.nav_history_p2026"]);
    }

    #[test]
    fn second_run_plans_nothing() {
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 2);
        let t = now(ymd(2026, 11, 23));
        let planned = plan(&f, t, &BTreeSet::new());
        assert_eq!(planned.len(), 3);
        let done = apply(f, planned.into_iter().map(|p| Effect::Adds(p.partition)));
        assert!(plan(&done, t, &BTreeSet::new()).is_empty());
        assert!(next_due(&done, t).is_some_and(|due| due > t));
    }

    #[test]
    fn gaps_are_filled_from_the_oldest_partition() {
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 1);
        let f = with_part(f, "jan", ymd(2026, 8, 1), ymd(2026, 9, 1));
        let f = with_part(f, "hand_made_oct", ymd(2026, 10, 1), ymd(2026, 11, 1));
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(
            targets(&a),
            ["public.nav_history_p2026_09", "public.nav_history_p2026_11", "public.nav_history_p2026_12"]
        );
    }

    #[test]
    fn start_at_reaches_back() {
        let mut f = facts(cal(Granularity::Year, ColumnKind::Date), 1);
        f.policy.start_at = Some(cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(ymd(2023, 6, 15)));
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(targets(&a).len(), 5); // 2023 .. 2027
        assert_eq!(a[0].action.target.to_string(), "public.nav_history_p2023");
    }

    #[test]
    fn hand_made_partitions_are_recognised_by_bounds_not_names() {
        // A weekly-ish hand-made partition covers the first half of December:
        // only the rest of December is created, never an overlap.
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 1);
        let f = with_part(f, "nav_history_p2026_11", ymd(2026, 11, 1), ymd(2026, 12, 1));
        let f = with_part(f, "whatever", ymd(2026, 12, 1), ymd(2026, 12, 15));
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].action.detail, "FOR VALUES FROM (2026-12-15) TO (2027-01-01)");
        // A bigger partition (a whole year) covers every month inside it.
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 3);
        let f = with_part(f, "y2026", ymd(2026, 1, 1), ymd(2027, 1, 1));
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(targets(&a), ["public.nav_history_p2027_01", "public.nav_history_p2027_02"]);
    }

    #[test]
    fn minvalue_and_maxvalue_partitions_cover_everything_on_their_side() {
        let mut f = facts(cal(Granularity::Month, ColumnKind::Date), 3);
        let c = f.policy.calendar;
        f.partitions.push(Partition {
            name: QualifiedName::new("public", "tail"),
            range: Range::Bounded { lower: Some(c.bound_of(ymd(2027, 1, 1))), upper: None },
        });
        f.partitions.push(Partition {
            name: QualifiedName::new("public", "head"),
            range: Range::Bounded { lower: None, upper: Some(c.bound_of(ymd(2026, 12, 1))) },
        });
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(targets(&a), ["public.nav_history_p2026_12"]);
    }

    #[test]
    fn next_due_is_when_premake_runs_short() {
        // Months Nov .. Feb exist, premake 2: due when March is needed,
        // i.e. when January begins (January + 2 = March).
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 2);
        let f = with_part(f, "a", ymd(2026, 11, 1), ymd(2026, 12, 1));
        let f = with_part(f, "b", ymd(2026, 12, 1), ymd(2027, 1, 1));
        let f = with_part(f, "c", ymd(2027, 1, 1), ymd(2027, 2, 1));
        let f = with_part(f, "d", ymd(2027, 2, 1), ymd(2027, 3, 1));
        let t = now(ymd(2026, 11, 23));
        let jan = cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(ymd(2027, 1, 1));
        assert_eq!(next_due(&f, t), Some(jan));
        // Something missing: due now.
        let g = facts(cal(Granularity::Month, ColumnKind::Date), 2);
        assert_eq!(next_due(&g, t), Some(t));
        // Just before the due instant nothing is missing; at it, something is.
        assert!(missing_ranges(&f, jan - 1).is_empty());
        assert!(!missing_ranges(&f, jan).is_empty());
    }

    #[test]
    fn next_due_follows_the_policy_zone_for_civil_columns() {
        let mut f =
            facts(Calendar::new(Granularity::Month, ColumnKind::Date, parse_time_zone("Asia/Tokyo").unwrap()), 0);
        let c = f.policy.calendar;
        f.partitions.push(Partition {
            name: QualifiedName::new("public", "nov"),
            range: Range::Bounded {
                lower: Some(c.bound_of(ymd(2026, 11, 1))),
                upper: Some(c.bound_of(ymd(2026, 12, 1))),
            },
        });
        // December begins in Tokyo at 15:00 UTC on 30 November.
        let due = next_due(&f, now(ymd(2026, 11, 23))).unwrap();
        assert_eq!(
            due,
            cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(ymd(2026, 11, 30)) + 15 * 3_600_000_000
        );
    }

    #[test]
    fn a_maxvalue_partition_is_never_due() {
        let mut f = facts(cal(Granularity::Month, ColumnKind::Date), 3);
        let c = f.policy.calendar;
        f.partitions.push(Partition {
            name: QualifiedName::new("public", "rest"),
            range: Range::Bounded { lower: Some(c.bound_of(ymd(2026, 11, 1))), upper: None },
        });
        assert_eq!(next_due(&f, now(ymd(2026, 11, 23))), None);
    }

    #[test]
    fn free_pieces_subtracts_ranges() {
        assert_eq!(free_pieces(0, 10, &[]), [(0, 10)]);
        assert_eq!(free_pieces(0, 10, &[(2, 4), (6, 7)]), [(0, 2), (4, 6), (7, 10)]);
        assert_eq!(free_pieces(0, 10, &[(-5, 3), (8, 20)]), [(3, 8)]);
        assert!(free_pieces(0, 10, &[(0, 10)]).is_empty());
        assert_eq!(free_pieces(0, 10, &[(10, 20)]), [(0, 10)]);
    }

    #[test]
    fn long_names_are_shortened_deterministically_and_stay_unique() {
        let a = "a".repeat(60);
        let b = format!("{}b", "a".repeat(59));
        let na = partition_name(&a, "2026_11", &BTreeSet::new());
        let nb = partition_name(&b, "2026_11", &BTreeSet::new());
        assert!(na.len() <= MAX_NAME_BYTES && nb.len() <= MAX_NAME_BYTES);
        assert_ne!(na, nb);
        assert!(na.ends_with("_p2026_11"));
        assert_eq!(na, partition_name(&a, "2026_11", &BTreeSet::new()));
        // Multi-byte characters are never cut in half.
        let u = "é".repeat(40);
        let nu = partition_name(&u, "2026_11", &BTreeSet::new());
        assert!(nu.len() <= MAX_NAME_BYTES);
        assert!(nu.starts_with("éé"));
    }

    #[test]
    fn taken_names_get_a_counter() {
        let taken: BTreeSet<String> = ["nav_history_p2026_11".to_string()].into();
        assert_eq!(partition_name("nav_history", "2026_11", &taken), "nav_history_p2026_11_2");
        // Two pieces of one period in one plan get distinct names.
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 0);
        let f = with_part(f, "mid", ymd(2026, 11, 10), ymd(2026, 11, 20));
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(targets(&a), ["public.nav_history_p2026_11", "public.nav_history_p2026_11_2"]);
    }

    #[test]
    fn archived_periods_are_not_made_again() {
        let mut f = facts(cal(Granularity::Month, ColumnKind::Date), 0);
        f.policy.start_at = Some(cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(ymd(2026, 1, 1)));
        f.policy.retention = Some(crate::calendar::Span { months: 3, days: 0, micros: 0 });
        // Cut-off 2026-08-23: August (straddling) through November.
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        assert_eq!(
            targets(&a),
            [
                "public.nav_history_p2026_08",
                "public.nav_history_p2026_09",
                "public.nav_history_p2026_10",
                "public.nav_history_p2026_11"
            ]
        );
    }

    #[test]
    fn runaway_spans_are_capped() {
        let mut f = facts(cal(Granularity::Day, ColumnKind::Date), 3);
        f.policy.start_at = Some(cal(Granularity::Day, ColumnKind::Timestamptz).bound_of(ymd(1900, 1, 1)));
        assert_eq!(wanted_periods(&f, now(ymd(2026, 11, 23))).len(), MAX_PERIODS);
    }

    #[test]
    fn steps_quote_everything_and_move_default_rows() {
        let mut f = facts(cal(Granularity::Month, ColumnKind::Timestamptz), 0);
        f.policy.parent = QualifiedName::new("My Schema", r#"a"; DROP TABLE b; --"#);
        f.policy.control = "Created At".into();
        f.default_partition = Some(QualifiedName::new("My Schema", "def"));
        f.owner = "o'wner".into();
        let grant = |grantee: Option<&str>, grantable| access::Grant {
            grantee: grantee.map(str::to_string),
            privilege: "SELECT".into(),
            grantable,
            column: None,
        };
        f.access.grants = vec![grant(None, false), grant(Some("Reader"), true)];
        f.access.row_security = true;
        f.access.policies = vec![access::RowPolicy {
            name: "tenant".into(),
            permissive: true,
            command: "*".into(),
            roles: vec![String::new()],
            using: Some("(tenant = CURRENT_USER)".into()),
            check: None,
        }];
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        let s = a[0].action.script();
        assert!(s.contains(r#"LOCK TABLE ONLY "My Schema"."a""; DROP TABLE b; --" IN SHARE UPDATE EXCLUSIVE MODE"#));
        assert!(s.contains(r#"LOCK TABLE ONLY "My Schema"."def" IN ACCESS EXCLUSIVE MODE"#));
        assert!(s.contains(r#"CREATE TABLE "My Schema"."a""; DROP TABLE b; --_p2026_11" (LIKE"#));
        assert!(s.contains(r#"CONSTRAINT "pg_upkeep_bounds" CHECK ("Created At" IS NOT NULL AND"#));
        assert!(s.contains(r#""Created At" >= '2026-11-01 00:00:00+00' AND "Created At" < '2026-12-01 00:00:00+00'"#));
        assert!(s.contains(r#"DELETE FROM ONLY "My Schema"."def""#));
        assert!(s.contains(r#"RETURNING "fund_id", "nav_date", "nav""#));
        assert!(s.starts_with(r#"-- as role "o'wner" (the table's owner)"#));
        assert!(s.contains(r#"GRANT SELECT ON TABLE "My Schema"."a""; DROP TABLE b; --_p2026_11" TO PUBLIC;"#));
        assert!(s.contains(r#"TO "Reader" WITH GRANT OPTION"#));
        assert!(s.contains(r#"ALTER TABLE "My Schema"."a""; DROP TABLE b; --_p2026_11" ENABLE ROW LEVEL SECURITY;"#));
        assert!(s.contains(r#"CREATE POLICY "tenant" ON "My Schema"."a""; DROP TABLE b; --_p2026_11" AS PERMISSIVE FOR ALL TO PUBLIC USING ((tenant = CURRENT_USER));"#));
        // LOCK before CREATE before the move before ATTACH.
        let pos = |needle: &str| s.find(needle).unwrap();
        assert!(pos("LOCK TABLE ONLY") < pos("CREATE TABLE"));
        assert!(pos("SHARE UPDATE EXCLUSIVE") < pos("ACCESS EXCLUSIVE"));
        assert!(pos("WITH moved") < pos("ATTACH PARTITION"));
        assert!(pos("ATTACH PARTITION") < pos("ENABLE ROW LEVEL SECURITY"));
        assert!(pos("CREATE POLICY") < pos("GRANT"), "rows are limited before anyone may read them");
        assert_eq!(a[0].action.steps.iter().filter(|s| s.counts.is_some()).count(), 1);
    }

    #[test]
    fn no_default_means_no_move() {
        let f = facts(cal(Granularity::Month, ColumnKind::Date), 0);
        let a = plan(&f, now(ymd(2026, 11, 23)), &BTreeSet::new());
        let s = a[0].action.script();
        assert!(!s.contains("DELETE"));
        assert!(!s.contains("LOCK TABLE"));
        assert!(!s.contains("OWNER TO"));
        assert!(s.contains("FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"));
    }
}
