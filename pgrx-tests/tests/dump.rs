//! Policies travel with pg_dump and pg_restore, and work after the restore.
//! The dump is taken, with its own pg_dump, from a server of the version
//! `UPKEEP_PG_DUMP_FROM` names (default: the server under test) and
//! restored into the server under test: scripts/test.sh dumps from 15 in
//! the rounds of 16 and 18, the way from Debian's 15.20 to a newer major
//! version (its pg_upgrade does not work: see pg_upgrade.rs).

use upkeep_cluster_tests::{bin, Cluster};

#[test]
fn pg_dump_and_pg_restore_bring_the_policies_back_working() {
    let from = std::env::var("UPKEEP_PG_DUMP_FROM").unwrap_or_else(|_| bin());
    let source = Cluster::start_on(&from, "dump-source", &["upkeep.enabled = off"]);
    let cluster = Cluster::start("dump", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    source.connect("postgres").batch_execute("CREATE DATABASE src").unwrap();
    let mut src = source.connect("src");
    src.batch_execute(
        r#"CREATE EXTENSION pg_upkeep;
           CREATE TABLE "Nav History" (d date NOT NULL) PARTITION BY RANGE (d);
           SELECT count(*) FROM upkeep.manage_partitions('"Nav History"', 'd', premake => 2, retention => '2 years');
           SELECT upkeep.alter_job(job_id, every => '2 hours') FROM upkeep.partition_policies;
           CREATE TABLE flows (fund int, amount numeric);
           INSERT INTO flows VALUES (1, 10), (2, 20);
           CREATE MATERIALIZED VIEW flow_totals AS SELECT fund, sum(amount) AS total FROM flows GROUP BY fund;
           CREATE UNIQUE INDEX ON flow_totals (fund);
           SELECT upkeep.manage_matview('flow_totals', every => '30 minutes');
           SELECT count(*) FROM upkeep.refresh_matviews();"#,
    )
    .unwrap();
    let dump = cluster.dir.join("src.dump");
    source.run("pg_dump", &["-Fc", "-f", dump.to_str().unwrap(), "src"]);
    c.batch_execute("CREATE DATABASE dst").unwrap();
    cluster.run("pg_restore", &["-d", "dst", dump.to_str().unwrap()]);

    let mut dst = cluster.connect("dst");
    let row = dst
        .query_one(
            "SELECT job_id, parent::text, premake, retention::text, every::text FROM upkeep.partition_policies",
            &[],
        )
        .unwrap();
    let policy: (i64, String, i32, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    // Job 1 is the index-health snapshot job every database gets.
    assert_eq!(policy, (2, r#""Nav History""#.to_string(), 2, "2 years".to_string(), "02:00:00".to_string()));
    // History is not part of the dump.
    let runs: i64 = dst.query_one("SELECT count(*) FROM upkeep.job_runs", &[]).unwrap().get(0);
    assert_eq!(runs, 0);
    // Working: the restored partitions are recognised, only what is new is made,
    // and new jobs do not collide with restored ones.
    dst.batch_execute("UPDATE upkeep.partition_policies SET premake = 4").unwrap();
    let made = dst.query("SELECT target FROM upkeep.run_job(2) WHERE status = 'ok'", &[]).unwrap();
    assert_eq!(made.len(), 2, "only the two new months");
    // The view's policy and its change tracking come back: refreshed once
    // (what pg_upkeep remembered of it is history), then only after a change.
    let row = dst.query_one("SELECT job_id, matview::text, every::text FROM upkeep.matview_policies", &[]).unwrap();
    let policy: (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(policy, (3, "flow_totals".to_string(), "00:30:00".to_string()));
    let refresh = "SELECT status FROM upkeep.refresh_matviews('flow_totals')";
    let status = |dst: &mut postgres::Client| -> String { dst.query_one(refresh, &[]).unwrap().get(0) };
    assert_eq!(status(&mut dst), "refreshed");
    assert_eq!(status(&mut dst), "skipped");
    dst.batch_execute("INSERT INTO flows VALUES (3, 30)").unwrap();
    assert_eq!(status(&mut dst), "refreshed");
    let total: i64 = dst.query_one("SELECT count(*) FROM flow_totals", &[]).unwrap().get(0);
    assert_eq!(total, 3);
    let next: i64 = dst.query_one("SELECT nextval('upkeep.job_id_seq')", &[]).unwrap().get(0);
    assert_eq!(next, 4);
}
