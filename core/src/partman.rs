//! Taking over from pg_partman: what one `part_config` row means in
//! pg_upkeep's terms (the policy that does the same), or every reason it
//! cannot be carried over exactly, each with what the DBA can do about it.
//! Pure: the extension reads `part_config` and the catalogs into `Parent`.

use crate::calendar::{parse_time_zone, Bound, Calendar, ColumnKind, Granularity, Span};
use crate::partitions::plan::MAX_PERIODS;
use crate::sql::literal;

/// One `part_config` row, whichever pg_partman version wrote it. 4.x and
/// 5.x differ in columns and defaults; a column a version lacks is read as
/// that version's default.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub parent_table: String,
    pub control: String,
    /// 4.x: `native` or `partman` (trigger-based); 5.x: `range` or `list`.
    pub partition_type: String,
    pub partition_interval: String,
    /// `partition_interval` read as an interval (a time control only).
    pub interval: Option<Span>,
    pub premake: i32,
    pub retention: Option<String>,
    /// `retention` read as an interval, when it is a positive one (a time
    /// control only).
    pub retention_span: Option<Span>,
    pub retention_schema: Option<String>,
    pub retention_keep_table: bool,
    pub retention_keep_index: bool,
    pub infinite_time_partitions: bool,
    pub automatic_maintenance: String,
    pub epoch: String,
    pub constraint_cols: Vec<String>,
    pub jobmon: bool,
    /// 4.x only.
    pub publications: Vec<String>,
    /// 5.x only.
    pub date_trunc_interval: Option<String>,
    pub undo_in_progress: bool,
    pub ignore_default_data: bool,
    /// A subscription pg_partman refreshes after making partitions.
    pub subscription_refresh: Option<String>,
    /// 4.x: retention drops with CASCADE.
    pub drop_cascade_fk: bool,
}

/// What the catalogs say about one configured parent.
#[derive(Debug, Clone, Default)]
pub struct Parent {
    pub config: Config,
    /// The parent as `regclass` prints it; None when it no longer exists.
    pub name: Option<String>,
    /// The caller may manage it (owns it, or is a member of its owner).
    pub may_manage: bool,
    pub range_partitioned: bool,
    /// `format_type()` of the control column.
    pub control_type: Option<String>,
    /// A partition of another table, or with partitions partitioned further.
    pub sub_partitioned: bool,
    /// What the template table gives new partitions that the parent does
    /// not (indexes, storage parameters), in words.
    pub template_extras: Vec<String>,
    /// The pg_jobmon extension is installed (pg_partman logs to it).
    pub jobmon_installed: bool,
    /// Lower bounds of the bounded partitions.
    pub lower_bounds: Vec<Bound>,
    pub has_default: bool,
    /// The newest control value where pg_partman looks for it: the newest
    /// partition with rows, and the default partition unless
    /// `ignore_default_data`.
    pub newest: Option<Bound>,
    /// Zones to try for the bounds, most likely first (the database's
    /// TimeZone, then the session's).
    pub zones: Vec<String>,
    /// pg_upkeep's own policy on the parent, if it has one.
    pub existing: Option<Registration>,
}

/// A partition policy, as the `manage_partitions` call that registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub control: String,
    pub granularity: Granularity,
    pub premake: i32,
    pub retention: Option<Span>,
    /// `retention` as pg_partman wrote it, for people.
    pub retention_text: Option<String>,
    pub archive: String,
    pub time_zone: String,
}

impl Registration {
    /// The call, ready to run.
    pub fn call(&self, parent: &str) -> String {
        let mut call = format!(
            "SELECT upkeep.manage_partitions({}, {}, {}, premake => {}",
            literal(parent),
            literal(&self.control),
            literal(&self.granularity.to_string()),
            self.premake
        );
        if let Some(r) = &self.retention_text {
            call.push_str(&format!(", retention => {}, archive => {}", literal(r), literal(&self.archive)));
        }
        call.push_str(&format!(", time_zone => {})", literal(&self.time_zone)));
        call
    }

    /// The same policy (the retention compared as an interval).
    fn same_as(&self, other: &Registration) -> bool {
        let archive = |r: &Registration| if r.retention.is_some() { r.archive.clone() } else { String::new() };
        self.control == other.control
            && self.granularity == other.granularity
            && self.premake == other.premake
            && self.retention == other.retention
            && archive(self) == archive(other)
            && self.time_zone.eq_ignore_ascii_case(&other.time_zone)
    }
}

/// What adopting a parent comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Register this policy, turn pg_partman's maintenance of it off.
    Adopt { registration: Registration, notes: Vec<String> },
    /// pg_upkeep has this very policy already.
    Already { registration: Registration, notes: Vec<String> },
    /// Not adopted: every reason, each with what to do.
    Refuse { registration: Option<Registration>, reasons: Vec<String> },
}

/// The granularity of a pg_partman interval, if pg_upkeep has it.
fn granularity(span: Span) -> Option<Granularity> {
    match (span.months, span.days, span.micros) {
        (0, 1, 0) => Some(Granularity::Day),
        (0, 7, 0) => Some(Granularity::Week),
        (1, 0, 0) => Some(Granularity::Month),
        (3, 0, 0) => Some(Granularity::Quarter),
        (12, 0, 0) => Some(Granularity::Year),
        _ => None,
    }
}

/// The first of `zones` in whose calendar every bound starts a period.
fn zone_of_bounds(
    kind: ColumnKind,
    granularity: Granularity,
    zones: &[String],
    bounds: &[Bound],
) -> Option<(String, Calendar)> {
    zones.iter().find_map(|z| {
        let cal = Calendar::new(granularity, kind, parse_time_zone(z)?);
        bounds.iter().all(|&b| cal.bound_of(cal.period_of(b)) == b).then(|| (z.clone(), cal))
    })
}

/// Decides one parent at `now_utc` (microseconds since 1970, UTC).
pub fn decide(p: &Parent, now_utc: i64) -> Verdict {
    let c = &p.config;
    let mut reasons = Vec::new();
    let Some(parent) = &p.name else {
        return Verdict::Refuse {
            registration: None,
            reasons: vec![format!(
                "table {} no longer exists: delete its row from pg_partman's part_config",
                c.parent_table
            )],
        };
    };
    if !p.may_manage {
        reasons.push(format!(
            "must be owner of table {parent}: run this as its owner (or a member of the owning role), or as a superuser"
        ));
    }
    if c.undo_in_progress {
        reasons.push("pg_partman is undoing its partitioning (undo_in_progress): let undo_partition() finish".into());
    }
    match c.partition_type.as_str() {
        "native" | "range" => {}
        "partman" => reasons.push(
            "trigger-based partitioning (partition_type 'partman'): pg_upkeep manages declarative partitions only; \
             migrate the table to native partitioning first (pg_partman's migration guide)"
                .into(),
        ),
        other => reasons.push(format!(
            "partition_type '{other}': pg_upkeep makes range partitions on a time column only; keep pg_partman for this table"
        )),
    }
    if !p.range_partitioned {
        reasons.push(format!("table {parent} is not range partitioned: keep pg_partman for it"));
    }
    if c.epoch != "none" {
        reasons.push(format!(
            "epoch '{}': the time is stored as a number, and pg_upkeep partitions date and timestamp columns only; \
             keep pg_partman for this table",
            c.epoch
        ));
    }
    let kind = p.control_type.as_deref().and_then(ColumnKind::from_sql_type);
    if kind.is_none() {
        reasons.push(format!(
            "control column {} is {}: partitioned by id, and pg_upkeep makes time partitions only; keep pg_partman for this table",
            c.control,
            p.control_type.as_deref().unwrap_or("missing")
        ));
    }
    let granularity = c.interval.and_then(granularity);
    if kind.is_some() && granularity.is_none() {
        reasons.push(format!(
            "interval '{}': pg_upkeep's periods are a day, a week, a month, a quarter or a year; keep pg_partman for this table",
            c.partition_interval
        ));
    }
    if let Some(d) = &c.date_trunc_interval {
        reasons.push(format!(
            "date_trunc_interval '{d}' aligns the periods its own way; pg_upkeep aligns them on calendar days, ISO weeks, \
             months, quarters and years. Set it to NULL in part_config if the partitions are aligned so, then run again"
        ));
    }
    if p.sub_partitioned {
        reasons.push(
            "sub-partitioned (a partition set within a partition set): pg_upkeep manages one level; keep pg_partman for it"
                .into(),
        );
    }
    for extra in &p.template_extras {
        reasons.push(format!(
            "its template table gives new partitions {extra}, and pg_upkeep makes partitions like the parent: \
             put it on the parent, or drop it from the template table to accept, then run again"
        ));
    }
    let detaches = c.retention.is_some() && c.retention_schema.is_none() && c.retention_keep_table;
    if detaches && !c.retention_keep_index {
        reasons.push(
            "retention_keep_index off: pg_partman drops the indexes of the partitions it detaches, pg_upkeep keeps them. \
             Set retention_keep_index = true in part_config to accept, then run again"
                .into(),
        );
    }
    if !c.constraint_cols.is_empty() {
        reasons.push(format!(
            "constraint_cols {}: pg_partman adds constraints on these columns to older partitions, pg_upkeep does not. \
             Set constraint_cols = NULL in part_config to accept, then run again",
            c.constraint_cols.join(", ")
        ));
    }
    if !c.publications.is_empty() {
        reasons.push(format!(
            "publications {}: pg_partman adds each new partition to them, pg_upkeep does not. Publish the parent \
             (with publish_via_partition_root) and set publications = NULL in part_config to accept, then run again",
            c.publications.join(", ")
        ));
    }
    if let Some(sub) = &c.subscription_refresh {
        reasons.push(format!(
            "subscription_refresh {sub}: pg_partman refreshes that subscription after making partitions, pg_upkeep does not. \
             Set subscription_refresh = NULL in part_config to accept (and refresh it yourself), then run again"
        ));
    }
    if c.drop_cascade_fk && c.retention.is_some() && c.retention_schema.is_none() && !c.retention_keep_table {
        reasons.push(
            "drop_cascade_fk: pg_partman drops old partitions with CASCADE, pg_upkeep never does. \
             Set drop_cascade_fk = false in part_config to accept, then run again"
                .into(),
        );
    }
    if c.jobmon && p.jobmon_installed {
        reasons.push(
            "jobmon: pg_partman logs its runs to pg_jobmon, pg_upkeep logs to upkeep.job_runs. \
             Set jobmon = false in part_config to accept, then run again"
                .into(),
        );
    }
    if c.premake < 0 || c.premake as usize > MAX_PERIODS {
        reasons.push(format!("premake {} is more than pg_upkeep's {MAX_PERIODS}", c.premake));
    }
    if c.retention.is_some() && c.retention_span.is_none() {
        reasons.push(format!(
            "retention '{}' is not a positive interval pg_upkeep can keep by",
            c.retention.as_deref().unwrap_or_default()
        ));
    }
    let (Some(kind), Some(granularity)) = (kind, granularity) else {
        return Verdict::Refuse { registration: None, reasons };
    };
    let zones: Vec<String> = if kind == ColumnKind::Timestamptz {
        p.zones.clone()
    } else {
        // Bounds of date and timestamp columns are civil: any zone reads
        // them the same; the zone says when "today" begins.
        p.zones.first().cloned().into_iter().collect()
    };
    let Some((time_zone, calendar)) = zone_of_bounds(kind, granularity, &zones, &p.lower_bounds) else {
        reasons.push(format!(
            "its partitions do not start on {granularity} boundaries in {}: pg_upkeep would not line up with them. \
             Set the database's TimeZone to the zone pg_partman made them in, then run again",
            zones.join(" or ")
        ));
        return Verdict::Refuse { registration: None, reasons };
    };
    let registration = Registration {
        control: c.control.clone(),
        granularity,
        premake: c.premake,
        retention: c.retention_span.filter(|_| c.retention.is_some()),
        retention_text: c.retention.clone(),
        archive: match (&c.retention_schema, c.retention_keep_table) {
            (Some(s), _) => format!("schema:{s}"),
            (None, true) => "detach".into(),
            (None, false) => "drop".into(),
        },
        time_zone,
    };
    let mut notes = Vec::new();
    if !c.infinite_time_partitions {
        // pg_partman keeps premake partitions ahead of its newest row;
        // pg_upkeep ahead of today. The same only while rows arrive.
        let today = calendar.period_of(calendar.bound_at(now_utc));
        match p.newest.map(|b| calendar.period_of(b)) {
            Some(newest) if newest == today => notes.push(
                "pg_partman made partitions as rows arrived (infinite_time_partitions off), pg_upkeep keeps them \
                 ahead of today: the same while rows keep arriving"
                    .into(),
            ),
            newest => reasons.push(format!(
                "infinite_time_partitions off: pg_partman keeps {} partitions ahead of its newest row, which {}, \
                 and pg_upkeep keeps them ahead of today. Set infinite_time_partitions = true in part_config to accept, \
                 then run again",
                c.premake,
                match newest {
                    Some(d) => format!("is in the {granularity} of {d}"),
                    None => "it has none of".into(),
                }
            )),
        }
    }
    if let Some(existing) = &p.existing {
        if !existing.same_as(&registration) {
            reasons.push(format!(
                "pg_upkeep manages it already, otherwise ({}): unmanage it first, or keep that policy and set \
                 automatic_maintenance = 'off' in part_config",
                existing.call(parent)
            ));
        }
    }
    if !reasons.is_empty() {
        return Verdict::Refuse { registration: Some(registration), reasons };
    }
    notes.push(format!(
        "its {} partitions{} stay as they are",
        p.lower_bounds.len(),
        if p.has_default { " and its default partition" } else { "" }
    ));
    if c.automatic_maintenance == "on" {
        notes.push("pg_partman's automatic_maintenance is turned off for it".into());
    } else {
        notes.push(format!("pg_partman's automatic_maintenance was '{}' already", c.automatic_maintenance));
    }
    if c.partition_type == "range" {
        notes.push(
            "new partitions are named the pg_upkeep way (<parent>_p2026_11 for a month), not pg_partman 5's".into(),
        );
    }
    match &p.existing {
        Some(_) => Verdict::Already { registration, notes },
        None => Verdict::Adopt { registration, notes },
    }
}

/// What pg_partman had, in a line.
pub fn describe(p: &Parent) -> String {
    let c = &p.config;
    let mut out = format!(
        "{} partitions of {} on {}{}, premake {}",
        c.partition_type,
        c.partition_interval,
        c.control,
        p.control_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
        c.premake
    );
    if let Some(r) = &c.retention {
        let what = match (&c.retention_schema, c.retention_keep_table) {
            (Some(s), _) => format!("moved to schema {s}"),
            (None, true) if c.retention_keep_index => "detached".to_string(),
            (None, true) => "detached without indexes".to_string(),
            (None, false) => "dropped".to_string(),
        };
        out.push_str(&format!(", retention {r} ({what})"));
    }
    out.push_str(&format!(
        ", infinite_time_partitions {}, automatic_maintenance {}",
        if c.infinite_time_partitions { "on" } else { "off" },
        c.automatic_maintenance,
    ));
    // Bounds are read for time partitions only.
    if !p.lower_bounds.is_empty() || p.has_default {
        out.push_str(&format!(
            ", {} partitions{}",
            p.lower_bounds.len(),
            if p.has_default { " and a default" } else { "" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn month(kind: ColumnKind, zone: &str, starts: &[(i32, u32)]) -> Vec<Bound> {
        let cal = Calendar::new(Granularity::Month, kind, parse_time_zone(zone).unwrap());
        starts.iter().map(|&(y, m)| cal.bound_of(NaiveDate::from_ymd_opt(y, m, 1).unwrap())).collect()
    }

    const NOW: i64 = 1_795_000_000_000_000; // 2026-11-18 UTC

    /// A monthly timestamptz parent as pg_partman 4.7 makes it.
    fn parent() -> Parent {
        let bounds = month(ColumnKind::Timestamptz, "Europe/Berlin", &[(2026, 9), (2026, 10), (2026, 11), (2026, 12)]);
        Parent {
            config: Config {
                parent_table: "public.events".into(),
                control: "created".into(),
                partition_type: "native".into(),
                partition_interval: "1 mon".into(),
                interval: Some(Span { months: 1, days: 0, micros: 0 }),
                premake: 4,
                retention_keep_table: true,
                retention_keep_index: true,
                automatic_maintenance: "on".into(),
                epoch: "none".into(),
                jobmon: true,
                ..Config::default()
            },
            name: Some("events".into()),
            may_manage: true,
            range_partitioned: true,
            control_type: Some("timestamp with time zone".into()),
            newest: Some(NOW),
            has_default: true,
            zones: vec!["UTC".into(), "Europe/Berlin".into()],
            lower_bounds: bounds,
            ..Parent::default()
        }
    }

    fn adopted(v: &Verdict) -> &Registration {
        match v {
            Verdict::Adopt { registration, .. } => registration,
            other => panic!("not adopted: {other:?}"),
        }
    }

    fn reasons(v: &Verdict) -> String {
        match v {
            Verdict::Refuse { reasons, .. } => reasons.join("\n"),
            other => panic!("adopted: {other:?}"),
        }
    }

    #[test]
    fn a_monthly_parent_maps_to_the_same_policy_in_the_zone_its_bounds_were_made_in() {
        let v = decide(&parent(), NOW);
        let r = adopted(&v);
        assert_eq!((r.granularity, r.premake, r.time_zone.as_str()), (Granularity::Month, 4, "Europe/Berlin"));
        assert_eq!(
            r.call("events"),
            "SELECT upkeep.manage_partitions('events', 'created', 'month', premake => 4, time_zone => 'Europe/Berlin')"
        );
    }

    #[test]
    fn every_interval_pg_upkeep_has_maps_and_others_are_refused() {
        for (span, g) in [
            ((0, 1, 0), Some(Granularity::Day)),
            ((0, 7, 0), Some(Granularity::Week)),
            ((3, 0, 0), Some(Granularity::Quarter)),
            ((12, 0, 0), Some(Granularity::Year)),
            ((0, 0, 3_600_000_000), None),
            ((2, 0, 0), None),
            ((0, 14, 0), None),
        ] {
            assert_eq!(granularity(Span { months: span.0, days: span.1, micros: span.2 }), g, "{span:?}");
        }
        let mut p = parent();
        p.config.interval = Some(Span { months: 0, days: 0, micros: 3_600_000_000 });
        p.config.partition_interval = "01:00:00".into();
        assert!(reasons(&decide(&p, NOW)).contains("interval '01:00:00'"));
    }

    #[test]
    fn retention_maps_to_the_archive_mode_that_does_the_same() {
        let mut p = parent();
        p.config.retention = Some("3 months".into());
        p.config.retention_span = Some(Span { months: 3, days: 0, micros: 0 });
        assert_eq!(adopted(&decide(&p, NOW)).archive, "detach");
        p.config.retention_keep_table = false;
        assert_eq!(adopted(&decide(&p, NOW)).archive, "drop");
        p.config.drop_cascade_fk = true;
        assert!(reasons(&decide(&p, NOW)).contains("drop_cascade_fk"));
        p.config.drop_cascade_fk = false;
        p.config.retention_schema = Some("old".into());
        let v = decide(&p, NOW);
        assert_eq!(adopted(&v).archive, "schema:old");
        assert!(adopted(&v).call("events").contains("retention => '3 months', archive => 'schema:old'"));
        // Indexes dropped on detach: only when the table stays in place.
        p.config.retention_keep_index = false;
        assert_eq!(adopted(&decide(&p, NOW)).archive, "schema:old");
        p.config.retention_schema = None;
        p.config.retention_keep_table = true;
        assert!(reasons(&decide(&p, NOW)).contains("retention_keep_index off"));
    }

    #[test]
    fn what_cannot_be_carried_over_exactly_is_refused_with_every_reason() {
        let mut p = parent();
        p.config.constraint_cols = vec!["account".into()];
        p.config.subscription_refresh = Some("sub".into());
        p.config.publications = vec!["pub".into()];
        p.jobmon_installed = true;
        p.sub_partitioned = true;
        p.template_extras = vec!["index UNIQUE btree (id)".into()];
        let why = reasons(&decide(&p, NOW));
        for part in [
            "constraint_cols account",
            "publications pub",
            "jobmon",
            "sub-partitioned",
            "UNIQUE btree (id)",
            "subscription_refresh sub",
        ] {
            assert!(why.contains(part), "{part} missing from: {why}");
        }
        // jobmon counts only where pg_jobmon is installed (its default is on).
        let mut p = parent();
        p.config.jobmon = true;
        adopted(&decide(&p, NOW));
    }

    #[test]
    fn id_epoch_and_trigger_based_sets_are_refused() {
        let mut p = parent();
        p.control_type = Some("bigint".into());
        p.config.interval = None;
        assert!(reasons(&decide(&p, NOW)).contains("partitioned by id"));
        let mut p = parent();
        p.config.epoch = "seconds".into();
        assert!(reasons(&decide(&p, NOW)).contains("epoch 'seconds'"));
        let mut p = parent();
        p.config.partition_type = "partman".into();
        assert!(reasons(&decide(&p, NOW)).contains("trigger-based"));
    }

    #[test]
    fn bounds_made_in_no_zone_tried_are_refused() {
        let mut p = parent();
        p.zones = vec!["UTC".into(), "America/New_York".into()];
        assert!(reasons(&decide(&p, NOW)).contains("do not start on month boundaries in UTC or America/New_York"));
        // A date column's bounds are civil: the first zone is today's.
        let mut p = parent();
        p.control_type = Some("date".into());
        p.lower_bounds = month(ColumnKind::Date, "UTC", &[(2026, 10), (2026, 11)]);
        p.zones = vec!["Asia/Tokyo".into()];
        assert_eq!(adopted(&decide(&p, NOW)).time_zone, "Asia/Tokyo");
    }

    #[test]
    fn without_infinite_time_partitions_only_a_set_whose_newest_row_is_current_is_adopted() {
        let mut p = parent();
        assert!(matches!(decide(&p, NOW), Verdict::Adopt { .. }));
        p.newest = None;
        assert!(reasons(&decide(&p, NOW)).contains("it has none of"));
        p.newest = Some(NOW - 90 * 86_400_000_000);
        assert!(reasons(&decide(&p, NOW)).contains("is in the month of 2026-08-01"));
        p.config.infinite_time_partitions = true;
        adopted(&decide(&p, NOW));
    }

    #[test]
    fn an_existing_policy_is_already_adopted_when_it_is_the_same_and_refused_otherwise() {
        let mut p = parent();
        let r = adopted(&decide(&p, NOW)).clone();
        p.existing = Some(Registration { time_zone: "europe/berlin".into(), ..r.clone() });
        assert!(matches!(decide(&p, NOW), Verdict::Already { .. }));
        p.existing = Some(Registration { premake: 2, ..r });
        assert!(reasons(&decide(&p, NOW)).contains("premake => 2"));
    }

    #[test]
    fn a_table_gone_or_not_owned_is_refused() {
        let mut p = parent();
        p.name = None;
        assert!(reasons(&decide(&p, NOW)).contains("no longer exists"));
        let mut p = parent();
        p.may_manage = false;
        assert!(reasons(&decide(&p, NOW)).contains("must be owner"));
    }

    #[test]
    fn the_description_says_what_pg_partman_did() {
        let mut p = parent();
        p.config.retention = Some("3 months".into());
        p.config.retention_schema = Some("old".into());
        let d = describe(&p);
        assert!(d.starts_with("native partitions of 1 mon on created (timestamp with time zone), premake 4"), "{d}");
        assert!(
            d.contains("retention 3 months (moved to schema old)") && d.ends_with("4 partitions and a default"),
            "{d}"
        );
    }
}
