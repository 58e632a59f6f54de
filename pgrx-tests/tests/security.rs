//! Who may do what, with real roles: table owners who are not superusers
//! manage their own tables and nothing else, what pg_upkeep creates for them
//! is theirs, nobody writes another's rows of pg_upkeep's tables directly,
//! and objects planted in `public` under the names pg_upkeep uses are never
//! run by its workers or functions.

use postgres::Client;
use std::time::Duration;
use upkeep_cluster_tests::{assert_refused, count, error_of, fingerprint, ran_again, Cluster};

/// Each owner's schema: a partitioned table, a plain table with old rows, a
/// materialized view over it.
fn owner_schema(role: &str) -> String {
    format!(
        "CREATE TABLE {role}.nav (d date NOT NULL, v int) PARTITION BY RANGE (d);
         CREATE TABLE {role}.events (id int PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO {role}.events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
         CREATE MATERIALIZED VIEW {role}.event_count AS SELECT count(*) AS n FROM {role}.events;
         CREATE UNIQUE INDEX ON {role}.event_count (n);"
    )
}

/// Every row of every pg_upkeep table, and the relations of both owners.
fn everything(c: &mut Client) -> String {
    fingerprint(
        c,
        &[
            "SELECT string_agg(c.oid::regclass::text || ' ' || pg_get_userbyid(c.relowner), ',' ORDER BY c.oid::regclass::text) \
               FROM pg_class c WHERE c.relnamespace IN ('alice'::regnamespace, 'bob'::regnamespace)",
            "SELECT (SELECT count(*) FROM bob.events)::text || ' bob events'",
        ],
    )
}

#[test]
fn owners_manage_their_own_tables_and_nothing_else() {
    let cluster = Cluster::start("security-owners", &["upkeep.enabled = off"]);
    let mut admin = cluster.connect("postgres");
    // No grant on schema upkeep here: the extension gives what owners need.
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN; GRANT bob TO carol;
             CREATE SCHEMA alice AUTHORIZATION alice; CREATE SCHEMA bob AUTHORIZATION bob;
             GRANT USAGE ON SCHEMA alice, bob TO PUBLIC;",
        )
        .unwrap();
    let mut alice = cluster.connect_as("alice", "postgres");
    let mut bob = cluster.connect_as("bob", "postgres");
    let mut carol = cluster.connect_as("carol", "postgres");
    alice.batch_execute(&owner_schema("alice")).unwrap();
    bob.batch_execute(&owner_schema("bob")).unwrap();
    // Names shown schema-qualified (regclass output follows search_path).
    for c in [&mut alice, &mut bob, &mut carol] {
        c.batch_execute("SET search_path = public").unwrap();
    }

    // Alice registers, runs and changes policies of her own tables.
    alice
        .batch_execute(
            "SELECT count(*) FROM upkeep.manage_partitions('alice.nav', 'd', premake => 2);
             SELECT upkeep.manage_archive('alice.events', 'at', '30 days');
             SELECT upkeep.manage_matview('alice.event_count', every => '1 day');",
        )
        .unwrap();
    let alice_jobs: Vec<i64> = alice
        .query("SELECT job_id FROM upkeep.jobs WHERE target LIKE 'alice.%' ORDER BY job_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(alice_jobs.len(), 3);
    // Carol, a member of bob's role, registers bob's tables.
    carol
        .batch_execute(
            "SELECT count(*) FROM upkeep.manage_partitions('bob.nav', 'd', premake => 1);
             SELECT upkeep.manage_archive('bob.events', 'at', '30 days');
             SELECT upkeep.manage_matview('bob.event_count');",
        )
        .unwrap();
    let bob_job: i64 = count(&mut bob, "SELECT job_id FROM upkeep.jobs WHERE target = 'bob.events'");

    // A run by alice runs alice's jobs only: bob's old rows stay.
    let ran: Vec<String> = alice
        .query("SELECT DISTINCT target FROM upkeep.run_maintenance() ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ran.iter().all(|t| t.starts_with("alice.")), "alice's run touched {ran:?}");
    assert_eq!(count(&mut alice, "SELECT count(*) FROM alice.events"), 29, "alice's old rows archived");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM bob.events"), 100, "bob's rows are not alice's to move");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM upkeep.job_runs WHERE job_id IN (SELECT job_id FROM upkeep.jobs WHERE target LIKE 'bob.%' AND kind = 'archive')"), 0);
    alice.batch_execute(&format!("SELECT upkeep.alter_job({}, every => '2 hours')", alice_jobs[1])).unwrap();
    alice
        .batch_execute(&format!("SELECT upkeep.pause_job({0}); SELECT upkeep.resume_job({0})", alice_jobs[2]))
        .unwrap();
    let refreshed: String = alice
        .query_one("SELECT status FROM upkeep.refresh_matviews('alice.event_count', force => true)", &[])
        .unwrap()
        .get(0);
    assert_eq!(refreshed, "refreshed");

    // What was created for alice is alice's.
    let not_hers = count(
        &mut admin,
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'alice'::regnamespace AND relowner <> 'alice'::regrole",
    );
    assert_eq!(not_hers, 0, "objects in schema alice owned by someone else");
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'alice.nav'::regclass"),
        3,
        "current month and 2 ahead"
    );
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM pg_class WHERE oid = 'alice.events_archive'::regclass AND relowner = 'alice'::regrole"),
        1
    );

    // Alice cannot touch bob's jobs, through the functions or directly.
    admin.batch_execute("SELECT upkeep.snapshot_index_health()").unwrap();
    assert!(count(&mut admin, "SELECT count(*) FROM upkeep.index_health_history") > 0);
    let every = everything(&mut admin);
    let bob_partitions: i64 = count(&mut admin, "SELECT job_id FROM upkeep.jobs WHERE target = 'bob.nav'");
    let cases: Vec<(String, &str)> = vec![
        ("SELECT upkeep.manage_partitions('bob.nav', 'd', premake => 9)".into(), "must be owner of table bob.nav"),
        ("SELECT upkeep.unmanage_partitions('bob.nav')".into(), "must be owner of table bob.nav"),
        ("SELECT upkeep.create_partitions('bob.nav')".into(), "must be owner of table bob.nav"),
        ("SELECT upkeep.manage_archive('bob.events', 'at', '1 day')".into(), "must be owner of table bob.events"),
        ("SELECT upkeep.unmanage_archive('bob.events')".into(), "must be owner of table bob.events"),
        ("SELECT upkeep.archive('bob.events')".into(), "must be owner of table bob.events"),
        ("SELECT upkeep.manage_matview('bob.event_count')".into(), "must be owner of table bob.event_count"),
        ("SELECT upkeep.unmanage_matview('bob.event_count')".into(), "must be owner of table bob.event_count"),
        ("SELECT upkeep.refresh_matviews('bob.event_count', force => true)".into(), "must be owner of table bob.event_count"),
        (format!("SELECT upkeep.alter_job({bob_job}, every => '1 minute')"), "must be owner of table bob.events"),
        (format!("SELECT upkeep.pause_job({bob_job})"), "must be owner of table bob.events"),
        (format!("SELECT upkeep.resume_job({bob_job})"), "must be owner of table bob.events"),
        (format!("SELECT upkeep.run_job({bob_job})"), "must be owner of table bob.events"),
        ("SELECT upkeep.manage_reindex()".into(), "must be owner of the database"),
        ("SELECT upkeep.unmanage_reindex()".into(), "must be owner of the database"),
        ("SELECT upkeep.snapshot_index_health()".into(), "must be owner of the database"),
        ("SELECT upkeep.alter_job(1, every => '1 minute')".into(), "must be owner of the database"),
        (
            "UPDATE upkeep.archive_policies SET older_than = '1 second' WHERE source = 'bob.events'::regclass".into(),
            "permission denied to change upkeep.archive_policies for table bob.events",
        ),
        (
            "UPDATE upkeep.partition_policies SET retention = '1 day', archive = 'drop' WHERE parent = 'bob.nav'::regclass"
                .into(),
            "permission denied to change upkeep.partition_policies for table bob.nav",
        ),
        (
            "DELETE FROM upkeep.matview_policies".into(),
            "permission denied to change upkeep.matview_policies for table bob.event_count",
        ),
        (
            "INSERT INTO upkeep.archive_policies (source, time_column, older_than) VALUES ('bob.nav', 'd', '1 day')".into(),
            "permission denied to change upkeep.archive_policies for table bob.nav",
        ),
        (
            format!(
                "INSERT INTO upkeep.job_runs (job_id, action, target, started_at, duration, status) \
                 VALUES ({bob_partitions}, 'forged', 'bob.nav', now(), '0', 'ok')"
            ),
            "permission denied to change upkeep.job_runs for job",
        ),
        ("DELETE FROM upkeep.job_runs".into(), "permission denied to change upkeep.job_runs for job"),
        ("UPDATE upkeep.job_state SET next_run = 'infinity'".into(), "permission denied to change upkeep.job_state for job"),
        (
            "UPDATE upkeep.index_snapshot_policy SET enabled = false".into(),
            "permission denied to change upkeep.index_snapshot_policy for the index-health jobs of database",
        ),
        ("DELETE FROM upkeep.index_health_history".into(), "permission denied to change upkeep.index_health_history"),
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(s, m)| (s.as_str(), *m)).collect();
    // Seen by a superuser: alice may not read bob's tables.
    let observer = std::cell::RefCell::new(cluster.connect("postgres"));
    assert_refused(&mut alice, &cases, |_| everything(&mut observer.borrow_mut()));
    // PostgreSQL's own refusals (no HINT of ours): nothing else is granted.
    for sql in ["DELETE FROM upkeep.changes", "TRUNCATE upkeep.job_runs", "DROP TABLE upkeep.job_runs"] {
        let (message, _) = error_of(alice.batch_execute(sql));
        assert!(message.contains("permission denied") || message.contains("must be owner"), "{sql}: {message}");
    }
    assert_eq!(everything(&mut admin), every, "nothing changed");

    // Bob's own run still does bob's work; alice reads every job's status.
    bob.batch_execute("SELECT count(*) FROM upkeep.run_maintenance()").unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM bob.events"), 29);
    assert_eq!(count(&mut admin, "SELECT count(*) FROM bob.events_archive"), 71);
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'bob'::regnamespace AND relowner <> 'bob'::regrole"
        ),
        0,
        "what carol registered for bob's tables is bob's"
    );
    assert_eq!(count(&mut alice, "SELECT count(*) FROM upkeep.jobs WHERE target LIKE 'bob.%'"), 3);
    assert!(count(&mut alice, "SELECT count(*) FROM upkeep.metrics") > 0);
    // Bob removes his policies; the workers (superuser) see alice's only.
    bob.batch_execute(
        "SELECT upkeep.unmanage_partitions('bob.nav'); SELECT upkeep.unmanage_archive('bob.events');
         SELECT upkeep.unmanage_matview('bob.event_count');",
    )
    .unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM upkeep.jobs WHERE target LIKE 'bob.%'"), 0);
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM upkeep.job_state WHERE job_id NOT IN (SELECT job_id FROM upkeep.jobs)"),
        0
    );
}

/// Functions and operators a hostile role may create in `public` with the
/// names and argument types pg_upkeep's SQL uses; each logs who ran it.
const PLANTED: &str = r#"
CREATE TABLE public.hijacked (who text, what text);
GRANT INSERT, SELECT ON public.hijacked TO PUBLIC;
CREATE FUNCTION public.caught(what text) RETURNS void LANGUAGE sql AS
  $$ INSERT INTO public.hijacked VALUES (current_user, what) $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('now'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('format_type'); RETURN pg_catalog.format_type($1, $2); END $$;
CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('pg_get_userbyid'); RETURN pg_catalog.pg_get_userbyid($1); END $$;
CREATE FUNCTION public.pg_has_role(oid, text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('pg_has_role'); RETURN true; END $$;
CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('to_regclass'); RETURN pg_catalog.to_regclass($1); END $$;
CREATE FUNCTION public.md5(text) RETURNS text LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('md5'); RETURN pg_catalog.md5($1); END $$;
CREATE FUNCTION public.evil_eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('=(bigint,bigint)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_eq);
CREATE FUNCTION public.evil_oid_eq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('=(oid,oid)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.evil_oid_eq);
CREATE FUNCTION public.evil_ts_le(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('<=(timestamptz,timestamptz)'); RETURN $1 OPERATOR(pg_catalog.<=) $2; END $$;
CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.evil_ts_le);
CREATE FUNCTION public.evil_ts_lt(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('<(timestamptz,timestamptz)'); RETURN $1 OPERATOR(pg_catalog.<) $2; END $$;
CREATE OPERATOR public.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.evil_ts_lt);
CREATE FUNCTION public.evil_text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN PERFORM public.caught('=(text,text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_text_eq);
"#;

#[test]
fn objects_planted_in_public_are_never_run_by_workers_or_functions() {
    let cluster = Cluster::start("security-search-path", &["upkeep.naptime = 1"]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory;
             CREATE TABLE public.nav (d date NOT NULL, v int) PARTITION BY RANGE (d);
             CREATE TABLE public.events (id int PRIMARY KEY, at timestamptz NOT NULL);
             INSERT INTO public.events SELECT g, now() - g * interval '1 day' FROM generate_series(1, 100) g;
             CREATE MATERIALIZED VIEW public.event_count AS SELECT count(*) AS n FROM public.events;
             CREATE UNIQUE INDEX ON public.event_count (n);
             CREATE INDEX events_at_dup ON public.events (at); CREATE INDEX events_at_dup2 ON public.events (at);",
        )
        .unwrap();
    let mut mallory = cluster.connect_as("mallory", "postgres");
    mallory.batch_execute(PLANTED).unwrap();
    // The planted objects work: a session whose search_path puts public
    // first does run them.
    mallory.batch_execute("SET search_path = public, pg_catalog; SELECT now(); SELECT 1::int8 = 1::int8").unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM public.hijacked"), 2, "the planted objects are live");
    admin.batch_execute("DELETE FROM public.hijacked").unwrap();

    // The workers do real work: partitions, archive, refresh, snapshot.
    admin
        .batch_execute(
            "SELECT count(*) FROM upkeep.manage_partitions('public.nav', 'd', premake => 2, retention => '1 year');
             SELECT upkeep.manage_archive('public.events', 'at', '30 days');
             SELECT upkeep.alter_job(job_id, every => '1 second') FROM upkeep.jobs WHERE kind = 'archive';
             SELECT upkeep.manage_matview('public.event_count', every => '1 second');",
        )
        .unwrap();
    assert!(
        cluster.wait_until(
            "postgres",
            "SELECT (SELECT count(*) FROM public.events) = 29 \
                AND EXISTS (SELECT 1 FROM upkeep.matview_state) \
                AND EXISTS (SELECT 1 FROM upkeep.index_health_history)",
            Duration::from_secs(60),
        ),
        "the workers did not do their work"
    );
    // A superuser session with public first on its search_path calls every
    // kind of function and reads every view.
    admin
        .batch_execute(
            "SET search_path = public, pg_catalog;
             INSERT INTO public.events VALUES (1000, pg_catalog.now());
             SELECT count(*) FROM upkeep.run_maintenance();
             SELECT count(*) FROM upkeep.create_partitions('public.nav');
             SELECT count(*) FROM upkeep.archive('public.events');
             SELECT count(*) FROM upkeep.refresh_matviews('public.event_count', force => true);
             SELECT count(*) FROM upkeep.index_health_report();
             SELECT upkeep.snapshot_index_health();
             SELECT count(*) FROM upkeep.jobs; SELECT count(*) FROM upkeep.partitions;
             SELECT count(*) FROM upkeep.partition_health; SELECT count(*) FROM upkeep.archive_status;
             SELECT count(*) FROM upkeep.matview_status; SELECT count(*) FROM upkeep.index_health;
             SELECT count(*) FROM upkeep.index_growth; SELECT count(*) FROM upkeep.metrics;
             SELECT length(upkeep.prometheus()); SELECT length(upkeep.report_html());
             SELECT * FROM upkeep.version();
             SELECT upkeep.manage_matview('public.event_count', every => '1 hour');
             SELECT upkeep.unmanage_archive('public.events');",
        )
        .unwrap();
    // Worker cycles after those calls: the view's job, due every second
    // again, is run by two schedulers that start after them. (This
    // session's search_path still puts public first.)
    admin
        .batch_execute(
            "SELECT upkeep.alter_job(job_id, every => '1 second') FROM upkeep.jobs \
              WHERE kind OPERATOR(pg_catalog.=) 'matview'",
        )
        .unwrap();
    for _ in 0..2 {
        assert!(ran_again(&mut admin, "matview", 1), "no worker cycle after the calls");
    }
    let caught: Vec<String> = admin
        .query("SELECT who || ' ran ' || what FROM public.hijacked", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(caught.is_empty(), "pg_upkeep ran planted objects: {caught:?}");
}

/// Archive targets are checked with the owner's privileges, before anything
/// about them is read: naming another role's schema or table tells no more
/// than naming one that does not exist, and a target that goes away later
/// fails the move (reported as a failed move) while partitions are still
/// created.
#[test]
fn archive_targets_are_checked_for_the_owner_privileges_first() {
    let cluster = Cluster::start("security-targets", &["upkeep.enabled = off"]);
    let mut admin = cluster.connect("postgres");
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
             CREATE SCHEMA alice AUTHORIZATION alice; CREATE SCHEMA bob AUTHORIZATION bob;
             CREATE SCHEMA alice_cold AUTHORIZATION alice;
             GRANT USAGE ON SCHEMA alice, bob TO PUBLIC;",
        )
        .unwrap();
    let mut alice = cluster.connect_as("alice", "postgres");
    let mut bob = cluster.connect_as("bob", "postgres");
    alice.batch_execute(&owner_schema("alice")).unwrap();
    bob.batch_execute("CREATE TABLE bob.secret (id int, at text, hidden_salary numeric)").unwrap();
    alice.batch_execute("SET search_path = public").unwrap();

    let refusal = |c: &mut Client, sql: &str| -> String {
        let (message, hint) = error_of(c.batch_execute(sql));
        assert!(hint.is_some_and(|h| !h.is_empty()), "{sql}: no HINT");
        message
    };
    let archive_to = |c: &mut Client, target: &str| {
        refusal(c, &format!("SELECT upkeep.manage_archive('alice.events', 'at', '1 day', archive_table => '{target}')"))
    };
    // Bob's table, a table that is not there, a schema that is not there:
    // the same answer, naming only what alice named.
    let secret = archive_to(&mut alice, "bob.secret");
    let missing = archive_to(&mut alice, "bob.nothing_here");
    let no_schema = archive_to(&mut alice, "nowhere.secret");
    assert_eq!(secret, missing, "the same answer for bob.secret and bob.nothing_here");
    assert_eq!(secret.replace("\"bob\"", "\"nowhere\""), no_schema);
    assert!(secret.contains("may not create tables"), "{secret}");
    // Once alice may create in bob's schema, bob's table is refused as not
    // hers, still without a word about its columns.
    bob.batch_execute("GRANT CREATE ON SCHEMA bob TO alice").unwrap();
    let not_hers = archive_to(&mut alice, "bob.secret");
    assert!(not_hers.contains("not owned by role \"alice\""), "{not_hers}");
    assert!(!not_hers.contains("hidden_salary") && !not_hers.contains("numeric"), "{not_hers}");
    // Partitions: a schema she may not use, and one that does not exist.
    let partitions = |c: &mut Client, mode: &str| {
        refusal(
            c,
            &format!("SELECT upkeep.manage_partitions('alice.nav', 'd', retention => '1 month', archive => '{mode}')"),
        )
    };
    admin.batch_execute("CREATE SCHEMA admins_only").unwrap();
    assert_eq!(
        partitions(&mut alice, "schema:admins_only").replace("admins_only", "X"),
        partitions(&mut alice, "schema:not_a_schema").replace("not_a_schema", "X")
    );
    // Superusers too may not archive where pg_dump does not look.
    let (m, _) = error_of(admin.batch_execute(
        "SELECT upkeep.manage_archive('alice.events', 'at', '1 day', archive_table => 'pg_catalog.events_archive')",
    ));
    assert!(m.contains("pg_catalog"), "{m}");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM upkeep.jobs WHERE kind <> 'index_snapshot'"), 0);

    // A schema dropped after registration: the move fails as a move, and
    // the partitions the policy keeps ready are still created.
    alice
        .batch_execute(
            "CREATE TABLE alice.nav_old PARTITION OF alice.nav FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
             SELECT count(*) FROM upkeep.manage_partitions('alice.nav', 'd', premake => 1,
                                                           retention => '100 years', archive => 'schema:alice_cold');",
        )
        .unwrap();
    admin.batch_execute("DROP SCHEMA alice_cold").unwrap();
    // Time passes: the old partition falls out of the retention, and one
    // more future partition is due.
    admin.batch_execute("UPDATE upkeep.partition_policies SET retention = '1 month', premake = 2").unwrap();
    let ran: Vec<(String, String, String, Option<String>)> = alice
        .query("SELECT action, target, status, error FROM upkeep.create_partitions('alice.nav')", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let moves: Vec<_> = ran.iter().filter(|r| r.0 == "archive_partition").collect();
    assert!(!moves.is_empty(), "{ran:?}");
    for (_, target, status, error) in &moves {
        assert_eq!(status, "failed", "{target}");
        let error = error.as_deref().unwrap_or_default();
        assert!(error.contains("schema \"alice_cold\" does not exist"), "{error}");
    }
    assert!(ran.iter().any(|r| r.0 == "create_partition" && r.2 == "ok"), "partitions are still created: {ran:?}");
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM upkeep.job_runs WHERE action = 'archive_partition' AND status = 'failed'"
        ),
        moves.len() as i64
    );
    assert_eq!(count(&mut admin, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'alice.nav_old'::regclass"), 1);
}
