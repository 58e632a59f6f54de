//! Every public function, called with bad input: nonexistent and dropped
//! objects, the wrong kind of object, NULLs, negative and absurd numbers,
//! unknown modes and time zones, names with quotes, semicolons, spaces,
//! capitals, unicode and 63 bytes. Each call must fail with an ERROR that
//! names the object or value, with a HINT, and change nothing. Then the
//! same hostile names go through every capability and work.

use postgres::Client;
use upkeep_cluster_tests::{assert_refused, count, fingerprint, Cluster};

/// Schema and table names a careless format!() would break on.
const SCHEMA: &str = r#"
CREATE SCHEMA "Q""uote; Sch";
CREATE TABLE "Q""uote; Sch"."Nav History; DROP" (d date NOT NULL, "Valüe" int) PARTITION BY RANGE (d);
CREATE TABLE "Q""uote; Sch"."Évents ""x""" (id int PRIMARY KEY, "At Time" timestamptz NOT NULL, note text);
INSERT INTO "Q""uote; Sch"."Évents ""x""" SELECT g, now() - g * interval '1 day', 'n' || g FROM generate_series(1, 100) g;
CREATE MATERIALIZED VIEW "Q""uote; Sch"."Count; View" AS SELECT count(*) AS "N" FROM "Q""uote; Sch"."Évents ""x""";
CREATE MATERIALIZED VIEW "Q""uote; Sch"."No Key" AS SELECT id % 3 AS "Bücket", count(*) AS n FROM "Q""uote; Sch"."Évents ""x""" GROUP BY 1;
CREATE TABLE public.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa63 (d date NOT NULL) PARTITION BY RANGE (d);
CREATE TABLE public.plain (id int, at timestamptz NOT NULL, n int);
CREATE VIEW public.a_view AS SELECT 1 AS x;
CREATE SEQUENCE public.a_seq;
CREATE INDEX plain_id ON public.plain (id);
CREATE TABLE public.gone (d date NOT NULL) PARTITION BY RANGE (d);
CREATE TABLE public.b (x int);
CREATE TABLE public."a""; DROP TABLE b; --" (id int PRIMARY KEY, at timestamptz NOT NULL);
INSERT INTO public."a""; DROP TABLE b; --" SELECT g, now() - g * interval '1 day' FROM generate_series(1, 10) g;
"#;

/// The classic injection: a table named `a"; DROP TABLE b; --` is just a table name.
const INJECTION_EXAMPLE: &str = r#"public."a""; DROP TABLE b; --""#;

const HOSTILE_NAV: &str = r#""Q""uote; Sch"."Nav History; DROP""#;
const HOSTILE_EVENTS: &str = r#""Q""uote; Sch"."Évents ""x""""#;
const HOSTILE_VIEW: &str = r#""Q""uote; Sch"."Count; View""#;
const NO_KEY: &str = r#""Q""uote; Sch"."No Key""#;
const LONG: &str = "public.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa63";

/// Every row of every pg_upkeep table, every relation, trigger and
/// owner outside the system schemas.
fn everything(c: &mut Client) -> String {
    fingerprint(
        c,
        &[
            "SELECT string_agg(c.oid::regclass::text || ' ' || c.relkind::text || ' ' || pg_get_userbyid(c.relowner), ',' ORDER BY c.oid) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'upkeep')",
            "SELECT string_agg(tgname || ' ' || tgrelid::regclass, ',' ORDER BY tgname, tgrelid) FROM pg_trigger WHERE NOT tgisinternal",
        ],
    )
}

#[test]
fn every_public_function_refuses_bad_input_with_a_hint_and_changes_nothing() {
    let cluster = Cluster::start("hostile-bad-input", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    let gone: u32 = c.query_one("SELECT 'public.gone'::regclass::oid", &[]).unwrap().get(0);
    c.batch_execute("DROP TABLE public.gone").unwrap();
    // Managed objects, so that altering and unmanaging them can go wrong too.
    c.batch_execute(&format!(
        "SELECT count(*) FROM upkeep.manage_partitions('{HOSTILE_NAV}', 'd');
         SELECT upkeep.manage_archive('{HOSTILE_EVENTS}', 'At Time', '30 days');"
    ))
    .unwrap();
    let job: i64 = count(&mut c, "SELECT job_id FROM upkeep.archive_policies");
    let q = |name: &str| name.replace('\'', "''");
    let (nav, view, no_key) = (HOSTILE_NAV, HOSTILE_VIEW, NO_KEY);

    // (call, text the message must contain: the object or the value)
    let cases: Vec<(String, String)> = vec![
        // manage_partitions
        ("SELECT upkeep.manage_partitions('public.nope', 'd')".into(), "public.nope".into()),
        ("SELECT upkeep.manage_partitions('\"No\"\"Such; Table\"', 'd')".into(), "\"No\"\"Such; Table\"".into()),
        (format!("SELECT upkeep.manage_partitions({gone}::oid::regclass, 'd')"), gone.to_string()),
        ("SELECT upkeep.manage_partitions('public.a_view', 'x')".into(), "public.a_view".into()),
        ("SELECT upkeep.manage_partitions('public.a_seq', 'x')".into(), "public.a_seq".into()),
        ("SELECT upkeep.manage_partitions('public.plain', 'at')".into(), "public.plain".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd')", q(view)), view.into()),
        ("SELECT upkeep.manage_partitions(NULL::regclass, 'd')".into(), "parent".into()),
        (format!("SELECT upkeep.manage_partitions('{}', NULL)", q(nav)), nav.into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'Valüe')", q(nav)), "\"Valüe\"".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd; DROP TABLE x')", q(nav)), "d; DROP TABLE x".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', 'fortnight')", q(nav)), "fortnight".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', premake => -1)", q(nav)), "-1".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', premake => 2000000000)", q(nav)), "2000000000".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '-1 month')", q(nav)), "-1 mons".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', archive => 'shred')", q(nav)), "shred".into()),
        (
            format!("SELECT upkeep.manage_partitions('{}', 'd', time_zone => 'Mars/Olympus')", q(nav)),
            "Mars/Olympus".into(),
        ),
        (
            format!("SELECT upkeep.manage_partitions('{}', 'd', time_zone => 'UTC''; DROP TABLE x; --')", q(nav)),
            "UTC'; DROP TABLE x; --".into(),
        ),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', start_at => 'infinity')", q(nav)), "infinity".into()),
        // unmanage_partitions, create_partitions
        ("SELECT upkeep.unmanage_partitions('public.nope')".into(), "public.nope".into()),
        (format!("SELECT upkeep.unmanage_partitions('{LONG}')"), LONG.into()),
        (format!("SELECT upkeep.unmanage_partitions({gone}::oid::regclass)"), gone.to_string()),
        ("SELECT upkeep.unmanage_partitions(NULL::regclass)".into(), "parent".into()),
        (format!("SELECT * FROM upkeep.create_partitions('{LONG}')"), LONG.into()),
        ("SELECT * FROM upkeep.create_partitions('public.nope')".into(), "public.nope".into()),
        (format!("SELECT * FROM upkeep.create_partitions('{}', dry_run => NULL)", q(nav)), "dry_run".into()),
        // manage_archive, unmanage_archive, archive
        ("SELECT upkeep.manage_archive('public.nope', 'at', '1 day')".into(), "public.nope".into()),
        (format!("SELECT upkeep.manage_archive({gone}::oid::regclass, 'd', '1 day')"), gone.to_string()),
        ("SELECT upkeep.manage_archive('public.a_view', 'x', '1 day')".into(), "public.a_view".into()),
        ("SELECT upkeep.manage_archive('public.a_seq', 'x', '1 day')".into(), "public.a_seq".into()),
        (format!("SELECT upkeep.manage_archive('{}', 'N', '1 day')", q(view)), view.into()),
        ("SELECT upkeep.manage_archive(NULL::regclass, 'at', '1 day')".into(), "source".into()),
        ("SELECT upkeep.manage_archive('public.plain', NULL, '1 day')".into(), "public.plain".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at; DROP TABLE x', '1 day')".into(), "at; DROP TABLE x".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'n', '1 day')".into(), "\"n\"".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', NULL)".into(), "public.plain".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '-3 days')".into(), "public.plain".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '0')".into(), "public.plain".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', batch_size => 0)".into(), "batch_size 0".into()),
        (
            "SELECT upkeep.manage_archive('public.plain', 'at', '1 day', batch_size => -5)".into(),
            "batch_size -5".into(),
        ),
        (
            "SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'public.plain')".into(),
            "public.plain".into(),
        ),
        (
            "SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'public.a_view')".into(),
            "public.a_view".into(),
        ),
        (
            "SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'no_schema.x')".into(),
            "no_schema".into(),
        ),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => '')".into(), "archive_table".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => '  ')".into(), "archive_table".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => '\"\"')".into(), "\"\"".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'a.b.c')".into(), "a.b.c".into()),
        // archive targets pg_dump would leave out, or that do not exist
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'pg_catalog.plain_archive')".into(), "pg_catalog".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'pg_toast.x')".into(), "pg_toast".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'information_schema.x')".into(), "information_schema".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'upkeep.x')".into(), "upkeep".into()),
        ("SELECT upkeep.manage_archive('public.plain', 'at', '1 day', archive_table => 'pg_temp.x')".into(), "pg_temp".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema:pg_catalog')", q(nav)), "pg_catalog".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema:pg_toast')", q(nav)), "pg_toast".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema: information_schema')", q(nav)), "information_schema".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema:upkeep')", q(nav)), "upkeep".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema:pg_temp')", q(nav)), "pg_temp".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'schema:No Such')", q(nav)), "\"No Such\"".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', archive => 'schema:no_such')", q(nav)), "no_such".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'tablespace:pg_global')", q(nav)), "pg_global".into()),
        (format!("SELECT upkeep.manage_partitions('{}', 'd', retention => '1 month', archive => 'tablespace:no_such')", q(nav)), "no_such".into()),
        ("SELECT upkeep.unmanage_archive('public.plain')".into(), "public.plain".into()),
        ("SELECT upkeep.unmanage_archive(NULL::regclass)".into(), "source".into()),
        (format!("SELECT upkeep.unmanage_archive({gone}::oid::regclass)"), gone.to_string()),
        ("SELECT * FROM upkeep.archive('public.plain')".into(), "public.plain".into()),
        ("SELECT * FROM upkeep.archive('public.nope')".into(), "public.nope".into()),
        ("SELECT * FROM upkeep.archive(dry_run => NULL)".into(), "dry_run".into()),
        (format!("SELECT * FROM upkeep.archive('{}'::text, NULL)", q(HOSTILE_EVENTS)), "dry_run".into()),
        // manage_matview, unmanage_matview, refresh_matviews
        ("SELECT upkeep.manage_matview('public.nope')".into(), "public.nope".into()),
        (format!("SELECT upkeep.manage_matview({gone}::oid::regclass)"), gone.to_string()),
        ("SELECT upkeep.manage_matview('public.plain')".into(), "public.plain".into()),
        ("SELECT upkeep.manage_matview('public.a_view')".into(), "public.a_view".into()),
        ("SELECT upkeep.manage_matview(NULL::regclass)".into(), "matview".into()),
        (format!("SELECT upkeep.manage_matview('{}')", q(no_key)), no_key.into()),
        (format!("SELECT upkeep.manage_matview('{}', every => '0')", q(view)), view.into()),
        (format!("SELECT upkeep.manage_matview('{}', every => '-1 hour')", q(view)), view.into()),
        (format!("SELECT upkeep.manage_matview('{}', every => NULL)", q(view)), view.into()),
        (format!("SELECT upkeep.manage_matview('{}', concurrently => NULL)", q(view)), view.into()),
        (format!("SELECT upkeep.manage_matview('{}', only_when_changed => NULL)", q(view)), view.into()),
        (format!("SELECT upkeep.unmanage_matview('{}')", q(view)), view.into()),
        ("SELECT upkeep.unmanage_matview(NULL::regclass)".into(), "matview".into()),
        (format!("SELECT * FROM upkeep.refresh_matviews('{}')", q(view)), view.into()),
        ("SELECT * FROM upkeep.refresh_matviews('public.nope')".into(), "public.nope".into()),
        ("SELECT * FROM upkeep.refresh_matviews(force => NULL)".into(), "force".into()),
        // jobs
        ("SELECT upkeep.alter_job(424242, every => '1 hour')".into(), "job 424242".into()),
        ("SELECT upkeep.alter_job(-1, enabled => false)".into(), "job -1".into()),
        ("SELECT upkeep.alter_job(NULL, every => '1 hour')".into(), "job_id".into()),
        (format!("SELECT upkeep.alter_job({job}, every => '-5 minutes')"), format!("job {job}")),
        (format!("SELECT upkeep.alter_job({job}, every => '0')"), format!("job {job}")),
        ("SELECT upkeep.pause_job(424242)".into(), "job 424242".into()),
        ("SELECT upkeep.pause_job(NULL)".into(), "job_id".into()),
        ("SELECT upkeep.resume_job(0)".into(), "job 0".into()),
        ("SELECT upkeep.resume_job(NULL)".into(), "job_id".into()),
        ("SELECT * FROM upkeep.run_job(424242)".into(), "job 424242".into()),
        ("SELECT * FROM upkeep.run_job(NULL)".into(), "job_id".into()),
        ("SELECT * FROM upkeep.run_maintenance(NULL)".into(), "dry_run".into()),
        // index health
        ("SELECT * FROM upkeep.index_health_report(-1)".into(), "-1".into()),
        ("SELECT * FROM upkeep.index_health_report(NULL)".into(), "min_size_bytes".into()),
        ("SELECT * FROM upkeep.index_bloat_exact('public.plain_id')".into(), "pgstattuple".into()),
        ("SELECT * FROM upkeep.index_bloat_exact(NULL)".into(), "index".into()),
        ("SELECT upkeep.manage_reindex(1.0)".into(), "min_bloat_ratio 1".into()),
        ("SELECT upkeep.manage_reindex('NaN')".into(), "NaN".into()),
        ("SELECT upkeep.manage_reindex(NULL)".into(), "min_bloat_ratio".into()),
        ("SELECT upkeep.manage_reindex(2.0, -1)".into(), "min_size_bytes".into()),
        ("SELECT upkeep.manage_reindex(2.0, 0, '25:00-26:00')".into(), "25:00-26:00".into()),
        (
            "SELECT upkeep.manage_reindex(2.0, 0, '01:00-02:00; DROP TABLE x')".into(),
            "01:00-02:00; DROP TABLE x".into(),
        ),
        ("SELECT upkeep.unmanage_reindex()".into(), "reindex".into()),
    ];
    assert_refused(&mut c, &cases, everything);
    println!("{} bad-input cases: each an ERROR naming the object or value, with a HINT; nothing changed", cases.len());
}

#[test]
fn hostile_names_work_in_every_capability() {
    let cluster = Cluster::start("hostile-names", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(SCHEMA).unwrap();
    // Names shown schema-qualified (regclass output follows search_path).
    c.batch_execute("SET search_path = pg_catalog").unwrap();
    let q = |name: &str| name.replace('\'', "''");
    c.batch_execute(&format!(
        "SELECT count(*) FROM upkeep.manage_partitions('{}', 'd', premake => 2, retention => '1 month');
         SELECT count(*) FROM upkeep.manage_partitions('{LONG}', 'd', granularity => 'day', premake => 3);
         SELECT upkeep.manage_archive('{}', 'At Time', '30 days', batch_size => 7);
         SELECT upkeep.manage_archive('{}', 'at', '5 days');
         CREATE UNIQUE INDEX ON {HOSTILE_VIEW} (\"N\");
         SELECT upkeep.manage_matview('{}');",
        q(HOSTILE_NAV),
        q(HOSTILE_EVENTS),
        q(INJECTION_EXAMPLE),
        q(HOSTILE_VIEW)
    ))
    .unwrap();
    let failed: Vec<String> = c
        .query(
            "SELECT concat_ws(' ', action, target, status, error) FROM upkeep.run_maintenance() WHERE status <> 'ok'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    // Partitions: current month and 2 ahead; the 63-byte
    // parent's daily partitions have unique names of at most 63 bytes.
    let parts = |c: &mut Client, parent: &str| {
        count(c, &format!("SELECT count(*) FROM pg_inherits WHERE inhparent = '{}'::regclass", q(parent)))
    };
    assert!(parts(&mut c, HOSTILE_NAV) >= 3);
    assert_eq!(parts(&mut c, LONG), 4, "today and 3 days ahead");
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(DISTINCT c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
              WHERE i.inhparent = '{LONG}'::regclass AND octet_length(c.relname) <= 63"
            )
        ),
        4
    );
    // Archive: 70 rows moved in batches of 7, none lost.
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {HOSTILE_EVENTS}")), 29);
    assert_eq!(count(&mut c, r#"SELECT count(*) FROM "Q""uote; Sch"."Évents ""x""_archive""#), 71);
    assert_eq!(count(&mut c, &format!("SELECT count(*) FROM {INJECTION_EXAMPLE}")), 4);
    assert_eq!(count(&mut c, r#"SELECT count(*) FROM public."a""; DROP TABLE b; --_archive""#), 6);
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_class WHERE oid = 'public.b'::regclass"), 1, "b is still there");
    // The view was refreshed under its name; the status views show the names.
    assert_eq!(count(&mut c, &format!("SELECT \"N\" FROM {HOSTILE_VIEW}")), 29);
    let shown = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM upkeep.jobs WHERE target IN ('{}', '{}', '{}', '{}', '{LONG}')",
            q(HOSTILE_NAV),
            q(HOSTILE_EVENTS),
            q(HOSTILE_VIEW),
            q(INJECTION_EXAMPLE)
        ),
    );
    assert_eq!(shown, 5);
    // Index health: the fix for the view without a unique index quotes its
    // names, and every fix_sql runs as given.
    c.batch_execute(&format!(
        "CREATE INDEX \"Dup; Idx\" ON {HOSTILE_EVENTS} (\"At Time\"); CREATE INDEX \"dup 2\" ON {HOSTILE_EVENTS} (\"At Time\");"
    ))
    .unwrap();
    let fixes: Vec<String> = c
        .query("SELECT fix_sql FROM upkeep.index_health_report() WHERE problem = 'duplicate'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(fixes.len(), 1, "{fixes:?}");
    for statement in fixes[0].lines() {
        c.batch_execute(statement).unwrap();
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.index_health_report() WHERE problem = 'duplicate'"), 0);
    let (_, hint) =
        upkeep_cluster_tests::error_of(c.batch_execute(&format!("SELECT upkeep.manage_matview('{}')", q(NO_KEY))));
    let hint = hint.unwrap();
    let from = hint.find("CREATE UNIQUE INDEX").unwrap_or_else(|| panic!("{hint}"));
    let create = &hint[from..from + hint[from..].find("; --").unwrap()];
    c.batch_execute(create).unwrap();
    c.batch_execute(&format!("SELECT upkeep.manage_matview('{}')", q(NO_KEY))).unwrap();
    // Unmanage all; nothing of ours is left on the hostile objects.
    c.batch_execute(&format!(
        "SELECT upkeep.unmanage_partitions('{}'); SELECT upkeep.unmanage_partitions('{LONG}');
         SELECT upkeep.unmanage_archive('{}'); SELECT upkeep.unmanage_archive('{}');
         SELECT upkeep.unmanage_matview('{}'); SELECT upkeep.unmanage_matview('{}');",
        q(HOSTILE_NAV),
        q(HOSTILE_EVENTS),
        q(INJECTION_EXAMPLE),
        q(HOSTILE_VIEW),
        q(NO_KEY)
    ))
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM upkeep.jobs WHERE kind <> 'index_snapshot'"), 0);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgname = 'upkeep_track_changes'"),
        1,
        "the tracking trigger on the table both views read"
    );
    c.batch_execute("SELECT count(*) FROM upkeep.run_maintenance()").unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgname = 'upkeep_track_changes'"),
        0,
        "tracking triggers removed"
    );
}
