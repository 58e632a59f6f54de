//! Automatic reindex and the index-health history on a real cluster with
//! the workers on: off unless asked for, only inside the window, leftovers
//! of interrupted concurrent rebuilds dropped first, sizes before and after
//! in the run log; the daily snapshot job.

use postgres::Client;
use std::time::Duration;
use upkeep_cluster_tests::{assert_refused, count, ran_again, wait_for, Cluster};

/// A 400,000-row table whose index has 3 of 4 entries deleted and vacuumed
/// away: about 4 times the size it needs.
fn bloated(c: &mut Client, name: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE {name} (id int NOT NULL, v text);
         INSERT INTO {name} SELECT g, 'x' FROM generate_series(1, 400000) g;
         CREATE INDEX {name}_id ON {name} (id);
         DELETE FROM {name} WHERE id % 4 <> 0;"
    ))
    .unwrap();
    c.batch_execute(&format!("VACUUM ANALYZE {name}")).unwrap();
}

fn size(c: &mut Client, index: &str) -> i64 {
    count(c, &format!("SELECT pg_relation_size('{index}')"))
}

#[test]
fn workers_reindex_only_when_asked_inside_the_window_leftovers_first() {
    let cluster = Cluster::start("reindex", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    bloated(&mut c, "events");
    let before = size(&mut c, "events_id");
    // The snapshot job (daily by default; it ran when the extension was
    // created) records the index's figures: here every second.
    c.batch_execute(
        "SELECT upkeep.alter_job(job_id, every => '1 second') FROM upkeep.jobs WHERE kind = 'index_snapshot'",
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(20), || count(
        &mut c,
        "SELECT count(*) FROM upkeep.index_health_history WHERE index = 'events_id' AND bloat_ratio > 3"
    ) == 1));
    // Off unless asked for: several cycles (three more snapshots), no rebuild.
    let snapshots = "SELECT count(*) FROM upkeep.index_health_history WHERE index = 'events_id'";
    let seen = count(&mut c, snapshots);
    assert!(wait_for(Duration::from_secs(30), || count(&mut c, snapshots) >= seen + 3));
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.job_runs WHERE action = 'reindex'"), 0);
    assert_eq!(size(&mut c, "events_id"), before);

    // Bad input changes nothing.
    let snapshot = |c: &mut Client| -> String {
        c.query_one("SELECT count(*)::text || coalesce(max(min_bloat_ratio)::text, '') FROM upkeep.reindex_policy", &[])
            .unwrap()
            .get(0)
    };
    let cases: &[(&str, &str)] = &[
        ("SELECT upkeep.manage_reindex(1.0)", "min_bloat_ratio 1 must be above 1"),
        ("SELECT upkeep.manage_reindex(NULL)", "min_bloat_ratio NULL must be above 1"),
        ("SELECT upkeep.manage_reindex(2.0, -1)", "min_size_bytes must be 0 or more"),
        ("SELECT upkeep.manage_reindex(2.0, 0, '25:00-26:00')", "is not a window"),
        ("SELECT upkeep.manage_reindex(2.0, 0, 'nightly')", "is not a window"),
    ];
    assert_refused(&mut c, cases, snapshot);

    // A window that is not now: checked, not rebuilt.
    let hour = count(&mut c, "SELECT extract(hour FROM localtime)::int8");
    let elsewhere = format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24);
    c.execute("SELECT upkeep.manage_reindex(2.0, 1000000, $1)", &[&elsewhere]).unwrap();
    c.batch_execute("SELECT upkeep.alter_job(job_id, every => '1 second') FROM upkeep.reindex_policy").unwrap();
    assert!(wait_for(Duration::from_secs(20), || count(
        &mut c,
        "SELECT count(*) FROM upkeep.jobs WHERE kind = 'reindex' AND last_run IS NOT NULL"
    ) == 1));
    // A later cycle decides again (the job runs every second): still nothing rebuilt.
    assert!(ran_again(&mut c, "reindex", 1), "the reindex job was not run again");
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.job_runs WHERE action = 'reindex'"), 0);
    assert_eq!(size(&mut c, "events_id"), before);

    // A leftover of an interrupted REINDEX CONCURRENTLY, and a second bloated index.
    bloated(&mut c, "orders");
    c.batch_execute(
        "CREATE FUNCTION boom(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
           $$ BEGIN IF current_setting('test.boom', true) = 'on' THEN RAISE EXCEPTION 'boom'; END IF; RETURN $1; END $$;
         CREATE INDEX events_boom ON events (boom(id));",
    )
    .unwrap();
    c.batch_execute("SET test.boom = on").unwrap();
    assert!(c.batch_execute("REINDEX INDEX CONCURRENTLY events_boom").is_err());
    c.batch_execute("RESET test.boom").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_class WHERE relname = 'events_boom_ccnew'"), 1);

    // Now any time: the leftover goes first, then one index per run. A run's
    // record gets the size after once the rebuild is recorded: wait for that.
    c.batch_execute("SELECT upkeep.manage_reindex(2.0, 1000000)").unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            count(
            &mut c,
            "SELECT count(*) FROM upkeep.job_runs WHERE action = 'reindex' AND status = 'ok' AND detail LIKE '%bytes after'"
        ) == 2
        }),
        "{}",
        cluster.log()
    );
    let runs: Vec<(String, String, String)> = c
        .query("SELECT action, target, detail FROM upkeep.job_runs WHERE action IN ('reindex', 'drop_index') AND status <> 'running' ORDER BY run_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(runs[0].0, "drop_index", "{runs:?}");
    assert_eq!(runs[0].1, "public.events_boom_ccnew");
    assert_eq!(runs.iter().filter(|r| r.0 == "reindex").count(), 2, "{runs:?}");
    for (_, target, detail) in runs.iter().filter(|r| r.0 == "reindex") {
        // "estimated bloat ratio R, B bytes of S before, A bytes after"
        let numbers: Vec<i64> = detail.split(|ch: char| !ch.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
        let (before, after) = (numbers[numbers.len() - 2], numbers[numbers.len() - 1]);
        assert!(after * 3 < before, "{target}: {detail}");
    }
    assert!(size(&mut c, "events_id") * 3 < before);
    // Both rebuilt, nothing left invalid, and nothing bloated in the report.
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.index_health WHERE problem = 'bloated'"), 0);
    // The workers never rebuilt two at once: each run's rebuild is its own record.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT started_at) FROM upkeep.job_runs WHERE action = 'reindex' AND status <> 'running'"
        ),
        2
    );
}

#[test]
fn snapshots_make_a_history_with_daily_growth() {
    let cluster = Cluster::start("index-history", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10000) g;
         ANALYZE t;",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT upkeep.snapshot_index_health()"), 1);
    // Yesterday's snapshot, smaller (as if taken then).
    c.batch_execute(
        "INSERT INTO upkeep.index_health_history (captured_at, schema, \"table\", index, size_bytes, scans)
         SELECT captured_at - interval '1 day', schema, \"table\", index, size_bytes - 8192, scans FROM upkeep.index_health_history;
         INSERT INTO upkeep.index_health_history (captured_at, schema, \"table\", index, size_bytes, scans)
         VALUES (now() - interval '40 days', 'public', 't', 't_pkey', 1, 0);",
    )
    .unwrap();
    let rows: Vec<(String, Option<i64>)> = c
        .query("SELECT index, growth_bytes FROM upkeep.index_growth ORDER BY day", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![("t_pkey".to_string(), None), ("t_pkey".to_string(), Some(8192))]);
    // The job: due at once, recorded, then daily.
    let job = count(&mut c, "SELECT job_id FROM upkeep.jobs WHERE kind = 'index_snapshot'");
    let done = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM upkeep.run_job({job}) WHERE status = 'ok' AND detail LIKE '%1 indexes recorded'"
        ),
    );
    assert_eq!(done, 1);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM upkeep.jobs WHERE kind = 'index_snapshot' AND next_run > now() + interval '23 hours'"
        ),
        1
    );
    c.batch_execute(&format!("SELECT upkeep.alter_job({job}, every => '6 hours')")).unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM upkeep.jobs WHERE kind = 'index_snapshot' AND schedule = 'every 06:00:00'"),
        1
    );
}
