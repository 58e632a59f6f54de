//! A DBA's major-version upgrade: a cluster of an older PostgreSQL with
//! pg_upkeep preloaded, every kind of policy and its history, taken by
//! pg_upgrade (copy and link mode) to the server under test (`bin()`).
//! Everything pg_upkeep keeps is there afterwards, row for row, and the
//! workers go on.
//!
//! The old server is `UPKEEP_PG_UPGRADE_FROM` (default: the server under
//! test itself; scripts/test.sh runs this from 16 to 18). Not from
//! Debian's 15.20 here: that server stores a `pg_attver` option on every
//! column it creates, which the pg_dump of 16.2 and 18.6 copy into the new
//! cluster and their servers refuse ("unrecognized parameter"), so
//! pg_upgrade from it fails for a plain table without pg_upkeep as well.
//! Both servers need pg_upkeep installed (scripts/test.sh does it).

use postgres::Client;
use std::time::Duration;
use upkeep_cluster_tests::{bin, count, fingerprint, Cluster};

const WORKERS: &[&str] = &["upkeep.naptime = 1", "upkeep.lock_timeout = '5s'"];

/// Every kind of policy, with work for the workers and the SQL functions.
const POLICIES: &str = "
CREATE TABLE nav (fund int NOT NULL, d date NOT NULL, v numeric) PARTITION BY RANGE (d);
CREATE INDEX ON nav (fund, d);
SELECT count(*) FROM upkeep.manage_partitions('nav', 'd', premake => 2,
                                              start_at => date_trunc('month', now()) - interval '8 months');
INSERT INTO nav SELECT g % 10, d, g
  FROM generate_series(date_trunc('month', now()) - interval '8 months', now(), interval '1 day') d,
       generate_series(1, 5) g;
UPDATE upkeep.partition_policies SET retention = '3 months' WHERE parent = 'nav'::regclass;
CREATE TABLE events (id int PRIMARY KEY, at timestamptz);
INSERT INTO events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 200) g;
SELECT upkeep.manage_archive('events', 'at', '30 days', batch_size => 50);
CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events;
CREATE UNIQUE INDEX ON event_count (n);
SELECT upkeep.manage_matview('event_count', every => '1 second');
SELECT upkeep.manage_reindex(2.0, 0);
SELECT upkeep.snapshot_index_health();
";

/// What each capability left behind before the upgrade.
const HISTORY: &str = "SELECT
   (SELECT count(*) FROM pg_inherits WHERE inhparent = 'nav_archive'::regclass) > 0
   AND (SELECT count(*) FROM events_archive) > 0
   AND (SELECT count(*) FROM upkeep.job_runs WHERE action = 'refresh_matview' AND status = 'ok') > 0
   AND (SELECT count(*) FROM upkeep.index_health_history) > 0";

/// Besides pg_upkeep's own tables: the partitions and the rows of the managed tables.
const TABLES: &[&str] = &[
    "SELECT 'nav partitions ' || string_agg(inhrelid::regclass::text, ',' ORDER BY inhrelid::regclass::text) FROM pg_inherits \
      WHERE inhparent = 'nav'::regclass",
    "SELECT 'rows ' || (SELECT count(*) FROM nav) || ' ' || (SELECT count(*) FROM nav_archive) || ' ' \
            || (SELECT count(*) FROM events) || ' ' || (SELECT count(*) FROM events_archive)",
];

fn partitions(c: &mut Client) -> i64 {
    count(c, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'nav'::regclass")
}

/// Turns the workers off and waits until no scheduler or worker is at work,
/// so that what pg_upkeep keeps holds still for a fingerprint.
fn quiesce(cluster: &Cluster) {
    let mut c = cluster.connect("postgres");
    // Separate statements: ALTER SYSTEM refuses a transaction block.
    c.batch_execute("ALTER SYSTEM SET upkeep.enabled = off").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let idle =
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('pg_upkeep scheduler', 'pg_upkeep worker')";
    assert!(cluster.wait_until("postgres", idle, Duration::from_secs(120)), "the workers did not stop");
}

fn resume(cluster: &Cluster) {
    let mut c = cluster.connect("postgres");
    c.batch_execute("ALTER SYSTEM SET upkeep.enabled = on").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
}

#[test]
fn pg_upgrade_in_copy_and_link_mode_keeps_every_policy_and_its_history_and_the_workers_go_on() {
    let from = std::env::var("UPKEEP_PG_UPGRADE_FROM").unwrap_or_else(|_| bin());
    let old = Cluster::start_on(&from, "pg-upgrade-old", WORKERS);
    let mut c = old.connect("postgres");
    c.batch_execute(POLICIES).unwrap();
    assert!(old.wait_until("postgres", HISTORY, Duration::from_secs(120)), "the workers did not act:\n{}", old.log());
    quiesce(&old);
    let before = fingerprint(&mut c, TABLES);
    let old_version: String = c.query_one("SELECT current_setting('server_version_num')", &[]).unwrap().get(0);
    drop(c);
    old.stop();
    let copy = old.copy_stopped("pg-upgrade-old-copy");

    for (source, mode) in [(&old, "--copy"), (&copy, "--link")] {
        // The workers start only when the comparison is done.
        let mut settings = WORKERS.to_vec();
        settings.push("upkeep.enabled = off");
        let new = source.upgrade_to(&bin(), &format!("pg-upgrade-new{mode}"), mode, &settings);
        let mut n = new.connect("postgres");
        let new_version: String = n.query_one("SELECT current_setting('server_version_num')", &[]).unwrap().get(0);
        println!("{mode}: PostgreSQL {old_version} -> {new_version}");
        assert!(new_version[..2] >= old_version[..2], "{old_version} -> {new_version}");
        let after = fingerprint(&mut n, TABLES);
        assert_eq!(after, before, "{mode}: what pg_upkeep keeps changed");
        let up_to_date: bool = n.query_one("SELECT up_to_date FROM upkeep.version()", &[]).unwrap().get(0);
        assert!(up_to_date, "{mode}: the extension needs ALTER EXTENSION UPDATE");

        // The workers go on: a partition that becomes due, a view whose table
        // changed (the row archive runs hourly: not waited for here).
        let made = partitions(&mut n);
        let refreshed =
            count(&mut n, "SELECT count(*) FROM upkeep.job_runs WHERE action = 'refresh_matview' AND status = 'ok'");
        n.batch_execute(
            "UPDATE upkeep.partition_policies SET premake = premake + 1 WHERE parent = 'nav'::regclass;
             INSERT INTO events VALUES (1000, now());",
        )
        .unwrap();
        resume(&new);
        let due = format!(
            "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'nav'::regclass) = {} \
               AND (SELECT count(*) FROM upkeep.job_runs WHERE action = 'refresh_matview' AND status = 'ok') > {refreshed}",
            made + 1
        );
        assert!(
            new.wait_until("postgres", &due, Duration::from_secs(120)),
            "{mode}: the workers did not go on:\n{}",
            new.log()
        );
        let n_view: i64 = n.query_one("SELECT n FROM event_count", &[]).unwrap().get(0);
        assert_eq!(n_view, count(&mut n, "SELECT count(*) FROM events"));
        assert_eq!(count(&mut n, "SELECT count(*) FROM upkeep.job_runs WHERE status = 'failed'"), 0, "{mode}");
    }
}

/// pg_upgrade starts both servers in binary-upgrade mode (`-b`) to read
/// and write their catalogs: pg_upkeep's workers must not start there
/// (no partitions made or moved while the schema is being dumped), and
/// the server log says why they did not.
#[test]
fn a_server_in_binary_upgrade_mode_runs_no_pg_upkeep_workers() {
    let cluster = Cluster::start("binary-upgrade-mode", WORKERS);
    let launcher = "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pg_upkeep launcher'";
    assert!(cluster.wait_until("postgres", launcher, Duration::from_secs(60)), "no launcher in normal mode");
    cluster.restart_with("-b");
    const SAID: &str = "binary upgrade mode: pg_upkeep's background workers are not started";
    assert!(
        upkeep_cluster_tests::wait_for(Duration::from_secs(60), || cluster.log().contains(SAID)),
        "the log does not say why there are no workers:\n{}",
        cluster.log()
    );
    let mut c = cluster.connect("postgres");
    let workers = count(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_upkeep%'");
    assert_eq!(workers, 0, "pg_upkeep processes in binary-upgrade mode");
}
