//! The pg_cron recipes of contrib/pg_cron.sql, as written, on a server
//! that preloads pg_cron but not pg_upkeep: each job runs and does its work.

use std::time::Duration;
use upkeep_cluster_tests::{count, Cluster};

#[test]
fn the_pg_cron_recipes_run_and_do_their_work_without_the_library_preloaded() {
    let cluster = Cluster::start(
        "pg-cron-recipes",
        &[
            "shared_preload_libraries = 'pg_cron'",
            "cron.database_name = 'postgres'",
            "cron.use_background_workers = on",
            "max_worker_processes = 20",
        ],
    );
    let mut c = cluster.connect("postgres");
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_upkeep%'"), 0);
    c.batch_execute(
        "CREATE EXTENSION pg_cron;
         CREATE TABLE nav (d date NOT NULL) PARTITION BY RANGE (d);
         INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('nav', 'd', 2);
         CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
         SELECT upkeep.manage_archive('events', 'at', '30 days');
         CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events WITH NO DATA;
         CREATE UNIQUE INDEX ON event_count (n);
         SELECT upkeep.manage_matview('event_count');",
    )
    .unwrap();
    // The recipes as written (their schedules are checked by pg_cron)...
    let recipes =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/pg_cron.sql"))
            .unwrap();
    c.batch_execute(&recipes).unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM cron.job WHERE jobname LIKE 'upkeep-%'"), 4);
    // ...then every minute, so that the test does not wait for 02:30.
    c.batch_execute(
        "SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job WHERE jobname LIKE 'upkeep-%'",
    )
    .unwrap();
    let all_ran = "SELECT count(DISTINCT j.jobname) = 4 FROM cron.job_run_details d JOIN cron.job j USING (jobid) \
                    WHERE d.status = 'succeeded'";
    assert!(
        cluster.wait_until("postgres", all_ran, Duration::from_secs(150)),
        "not every recipe ran:\n{}",
        cluster.log()
    );
    let failed = count(&mut c, "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'");
    let errors: Vec<String> = c
        .query("SELECT return_message FROM cron.job_run_details WHERE status = 'failed'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(failed, 0, "{errors:?}");
    // What each did.
    assert!(count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'nav'::regclass") >= 3);
    // At least the 70 rows older than 30 days when the test began; none lost.
    assert!(count(&mut c, "SELECT count(*) FROM events_archive") >= 70);
    assert_eq!(count(&mut c, "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM events_archive)"), 100);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM upkeep.matview_status WHERE last_refresh IS NOT NULL AND populated"),
        1
    );
    assert!(count(&mut c, "SELECT count(*) FROM upkeep.index_health_history") > 0);
    // Still no pg_upkeep process: pg_cron did it all.
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_upkeep%'"), 0);
}
