//! upkeep.adopt_pg_partman() against the real pg_partman: two databases
//! with the same tables made by create_parent, one adopted by pg_upkeep,
//! the other left to pg_partman; after a maintenance run in each, the
//! catalogs must match, and pg_partman's own run must leave the adopted
//! parents alone.

use postgres::Client;
use upkeep_cluster_tests::{count, texts, Cluster};

/// The same parents in any database: made by pg_partman 4.7's
/// create_parent in the database's zone (Europe/Berlin), then given a
/// larger premake so that the next maintenance run has partitions to make.
const SETUP: &str = "
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE SCHEMA old;
-- Monthly on timestamptz, rows arriving, infinite_time_partitions off.
CREATE TABLE events (id bigint NOT NULL, created timestamptz NOT NULL, PRIMARY KEY (id, created))
  PARTITION BY RANGE (created);
SELECT partman.create_parent('public.events', 'created', 'native', 'monthly', p_premake => 2,
                             p_start_partition => (date_trunc('month', now()) - interval '3 months')::text);
INSERT INTO events VALUES (1, now());
-- Monthly on date, retention into a schema.
CREATE TABLE ledger (d date NOT NULL, amount numeric) PARTITION BY RANGE (d);
SELECT partman.create_parent('public.ledger', 'd', 'native', 'monthly', p_premake => 2,
                             p_start_partition => (date_trunc('month', now()) - interval '8 months')::date::text);
UPDATE partman.part_config SET retention = '3 months', retention_schema = 'old', infinite_time_partitions = true
 WHERE parent_table = 'public.ledger';
-- Weekly on timestamptz, retention dropping the tables.
CREATE TABLE pings (at timestamptz NOT NULL) PARTITION BY RANGE (at);
SELECT partman.create_parent('public.pings', 'at', 'native', 'weekly', p_premake => 2,
                             p_start_partition => (date_trunc('week', now()) - interval '6 weeks')::text);
UPDATE partman.part_config SET retention = '3 weeks', retention_keep_table = false, infinite_time_partitions = true
 WHERE parent_table = 'public.pings';
-- Quarterly on date, retention keeping the tables (detached in place).
CREATE TABLE quarters (d date NOT NULL) PARTITION BY RANGE (d);
SELECT partman.create_parent('public.quarters', 'd', 'native', 'quarterly', p_premake => 1,
                             p_start_partition => (date_trunc('quarter', now()) - interval '12 months')::date::text);
UPDATE partman.part_config SET retention = '6 months', retention_keep_table = true, infinite_time_partitions = true
 WHERE parent_table = 'public.quarters';
-- Daily, with rows in its default partition (older than its partitions).
CREATE TABLE visits (d date NOT NULL, who text) PARTITION BY RANGE (d);
SELECT partman.create_parent('public.visits', 'd', 'native', 'daily', p_premake => 2);
INSERT INTO visits VALUES (current_date, 'today'), ('2020-01-01', 'long ago'), ('2020-02-01', 'long ago');
-- Yearly on timestamp.
CREATE TABLE years (t timestamp NOT NULL) PARTITION BY RANGE (t);
SELECT partman.create_parent('public.years', 't', 'native', 'yearly', p_premake => 1);
UPDATE partman.part_config SET infinite_time_partitions = true WHERE parent_table = 'public.years';
-- No rows and infinite_time_partitions off: pg_partman makes nothing more.
CREATE TABLE quiet (t timestamptz NOT NULL) PARTITION BY RANGE (t);
SELECT partman.create_parent('public.quiet', 't', 'native', 'monthly', p_premake => 2);
-- Retention into a schema that does not exist: what the registration's
-- own checks refuse, in the dry run too.
CREATE TABLE lost (d date NOT NULL) PARTITION BY RANGE (d);
SELECT partman.create_parent('public.lost', 'd', 'native', 'monthly', p_premake => 2);
UPDATE partman.part_config SET retention = '100 years', retention_schema = 'nowhere', infinite_time_partitions = true
 WHERE parent_table = 'public.lost';
-- Partitioned by id.
CREATE TABLE orders (id bigint NOT NULL) PARTITION BY RANGE (id);
SELECT partman.create_parent('public.orders', 'id', 'native', '1000', p_premake => 2);
-- Then every premake raised: the next run has partitions to make.
UPDATE partman.part_config SET premake = premake + 3;
";

/// The parents that can be carried over exactly.
const ADOPTED: [&str; 6] = ["events", "ledger", "pings", "quarters", "visits", "years"];

/// The adopted parents with infinite_time_partitions on.
const INFINITE: [&str; 4] = ["ledger", "pings", "quarters", "years"];

/// Every table of the test, attached or not: schema, name, parent, bounds.
fn tables(c: &mut Client) -> Vec<String> {
    texts(
        c,
        "SELECT n.nspname || '.' || c.relname || ' <- ' || coalesce(i.inhparent::regclass::text, '-') || ' '
                || coalesce(pg_get_expr(c.relpartbound, c.oid), '')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
          WHERE n.nspname IN ('public', 'old') AND c.relkind IN ('r', 'p')
          ORDER BY 1",
    )
}

fn adopt(c: &mut Client, dry_run: bool) -> Vec<(String, String, String)> {
    c.query("SELECT parent, status, detail FROM upkeep.adopt_pg_partman(dry_run => $1) ORDER BY parent", &[&dry_run])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn pg_partman_parents_are_adopted_and_maintained_as_pg_partman_would() {
    let cluster = Cluster::start("adopt-pg-partman", &["upkeep.enabled = off"]);
    let mut admin = cluster.connect("postgres");
    for db in ["adopted", "untouched"] {
        admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        admin.batch_execute(&format!("ALTER DATABASE {db} SET timezone = 'Europe/Berlin'")).unwrap();
        let mut c = cluster.connect(db);
        c.batch_execute("CREATE EXTENSION pg_upkeep").unwrap();
        c.batch_execute(SETUP).unwrap();
    }
    let mut a = cluster.connect("adopted");
    let mut b = cluster.connect("untouched");
    assert_eq!(tables(&mut a), tables(&mut b), "the two databases start the same");

    // A dry run shows what would happen and changes nothing.
    let config = "SELECT string_agg(to_jsonb(c)::text, ',' ORDER BY parent_table) FROM partman.part_config c";
    let before: String = a.query_one(config, &[]).unwrap().get(0);
    let dry = adopt(&mut a, true);
    let status = |rows: &[(String, String, String)], parent: &str| {
        rows.iter().find(|r| r.0 == format!("public.{parent}")).map(|r| r.1.clone()).unwrap_or_default()
    };
    for p in ADOPTED {
        assert_eq!(status(&dry, p), "would adopt", "{p}: {dry:?}");
    }
    assert_eq!(status(&dry, "quiet"), "not adopted");
    let lost = dry.iter().find(|r| r.0 == "public.lost").unwrap();
    assert!(lost.1 == "not adopted" && lost.2.contains("nowhere"), "the registration's check, rolled back: {lost:?}");
    assert_eq!(status(&dry, "orders"), "not adopted");
    assert_eq!(a.query_one(config, &[]).unwrap().get::<_, String>(0), before);
    assert_eq!(count(&mut a, "SELECT count(*) FROM upkeep.partition_policies"), 0);

    // Adopted: policies registered, pg_partman's maintenance off for them.
    let done = adopt(&mut a, false);
    for p in ADOPTED {
        assert_eq!(status(&done, p), "adopted", "{p}: {done:?}");
    }
    let quiet = done.iter().find(|r| r.0 == "public.quiet").unwrap();
    assert!(quiet.2.contains("infinite_time_partitions off") && quiet.2.contains("has none of"), "{quiet:?}");
    let orders = done.iter().find(|r| r.0 == "public.orders").unwrap();
    assert!(orders.2.contains("partitioned by id"), "{orders:?}");
    assert_eq!(count(&mut a, "SELECT count(*) FROM upkeep.partition_policies"), 6);
    assert_eq!(
        count(&mut a, "SELECT count(*) FROM partman.part_config WHERE automatic_maintenance = 'off'"),
        6,
        "exactly the adopted parents"
    );
    assert_eq!(
        count(
            &mut a,
            "SELECT count(*) FROM upkeep.partition_policies WHERE time_zone = 'Europe/Berlin' AND premake > 0"
        ),
        6
    );
    // Nothing was created, renamed or moved by the adoption itself.
    assert_eq!(tables(&mut a), tables(&mut b));

    // pg_partman's own run leaves the adopted parents alone (it still
    // maintains the two it keeps).
    a.batch_execute("SELECT partman.run_maintenance()").unwrap();
    b.batch_execute("SELECT partman.run_maintenance()").unwrap();
    let adopted_tables = |c: &mut Client| -> Vec<String> {
        tables(c).into_iter().filter(|t| ADOPTED.iter().any(|p| t.contains(&format!(".{p}")))).collect()
    };
    let kept = |c: &mut Client| -> Vec<String> {
        tables(c).into_iter().filter(|t| !ADOPTED.iter().any(|p| t.contains(&format!(".{p}")))).collect()
    };
    assert_eq!(kept(&mut a), kept(&mut b), "pg_partman still maintains what it kept");
    assert_ne!(adopted_tables(&mut a), adopted_tables(&mut b), "pg_partman's run had work on the adopted parents");

    // pg_upkeep's run does what pg_partman's did: the same partitions
    // made, the same ones moved to schema old, detached, or dropped.
    let failed = count(&mut a, "SELECT count(*) FROM upkeep.run_maintenance() WHERE status <> 'ok'");
    assert_eq!(failed, 0);
    let (ours, theirs) = (tables(&mut a), tables(&mut b));
    for p in ADOPTED {
        let of = |all: &[String]| -> Vec<String> {
            all.iter()
                .filter(|t| t.starts_with(&format!("public.{p}")) || t.starts_with(&format!("old.{p}")))
                .cloned()
                .collect()
        };
        let (ours, mut theirs) = (of(&ours), of(&theirs));
        // With infinite_time_partitions on, pg_partman counts premake from
        // now, rounded: in the second half of a period it makes one
        // partition more, which pg_upkeep (counting from the current
        // period) does not. Anything else must be the same.
        if INFINITE.contains(&p) && theirs.len() == ours.len() + 1 {
            let last = theirs.iter().rposition(|t| t.contains(" FOR VALUES ")).unwrap();
            let extra = theirs.remove(last);
            assert!(
                ours.iter().filter(|t| t.contains(" FOR VALUES ")).all(|t| t < &extra),
                "{p}: pg_partman's one more partition is not the newest: {extra}"
            );
        }
        assert_eq!(ours, theirs, "{p}: pg_upkeep made and moved other tables than pg_partman");
    }
    // The rows stay where they were, the default's too.
    for c in [&mut a, &mut b] {
        assert_eq!(count(c, "SELECT count(*) FROM ONLY visits_default"), 2);
        assert_eq!(count(c, "SELECT count(*) FROM events"), 1);
    }

    // Idempotent: a second call adopts nothing new and changes nothing.
    let again = adopt(&mut a, false);
    for p in ADOPTED {
        assert_eq!(status(&again, p), "already adopted", "{p}: {again:?}");
    }
    assert_eq!(count(&mut a, "SELECT count(*) FROM upkeep.partition_policies"), 6);
}
