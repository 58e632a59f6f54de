//! Row archiving of plain tables on real clusters: bad input, rows the
//! application holds, the naive two-statement approach against ours under
//! a concurrent backdated insert, and kill -9 during a million-row archive.

use postgres::Client;
use std::time::{Duration, Instant};
use upkeep_cluster_tests::{assert_refused, count, error_of, wait_for, Cluster};

/// Rows of a table and its archive together: count, distinct ids, and an
/// order-independent hash.
fn content(c: &mut Client, table: &str, archive: &str) -> (i64, i64, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT id), md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) \
                   FROM (SELECT * FROM {table} UNION ALL SELECT * FROM {archive}) t"
            ),
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

const EVENTS: &str = "
CREATE TABLE public.events (id bigint PRIMARY KEY, at timestamptz, payload text);
INSERT INTO public.events SELECT g, now() - g * interval '1 hour', 'e' || g FROM generate_series(1, 5000) g;
CREATE TABLE public.other_shape (id bigint, at timestamptz);
CREATE TABLE public.parted (at date) PARTITION BY RANGE (at);
CREATE TABLE public.parent_rows (id int PRIMARY KEY, at date);
CREATE TABLE public.child_rows (p int REFERENCES public.parent_rows ON DELETE CASCADE);
CREATE VIEW public.a_view AS SELECT * FROM public.events;
CREATE ROLE someone_else LOGIN;
GRANT USAGE ON SCHEMA upkeep TO someone_else;
";

/// Everything a bad call could have changed: policies, run log, relations, rows.
fn snapshot(c: &mut Client) -> String {
    c.query_one(
        "SELECT (SELECT coalesce(md5(string_agg(p::text, ',' ORDER BY job_id)), '') FROM upkeep.archive_policies p) || '/' || \
                (SELECT count(*) FROM upkeep.job_runs) || '/' || \
                (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) || '/' || \
                (SELECT count(*) FROM public.events)",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn bad_input_gets_an_error_with_a_hint_and_changes_nothing() {
    let cluster = Cluster::start("archive-bad-input", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(EVENTS).unwrap();
    let cases: &[(&str, &str)] = &[
        ("SELECT upkeep.manage_archive('public.nope', 'at', '30 days')", "public.nope"),
        ("SELECT upkeep.manage_archive(NULL::regclass, 'at', '30 days')", "source must not be NULL"),
        (
            "SELECT upkeep.manage_archive('public.events', 'nope', '30 days')",
            "column \"nope\" of public.events does not exist",
        ),
        ("SELECT upkeep.manage_archive('public.events', 'payload', '30 days')", "is text, not a date or time"),
        ("SELECT upkeep.manage_archive('public.events', 'id', '30 days')", "is bigint, not a date or time"),
        ("SELECT upkeep.manage_archive('public.events', 'at', '-30 days')", "positive interval"),
        ("SELECT upkeep.manage_archive('public.events', 'at', '0 days')", "positive interval"),
        ("SELECT upkeep.manage_archive('public.events', 'at', NULL)", "positive interval"),
        ("SELECT upkeep.manage_archive('public.events', NULL, '1 day')", "time_column for public.events"),
        ("SELECT upkeep.manage_archive('public.events', 'at', '1 day', batch_size => 0)", "batch_size 0"),
        ("SELECT upkeep.manage_archive('public.events', 'at', '1 day', archive_table => 'events')", "its own archive"),
        (
            "SELECT upkeep.manage_archive('public.events', 'at', '1 day', archive_table => 'public.events')",
            "its own archive",
        ),
        (
            "SELECT upkeep.manage_archive('public.events', 'at', '1 day', archive_table => 'other_shape')",
            "lacks payload text",
        ),
        ("SELECT upkeep.manage_archive('public.events', 'at', '1 day', archive_table => 'a_view')", "is not a table"),
        ("SELECT upkeep.manage_archive('public.parted', 'at', '1 day')", "public.parted is partitioned"),
        ("SELECT upkeep.manage_archive('public.a_view', 'at', '1 day')", "public.a_view is not a table"),
        ("SELECT upkeep.manage_archive('public.parent_rows', 'at', '1 day')", "ON DELETE CASCADE"),
        ("SELECT * FROM upkeep.archive('public.events')", "public.events has no archive policy"),
        ("SELECT * FROM upkeep.archive('public.nope')", "public.nope"),
        ("SELECT upkeep.unmanage_archive('public.events')", "public.events has no archive policy"),
        ("SELECT upkeep.unmanage_archive('public.nope')", "public.nope"),
    ];
    let before = assert_refused(&mut c, cases, snapshot);
    // A caller who does not own the table.
    let mut other = cluster.connect_as("someone_else", "postgres");
    let (message, hint) = error_of(other.batch_execute("SELECT upkeep.manage_archive('public.events', 'at', '1 day')"));
    assert!(message.contains("must be owner of table public.events"), "{message}");
    assert!(hint.is_some());
    assert_eq!(snapshot(&mut c), before);
    println!("{} bad-input cases checked", cases.len() + 1);
}

#[test]
fn rows_the_application_holds_are_skipped_not_waited_for_and_taken_later() {
    let cluster = Cluster::start("archive-skip-locked", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(EVENTS).unwrap();
    c.batch_execute("SELECT upkeep.manage_archive('public.events', 'at', '1 day', batch_size => 100)").unwrap();
    let before = content(&mut c, "public.events", "public.events WHERE false");
    let mut app = cluster.connect("postgres");
    app.batch_execute("BEGIN; SELECT * FROM public.events WHERE id IN (4000, 4001) FOR UPDATE").unwrap();
    let old = "SELECT count(*) FROM public.events WHERE at < now() - interval '1 day'";
    let old_before = count(&mut c, old);
    let t = Instant::now();
    let moved = count(&mut c, "SELECT sum(rows_moved)::int8 FROM upkeep.archive('public.events')");
    assert!(t.elapsed() < Duration::from_secs(2), "waited {:?} for the application", t.elapsed());
    assert_eq!(count(&mut c, old), 2, "only the two held rows stay");
    assert_eq!(moved, old_before - 2);
    let status: String = c.query_one("SELECT status FROM upkeep.archive_status", &[]).unwrap().get(0);
    assert_eq!(status, "behind");
    app.batch_execute("COMMIT").unwrap();
    assert_eq!(count(&mut c, "SELECT sum(rows_moved)::int8 FROM upkeep.archive('public.events')"), 2);
    assert_eq!(count(&mut c, old), 0);
    assert_eq!(content(&mut c, "public.events", "public.events_archive"), before);
}

#[test]
fn the_naive_two_statement_archive_loses_a_backdated_insert_and_ours_does_not() {
    let cluster = Cluster::start("archive-naive", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    let setup = "CREATE TABLE public.{t} (id bigint PRIMARY KEY, at timestamptz NOT NULL, v int);
                 INSERT INTO public.{t} SELECT g, now() - g * interval '1 hour', g FROM generate_series(1, 20000) g;";
    c.batch_execute(&setup.replace("{t}", "naive")).unwrap();
    c.batch_execute(&setup.replace("{t}", "ours")).unwrap();
    c.batch_execute("CREATE TABLE public.naive_archive (LIKE public.naive)").unwrap();
    let mut writer = cluster.connect("postgres");
    let backdated = "INSERT INTO public.{t} VALUES (1000000, now() - interval '1 year', -1)";

    // As many guides suggest: copy, then delete, in two statements.
    let mut archiver = cluster.connect("postgres");
    archiver
        .batch_execute(
            "BEGIN; INSERT INTO public.naive_archive SELECT * FROM public.naive WHERE at < now() - interval '30 days'",
        )
        .unwrap();
    writer.batch_execute(&backdated.replace("{t}", "naive")).unwrap(); // commits in between
    archiver.batch_execute("DELETE FROM public.naive WHERE at < now() - interval '30 days'; COMMIT").unwrap();
    let naive_total =
        count(&mut c, "SELECT (SELECT count(*) FROM public.naive) + (SELECT count(*) FROM public.naive_archive)");
    assert_eq!(naive_total, 20000, "the naive approach lost the backdated row (20001 rows were written)");

    // Ours, in the same interleaving: the insert commits while the archive
    // transaction is open. Only rows the DELETE returned are inserted.
    c.batch_execute("SELECT upkeep.manage_archive('public.ours', 'at', '30 days', batch_size => 1000)").unwrap();
    archiver.batch_execute("BEGIN; SELECT * FROM upkeep.archive('public.ours')").unwrap();
    writer.batch_execute(&backdated.replace("{t}", "ours")).unwrap();
    archiver.batch_execute("COMMIT").unwrap();
    let total = "SELECT (SELECT count(*) FROM public.ours) + (SELECT count(*) FROM public.ours_archive)";
    assert_eq!(count(&mut c, total), 20001);
    // And while a writer keeps inserting backdated rows during batches.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let mut w = cluster.connect("postgres");
    let inserter = std::thread::spawn(move || {
        let mut n = 0i64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            w.execute("INSERT INTO public.ours VALUES (2000000 + $1::int8, now() - interval '2 years', -2)", &[&n])
                .unwrap();
            n += 1;
        }
        n
    });
    c.batch_execute(
        "INSERT INTO public.ours SELECT 3000000 + g, now() - interval '1 year' - g * interval '1 minute', g \
           FROM generate_series(1, 50000) g",
    )
    .unwrap();
    for _ in 0..5 {
        c.batch_execute("SELECT * FROM upkeep.archive('public.ours')").unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let inserted = inserter.join().unwrap();
    c.batch_execute("SELECT * FROM upkeep.archive('public.ours')").unwrap();
    assert!(inserted > 0);
    assert_eq!(count(&mut c, total), 20001 + 50000 + inserted, "{inserted} backdated rows during the run");
    let distinct =
        "SELECT count(DISTINCT id) FROM (SELECT id FROM public.ours UNION ALL SELECT id FROM public.ours_archive) t";
    assert_eq!(count(&mut c, distinct), 20001 + 50000 + inserted, "a row is in both tables");
}

#[test]
fn kill_9_at_random_points_of_a_million_row_archive_loses_and_doubles_nothing() {
    let cluster = Cluster::start(
        "archive-kill9-rows",
        // Commits must survive the crash (the harness turns synchronous_commit off for speed).
        &["upkeep.naptime = 1", "restart_after_crash = on", "synchronous_commit = on", "upkeep.max_workers = 1"],
    );
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE public.big (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload text);
         INSERT INTO public.big SELECT g, now() - interval '400 days' + g * interval '30 seconds', md5(g::text)
           FROM generate_series(1, 1000000) g;
         CREATE INDEX ON public.big (at);
         ANALYZE public.big;",
    )
    .unwrap();
    let before = content(&mut c, "public.big", "public.big WHERE false");
    let live_expected = count(&mut c, "SELECT count(*) FROM public.big WHERE at >= now() - interval '30 days'");
    c.batch_execute("SELECT upkeep.manage_archive('public.big', 'at', '30 days', batch_size => 2000)").unwrap();
    drop(c);

    let mut kills = 0;
    let mut seed = std::process::id() as u64;
    for _ in 0..5 {
        // A random moment while a worker is moving rows.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let pause = Duration::from_millis(100 + (seed >> 33) % 800);
        let mut c = cluster.connect("postgres");
        let found = wait_for(Duration::from_secs(30), || {
            count(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker'") > 0
        });
        if !found {
            break; // finished before it could be killed again
        }
        std::thread::sleep(pause);
        let pid: Option<i32> = c
            .query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_upkeep worker'", &[])
            .unwrap()
            .map(|r| r.get(0));
        drop(c);
        let Some(pid) = pid else { break };
        cluster.kill_9(pid);
        kills += 1;
    }
    assert!(kills >= 3, "the worker was killed only {kills} time(s)");
    let mut c = cluster.connect("postgres");
    let old = "SELECT count(*) FROM public.big WHERE at < now() - interval '30 days'";
    assert!(wait_for(Duration::from_secs(180), || count(&mut c, old) == 0), "{} old rows left", count(&mut c, old));
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.big"), live_expected);
    let after = content(&mut c, "public.big", "public.big_archive");
    assert_eq!(after.0, after.1, "a row is in both tables");
    assert_eq!(after, before, "rows lost or changed");
    // The run log tells the kills apart from the runs that finished.
    let interrupted =
        count(&mut c, "SELECT count(*) FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'interrupted'");
    assert!((1..=kills).contains(&interrupted), "{interrupted} interrupted runs recorded for {kills} kills");
    let running = "SELECT count(*) FROM upkeep.job_runs WHERE status = 'running'";
    assert!(wait_for(Duration::from_secs(10), || count(&mut c, running) == 0), "a running row was left");
    println!("killed the archiving worker {kills} times; {} rows, nothing lost or doubled", after.0);
}

#[test]
fn a_failing_batch_keeps_what_earlier_batches_committed_and_says_so() {
    let cluster = Cluster::start("archive-failing-batch", &["upkeep.naptime = 1"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE public.t (id bigint PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO public.t SELECT g, now() - interval '1 year' + g * interval '1 minute' FROM generate_series(1, 1000) g;
         CREATE TABLE public.t_archive (LIKE public.t INCLUDING ALL);
         CREATE FUNCTION public.refuse_450() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.id = 450 THEN RAISE EXCEPTION 'the archive refuses row 450'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON public.t_archive FOR EACH ROW EXECUTE FUNCTION public.refuse_450();
         SELECT upkeep.manage_archive('public.t', 'at', '1 day', batch_size => 100);",
    )
    .unwrap();
    let before = content(&mut c, "public.t", "public.t WHERE false");
    // The action's record and the job's state are written one after the
    // other (two transactions): wait for both.
    assert!(
        wait_for(Duration::from_secs(30), || count(
            &mut c,
            "SELECT count(*) FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'failed'"
        ) == 1
            && count(&mut c, "SELECT count(*) FROM upkeep.jobs WHERE kind = 'archive' AND last_status = 'failed'")
                == 1),
        "the worker's run did not fail; log:\n{}",
        cluster.log()
    );
    let error: String = c
        .query_one("SELECT error FROM upkeep.job_runs WHERE action = 'archive_rows' AND status = 'failed'", &[])
        .unwrap()
        .get(0);
    assert!(error.contains("the archive refuses row 450"), "{error}");
    assert!(error.contains("(400 rows archived by the batches before, committed)"), "{error}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.t_archive"), 400);
    assert_eq!(
        count(
            &mut c,
            "SELECT rows_moved FROM upkeep.job_state WHERE job_id = (SELECT job_id FROM upkeep.archive_policies)"
        ),
        400
    );
    assert_eq!(count(&mut c, "SELECT consecutive_failures::int8 FROM upkeep.jobs WHERE kind = 'archive'"), 1);
    assert_eq!(content(&mut c, "public.t", "public.t_archive"), before);
    // Fixed, the job moves the rest.
    c.batch_execute("DROP TRIGGER refuse ON public.t_archive").unwrap();
    assert_eq!(count(&mut c, "SELECT sum(rows_moved)::int8 FROM upkeep.archive('public.t')"), 600);
    assert_eq!(content(&mut c, "public.t", "public.t_archive"), before);
}
