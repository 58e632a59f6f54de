//! upkeep.adopt_pg_cron() against the real pg_cron (and pg_partman, whose
//! maintenance job it takes over once pg_partman has nothing left).

use postgres::Client;
use upkeep_cluster_tests::{count, error_of, texts, Cluster};

const SETUP: &str = "
CREATE EXTENSION pg_cron;
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE TABLE trades (fund int NOT NULL, amount numeric NOT NULL);
INSERT INTO trades SELECT g % 5, g FROM generate_series(1, 100) g;
CREATE MATERIALIZED VIEW by_fund AS SELECT fund, sum(amount) AS total FROM trades GROUP BY fund;
CREATE UNIQUE INDEX ON by_fund (fund);
CREATE MATERIALIZED VIEW totals AS SELECT sum(amount) AS total FROM trades;
CREATE TABLE logs (at timestamptz NOT NULL, line text);
CREATE TABLE events (created timestamptz NOT NULL) PARTITION BY RANGE (created);
SELECT partman.create_parent('public.events', 'created', 'native', 'monthly');
UPDATE partman.part_config SET infinite_time_partitions = true;
SELECT cron.schedule('by-fund', '*/10 * * * *', 'REFRESH MATERIALIZED VIEW CONCURRENTLY by_fund');
SELECT cron.schedule('totals', '0 * * * *', 'REFRESH MATERIALIZED VIEW totals; REFRESH MATERIALIZED VIEW by_fund');
-- CONCURRENTLY needs a unique index that totals lacks: not taken over.
SELECT cron.schedule('totals-fast', '*/5 * * * *', 'REFRESH MATERIALIZED VIEW CONCURRENTLY totals');
SELECT cron.schedule('purge', '0 3 * * *', $$DELETE FROM logs WHERE at < now() - interval '30 days'$$);
SELECT cron.schedule('partman', '@hourly', 'SELECT partman.run_maintenance()');
SELECT cron.schedule('office-hours', '0 9-17 * * *', 'REFRESH MATERIALIZED VIEW by_fund');
SELECT cron.schedule('vacuum', '0 4 * * *', 'VACUUM ANALYZE trades');
SELECT cron.schedule_in_database('elsewhere', '0 * * * *', 'REFRESH MATERIALIZED VIEW x', 'other');
";

/// (job name, status, pg_upkeep, detail) per job.
fn adopt(c: &mut Client, dry_run: bool) -> Vec<(String, String, String, String)> {
    c.query("SELECT job, status, coalesce(pg_upkeep, ''), detail FROM upkeep.adopt_pg_cron(dry_run => $1)", &[&dry_run])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn row<'a>(rows: &'a [(String, String, String, String)], job: &str) -> &'a (String, String, String, String) {
    rows.iter().find(|r| r.0.ends_with(&format!(" {job}"))).unwrap_or_else(|| panic!("no row for {job}: {rows:?}"))
}

#[test]
fn pg_cron_jobs_are_taken_over_whole_or_not_at_all_with_pg_partman_maintenance() {
    let cluster = Cluster::start(
        "adopt-pg-cron",
        &["shared_preload_libraries = 'pg_upkeep, pg_cron'", "cron.database_name = 'postgres'", "upkeep.enabled = off"],
    );
    let mut admin = cluster.connect("postgres");
    admin.batch_execute("CREATE DATABASE other").unwrap();
    admin.batch_execute(SETUP).unwrap();
    let jobs = "SELECT jobname FROM cron.job ORDER BY jobname";
    let all = texts(&mut admin, jobs);
    assert_eq!(all.len(), 8);

    // Run elsewhere: an ERROR that says where to run it.
    let mut other = cluster.connect("other");
    other.batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
    let (message, hint) = error_of(other.query("SELECT * FROM upkeep.adopt_pg_cron()", &[]));
    assert!(message.contains("pg_cron keeps its jobs in database postgres"), "{message}");
    assert!(hint.unwrap_or_default().contains("Run upkeep.adopt_pg_cron() in database postgres"));

    // A dry run says what would happen, and changes nothing.
    let dry = adopt(&mut admin, true);
    assert_eq!(row(&dry, "by-fund").1, "would adopt", "{dry:?}");
    assert_eq!(row(&dry, "totals").1, "would adopt", "{dry:?}");
    let fast = row(&dry, "totals-fast");
    assert_eq!(fast.1, "not adopted");
    assert!(fast.3.contains("unique index"), "the registration's own check, rolled back: {fast:?}");
    assert_eq!(texts(&mut admin, jobs), all);
    assert_eq!(count(&mut admin, "SELECT count(*) FROM upkeep.matview_policies"), 0);

    // pg_partman still maintains events: its maintenance job stays.
    let partman = row(&dry, "partman");
    assert!(partman.1 == "not adopted" && partman.3.contains("still maintains public.events"), "{partman:?}");

    let done = adopt(&mut admin, false);
    assert_eq!(row(&done, "by-fund").1, "adopted");
    assert_eq!(row(&done, "totals").1, "adopted");
    let purge = row(&done, "purge");
    assert_eq!(purge.1, "not adopted");
    assert_eq!(purge.2, "SELECT upkeep.manage_archive('logs', 'at', '30 days')");
    assert!(purge.3.contains("keeps them"), "{purge:?}");
    assert!(row(&done, "office-hours").3.contains("no fixed interval"));
    assert!(row(&done, "vacuum").3.contains("review it by hand"));
    let elsewhere = row(&done, "elsewhere");
    assert!(elsewhere.3.contains("runs in database other"), "{elsewhere:?}");
    assert_eq!(elsewhere.2, "SELECT upkeep.manage_matview('x', every => '1 hour', concurrently => false)");
    // The two refresh jobs are gone; their views are policies with their
    // schedules' intervals; the failed one left no trace.
    assert_eq!(texts(&mut admin, jobs), ["elsewhere", "office-hours", "partman", "purge", "totals-fast", "vacuum"]);
    assert_eq!(
        texts(
            &mut admin,
            "SELECT matview::text || ' ' || every || ' ' || concurrent || ' ' || only_when_changed
               FROM upkeep.matview_policies ORDER BY 1"
        ),
        ["by_fund 00:10:00 true true", "totals 01:00:00 false true"],
        "a view refreshed by two jobs keeps the shorter interval"
    );
    assert_eq!(count(&mut admin, "SELECT count(*) FROM upkeep.refresh_matviews() WHERE status = 'refreshed'"), 2);

    // Once pg_partman's parent is adopted, its maintenance job goes too.
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM upkeep.adopt_pg_partman(dry_run => false) WHERE status = 'adopted'"),
        1
    );
    let again = adopt(&mut admin, false);
    assert_eq!(row(&again, "partman").1, "adopted", "{again:?}");
    assert_eq!(texts(&mut admin, jobs), ["elsewhere", "office-hours", "purge", "totals-fast", "vacuum"]);
}
