//! Faults on a real cluster with the workers on: a worker killed with
//! SIGKILL in the middle of a refresh and of a concurrent reindex, the
//! server stopped with `pg_ctl stop -m immediate` in the middle of an
//! archive, a disk that fills up and a statement that fails in one job, a
//! lock held by the application. Afterwards nothing is lost or doubled,
//! nothing half-made is left once the next run has been, the run log says
//! what happened, and the other jobs went on.
//! (Partition creation and partition archive under SIGKILL: workers.rs,
//! archive_rows.rs and archive_workers.rs.)

use postgres::Client;
use std::process::Command;
use std::time::Duration;
use upkeep_cluster_tests::{count, wait_for, Cluster};

/// What an interruption may leave half-made, and must not after the next run.
const HALF_MADE: &str = "SELECT (SELECT count(*) FROM pg_index WHERE NOT indisvalid) \
     + (SELECT count(*) FROM pg_inherits WHERE inhdetachpending) \
     + (SELECT count(*) FROM upkeep.unfinished_actions) \
     + (SELECT count(*) FROM upkeep.job_runs WHERE status = 'running')";

/// Names shown schema-qualified (regclass output follows search_path).
const QUALIFIED: &str = "SET search_path = pg_catalog";

/// The tables, views and indexes of schema public, by name.
fn relations(c: &mut Client) -> String {
    c.query_one(
        "SELECT string_agg(relname, ' ' ORDER BY relname) FROM pg_class \
          WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'm', 'i', 'I')",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The pid of the worker busy with `action`, once it sleeps or waits there.
fn busy_worker(cluster: &Cluster, action: &str) -> i32 {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker' \
            AND query LIKE '%{action}%' AND wait_event_type IN ('Timeout', 'Lock')"
    );
    let mut c = cluster.connect("postgres");
    let mut pid = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            pid = c.query_opt(&sql, &[]).unwrap().map(|r| r.get(0));
            pid.is_some()
        }),
        "no worker got to {action}"
    );
    pid.unwrap()
}

/// The run log of one action, oldest first: "status detail".
fn log_of(c: &mut Client, action: &str) -> Vec<String> {
    c.query(
        "SELECT status || ' ' || coalesce(detail, '') FROM upkeep.job_runs WHERE action = $1 ORDER BY run_id",
        &[&action],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn a_worker_killed_mid_refresh_and_mid_reindex_leaves_nothing_half_made_and_the_log_says_so() {
    let cluster = Cluster::start(
        "faults-kill9",
        // Commits must survive the crash (the harness turns synchronous_commit off for speed).
        &["upkeep.naptime = 1", "restart_after_crash = on", "synchronous_commit = on", "upkeep.lock_timeout = '60s'"],
    );
    let mut c = cluster.connect("postgres");
    // A view whose refresh takes 3 seconds.
    c.batch_execute(
        "CREATE TABLE public.sales (id int PRIMARY KEY, k int NOT NULL);
         INSERT INTO public.sales SELECT g, g % 10 FROM generate_series(1, 1000) g;
         CREATE MATERIALIZED VIEW public.slow_totals AS
           SELECT k, count(*) AS n FROM public.sales, pg_sleep(3) GROUP BY k;
         CREATE UNIQUE INDEX ON public.slow_totals (k);",
    )
    .unwrap();
    let rows = relations(&mut c);
    c.batch_execute("SELECT upkeep.manage_matview('public.slow_totals', every => '1 hour')").unwrap();
    let pid = busy_worker(&cluster, "refresh_matview");
    cluster.kill_9(pid);
    drop(c);
    let mut c = cluster.connect("postgres");
    assert!(
        wait_for(Duration::from_secs(60), || log_of(&mut c, "refresh_matview").len() == 2
            && count(&mut c, HALF_MADE) == 0),
        "refresh log: {:?}\n{}",
        log_of(&mut c, "refresh_matview"),
        cluster.log()
    );
    let log = log_of(&mut c, "refresh_matview");
    assert!(log[0].starts_with(&format!("interrupted did not finish: process {pid} ended first")), "{log:?}");
    assert!(log[1].starts_with("ok "), "{log:?}");
    assert_eq!(count(&mut c, "SELECT sum(n)::int8 FROM public.slow_totals"), 1000);
    assert_eq!(relations(&mut c), rows, "no stray relations");

    // A concurrent reindex killed while its new index exists and waits for
    // a writer: the leftover is dropped first, then the index rebuilt.
    c.batch_execute(
        "CREATE TABLE public.events (id int NOT NULL, v text);
         INSERT INTO public.events SELECT g, 'x' FROM generate_series(1, 400000) g;
         CREATE INDEX events_id ON public.events (id);
         DELETE FROM public.events WHERE id % 4 <> 0;",
    )
    .unwrap();
    c.batch_execute("VACUUM ANALYZE public.events").unwrap();
    let rows = relations(&mut c);
    let mut writer = cluster.connect("postgres");
    writer.batch_execute("BEGIN; INSERT INTO public.events VALUES (0, 'uncommitted')").unwrap();
    c.batch_execute(
        "SELECT upkeep.manage_reindex(2.0, 0);
         SELECT upkeep.alter_job(job_id, every => '1 second') FROM upkeep.jobs WHERE kind = 'reindex';",
    )
    .unwrap();
    let pid = busy_worker(&cluster, "reindex");
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"), 1, "the new index exists");
    cluster.kill_9(pid);
    drop((c, writer));
    let mut c = cluster.connect("postgres");
    let rebuilt = "SELECT count(*) FROM upkeep.job_runs WHERE action = 'reindex' AND status = 'ok'";
    assert!(
        wait_for(Duration::from_secs(60), || count(&mut c, rebuilt) == 1 && count(&mut c, HALF_MADE) == 0),
        "reindex log: {:?}, drop log: {:?}",
        log_of(&mut c, "reindex"),
        log_of(&mut c, "drop_index")
    );
    let log = log_of(&mut c, "reindex");
    assert!(log[0].starts_with(&format!("interrupted did not finish: process {pid} ended first")), "{log:?}");
    let dropped = log_of(&mut c, "drop_index");
    assert!(dropped.len() == 1 && dropped[0].starts_with("ok left behind by an interrupted"), "{dropped:?}");
    assert_eq!(relations(&mut c), rows, "no stray relations");
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.events"), 100000, "the uncommitted row went with the crash");
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.events WHERE id = 4000"), 1);
}

#[test]
fn an_immediate_shutdown_mid_archive_loses_and_doubles_nothing_and_the_next_start_finishes() {
    let cluster = Cluster::start(
        "faults-immediate",
        &["upkeep.naptime = 1", "synchronous_commit = on", "upkeep.max_workers = 1"],
    );
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE public.big (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload text);
         INSERT INTO public.big SELECT g, now() - interval '400 days' + g * interval '30 seconds', md5(g::text)
           FROM generate_series(1, 1000000) g;
         ANALYZE public.big;",
    )
    .unwrap();
    let fingerprint = "SELECT count(*)::text || ' ' || count(DISTINCT id) || ' ' || sum(id) || ' ' \
                       || md5(string_agg(payload, '' ORDER BY id)) \
                         FROM (SELECT * FROM public.big UNION ALL SELECT * FROM public.big_archive) t";
    let before: String =
        c.query_one(&fingerprint.replace(" UNION ALL SELECT * FROM public.big_archive", ""), &[]).unwrap().get(0);
    c.batch_execute("SELECT upkeep.manage_archive('public.big', 'at', '30 days', batch_size => 5000)").unwrap();
    // Mid-run: some batches committed, more to go.
    assert!(
        wait_for(Duration::from_secs(60), || {
            count(&mut c, "SELECT count(*) FROM pg_class WHERE relname = 'big_archive'") == 1
                && count(&mut c, "SELECT count(*) FROM public.big_archive") >= 20000
        }),
        "the worker did not start moving rows"
    );
    drop(c);
    cluster.stop_immediate_and_start();
    let mut c = cluster.connect("postgres");
    let moved_before_stop = count(&mut c, "SELECT count(*) FROM public.big_archive");
    assert!(moved_before_stop < 900000, "the archive finished before the stop ({moved_before_stop} rows)");
    let old = "SELECT count(*) FROM public.big WHERE at < now() - interval '30 days'";
    assert!(wait_for(Duration::from_secs(180), || count(&mut c, old) == 0), "{} old rows left", count(&mut c, old));
    let after: String = c.query_one(fingerprint, &[]).unwrap().get(0);
    assert_eq!(after, before, "rows lost or doubled");
    assert!(wait_for(Duration::from_secs(10), || count(&mut c, HALF_MADE) == 0));
    let log = log_of(&mut c, "archive_rows");
    assert!(log.first().is_some_and(|l| l.starts_with("interrupted did not finish")), "{log:?}");
    assert!(log.last().is_some_and(|l| l.starts_with("ok ")), "{log:?}");
}

/// A 2 MB tmpfs for a tablespace that fills up; unmounted when dropped.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(cluster: &Cluster) -> TinyDisk {
        let dir = cluster.dir.join("tiny");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=2M", "tmpfs"]).arg(&dir).status();
        assert!(mounted.is_ok_and(|s| s.success()), "mounting a tmpfs needs root (CI runs as root)");
        assert!(Command::new("chown").arg("postgres:postgres").arg(&dir).status().unwrap().success());
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_or_a_failing_statement_in_one_job_does_not_stop_the_others() {
    let cluster = Cluster::start("faults-disk-full", &["upkeep.naptime = 1"]);
    let disk = TinyDisk::mount(&cluster);
    let mut c = cluster.connect("postgres");
    c.batch_execute(QUALIFIED).unwrap();
    let tables = ["full_events", "refused_events", "good_events"];
    for t in tables {
        c.batch_execute(&format!(
            "CREATE TABLE public.{t} (id int PRIMARY KEY, at timestamptz NOT NULL, payload text);
             INSERT INTO public.{t} SELECT g, now() - g * interval '1 minute', repeat('x', 200)
               FROM generate_series(1, 100000) g;"
        ))
        .unwrap();
    }
    c.batch_execute(&format!("CREATE TABLESPACE tiny LOCATION '{}'", disk.0.display())).unwrap();
    c.batch_execute(
        "CREATE TABLE public.full_events_archive (LIKE public.full_events INCLUDING ALL) TABLESPACE tiny;
         CREATE TABLE public.refused_events_archive (LIKE public.refused_events INCLUDING ALL);
         CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'the archive is closed for the audit'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON public.refused_events_archive FOR EACH ROW EXECUTE FUNCTION public.refuse();
         CREATE TABLE public.nav (d date NOT NULL, v int) PARTITION BY RANGE (d);
         CREATE MATERIALIZED VIEW public.good_count AS SELECT count(*) AS n FROM public.good_events;
         CREATE UNIQUE INDEX ON public.good_count (n);",
    )
    .unwrap();
    let mut fingerprints = Vec::new();
    for t in tables {
        fingerprints.push(count(&mut c, &format!("SELECT sum(id)::int8 FROM public.{t}")));
        c.batch_execute(&format!("SELECT upkeep.manage_archive('public.{t}', 'at', '1 day', batch_size => 5000)"))
            .unwrap();
    }
    c.batch_execute(
        "SELECT count(*) FROM upkeep.manage_partitions('public.nav', 'd', premake => 3);
         SELECT upkeep.manage_matview('public.good_count', every => '1 second');",
    )
    .unwrap();
    // The others are done while two jobs fail.
    // (0 until the worker has created the archive table.)
    let archived = |c: &mut Client, t: &str| -> i64 {
        c.query_one(&format!("SELECT count(*) FROM public.{t}_archive"), &[]).map_or(0, |r| r.get(0))
    };
    assert!(
        wait_for(Duration::from_secs(60), || archived(&mut c, "good_events") == 100000 - 1439
            && count(&mut c, "SELECT count(*) FROM upkeep.matview_state") == 1
            && count(&mut c, "SELECT n FROM public.good_count") == 1439
            && count(
                &mut c,
                "SELECT count(*) FROM upkeep.jobs WHERE last_status = 'failed' AND consecutive_failures >= 1"
            ) == 2),
        "jobs: {:?}",
        c.query("SELECT target || ' ' || coalesce(last_status, '-') FROM upkeep.jobs", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    assert!(count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav'::regclass") >= 4);
    let error = |c: &mut Client, t: &str| -> String {
        c.query_one(&format!("SELECT last_error FROM upkeep.jobs WHERE target = 'public.{t}'"), &[]).unwrap().get(0)
    };
    assert!(error(&mut c, "full_events").contains("No space left on device"), "{}", error(&mut c, "full_events"));
    assert!(error(&mut c, "refused_events").contains("the archive is closed for the audit"));
    // Failed jobs back off instead of retrying at every cycle.
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM upkeep.jobs WHERE last_status = 'failed' AND next_run > now() + interval '30 seconds'"),
        2
    );
    // What failed lost nothing: batches that fit stayed committed, the rest is where it was.
    for (t, sum) in tables.iter().zip(&fingerprints) {
        let both = format!(
            "SELECT sum(id)::int8 FROM (SELECT id FROM public.{t} UNION ALL SELECT id FROM public.{t}_archive) x"
        );
        assert_eq!(count(&mut c, &both), *sum, "{t}: rows lost or doubled");
    }
    assert_eq!(archived(&mut c, "refused_events"), 0);

    // Once the DBA has made room and opened the archive, a run finishes both.
    c.batch_execute(
        "ALTER TABLE public.full_events_archive SET TABLESPACE pg_default;
         DROP TRIGGER refuse ON public.refused_events_archive;",
    )
    .unwrap();
    for t in ["full_events", "refused_events"] {
        let status: Vec<String> = c
            .query(
                &format!(
                    "SELECT r.status FROM upkeep.jobs j, upkeep.run_job(j.job_id) r WHERE j.target = 'public.{t}'"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(status.iter().all(|s| s == "ok") && !status.is_empty(), "{t}: {status:?}");
        assert_eq!(archived(&mut c, t), 100000 - 1439, "{t}");
    }
    for (t, sum) in tables.iter().zip(&fingerprints) {
        let both = format!(
            "SELECT sum(id)::int8 FROM (SELECT id FROM public.{t} UNION ALL SELECT id FROM public.{t}_archive) x"
        );
        assert_eq!(count(&mut c, &both), *sum, "{t}: rows lost or doubled");
    }
}

#[test]
fn an_application_lock_makes_maintenance_give_up_in_time_record_it_and_succeed_later() {
    let cluster = Cluster::start("faults-lock", &["upkeep.naptime = 1", "upkeep.lock_timeout = '500ms'"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(QUALIFIED).unwrap();
    for t in ["held", "free"] {
        c.batch_execute(&format!(
            "CREATE TABLE public.{t} (id int PRIMARY KEY, at timestamptz NOT NULL);
             INSERT INTO public.{t} SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 1000) g;
             CREATE MATERIALIZED VIEW public.{t}_count AS SELECT count(*) AS n FROM public.{t};
             CREATE UNIQUE INDEX ON public.{t}_count (n);"
        ))
        .unwrap();
    }
    // The application holds locks that conflict with moving rows (as a
    // long CREATE INDEX would) and with a concurrent refresh (an ANALYZE in
    // a transaction left open); readers are not blocked by either.
    let mut app = cluster.connect("postgres");
    app.batch_execute("BEGIN; LOCK TABLE public.held IN SHARE ROW EXCLUSIVE MODE; ANALYZE public.held_count").unwrap();
    for t in ["held", "free"] {
        c.batch_execute(&format!(
            "SELECT upkeep.manage_archive('public.{t}', 'at', '10 days');
             SELECT upkeep.manage_matview('public.{t}_count', every => '1 second');"
        ))
        .unwrap();
    }
    // (The tracking trigger the view needs on public.held waits as well.)
    let gave_up = "SELECT count(*) FROM upkeep.jobs WHERE last_status = 'lock_timeout'";
    assert!(
        wait_for(Duration::from_secs(60), || count(&mut c, gave_up) == 2
            && count(&mut c, "SELECT count(*) FROM public.free") == 239
            && count(&mut c, "SELECT n FROM public.free_count") == 239),
        "runs: {:?}",
        c.query("SELECT concat_ws(' ', action, target, status, error) FROM upkeep.job_runs", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    // Each gave up after upkeep.lock_timeout (500 ms), not after waiting for the application.
    let longest: f64 = c
        .query_one(
            "SELECT extract(epoch FROM max(duration))::float8 FROM upkeep.job_runs WHERE status = 'lock_timeout'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((0.4..5.0).contains(&longest), "gave up after {longest} s");
    let errors: Vec<String> = c
        .query("SELECT DISTINCT error FROM upkeep.job_runs WHERE status = 'lock_timeout'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(errors.iter().all(|e| e.contains("lock")), "{errors:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.held"), 1000, "nothing moved under the lock");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM upkeep.jobs WHERE last_status = 'lock_timeout' AND next_run > now()"),
        2,
        "retried later, after a back-off"
    );

    // Once the application commits, the next run succeeds.
    app.batch_execute("COMMIT").unwrap();
    // The archive first, then the view (one call each, in that order).
    let run = |c: &mut Client, target: &str| -> Vec<String> {
        c.query(
            "SELECT concat_ws(' ', r.action, r.status, r.detail, r.error) \
               FROM upkeep.jobs j, upkeep.run_job(j.job_id) r WHERE j.target = $1",
            &[&target],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let archived = run(&mut c, "public.held");
    assert!(archived.len() == 1 && archived[0].starts_with("archive_rows ok"), "{archived:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.held"), 239);
    // A worker that claimed the view's job a moment ago makes a run skip it
    // ("another session is refreshing it right now"); the next one refreshes.
    let mut refreshed = Vec::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            refreshed = run(&mut c, "public.held_count");
            refreshed.iter().any(|s| s.starts_with("refresh_matview ok"))
        }),
        "{refreshed:?}"
    );
    assert_eq!(count(&mut c, "SELECT n FROM public.held_count"), 239);
}
