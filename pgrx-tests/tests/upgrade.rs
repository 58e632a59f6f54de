//! Upgrades: the previous version's install script (sql/versions/) and the
//! upgrade scripts (sql/pg_upkeep--<old>--<new>.sql) take a database with
//! policies and history to the current version, which then has exactly
//! the objects of a fresh install, with the policies and history kept.

use postgres::Client;
use upkeep_cluster_tests::{count, Cluster};

/// Every earlier version: each is updated to the current one.
const PREVIOUS: &[&str] = &["0.1.0", "0.2.0", "0.3.0"];

/// Every object of schema upkeep with its definition and comment, as text.
fn objects(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT 'function ' || p.oid::regprocedure || ' (' || pg_get_function_arguments(p.oid) || ') ' \
                || pg_get_function_result(p.oid) || ' ' || p.provolatile::text || p.proisstrict::text \
                || p.prosecdef::text || coalesce(p.proacl::text, '') \
                || coalesce(array_to_string(p.proconfig, ','), '') || ' ' || coalesce(p.probin, '') || ' ' || \
                CASE WHEN p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c') THEN p.prosrc ELSE md5(p.prosrc) END \
                || ' -- ' || coalesce(obj_description(p.oid, 'pg_proc'), '') \
           FROM pg_proc p WHERE p.pronamespace = 'upkeep'::regnamespace \
         UNION ALL \
         SELECT c.relkind::text || ' ' || c.relname || ' ' || coalesce(pg_get_viewdef(c.oid), '') || ' ' \
                || coalesce(c.relacl::text, '') || ' ' || c.relrowsecurity::text || ' -- ' \
                || coalesce(obj_description(c.oid, 'pg_class'), '') \
           FROM pg_class c WHERE c.relnamespace = 'upkeep'::regnamespace \
         UNION ALL \
         SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
                || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') \
                || ' -- ' || coalesce(col_description(c.oid, a.attnum), '') \
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
          WHERE c.relnamespace = 'upkeep'::regnamespace \
         UNION ALL \
         SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
          WHERE connamespace = 'upkeep'::regnamespace \
         UNION ALL \
         SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc || ' ' || evtenabled::text \
           FROM pg_event_trigger \
         UNION ALL \
         SELECT 'trigger ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid) FROM pg_trigger \
          WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'upkeep'::regnamespace) \
         UNION ALL \
         SELECT 'schema upkeep ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'upkeep' \
         UNION ALL \
         SELECT 'dumped ' || extconfig::regclass[]::text FROM pg_extension WHERE extname = 'pg_upkeep' \
         ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn alter_extension_update_keeps_policies_and_history_and_matches_a_fresh_install() {
    // The earlier versions' install scripts, next to the current one.
    let sharedir = String::from_utf8(
        std::process::Command::new(format!("{}/pg_config", upkeep_cluster_tests::bin()))
            .arg("--sharedir")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for version in PREVIOUS {
        let script = format!("pg_upkeep--{version}.sql");
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/versions").join(&script),
            std::path::Path::new(sharedir.trim()).join("extension").join(&script),
        )
        .expect("copies an earlier install script (as root, like the install)");
    }

    let cluster = Cluster::start("upgrade", &["upkeep.enabled = off"]);
    let mut fresh = cluster.connect("postgres");
    let current: String =
        fresh.query_one("SELECT extversion FROM pg_extension WHERE extname = 'pg_upkeep'", &[]).unwrap().get(0);
    let installed = objects(&mut fresh);
    for version in PREVIOUS {
        assert_ne!(&current, version);
        let db = format!("old_{}", version.replace('.', "_"));
        fresh.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let mut old = cluster.connect(&db);
        update_from(&mut old, version, &current, &installed);
    }
    println!("{} objects compared, from {} earlier versions", installed.len(), PREVIOUS.len());
}

/// A database made at `version` with policies and history, updated: all
/// kept, the same objects as a fresh install, and it works.
fn update_from(old: &mut Client, version: &str, current: &str, installed: &[String]) {
    old.batch_execute(&format!(
        "CREATE EXTENSION pg_upkeep VERSION '{version}';
         CREATE TABLE nav (d date NOT NULL) PARTITION BY RANGE (d);
         SELECT count(*) FROM upkeep.manage_partitions('nav', 'd', premake => 2);
         CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
         INSERT INTO events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
         SELECT upkeep.manage_archive('events', 'at', '30 days');
         SELECT count(*) FROM upkeep.archive('events');
         CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events;
         CREATE UNIQUE INDEX ON event_count (n);
         SELECT upkeep.manage_matview('event_count');
         SELECT count(*) FROM upkeep.refresh_matviews();
         SELECT upkeep.snapshot_index_health();"
    ))
    .unwrap();
    let kept = |c: &mut Client| -> Vec<i64> {
        [
            "SELECT count(*) FROM upkeep.partition_policies",
            "SELECT count(*) FROM upkeep.archive_policies",
            "SELECT count(*) FROM upkeep.matview_policies",
            "SELECT count(*) FROM upkeep.job_runs",
            "SELECT count(*) FROM upkeep.index_health_history",
            "SELECT coalesce(sum(rows_moved), 0)::int8 FROM upkeep.job_state",
            "SELECT count(*) FROM upkeep.matview_state",
        ]
        .iter()
        .map(|q| count(c, q))
        .collect()
    };
    let before = kept(old);
    assert!(before.iter().all(|n| *n > 0), "{before:?}");
    // Before the update this library reads the views with the older SQL
    // objects, and still finds a clock in a view's rule (after its first
    // refresh, which is for want of one).
    old.batch_execute(
        "CREATE MATERIALIZED VIEW recent_events AS SELECT count(*) AS n FROM events WHERE at > now() - interval '1 day';
         CREATE UNIQUE INDEX ON recent_events (n);
         SELECT upkeep.manage_matview('recent_events');
         SELECT count(*) FROM upkeep.refresh_matviews('recent_events');",
    )
    .unwrap();
    let reason: String = old
        .query_one("SELECT coalesce(reason, error, '') FROM upkeep.refresh_matviews('recent_events')", &[])
        .unwrap()
        .get(0);
    assert!(
        reason.contains("recent_events uses now, whose result changes"),
        "before the update from {version}: {reason}"
    );
    let before = kept(old);
    old.batch_execute("ALTER EXTENSION pg_upkeep UPDATE").unwrap();
    let now_installed: String = old.query_one("SELECT installed FROM upkeep.version()", &[]).unwrap().get(0);
    assert_eq!(now_installed, current);
    assert_eq!(kept(old), before, "policies and history survive the update from {version}");
    // The same objects as a fresh install of the current version.
    let upgraded = objects(old);
    let missing: Vec<&String> = installed.iter().filter(|o| !upgraded.contains(o)).collect();
    let extra: Vec<&String> = upgraded.iter().filter(|o| !installed.contains(o)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing after the update from {version}: {missing:#?}\nnot in a fresh install: {extra:#?}"
    );
    // And it works: maintenance runs, the view is refreshed after a change.
    old.batch_execute("INSERT INTO events VALUES (1000, now())").unwrap();
    let status: String =
        old.query_one("SELECT status FROM upkeep.refresh_matviews('event_count')", &[]).unwrap().get(0);
    assert_eq!(status, "refreshed");
    assert_eq!(count(old, "SELECT count(*) FROM upkeep.run_maintenance() WHERE status = 'failed'"), 0);
}
