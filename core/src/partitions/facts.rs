//! What the planner knows about a managed parent: the policy validated
//! into typed values, its partitions, its rules. The extension's
//! `partitions::facts` reads them from the catalogs.

use super::retention::ArchiveMode;
use crate::access::{AccessRules, Drift};
use crate::archive_target::{self as target, Access};
use crate::calendar::{parse_time_zone, Bound, Calendar, ColumnKind, Granularity, Span};
use crate::problem::Problem;
use crate::sql::QualifiedName;
use crate::unfinished::Unfinished;

/// A registered partition policy, validated into typed values.
#[derive(Debug, Clone)]
pub struct Policy {
    pub job_id: i64,
    pub parent: QualifiedName,
    pub control: String,
    pub calendar: Calendar,
    pub premake: u32,
    /// `start_at` as UTC microseconds since 1970.
    pub start_at: Option<i64>,
    /// How long partitions stay live; None keeps them for ever.
    pub retention: Option<Span>,
    pub archive: ArchiveMode,
}

impl Policy {
    /// The retention cut-off at `now`, as a bound: partitions whose whole
    /// range lies before it are archived.
    pub fn cutoff(&self, now_utc: i64) -> Option<Bound> {
        let span = self.retention?;
        Some(self.calendar.bound_at(self.calendar.shift(now_utc, span, true)))
    }
}

/// A partition's bounds. `None` stands for MINVALUE (lower) or MAXVALUE (upper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Default,
    Bounded { lower: Option<Bound>, upper: Option<Bound> },
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub name: QualifiedName,
    pub range: Range,
}

/// Everything the planner needs to know about one managed parent.
#[derive(Debug, Clone)]
pub struct ParentFacts {
    pub policy: Policy,
    /// The catalog fingerprint read together with these facts.
    pub fingerprint: String,
    pub partitions: Vec<Partition>,
    pub default_partition: Option<QualifiedName>,
    /// The partition an interrupted DETACH CONCURRENTLY left pending (a
    /// parent can have at most one); still one of `partitions`.
    pub detach_pending: Option<QualifiedName>,
    /// Moves of this policy's partitions that a worker began and did not
    /// finish (`upkeep.unfinished_actions`).
    pub unfinished: Vec<Unfinished>,
    pub owner: String,
    pub tablespace: Option<String>,
    /// The parent is UNLOGGED (PostgreSQL 15-17 allow it).
    pub unlogged: bool,
    /// Insertable columns (not dropped, not generated), in order.
    pub columns: Vec<String>,
    /// Who may read and change the parent's rows: what every relation
    /// made for it gets.
    pub access: AccessRules,
    /// Relations made for the parent (its partitions with the
    /// pg_upkeep_bounds CHECK, `<parent>_archive` and the partitions in it)
    /// whose rules are no longer the parent's.
    pub drift: Vec<Drift>,
    /// Why the archive mode's target may not take partitions now (a
    /// schema dropped, a privilege revoked): moves fail with it, while
    /// partitions are still created.
    pub archive_refused: Option<Problem>,
}

/// A policy whose table no longer fits it (dropped, re-created unpartitioned,
/// column renamed ...). Reported and recorded, never planned.
#[derive(Debug, Clone)]
pub struct PolicyProblem {
    pub job_id: i64,
    pub target: String,
    pub message: String,
    pub hint: String,
}

/// What one raw policy row says about its parent, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawParent {
    pub job_id: i64,
    pub oid: i64,
    pub fingerprint: String,
    pub target: String,
    pub exists: bool,
    pub schema: String,
    pub name: String,
    pub control: String,
    pub granularity: String,
    pub premake: i32,
    pub time_zone: String,
    pub start_at: Option<i64>,
    pub retention: Option<Span>,
    pub archive: String,
    pub relkind: String,
    /// Citus distributes (or replicates) the table.
    pub distributed: bool,
    pub strategy: Option<String>,
    pub key_columns: i32,
    pub keyed_on_control: bool,
    pub control_type: Option<String>,
    pub owner: String,
    pub tablespace: Option<String>,
    pub unlogged: bool,
    pub columns: Vec<String>,
    /// For `schema:`/`tablespace:` archive modes: whether the target
    /// exists (else None) and the owner may create tables in it.
    pub archive_target: Option<bool>,
}

impl RawParent {
    /// Checks that the table still fits the policy. The same rules serve
    /// registration (as an ERROR with a HINT) and maintenance (as a
    /// recorded problem), so they live in one place.
    pub fn validate(self) -> Result<ParentFacts, PolicyProblem> {
        let problem = |message: String, hint: &str| PolicyProblem {
            job_id: self.job_id,
            target: self.target.clone(),
            message,
            hint: hint.to_string(),
        };
        let t = &self.target;
        if !self.exists {
            return Err(problem(
                format!("table {t} of partition policy {} no longer exists", self.job_id),
                "Remove the policy with upkeep.unmanage_partitions(), or re-create the table.",
            ));
        }
        if self.distributed {
            let refused = crate::citus::refusal(t);
            return Err(problem(refused.message, &refused.hint));
        }
        if self.relkind != "p" {
            return Err(problem(
                format!("table {t} is not partitioned"),
                "Create it with PARTITION BY RANGE (<time column>), then register it.",
            ));
        }
        if self.strategy.as_deref() != Some("r") {
            let s = match self.strategy.as_deref() {
                Some("l") => "LIST",
                Some("h") => "HASH",
                _ => "an unknown strategy",
            };
            return Err(problem(
                format!("table {t} is partitioned by {s}, not by RANGE"),
                "pg_upkeep manages time ranges: the table must be PARTITION BY RANGE on one date, timestamp or timestamptz column.",
            ));
        }
        let c = &self.control;
        let Some(column_type) = &self.control_type else {
            return Err(problem(
                format!("column \"{c}\" does not exist in table {t}"),
                "Name the column the table is partitioned by, e.g. upkeep.manage_partitions('public.nav_history', 'nav_date').",
            ));
        };
        if self.key_columns != 1 || !self.keyed_on_control {
            return Err(problem(
                format!("table {t} is not partitioned by exactly the column \"{c}\""),
                "The partition key must be that one column, with no expression: PARTITION BY RANGE (<column>).",
            ));
        }
        let Some(kind) = ColumnKind::from_sql_type(column_type) else {
            return Err(problem(
                format!("column \"{c}\" of table {t} has type {column_type}"),
                "The control column must be of type date, timestamp or timestamptz.",
            ));
        };
        let Ok(granularity) = self.granularity.parse::<Granularity>() else {
            return Err(problem(
                format!("unknown granularity \"{}\" for table {t}", self.granularity),
                "Use 'month' or 'year' (also 'day', 'week' or 'quarter').",
            ));
        };
        let Some(tz) = parse_time_zone(&self.time_zone) else {
            return Err(problem(
                format!("unknown time zone \"{}\" for table {t}", self.time_zone),
                "Use an IANA zone name such as 'UTC' or 'Europe/Paris' (see pg_timezone_names).",
            ));
        };
        let Ok(archive) = self.archive.parse::<ArchiveMode>() else {
            return Err(problem(
                format!("unknown archive mode \"{}\" for table {t}", self.archive),
                "Use 'archive_table', 'detach', 'drop', 'schema:<name>' or 'tablespace:<name>'.",
            ));
        };
        let access = Access::from_catalog(self.archive_target);
        let archive_refused = match &archive {
            ArchiveMode::Schema(schema) => target::check_schema(schema, &self.owner, t, access).err(),
            ArchiveMode::Tablespace(ts) => target::check_tablespace(ts, &self.owner, t, access).err(),
            _ => None,
        };
        Ok(ParentFacts {
            policy: Policy {
                job_id: self.job_id,
                parent: QualifiedName::new(self.schema, self.name),
                control: self.control,
                calendar: Calendar::new(granularity, kind, tz),
                // Never negative: the policy table's CHECK refuses it.
                premake: self.premake as u32,
                start_at: self.start_at,
                retention: self.retention,
                archive,
            },
            fingerprint: self.fingerprint,
            partitions: vec![],
            default_partition: None,
            detach_pending: None,
            unfinished: vec![],
            owner: self.owner,
            tablespace: self.tablespace,
            unlogged: self.unlogged,
            columns: self.columns,
            access: AccessRules::default(),
            drift: Vec::new(),
            archive_refused,
        })
    }
}

/// Facts for planning tests, without a database.
#[cfg(any(test, feature = "samples"))]
pub mod sample {
    use super::*;
    use chrono::NaiveDate;

    /// A managed `public.nav_history (fund_id, nav_date, nav)` owned by
    /// `app` (not the caller), with no partitions yet.
    pub fn parent(calendar: Calendar, premake: u32) -> ParentFacts {
        ParentFacts {
            policy: Policy {
                job_id: 7,
                parent: QualifiedName::new("public", "nav_history"),
                control: "nav_date".into(),
                calendar,
                premake,
                start_at: None,
                retention: None,
                archive: ArchiveMode::ArchiveTable,
            },
            fingerprint: String::new(),
            partitions: vec![],
            default_partition: None,
            detach_pending: None,
            unfinished: vec![],
            owner: "app".into(),
            tablespace: None,
            unlogged: false,
            columns: vec!["fund_id".into(), "nav_date".into(), "nav".into()],
            access: AccessRules::default(),
            drift: vec![],
            archive_refused: None,
        }
    }

    /// Adds a partition `name` for [lo, hi), civil dates in the calendar.
    pub fn with_partition(mut f: ParentFacts, name: &str, lo: NaiveDate, hi: NaiveDate) -> ParentFacts {
        let c = f.policy.calendar;
        f.partitions.push(Partition {
            name: QualifiedName::new("public", name),
            range: Range::Bounded { lower: Some(c.bound_of(lo)), upper: Some(c.bound_of(hi)) },
        });
        f
    }

    /// Adds one partition per period starting at each of `starts`, named
    /// as pg_upkeep names them.
    pub fn with_periods(f: ParentFacts, starts: &[NaiveDate]) -> ParentFacts {
        starts.iter().fold(f, |f, &d| {
            let c = f.policy.calendar;
            let name = format!("nav_history_p{}", c.label(d));
            with_partition(f, &name, d, c.next_start(d))
        })
    }
}
