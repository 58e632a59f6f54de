//! Partition management seen from client sessions on a real cluster with
//! pg_upkeep preloaded: bad input, locks held by the application, and
//! concurrent runs.

use std::thread;
use std::time::{Duration, Instant};
use upkeep_cluster_tests::{assert_refused, error_of, Cluster};

const SCHEMA: &str = r#"
CREATE TABLE public.nav_history (fund_id int NOT NULL, nav_date date NOT NULL, nav numeric(12,4),
                                 PRIMARY KEY (fund_id, nav_date)) PARTITION BY RANGE (nav_date);
CREATE TABLE public.risk_assessments (id bigint, created_at timestamp NOT NULL) PARTITION BY RANGE (created_at);
CREATE TABLE public.plain (d date);
CREATE TABLE public.by_list (d date NOT NULL) PARTITION BY LIST (d);
CREATE TABLE public.by_hash (d date NOT NULL) PARTITION BY HASH (d);
CREATE TABLE public.by_int (n int NOT NULL) PARTITION BY RANGE (n);
CREATE TABLE public.by_expr (d date NOT NULL) PARTITION BY RANGE ((d + 1));
CREATE TABLE public.by_two (d date NOT NULL, e date NOT NULL) PARTITION BY RANGE (d, e);
CREATE ROLE someone_else LOGIN;
GRANT USAGE ON SCHEMA upkeep TO someone_else;
"#;

/// Everything a bad call could have changed: policies, run log, relations.
fn snapshot(c: &mut postgres::Client) -> String {
    c.query_one(
        "SELECT (SELECT coalesce(md5(string_agg(p::text, ',' ORDER BY job_id)), '') FROM upkeep.partition_policies p) || '/' || \
                (SELECT count(*) FROM upkeep.job_runs) || '/' || \
                (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn bad_input_gets_an_error_naming_the_object_with_a_hint_and_changes_nothing() {
    let cluster = Cluster::start("bad-input", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    c.batch_execute("SELECT upkeep.manage_partitions('public.nav_history', 'nav_date')").unwrap();

    // (call, text the message must contain)
    let cases: &[(&str, &str)] = &[
        ("SELECT upkeep.manage_partitions('public.nope', 'd')", "public.nope"),
        ("SELECT upkeep.manage_partitions('public.plain', 'd')", "public.plain is not partitioned"),
        ("SELECT upkeep.manage_partitions('public.by_list', 'd')", "public.by_list is partitioned by LIST"),
        ("SELECT upkeep.manage_partitions('public.by_hash', 'd')", "public.by_hash is partitioned by HASH"),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'no_such')",
            "\"no_such\" does not exist in table public.nav_history",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'fund_id')",
            "public.nav_history is not partitioned by exactly the column \"fund_id\"",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav')",
            "public.nav_history is not partitioned by exactly the column \"nav\"",
        ),
        (
            "SELECT upkeep.manage_partitions('public.by_int', 'n')",
            "column \"n\" of table public.by_int has type integer",
        ),
        ("SELECT upkeep.manage_partitions('public.by_expr', 'd')", "public.by_expr is not partitioned by exactly"),
        ("SELECT upkeep.manage_partitions('public.by_two', 'd')", "public.by_two is not partitioned by exactly"),
        ("SELECT upkeep.manage_partitions('public.nav_history', NULL)", "control column for table public.nav_history"),
        ("SELECT upkeep.manage_partitions(NULL::regclass, 'd')", "parent must not be NULL"),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', 'fortnight')",
            "unknown granularity \"fortnight\" for table public.nav_history",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', time_zone => 'Mars/Olympus')",
            "unknown time zone \"Mars/Olympus\" for table public.nav_history",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => -1)",
            "premake -1 for table public.nav_history",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', retention => '-1 month')",
            "retention -1 mons for table public.nav_history",
        ),
        (
            "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', archive => 'shred')",
            "unknown archive mode \"shred\" for table public.nav_history",
        ),
        (
            "SELECT upkeep.unmanage_partitions('public.risk_assessments')",
            "public.risk_assessments has no partition policy",
        ),
        ("SELECT upkeep.unmanage_partitions('public.nope')", "public.nope"),
        (
            "SELECT * FROM upkeep.create_partitions('public.risk_assessments')",
            "public.risk_assessments has no partition policy",
        ),
        ("SELECT * FROM upkeep.create_partitions('public.nope')", "public.nope"),
        ("SELECT upkeep.alter_job(424242, every => '1 hour')", "job 424242 does not exist"),
        ("SELECT upkeep.alter_job(1, every => '-5 minutes')", "every -00:05:00 for job 1 is not a positive interval"),
        ("SELECT upkeep.pause_job(NULL)", "job_id must not be NULL"),
        ("SELECT upkeep.resume_job(424242)", "job 424242 does not exist"),
        ("SELECT * FROM upkeep.run_job(424242)", "job 424242 does not exist"),
    ];
    let before = assert_refused(&mut c, cases, snapshot);

    // A caller who does not own the table.
    let mut other = cluster.connect_as("someone_else", "postgres");
    let (message, hint) =
        error_of(other.batch_execute("SELECT upkeep.manage_partitions('public.risk_assessments', 'created_at')"));
    assert!(message.contains("must be owner of table public.risk_assessments"), "{message}");
    assert!(hint.is_some());
    assert_eq!(snapshot(&mut c), before);
    println!("{} bad-input cases checked", cases.len() + 1);
}

#[test]
fn a_lock_held_by_the_application_times_out_is_recorded_backs_off_and_is_retried_while_others_proceed() {
    let cluster = Cluster::start("lock-timeout", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    c.batch_execute(
        "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0); \
         SELECT upkeep.manage_partitions('public.risk_assessments', 'created_at', premake => 0); \
         UPDATE upkeep.partition_policies SET premake = 2;",
    )
    .unwrap();

    // The application holds a lock that conflicts with ATTACH on one parent.
    let mut app = cluster.connect("postgres");
    app.batch_execute("BEGIN; LOCK TABLE public.nav_history IN SHARE ROW EXCLUSIVE MODE").unwrap();

    c.batch_execute("SET upkeep.lock_timeout = '300ms'").unwrap();
    let started = Instant::now();
    let rows = c.query("SELECT target, status, error FROM upkeep.run_maintenance()", &[]).unwrap();
    let waited = started.elapsed();
    let status = |t: &str| {
        rows.iter().filter(|r| r.get::<_, String>(0).starts_with(t)).map(|r| r.get::<_, String>(1)).collect::<Vec<_>>()
    };
    assert_eq!(status("public.nav_history"), ["lock_timeout", "lock_timeout"], "{rows:?}");
    assert_eq!(status("public.risk_assessments"), ["ok", "ok"]);
    assert!(waited < Duration::from_secs(5), "gave up in {waited:?}");
    let recorded: i64 = c
        .query_one(
            "SELECT count(*) FROM upkeep.job_runs WHERE status = 'lock_timeout' AND target LIKE 'public.nav_history%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(recorded, 2);
    // Nothing half-made is left behind by the timed-out actions.
    let strays: i64 = c
        .query_one("SELECT count(*) FROM pg_class WHERE relname LIKE 'nav\\_history\\_p2%' AND relkind = 'r' AND NOT relispartition", &[])
        .unwrap()
        .get(0);
    assert_eq!(strays, 0);

    // The job backs off (about a minute) instead of retrying at once.
    let (failures, later): (i32, bool) = {
        let r = c
            .query_one(
                "SELECT consecutive_failures, next_run > now() FROM upkeep.jobs WHERE target = 'nav_history'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((failures, later), (1, true));
    app.batch_execute("COMMIT").unwrap();
    assert!(c.query("SELECT * FROM upkeep.run_maintenance()", &[]).unwrap().is_empty(), "still backing off");
    // Naming the table runs it now, and the lock is gone.
    let rows = c.query("SELECT status FROM upkeep.create_partitions('public.nav_history')", &[]).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.get::<_, String>(0) == "ok"));
    let health: String =
        c.query_one("SELECT string_agg(status, ',') FROM upkeep.partition_health", &[]).unwrap().get(0);
    assert_eq!(health, "ok,ok");
}

#[test]
fn creating_partitions_does_not_block_readers_or_writers_of_the_parent() {
    let cluster = Cluster::start("no-block", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    c.batch_execute(
        "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0); \
         UPDATE upkeep.partition_policies SET premake = 3;",
    )
    .unwrap();
    // Open application transactions that read and write the parent.
    let mut reader = cluster.connect("postgres");
    reader.batch_execute("BEGIN; SELECT count(*) FROM public.nav_history").unwrap();
    let mut writer = cluster.connect("postgres");
    writer.batch_execute("BEGIN; INSERT INTO public.nav_history VALUES (1, current_date, 1)").unwrap();

    // Maintenance goes through without waiting for them ...
    c.batch_execute("SET upkeep.lock_timeout = '2s'; BEGIN").unwrap();
    let rows = c.query("SELECT status FROM upkeep.create_partitions()", &[]).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.get::<_, String>(0) == "ok"), "{rows:?}");

    // ... and, while its transaction is still open, new readers and writers
    // of the parent are not blocked by it either.
    let mut third = cluster.connect("postgres");
    third.batch_execute("SET lock_timeout = '1s'").unwrap();
    third.query_one("SELECT count(*) FROM public.nav_history", &[]).unwrap();
    third.batch_execute("INSERT INTO public.nav_history VALUES (2, current_date, 1)").unwrap();

    c.batch_execute("COMMIT").unwrap();
    reader.batch_execute("COMMIT").unwrap();
    writer.batch_execute("COMMIT").unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM public.nav_history", &[]).unwrap().get(0);
    assert_eq!(n, 2);
}

/// The views a dashboard polls read catalogs and file sizes only: a
/// partition held by DDL (here ACCESS EXCLUSIVE, as ALTER TABLE or VACUUM
/// FULL take it) does not make them wait. pg_total_relation_size(),
/// pg_relation_size(), and pg_get_expr() or pg_get_indexdef() given the
/// relation, all lock what they read and waited.
#[test]
fn the_views_answer_while_ddl_holds_a_partition() {
    let cluster = Cluster::start("views-no-wait", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    c.batch_execute(
        "CREATE INDEX ON public.nav_history (nav); \
         SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 1)",
    )
    .unwrap();
    let mut ddl = cluster.connect("postgres");
    ddl.batch_execute(
        "BEGIN; LOCK TABLE public.nav_history_p$(m) IN ACCESS EXCLUSIVE MODE"
            .replace("$(m)", &c.query_one("SELECT to_char(now(), 'YYYY_MM')", &[]).unwrap().get::<_, String>(0))
            .as_str(),
    )
    .unwrap();
    c.batch_execute("SET lock_timeout = '5s'").unwrap();
    for view in ["upkeep.partitions", "upkeep.partition_health", "upkeep.index_health", "upkeep.metrics"] {
        let started = Instant::now();
        let answer = c.query(&format!("SELECT * FROM {view}"), &[]);
        assert!(answer.is_ok(), "{view} waited for the lock: {:?}", error_of(answer));
        assert!(started.elapsed() < Duration::from_secs(5), "{view}");
    }
    let sizes: i64 = c.query_one("SELECT count(size_bytes) FROM upkeep.partitions", &[]).unwrap().get(0);
    assert_eq!(sizes, 2);
    ddl.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn concurrent_runs_neither_double_create_nor_fail() {
    let cluster = Cluster::start("concurrent", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    c.batch_execute(
        "SELECT upkeep.manage_partitions('public.nav_history', 'nav_date', premake => 0); \
         UPDATE upkeep.partition_policies SET premake = 6;",
    )
    .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut s = cluster.connect("postgres");
            thread::spawn(move || {
                s.batch_execute("BEGIN").unwrap();
                let rows = s
                    .query("SELECT status FROM upkeep.run_maintenance() WHERE action = 'create_partition'", &[])
                    .unwrap();
                thread::sleep(Duration::from_millis(100));
                s.batch_execute("COMMIT").unwrap();
                rows.into_iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.len(), 6, "exactly one run created the six partitions: {statuses:?}");
    assert!(statuses.iter().all(|s| s == "ok"));
    let partitions: i64 = c
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.nav_history'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(partitions, 7);
}

/// Sizes come from the files (upkeep.relation_bytes). Past a few thousand
/// relations a statement reads which optional forks exist from one listing
/// of the database's directory: every relation must still read what
/// pg_relation_size says of its forks, free space and visibility maps and
/// init forks included.
#[test]
fn sizes_from_the_files_match_pg_relation_size_across_thousands_of_relations() {
    let cluster = Cluster::start("sizes", &["upkeep.enabled = off", "max_locks_per_transaction = 1024"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "DO $$ BEGIN
           FOR i IN 1..1200 LOOP
             EXECUTE format('CREATE %s TABLE public.s%s (id int PRIMARY KEY, note text)',
                            CASE WHEN i % 10 = 0 THEN 'UNLOGGED' ELSE '' END, i);
             EXECUTE format('INSERT INTO public.s%s SELECT g, repeat(''x'', 20) FROM generate_series(1, 400) g', i);
             IF i % 2 = 0 THEN EXECUTE format('DELETE FROM public.s%s WHERE id %% 3 = 0', i); END IF;
           END LOOP;
         END $$",
    )
    .unwrap();
    c.batch_execute("VACUUM").unwrap();
    let sql = "SELECT count(*) FILTER (WHERE upkeep.relation_bytes(c.oid) <> f.bytes),
                      count(*) FILTER (WHERE f.optional > 0)
                 FROM pg_class c, generate_series(1, 4) pass,
                      LATERAL (SELECT sum(pg_relation_size(c.oid, k))::int8 AS bytes,
                                      sum(pg_relation_size(c.oid, k)) FILTER (WHERE k <> 'main') AS optional
                                 FROM unnest(ARRAY['main', 'fsm', 'vm', 'init']) k) f
                WHERE c.relkind IN ('r', 'i', 't', 'm', 'S')";
    let row = c.query_one(sql, &[]).unwrap();
    let (wrong, with_forks): (i64, i64) = (row.get(0), row.get(1));
    assert!(with_forks > 4 * 1000, "the relations have free space maps, visibility maps, init forks: {with_forks}");
    assert_eq!(wrong, 0, "relations whose size differs from pg_relation_size");
}
