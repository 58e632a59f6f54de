//! The partition calendar: periods (day .. year), their bounds in the column's
//! domain, and their labels. Pure Rust, no SPI.
//!
//! A bound is an `i64` count of microseconds since 1970-01-01 00:00 in the
//! control column's own domain: civil (wall-clock) time for `date` and
//! `timestamp`, UTC for `timestamptz`. That makes bounds read from the catalog
//! and bounds planned here directly comparable.

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

pub type Bound = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl FromStr for Granularity {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Ok(Granularity::Day),
            "week" | "weekly" => Ok(Granularity::Week),
            "month" | "monthly" => Ok(Granularity::Month),
            "quarter" | "quarterly" => Ok(Granularity::Quarter),
            "year" | "yearly" => Ok(Granularity::Year),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
            Granularity::Quarter => "quarter",
            Granularity::Year => "year",
        })
    }
}

/// A PostgreSQL interval: months, days and microseconds, kept apart
/// because a month and a day have no fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

/// The SQL type of the control column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Date,
    Timestamp,
    Timestamptz,
}

impl ColumnKind {
    /// From `format_type()` output; `None` for any other type.
    pub fn from_sql_type(t: &str) -> Option<Self> {
        match t {
            "date" => Some(ColumnKind::Date),
            "timestamp without time zone" => Some(ColumnKind::Timestamp),
            "timestamp with time zone" => Some(ColumnKind::Timestamptz),
            _ => None,
        }
    }
}

/// Parses an IANA zone name the way PostgreSQL spells them (case-insensitive).
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    Tz::from_str(name).ok().or_else(|| Tz::from_str_insensitive(name).ok())
}

fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
}

fn to_micros(t: NaiveDateTime) -> Bound {
    (t - epoch()).num_microseconds().expect("timestamp within range")
}

fn from_micros(b: Bound) -> NaiveDateTime {
    epoch() + Duration::microseconds(b)
}

/// A policy's calendar: granularity, column type and time zone together.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    pub granularity: Granularity,
    pub kind: ColumnKind,
    pub tz: Tz,
}

impl Calendar {
    pub fn new(granularity: Granularity, kind: ColumnKind, tz: Tz) -> Self {
        Calendar { granularity, kind, tz }
    }

    /// The civil (wall-clock) time of a bound in this calendar's zone.
    fn civil(&self, b: Bound) -> NaiveDateTime {
        let t = from_micros(b);
        match self.kind {
            ColumnKind::Date | ColumnKind::Timestamp => t,
            ColumnKind::Timestamptz => self.tz.from_utc_datetime(&t).naive_local(),
        }
    }

    /// The civil date of a UTC instant (e.g. `now()`) in this calendar's zone.
    /// For `date`/`timestamp` columns "now" is the zone's wall clock too.
    pub fn civil_date_of_instant(&self, utc_micros: i64) -> NaiveDate {
        self.tz.from_utc_datetime(&from_micros(utc_micros)).date_naive()
    }

    /// First day of the period that contains `d`.
    pub fn period_start(&self, d: NaiveDate) -> NaiveDate {
        match self.granularity {
            Granularity::Day => d,
            Granularity::Week => d - Duration::days(d.weekday().num_days_from_monday() as i64),
            Granularity::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap(),
            Granularity::Quarter => NaiveDate::from_ymd_opt(d.year(), (d.month() - 1) / 3 * 3 + 1, 1).unwrap(),
            Granularity::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap(),
        }
    }

    /// First day of the period after the one starting at `start`.
    pub fn next_start(&self, start: NaiveDate) -> NaiveDate {
        let add_months = |n: u32| {
            let m0 = start.month0() + n;
            NaiveDate::from_ymd_opt(start.year() + (m0 / 12) as i32, m0 % 12 + 1, 1).unwrap()
        };
        match self.granularity {
            Granularity::Day => start + Duration::days(1),
            Granularity::Week => start + Duration::days(7),
            Granularity::Month => add_months(1),
            Granularity::Quarter => add_months(3),
            Granularity::Year => NaiveDate::from_ymd_opt(start.year() + 1, 1, 1).unwrap(),
        }
    }

    /// Start of the period containing a bound.
    pub fn period_of(&self, b: Bound) -> NaiveDate {
        self.period_start(self.civil(b).date())
    }

    /// The UTC instant at which the day `d` begins in the calendar's zone:
    /// local midnight; where midnight does not exist (a DST gap at midnight)
    /// the day begins at the transition; where midnight occurs twice, the first.
    pub fn instant_of(&self, d: NaiveDate) -> i64 {
        self.local_to_utc(d.and_hms_opt(0, 0, 0).unwrap())
    }

    /// The UTC instant of a wall-clock time in the calendar's zone. A time in
    /// a DST gap is read with the offset in force just before the gap (which
    /// lands on the transition); a time that occurs twice, as the first.
    fn local_to_utc(&self, t: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&t) {
            LocalResult::Single(x) => to_micros(x.naive_utc()),
            LocalResult::Ambiguous(a, b) => to_micros(a.naive_utc().min(b.naive_utc())),
            LocalResult::None => {
                let before = t - Duration::days(1);
                let offset = match self.tz.from_local_datetime(&before) {
                    LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => *x.offset(),
                    LocalResult::None => unreachable!("two DST gaps within a day"),
                };
                let fixed = chrono::Offset::fix(&offset);
                to_micros(t - Duration::seconds(fixed.local_minus_utc() as i64))
            }
        }
    }

    /// A UTC instant moved by `span` (forward, or back with `back`), the way
    /// PostgreSQL adds an interval to a timestamptz: months, then days, on
    /// the local calendar, then the exact microseconds.
    pub fn shift(&self, utc_micros: i64, span: Span, back: bool) -> i64 {
        let sign = if back { -1 } else { 1 };
        let local = self.tz.from_utc_datetime(&from_micros(utc_micros)).naive_local();
        let months = chrono::Months::new(span.months.unsigned_abs());
        let by_months = if (span.months >= 0) != back {
            local.checked_add_months(months)
        } else {
            local.checked_sub_months(months)
        }
        .expect("date within range");
        let by_days = by_months + Duration::days(sign * span.days as i64);
        self.local_to_utc(by_days) + sign * span.micros
    }

    /// A UTC instant as a bound in the column's domain (for `date` and
    /// `timestamp`, the wall-clock time in the calendar's zone).
    pub fn bound_at(&self, utc_micros: i64) -> Bound {
        match self.kind {
            ColumnKind::Timestamptz => utc_micros,
            ColumnKind::Date | ColumnKind::Timestamp => {
                to_micros(self.tz.from_utc_datetime(&from_micros(utc_micros)).naive_local())
            }
        }
    }

    /// A bound as the UTC instant it stands for.
    pub fn instant_at(&self, b: Bound) -> i64 {
        match self.kind {
            ColumnKind::Timestamptz => b,
            ColumnKind::Date | ColumnKind::Timestamp => self.local_to_utc(from_micros(b)),
        }
    }

    /// The bound at which the day `d` begins: its civil midnight for `date`
    /// and `timestamp`, `instant_of(d)` for `timestamptz`.
    pub fn bound_of(&self, d: NaiveDate) -> Bound {
        match self.kind {
            ColumnKind::Date | ColumnKind::Timestamp => to_micros(d.and_hms_opt(0, 0, 0).unwrap()),
            ColumnKind::Timestamptz => self.instant_of(d),
        }
    }

    /// The SQL literal of a bound for this column type, independent of the
    /// session's DateStyle and TimeZone (timestamptz bounds carry `+00`).
    pub fn literal(&self, b: Bound) -> String {
        let t = from_micros(b);
        let text = match self.kind {
            ColumnKind::Date => t.format("%Y-%m-%d").to_string(),
            ColumnKind::Timestamp => t.format("%Y-%m-%d %H:%M:%S%.f").to_string(),
            ColumnKind::Timestamptz => t.format("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        };
        format!("'{text}'")
    }

    /// Human-readable bound in the calendar's own terms (for reports).
    pub fn display(&self, b: Bound) -> String {
        let t = self.civil(b);
        match self.kind {
            ColumnKind::Date => t.format("%Y-%m-%d").to_string(),
            ColumnKind::Timestamp => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            ColumnKind::Timestamptz => {
                let local = self.tz.from_utc_datetime(&from_micros(b));
                local.format("%Y-%m-%d %H:%M:%S%:z").to_string()
            }
        }
    }

    /// The name suffix of the period starting at `start`: `2026_11`, `2026`,
    /// `2026_11_23`, `2026w47` (ISO week), `2026q4`.
    pub fn label(&self, start: NaiveDate) -> String {
        match self.granularity {
            Granularity::Day => start.format("%Y_%m_%d").to_string(),
            Granularity::Week => {
                let w = start.iso_week();
                format!("{:04}w{:02}", w.year(), w.week())
            }
            Granularity::Month => start.format("%Y_%m").to_string(),
            Granularity::Quarter => format!("{:04}q{}", start.year(), start.month0() / 3 + 1),
            Granularity::Year => format!("{:04}", start.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn utc(s: &str) -> Bound {
        to_micros(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap())
    }

    fn cal(g: Granularity, k: ColumnKind, tz: &str) -> Calendar {
        Calendar::new(g, k, parse_time_zone(tz).unwrap())
    }

    #[test]
    fn december_steps_into_january() {
        let c = cal(Granularity::Month, ColumnKind::Date, "UTC");
        assert_eq!(c.next_start(ymd(2026, 12, 1)), ymd(2027, 1, 1));
        assert_eq!(c.next_start(ymd(2026, 11, 1)), ymd(2026, 12, 1));
        let q = cal(Granularity::Quarter, ColumnKind::Date, "UTC");
        assert_eq!(q.next_start(ymd(2026, 10, 1)), ymd(2027, 1, 1));
        assert_eq!(q.period_start(ymd(2026, 11, 23)), ymd(2026, 10, 1));
        let y = cal(Granularity::Year, ColumnKind::Date, "UTC");
        assert_eq!(y.next_start(ymd(2026, 1, 1)), ymd(2027, 1, 1));
    }

    #[test]
    fn leap_years() {
        let d = cal(Granularity::Day, ColumnKind::Date, "UTC");
        assert_eq!(d.next_start(ymd(2024, 2, 28)), ymd(2024, 2, 29));
        assert_eq!(d.next_start(ymd(2024, 2, 29)), ymd(2024, 3, 1));
        assert_eq!(d.next_start(ymd(2023, 2, 28)), ymd(2023, 3, 1));
        let m = cal(Granularity::Month, ColumnKind::Date, "UTC");
        assert_eq!(m.period_start(ymd(2024, 2, 29)), ymd(2024, 2, 1));
        // February of a leap year is 29 days long in bounds.
        let len = m.bound_of(ymd(2024, 3, 1)) - m.bound_of(ymd(2024, 2, 1));
        assert_eq!(len, 29 * 86_400 * 1_000_000);
        let y = cal(Granularity::Year, ColumnKind::Timestamp, "UTC");
        let len = y.bound_of(ymd(2025, 1, 1)) - y.bound_of(ymd(2024, 1, 1));
        assert_eq!(len, 366 * 86_400 * 1_000_000);
    }

    #[test]
    fn iso_weeks_start_monday() {
        let w = cal(Granularity::Week, ColumnKind::Date, "UTC");
        assert_eq!(w.period_start(ymd(2026, 11, 23)), ymd(2026, 11, 23)); // a Monday
        assert_eq!(w.period_start(ymd(2026, 11, 29)), ymd(2026, 11, 23));
        assert_eq!(w.label(ymd(2026, 11, 23)), "2026w48");
        // 2024-12-30 belongs to ISO week 1 of 2025.
        assert_eq!(w.label(ymd(2024, 12, 30)), "2025w01");
    }

    #[test]
    fn labels() {
        assert_eq!(cal(Granularity::Month, ColumnKind::Date, "UTC").label(ymd(2026, 11, 1)), "2026_11");
        assert_eq!(cal(Granularity::Year, ColumnKind::Date, "UTC").label(ymd(2026, 1, 1)), "2026");
        assert_eq!(cal(Granularity::Day, ColumnKind::Date, "UTC").label(ymd(2026, 1, 5)), "2026_01_05");
        assert_eq!(cal(Granularity::Quarter, ColumnKind::Date, "UTC").label(ymd(2026, 7, 1)), "2026q3");
    }

    #[test]
    fn timestamptz_bounds_are_local_midnight_across_dst() {
        let c = cal(Granularity::Month, ColumnKind::Timestamptz, "Europe/Paris");
        // Winter (UTC+1) and summer (UTC+2) months.
        assert_eq!(c.bound_of(ymd(2026, 1, 1)), utc("2025-12-31 23:00:00"));
        assert_eq!(c.bound_of(ymd(2026, 4, 1)), utc("2026-03-31 22:00:00"));
        // March 2026 spans the spring-forward change: 31 days less one hour.
        let march = c.bound_of(ymd(2026, 4, 1)) - c.bound_of(ymd(2026, 3, 1));
        assert_eq!(march, (31 * 24 - 1) * 3_600 * 1_000_000);
        // October spans the fall-back change: one hour more.
        let october = c.bound_of(ymd(2026, 11, 1)) - c.bound_of(ymd(2026, 10, 1));
        assert_eq!(october, (31 * 24 + 1) * 3_600 * 1_000_000);
        // Reading a bound back gives the period it starts.
        assert_eq!(c.period_of(c.bound_of(ymd(2026, 4, 1))), ymd(2026, 4, 1));
        assert_eq!(c.period_of(c.bound_of(ymd(2026, 4, 1)) - 1), ymd(2026, 3, 1));
    }

    #[test]
    fn odd_offsets() {
        // Kathmandu is UTC+05:45, Chatham UTC+12:45 (+13:45 in its summer).
        let k = cal(Granularity::Month, ColumnKind::Timestamptz, "Asia/Kathmandu");
        assert_eq!(k.bound_of(ymd(2026, 11, 1)), utc("2026-10-31 18:15:00"));
        let c = cal(Granularity::Year, ColumnKind::Timestamptz, "Pacific/Chatham");
        assert_eq!(c.bound_of(ymd(2027, 1, 1)), utc("2026-12-31 10:15:00"));
        let s = cal(Granularity::Month, ColumnKind::Timestamptz, "America/St_Johns");
        assert_eq!(s.bound_of(ymd(2026, 12, 1)), utc("2026-12-01 03:30:00"));
    }

    #[test]
    fn midnight_that_does_not_exist_starts_at_the_transition() {
        // Chile moved clocks from 00:00 to 01:00 on 2022-09-11.
        let c = cal(Granularity::Day, ColumnKind::Timestamptz, "America/Santiago");
        let b = c.bound_of(ymd(2022, 9, 11));
        assert_eq!(b, utc("2022-09-11 04:00:00"));
        assert_eq!(c.period_of(b), ymd(2022, 9, 11));
        assert_eq!(c.period_of(b - 1), ymd(2022, 9, 10));
        // That day is 23 hours long.
        assert_eq!(c.bound_of(ymd(2022, 9, 12)) - b, 23 * 3_600 * 1_000_000);
    }

    #[test]
    fn midnight_that_happens_twice_takes_the_first() {
        // Chile moved clocks back from 00:00 to 23:00 on 2022-04-03.
        let c = cal(Granularity::Day, ColumnKind::Timestamptz, "America/Santiago");
        let b = c.bound_of(ymd(2022, 4, 3));
        assert_eq!(c.period_of(b), ymd(2022, 4, 3));
        assert_eq!(c.period_of(b - 1), ymd(2022, 4, 2));
    }

    #[test]
    fn civil_days_begin_at_local_midnight_as_instants() {
        let c = cal(Granularity::Month, ColumnKind::Date, "Asia/Tokyo");
        assert_eq!(c.instant_of(ymd(2026, 12, 1)), utc("2026-11-30 15:00:00"));
        assert_eq!(c.bound_of(ymd(2026, 12, 1)), utc("2026-12-01 00:00:00"));
    }

    #[test]
    fn intervals_move_instants_on_the_local_calendar() {
        let c = cal(Granularity::Month, ColumnKind::Timestamptz, "Europe/Paris");
        let months = |m| Span { months: m, days: 0, micros: 0 };
        // 2026-07-15 12:00 Paris (UTC+2) minus 6 months: 2026-01-15 12:00 Paris (UTC+1).
        assert_eq!(c.shift(utc("2026-07-15 10:00:00"), months(6), true), utc("2026-01-15 11:00:00"));
        assert_eq!(c.shift(utc("2026-01-15 11:00:00"), months(6), false), utc("2026-07-15 10:00:00"));
        // Month ends clamp as PostgreSQL does: 31 March - 1 month = 28 February.
        let d = cal(Granularity::Month, ColumnKind::Date, "UTC");
        assert_eq!(d.shift(utc("2026-03-31 00:00:00"), months(1), true), utc("2026-02-28 00:00:00"));
        let mixed = Span { months: 1, days: 2, micros: 3_600_000_000 };
        assert_eq!(d.shift(utc("2026-01-31 00:00:00"), mixed, false), utc("2026-03-02 01:00:00"));
        // Civil columns: an instant is read on the zone's wall clock and back.
        let t = cal(Granularity::Month, ColumnKind::Timestamp, "Asia/Tokyo");
        assert_eq!(t.bound_at(utc("2026-11-30 16:00:00")), utc("2026-12-01 01:00:00"));
        assert_eq!(t.instant_at(utc("2026-12-01 01:00:00")), utc("2026-11-30 16:00:00"));
    }

    #[test]
    fn civil_columns_ignore_the_zone_for_bounds() {
        let c = cal(Granularity::Month, ColumnKind::Timestamp, "Asia/Tokyo");
        assert_eq!(c.bound_of(ymd(2026, 11, 1)), utc("2026-11-01 00:00:00"));
        assert_eq!(c.literal(c.bound_of(ymd(2026, 11, 1))), "'2026-11-01 00:00:00'");
        let d = cal(Granularity::Month, ColumnKind::Date, "UTC");
        assert_eq!(d.literal(d.bound_of(ymd(2026, 11, 1))), "'2026-11-01'");
        // "now" for a civil column is the zone's wall clock.
        assert_eq!(c.civil_date_of_instant(utc("2026-11-30 16:00:00")), ymd(2026, 12, 1));
    }

    #[test]
    fn literals_for_timestamptz_are_utc() {
        let c = cal(Granularity::Month, ColumnKind::Timestamptz, "Europe/Paris");
        assert_eq!(c.literal(c.bound_of(ymd(2026, 11, 1))), "'2026-10-31 23:00:00+00'");
        assert_eq!(c.display(c.bound_of(ymd(2026, 11, 1))), "2026-11-01 00:00:00+01:00");
    }

    #[test]
    fn parses_names() {
        assert_eq!("Monthly".parse::<Granularity>(), Ok(Granularity::Month));
        assert_eq!("year".parse::<Granularity>(), Ok(Granularity::Year));
        assert!("fortnight".parse::<Granularity>().is_err());
        assert!(parse_time_zone("europe/paris").is_some());
        assert!(parse_time_zone("UTC").is_some());
        assert!(parse_time_zone("Mars/Olympus_Mons").is_none());
        assert_eq!(ColumnKind::from_sql_type("timestamp with time zone"), Some(ColumnKind::Timestamptz));
        assert_eq!(ColumnKind::from_sql_type("integer"), None);
    }
}
