//! Index health on a real cluster: every kind of problem is found (and
//! nothing else: covering, partial, expression and other-opclass indexes
//! are not mistaken for duplicates), and running a row's fix_sql makes the
//! row disappear from the next report.

use postgres::Client;
use std::time::Duration;
use upkeep_cluster_tests::{count, wait_for, Cluster};

const SCHEMA: &str = "
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 2000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, status text NOT NULL,
                     total numeric NOT NULL, created_at timestamptz NOT NULL, note text);
INSERT INTO orders SELECT g, g % 2000 + 1, (ARRAY['open', 'paid', 'closed'])[g % 3 + 1], g % 1000, now() - g * interval '1 minute', 'n' || g
  FROM generate_series(1, 100000) g;
-- problems
CREATE INDEX orders_customer_a ON orders (customer_id);
CREATE INDEX orders_customer_b ON orders (customer_id);
CREATE INDEX orders_status ON orders (status);
CREATE INDEX orders_status_created ON orders (status, created_at);
CREATE TABLE line_items (order_id bigint NOT NULL REFERENCES orders, sku text NOT NULL, qty int NOT NULL);
INSERT INTO line_items SELECT g % 100000 + 1, 'sku' || g % 50, 1 FROM generate_series(1, 50000) g;
-- not problems
CREATE INDEX orders_total ON orders (total);
CREATE INDEX orders_total_cover ON orders (total) INCLUDE (status);
CREATE INDEX orders_open ON orders (created_at) WHERE status = 'open';
CREATE INDEX orders_closed ON orders (created_at) WHERE status = 'closed';
CREATE INDEX customers_email ON customers (email);
CREATE INDEX customers_email_lower ON customers (lower(email));
CREATE INDEX customers_email_pattern ON customers (email text_pattern_ops);
{BLOATED}
-- a partitioned table whose foreign key has no index
CREATE TABLE shipments (order_id bigint NOT NULL REFERENCES orders, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE shipments_2026 PARTITION OF shipments FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
-- makes an index build fail while test.boom is on
CREATE FUNCTION boom(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS
  $$ BEGIN IF current_setting('test.boom', true) = 'on' THEN RAISE EXCEPTION 'boom'; END IF; RETURN $1; END $$;
";

/// 4 of 5 rows deleted, vacuumed (the pages stay).
const BLOATED: &str = "
CREATE TABLE events (id bigint NOT NULL, payload text);
INSERT INTO events SELECT g, 'p' FROM generate_series(1, 400000) g;
CREATE INDEX events_id ON events (id);
DELETE FROM events WHERE id % 5 <> 0;
";

/// (index or table, problem, fix_sql) of the report.
fn report(c: &mut Client) -> Vec<(String, String, String)> {
    c.query("SELECT coalesce(index, \"table\"), problem, fix_sql FROM upkeep.index_health ORDER BY 1, 2", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn problems(c: &mut Client) -> Vec<(String, String)> {
    report(c).into_iter().map(|(i, p, _)| (i, p)).collect()
}

#[test]
fn every_problem_is_found_nothing_else_and_each_fix_makes_it_go() {
    let cluster = Cluster::start("index-health", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(&SCHEMA.replace("{BLOATED}", BLOATED)).unwrap();
    c.batch_execute("VACUUM ANALYZE").unwrap();
    // An index build that failed (invalid), and a failed REINDEX CONCURRENTLY's leftover.
    c.batch_execute("CREATE INDEX orders_boom ON orders (boom(customer_id))").unwrap();
    c.batch_execute("SET test.boom = on").unwrap();
    assert!(c.batch_execute("CREATE INDEX CONCURRENTLY orders_boom_failed ON orders (boom(customer_id))").is_err());
    assert!(c.batch_execute("REINDEX INDEX CONCURRENTLY orders_boom").is_err());
    c.batch_execute("RESET test.boom").unwrap();
    // Fresh statistics, so no index counts as unused yet (upkeep.unused_index_days = 7).
    c.batch_execute("SELECT pg_stat_reset()").unwrap();

    let expected = [
        ("events_id", "bloated"),
        ("line_items", "unindexed_fk"),
        ("orders_boom_ccnew", "invalid"),
        ("orders_boom_failed", "invalid"),
        ("orders_customer_b", "duplicate"),
        ("orders_status", "redundant"),
        ("shipments", "unindexed_fk"),
    ];
    let found = problems(&mut c);
    assert_eq!(found, expected.iter().map(|(i, p)| (i.to_string(), p.to_string())).collect::<Vec<_>>(), "{found:#?}");

    // Unused: once statistics are old enough (here: at once).
    c.batch_execute(
        "SET enable_seqscan = off; SELECT count(*) FROM orders WHERE total = 5; SELECT pg_stat_force_next_flush()",
    )
    .unwrap();
    let mut other = cluster.connect("postgres");
    assert!(wait_for(Duration::from_secs(10), || {
        count(
        &mut other,
        "SELECT coalesce(sum(idx_scan), 0)::int8 FROM pg_stat_user_indexes WHERE indexrelname IN ('orders_total', 'orders_total_cover')"
    ) > 0
    }));
    other.batch_execute("SET upkeep.unused_index_days = 0").unwrap();
    let unused: Vec<String> = problems(&mut other).into_iter().filter(|(_, p)| p == "unused").map(|(i, _)| i).collect();
    assert!(
        unused.contains(&"orders_open".to_string()) && unused.contains(&"customers_email".to_string()),
        "{unused:?}"
    );
    // Never the primary keys, nor an index that serves a foreign key.
    assert!(!unused.iter().any(|i| i.ends_with("_pkey")), "{unused:?}");
    assert!(!unused.contains(&"orders_customer_a".to_string()), "{unused:?}");
    let scanned = unused.iter().filter(|i| *i == "orders_total" || *i == "orders_total_cover").count();
    assert_eq!(scanned, 1, "one of the two total indexes was scanned: {unused:?}");

    // Each fix, statement by statement, outside a transaction block.
    let mut fixed = 0;
    loop {
        let rows = report(&mut other);
        let Some((index, problem, fix)) = rows.into_iter().next() else { break };
        for statement in fix.lines() {
            other.batch_execute(statement).unwrap_or_else(|e| panic!("{index} {problem}: {statement}: {e}"));
        }
        other.batch_execute("ANALYZE").unwrap();
        let after = problems(&mut other);
        assert!(!after.contains(&(index.clone(), problem.clone())), "{index} {problem} still reported after {fix}");
        fixed += 1;
        assert!(fixed < 40, "fixes do not converge: {after:?}");
    }
    println!("{fixed} findings fixed by their fix_sql");
    assert!(fixed >= expected.len());
    // Constraints still hold and the foreign keys are indexed.
    assert_eq!(count(&mut other, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"), 0);
    assert_eq!(count(&mut other, "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_pkey'"), 1);
}

/// The estimate against pgstattuple's pgstatindex() for the bloated index
/// (the test's name says it needs pgstattuple: scripts/test.sh skips it
/// on a server without it).
#[test]
fn the_bloat_estimate_is_within_a_quarter_of_pgstattuple() {
    let cluster = Cluster::start("index-bloat", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(&format!("CREATE EXTENSION pgstattuple; {BLOATED}")).unwrap();
    c.batch_execute("VACUUM ANALYZE").unwrap();
    let r = c
        .query_one(
            "SELECT h.bloat_ratio, e.bloat_ratio FROM upkeep.index_health h, upkeep.index_bloat_exact('events_id') e \
              WHERE h.index = 'events_id' AND h.problem = 'bloated'",
            &[],
        )
        .unwrap();
    let (estimated, exact): (f64, f64) = (r.get(0), r.get(1));
    println!("events_id bloat ratio: estimated {estimated}, pgstatindex {exact}");
    assert!((estimated / exact - 1.0).abs() < 0.25, "estimated {estimated}, exact {exact}");
}

/// (problem, recommendation) rows of one index.
fn rows_of(c: &mut Client, index: &str) -> Vec<(String, String)> {
    c.query("SELECT problem, recommendation FROM upkeep.index_health WHERE index = $1", &[&index])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// "Unused" needs evidence: PostgreSQL keeps no creation time and a
/// database whose statistics were never reset has scan counts of unknown
/// age, so an index is called unused only after pg_upkeep's snapshots have
/// seen it unscanned for `upkeep.unused_index_days`, and the
/// recommendation says for how long.
#[test]
fn an_index_is_unused_only_after_snapshots_saw_it_unscanned_long_enough() {
    let cluster = Cluster::start("index-unused-evidence", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 10000) g;
         CREATE INDEX fresh_idx ON t (v); ANALYZE t;",
    )
    .unwrap();
    let reset: Option<String> = c
        .query_one("SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(reset, None, "statistics never reset, the usual case");
    // Created a minute ago: nothing to say, before or after a snapshot.
    assert_eq!(rows_of(&mut c, "fresh_idx"), vec![]);
    c.batch_execute("SELECT upkeep.snapshot_index_health()").unwrap();
    assert_eq!(rows_of(&mut c, "fresh_idx"), vec![]);
    // Eight days of snapshots without a scan (their start moved back).
    c.batch_execute(
        "UPDATE upkeep.index_watch SET unused_since = now() - interval '8 days', watched_since = now() - interval '8 days'
          WHERE index_oid = 'fresh_idx'::regclass",
    )
    .unwrap();
    let rows = rows_of(&mut c, "fresh_idx");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "unused");
    assert!(rows[0].1.contains("8 days"), "says how long it was watched: {}", rows[0].1);
    // More evidence is needed when the setting asks for it.
    c.batch_execute("SET upkeep.unused_index_days = 10").unwrap();
    assert_eq!(rows_of(&mut c, "fresh_idx"), vec![]);
    c.batch_execute("RESET upkeep.unused_index_days").unwrap();
    // A scan ends the evidence, and a snapshot records it; after a crash or a
    // reset zeroes the counter, the watch starts again from the next snapshot.
    c.batch_execute(
        "SET enable_seqscan = off; SELECT count(*) FROM t WHERE v = 5; RESET enable_seqscan; SELECT pg_stat_force_next_flush()",
    )
    .unwrap();
    let mut other = cluster.connect("postgres");
    assert!(wait_for(Duration::from_secs(30), || {
        count(&mut other, "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'fresh_idx'") > 0
    }));
    assert_eq!(rows_of(&mut other, "fresh_idx"), vec![]);
    other.batch_execute("SELECT upkeep.snapshot_index_health()").unwrap();
    let since: Option<String> = other
        .query_one("SELECT unused_since::text FROM upkeep.index_watch WHERE index_oid = 'fresh_idx'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(since, None, "the snapshot saw the scan");
    other.batch_execute("SELECT pg_stat_reset(); SELECT upkeep.snapshot_index_health()").unwrap();
    assert_eq!(rows_of(&mut other, "fresh_idx"), vec![], "watched again from now");
    // A statistics reset after the watch began: evidence counts from it.
    other
        .batch_execute(
            "UPDATE upkeep.index_watch SET unused_since = now() - interval '30 days' WHERE index_oid = 'fresh_idx'::regclass;
             SELECT pg_stat_reset();",
        )
        .unwrap();
    assert!(wait_for(Duration::from_secs(30), || rows_of(&mut other, "fresh_idx").is_empty()));
    // A dropped index leaves no watch behind at the next snapshot.
    other.batch_execute("DROP INDEX fresh_idx; SELECT upkeep.snapshot_index_health()").unwrap();
    assert_eq!(count(&mut other, "SELECT count(*) FROM upkeep.index_watch w WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = w.index_oid)"), 0);
}
