//! Archive moves by the worker pool on real clusters: DETACH PARTITION
//! CONCURRENTLY at top level, `upkeep.max_workers`, and moves interrupted
//! by kill -9 finished on the next run.

use postgres::Client;
use std::time::{Duration, Instant};
use upkeep_cluster_tests::{count, wait_for, Cluster};

/// A monthly table without a DEFAULT partition (PostgreSQL allows DETACH
/// CONCURRENTLY only then), 24 months back, 100 rows a month; managed
/// without retention, so nothing leaves yet.
fn monthly_table(c: &mut Client, name: &str) {
    c.batch_execute(&format!(
        "CREATE TABLE public.{name} (id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         SELECT count(*) FROM upkeep.manage_partitions('public.{name}', 'at', premake => 2,
                start_at => date_trunc('month', now()) - interval '24 months');
         INSERT INTO public.{name}
         SELECT g, (date_trunc('month', now()) - interval '24 months' + make_interval(days => g % 720))::date
           FROM generate_series(1, 2400) g;"
    ))
    .unwrap();
}

/// Rows and an order-independent hash of a table and its archive together.
fn content(c: &mut Client, name: &str) -> (i64, String) {
    let archive: Option<String> =
        c.query_one(&format!("SELECT to_regclass('public.{name}_archive')::text"), &[]).unwrap().get(0);
    let archived = archive.map(|a| format!(" UNION ALL SELECT * FROM {a}")).unwrap_or_default();
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) \
                   FROM (SELECT * FROM public.{name}{archived}) t"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Partitions old enough to leave under 12 months' retention, counted
/// now, of a table made by `monthly_table` from `start`: 12, and one more
/// for a test that runs across the end of a month.
fn due(c: &mut Client, start: &str) -> i64 {
    count(
        c,
        &format!(
            "SELECT ((extract(year FROM m) - extract(year FROM '{start}'::date)) * 12 \
                     + extract(month FROM m) - extract(month FROM '{start}'::date))::int8 \
               FROM (SELECT date_trunc('month', now()) - interval '12 months' AS m) x"
        ),
    )
}

/// The first month of a table `monthly_table` makes now.
fn first_month(c: &mut Client) -> String {
    c.query_one("SELECT (date_trunc('month', now()) - interval '24 months')::date::text", &[]).unwrap().get(0)
}

fn archived(c: &mut Client, name: &str) -> i64 {
    count(
        c,
        &format!(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass('public.{name}_archive') \
               AND NOT inhdetachpending"
        ),
    )
}

const WORKERS: &str = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker'";

#[test]
fn workers_detach_concurrently_readers_and_writers_carry_on_and_the_pool_is_bounded() {
    let cluster = Cluster::start(
        "archive-concurrently",
        &["upkeep.naptime = 1", "upkeep.max_workers = 1", "upkeep.lock_timeout = '60s'"],
    );
    let mut c = cluster.connect("postgres");
    let start = first_month(&mut c);
    monthly_table(&mut c, "events");
    monthly_table(&mut c, "orders");
    assert_eq!(first_month(&mut c), start, "the month turned while the tables were made; run it again");
    let before = (content(&mut c, "events"), content(&mut c, "orders"));

    // An application transaction that has read both tables: DETACH
    // CONCURRENTLY must wait for it before it can finish.
    let mut reader = cluster.connect("postgres");
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.events; SELECT count(*) FROM public.orders").unwrap();
    c.batch_execute("UPDATE upkeep.partition_policies SET retention = '12 months'").unwrap();

    // A worker starts on one job, detaches its oldest partition
    // concurrently, and waits for the reader with the partition pending.
    let pending = "SELECT count(*) FROM pg_inherits WHERE inhdetachpending";
    assert!(
        wait_for(Duration::from_secs(30), || count(&mut c, pending) == 1),
        "no concurrent detach began; log:\n{}",
        cluster.log()
    );
    let (app, waiting): (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT application_name, wait_event_type FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(app.starts_with("pg_upkeep worker: job "), "{app}");
    assert!(app.contains("public."), "names the table: {app}");
    assert_eq!(waiting.as_deref(), Some("Lock"));

    // Meanwhile readers and writers of the table are not blocked, and the
    // scheduler still creates partitions for a table registered now.
    let mut app_session = cluster.connect("postgres");
    app_session.batch_execute("SET statement_timeout = '5s'").unwrap();
    let t = Instant::now();
    app_session
        .batch_execute("INSERT INTO public.events VALUES (-1, current_date); DELETE FROM public.events WHERE id = -1")
        .unwrap();
    count(&mut app_session, "SELECT count(*) FROM public.events");
    count(&mut app_session, "SELECT count(*) FROM public.orders");
    assert!(t.elapsed() < Duration::from_secs(2), "application waited {:?}", t.elapsed());
    c.batch_execute(
        "CREATE TABLE public.fresh (at date NOT NULL) PARTITION BY RANGE (at);
         INSERT INTO upkeep.partition_policies (parent, control, premake) VALUES ('public.fresh', 'at', 3)",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || {
            count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.fresh'::regclass") == 4
        }),
        "the scheduler waited behind the archive worker"
    );

    // The pool holds one worker however long it waits (upkeep.max_workers = 1).
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(count(&mut c, WORKERS));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 1);
    assert_eq!(count(&mut c, pending), 1);

    // pg_terminate_backend stops the waiting worker within a second; the
    // pending detach is finished by the next worker.
    let pid: i32 = c.query_one(&WORKERS.replace("count(*)", "pid"), &[]).unwrap().get(0);
    let t = Instant::now();
    c.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    let alive = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    assert!(wait_for(Duration::from_secs(5), || count(&mut c, &alive) == 0));
    assert!(t.elapsed() < Duration::from_secs(1), "worker still there after {:?}", t.elapsed());

    // Once the reader is gone, everything old leaves, table by table.
    // From here on a sampler checks, many times while the moves run, that
    // every partition is in exactly one place: attached to the table or
    // its archive (a pending detach still counts as attached), or detached
    // with the worker's record of where it is going.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = stop.clone();
    let mut sampler = cluster.connect("postgres");
    let samples = std::thread::spawn(move || {
        let (mut taken, mut misplaced) = (0, Vec::new());
        while !sampling.load(std::sync::atomic::Ordering::Relaxed) {
            let row = sampler
                .query_one(
                    "SELECT count(*), string_agg(c.relname, ', ') FILTER (WHERE places <> 1) FROM pg_class c, LATERAL \
                       (SELECT (SELECT count(*) FROM pg_inherits i WHERE i.inhrelid = c.oid) \
                             + (SELECT count(*) FROM upkeep.unfinished_actions u \
                                 WHERE u.target = c.oid AND NOT c.relispartition) AS places) p \
                      WHERE c.relkind = 'r' AND (c.relname LIKE 'events\\_p%' OR c.relname LIKE 'orders\\_p%')",
                    &[],
                )
                .unwrap();
            taken += 1;
            if let Some(names) = row.get::<_, Option<String>>(1) {
                misplaced.push(names);
            }
        }
        (taken, misplaced)
    });
    reader.batch_execute("COMMIT").unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let due = due(&mut c, &start);
            archived(&mut c, "events") == due && archived(&mut c, "orders") == due
        }),
        "archived {} and {} of {}; log:\n{}",
        archived(&mut c, "events"),
        archived(&mut c, "orders"),
        due(&mut c, &start),
        cluster.log()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (taken, misplaced) = samples.join().unwrap();
    assert!(taken > 10, "only {taken} samples");
    assert!(misplaced.is_empty(), "partitions not in exactly one place: {misplaced:?}");
    println!("{taken} samples during the moves: every partition in exactly one place");
    assert_eq!((content(&mut c, "events"), content(&mut c, "orders")), before, "rows lost or duplicated");
    let moves: Vec<(String, String)> = c
        .query(
            "SELECT status, sql FROM upkeep.job_runs WHERE action = 'archive_partition' AND status <> 'interrupted'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(moves.len() as i64, 2 * due(&mut c, &start), "{moves:?}");
    let interrupted =
        "SELECT count(*) FROM upkeep.job_runs WHERE action = 'archive_partition' AND status = 'interrupted'";
    assert_eq!(count(&mut c, interrupted), 1, "the terminated worker's move");
    for (status, sql) in &moves {
        assert_eq!(status, "ok");
        assert!(sql.contains(" CONCURRENTLY;") || sql.contains(" FINALIZE;"), "{sql}");
    }
    assert_eq!(moves.iter().filter(|(_, sql)| sql.contains(" FINALIZE;")).count(), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.unfinished_actions"), 0);
    assert_eq!(count(&mut c, pending), 0);
    assert!(wait_for(Duration::from_secs(10), || count(&mut c, WORKERS) == 0), "workers exit when done");
}

#[test]
fn a_move_interrupted_by_kill_9_or_a_cancel_is_finished_on_the_next_run() {
    let cluster = Cluster::start(
        "archive-kill9",
        // Commits must survive the crash (the harness turns synchronous_commit off for speed).
        &["upkeep.naptime = 1", "restart_after_crash = on", "synchronous_commit = on", "upkeep.lock_timeout = '60s'"],
    );
    let mut c = cluster.connect("postgres");
    let start = first_month(&mut c);
    monthly_table(&mut c, "events");
    let before = content(&mut c, "events");
    let mut reader = cluster.connect("postgres");
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.events").unwrap();
    c.batch_execute("UPDATE upkeep.partition_policies SET retention = '12 months'").unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending") == 1
        }),
        "no concurrent detach began"
    );
    // The worker recorded what is left to do before it began.
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.unfinished_actions"), 1);
    let pid: i32 =
        c.query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker'", &[]).unwrap().get(0);
    // Killed while it waits for the reader, between the two transactions of
    // DETACH CONCURRENTLY (the crash restart ends the reader too).
    cluster.kill_9(pid);
    drop(reader);
    drop(c);

    // The next runs finalize the pending detach, attach the partition to the
    // archive as recorded, and archive the rest.
    let mut c = cluster.connect("postgres");
    assert!(
        wait_for(Duration::from_secs(60), || archived(&mut c, "events") == due(&mut c, &start)),
        "archived {} of {}; log:\n{}",
        archived(&mut c, "events"),
        due(&mut c, &start),
        cluster.log()
    );
    assert_eq!(content(&mut c, "events"), before, "rows lost or duplicated");
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.unfinished_actions"), 0);
    let finished = count(
        &mut c,
        "SELECT count(*) FROM upkeep.job_runs WHERE status = 'ok' AND detail LIKE '%finishing an interrupted move%' \
           AND sql LIKE '%FINALIZE;%'",
    );
    let runs: Vec<String> = c
        .query("SELECT concat_ws(' | ', started_at, target, status, detail, error, sql) FROM upkeep.job_runs WHERE action <> 'create_partition' ORDER BY run_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(finished, 1, "run log:\n{}", runs.join("\n"));
    // No stray tables: each month is in the table or in its archive.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'events_p%' AND relkind = 'r' AND NOT relispartition"
        ),
        0
    );

    // A DETACH CONCURRENTLY a DBA started and cancelled leaves a partition
    // pending; SQL maintenance (the plain forms) finalizes it and moves it on.
    // (The job is paused so that only the explicit call below acts.)
    c.batch_execute("UPDATE upkeep.partition_policies SET retention = '6 months', enabled = false").unwrap();
    let mut reader = cluster.connect("postgres");
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.events").unwrap();
    let oldest: String = c
        .query_one(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = 'public.events'::regclass ORDER BY c.relname LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute("SET statement_timeout = '1s'").unwrap();
    let cancelled =
        c.batch_execute(&format!("ALTER TABLE public.events DETACH PARTITION public.{oldest} CONCURRENTLY"));
    let (message, _) = upkeep_cluster_tests::error_of(cancelled);
    assert!(message.contains("statement timeout"), "the detach waited for the reader and was cancelled: {message}");
    c.batch_execute("RESET statement_timeout").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending"), 1);
    reader.batch_execute("COMMIT").unwrap();
    let rows = c
        .query(
            "SELECT r.action, r.status, r.sql FROM upkeep.partition_policies p, upkeep.run_job(p.job_id) r \
              WHERE r.target LIKE '%' || $1",
            &[&oldest],
        )
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (status, sql): (String, String) = (rows[0].get(1), rows[0].get(2));
    assert_eq!(status, "ok");
    assert!(sql.contains("FINALIZE;") && sql.contains("ATTACH PARTITION"), "{sql}");
    assert!(!sql.contains("CONCURRENTLY"), "SQL callers use the plain forms: {sql}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhdetachpending"), 0);
    assert_eq!(content(&mut c, "events"), before, "rows lost or duplicated");
}
