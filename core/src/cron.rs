//! Taking over pg_cron jobs written by hand: which ones pg_upkeep does
//! instead (refreshes of materialized views, pg_partman's maintenance),
//! which it only lists (a DELETE of old rows: pg_upkeep would keep them),
//! and the interval that matches a cron schedule. Pure: the extension reads
//! `cron.job` and acts.

use crate::sql::literal;

/// One statement of a job's command, as pg_upkeep reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `REFRESH MATERIALIZED VIEW [CONCURRENTLY] name`.
    Refresh { view: String, concurrently: bool },
    /// `partman.run_maintenance()` or `run_maintenance_proc()`, for every
    /// parent or (first argument) one.
    PartmanMaintenance { parent: Option<String> },
    /// `DELETE FROM table WHERE column < now() - interval 'x'`.
    Delete { table: String, column: String, older_than: String },
    /// Anything else.
    Other,
}

/// Pieces of `text` between separators outside quotes, trimmed, without
/// empty ones.
fn split(text: &str, separator: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for ch in text.chars() {
        match (quote, ch) {
            (None, c) if separator(c) => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        current.push(ch);
    }
    out.push(current);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// The statements of a command: split at semicolons outside quotes.
pub fn statements(command: &str) -> Vec<String> {
    split(command, |c| c == ';')
}

/// The words of a statement (quoted names and literals kept whole).
fn words(stmt: &str) -> Vec<String> {
    split(stmt, char::is_whitespace)
}

fn is(word: Option<&String>, keyword: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// Reads one statement.
pub fn classify(stmt: &str) -> Statement {
    let w = words(stmt);
    if is(w.first(), "refresh") && is(w.get(1), "materialized") && is(w.get(2), "view") {
        let concurrently = is(w.get(3), "concurrently");
        let rest = &w[if concurrently { 4 } else { 3 }..];
        return match rest {
            [view] => Statement::Refresh { view: view.clone(), concurrently },
            [view, with, data] if with.eq_ignore_ascii_case("with") && data.eq_ignore_ascii_case("data") => {
                Statement::Refresh { view: view.clone(), concurrently }
            }
            _ => Statement::Other,
        };
    }
    if (is(w.first(), "select") || is(w.first(), "call")) && w.len() >= 2 {
        let call = w[1..].join(" ");
        let lower = call.to_ascii_lowercase();
        let name_end = lower.find('(').unwrap_or(lower.len());
        let name = lower[..name_end].trim();
        let function = name.rsplit('.').next().unwrap_or_default();
        if (function == "run_maintenance" || function == "run_maintenance_proc") && lower.trim_end().ends_with(')') {
            let args = call[name_end + 1..call.trim_end().len() - 1].trim();
            let first = args.split(',').next().unwrap_or_default().trim();
            let first = first
                .strip_prefix("p_parent_table")
                .map_or(first, |r| r.trim_start().trim_start_matches(":=").trim_start_matches("=>").trim_start());
            let parent = first.strip_prefix('\'').and_then(|p| p.strip_suffix('\'')).map(|p| p.replace("''", "'"));
            if args.is_empty() || parent.is_some() || !args.to_ascii_lowercase().contains("p_parent_table") {
                return Statement::PartmanMaintenance { parent };
            }
        }
        return Statement::Other;
    }
    if is(w.first(), "delete") && is(w.get(1), "from") && is(w.get(3), "where") && w.len() >= 7 {
        let (table, column, op) = (&w[2], &w[4], w[5].as_str());
        let rest = w[6..].join(" ").to_ascii_lowercase();
        let rest = rest.trim_end();
        let older_than = ["now() - interval ", "current_timestamp - interval "]
            .iter()
            .find_map(|p| rest.strip_prefix(p))
            .and_then(|q| q.strip_prefix('\'')?.strip_suffix('\'').map(str::to_string))
            .or_else(|| {
                ["now() - ", "current_timestamp - "].iter().find_map(|p| rest.strip_prefix(p)).and_then(|q| {
                    q.strip_suffix("::interval")?.strip_prefix('\'')?.strip_suffix('\'').map(str::to_string)
                })
            });
        if let (Some(older_than), "<" | "<=") = (older_than, op) {
            return Statement::Delete { table: table.clone(), column: column.clone(), older_than };
        }
    }
    Statement::Other
}

/// The fixed interval between two runs of a cron schedule, as an interval
/// literal's text; None when the runs are not evenly spaced.
pub fn every(schedule: &str) -> Option<String> {
    let s = schedule.trim().to_ascii_lowercase();
    let named = match s.as_str() {
        "@hourly" => Some("1 hour"),
        "@daily" | "@midnight" => Some("1 day"),
        "@weekly" => Some("7 days"),
        "@monthly" => Some("1 month"),
        "@yearly" | "@annually" => Some("1 year"),
        _ => None,
    };
    if let Some(n) = named {
        return Some(n.into());
    }
    let f: Vec<&str> = s.split_whitespace().collect();
    if let [n, unit] = f.as_slice() {
        let n: u32 = n.parse().ok()?;
        return (unit.starts_with("second") && (1..=59).contains(&n)).then(|| format!("{n} seconds"));
    }
    let [minute, hour, dom, month, dow] = f.as_slice() else { return None };
    let single = |x: &str, max: u32| x.parse::<u32>().is_ok_and(|v| v <= max);
    let step = |x: &str, divides: u32| {
        let n: u32 = x.strip_prefix("*/")?.parse().ok()?;
        (n > 0 && divides.is_multiple_of(n)).then_some(n)
    };
    if *month != "*" {
        return None;
    }
    match (*minute, *hour, *dom, *dow) {
        ("*", "*", "*", "*") => Some("1 minute".into()),
        (m, "*", "*", "*") if step(m, 60).is_some() => Some(format!("{} minutes", step(m, 60)?)),
        (m, "*", "*", "*") if single(m, 59) => Some("1 hour".into()),
        (m, h, "*", "*") if single(m, 59) && step(h, 24).is_some() => Some(format!("{} hours", step(h, 24)?)),
        (m, h, "*", "*") if single(m, 59) && single(h, 23) => Some("1 day".into()),
        (m, h, "*", d) if single(m, 59) && single(h, 23) && single(d, 7) => Some("7 days".into()),
        (m, h, d, "*") if single(m, 59) && single(h, 23) && single(d, 31) => Some("1 month".into()),
        _ => None,
    }
}

/// A job as pg_cron stores it.
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub jobid: i64,
    pub jobname: Option<String>,
    pub schedule: String,
    pub command: String,
    /// The database it runs in.
    pub database: String,
    pub active: bool,
}

/// What pg_partman still does in the job's database, for a job that runs
/// its maintenance.
#[derive(Debug, Clone, Default)]
pub struct Partman {
    pub installed: bool,
    /// Parents pg_partman still maintains (automatic_maintenance on).
    pub still_maintained: Vec<String>,
    /// Parents pg_upkeep manages.
    pub adopted: Vec<String>,
}

/// What taking over a job comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Register these views (every, concurrently), then unschedule the job.
    Refreshes { every: String, views: Vec<(String, bool)> },
    /// pg_upkeep does what the job did: unschedule it.
    Unschedule,
    /// Not taken over: why, and the calls that would replace it (for a
    /// DELETE, or a job of another database).
    Refuse { calls: Vec<String>, reasons: Vec<String> },
}

/// The call that registers a view's policy.
pub fn manage_matview_call(view: &str, every: &str, concurrently: bool) -> String {
    format!(
        "SELECT upkeep.manage_matview({}, every => {}, concurrently => {concurrently})",
        literal(view),
        literal(every)
    )
}

/// The calls that replace the job's statements, where there are some.
fn calls(statements: &[Statement], every: Option<&str>) -> Vec<String> {
    statements
        .iter()
        .filter_map(|s| match s {
            Statement::Refresh { view, concurrently } => {
                Some(manage_matview_call(view, every.unwrap_or("1 hour"), *concurrently))
            }
            Statement::Delete { table, column, older_than } => Some(format!(
                "SELECT upkeep.manage_archive({}, {}, {})",
                literal(table),
                literal(column),
                literal(older_than)
            )),
            Statement::PartmanMaintenance { .. } => Some("SELECT * FROM upkeep.adopt_pg_partman()".into()),
            Statement::Other => None,
        })
        .collect()
}

/// Decides one job, run in database `here`.
pub fn decide(job: &Job, here: &str, partman: &Partman) -> Verdict {
    let statements: Vec<Statement> = statements(&job.command).iter().map(|s| classify(s)).collect();
    let every = every(&job.schedule);
    let calls = calls(&statements, every.as_deref());
    let refuse = |reasons: Vec<String>| Verdict::Refuse { calls: calls.clone(), reasons };
    if statements.is_empty() || statements.contains(&Statement::Other) {
        return refuse(vec![
            "its command is not only refreshes of materialized views, a pg_partman maintenance call or a DELETE of \
             old rows: review it by hand"
                .into(),
        ]);
    }
    if statements.iter().any(|s| matches!(s, Statement::Delete { .. })) {
        return refuse(vec![format!(
            "a DELETE removes the rows; pg_upkeep's archive keeps them in <table>_archive instead. Review the call, run \
             it{}, then SELECT cron.unschedule({})",
            if job.database == here { String::new() } else { format!(" in database {}", job.database) },
            job.jobid
        )]);
    }
    let kinds = statements.iter().map(std::mem::discriminant).collect::<std::collections::HashSet<_>>().len();
    if kinds > 1 {
        return refuse(vec![
            "it mixes refreshes with pg_partman's maintenance: split it into two jobs, then run this again".into(),
        ]);
    }
    if job.database != here {
        return refuse(vec![format!(
            "it runs in database {}: run these calls there (with pg_upkeep in it), then SELECT cron.unschedule({}) here",
            job.database, job.jobid
        )]);
    }
    if !job.active {
        return refuse(vec![format!(
            "it is inactive in pg_cron: nothing runs to take over (SELECT cron.unschedule({}) if it is not needed)",
            job.jobid
        )]);
    }
    match &statements[0] {
        Statement::Refresh { .. } => {
            let Some(every) = every else {
                return refuse(vec![format!(
                    "schedule '{}' has no fixed interval: register the views with the every you want, then SELECT \
                     cron.unschedule({})",
                    job.schedule, job.jobid
                )]);
            };
            let views = statements
                .iter()
                .filter_map(|s| match s {
                    Statement::Refresh { view, concurrently } => Some((view.clone(), *concurrently)),
                    _ => None,
                })
                .collect();
            Verdict::Refreshes { every, views }
        }
        _ => {
            let parents: Vec<Option<String>> = statements
                .iter()
                .filter_map(|s| match s {
                    Statement::PartmanMaintenance { parent } => Some(parent.clone()),
                    _ => None,
                })
                .collect();
            if !partman.installed {
                return refuse(vec!["pg_partman is not installed in this database".into()]);
            }
            let missing: Vec<String> = parents
                .iter()
                .flat_map(|p| match p {
                    Some(parent) if !partman.adopted.contains(parent) => vec![parent.clone()],
                    Some(_) => vec![],
                    None => partman.still_maintained.clone(),
                })
                .collect();
            if missing.is_empty() {
                Verdict::Unschedule
            } else {
                refuse(vec![format!(
                    "pg_partman still maintains {}: keep this job until upkeep.adopt_pg_partman() takes them over",
                    missing.join(", ")
                )])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes() {
        assert_eq!(
            statements("REFRESH MATERIALIZED VIEW a; refresh materialized view \"b;c\";  ; SELECT ';'"),
            ["REFRESH MATERIALIZED VIEW a", "refresh materialized view \"b;c\"", "SELECT ';'"]
        );
    }

    #[test]
    fn refreshes_partman_calls_and_deletes_are_read_and_the_rest_is_not() {
        assert_eq!(
            classify("REFRESH MATERIALIZED VIEW CONCURRENTLY public.\"Sales MV\""),
            Statement::Refresh { view: "public.\"Sales MV\"".into(), concurrently: true }
        );
        assert_eq!(
            classify("refresh materialized view s.v with data"),
            Statement::Refresh { view: "s.v".into(), concurrently: false }
        );
        assert_eq!(classify("REFRESH MATERIALIZED VIEW v WITH NO DATA"), Statement::Other);
        assert_eq!(classify("SELECT partman.run_maintenance()"), Statement::PartmanMaintenance { parent: None });
        assert_eq!(classify("CALL partman.run_maintenance_proc()"), Statement::PartmanMaintenance { parent: None });
        assert_eq!(
            classify("select run_maintenance(p_analyze := false)"),
            Statement::PartmanMaintenance { parent: None }
        );
        assert_eq!(
            classify("SELECT partman.run_maintenance('public.events')"),
            Statement::PartmanMaintenance { parent: Some("public.events".into()) }
        );
        assert_eq!(
            classify("SELECT partman.run_maintenance(p_parent_table := 'public.events', p_analyze := false)"),
            Statement::PartmanMaintenance { parent: Some("public.events".into()) }
        );
        assert_eq!(
            classify("DELETE FROM public.logs WHERE logged_at < now() - interval '30 days'"),
            Statement::Delete { table: "public.logs".into(), column: "logged_at".into(), older_than: "30 days".into() }
        );
        assert_eq!(
            classify("delete from logs where at <= current_timestamp - '90 days'::interval"),
            Statement::Delete { table: "logs".into(), column: "at".into(), older_than: "90 days".into() }
        );
        for other in [
            "DELETE FROM logs WHERE level = 'debug'",
            "DELETE FROM logs WHERE at > now() - interval '1 day'",
            "VACUUM ANALYZE logs",
            "SELECT partman.create_parent('x', 'y', 'native', 'daily')",
        ] {
            assert_eq!(classify(other), Statement::Other, "{other}");
        }
    }

    #[test]
    fn evenly_spaced_schedules_have_an_interval_and_others_none() {
        for (schedule, interval) in [
            ("*/5 * * * *", Some("5 minutes")),
            ("* * * * *", Some("1 minute")),
            ("17 * * * *", Some("1 hour")),
            ("0 */6 * * *", Some("6 hours")),
            ("30 2 * * *", Some("1 day")),
            ("0 3 * * 0", Some("7 days")),
            ("0 4 1 * *", Some("1 month")),
            ("@hourly", Some("1 hour")),
            ("@daily", Some("1 day")),
            ("30 seconds", Some("30 seconds")),
            ("*/7 * * * *", None),
            ("0 9-17 * * *", None),
            ("0 3 * * 1-5", None),
            ("0 0 1 1 *", None),
            ("0,30 * * * *", None),
        ] {
            assert_eq!(every(schedule).as_deref(), interval, "{schedule}");
        }
    }

    fn job(command: &str) -> Job {
        Job {
            jobid: 7,
            jobname: Some("refresh".into()),
            schedule: "*/15 * * * *".into(),
            command: command.into(),
            database: "app".into(),
            active: true,
        }
    }

    #[test]
    fn a_job_of_refreshes_becomes_policies_with_its_interval() {
        let v = decide(
            &job("REFRESH MATERIALIZED VIEW CONCURRENTLY a; REFRESH MATERIALIZED VIEW b"),
            "app",
            &Partman::default(),
        );
        assert_eq!(
            v,
            Verdict::Refreshes { every: "15 minutes".into(), views: vec![("a".into(), true), ("b".into(), false)] }
        );
        let mut j = job("REFRESH MATERIALIZED VIEW a");
        j.schedule = "0 9-17 * * *".into();
        let Verdict::Refuse { reasons, calls } = decide(&j, "app", &Partman::default()) else { panic!() };
        assert!(reasons[0].contains("no fixed interval"), "{reasons:?}");
        assert_eq!(calls, ["SELECT upkeep.manage_matview('a', every => '1 hour', concurrently => false)"]);
    }

    #[test]
    fn a_delete_is_listed_with_the_archive_that_keeps_the_rows_and_never_taken_over() {
        let Verdict::Refuse { reasons, calls } =
            decide(&job("DELETE FROM logs WHERE at < now() - interval '30 days'"), "app", &Partman::default())
        else {
            panic!()
        };
        assert_eq!(calls, ["SELECT upkeep.manage_archive('logs', 'at', '30 days')"]);
        assert!(reasons[0].contains("keeps them") && reasons[0].contains("cron.unschedule(7)"), "{reasons:?}");
    }

    #[test]
    fn a_job_of_another_database_is_listed_with_the_calls_to_run_there() {
        let Verdict::Refuse { reasons, calls } =
            decide(&job("REFRESH MATERIALIZED VIEW a"), "postgres", &Partman::default())
        else {
            panic!()
        };
        assert!(reasons[0].contains("runs in database app"), "{reasons:?}");
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn pg_partman_maintenance_is_unscheduled_only_when_nothing_is_left_to_it() {
        let mut partman = Partman {
            installed: true,
            still_maintained: vec!["public.quiet".into()],
            adopted: vec!["public.events".into()],
        };
        let all = job("SELECT partman.run_maintenance()");
        let Verdict::Refuse { reasons, .. } = decide(&all, "app", &partman) else { panic!() };
        assert!(reasons[0].contains("still maintains public.quiet"), "{reasons:?}");
        assert_eq!(
            decide(&job("SELECT partman.run_maintenance('public.events')"), "app", &partman),
            Verdict::Unschedule
        );
        partman.still_maintained.clear();
        assert_eq!(decide(&all, "app", &partman), Verdict::Unschedule);
    }

    #[test]
    fn mixed_inactive_and_other_jobs_are_refused() {
        let p = Partman { installed: true, ..Partman::default() };
        for (command, why) in [
            ("REFRESH MATERIALIZED VIEW a; SELECT partman.run_maintenance()", "mixes"),
            ("REFRESH MATERIALIZED VIEW a; VACUUM a", "review it by hand"),
        ] {
            let Verdict::Refuse { reasons, .. } = decide(&job(command), "app", &p) else { panic!("{command}") };
            assert!(reasons[0].contains(why), "{command}: {reasons:?}");
        }
        let mut j = job("REFRESH MATERIALIZED VIEW a");
        j.active = false;
        let Verdict::Refuse { reasons, .. } = decide(&j, "app", &p) else { panic!() };
        assert!(reasons[0].contains("inactive"), "{reasons:?}");
    }
}
