//! Automatic reindex, the pure part: the maintenance window, and what one
//! worker run rebuilds.

use super::findings::{Finding, Fix, Problem};
use crate::actions::{Action, ActionKind, Step};
use crate::sql::QualifiedName;

/// A maintenance window, minutes after midnight: [from, to), wrapping past
/// midnight when `to` <= `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: u32,
    pub to: u32,
}

impl std::str::FromStr for Window {
    type Err = ();
    /// `HH:MM-HH:MM`.
    fn from_str(s: &str) -> Result<Self, ()> {
        let minutes = |t: &str| -> Result<u32, ()> {
            let (h, m) = t.trim().split_once(':').ok_or(())?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| ())?, m.parse().map_err(|_| ())?);
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(());
            }
            Ok(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or(())?;
        let (from, to) = (minutes(a)?, minutes(b)?);
        if from == to {
            return Err(());
        }
        Ok(Window { from, to })
    }
}

impl Window {
    pub fn contains(self, minute: u32) -> bool {
        if self.from < self.to {
            (self.from..self.to).contains(&minute)
        } else {
            minute >= self.from || minute < self.to
        }
    }
}

/// What one worker run does: drop every leftover, then rebuild the most
/// bloated index that qualifies (one per run).
pub fn plan(
    job_id: i64,
    findings: &[Finding],
    owners: &dyn Fn(&QualifiedName) -> String,
    min_ratio: f64,
    min_size: i64,
) -> Vec<Action> {
    let index = |f: &Finding| QualifiedName::new(f.table.schema.clone(), f.index.clone().unwrap_or_default());
    let leftovers = findings.iter().filter(|f| f.problem == Problem::Invalid && f.fix == Fix::Drop);
    let mut out: Vec<Action> = leftovers
        .map(|f| Action {
            job_id,
            kind: ActionKind::DropIndex,
            target: index(f),
            detail: "left behind by an interrupted concurrent rebuild".into(),
            run_as: owners(&f.table),
            steps: vec![Step::top_level(format!("DROP INDEX CONCURRENTLY {}", index(f).quoted()))],
        })
        .collect();
    let mut bloated: Vec<&Finding> = findings
        .iter()
        .filter(|f| {
            f.problem == Problem::Bloated
                && f.bloat_ratio.is_some_and(|r| r >= min_ratio)
                && f.size_bytes.is_some_and(|s| s >= min_size)
                // A partitioned index's row (every partition bloated) rebuilds
                // all its partitions, each in a transaction of its own.
                && f.fix == Fix::Rebuild
        })
        .collect();
    bloated.sort_by_key(|f| std::cmp::Reverse(f.bloat_bytes));
    out.extend(bloated.first().map(|f| Action {
        job_id,
        kind: ActionKind::Reindex,
        target: index(f),
        detail: format!(
            "estimated bloat ratio {:.2}, {} bytes of {} before",
            f.bloat_ratio.unwrap_or_default(),
            f.bloat_bytes.unwrap_or_default(),
            f.size_bytes.unwrap_or_default()
        ),
        run_as: owners(&f.table),
        steps: vec![Step::top_level(format!("REINDEX INDEX CONCURRENTLY {}", index(f).quoted()))],
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let w: Window = "01:00-05:30".parse().unwrap();
        assert!(w.contains(60) && w.contains(329) && !w.contains(330) && !w.contains(59));
        let night: Window = "22:00-02:00".parse().unwrap();
        assert!(night.contains(23 * 60) && night.contains(30) && !night.contains(12 * 60));
        for bad in ["", "1-2", "25:00-01:00", "01:00-01:00", "01:60-02:00", "0100-0200"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    fn finding(index: &str, problem: Problem, ratio: f64, bloat: i64, fix: Fix) -> Finding {
        Finding {
            table: QualifiedName::new("public", "t"),
            index: Some(index.into()),
            problem,
            severity: "high",
            size_bytes: Some(bloat * 2),
            scans: Some(1),
            bloat_bytes: Some(bloat),
            bloat_ratio: Some(ratio),
            recommendation: String::new(),
            fix,
            fix_sql: String::new(),
        }
    }

    #[test]
    fn leftovers_first_then_the_most_bloated_one() {
        let f = [
            finding("small", Problem::Bloated, 3.0, 20 << 20, Fix::Rebuild),
            finding("big", Problem::Bloated, 2.5, 90 << 20, Fix::Rebuild),
            finding("mild", Problem::Bloated, 1.6, 200 << 20, Fix::Rebuild),
            finding("t_ccnew", Problem::Invalid, 0.0, 0, Fix::Drop),
            finding("broken", Problem::Invalid, 0.0, 0, Fix::Rebuild),
        ];
        let owner = |_: &QualifiedName| "app".to_string();
        let a = plan(7, &f, &owner, 2.0, 10 << 20);
        let got: Vec<(ActionKind, String)> = a.iter().map(|x| (x.kind, x.target.name.clone())).collect();
        assert_eq!(got, vec![(ActionKind::DropIndex, "t_ccnew".into()), (ActionKind::Reindex, "big".into())]);
        assert_eq!(a[1].steps[0].sql, r#"REINDEX INDEX CONCURRENTLY "public"."big""#);
        assert!(a[1].steps[0].top_level);
        assert_eq!(a[1].run_as, "app");
        // Too small for the policy: nothing to rebuild.
        assert_eq!(plan(7, &f[..3], &owner, 2.0, 1 << 30).len(), 0);
    }
}
