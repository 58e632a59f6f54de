//! Creating or moving a relation never widens who can read or change rows:
//! with real roles, a parent with row-level security (enabled and forced,
//! permissive and restrictive policies for every command), table and
//! column grants, rows leaving the DEFAULT partition, partitions archived
//! into `<parent>_archive`, and a plain table with a row archive. For each
//! role and command, what it gets through every relation pg_upkeep made is
//! what it gets through the table itself; after the table's policies and
//! grants change, the next run makes that true again.

use postgres::Client;
use upkeep_cluster_tests::{count, Cluster};

const ROLES: [&str; 4] = ["t1", "t2", "auditor", "app"];

const SETUP: &str = "
CREATE ROLE app LOGIN; CREATE ROLE t1 LOGIN; CREATE ROLE t2 LOGIN; CREATE ROLE auditor LOGIN;
CREATE SCHEMA app AUTHORIZATION app; GRANT USAGE ON SCHEMA app TO PUBLIC;";

/// The owner's tables: rows of two tenants, some old, some in DEFAULT.
const TABLES: &str = "
CREATE TABLE app.ledger (d date NOT NULL, tenant text NOT NULL, amount int, note text) PARTITION BY RANGE (d);
CREATE TABLE app.ledger_default PARTITION OF app.ledger DEFAULT;
INSERT INTO app.ledger SELECT current_date - g * 3, CASE WHEN g % 2 = 0 THEN 't1' ELSE 't2' END, g - 5, 'note ' || g
  FROM generate_series(0, 40) g;
CREATE TABLE app.events (id int PRIMARY KEY, at timestamptz NOT NULL, tenant text NOT NULL, amount int);
INSERT INTO app.events SELECT g, now() - g * interval '1 day', CASE WHEN g % 2 = 0 THEN 't1' ELSE 't2' END, g - 5
  FROM generate_series(1, 60) g;
";

/// The same rules on both tables: each tenant sees and writes its own
/// rows, nobody sees negative amounts, the auditor reads two columns.
/// Forced on the ledger only: a row archive runs as the owner, whom forced
/// policies would let move no row.
fn rules(table: &str) -> String {
    let force =
        if table.contains("ledger") { format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY;") } else { String::new() };
    format!(
        "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; {force}
         CREATE POLICY own_read ON {table} FOR SELECT USING (tenant = current_user OR current_user = 'auditor');
         CREATE POLICY own_insert ON {table} FOR INSERT WITH CHECK (tenant = current_user);
         CREATE POLICY own_update ON {table} FOR UPDATE USING (tenant = current_user) WITH CHECK (tenant = current_user);
         CREATE POLICY own_delete ON {table} FOR DELETE USING (tenant = current_user);
         CREATE POLICY no_negative ON {table} AS RESTRICTIVE FOR ALL USING (amount >= 0);
         GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO t1, t2;
         GRANT SELECT (tenant, amount) ON {table} TO auditor;"
    )
}

/// What a role gets from `sql`, rolled back: the rows (every column
/// text) in order, or the error's SQLSTATE.
fn outcome(c: &mut Client, sql: &str) -> String {
    c.batch_execute("BEGIN").unwrap();
    let got = match c.query(sql, &[]) {
        Ok(rows) => {
            let mut r: Vec<String> = rows
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            r.sort();
            format!("{} rows: {}", r.len(), r.join(", "))
        }
        Err(e) => format!("error {}", e.code().map(|c| c.code().to_string()).unwrap_or_default()),
    };
    c.batch_execute("ROLLBACK").unwrap();
    got
}

/// Each relation pg_upkeep made, with what it is compared to: a partition
/// with its parent restricted to the partition's bounds; an archive table
/// with an oracle, a table the test made with the archive's rows and the
/// rules the owner gave the source.
fn compared(admin: &mut Client) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = admin
        .query(
            "SELECT c.oid::regclass::text, i.inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent IN ('app.ledger'::regclass, 'app.ledger_archive'::regclass)
                AND EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conrelid = c.oid AND x.conname = 'pg_upkeep_bounds')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let bound: String = r.get(2);
            let (lo, hi) =
                bound.trim_start_matches("FOR VALUES FROM (").trim_end_matches(')').split_once(") TO (").unwrap();
            let rows = format!("WHERE d >= {lo} AND d < {hi}");
            let day = lo.trim_matches('\'').to_string();
            (format!("{} {rows}", r.get::<_, String>(0)), format!("{} {rows}", r.get::<_, String>(1)), Some(day))
        })
        .collect();
    out.push(("app.ledger_archive".into(), "app.oracle_ledger".into(), None));
    out.push(("app.events_archive".into(), "app.oracle_events".into(), None));
    out
}

/// Every command of every role, through each relation made and through
/// what it is compared to: how many were equal, and those that differ.
fn comparisons(cluster: &Cluster, admin: &mut Client) -> (usize, Vec<String>) {
    let mut equal = 0;
    let mut wrong = Vec::new();
    for role in ROLES {
        let mut c = cluster.connect_as(role, "postgres");
        for (rel, truth, day) in compared(admin) {
            let table = |from: &str| from.split(' ').next().unwrap().to_string();
            let filter = |from: &str| from.split_once(' ').map(|(_, w)| w.to_string()).unwrap_or_default();
            let also = |from: &str| {
                if filter(from).is_empty() {
                    "WHERE".to_string()
                } else {
                    format!("{} AND", filter(from))
                }
            };
            // A day the relation takes: its lower bound, or its first row's.
            let column = if rel.contains("events") { "at" } else { "d" };
            let some_day: String = day.unwrap_or_else(|| {
                admin.query_one(&format!("SELECT min({column})::text FROM {rel}"), &[]).unwrap().get(0)
            });
            let commands = |from: &str| {
                let t = table(from);
                let all = if t.contains("events") {
                    "at::text, tenant, amount::text"
                } else {
                    "d::text, tenant, amount::text, note"
                };
                let row = if t.contains("events") {
                    "(100000, now() - interval '1 year', 'someone_else', 1)".to_string()
                } else {
                    format!("('{some_day}', 'someone_else', 1, 'x')")
                };
                vec![
                    format!("SELECT tenant, amount::text FROM {from}"),
                    format!("SELECT {all} FROM {from}"),
                    format!("WITH u AS (UPDATE {t} SET amount = amount {} RETURNING tenant) SELECT count(*)::text FROM u", filter(from)),
                    format!("WITH x AS (DELETE FROM {t} {} tenant <> current_user RETURNING 1) SELECT count(*)::text FROM x", also(from)),
                    format!("WITH x AS (DELETE FROM {t} {} RETURNING tenant) SELECT count(*)::text FROM x", filter(from)),
                    format!("INSERT INTO {t} VALUES {row} RETURNING 'inserted'::text"),
                ]
            };
            for (q_rel, q_truth) in commands(&rel).iter().zip(commands(&truth)) {
                let (got, want) = (outcome(&mut c, q_rel), outcome(&mut c, &q_truth));
                if got == want {
                    equal += 1;
                } else {
                    wrong.push(format!("{role}: {q_rel}\n    -> {got}\n  {q_truth}\n    -> {want}"));
                }
            }
        }
    }
    (equal, wrong)
}

fn same_through_every_relation(cluster: &Cluster, admin: &mut Client) -> usize {
    let (equal, wrong) = comparisons(cluster, admin);
    assert!(wrong.is_empty(), "{} differ ({equal} equal):\n{}", wrong.len(), wrong.join("\n"));
    equal
}

#[test]
fn relations_made_for_a_table_show_each_role_what_the_table_shows() {
    let cluster = Cluster::start("row-security", &["upkeep.enabled = off"]);
    let mut admin = cluster.connect("postgres");
    admin.batch_execute(SETUP).unwrap();
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute(TABLES).unwrap();
    app.batch_execute(&rules("app.ledger")).unwrap();
    app.batch_execute(&rules("app.events")).unwrap();
    // Partitions from 4 months back (rows leave DEFAULT), 2 kept live.
    app.batch_execute(
        "SELECT count(*) FROM upkeep.manage_partitions('app.ledger', 'd', premake => 1,
                                  start_at => date_trunc('month', current_date) - interval '4 months');
         SELECT count(*) FROM upkeep.manage_partitions('app.ledger', 'd', premake => 1, retention => '2 months',
                                  start_at => date_trunc('month', current_date) - interval '4 months');
         SELECT count(*) FROM upkeep.archive('app.ledger');
         SELECT upkeep.manage_archive('app.events', 'at', '30 days');
         SELECT count(*) FROM upkeep.archive('app.events');",
    )
    .unwrap();
    let live = count(&mut admin, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'app.ledger'::regclass");
    let archived =
        count(&mut admin, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'app.ledger_archive'::regclass");
    assert!(live >= 4 && archived >= 2, "{live} live, {archived} archived partitions");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM app.ledger_default"), 0, "rows left DEFAULT");
    assert!(count(&mut admin, "SELECT count(*) FROM app.events_archive") > 0);
    // Column grants stay column grants.
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'app'::regnamespace AND c.relname <> 'ledger_default'
                AND has_table_privilege('auditor', c.oid, 'SELECT')"
        ),
        0
    );
    // The oracles: the archived rows in tables of the test's own, with the
    // rules the owner gave the sources.
    app.batch_execute(
        "CREATE TABLE app.oracle_ledger (LIKE app.ledger); CREATE TABLE app.oracle_events (LIKE app.events INCLUDING ALL);",
    )
    .unwrap();
    admin
        .batch_execute(
            "INSERT INTO app.oracle_ledger SELECT * FROM app.ledger_archive;
             INSERT INTO app.oracle_events SELECT * FROM app.events_archive;",
        )
        .unwrap();
    app.batch_execute(&rules("app.oracle_ledger")).unwrap();
    app.batch_execute(&rules("app.oracle_events")).unwrap();
    let n = same_through_every_relation(&cluster, &mut admin);
    println!("{n} comparisons equal after creation and archiving");

    // The owner changes the rules: a tighter read policy, the restrictive
    // policy goes, t2 loses its grants, the auditor reads every column.
    for table in ["app.ledger", "app.events", "app.oracle_ledger", "app.oracle_events"] {
        app.batch_execute(&format!(
            "DROP POLICY own_read ON {table};
             CREATE POLICY own_read ON {table} FOR SELECT USING (tenant = current_user AND amount > 10 OR current_user = 'auditor');
             DROP POLICY no_negative ON {table};
             REVOKE ALL ON {table} FROM t2;
             GRANT SELECT ON {table} TO auditor;"
        ))
        .unwrap();
    }
    // Until the next run, the relations keep the rules they had.
    let (_, before) = comparisons(&cluster, &mut admin);
    assert!(before.iter().any(|w| w.starts_with("t2: SELECT")), "{before:?}");
    // The next run brings every relation in line, in one action per table.
    let synced: Vec<(String, String)> = app
        .query(
            "SELECT action, status FROM upkeep.create_partitions('app.ledger') WHERE action = 'sync_access'
             UNION ALL SELECT action, status FROM upkeep.archive('app.events')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(synced.iter().all(|(_, s)| s == "ok"), "{synced:?}");
    assert!(synced.iter().any(|(a, _)| a == "sync_access"), "{synced:?}");
    let n = same_through_every_relation(&cluster, &mut admin);
    println!("{n} comparisons equal after the rules changed and the next run");
    // And nothing is left to bring in line.
    let again =
        count(&mut admin, "SELECT count(*) FROM upkeep.create_partitions('app.ledger') WHERE action = 'sync_access'");
    assert_eq!(again, 0);
}
