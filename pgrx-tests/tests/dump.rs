//! Policies travel with pg_dump and pg_restore, and work after the restore.

use upkeep_cluster_tests::Cluster;

#[test]
fn pg_dump_and_pg_restore_bring_the_policies_back_working() {
    let cluster = Cluster::start("dump", &["upkeep.enabled = off"]);
    let mut c = cluster.connect("postgres");
    c.batch_execute("CREATE DATABASE src").unwrap();
    let mut src = cluster.connect("src");
    src.batch_execute(
        r#"CREATE EXTENSION pg_upkeep;
           CREATE TABLE "Nav History" (d date NOT NULL) PARTITION BY RANGE (d);
           SELECT count(*) FROM upkeep.manage_partitions('"Nav History"', 'd', premake => 2, retention => '2 years');
           SELECT upkeep.alter_job(1, every => '2 hours');"#,
    )
    .unwrap();
    let dump = cluster.dir.join("src.dump");
    cluster.run("pg_dump", &["-Fc", "-f", dump.to_str().unwrap(), "src"]);
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
    assert_eq!(policy, (1, r#""Nav History""#.to_string(), 2, "2 years".to_string(), "02:00:00".to_string()));
    // History is not part of the dump.
    let runs: i64 = dst.query_one("SELECT count(*) FROM upkeep.job_runs", &[]).unwrap().get(0);
    assert_eq!(runs, 0);
    // Working: the restored partitions are recognised, only what is new is made,
    // and new jobs do not collide with restored ones.
    dst.batch_execute("UPDATE upkeep.partition_policies SET premake = 4").unwrap();
    let made = dst.query("SELECT target FROM upkeep.run_job(1) WHERE status = 'ok'", &[]).unwrap();
    assert_eq!(made.len(), 2, "only the two new months");
    let next: i64 = dst.query_one("SELECT nextval('upkeep.job_id_seq')", &[]).unwrap().get(0);
    assert_eq!(next, 2);
}
