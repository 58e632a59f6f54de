//! `upkeep.adopt_pg_cron()`: pg_cron jobs written by hand for what
//! pg_upkeep does become its policies. Facts: `cron.job` (in the database
//! pg_cron keeps its jobs in) and pg_partman's state; plan:
//! `upkeep_core::cron::decide`; act: a job's policies registered and the
//! job unscheduled together, or neither. A dry run (the default) takes the
//! same steps and rolls them back, so it reports what a real run would.

use crate::errors::{bad_input, Found};
use crate::regclass::RegClass;
use crate::sql::ident;
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use upkeep_core::cron::{decide, manage_matview_call, Job, Partman, Verdict};

const JOBS_SQL: &str = "SELECT jobid, jobname::text, schedule, command, database, active FROM cron.job ORDER BY jobid";

fn err(e: pgrx::spi::SpiError) -> String {
    e.to_string()
}

/// pg_partman here: its parents, and whether each is still maintained by
/// it or adopted by pg_upkeep.
fn partman(client: &SpiClient<'_>) -> Result<Partman, String> {
    let Some((schema, ..)) = crate::partman::installed(client)? else { return Ok(Partman::default()) };
    let sql = format!(
        "SELECT cfg.parent_table, cfg.automatic_maintenance = 'on', \
                EXISTS (SELECT 1 FROM upkeep.partition_policies p WHERE p.parent::oid = {}) \
           FROM {}.part_config cfg ORDER BY 1",
        crate::partman::relation_by_name("cfg.parent_table"),
        ident(&schema)
    );
    let mut out = Partman { installed: true, ..Partman::default() };
    for row in client.select(&sql, None, &[]).map_err(err)? {
        let parent = row.get::<String>(1).map_err(err)?.unwrap_or_default();
        if row.get::<bool>(2).map_err(err)?.unwrap_or(false) {
            out.still_maintained.push(parent.clone());
        }
        if row.get::<bool>(3).map_err(err)?.unwrap_or(false) {
            out.adopted.push(parent);
        }
    }
    Ok(out)
}

/// Every job, and pg_partman's state; an ERROR with a HINT when pg_cron's
/// jobs are not in this database.
fn read(client: &SpiClient<'_>) -> Result<(String, Vec<Job>, Partman), String> {
    let row = client
        .select(
            "SELECT current_database()::text, current_setting('cron.database_name', true), \
                    to_regclass('cron.job') IS NOT NULL",
            None,
            &[],
        )
        .map_err(err)?
        .first();
    let here = row.get::<String>(1).map_err(err)?.unwrap_or_default();
    let cron_database = row.get::<String>(2).map_err(err)?.filter(|d| !d.is_empty());
    if !row.get::<bool>(3).map_err(err)?.unwrap_or(false) {
        match cron_database {
            Some(db) => bad_input(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("pg_cron keeps its jobs in database {db}, not in {here}"),
                format!(
                    "Run upkeep.adopt_pg_cron() in database {db}: it takes over the jobs that run there and lists \
                     those of other databases with the calls to run in each."
                ),
            ),
            None => bad_input(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                "pg_cron is not installed",
                "There are no pg_cron jobs to take over: pg_cron is not in shared_preload_libraries.",
            ),
        }
    }
    let mut jobs = Vec::new();
    for row in client.select(JOBS_SQL, None, &[]).map_err(err)? {
        jobs.push(Job {
            jobid: row.get::<i64>(1).map_err(err)?.unwrap_or_default(),
            jobname: row.get::<String>(2).map_err(err)?,
            schedule: row.get::<String>(3).map_err(err)?.unwrap_or_default(),
            command: row.get::<String>(4).map_err(err)?.unwrap_or_default(),
            database: row.get::<String>(5).map_err(err)?.unwrap_or_default(),
            active: row.get::<bool>(6).map_err(err)?.unwrap_or(false),
        });
    }
    Ok((here, jobs, partman(client)?))
}

/// Registers the views' policies (only_when_changed on), then unschedules
/// the job: all of it, or (an error, or a dry run) none of it.
fn take_over(job: &Job, every: &str, views: &[(String, bool)], dry_run: bool) -> Result<(), String> {
    crate::executor::rehearsed(dry_run, || {
        let every = Spi::get_one_with_args::<Interval>("SELECT $1::interval", &[every.into()])
            .map_err(err)?
            .ok_or("an empty interval")?;
        // The job's names are read as pg_cron's session read them: with the
        // search_path a session here starts with.
        let path = Spi::get_one::<String>("SELECT reset_val FROM pg_settings WHERE name = 'search_path'")
            .map_err(err)?
            .unwrap_or_default();
        let path = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
        for (view, concurrently) in views {
            let resolving = crate::settings::Local::set(c"search_path", &path);
            let oid = Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[view.as_str().into()])
                .map_err(err)?
                .ok_or_else(|| format!("{view} does not exist"))?;
            drop(resolving);
            // A view refreshed by several jobs keeps the shortest interval.
            let kept = Spi::get_one_with_args::<bool>(
                "SELECT every <= $2 FROM upkeep.matview_policies WHERE matview::oid = $1",
                &[oid.into(), every.into()],
            )
            .found();
            if kept != Some(true) {
                crate::matviews::register(Some(RegClass(oid)), Some(every), Some(*concurrently), Some(true));
            }
        }
        unschedule(job)
    })
}

fn unschedule(job: &Job) -> Result<(), String> {
    Spi::get_one_with_args::<bool>("SELECT cron.unschedule($1)", &[job.jobid.into()])
        .map_err(|e| format!("could not unschedule job {}: {e}", job.jobid))
        .map(|_| ())
}

/// One row per pg_cron job: what it runs, what pg_upkeep does instead,
/// and whether it was taken over (or, in a dry run, would be) or why not.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn adopt_pg_cron(
    dry_run: default!(Option<bool>, true),
) -> TableIterator<
    'static,
    (
        name!(job, String),
        name!(pg_cron, String),
        name!(pg_upkeep, Option<String>),
        name!(status, String),
        name!(detail, String),
    ),
> {
    crate::errors::guarded("adopt_pg_cron", || {
        let dry_run = crate::errors::given(
            dry_run,
            "dry_run",
            "adopt_pg_cron",
            "Pass true (the default) to see what would be taken over, or false to take it over.",
        );
        let (here, jobs, partman) =
            Spi::connect(read).unwrap_or_else(|e| error!("pg_upkeep could not read pg_cron's jobs: {e}"));
        let rows: Vec<_> = jobs
            .iter()
            .map(|job| {
                let name =
                    format!("{}{}", job.jobid, job.jobname.as_deref().map(|n| format!(" {n}")).unwrap_or_default());
                let was = format!("'{}' in database {}: {}", job.schedule, job.database, job.command);
                let done = if dry_run { "would adopt" } else { "adopted" };
                let (instead, status, detail) = match decide(job, &here, &partman) {
                    Verdict::Refuse { calls, reasons } => {
                        (Some(calls.join("; ")).filter(|c| !c.is_empty()), "not adopted", reasons.join("; "))
                    }
                    Verdict::Refreshes { every, views } => {
                        let calls = views
                            .iter()
                            .map(|(v, c)| manage_matview_call(v, &every, *c))
                            .collect::<Vec<_>>()
                            .join("; ");
                        match take_over(job, &every, &views, dry_run) {
                            Ok(()) => (
                                Some(calls),
                                done,
                                "refreshed only when what the views read changed (only_when_changed), in dependency \
                                 order; the job is unscheduled"
                                    .to_string(),
                            ),
                            Err(e) => (Some(calls), "not adopted", e),
                        }
                    }
                    Verdict::Unschedule => match crate::executor::rehearsed(dry_run, || unschedule(job)) {
                        Ok(()) => (
                            Some("pg_upkeep's partition maintenance (the workers, or upkeep.run_maintenance())".into()),
                            done,
                            "pg_upkeep maintains every parent it ran for; the job is unscheduled".to_string(),
                        ),
                        Err(e) => (None, "not adopted", e),
                    },
                };
                (name, was, instead, status.to_string(), detail)
            })
            .collect();
        TableIterator::new(rows)
    })
}
